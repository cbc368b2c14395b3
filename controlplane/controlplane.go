// Package controlplane wires the control plane: store, MQTT (embedded broker or an external one),
// device registry and HTTP API. The binary in cmd/controlplane only parses flags and calls Run.
package controlplane

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/edgefleet/edgefleet/controlplane/api"
	"github.com/edgefleet/edgefleet/controlplane/broker"
	"github.com/edgefleet/edgefleet/controlplane/extbroker"
	"github.com/edgefleet/edgefleet/controlplane/fleet"
	"github.com/edgefleet/edgefleet/controlplane/store"
	"github.com/edgefleet/edgefleet/internal/atomicfile"
	"github.com/edgefleet/edgefleet/internal/mqttc"
	"github.com/edgefleet/edgefleet/internal/wire"
)

// Config of one control plane process.
type Config struct {
	DataDir  string
	HTTPAddr string
	// MQTTListen is the embedded broker's address; ignored when Broker is set.
	MQTTListen string
	// Broker, when it has URLs, selects an external broker instead of the embedded one.
	Broker mqttc.Config
	Prefix string
	// AdminToken overrides DATA/admin.token (EDGEFLEET_ADMIN_TOKEN).
	AdminToken string
	Logger     *slog.Logger
	// Ready, when set, is called once everything listens.
	Ready func(Info)
}

// Info tells where a running control plane listens.
type Info struct {
	HTTPAddr       string
	BrokerURL      string
	AdminTokenFile string
}

// bus is how the control plane publishes to the fleet, whichever broker carries it.
type bus interface {
	Publish(ctx context.Context, topic string, payload []byte, qos byte, retain bool) error
	Close() error
}

type embeddedBus struct{ b *broker.Broker }

func (e embeddedBus) Publish(_ context.Context, topic string, payload []byte, qos byte, retain bool) error {
	return e.b.Publish(topic, payload, qos, retain)
}
func (e embeddedBus) Close() error { return e.b.Close() }

// Run serves until ctx ends, then shuts down gracefully: stop accepting HTTP, close MQTT, flush
// the registry, close the store.
func Run(ctx context.Context, cfg Config) error {
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	if cfg.DataDir == "" {
		return errors.New("no data folder: pass --data DIR")
	}
	if cfg.Prefix == "" {
		cfg.Prefix = wire.DefaultPrefix
	}
	if !wire.ValidPrefix(cfg.Prefix) {
		return fmt.Errorf("invalid topic prefix %q", cfg.Prefix)
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return fmt.Errorf("create data folder: %w", err)
	}
	topics := wire.NewTopics(cfg.Prefix)

	tokenHash, tokenFile, err := adminToken(cfg)
	if err != nil {
		return err
	}

	st, err := store.OpenBolt(filepath.Join(cfg.DataDir, "controlplane.db"))
	if err != nil {
		return err
	}
	defer st.Close()

	reg, err := fleet.Open(ctx, st, topics, log)
	if err != nil {
		return err
	}
	regCtx, stopReg := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); reg.Run(regCtx, time.Second) }()
	defer func() { stopReg(); wg.Wait() }()

	var fleetBus bus
	var brokerURL string
	if len(cfg.Broker.URLs) > 0 {
		if cfg.Broker.ClientID == "" {
			// Not a valid device id (leading '_'), so no device can take over our session.
			cfg.Broker.ClientID = "_edgefleet-controlplane"
		}
		c, err := extbroker.Connect(ctx, cfg.Broker, topics.FleetFilters(), reg.HandleMessage, log)
		if err != nil {
			return err
		}
		fleetBus, brokerURL = c, strings.Join(cfg.Broker.URLs, ",")
	} else {
		listen := cfg.MQTTListen
		if listen == "" {
			listen = "127.0.0.1:1883"
		}
		b, err := broker.Start(broker.Config{Listen: listen, Prefix: cfg.Prefix, Handler: reg.HandleMessage, Logger: log})
		if err != nil {
			return err
		}
		fleetBus, brokerURL = embeddedBus{b}, b.URL()
	}
	defer fleetBus.Close()

	ln, err := net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		return fmt.Errorf("HTTP listen on %s: %w", cfg.HTTPAddr, err)
	}
	srv := &http.Server{
		Handler:           api.New(api.Config{Registry: reg, AdminTokenHash: tokenHash, Logger: log}),
		ReadHeaderTimeout: 10 * time.Second,
	}
	httpErr := make(chan error, 1)
	go func() { httpErr <- srv.Serve(ln) }()

	info := Info{HTTPAddr: ln.Addr().String(), BrokerURL: brokerURL, AdminTokenFile: tokenFile}
	log.Info("control plane ready", "console", "http://"+info.HTTPAddr+"/", "broker", brokerURL, "admin_token", tokenFileHint(tokenFile))
	if cfg.Ready != nil {
		cfg.Ready(info)
	}

	select {
	case <-ctx.Done():
	case err := <-httpErr:
		return fmt.Errorf("HTTP server: %w", err)
	}
	log.Info("shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		log.Warn("HTTP shutdown", "err", err)
	}
	return nil
}

func tokenFileHint(f string) string {
	if f == "" {
		return "from EDGEFLEET_ADMIN_TOKEN"
	}
	return f
}

// adminToken returns the hash of the admin token, creating DATA/admin.token (0600) on first
// start unless the token comes from the environment. The clear token is never logged.
func adminToken(cfg Config) ([32]byte, string, error) {
	if cfg.AdminToken != "" {
		return sha256.Sum256([]byte(cfg.AdminToken)), "", nil
	}
	path := filepath.Join(cfg.DataDir, "admin.token")
	b, err := os.ReadFile(path)
	if err == nil {
		tok := strings.TrimSpace(string(b))
		if tok == "" {
			return [32]byte{}, "", fmt.Errorf("admin token file %s is empty: delete it to have a new one generated", path)
		}
		return sha256.Sum256([]byte(tok)), path, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return [32]byte{}, "", fmt.Errorf("read admin token: %w", err)
	}
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		return [32]byte{}, "", fmt.Errorf("generate admin token: %w", err)
	}
	tok := "efa_" + hex.EncodeToString(raw)
	if err := atomicfile.WriteFile(path, []byte(tok+"\n"), 0o600); err != nil {
		return [32]byte{}, "", fmt.Errorf("write admin token: %w", err)
	}
	return sha256.Sum256([]byte(tok)), path, nil
}
