// Command agent runs the edgefleet device agent. It is wiring only: flags and environment,
// signals, and calls into package agent.
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
	"syscall"
	"time"

	"github.com/edgefleet/edgefleet/agent"
	"github.com/edgefleet/edgefleet/agent/infer"
	"github.com/edgefleet/edgefleet/agent/launcher"
	"github.com/edgefleet/edgefleet/agent/sim"
	"github.com/edgefleet/edgefleet/internal/cli"
	"github.com/edgefleet/edgefleet/internal/config"
	"github.com/edgefleet/edgefleet/internal/mqttc"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

const topUsage = `usage: agent COMMAND [flags]

commands:
  run        connect this device to the fleet and serve its models
  launch     run the agent from its runtime slots, switching to (and reverting) agents updated by runtime bundles
  simulate   run N simulated devices (real agents with generated traffic) in one process
  version    print the version

Run 'agent COMMAND --help' for a command's flags.
`

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, topUsage)
		return 2
	}
	var err error
	switch args[0] {
	case "run":
		err = runAgent(ctx, args[1:], stdout, stderr) // stdout: --print-config
		if errors.Is(err, agent.ErrRestart) {
			return launcher.ExitSwitch
		}
	case "launch":
		err = launch(ctx, args[1:], stdout, stderr)
		if errors.Is(err, launcher.ErrUsage) {
			fmt.Fprintln(stderr, "agent:", err)
			return 2
		}
	case "simulate":
		err = simulate(ctx, args[1:], stderr)
	case "version", "--version", "-version":
		fmt.Fprintln(stdout, "agent", cli.Version)
	case "help", "--help", "-h", "-help":
		fmt.Fprint(stdout, topUsage)
	default:
		fmt.Fprintf(stderr, "agent: unknown command %q\n\n%s", args[0], topUsage)
		return 2
	}
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "agent:", err)
		return 1
	}
	return 0
}

