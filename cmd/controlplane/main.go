// Command controlplane runs the edgefleet control plane (`serve`) and the operator's tools.
// It is wiring only: flags and environment, signals, and calls into package controlplane.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/edgefleet/edgefleet/controlplane"
	"github.com/edgefleet/edgefleet/internal/cli"
	"github.com/edgefleet/edgefleet/internal/config"
	"github.com/edgefleet/edgefleet/internal/mqttc"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

const topUsage = `usage: controlplane COMMAND [flags]

commands:
  serve      run the control plane (HTTP API, MQTT, registry)
  keys       generate signing keys:   keys generate --out DIR [--role release|root|control]
  trust      sign a trust document:   trust sign --root root.key --version N --release a.pub --control control.pub --out trust.json
  bundle     build, verify, inspect:  bundle build|verify|inspect ...
  mosquitto-acl  write a Mosquitto password file and ACL for the enrolled devices: mosquitto-acl --data DIR --out DIR
  version    print the version

Run 'controlplane COMMAND --help' for a command's flags.

` + clientUsage

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, topUsage)
		return 2
	}
	var err error
	switch args[0] {
	case "serve":
		err = serve(ctx, args[1:], stdout, stderr) // stdout: --print-config
	case "keys":
		err = keysCmd(args[1:], stdout, stderr)
	case "trust":
		err = trustCmd(ctx, args[1:], stdout, stderr)
	case "bundle":
		err = bundleCmd(ctx, args[1:], stdout, stderr)
	case "mosquitto-acl":
		err = mosquittoACLCmd(ctx, args[1:], stdout, stderr)
	case "version", "--version", "-version":
		fmt.Fprintln(stdout, "controlplane", cli.Version)
	case "help", "--help", "-h", "-help":
		fmt.Fprint(stdout, topUsage)
	default:
		err = runClient(args, stdout, stderr)
	}
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "controlplane:", err)
		return 1
	}
	return 0
}

func newLogger(w io.Writer, level string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: use debug, info, warn or error", level)
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: l})), nil
}

