// Package etcdtest starts a real etcd cluster (Debian's etcd-server package, /usr/bin/etcd) of
// child processes on loopback ports for tests of the etcd-backed parts of the control plane.
package etcdtest

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Install is the command that provides etcd on Debian and Ubuntu; every message about a missing
// binary names it.
const Install = "apt-get install -y etcd-server"

// Find returns the etcd binary from PATH or the Debian location, or "".
func Find() string {
	if p, err := exec.LookPath("etcd"); err == nil {
		return p
	}
	for _, p := range []string{"/usr/bin/etcd", "/usr/local/bin/etcd"} {
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0 {
			return p
		}
	}
	return ""
}

// Require returns the etcd binary. Without one it fails the test under CI=true, where a silent
// skip would hide that the etcd tests never ran, and skips loudly elsewhere.
func Require(t testing.TB) string {
	t.Helper()
	if p := Find(); p != "" {
		return p
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("etcd is required in CI: %s", Install)
	}
	t.Skipf("\n**************************************************************\n"+
		"SKIPPING: etcd not found (PATH, /usr/bin/etcd).\n"+
		"Tests against a real etcd cluster did NOT run. Install it with:\n"+
		"    %s\n"+
		"**************************************************************", Install)
	return ""
}

// Recommended are the member flags docs/OPERATIONS.md asks of a cluster that holds a control
// plane's metadata: a rollout stage writes one outbox entry per device in one transaction, which
// etcd's defaults (128 operations, 1.5 MiB) cap at about a hundred devices.
var Recommended = []string{
	"--max-txn-ops", "20000",
	"--max-request-bytes", "10485760",
	"--auto-compaction-mode", "periodic",
	"--auto-compaction-retention", "1h",
	"--quota-backend-bytes", "8589934592",
}

// Cluster is a running etcd cluster of child processes.
type Cluster struct {
	Members []*Member
}

// Member is one etcd process.
type Member struct {
	Name      string
	ClientURL string
	PeerURL   string
	dir       string
	logPath   string

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{}
}

// Endpoints are the client URLs of every member, also of stopped ones: a client given all of
// them fails over by itself.
func (c *Cluster) Endpoints() []string {
	out := make([]string, len(c.Members))
	for i, m := range c.Members {
		out[i] = m.ClientURL
	}
	return out
}

// StartCluster starts n members with data in t.TempDir() on free loopback ports, etcd's default
// limits and the extra flags given (e.g. Recommended...), and waits until every member reports
// healthy. The cluster is stopped by t.Cleanup; when the test failed, each member's log tail goes
// to the test log.
func StartCluster(t testing.TB, n int, extra ...string) *Cluster {
	t.Helper()
	bin := Require(t)
	ports := freePorts(t, 2*n)
	dir := t.TempDir()
	c := &Cluster{}
	var initial []string
	for i := 0; i < n; i++ {
		m := &Member{
			Name:      fmt.Sprintf("m%d", i),
			ClientURL: fmt.Sprintf("http://127.0.0.1:%d", ports[2*i]),
			PeerURL:   fmt.Sprintf("http://127.0.0.1:%d", ports[2*i+1]),
			dir:       filepath.Join(dir, fmt.Sprintf("m%d", i)),
		}
		m.logPath = m.dir + ".log"
		c.Members = append(c.Members, m)
		initial = append(initial, m.Name+"="+m.PeerURL)
	}
	token := fmt.Sprintf("edgefleet-test-%d-%d", os.Getpid(), time.Now().UnixNano())
	t.Cleanup(func() {
		for _, m := range c.Members {
			m.Kill()
		}
		if t.Failed() {
			for _, m := range c.Members {
				t.Logf("etcd %s log (tail):\n%s", m.Name, tail(m.logPath, 3000))
			}
		}
	})
	for _, m := range c.Members {
		args := []string{
			"--name", m.Name,
			"--data-dir", m.dir,
			"--listen-client-urls", m.ClientURL,
			"--advertise-client-urls", m.ClientURL,
			"--listen-peer-urls", m.PeerURL,
			"--initial-advertise-peer-urls", m.PeerURL,
			"--initial-cluster", strings.Join(initial, ","),
			"--initial-cluster-state", "new",
			"--initial-cluster-token", token,
			// The shared test machine is slow and busy: a longer election timeout keeps a loaded
			// disk from triggering leader changes the test did not ask for.
			"--heartbeat-interval", "200",
			"--election-timeout", "2000",
			"--logger", "zap",
			"--log-outputs", "stderr",
			"--log-level", "warn",
		}
		args = append(args, extra...)
		if err := m.start(bin, args); err != nil {
			t.Fatalf("etcdtest: start %s: %v", m.Name, err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for _, m := range c.Members {
		if err := m.waitHealthy(ctx); err != nil {
			t.Fatalf("etcdtest: %s did not become healthy: %v\n%s", m.Name, err, tail(m.logPath, 3000))
		}
	}
	return c
}

func (m *Member) start(bin string, args []string) error {
	logf, err := os.Create(m.logPath)
	if err != nil {
		return err
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	// The kernel kills etcd if the test binary dies before t.Cleanup ran.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return err
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); logf.Close(); close(exited) }()
	m.mu.Lock()
	m.cmd, m.exited = cmd, exited
	m.mu.Unlock()
	return nil
}

// waitHealthy polls the member's /health endpoint, which answers true once the member has a
// leader and serves requests.
func (m *Member) waitHealthy(ctx context.Context) error {
	var last string
	for {
		m.mu.Lock()
		exited := m.exited
		m.mu.Unlock()
		select {
		case <-exited:
			return fmt.Errorf("etcd exited")
		default:
		}
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, m.ClientURL+"/health", nil)
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			var b bytes.Buffer
			b.ReadFrom(resp.Body)
			resp.Body.Close()
			last = b.String()
			if resp.StatusCode == http.StatusOK && strings.Contains(last, `"health":"true"`) {
				return nil
			}
		} else {
			last = err.Error()
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (last answer: %s)", ctx.Err(), last)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Kill stops the member with SIGKILL, as a crash would, and waits for it to exit.
func (m *Member) Kill() {
	m.mu.Lock()
	cmd, exited := m.cmd, m.exited
	m.mu.Unlock()
	if cmd == nil {
		return
	}
	cmd.Process.Kill()
	<-exited
}

func freePorts(t testing.TB, n int) []int {
	t.Helper()
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	ports := make([]int, n)
	for i := range ports {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("etcdtest: free port: %v", err)
		}
		ls = append(ls, l)
		ports[i] = l.Addr().(*net.TCPAddr).Port
	}
	return ports
}

func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "(no log: " + err.Error() + ")"
	}
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}
