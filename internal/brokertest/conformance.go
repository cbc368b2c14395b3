package brokertest

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/url"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
)

// Broker is what Conformance needs to reach a broker.
type Broker interface {
	// Name labels the broker (and version) in results.
	Name() string
	// URL is what paho connects to, e.g. mqtt://127.0.0.1:1883.
	URL() string
}

// Restartable brokers can be restarted by the test. Requirements about
// restarts are reported as not applicable for brokers that are not
// Restartable or not Persistent.
type Restartable interface {
	// Restart stops the broker and starts it again at the same URL with the
	// same storage.
	Restart() error
	// Persistent reports whether sessions and retained messages are meant
	// to survive Restart.
	Persistent() bool
}

// ClientConfigurer lets a broker that needs credentials or TLS adjust the
// options of every client the suite connects.
type ClientConfigurer interface {
	ConfigureClient(o *paho.ClientOptions)
}

// Requirement is one thing edgefleet relies on a broker to do.
type Requirement struct {
	ID    string // subtest name
	Title string // what the broker must do
	Why   string // what in edgefleet breaks without it
}

// Requirements is what edgefleet needs of any MQTT 3.1.1 broker, in the
// order Conformance checks them; docs list it next to the results.
var Requirements = []Requirement{
	{"retained-new-subscriber", "A retained QoS 1 message is delivered to a new subscriber.",
		"Agents learn trust and desired state, and the control plane learns status and reported state, from retained messages when they subscribe."},
	{"retained-resubscribe", "A retained message is sent again when a subscription is re-subscribed, on the same connection and after reconnecting to a persistent session.",
		"Agents re-subscribe on every connection; that is how a device that missed an update gets the current desired state and trust document."},
	{"retained-replace", "A newer retained message replaces the older one; a new subscriber gets only the newer.",
		"Desired state and status are overwritten per generation/session; a stale retained document must never come back."},
	{"retained-clear", "An empty retained publish clears the retained message.",
		"Decommissioning a device clears its retained desired, reported and status topics."},
	{"will-abrupt", "The Last Will (QoS 1, retained) is published when a client's connection drops without DISCONNECT, and stays retained.",
		"A device that loses power or network is shown offline; late subscribers see it offline too."},
	{"will-clean", "The Last Will is not published after a clean DISCONNECT.",
		"An agent that shuts down cleanly publishes its own offline status; a spurious Will would race with the next session's online status."},
	{"offline-queue", "QoS 1 messages published while a persistent-session (CleanSession=false) subscriber is offline are all delivered when it reconnects with the same client id.",
		"Telemetry acks and operator commands reach devices that were briefly offline without the control plane re-sending them."},
	{"offline-queue-order", "Those queued QoS 1 messages arrive in the order they were published [MQTT-4.6.0-1].",
		"Only a convenience: edgefleet does not rely on it (acks carry the highest contiguous sequence, commands carry ids), but a broker that reorders makes logs and tests harder to read."},
	{"qos1-redelivery", "A QoS 1 message the client had not acknowledged when its connection dropped is delivered again after it reconnects.",
		"A command or ack in flight during a network cut is not lost."},
	{"wildcards", "`+` and `#` subscriptions match edgefleet's topic shapes exactly (no more, no less).",
		"The control plane reads {p}/devices/+/status and splits telemetry ingest by {p}/shards/{k}/devices/+/telemetry/#."},
	{"large-message", "A 65 KiB payload (64 KiB block + 1 KiB headroom) passes at QoS 0 and QoS 1.",
		"Bundles and captured samples travel in 64 KiB blocks (bundle blocks at QoS 0, upload blocks at QoS 1)."},
	{"long-client-id", "A 64-character client id of [a-z0-9._-] is accepted.",
		"The device id is the client id and may be 64 characters; MQTT 3.1.1 only guarantees 23."},
	{"restart-persistence", "Persistent sessions, their queued QoS 1 messages and retained messages survive a broker restart.",
		"Upgrading or restarting the broker must not drop the fleet's desired state, trust document or queued commands."},
}

// Outcome of one requirement on one broker.
type Outcome string

