// Package agent is the device side of edgefleet: the MQTT session with the fleet (persistent
// session, Last Will with a session counter, handlers registered before connecting, subscriptions
// re-made on every connection, reconnect with backoff), the reported state and health telemetry.
// Later parts add bundle install, inference and store-and-forward. The binary in cmd/agent only
// parses flags and calls Run.
package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/edgefleet/edgefleet/agent/capture"
	"github.com/edgefleet/edgefleet/agent/infer"
	"github.com/edgefleet/edgefleet/agent/localmqtt"
	"github.com/edgefleet/edgefleet/agent/spool"
	"github.com/edgefleet/edgefleet/internal/atomicfile"
	"github.com/edgefleet/edgefleet/internal/cli"
	"github.com/edgefleet/edgefleet/internal/mqttc"
	"github.com/edgefleet/edgefleet/internal/wire"
	"github.com/edgefleet/edgefleet/telemetry"
	"github.com/edgefleet/edgefleet/telemetry/budget"
)

// Config of one agent.
type Config struct {
	ID                string
	Broker            mqttc.Config // ClientID is forced to ID
	DataDir           string
	Group             string
	Labels            map[string]string
	Prefix            string
	TelemetryInterval time.Duration
	Logger            *slog.Logger

	// TrustKeys are release public keys (bundle signatures); ControlKey the control plane's
	// public key (desired-state signatures). Without them everything is refused.
	TrustKeys  []string
	ControlKey string
	// Root is the root public key whose signed trust documents (on {p}/trust) name the release and
	// control keys; it replaces TrustKeys and ControlKey.
	Root string
	// Enrolled says enrollment left a trust document in DATA/trust.json, checked against the
	// token's root fingerprint: it is the trust root, as Root would be.
	Enrolled bool
	// Listen is the local inference API address ("" = none).
	Listen         string
	ORTLib         string
	EP             string
	IntraOpThreads int
	// MemoryReserve is kept free when checking memory for a second session.
	MemoryReserve uint64
	// StallTimeout abandons a download that makes no progress for this long.
	StallTimeout time.Duration
	// Faults are injected misbehaviours keyed by bundle version (tests, simulations).
	Faults []Fault
	// CrashAt kills the process right after the install lifecycle persists this step (crash tests).
	CrashAt string
	// Serving options: ORT sessions per model version, concurrent runs, dynamic batching.
	Serving infer.LoadOptions
	// Spool bounds (0: 16 MiB, 7 days); DrainRate is messages per second when catching up (0: 20).
	SpoolMaxBytes int64
	SpoolMaxAge   time.Duration
	DrainRate     float64
	// SpoolNoSync skips fsync in the spool (simulators only: gives up crash safety).
	SpoolNoSync bool
	// LocalMQTT, when set, answers inference requests on the device's local broker.
	LocalMQTT      string
	LocalMQTTTopic string
	// Sample capture (capturing.go): automatic captures every CaptureEvery and when a window's
	// largest PSI against the bundle's reference passes CaptureDriftPSI (0: off), both only under
	// the control plane's grant; CaptureBlockSize is the upload block (0: 64 KiB).
	CaptureEvery     time.Duration
	CaptureDriftPSI  float64
	CaptureBlockSize int64
	// LaunchSlot is the runtime slot this process runs from ($EDGEFLEET_LAUNCH_SLOT, set by
	// `agent launch`); empty when no launcher supervises it, so runtime bundles are refused.
	LaunchSlot string
	// TelemetryBudget is the most telemetry bytes a day (0: no limit); see package telemetry/budget
	// for what gives way first.
	TelemetryBudget int64
}

// ErrRestart is what Run returns when the agent stops so that its launcher switches to a newly
// installed agent; the command exits with launcher.ExitSwitch.
var ErrRestart = errors.New("stopping for a switch to a new agent")