func runAgent(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cli.Usage(fs, "agent run --id ID --broker URL --data DIR [flags]")
	id := fs.String("id", "", "device id (also the MQTT client id): [a-z0-9][a-z0-9._-]{0,63}")
	brokerURL := fs.String("broker", "", "MQTT broker URL(s), comma-separated for fail-over (default: the enrolled broker, else mqtt://127.0.0.1:1883)")
	user := fs.String("broker-username", "", "username at the broker")
	pass := fs.String("broker-password", "", "password at the broker (prefer the environment variable)")
	ca := fs.String("tls-ca", "", "PEM file of the CA that signs the broker's certificate")
	cert := fs.String("tls-cert", "", "client certificate (PEM)")
	key := fs.String("tls-key", "", "client key (PEM)")
	data := fs.String("data", "", "data folder (state, bundles, spool)")
	group := fs.String("group", "", "group to join at first registration (the registry decides afterwards)")
	labels := fs.String("labels", "", "labels k=v,k2=v2 for first registration")
	prefix := fs.String("prefix", "edgefleet", "MQTT topic prefix")
	interval := fs.Duration("telemetry-interval", 60e9, "how often to send health telemetry")
	var trustKeys cli.Strings
	var faults cli.List
	fs.Var(&trustKeys, "trust", "release public key whose bundles this device accepts; repeatable")
	controlKey := fs.String("control-key", "", "the control plane's public key (DATA/control.pub there) that signs desired states")
	root := fs.String("root", "", "root public key: release and control keys then come from root-signed trust documents (replaces --trust and --control-key)")
	enrollTok := fs.String("enroll", "", "enrollment token (ef1...): redeem it for this device's MQTT credentials and trust document, kept in DATA (a no-op once enrolled)")
	listen := fs.String("listen", "127.0.0.1:8181", "local inference API (Open Inference Protocol) address; empty to disable")
	ortLib := fs.String("ort-lib", "", "ONNX Runtime shared library (default: $EDGEFLEET_ORT_LIB or the cache of scripts/fetch-ort.sh)")
	ep := fs.String("ep", "cpu", "execution provider: cpu, cuda or tensorrt (falls back to cpu, loudly, when unavailable)")
	threads := fs.Int("intra-op-threads", 1, "ONNX Runtime threads per session")
	reserve := fs.Uint64("memory-reserve", 64<<20, "bytes of memory kept free when checking room for a second session")
	stall := fs.Duration("stall-timeout", 60e9, "abandon a download that makes no progress for this long (retried with backoff)")
	fs.Var(&faults, "fault", "inject a fault for testing, e.g. 'bundle=NAME@VERSION,errors=0.5'; repeatable")
	sessions := fs.Int("infer-sessions", 1, "ONNX Runtime sessions per model version")
	concurrency := fs.Int("infer-concurrency", 0, "concurrent runs per model (0: number of cores)")
	maxBatch := fs.Int("max-batch", 0, "dynamic batching: most requests stacked into one run (0: off)")
	maxBatchWait := fs.Duration("max-batch-wait", 2e6, "dynamic batching: longest a request waits for others")
	localMQTT := fs.String("local-mqtt", "", "answer inference requests on this local MQTT broker (e.g. mqtt://127.0.0.1:1883); empty: off")
	localTopic := fs.String("local-mqtt-topic", "", "local request topic with a {model} level (default edgefleet/local/infer/{model})")
	spoolBytes := fs.Int64("spool-max-bytes", 16<<20, "telemetry kept on disk while unacknowledged; beyond it old windows are merged, then dropped (counted)")
	spoolAge := fs.Duration("spool-max-age", 7*24*time.Hour, "telemetry older than this is merged into coarse windows")
	drainRate := fs.Float64("drain-rate", 20, "telemetry messages per second when catching up after a disconnect")
	telBudget := fs.Int64("telemetry-budget", 0, "most telemetry bytes per rolling day (0: no limit); over it windows lengthen, then drift histograms shrink to moments, counts are never dropped")
	crashAt := fs.String("crash-at", "", "testing only: kill the process right after the install lifecycle records this step")
	captureEvery := fs.Duration("capture-every", 0, "capture samples of every served model this often, only where the group's capture policy allows it (0: off)")
	captureDrift := fs.Float64("capture-drift-psi", 0, "capture samples of a model when a telemetry window's largest PSI against its bundle's reference passes this, only where the group's capture policy allows it (0: off)")
	captureBlock := fs.Int64("capture-block-size", 0, "bytes per block when uploading captured samples (0: 64 KiB)")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	// --config FILE and --print-config (internal/config): defaults < file < environment < flags.
	if err := config.Parse(fs, args, stdout); err != nil {
		return err
	}
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(*logLevel)); err != nil {
		return fmt.Errorf("--log-level %q: use debug, info, warn or error", *logLevel)
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: lvl}))
	// Enrollment (agent/enroll.go): redeem the token once; later runs read DATA/credentials.json.
	enrolled := false
	if *data != "" {
		var creds agent.Credentials
		var ok bool
		var err error
		if *enrollTok != "" {
			if *root != "" {
				return errors.New("--root and --enroll exclude each other: the token carries the root's fingerprint")
			}
			creds, err = agent.Enroll(ctx, *data, *enrollTok, *id, log)
			ok = err == nil
		} else {
			creds, ok, err = agent.LoadCredentials(*data)
		}
		if err != nil {
			return err
		}
		if ok {
			if *id != "" && *id != creds.Device {
				return fmt.Errorf("data folder %s is enrolled as device %q, not %q: drop --id or use another folder", *data, creds.Device, *id)
			}
			*id, *user, *pass = creds.Device, creds.Username, creds.Password
			if *brokerURL == "" {
				*brokerURL = creds.Broker
			}
			if creds.Prefix != "" {
				*prefix = creds.Prefix
			}
			if creds.Group != "" {
				*group = creds.Group // the token's group applies at first registration
			}
			enrolled = creds.Trusted && *root == ""
		}
	}
	if *id == "" {
		return errors.New("--id is required (or --enroll TOKEN, which can assign one)")
	}
	if *brokerURL == "" {
		*brokerURL = "mqtt://127.0.0.1:1883"
	}
	urls, err := mqttc.ParseURLs(*brokerURL)
	if err != nil {
		return err
	}
	lbl, err := cli.ParseLabels(*labels)
	if err != nil {
		return fmt.Errorf("--labels: %w", err)
	}
	var fl []agent.Fault
	for _, f := range faults {
		pf, err := agent.ParseFault(f)
		if err != nil {
			return err
		}
		fl = append(fl, pf)
	}
	a, err := agent.New(agent.Config{
		ID: *id, DataDir: *data, Group: *group, Labels: lbl, Prefix: *prefix, TelemetryInterval: *interval, Logger: log,
		TrustKeys: trustKeys, ControlKey: *controlKey, Root: *root, Enrolled: enrolled, Listen: *listen, ORTLib: *ortLib, EP: *ep, IntraOpThreads: *threads,
		MemoryReserve: *reserve, StallTimeout: *stall, Faults: fl, CrashAt: *crashAt,
		Serving:   infer.LoadOptions{Sessions: *sessions, Concurrency: *concurrency, MaxBatch: *maxBatch, MaxWait: *maxBatchWait},
		LocalMQTT: *localMQTT, LocalMQTTTopic: *localTopic, LaunchSlot: os.Getenv(launcher.EnvSlot), SpoolMaxBytes: *spoolBytes, SpoolMaxAge: *spoolAge, DrainRate: *drainRate,
		CaptureEvery: *captureEvery, CaptureDriftPSI: *captureDrift, CaptureBlockSize: *captureBlock,
		Broker:          mqttc.Config{URLs: urls, Username: *user, Password: *pass, CAFile: *ca, CertFile: *cert, KeyFile: *key},
		TelemetryBudget: *telBudget,
	})
	if err != nil {
		return err
	}
	return a.Run(ctx)
}

