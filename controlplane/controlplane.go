// Package controlplane wires the control plane: store, MQTT (embedded broker or an external one),
// device registry and HTTP API. The binary in cmd/controlplane only parses flags and calls Run.
package controlplane

import (
	"cmp"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
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
	"github.com/edgefleet/edgefleet/controlplane/assign"
	"github.com/edgefleet/edgefleet/controlplane/audit"
	"github.com/edgefleet/edgefleet/controlplane/auth"
	"github.com/edgefleet/edgefleet/controlplane/blocksrv"
	"github.com/edgefleet/edgefleet/controlplane/broker"
	"github.com/edgefleet/edgefleet/controlplane/bundles"
	"github.com/edgefleet/edgefleet/controlplane/datasets"
	"github.com/edgefleet/edgefleet/controlplane/enroll"
	"github.com/edgefleet/edgefleet/controlplane/extbroker"
	"github.com/edgefleet/edgefleet/controlplane/fleet"
	"github.com/edgefleet/edgefleet/controlplane/ingest"
	"github.com/edgefleet/edgefleet/controlplane/retrain"
	"github.com/edgefleet/edgefleet/controlplane/rollout"
	"github.com/edgefleet/edgefleet/controlplane/store"
	"github.com/edgefleet/edgefleet/controlplane/store/pgstore"
	"github.com/edgefleet/edgefleet/internal/atomicfile"
	"github.com/edgefleet/edgefleet/internal/dataset"
	"github.com/edgefleet/edgefleet/internal/mqttc"
	"github.com/edgefleet/edgefleet/internal/wire"
	"github.com/edgefleet/edgefleet/telemetry/drift"
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
	// TrustKeys are release public keys (files, or folders of .pub files) whose bundles the
	// registry accepts.
	TrustKeys []string
	// TrustDoc is a root-signed trust document; its release keys are trusted and it is published
	// retained on {prefix}/trust.
	TrustDoc string
	// ControlKey signs desired states; default DATA/control.key, generated on first start.
	ControlKey string
	// BundleBytesPerSecond bounds all bundle transfer traffic.
	BundleBytesPerSecond int
	// CarouselMin is the smallest wave for which a group assignment broadcasts the bundle once
	// (0: never).
	CarouselMin int
	// EncryptionKey is the age identity that opens encrypted bundles' content keys; default
	// DATA/encryption.key (recipient in DATA/encryption.pub), generated on first start.
	EncryptionKey string
	// DesiredTTL is the lifetime of a desired state (default 7 days).
	DesiredTTL time.Duration
	// TelemetryRetention is how long telemetry messages are kept (default 7 days).
	TelemetryRetention time.Duration
	// TelemetryStore, when set (postgres://...), keeps telemetry history in PostgreSQL instead of
	// the main store, where several replicas share it; metadata stays in the main store.
	TelemetryStore string
	// Retrain configures the retraining webhook; off without a URL.
	Retrain RetrainConfig
	Logger  *slog.Logger
	// MetricsPublic serves /metrics without a token (default: a viewer token is needed).
	MetricsPublic bool
	// Ready, when set, is called once everything listens.
	Ready func(Info)
	// RequireDeviceCredentials makes the embedded broker refuse any device without enrolled
	// credentials (recommended in production). Without it, a device id that has credentials must
	// still present them and a revoked one is refused, but ids never enrolled connect freely
	// (the loopback demo).
	RequireDeviceCredentials bool
	// PublicURL is the control plane's URL as devices reach it, written into enrollment tokens
	// (default http:// + the HTTP listen address).
	PublicURL string
	// DeviceBroker is the broker URL(s) handed to enrolled devices (default: the broker's URL).
	DeviceBroker string
	// MosquittoDir, when set, receives the Mosquitto password and ACL files, rewritten after every
	// enrollment and revocation (enroll.WriteMosquittoFiles).
	MosquittoDir string
	// DatasetSweep is how often datasets past their group's retention are deleted (default 1m);
	// Clock, when set, is the datasets' clock (retention tests).
	DatasetSweep time.Duration
	Clock        func() time.Time
	// Store is the metadata store: "bbolt" (default: DATA/controlplane.db, one process) or
	// "etcd" (Etcd; several replicas, which elect the one that runs the singletons).
	Store string
	Etcd  EtcdConfig
	// ReplicaID names this replica in leader election (default: host name and a random suffix).
	ReplicaID string
}

