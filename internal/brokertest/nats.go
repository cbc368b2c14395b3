package brokertest

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// NATSInstall is the command that provides the NATS server (with its MQTT gateway) on Debian.
const NATSInstall = "apt-get install -y nats-server"

// FindNATS returns the nats-server binary's path, or "".
func FindNATS() string {
	if p, err := exec.LookPath("nats-server"); err == nil {
		return p
	}
	for _, p := range []string{"/usr/sbin/nats-server", "/usr/bin/nats-server", "/usr/local/bin/nats-server"} {
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() {
			return p
		}
	}
	return ""
}

// RequireNATS returns the binary's path; without it the test fails in CI and skips loudly
// elsewhere.
func RequireNATS(t testing.TB) string {
	t.Helper()
	if p := FindNATS(); p != "" {
		return p
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("nats-server is required in CI: %s", NATSInstall)
	}
	t.Skipf("SKIPPING: nats-server not found; the NATS cluster tests did NOT run. Install it with: %s", NATSInstall)
	return ""
}

// NATSCluster is a cluster of nats-server processes on loopback, each with JetStream (which its
// MQTT gateway stores sessions, retained and QoS 1 messages in, replicated across the cluster) and
// an MQTT listener.
type NATSCluster struct {
	t     testing.TB
	bin   string
	Nodes []*NATSNode
}

// NATSNode is one server of the cluster.
type NATSNode struct {
	Name                              string
	dir, conf, logPath                string
	clientPort, clusterPort, mqttPort int
	httpPort                          int

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{}
}