func simulate(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("simulate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cli.Usage(fs, "agent simulate --count N --broker URL --data DIR [flags]")
	count := fs.Int("count", 10, "number of simulated devices (ids sim-00001...)")
	first := fs.Int("first", 1, "number of the first simulated device (to split a fleet over several processes: --count 5000 --first 5001)")
	brokerURL := fs.String("broker", "mqtt://127.0.0.1:1883", "MQTT broker URL(s)")
	data := fs.String("data", "", "data folder; each device gets DIR/sim-NNNNN")
	groups := fs.String("groups", "default", "groups with weights, e.g. line-a=60%,line-b=40%")
	var trustKeys cli.Strings
	var faults cli.List
	fs.Var(&trustKeys, "trust", "release public key; repeatable")
	controlKey := fs.String("control-key", "", "the control plane's desired-state public key")
	root := fs.String("root", "", "root public key (trust documents) instead of --trust/--control-key")
	prefix := fs.String("prefix", "edgefleet", "MQTT topic prefix")
	interval := fs.Duration("telemetry-interval", 60e9, "telemetry interval of each device")
	rate := fs.Float64("rate", 2, "inference requests per second per device")
	seed := fs.Uint64("seed", 1, "seed of group and fault assignment")
	simBudget := fs.Int64("telemetry-budget", 0, "each device's most telemetry bytes per rolling day (0: no limit)")
	fs.Var(&faults, "fault", "fault keyed by bundle version: 'bundle=NAME@VERSION,install=fail|smoke-fail|errors=P|latency=3x|output-shift=X[,fraction=F][,group=G]' or 'offline=F'; repeatable")
	ortLib := fs.String("ort-lib", "", "ONNX Runtime shared library")
	logLevel := fs.String("log-level", "warn", "debug, info, warn or error")
	if err := cli.Parse(fs, args); err != nil {
		return err
	}
	if *data == "" {
		return errors.New("--data is required")
	}
	urls, err := mqttc.ParseURLs(*brokerURL)
	if err != nil {
		return err
	}
	gs, err := sim.ParseGroups(*groups)
	if err != nil {
		return err
	}
	var fl []agent.Fault
	for _, f := range faults {
		pf, err := agent.ParseFault(f)
		if err != nil {
			return err
		}
		fl = append(fl, pf)
	}
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(*logLevel)); err != nil {
		return fmt.Errorf("--log-level %q: use debug, info, warn or error", *logLevel)
	}
	if *ortLib != "" {
		os.Setenv("EDGEFLEET_ORT_LIB", *ortLib)
	}
	return sim.Run(ctx, sim.Config{Count: *count, First: *first, Broker: mqttc.Config{URLs: urls}, DataDir: *data, Groups: gs, TrustKeys: trustKeys,
		ControlKey: *controlKey, Root: *root, Prefix: *prefix, Faults: fl, TelemetryInterval: *interval, RequestsPerSecond: *rate,
		Seed: *seed, TelemetryBudget: *simBudget, Logger: slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: lvl}))})
}