// RetrainConfig says where retraining events go and when they fire.
type RetrainConfig struct {
	URL, Secret string
	// AccuracyMin fires when a group's accuracy falls below it (0: off); Every fires on a schedule
	// (0: off); CheckEvery is how often triggers are evaluated (default 5m) over Window of
	// telemetry (default 1h); Cooldown spaces two events of one trigger (default 24h).
	AccuracyMin                         float64
	Every, CheckEvery, Window, Cooldown time.Duration
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

	replica := replicaID(cfg)
	stores, err := openStore(ctx, cfg, replica, log)
	if err != nil {
		return err
	}
	defer stores.Close()
	st, lead := stores.meta, stores.lead

	reg, err := fleet.Open(ctx, st, topics, log)
	if err != nil {
		return err
	}
	keys, err := loadKeys(ctx, cfg)
	if err != nil {
		return err
	}
	breg, err := bundles.New(st, filepath.Join(cfg.DataDir, "bundles"), keys.releaseVerifiers, 0, log)
	if err != nil {
		return err
	}
	if err := loadEncryptionKey(cfg, breg, log); err != nil {
		return err
	}
	regCtx, stopReg := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); reg.Run(regCtx, time.Second) }()
	defer func() { stopReg(); wg.Wait() }()
	if cfg.Store == StoreEtcd {
		// Groups set through another replica's API: adopt them (the device records each replica
		// writes carry what that replica had).
		wg.Add(1)
		go func() {
			defer wg.Done()
			t := time.NewTicker(2 * time.Second)
			defer t.Stop()
			for {
				if _, err := reg.SyncGroups(regCtx); err != nil && regCtx.Err() == nil {
					log.Warn("reading groups set by other replicas failed; retrying", "err", err)
				}
				select {
				case <-regCtx.Done():
					return
				case <-t.C:
				}
			}
		}()
	}

	// The bus is created below, after the handlers that need to publish exist; publish is late-bound.
	var fleetBus bus
	publish := func(ctx context.Context, topic string, payload []byte, qos byte, retain bool) error {
		if fleetBus == nil {
			return errors.New("not connected to the broker yet")
		}
		return fleetBus.Publish(ctx, topic, payload, qos, retain)
	}
	svcCtx, stopSvc := context.WithCancel(context.Background())
	defer stopSvc()
	assigner := assign.New(st, keys.control, publish, topics, cfg.DesiredTTL, log)
	ds := &desiredService{st: st, reg: reg, bundles: breg, assigner: assigner, carouselMin: cfg.CarouselMin, log: log, ctx: svcCtx, carousel: map[string]time.Time{}}
	blocks := blocksrv.New(blocksrv.Config{Source: breg, Publish: publish, Topics: topics, Allowed: ds.allowed, BytesPerSecond: cfg.BundleBytesPerSecond, Logger: log})
	ds.blocks = blocks
	telemetryStore, closeTelemetry, err := openTelemetryStore(ctx, cfg.TelemetryStore, stores.telemetry)
	if err != nil {
		return err
	}
	defer closeTelemetry()
	ing := ingest.New(telemetryStore, publish, topics, cfg.TelemetryRetention, log)
	if cfg.TelemetryStore != "" {
		ing.SharedStore()
		n, err := ingest.CarryAccounting(ctx, stores.telemetry, telemetryStore)
		if err != nil {
			return fmt.Errorf("copy telemetry accounting into the telemetry store: %w", err)
		}
		if n > 0 {
			log.Info("copied telemetry accounting into the telemetry store; devices resume after their last acknowledged message", "devices", n)
		}
	}
	// A completed dataset is a retraining event when a webhook is configured (set below).
	var retrainNotifier *retrain.Notifier
	onDataset := func(ctx context.Context, r datasets.Record) {
		if retrainNotifier == nil {
			return
		}
		d := retrain.Data{Model: r.Model, Version: r.Version, Bundle: r.Bundle, Groups: []string{r.Group},
			Reason: fmt.Sprintf("dataset of %d samples captured (%s: %s)", r.Samples, r.Trigger, r.Reason), Datasets: []string{r.ID}}
		if _, err := retrainNotifier.Notify(ctx, retrain.TypeDataset, d); err != nil {
			log.Warn("retraining event for a dataset not queued", "dataset", r.ID, "err", err)
		}
	}
	dsets, err := openDatasets(cfg, st, ds, reg, publish, topics, log, onDataset) // sample capture (capture.go)
	if err != nil {
		return err
	}
	grantOnline := grantOnConnect(svcCtx, dsets, ds, reg, log)
	keys.datasetRecipient = dsets.Recipient // shown by GET /api/v1/trust
	// Rollouts: the controller that drives deploy/ (controlplane/rollout); its model-aware gates
	// read the devices' committed inference windows.
	metrics := &cohorts{ing: ing, reg: reg, bundleDir: filepath.Join(cfg.DataDir, "bundles"), refs: map[string]*drift.Reference{},
		wins: newWindowCache(ing),
		release: func(id string) string {
			rec, err := breg.Get(svcCtx, id)
			if err != nil {
				return ""
			}
			return rec.Kind + "/" + rec.Name + "@" + rec.Version
		}}
	var retrainAPI api.Retrain
	if cfg.Retrain.URL != "" {
		n, err := retrain.New(retrain.Config{URL: cfg.Retrain.URL, Secret: cfg.Retrain.Secret, Store: st, Logger: log})
		if err != nil {
			return err
		}
		mon := &retrain.Monitor{N: n, Src: metrics, Logger: log, T: retrain.Triggers{Window: cfg.Retrain.Window,
			AccuracyMin: cfg.Retrain.AccuracyMin, Every: cfg.Retrain.Every, Cooldown: cfg.Retrain.Cooldown}}
		wg.Add(2)
		go func() { defer wg.Done(); n.Run(svcCtx) }()
		go func() { defer wg.Done(); mon.Run(svcCtx, cmp.Or(cfg.Retrain.CheckEvery, 5*time.Minute)) }()
		retrainAPI, retrainNotifier = n, n
	}
	rollouts, err := rollout.New(rollout.Config{Store: st, Fleet: rolloutFleet{ds}, Metrics: metrics, Logger: log,
		BundleBytesPerSecond: blocks.BytesPerSecond()})
	if err != nil {
		return err
	}
	wg.Add(1)
	go func() { defer wg.Done(); ing.Run(svcCtx) }()
	events := make(chan string, 4096)
	ingestShards := newShardSet(svcCtx, stores.shards, cfg.TelemetryStore != "" && cfg.Store == StoreEtcd)
	dispatch := func(topic string, payload []byte) {
		p, err := topics.Parse(topic)
		if err == nil && p.Kind == wire.KindBlocksReq {
			blocks.Handle(p.Device, payload)
			return
		}
		if err == nil && p.Kind == wire.KindUpload && p.Sub == dataset.UploadSub {
			dsets.Enqueue(p.Device, payload)
			return
		}
		if err == nil && p.Kind == wire.KindCmdResult {
			dsets.HandleResult(p.Device, payload)
		}
		herr := reg.HandleMessage(topic, payload)
		if err == nil && herr == nil && p.Kind == wire.KindStatus {
			grantOnline(p.Device, payload) // after the registry took the device's group from it
		}
		if err == nil && herr == nil && p.Kind == wire.KindTelemetry && ingestShards.has(p.Device) {
			var m wire.Telemetry
			if json.Unmarshal(payload, &m) == nil {
				ing.Handle(m)
			}
		}
		if err == nil && p.Kind == wire.KindReported {
			select {
			case events <- p.Device:
			default: // the next reported message triggers it again
			}
		}
		if err == nil && (p.Kind == wire.KindReported || p.Kind == wire.KindStatus) {
			rollouts.Poke() // rollouts: a device's install state or presence changed
		}
	}
	wg.Add(2)
	go func() { defer wg.Done(); dsets.Run(svcCtx, cfg.DatasetSweep) }()
	go func() { defer wg.Done(); blocks.Run(svcCtx) }()

	var rootFP string
	if keys.trustEnvelope != nil {
		if ids := keys.trust.RootIDs(); len(ids) > 0 {
			rootFP = ids[0]
		}
	}
	var enrSvc *enroll.Service // the Changed callback below needs the service it belongs to
	mosqOpts := enroll.MosquittoOptions{Prefix: cfg.Prefix, ControlPlaneUser: cfg.Broker.Username}
	enr := enroll.New(enroll.Config{Store: st, RootSHA256: rootFP, Logger: log, Changed: func(ctx context.Context) {
		if cfg.MosquittoDir == "" {
			return
		}
		if err := writeMosquitto(ctx, enrSvc, cfg.MosquittoDir, mosqOpts); err != nil {
			log.Error("Mosquitto password and ACL files not rewritten", "dir", cfg.MosquittoDir, "err", err)
		}
	}})
	enrSvc = enr
	if cfg.MosquittoDir != "" {
		if err := writeMosquitto(ctx, enr, cfg.MosquittoDir, mosqOpts); err != nil {
			return err
		}
	}
	var disconnect func(string)

	var brokerURL string
	if len(cfg.Broker.URLs) > 0 {
		if cfg.Broker.ClientID == "" {
			// Not a valid device id (leading '_'), so no device can take over our session.
			cfg.Broker.ClientID = "_edgefleet-controlplane"
			if cfg.Store == StoreEtcd {
				// Replicas share the broker: one client id each, or they take each other's session.
				cfg.Broker.ClientID += "-" + replica
			}
		}
		c, err := extbroker.Connect(ctx, cfg.Broker, topics.FleetFilters(), dispatch, log)
		if err != nil {
			return err
		}
		fleetBus, brokerURL = c, strings.Join(cfg.Broker.URLs, ",")
	} else {
		listen := cfg.MQTTListen
		if listen == "" {
			listen = "127.0.0.1:1883"
		}
		b, err := broker.Start(broker.Config{Listen: listen, Prefix: cfg.Prefix, Handler: dispatch, Logger: log,
			Authenticate: func(id, user string, pw []byte) bool {
				switch enr.Check(context.Background(), id, user, pw) {
				case enroll.Accepted:
					return true
				case enroll.NoCredentials:
					return !cfg.RequireDeviceCredentials
				}
				return false
			}})
		if err != nil {
			return err
		}
		disconnect = func(id string) { b.Disconnect(id) }
		fleetBus, brokerURL = embeddedBus{b}, b.URL()
	}
	defer fleetBus.Close()
	// Retained documents the control plane owns go out again: an embedded broker forgot them.
	if keys.trustEnvelope != nil {
		if err := publish(ctx, topics.Trust(), keys.trustEnvelope, 1, true); err != nil {
			return fmt.Errorf("publish trust document: %w", err)
		}
	}
	if err := assigner.RepublishAll(ctx); err != nil {
		log.Warn("republishing desired states failed; devices get them on their next report", "err", err)
	}
	// Rollouts start once the broker is up, so the actions replayed from the outbox reach devices,
	// and stop with ctx, before the broker closes: the fleet dropping off a stopping control plane
	// is not evidence against a rollout.
	// They are singletons, like the re-issuer of desired states (devices that report an old
	// generation or lack their group's baseline, and states about to expire): they run on the
	// leader only (always this process with bbolt) and stop when it loses the lead, so that
	// replicas sharing a broker do not each answer the same report.
	roCtx, stopRollouts := context.WithCancel(ctx)
	defer stopRollouts()
	if stores.run != nil { // telemetry shard ownership among replicas (shown in GET /api/v1/cluster)
		wg.Add(1)
		go func() { defer wg.Done(); stores.run(roCtx) }()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		lead.Lead(roCtx, func(ctx context.Context) {
			var lwg sync.WaitGroup
			lwg.Add(1)
			go func() { defer lwg.Done(); rollouts.Run(ctx) }()
			refresh := time.NewTicker(time.Hour)
			defer refresh.Stop()
			stale := time.NewTicker(30 * time.Second)
			defer stale.Stop()
			for {
				select {
				case <-ctx.Done():
					lwg.Wait()
					return
				case dev := <-events:
					ds.onReported(ctx, dev)
				case <-refresh.C:
					assigner.RefreshExpiring(ctx)
				case <-stale.C:
					ds.resendStale(ctx)
				}
			}
		})
	}()

	ln, err := net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		return fmt.Errorf("HTTP listen on %s: %w", cfg.HTTPAddr, err)
	}
	srv := &http.Server{
		Handler: api.New(api.Config{Registry: reg, Bundles: breg, Desired: ds, Groups: ds, Retrain: retrainAPI, Telemetry: ing, Rollouts: rollouts, Audit: auditLog{st}, Drift: driftAPI{metrics},
			Command: func(ctx context.Context, device string, payload []byte) error {
				return publish(ctx, topics.Cmd(device), payload, 1, false)
			},
			Enrollment: enrollAPI{svc: enr, broker: func() string { return deviceBroker(cfg, brokerURL) }, prefix: cfg.Prefix,
				controlPEM: keys.control.PublicKeyPEM(), trustDoc: keys.trustEnvelope, disconnect: disconnect, log: log},
			Datasets:       dsets,
			Trust:          keys,
			AdminTokenHash: tokenHash, Logger: log,
			Tokens: auth.New(st, tokenHash), MetricsPublic: cfg.MetricsPublic,
			Cluster: clusterAPI{lead: lead, shards: stores.shards, store: cfg.Store},
			Metrics: metricsHandler(reg, blocks, ing, rollouts, metrics)}),
		ReadHeaderTimeout: 10 * time.Second,
	}
	if cfg.PublicURL != "" {
		enr.SetURL(strings.TrimRight(cfg.PublicURL, "/"))
	} else {
		enr.SetURL("http://" + ln.Addr().String())
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

func deviceBroker(cfg Config, brokerURL string) string {
	if cfg.DeviceBroker != "" {
		return cfg.DeviceBroker
	}
	return brokerURL
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

// auditLog is the store-backed audit log the API writes and reads.
type auditLog struct{ st store.Store }

func (a auditLog) Record(ctx context.Context, e audit.Entry) error { return audit.Record(ctx, a.st, e) }
func (a auditLog) List(ctx context.Context, since time.Time, limit int) ([]audit.Entry, error) {
	return audit.List(ctx, a.st, since, limit)
}

type driftAPI struct{ c *cohorts }

func (d driftAPI) FleetDrift(ctx context.Context, bundle, group string, since time.Time) (any, error) {
	return d.c.Drift(ctx, bundle, group, since)
}

// openTelemetryStore returns where telemetry history goes: the main store by default, or the
// PostgreSQL database named by a postgres:// URL, which several replicas can share.
func openTelemetryStore(ctx context.Context, dsn string, main store.Store) (store.Store, func(), error) {
	if dsn == "" {
		return main, func() {}, nil
	}
	if !strings.HasPrefix(dsn, "postgres://") && !strings.HasPrefix(dsn, "postgresql://") {
		return nil, nil, errors.New("--telemetry-store: give a PostgreSQL URL, postgres://USER@HOST:PORT/DATABASE (password in PGPASSWORD or ~/.pgpass)")
	}
	pg, err := pgstore.Open(ctx, dsn)
	if err != nil {
		return nil, nil, fmt.Errorf("open the telemetry store (--telemetry-store): %w", err)
	}
	return pg, func() { pg.Close() }, nil
}
