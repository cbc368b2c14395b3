// Command ingest measures the raw broker rate that bench/ingest.sh compares the control plane's
// persisted ingest rate with: plain paho publishers (one per simulated device, each on its own
// telemetry topic, QoS 1) through
//
//   - the embedded broker (controlplane/broker, the control plane's own), to its in-process
//     handler: the path the control plane ingests from, without the store;
//   - a stock Mosquitto (default limits), to one paho subscriber on the telemetry filter, as the
//     control plane subscribes to an external broker.
//
// It prints one line per broker: messages offered, delivered and per second.
//
//	go run ./bench/ingest -messages 50000 -publishers 20 -size 500
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/edgefleet/edgefleet/controlplane/broker"
	"github.com/edgefleet/edgefleet/internal/wire"
)

func main() {
	messages := flag.Int("messages", 50000, "messages offered per broker")
	publishers := flag.Int("publishers", 20, "publishing clients (devices)")
	size := flag.Int("size", 500, "payload bytes (a health message is about 450)")
	window := flag.Int("inflight", 100, "unacknowledged publishes per publisher")
	mosq := flag.String("mosquitto", "/usr/sbin/mosquitto", "mosquitto binary (empty: skip)")
	flag.Parse()
	topics := wire.NewTopics(wire.DefaultPrefix)
	cfg := run{messages: *messages, publishers: *publishers, size: *size, window: *window, topics: topics}

	// Embedded broker: its handler is the subscriber.
	var got atomic.Int64
	b, err := broker.Start(broker.Config{Listen: "127.0.0.1:0", Handler: func(string, []byte) { got.Add(1) },
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))})
	if err != nil {
		fail(err)
	}
	cfg.report("embedded broker (mochi) -> in-process handler", b.URL(), &got)
	b.Close()

	if *mosq == "" {
		return
	}
	url, stop, err := startMosquitto(*mosq)
	if err != nil {
		fail(err)
	}
	defer stop()
	var gotM atomic.Int64
	sub := paho.NewClient(paho.NewClientOptions().AddBroker(url).SetClientID("_bench-sub").SetCleanSession(true).SetOrderMatters(false))
	if tok := sub.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		fail(fmt.Errorf("subscriber connect: %v", tok.Error()))
	}
	if tok := sub.Subscribe(topics.Prefix+"/shards/+/devices/+/telemetry/+", 1, func(paho.Client, paho.Message) { gotM.Add(1) }); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		fail(fmt.Errorf("subscribe: %v", tok.Error()))
	}
	cfg.report("stock mosquitto -> paho subscriber (QoS 1)", url, &gotM)
	sub.Disconnect(100)
}

type run struct {
	messages, publishers, size, window int
	topics                             wire.Topics
}

// report publishes cfg.messages and prints how many arrived (got counts them) and how fast: from
// the first publish until arrivals stop for a second.
func (r run) report(name, url string, got *atomic.Int64) {
	clients := make([]paho.Client, r.publishers)
	for i := range clients {
		c := paho.NewClient(paho.NewClientOptions().AddBroker(url).SetClientID(fmt.Sprintf("bench-%05d", i+1)).SetCleanSession(true))
		if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			fail(fmt.Errorf("%s: publisher connect: %v", name, tok.Error()))
		}
		clients[i] = c
		defer c.Disconnect(100)
	}
	payload := make([]byte, r.size)
	for i := range payload {
		payload[i] = 'x'
	}
	got.Store(0)
	start := time.Now()
	var wg sync.WaitGroup
	per := r.messages / r.publishers
	for i, c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			topic := r.topics.Telemetry(fmt.Sprintf("bench-%05d", i+1), "health")
			var toks []paho.Token
			for k := 0; k < per; k++ {
				toks = append(toks, c.Publish(topic, 1, false, payload))
				if len(toks) >= r.window {
					toks[0].Wait()
					toks = toks[1:]
				}
			}
			for _, t := range toks {
				t.Wait()
			}
		}()
	}
	wg.Wait()
	acked := time.Since(start)
	offered := per * r.publishers
	// Arrivals end when the count stops moving for a second (or all arrived).
	last, lastAt := got.Load(), time.Now()
	for got.Load() < int64(offered) && time.Since(lastAt) < time.Second {
		time.Sleep(20 * time.Millisecond)
		if n := got.Load(); n != last {
			last, lastAt = n, time.Now()
		}
	}
	if got.Load() >= int64(offered) {
		lastAt = time.Now()
	}
	elapsed := lastAt.Sub(start)
	n := got.Load()
	fmt.Printf("%s: %d offered by %d publishers (%d B each, all acknowledged in %.2f s), %d delivered (%.2f%% lost), %.0f msg/s delivered\n",
		name, offered, r.publishers, r.size, acked.Seconds(), n, 100*float64(int64(offered)-n)/float64(offered), float64(n)/elapsed.Seconds())
}

// startMosquitto runs mosquitto with its default limits on a free loopback port.
func startMosquitto(bin string) (string, func(), error) {
	dir, err := os.MkdirTemp("", "bench-mosquitto-")
	if err != nil {
		return "", nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	conf := fmt.Sprintf("listener %d 127.0.0.1\nallow_anonymous true\n", port)
	if os.Geteuid() == 0 {
		conf += "user root\n"
	}
	if err := os.WriteFile(filepath.Join(dir, "mosquitto.conf"), []byte(conf), 0o600); err != nil {
		return "", nil, err
	}
	cmd := exec.Command(bin, "-c", filepath.Join(dir, "mosquitto.conf"))
	if err := cmd.Start(); err != nil {
		return "", nil, err
	}
	stop := func() { cmd.Process.Kill(); cmd.Wait(); os.RemoveAll(dir) }
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for ctx.Err() == nil {
		if c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port)); err == nil {
			c.Close()
			return fmt.Sprintf("mqtt://127.0.0.1:%d", port), stop, nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	stop()
	return "", nil, fmt.Errorf("mosquitto did not listen on %d", port)
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "ingest bench:", err)
	os.Exit(1)
}
