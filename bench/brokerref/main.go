// Command brokerref is the reference of bench/scale.sh: the raw broker with N idle MQTT clients and
// nothing else, so the control plane's figures can be read against what the broker alone costs.
//
//	brokerref serve --listen 127.0.0.1:41890     the embedded broker (controlplane/broker), bare
//	brokerref idle --broker mqtt://HOST:PORT --count N
//	                                             N paho clients (ids ref-00001...), connected and
//	                                             idle; prints "connected N" and holds them until killed
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/edgefleet/edgefleet/controlplane/broker"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: brokerref serve|idle [flags]")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var err error
	switch os.Args[1] {
	case "serve":
		err = serve(ctx, os.Args[2:])
	case "idle":
		err = idle(ctx, os.Args[2:])
	default:
		err = fmt.Errorf("unknown command %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "brokerref:", err)
		os.Exit(1)
	}
}

func serve(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("serve", flag.ExitOnError)
	listen := fs.String("listen", "127.0.0.1:41890", "address")
	fs.Parse(args)
	b, err := broker.Start(broker.Config{Listen: *listen, Handler: func(string, []byte) {},
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))})
	if err != nil {
		return err
	}
	defer b.Close()
	fmt.Println("listening", b.Addr())
	<-ctx.Done()
	return nil
}

func idle(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("idle", flag.ExitOnError)
	url := fs.String("broker", "mqtt://127.0.0.1:41890", "broker URL")
	n := fs.Int("count", 1000, "clients")
	fs.Parse(args)
	var ok atomic.Int64
	var wg sync.WaitGroup
	clients := make([]paho.Client, *n)
	sem := make(chan struct{}, 64) // connects in flight
	for i := range *n {
		o := paho.NewClientOptions().AddBroker(*url).SetClientID(fmt.Sprintf("ref-%05d", i+1)).
			SetKeepAlive(60 * time.Second).SetAutoReconnect(true).SetConnectRetry(true).SetCleanSession(false)
		clients[i] = paho.NewClient(o)
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if t := clients[i].Connect(); t.WaitTimeout(2*time.Minute) && t.Error() == nil {
				ok.Add(1)
			}
		}()
	}
	wg.Wait()
	fmt.Println("connected", ok.Load())
	<-ctx.Done()
	// No orderly disconnects: paho's Disconnect waits out its quiesce time client by client, and
	// the broker sees the connections drop just the same when the process exits.
	return nil
}