const (
	Pass          Outcome = "pass"
	Fail          Outcome = "FAIL"
	NotApplicable Outcome = "n/a"
	// KnownFail is a failure listed in Conformance's known gaps: it is
	// reported, and does not fail the test.
	KnownFail Outcome = "fail (known)"
)

// KnownGap names a requirement a broker is known not to meet, and why.
// Conformance still runs it and reports the failure, without failing the
// test, so the table stays truthful and CI stays green.
type KnownGap struct {
	Requirement string
	Reason      string
}

// Result is the outcome of one requirement on one broker.
type Result struct {
	Broker      string
	Requirement Requirement
	Outcome     Outcome
	Note        string // skip reason, or a detail worth quoting
}

// Timeouts: everything runs on loopback, where a round trip is well under a
// millisecond; waitTimeout only bounds a wait for what must come, so it is
// sized for a loaded 2-core CI machine and a clustered broker that has just
// restarted (JetStream catching its streams up), not for speed.
const (
	waitTimeout = 10 * time.Second
	// quietWindow is how long "nothing more arrives" is watched for; it is
	// only used where no sentinel message can bound the wait.
	quietWindow = 150 * time.Millisecond
)

// Conformance runs every check in Requirements against b as subtests and
// returns the results; it also logs them as a table. Subtests run one after
// another because restart-persistence restarts the broker under everyone.
// A requirement listed in known is reported as KnownFail when it fails (and
// noted when it unexpectedly passes) instead of failing the test.
func Conformance(t *testing.T, b Broker, known ...KnownGap) []Result {
	s := &suite{b: b, nonce: nonce()}
	s.prefix = "ct" + s.nonce
	t.Cleanup(func() { s.clearRetained(t) })
	gaps := map[string]string{}
	for _, k := range known {
		gaps[k.Requirement] = k.Reason
	}
	checks := map[string]func(*check){
		"retained-new-subscriber": checkRetainedNewSubscriber,
		"retained-resubscribe":    checkRetainedResubscribe,
		"retained-replace":        checkRetainedReplace,
		"retained-clear":          checkRetainedClear,
		"will-abrupt":             checkWillAbrupt,
		"will-clean":              checkWillClean,
		"offline-queue":           checkOfflineQueue,
		"offline-queue-order":     checkOfflineQueueOrder,
		"qos1-redelivery":         checkRedelivery,
		"wildcards":               checkWildcards,
		"large-message":           checkLargeMessage,
		"long-client-id":          checkLongClientID,
		"restart-persistence":     checkRestartPersistence,
	}
	var results []Result
	for _, req := range Requirements {
		r := Result{Broker: b.Name(), Requirement: req, Outcome: Pass}
		t.Run(req.ID, func(t *testing.T) {
			p := &probe{t: t}
			c := &check{suite: s, prefix: s.prefix, t: p}
			p.run(func() { checks[req.ID](c) })
			notes := c.notes
			reason, isGap := gaps[req.ID]
			switch {
			case p.skipped:
				r.Outcome = NotApplicable
				t.Skip(strings.Join(notes, "; "))
			case len(p.failures) > 0 && isGap:
				r.Outcome = KnownFail
				notes = append([]string{"known gap: " + reason, "observed: " + strings.Join(p.failures, "; ")}, notes...)
				t.Logf("known gap, not failing the test: %s\n%s", reason, strings.Join(p.failures, "\n"))
			case len(p.failures) > 0:
				r.Outcome = Fail
				for _, f := range p.failures {
					t.Error(f)
				}
			case isGap:
				notes = append(notes, "listed as a known gap ("+reason+") but passed this run")
				t.Logf("listed as a known gap but passed: %s", reason)
			}
			r.Note = strings.Join(notes, "; ")
		})
		results = append(results, r)
	}
	t.Logf("conformance of %s (%s):\n%s", b.Name(), b.URL(), FormatResults(results))
	return results
}

// probe stands in for the subtest's *testing.T while a check runs in its
// own goroutine, so a failure can be recorded (and, for a known gap, not
// reported as a test failure) rather than failing the test outright.
type probe struct {
	t        *testing.T
	failures []string
	skipped  bool
}