func serve(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cli.Usage(fs, "controlplane serve [flags]")
	data := fs.String("data", "./var/controlplane", "data folder (store, admin token, bundles)")
	httpAddr := fs.String("http", "127.0.0.1:8080", "HTTP API and console address")
	mqttListen := fs.String("mqtt-listen", "127.0.0.1:1883", "embedded MQTT broker address (ignored with --broker)")
	brokerURL := fs.String("broker", "", "use an existing MQTT broker instead of the embedded one: mqtt://host:port or mqtts://host:port (comma-separated for fail-over)")
	user := fs.String("broker-username", "", "username at the external broker")
	pass := fs.String("broker-password", "", "password at the external broker (prefer the environment variable)")
	ca := fs.String("tls-ca", "", "PEM file of the CA that signs the external broker's certificate")
	cert := fs.String("tls-cert", "", "client certificate (PEM) for the external broker")
	key := fs.String("tls-key", "", "client key (PEM) for the external broker")
	clientID := fs.String("client-id", "", "MQTT client id at the external broker (default _edgefleet-controlplane)")
	prefix := fs.String("prefix", "edgefleet", "MQTT topic prefix")
	adminToken := fs.String("admin-token", "", "admin API token (default: generated into DATA/admin.token on first start)")
	var trustKeys cli.Strings
	fs.Var(&trustKeys, "trust", "release public key (or folder of .pub files) whose bundles the registry accepts; repeatable")
	trustDoc := fs.String("trust-doc", "", "root-signed trust document: its release keys are trusted and it is published to devices")
	controlKey := fs.String("control-key", "", "key that signs desired states (default DATA/control.key, generated on first start)")
	encryptionKey := fs.String("encryption-key", "", "age identity that opens encrypted bundles' content keys (default DATA/encryption.key, generated on first start; its recipient is DATA/encryption.pub)")
	bandwidth := fs.Int("bundle-bandwidth", 8<<20, "bytes per second for all bundle transfers together")
	carouselMin := fs.Int("carousel-min", 10, "broadcast a bundle once on its carousel when a group assignment targets at least this many devices (0: never)")
	desiredTTL := fs.Duration("desired-ttl", 7*24*time.Hour, "how long a desired state stays valid; re-issued at half-life")
	retrainURL := fs.String("retrain-webhook", "", "URL that receives retraining events (CloudEvents JSON, signed with --retrain-secret)")
	retrainSecret := fs.String("retrain-secret", "", "HMAC-SHA256 key for the X-Edgefleet-Signature header of retraining events (prefer the environment variable)")
	retrainAcc := fs.Float64("retrain-accuracy-min", 0, "fire a retraining event when a group's accuracy from feedback falls below this (0: off)")
	retrainEvery := fs.Duration("retrain-every", 0, "fire a scheduled retraining event per model this often (0: off)")
	retrainCheck := fs.Duration("retrain-check-interval", 5*time.Minute, "how often drift and accuracy are checked against the retraining triggers")
	datasetSweep := fs.Duration("dataset-sweep", time.Minute, "how often captured datasets past their group's capture retention are deleted")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	metricsPublic := fs.Bool("metrics-public", false, "serve /metrics without a token (default: a viewer token is needed)")
	requireCreds := fs.Bool("require-device-credentials", false, "embedded broker: refuse devices without enrolled credentials (recommended in production; off for the loopback demo)")
	publicURL := fs.String("public-url", "", "this control plane's URL as devices reach it, written into enrollment tokens (default http://HTTP-ADDRESS)")
	deviceBroker := fs.String("device-broker", "", "broker URL handed to enrolled devices (default the embedded broker's or --broker)")
	telemetryStore := fs.String("telemetry-store", "", "keep telemetry history in PostgreSQL, shared by replicas: postgres://USER@HOST:PORT/DATABASE (password in PGPASSWORD or ~/.pgpass; default: the main store)")
	pprofAddr := fs.String("pprof", "", "serve Go's profiler (net/http/pprof) on this address, e.g. 127.0.0.1:6060 (off by default; no authentication, keep it on loopback)")
	mosquittoDir := fs.String("mosquitto-dir", "", "keep a Mosquitto password file and ACL for the enrolled devices in this folder, rewritten on every enrollment and revocation")
	storeKind := fs.String("store", "bbolt", "metadata store: bbolt (DATA/controlplane.db, one process) or etcd (several replicas; see --etcd-endpoints)")
	etcdEndpoints := fs.String("etcd-endpoints", "", "with --store etcd: client URLs of the etcd members, comma-separated (http://10.0.0.1:2379,...)")
	etcdPrefix := fs.String("etcd-prefix", "edgefleet", "with --store etcd: key prefix shared by the replicas of this control plane")
	replicaID := fs.String("replica-id", "", "this replica's name in leader election and GET /api/v1/cluster (default: host name and a random suffix)")
	leaderTTL := fs.Duration("leader-ttl", 10*time.Second, "with --store etcd: how long a crashed leader keeps its term before another replica takes over")
	// --config FILE and --print-config (internal/config): defaults < file < environment < flags.
	if err := config.Parse(fs, args, stdout); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("serve: unexpected arguments %v", fs.Args())
	}
	log, err := newLogger(stderr, *logLevel)
	if err != nil {
		return err
	}
	if *pprofAddr != "" {
		if err := startPprof(*pprofAddr, log); err != nil {
			return fmt.Errorf("--pprof %s: %w", *pprofAddr, err)
		}
	}
	cfg := controlplane.Config{
		DataDir: *data, HTTPAddr: *httpAddr, MQTTListen: *mqttListen, Prefix: *prefix,
		AdminToken: *adminToken, Logger: log, TrustKeys: trustKeys, TrustDoc: *trustDoc, ControlKey: *controlKey,
		BundleBytesPerSecond: *bandwidth, CarouselMin: *carouselMin, DesiredTTL: *desiredTTL,
		Retrain:                  controlplane.RetrainConfig{URL: *retrainURL, Secret: *retrainSecret, AccuracyMin: *retrainAcc, Every: *retrainEvery, CheckEvery: *retrainCheck},
		MetricsPublic:            *metricsPublic,
		RequireDeviceCredentials: *requireCreds, PublicURL: *publicURL, DeviceBroker: *deviceBroker, MosquittoDir: *mosquittoDir,
		EncryptionKey: *encryptionKey,
		DatasetSweep:  *datasetSweep,
		Ready: func(i controlplane.Info) {
			tok := i.AdminTokenFile
			if tok == "" {
				tok = "$EDGEFLEET_ADMIN_TOKEN"
			}
			fmt.Fprintf(stderr, "edgefleet control plane: console http://%s/  broker %s  admin token in %s\n", i.HTTPAddr, i.BrokerURL, tok)
		},
	}
	cfg.Store, cfg.ReplicaID = *storeKind, *replicaID
	if *storeKind == controlplane.StoreEtcd {
		if *etcdEndpoints == "" {
			return fmt.Errorf("--store etcd needs --etcd-endpoints: the client URLs of the etcd members, comma-separated")
		}
		for _, e := range strings.Split(*etcdEndpoints, ",") {
			if e = strings.TrimSpace(e); e != "" {
				cfg.Etcd.Endpoints = append(cfg.Etcd.Endpoints, e)
			}
		}
		cfg.Etcd.Prefix, cfg.Etcd.LeaderTTL = *etcdPrefix, *leaderTTL
	} else if *etcdEndpoints != "" {
		return fmt.Errorf("--etcd-endpoints is set but --store is %q: add --store etcd", *storeKind)
	}
	cfg.TelemetryStore = *telemetryStore
	if *brokerURL != "" {
		urls, err := mqttc.ParseURLs(*brokerURL)
		if err != nil {
			return err
		}
		cfg.Broker = mqttc.Config{URLs: urls, Username: *user, Password: *pass, CAFile: *ca, CertFile: *cert, KeyFile: *key, ClientID: *clientID}
	}
	return controlplane.Run(ctx, cfg)
}