// Agent is one running device agent.
type Agent struct {
	cfg    Config
	topics wire.Topics
	log    *slog.Logger
	host   wire.HostFacts

	mu        sync.Mutex
	state     persisted
	client    paho.Client
	connected bool

	ota    *otaState
	infTel *inferenceTelemetry
	spool  *spool.Spool
	// capture holds armed sample captures and their uploads (capturing.go).
	capture       *capture.Manager
	captureDenied sync.Map // model -> logged that automatic captures are not permitted
	runCtx        context.Context
	// stopRun ends Run early; restart says it was for a runtime switch.
	stopRun context.CancelFunc
	restart bool
	// budget is the telemetry byte budget (nil: none); budgetLevel the last level sent, -1 held.
	budget      *budget.Budget
	budgetLevel int
	// Ready is closed once installed models are loaded and the local API listens.
	Ready chan struct{}
	// ListenAddr is the local API's address once Ready.
	ListenAddr string
}

type (
	pahoClient  = paho.Client
	pahoMessage = paho.Message
)

// persisted is the agent's small durable state, written atomically before it is used, so a
// session number or a telemetry sequence number is never issued twice.
type persisted struct {
	Session uint64 `json:"session"`
}

const stateFile = "agent-state.json"

// New checks the configuration and loads the durable state.
func New(cfg Config) (*Agent, error) {
	if err := wire.CheckDeviceID(cfg.ID); err != nil {
		return nil, err
	}
	if cfg.DataDir == "" {
		return nil, errors.New("no data folder: pass --data DIR")
	}
	if cfg.Prefix == "" {
		cfg.Prefix = wire.DefaultPrefix
	}
	if !wire.ValidPrefix(cfg.Prefix) {
		return nil, fmt.Errorf("invalid topic prefix %q", cfg.Prefix)
	}
	if cfg.TelemetryInterval <= 0 {
		cfg.TelemetryInterval = 60 * time.Second
	}
	if cfg.SpoolMaxBytes <= 0 {
		cfg.SpoolMaxBytes = 16 << 20
	}
	if cfg.SpoolMaxAge <= 0 {
		cfg.SpoolMaxAge = 7 * 24 * time.Hour
	}
	if cfg.DrainRate <= 0 {
		cfg.DrainRate = 20
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	cfg.Broker.ClientID = cfg.ID
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("create data folder: %w", err)
	}
	a := &Agent{cfg: cfg, topics: wire.NewTopics(cfg.Prefix), log: cfg.Logger.With("device", cfg.ID), Ready: make(chan struct{}),
		infTel: newInferenceTelemetry(OutputShift(cfg.Faults))}
	b, err := os.ReadFile(filepath.Join(cfg.DataDir, stateFile))
	switch {
	case err == nil:
		if err := json.Unmarshal(b, &a.state); err != nil {
			return nil, fmt.Errorf("agent state %s is corrupt (%v): move it away to start counting again", filepath.Join(cfg.DataDir, stateFile), err)
		}
	case !errors.Is(err, os.ErrNotExist):
		return nil, fmt.Errorf("read agent state: %w", err)
	}
	return a, nil
}

// saveLocked writes the durable state. Caller holds mu.
func (a *Agent) saveLocked() error {
	b, _ := json.Marshal(a.state)
	return atomicfile.WriteFile(filepath.Join(a.cfg.DataDir, stateFile), b, 0o600)
}