// run runs fn on a goroutine that Fatalf and Skip end with runtime.Goexit,
// like the testing package ends a test's goroutine.
func (p *probe) run(fn func()) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		fn()
	}()
	<-done
}

func (p *probe) Helper()                         {}
func (p *probe) Name() string                    { return p.t.Name() }
func (p *probe) Cleanup(f func())                { p.t.Cleanup(f) }
func (p *probe) Logf(format string, args ...any) { p.t.Logf(format, args...) }

func (p *probe) Errorf(format string, args ...any) {
	p.failures = append(p.failures, fmt.Sprintf(format, args...))
}

func (p *probe) Fatalf(format string, args ...any) {
	p.Errorf(format, args...)
	runtime.Goexit()
}

func (p *probe) Skip(args ...any) {
	p.skipped = true
	runtime.Goexit()
}

// FormatResults renders results as a Markdown table: one row per
// requirement, one column per broker, notes below.
func FormatResults(results []Result) string {
	var brokers []string
	cell := map[[2]string]Result{}
	for _, r := range results {
		if !slices.Contains(brokers, r.Broker) {
			brokers = append(brokers, r.Broker)
		}
		cell[[2]string{r.Requirement.ID, r.Broker}] = r
	}
	var b strings.Builder
	b.WriteString("| requirement | " + strings.Join(brokers, " | ") + " |\n")
	b.WriteString("| --- |" + strings.Repeat(" --- |", len(brokers)) + "\n")
	var notes []string
	for _, req := range Requirements {
		b.WriteString("| " + req.ID)
		for _, br := range brokers {
			r, ok := cell[[2]string{req.ID, br}]
			switch {
			case !ok:
				b.WriteString(" | -")
			case r.Note != "":
				notes = append(notes, fmt.Sprintf("[%d] %s, %s: %s", len(notes)+1, br, req.ID, r.Note))
				fmt.Fprintf(&b, " | %s [%d]", r.Outcome, len(notes))
			default:
				b.WriteString(" | " + string(r.Outcome))
			}
		}
		b.WriteString(" |\n")
	}
	for _, n := range notes {
		b.WriteString("\n" + n)
	}
	return b.String()
}

// suite is the state shared by one Conformance run's checks.
type suite struct {
	b      Broker
	nonce  string // keeps ids and topics of this run apart from any other
	prefix string // stands in for "edgefleet" in topics

	mu       sync.Mutex
	retained []string // topics to clear at the end, for shared brokers
}

// check is one requirement's subtest.
type check struct {
	*suite
	prefix string // the suite's prefix, or a check's own
	t      *probe
	notes  []string
}

func (c *check) note(format string, args ...any) {
	c.notes = append(c.notes, fmt.Sprintf(format, args...))
}

func (c *check) notApplicable(reason string) {
	c.note("%s", reason)
	c.t.Skip(reason)
}

// id makes a client/device id unique to this run, in the device id alphabet.
func (c *check) id(name string) string { return c.nonce + "-" + name }

func (c *check) topic(format string, args ...any) string {
	return c.prefix + "/" + fmt.Sprintf(format, args...)
}

// clientOpts are the per-client knobs the checks need.
type clientOpts struct {
	persistent  bool   // CleanSession=false
	noAck       bool   // AutoAckDisabled: messages stay unacknowledged
	willTopic   string // retained QoS 1 Will with willPayload
	willPayload string
}

// client is a connected paho client whose messages, from any subscription
// or from a resumed session, arrive on msgs, and whose TCP connection can be
// cut without sending DISCONNECT.
type client struct {
	paho.Client
	t              *probe
	id             string
	msgs           chan paho.Message
	sessionPresent bool

	mu   sync.Mutex
	conn net.Conn
}