// StartNATSCluster starts n servers forming one cluster and waits until every MQTT listener
// accepts connections and JetStream has a leader (the MQTT gateway needs it). Stopped by
// t.Cleanup; on failure their logs go to the test log.
func StartNATSCluster(t testing.TB, n int) *NATSCluster {
	t.Helper()
	c := &NATSCluster{t: t, bin: RequireNATS(t)}
	base := t.TempDir()
	for i := range n {
		nd := &NATSNode{Name: fmt.Sprintf("n%d", i+1), dir: filepath.Join(base, fmt.Sprintf("n%d", i+1))}
		var err error
		for _, p := range []*int{&nd.clientPort, &nd.clusterPort, &nd.mqttPort, &nd.httpPort} {
			if *p, err = freePort(); err != nil {
				t.Fatal(err)
			}
		}
		c.Nodes = append(c.Nodes, nd)
	}
	for _, nd := range c.Nodes {
		var routes []string
		for _, o := range c.Nodes {
			if o != nd {
				routes = append(routes, fmt.Sprintf("nats-route://127.0.0.1:%d", o.clusterPort))
			}
		}
		if err := os.MkdirAll(nd.dir, 0o700); err != nil {
			t.Fatal(err)
		}
		nd.conf, nd.logPath = filepath.Join(nd.dir, "nats.conf"), filepath.Join(nd.dir, "nats.log")
		conf := fmt.Sprintf(`server_name: %s
listen: 127.0.0.1:%d
http: 127.0.0.1:%d
jetstream { store_dir: %q }
cluster {
  name: edgefleet-test
  listen: 127.0.0.1:%d
  routes: [%s]
}
mqtt {
  listen: 127.0.0.1:%d
  # Redeliver a QoS 1 message the client did not acknowledge after 2 s instead of 30 s: NATS
  # redelivers on this timer, not when the client reconnects (packaging/nats/nats.conf).
  ack_wait: "2s"
  # Replicate the streams that hold sessions, retained and queued messages on every node: the
  # default follows the peers known when the first client connects, which can be 2 of 3, and then
  # losing one of those two leaves no quorum.
  stream_replicas: %d
}
`, nd.Name, nd.clientPort, nd.httpPort, filepath.Join(nd.dir, "js"), nd.clusterPort, strings.Join(routes, ", "), nd.mqttPort, min(n, 3))
		if err := os.WriteFile(nd.conf, []byte(conf), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for _, nd := range c.Nodes {
		if err := c.start(nd); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		for _, nd := range c.Nodes {
			c.Stop(nd)
			if t.Failed() {
				b, _ := os.ReadFile(nd.logPath)
				t.Logf("nats %s log (route retries to stopped nodes left out):\n%s", nd.Name, tail(withoutRouteRetries(string(b)), 8000))
			}
		}
	})
	for _, nd := range c.Nodes {
		if err := c.waitMQTT(nd, 60*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	return c
}

// withoutRouteRetries drops the once-a-second "Error trying to connect to route" lines a node
// logs while a peer is down: they push everything that explains a failure out of the tail.
func withoutRouteRetries(s string) string {
	var b strings.Builder
	for _, l := range strings.SplitAfter(s, "\n") {
		if !strings.Contains(l, "Error trying to connect to route") {
			b.WriteString(l)
		}
	}
	return b.String()
}

func tail(s string, n int) string {
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}

func (c *NATSCluster) start(nd *NATSNode) error {
	logf, err := os.OpenFile(nd.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	cmd := exec.Command(c.bin, "-c", nd.conf)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = childProcAttr()
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("start nats-server %s: %w", nd.Name, err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); logf.Close(); close(exited) }()
	nd.mu.Lock()
	nd.cmd, nd.exited = cmd, exited
	nd.mu.Unlock()
	return nil
}

// waitMQTT waits until the node reports itself healthy (its /healthz checks that JetStream's
// streams and consumers are current, which the MQTT gateway's sessions and queues live in) and its
// MQTT gateway answers a CONNECT with CONNACK accepted.
func (c *NATSCluster) waitMQTT(nd *NATSNode, d time.Duration) error {
	deadline := time.Now().Add(d)
	hc := &http.Client{Timeout: 2 * time.Second}
	for time.Now().Before(deadline) {
		if resp, err := hc.Get(fmt.Sprintf("http://127.0.0.1:%d/healthz", nd.httpPort)); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK && mqttAccepts(nd.MQTTAddr()) {
				return nil
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	b, _ := os.ReadFile(nd.logPath)
	return fmt.Errorf("nats %s: MQTT not accepting after %s; log:\n%s", nd.Name, d, tail(string(b), 4000))
}

// mqttAccepts sends a minimal MQTT 3.1.1 CONNECT (clean session) and reports whether CONNACK
// returned 0.
func mqttAccepts(addr string) bool {
	conn, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return false
	}
	defer conn.Close()
	id := "probe" + strconv.FormatInt(time.Now().UnixNano()%1e9, 10)
	vh := []byte{0, 4, 'M', 'Q', 'T', 'T', 4, 2, 0, 30}
	payload := append([]byte{0, byte(len(id))}, id...)
	body := append(vh, payload...)
	pkt := append([]byte{0x10, byte(len(body))}, body...)
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := conn.Write(pkt); err != nil {
		return false
	}
	ack := make([]byte, 4)
	if _, err := readFull(conn, ack); err != nil {
		return false
	}
	conn.Write([]byte{0xe0, 0}) // DISCONNECT
	return ack[0] == 0x20 && ack[3] == 0
}

func readFull(c net.Conn, b []byte) (int, error) {
	n := 0
	for n < len(b) {
		m, err := c.Read(b[n:])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// MQTTAddr is the node's MQTT listener.
func (nd *NATSNode) MQTTAddr() string { return "127.0.0.1:" + strconv.Itoa(nd.mqttPort) }

// URL is the node's MQTT URL.
func (nd *NATSNode) URL() string { return "mqtt://" + nd.MQTTAddr() }

// Kill stops a node abruptly (SIGKILL), as a crash.
func (c *NATSCluster) Kill(nd *NATSNode) {
	nd.mu.Lock()
	cmd, exited := nd.cmd, nd.exited
	nd.cmd = nil
	nd.mu.Unlock()
	if cmd == nil {
		return
	}
	cmd.Process.Kill()
	<-exited
}

// Stop stops a node with SIGTERM (then SIGKILL after 5 s).
func (c *NATSCluster) Stop(nd *NATSNode) {
	nd.mu.Lock()
	cmd, exited := nd.cmd, nd.exited
	nd.cmd = nil
	nd.mu.Unlock()
	if cmd == nil {
		return
	}
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(5 * time.Second):
		cmd.Process.Kill()
		<-exited
	}
}

// Start starts a stopped node again with the same ports and storage, and waits for its MQTT
// gateway.
func (c *NATSCluster) Start(nd *NATSNode) error {
	if err := c.start(nd); err != nil {
		return err
	}
	return c.waitMQTT(nd, 60*time.Second)
}

// URLs lists every node's MQTT URL, for clients that fail over between them.
func (c *NATSCluster) URLs() []string {
	var out []string
	for _, nd := range c.Nodes {
		out = append(out, nd.URL())
	}
	return out
}

// natsBroker presents one cluster node to Conformance; Restart restarts the whole cluster, so
// persistence is that of JetStream's replicated storage.
type natsBroker struct {
	c   *NATSCluster
	via *NATSNode
}

// AsBroker returns the cluster as a Conformance broker reached through node i.
func (c *NATSCluster) AsBroker(i int) Broker { return natsBroker{c, c.Nodes[i]} }

func (b natsBroker) Name() string {
	out, _ := exec.Command(b.c.bin, "--version").CombinedOutput()
	return fmt.Sprintf("nats-%d-node (%s)", len(b.c.Nodes), strings.TrimSpace(string(out)))
}
func (b natsBroker) URL() string      { return b.via.URL() }
func (b natsBroker) Persistent() bool { return true }
func (b natsBroker) Restart() error {
	for _, nd := range b.c.Nodes {
		b.c.Stop(nd)
	}
	for _, nd := range b.c.Nodes {
		if err := b.c.start(nd); err != nil {
			return err
		}
	}
	for _, nd := range b.c.Nodes {
		if err := b.c.waitMQTT(nd, 60*time.Second); err != nil {
			return err
		}
	}
	return nil
}