// Run keeps the device connected and reporting until ctx ends, then publishes offline and
// disconnects cleanly.
func (a *Agent) Run(ctx context.Context) error {
	ctx, a.stopRun = context.WithCancel(ctx)
	defer a.stopRun()
	a.host = telemetry.CollectHostFacts(ctx, a.cfg.DataDir)
	if err := a.openSpool(); err != nil {
		return err
	}
	defer a.spool.Close()
	if err := a.openBudget(time.Now()); err != nil {
		return err
	}
	if err := a.initOTA(ctx); err != nil {
		return err
	}
	var wg sync.WaitGroup
	if err := a.startCapture(ctx, &wg); err != nil {
		return err
	}
	if a.cfg.Listen != "" {
		ln, err := net.Listen("tcp", a.cfg.Listen)
		if err != nil {
			return fmt.Errorf("local inference API on %s: %w", a.cfg.Listen, err)
		}
		a.ListenAddr = ln.Addr().String()
		srv := &http.Server{Handler: a.ota.server.Handler(), ReadHeaderTimeout: 10 * time.Second}
		wg.Add(1)
		go func() { defer wg.Done(); srv.Serve(ln) }()
		go func() {
			<-ctx.Done()
			sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			srv.Shutdown(sctx)
		}()
		a.log.Info("local inference API listening", "addr", a.ListenAddr)
	}
	if a.cfg.LocalMQTT != "" {
		svc, err := localmqtt.New(a.ota.server, localmqtt.Config{Broker: a.cfg.LocalMQTT, Topic: a.cfg.LocalMQTTTopic, ClientID: "edgefleet-local-" + a.cfg.ID, Logger: a.log})
		if err != nil {
			return fmt.Errorf("local MQTT inference: %w", err)
		}
		wg.Add(1)
		go func() { defer wg.Done(); svc.Run(ctx) }()
	}
	a.runCtx = ctx
	a.ota.mu.Lock()
	for _, u := range a.ota.updaters {
		wg.Add(1)
		go func() { defer wg.Done(); u.Run(ctx) }()
	}
	a.ota.mu.Unlock()
	wg.Add(1)
	go func() { defer wg.Done(); a.ota.runtime.Run(ctx) }()
	close(a.Ready)
	wg.Add(3)
	go func() { defer wg.Done(); a.telemetryLoop(ctx) }()
	go func() { defer wg.Done(); a.reportLoop(ctx) }()
	go func() { defer wg.Done(); a.drainLoop(ctx) }()
	err := a.sessionLoop(ctx)
	wg.Wait()
	a.mu.Lock()
	restart := a.restart
	a.mu.Unlock()
	if err == nil && restart {
		return ErrRestart
	}
	return err
}

// requestRestart ends Run cleanly (offline status, spool closed) with ErrRestart.
func (a *Agent) requestRestart() {
	a.mu.Lock()
	a.restart = true
	stop := a.stopRun
	a.mu.Unlock()
	if stop != nil {
		stop()
	}
}

// reportLoop publishes reported state when something changed, at most every 200 ms, so a burst
// of lifecycle steps becomes one retained update.
func (a *Agent) reportLoop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-a.ota.reportReq:
		}
		time.Sleep(200 * time.Millisecond)
		select {
		case <-a.ota.reportReq:
		default:
		}
		if err := a.publishReported(ctx); err != nil && ctx.Err() == nil {
			a.log.Debug("reported state not published; it goes out on reconnect", "err", err)
		}
	}
}

func (a *Agent) sessionLoop(ctx context.Context) error {
	backoff := time.Second
	for {
		lost, err := a.connect(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			wait := backoff/2 + rand.N(backoff/2+1)
			a.log.Warn("cannot reach broker; retrying", "broker", a.cfg.Broker.URLs, "in", wait.Round(time.Millisecond), "err", err)
			select {
			case <-time.After(wait):
			case <-ctx.Done():
				return nil
			}
			backoff = min(backoff*2, 30*time.Second)
			continue
		}
		backoff = time.Second
		select {
		case <-ctx.Done():
			a.disconnect()
			return nil
		case err := <-lost:
			a.log.Warn("lost broker connection; reconnecting", "err", err)
		}
	}
}