// connect connects a client and registers its disconnect with t.Cleanup.
// The handler is the default publish handler and is set before Connect, so
// messages of a resumed session, which arrive before any Subscribe, are
// neither lost nor left unacknowledged (paho.mqtt.golang#637).
func (c *check) connect(id string, co clientOpts) *client {
	c.t.Helper()
	cl := &client{t: c.t, id: id, msgs: make(chan paho.Message, 256)}
	o := paho.NewClientOptions().
		AddBroker(c.b.URL()).
		SetClientID(id).
		SetCleanSession(!co.persistent).
		SetAutoReconnect(false).
		SetConnectRetry(false).
		SetResumeSubs(false).
		SetKeepAlive(10 * time.Second).
		SetPingTimeout(2 * time.Second).
		SetConnectTimeout(3 * time.Second).
		SetWriteTimeout(3 * time.Second).
		SetAutoAckDisabled(co.noAck).
		SetDefaultPublishHandler(func(_ paho.Client, m paho.Message) { cl.msgs <- m }).
		SetCustomOpenConnectionFn(func(u *url.URL, o paho.ClientOptions) (net.Conn, error) {
			conn, err := net.DialTimeout("tcp", u.Host, o.ConnectTimeout)
			if err == nil {
				cl.mu.Lock()
				cl.conn = conn
				cl.mu.Unlock()
			}
			return conn, err
		})
	if co.willTopic != "" {
		o.SetWill(co.willTopic, co.willPayload, 1, true)
	}
	if cc, ok := c.b.(ClientConfigurer); ok {
		cc.ConfigureClient(o)
	}
	cl.Client = paho.NewClient(o)
	tok := cl.Connect()
	if !tok.WaitTimeout(waitTimeout) {
		c.t.Fatalf("%s: connect to %s timed out", id, c.b.URL())
	}
	if err := tok.Error(); err != nil {
		c.t.Fatalf("%s: connect to %s: %v", id, c.b.URL(), err)
	}
	cl.sessionPresent = tok.(*paho.ConnectToken).SessionPresent()
	c.t.Cleanup(func() { cl.Disconnect(50) })
	return cl
}

// cut closes the TCP connection under paho, as a power or network loss
// would: the broker sees the socket close without a DISCONNECT packet.
func (cl *client) cut() {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	if cl.conn != nil {
		_ = cl.conn.Close()
	}
}

func (cl *client) subscribe(filter string, qos byte) {
	cl.t.Helper()
	waitToken(cl.t, cl.id+": subscribe "+filter, cl.Subscribe(filter, qos, nil))
}

func (cl *client) publish(topic string, qos byte, retained bool, payload any) {
	cl.t.Helper()
	waitToken(cl.t, cl.id+": publish "+topic, cl.Publish(topic, qos, retained, payload))
}

// next waits for the next message.
func (cl *client) next(what string) paho.Message {
	cl.t.Helper()
	select {
	case m := <-cl.msgs:
		return m
	case <-time.After(waitTimeout):
		cl.t.Fatalf("%s: no message within %v: expected %s", cl.id, waitTimeout, what)
		return nil
	}
}

// expect waits for the next message and checks its topic and payload.
func (cl *client) expect(topic, payload string) paho.Message {
	cl.t.Helper()
	m := cl.next(fmt.Sprintf("%q on %s", payload, topic))
	if m.Topic() != topic || string(m.Payload()) != payload {
		cl.t.Fatalf("%s: got %q on %s, want %q on %s", cl.id, m.Payload(), m.Topic(), payload, topic)
	}
	return m
}

// quiet fails if any message arrives within d.
func (cl *client) quiet(d time.Duration, why string) {
	cl.t.Helper()
	select {
	case m := <-cl.msgs:
		cl.t.Fatalf("%s: unexpected %q on %s (retained=%v): %s", cl.id, m.Payload(), m.Topic(), m.Retained(), why)
	case <-time.After(d):
	}
}

func waitToken(t *probe, what string, tok paho.Token) {
	t.Helper()
	if !tok.WaitTimeout(waitTimeout) {
		t.Fatalf("%s: timed out after %v", what, waitTimeout)
	}
	if err := tok.Error(); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// retain publishes a retained QoS 1 message and remembers the topic so the
// run clears it at the end.
func (c *check) retain(pub *client, topic, payload string) {
	c.t.Helper()
	c.mu.Lock()
	if !slices.Contains(c.retained, topic) {
		c.retained = append(c.retained, topic)
	}
	c.mu.Unlock()
	pub.publish(topic, 1, true, payload)
}

// clearRetained removes this run's retained messages, so running the suite
// against a shared broker leaves nothing behind. A broker that is already
// down is not an error here.
func (s *suite) clearRetained(t *testing.T) {
	s.mu.Lock()
	topics := s.retained
	s.mu.Unlock()
	if len(topics) == 0 {
		return
	}
	o := paho.NewClientOptions().AddBroker(s.b.URL()).SetClientID(s.nonce + "-cleanup").
		SetAutoReconnect(false).SetConnectTimeout(2 * time.Second)
	if cc, ok := s.b.(ClientConfigurer); ok {
		cc.ConfigureClient(o)
	}
	cl := paho.NewClient(o)
	if tok := cl.Connect(); !tok.WaitTimeout(3*time.Second) || tok.Error() != nil {
		t.Logf("brokertest: could not clear retained test messages: %v", tok.Error())
		return
	}
	defer cl.Disconnect(50)
	for _, topic := range topics {
		cl.Publish(topic, 1, true, []byte{}).WaitTimeout(time.Second)
	}
}

func nonce() string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func checkRetainedNewSubscriber(c *check) {
	topic := c.topic("devices/%s/desired", c.id("rn-dev"))
	pub := c.connect(c.id("rn-pub"), clientOpts{})
	c.retain(pub, topic, "desired-v1")
	c.fannedOut(pub)
	sub := c.connect(c.id("rn-sub"), clientOpts{})
	sub.subscribe(topic, 1)
	if m := sub.expect(topic, "desired-v1"); !m.Retained() {
		c.t.Fatalf("message on subscribe not flagged retained")
	}
}

func checkRetainedResubscribe(c *check) {
	topic := c.topic("devices/%s/desired", c.id("rr-dev"))
	pub := c.connect(c.id("rr-pub"), clientOpts{})
	c.retain(pub, topic, "desired-v1")
	c.fannedOut(pub)

	subID := c.id("rr-dev")
	sub := c.connect(subID, clientOpts{persistent: true})
	c.t.Cleanup(func() { c.forgetSession(subID) })
	sub.subscribe(topic, 1)
	sub.expect(topic, "desired-v1")
	// Same connection, same filter again [MQTT-3.8.4-3].
	sub.subscribe(topic, 1)
	sub.expect(topic, "desired-v1")

	// The agent's path: reconnect to the persistent session, re-subscribe.
	sub.Disconnect(50)
	sub2 := c.connect(subID, clientOpts{persistent: true})
	if !sub2.sessionPresent {
		c.note("session not present on reconnect")
	}
	sub2.subscribe(topic, 1)
	if m := sub2.expect(topic, "desired-v1"); !m.Retained() {
		c.t.Fatalf("re-sent message not flagged retained")
	}
}

func checkRetainedReplace(c *check) {
	topic := c.topic("devices/%s/desired", c.id("rp-dev"))
	pub := c.connect(c.id("rp-pub"), clientOpts{})
	c.retain(pub, topic, "generation-1")
	c.retain(pub, topic, "generation-2")
	c.fannedOut(pub)
	sub := c.connect(c.id("rp-sub"), clientOpts{})
	sub.subscribe(topic, 1)
	sub.expect(topic, "generation-2")
	sub.quiet(quietWindow, "a topic holds one retained message")
}

func checkRetainedClear(c *check) {
	dev := c.id("rc-dev")
	cleared := c.topic("devices/%s/desired", dev)
	sentinel := c.topic("devices/%s/reported", dev)
	pub := c.connect(c.id("rc-pub"), clientOpts{})
	c.retain(pub, cleared, "desired-v1")
	c.retain(pub, sentinel, "sentinel")
	pub.publish(cleared, 1, true, []byte{})
	c.fannedOut(pub)

	// Both topics match one filter, so the broker sends all retained
	// matches for it at subscribe time: once the sentinel is here, a
	// retained desired message would have been too.
	sub := c.connect(c.id("rc-sub"), clientOpts{})
	sub.subscribe(c.topic("devices/%s/+", dev), 1)
	m := sub.next("the retained sentinel")
	if m.Topic() != sentinel {
		c.t.Fatalf("got %q on %s: cleared retained message still delivered", m.Payload(), m.Topic())
	}
	sub.quiet(quietWindow, "the retained message was cleared")
}

// willSetup connects a device whose Will says offline and which announces
// itself online (retained), then an observer of its status topic that has
// seen the retained online message. The device publishes before the
// observer subscribes, with fannedOut in between: otherwise the observer
// may get "online" twice, live and retained, when the broker sends
// retained messages after SUBACK while the live copy is still in flight.
func willSetup(c *check, name string) (obs, dev *client, status string) {
	devID := c.id(name)
	status = c.topic("devices/%s/status", devID)
	dev = c.connect(devID, clientOpts{willTopic: status, willPayload: "offline"})
	c.retain(dev, status, "online")
	c.fannedOut(dev)
	obs = c.connect(c.id(name+"-obs"), clientOpts{})
	obs.subscribe(status, 1)
	obs.expect(status, "online")
	return obs, dev, status
}

func checkWillAbrupt(c *check) {
	obs, dev, status := willSetup(c, "wa")
	start := time.Now()
	dev.cut()
	obs.expect(status, "offline")
	c.note("Will delivered %s after the TCP close", roundMS(time.Since(start)))
	late := c.connect(c.id("wa-late"), clientOpts{})
	late.subscribe(status, 1)
	if m := late.expect(status, "offline"); !m.Retained() {
		c.t.Fatalf("Will not kept as retained")
	}
}

func checkWillClean(c *check) {
	obs, dev, status := willSetup(c, "wc")
	dev.Disconnect(100)
	// No message marks "the broker decided not to send the Will", so watch
	// for longer than the abrupt case needs, then also check what a new
	// subscriber sees.
	obs.quiet(4*quietWindow, "the client disconnected cleanly")
	late := c.connect(c.id("wc-late"), clientOpts{})
	late.subscribe(status, 1)
	late.expect(status, "online")
}

// forgetSession removes a persistent session the suite created, so a
// shared broker does not keep queueing for it.
func (c *check) forgetSession(id string) {
	o := paho.NewClientOptions().AddBroker(c.b.URL()).SetClientID(id).SetCleanSession(true).
		SetAutoReconnect(false).SetConnectTimeout(2 * time.Second)
	if cc, ok := c.b.(ClientConfigurer); ok {
		cc.ConfigureClient(o)
	}
	cl := paho.NewClient(o)
	if tok := cl.Connect(); tok.WaitTimeout(3*time.Second) && tok.Error() == nil {
		cl.Disconnect(50)
	}
}

// queueWhileOffline subscribes a persistent session, disconnects it,
// publishes n QoS 1 messages ("0".."n-1") and reconnects; it returns the
// reconnected client.
func queueWhileOffline(c *check, name string, n int) (*client, string) {
	devID := c.id(name)
	topic := c.topic("devices/%s/ack", devID)
	sub := c.connect(devID, clientOpts{persistent: true})
	c.t.Cleanup(func() { c.forgetSession(devID) })
	sub.subscribe(topic, 1)
	sub.Disconnect(50)

	pub := c.connect(c.id(name+"-pub"), clientOpts{})
	for i := range n {
		pub.publish(topic, 1, false, strconv.Itoa(i))
	}
	c.fannedOut(pub)
	back := c.connect(devID, clientOpts{persistent: true})
	if !back.sessionPresent {
		c.t.Errorf("CONNACK session present = false for a persistent session")
	}
	return back, topic
}

// receiveAll collects n messages on topic and reports them in arrival order.
func receiveAll(c *check, cl *client, topic string, n int) []int {
	c.t.Helper()
	var got []int
	for range n {
		m := cl.next(fmt.Sprintf("message %d of %d on %s", len(got)+1, n, topic))
		i, err := strconv.Atoi(string(m.Payload()))
		if m.Topic() != topic || err != nil {
			c.t.Fatalf("got %q on %s", m.Payload(), m.Topic())
		}
		got = append(got, i)
	}
	sorted := slices.Sorted(slices.Values(got))
	for i, v := range sorted {
		if v != i {
			c.t.Fatalf("received %v, want each of 0..%d once", got, n-1)
		}
	}
	return got
}

// fannedOut returns once the broker has routed everything pub published so
// far. A PUBACK does not mean that: mochi acknowledges a QoS 1 publish
// before it hands the message to subscribers, so a subscriber that
// (re)subscribes right after the PUBACK can miss the message or get it
// twice, once retained and once live (a race worth knowing, but not what
// these checks measure). Brokers route one connection's
// publishes in order, so a marker that has reached an observer proves the
// earlier ones were routed too.
func (c *check) fannedOut(pub *client) {
	c.t.Helper()
	marker := c.topic("barrier/%s", c.id(pub.id))
	obs := c.connect(c.id(pub.id+"-barrier"), clientOpts{})
	obs.subscribe(marker, 1)
	pub.publish(marker, 1, false, "marker")
	obs.expect(marker, "marker")
	obs.Disconnect(20)
}

func checkOfflineQueue(c *check) {
	const n = 20
	back, topic := queueWhileOffline(c, "oq-dev", n)
	got := receiveAll(c, back, topic, n)
	if !slices.IsSorted(got) {
		c.note("all delivered, out of order (see offline-queue-order)")
	}
}

func checkOfflineQueueOrder(c *check) {
	const n = 20
	back, topic := queueWhileOffline(c, "oo-dev", n)
	if got := receiveAll(c, back, topic, n); !slices.IsSorted(got) {
		c.t.Fatalf("queued messages delivered in order %v [MQTT-4.6.0-1]", got)
	}
}

func checkRedelivery(c *check) {
	devID := c.id("rd-dev")
	topic := c.topic("devices/%s/cmd", devID)
	sub := c.connect(devID, clientOpts{persistent: true, noAck: true})
	c.t.Cleanup(func() { c.forgetSession(devID) })
	sub.subscribe(topic, 1)

	pub := c.connect(c.id("rd-pub"), clientOpts{})
	pub.publish(topic, 1, false, "restart-runtime")
	sub.expect(topic, "restart-runtime") // received, never acknowledged
	sub.cut()

	back := c.connect(devID, clientOpts{persistent: true})
	m := back.expect(topic, "restart-runtime")
	if m.Duplicate() {
		c.note("redelivered with DUP=1")
	} else {
		c.note("redelivered without DUP flag")
	}
}

func checkWildcards(c *check) {
	// A prefix of its own: retained status messages of the other checks
	// would otherwise match devices/+/status at subscribe time.
	c.prefix += "w"
	d1, d2 := c.id("wc-d1"), c.id("wc-d2")
	filters := map[string]string{
		"status":    c.topic("devices/+/status"),
		"telemetry": c.topic("shards/+/devices/+/telemetry/#"),
		"shard7":    c.topic("shards/7/#"),
		"device1":   c.topic("devices/%s/#", d1),
	}
	topics := []struct {
		topic   string
		matches []string
	}{
		{c.topic("devices/%s/status", d1), []string{"status", "device1"}},
		{c.topic("devices/%s/status", d2), []string{"status"}},
		{c.topic("devices/%s/reported", d1), []string{"device1"}},
		{c.topic("devices/%s/blocks/req", d1), []string{"device1"}},
		{c.topic("devices/%s/status/extra", d2), nil},
		{c.topic("shards/7/devices/%s/telemetry/health", d1), []string{"telemetry", "shard7"}},
		{c.topic("shards/63/devices/%s/telemetry/drift", d2), []string{"telemetry"}},
		{c.topic("shards/7/devices/%s/upload/s1", d1), []string{"shard7"}},
		{c.topic("shards/70/devices/%s/telemetry/health", d2), []string{"telemetry"}},
	}
	subs := map[string]*client{}
	want := map[string][]string{}
	for name, f := range filters {
		subs[name] = c.connect(c.id("wc-"+name), clientOpts{})
		subs[name].subscribe(f, 1)
	}
	pub := c.connect(c.id("wc-pub"), clientOpts{})
	for _, tp := range topics {
		pub.publish(tp.topic, 1, false, tp.topic)
		for _, name := range tp.matches {
			want[name] = append(want[name], tp.topic)
		}
	}
	for name, sub := range subs {
		var got []string
		for range want[name] {
			got = append(got, sub.next("a match for "+filters[name]).Topic())
		}
		slices.Sort(got)
		slices.Sort(want[name])
		if !slices.Equal(got, want[name]) {
			c.t.Errorf("%s matched %v, want %v", filters[name], got, want[name])
		}
	}
	// Everything was published before the checks above finished; a topic
	// that should not match would have arrived by now.
	time.Sleep(quietWindow)
	for name, sub := range subs {
		select {
		case m := <-sub.msgs:
			c.t.Errorf("%s also matched %s", filters[name], m.Topic())
		default:
		}
	}
}

func checkLargeMessage(c *check) {
	const size = 64*1024 + 1024
	devID := c.id("lm-dev")
	sub := c.connect(devID, clientOpts{})
	sub.subscribe(c.topic("devices/%s/#", devID), 1)
	pub := c.connect(c.id("lm-pub"), clientOpts{})
	for _, qos := range []byte{0, 1} {
		payload := make([]byte, size)
		_, _ = rand.Read(payload)
		topic := c.topic("devices/%s/blocks/%d", devID, qos)
		pub.publish(topic, qos, false, payload)
		m := sub.next(fmt.Sprintf("a %d-byte QoS %d message", size, qos))
		if m.Topic() != topic || !bytes.Equal(m.Payload(), payload) {
			c.t.Fatalf("QoS %d: got %d bytes on %s, want %d on %s", qos, len(m.Payload()), m.Topic(), size, topic)
		}
	}
}

func checkLongClientID(c *check) {
	// 64 characters using every character class the device id allows.
	id := c.nonce + "-dev.ice_"
	id += strings.Repeat("x", 64-len(id)-1) + "9"
	topic := c.topic("devices/%s/status", id)
	cl := c.connect(id, clientOpts{})
	cl.subscribe(topic, 1)
	cl.publish(topic, 1, false, "online")
	cl.expect(topic, "online")
}

func checkRestartPersistence(c *check) {
	r, ok := c.b.(Restartable)
	if !ok {
		c.notApplicable("the test cannot restart this broker")
	}
	if !r.Persistent() {
		c.notApplicable("broker runs without persistence (mochi stores nothing on disk without a storage hook)")
	}
	trust := c.topic("trust")
	devID := c.id("rp-dev")
	cmd := c.topic("devices/%s/cmd", devID)

	pub := c.connect(c.id("rp-pub"), clientOpts{})
	c.retain(pub, trust, "trust-v1")
	sub := c.connect(devID, clientOpts{persistent: true})
	c.t.Cleanup(func() { c.forgetSession(devID) })
	sub.subscribe(cmd, 1)
	sub.Disconnect(50)
	const n = 5
	for i := range n {
		pub.publish(cmd, 1, false, strconv.Itoa(i))
	}
	c.fannedOut(pub)
	pub.Disconnect(50)

	start := time.Now()
	if err := r.Restart(); err != nil {
		c.t.Fatalf("restart: %v", err)
	}
	c.note("restart took %s", roundMS(time.Since(start)))

	back := c.connect(devID, clientOpts{persistent: true})
	if !back.sessionPresent {
		c.t.Errorf("session not present after restart")
	}
	if got := receiveAll(c, back, cmd, n); !slices.IsSorted(got) {
		c.note("queued messages arrived out of order after restart: %v", got)
	}
	late := c.connect(c.id("rp-late"), clientOpts{})
	late.subscribe(trust, 1)
	late.expect(trust, "trust-v1")
}

// roundMS formats a loopback-scale duration for the results table.
func roundMS(d time.Duration) string {
	if d < time.Millisecond {
		return "<1ms"
	}
	return d.Round(time.Millisecond).String()
}