// connect opens one MQTT connection with a fresh session number in its Last Will. paho fixes the
// Will when the client is created, so each connection gets its own client rather than paho's
// auto-reconnect (which would re-send an old session number).
func (a *Agent) connect(ctx context.Context) (<-chan error, error) {
	a.mu.Lock()
	a.state.Session++
	if err := a.saveLocked(); err != nil {
		a.mu.Unlock()
		return nil, fmt.Errorf("persist session counter: %w", err)
	}
	session := a.state.Session
	a.mu.Unlock()

	o, err := a.cfg.Broker.Options()
	if err != nil {
		return nil, err
	}
	will, _ := json.Marshal(wire.Status{State: wire.StateOffline, Session: session})
	o.SetBinaryWill(a.topics.Status(a.cfg.ID), will, 1, true)
	o.SetCleanSession(false)
	o.SetAutoReconnect(false)
	lost := make(chan error, 1)
	// Handlers first: a message for a subscription without a handler is never acknowledged.
	o.SetDefaultPublishHandler(func(_ paho.Client, m paho.Message) { a.onMessage(m.Topic(), m.Payload()) })
	o.SetConnectionLostHandler(func(_ paho.Client, err error) {
		a.setConnected(nil, false)
		select {
		case lost <- err:
		default:
		}
	})
	c := paho.NewClient(o)
	tok := c.Connect()
	select {
	case <-tok.Done():
	case <-ctx.Done():
		c.Disconnect(0)
		return nil, ctx.Err()
	}
	if err := tok.Error(); err != nil {
		return nil, fmt.Errorf("connect: %w", err)
	}
	// Subscribe on every connection: the broker re-sends retained desired state and trust then.
	subs := map[string]byte{
		a.topics.Desired(a.cfg.ID): 1,
		a.topics.Ack(a.cfg.ID):     1,
		a.topics.Cmd(a.cfg.ID):     1,
		a.topics.Status(a.cfg.ID):  1,
		a.topics.Trust():           1,
		a.topics.Blocks(a.cfg.ID):  0,
	}
	a.ota.mu.Lock()
	for id := range a.ota.carousels {
		subs[a.topics.Carousel(id)] = 0
	}
	a.ota.mu.Unlock()
	st := c.SubscribeMultiple(subs, func(_ paho.Client, m paho.Message) { a.onMessage(m.Topic(), m.Payload()) })
	if err := waitToken(ctx, st); err != nil {
		c.Disconnect(0)
		return nil, fmt.Errorf("subscribe: %w", err)
	}
	// Online first, then anything else: the control plane registers a device (and its group) from
	// its first status, so telemetry must not overtake it.
	if err := a.publishStatus(ctx, c, session); err != nil {
		c.Disconnect(0)
		return nil, err
	}
	a.setConnected(c, true)
	if err := a.publishReported(ctx); err != nil {
		a.log.Warn("publish reported state failed", "err", err)
	}
	a.log.Info("connected", "broker", a.cfg.Broker.URLs, "session", session)
	return lost, nil
}

func (a *Agent) setConnected(c paho.Client, ok bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if ok {
		a.client = c
	}
	a.connected = ok
}

func (a *Agent) publishStatus(ctx context.Context, c paho.Client, session uint64) error {
	b, _ := json.Marshal(wire.Status{State: wire.StateOnline, Session: session, At: time.Now().UTC(), Group: a.cfg.Group, Labels: a.cfg.Labels})
	if err := waitToken(ctx, c.Publish(a.topics.Status(a.cfg.ID), 1, true, b)); err != nil {
		return fmt.Errorf("publish online status: %w", err)
	}
	return nil
}

// disconnect publishes offline for the current session (a clean disconnect does not fire the Will).
func (a *Agent) disconnect() {
	a.mu.Lock()
	c, session, restart := a.client, a.state.Session, a.restart
	a.connected = false
	a.mu.Unlock()
	if c == nil {
		return
	}
	if restart {
		// Switching to a new agent, which connects within a second: saying offline would make a
		// rollout count this device as gone mid-install. A clean disconnect discards the Will
		// too; the new agent's online (next session), or the previous agent's after a revert,
		// follows.
		c.Disconnect(500)
		return
	}
	b, _ := json.Marshal(wire.Status{State: wire.StateOffline, Session: session, At: time.Now().UTC()})
	c.Publish(a.topics.Status(a.cfg.ID), 1, true, b).WaitTimeout(2 * time.Second)
	c.Disconnect(500)
}

func waitToken(ctx context.Context, t paho.Token) error {
	select {
	case <-t.Done():
		return t.Error()
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(30 * time.Second):
		return errors.New("timed out waiting for the broker")
	}
}

// current returns the live client, or nil when disconnected.
func (a *Agent) current() (paho.Client, uint64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if !a.connected {
		return nil, a.state.Session
	}
	return a.client, a.state.Session
}

func (a *Agent) onMessage(topic string, payload []byte) {
	switch topic {
	case a.topics.Status(a.cfg.ID):
		// A late Will of an earlier session can overwrite our retained online status on the broker;
		// put it right so that anyone subscribing later sees the truth.
		var s wire.Status
		if json.Unmarshal(payload, &s) != nil {
			return
		}
		c, session := a.current()
		if c != nil && s.State == wire.StateOffline && s.Session < session {
			a.log.Info("replacing a stale offline status left by an earlier session", "stale_session", s.Session, "session", session)
			go a.publishStatus(context.Background(), c, session)
		}
	case a.topics.Desired(a.cfg.ID):
		a.handleDesired(context.Background(), payload)
	case a.topics.Trust():
		a.handleTrust(context.Background(), payload)
	case a.topics.Ack(a.cfg.ID):
		a.handleAck(payload)
	case a.topics.Blocks(a.cfg.ID):
		a.ota.fetcher.OnFrame(payload)
	case a.topics.Cmd(a.cfg.ID):
		a.handleCmd(payload)
	default:
		if strings.HasSuffix(topic, "/carousel") {
			a.ota.fetcher.OnFrame(payload)
			return
		}
		a.log.Debug("message not handled yet", "topic", topic, "bytes", len(payload))
	}
}

func (a *Agent) publishReported(ctx context.Context) error {
	c, session := a.current()
	if c == nil {
		return errors.New("not connected")
	}
	models, gen, refused := a.modelReports()
	rep := wire.Reported{
		Device: a.cfg.ID, AgentVersion: cli.Version, Session: session, Group: a.cfg.Group, Labels: a.cfg.Labels,
		Host: a.host, Runtime: a.ota.facts, Generation: gen, DesiredError: refused, Models: models, At: time.Now().UTC(),
	}
	if a.spool != nil {
		st := a.spool.Stats()
		rep.Spool = &wire.SpoolReport{NextSeq: st.NextSeq, LastAck: st.LastAck, Pending: st.Pending, PendingSeqs: st.PendingSeqs,
			Bytes: st.Bytes, Merged: st.Merged, Dropped: st.Dropped}
	}
	b, err := json.Marshal(rep)
	if err != nil {
		return err
	}
	if err := waitToken(ctx, c.Publish(a.topics.Reported(a.cfg.ID), 1, true, b)); err != nil {
		return err
	}
	a.ota.runtime.Reported() // an agent on trial is healthy once this went out
	return nil
}

func (a *Agent) telemetryLoop(ctx context.Context) {
	// The first sample goes out as soon as the device is connected, so a new device shows its
	// health at once rather than after a whole interval. Reported state (with the spool's
	// accounting) is refreshed every interval too.
	first := time.NewTicker(200 * time.Millisecond)
	defer first.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-first.C:
		}
		if c, _ := a.current(); c != nil {
			break
		}
	}
	t := time.NewTicker(a.cfg.TelemetryInterval)
	defer t.Stop()
	for {
		h := telemetry.CollectHealth(ctx, a.cfg.DataDir)
		if a.budget != nil {
			if ctx.Err() == nil {
				a.budgetedTelemetry(ctx, h, a.collectInference(a.servedBundles()))
			}
		} else {
			if err := a.SendTelemetry(ctx, telemetry.KindHealth, h); err != nil && ctx.Err() == nil {
				a.log.Warn("health telemetry not sent", "err", err)
			}
			a.flushInference(ctx, a.servedBundles())
		}
		a.requestReport()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
