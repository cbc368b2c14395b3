package brokertest

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// MosquittoInstall is the command that provides the broker on Debian and
// Ubuntu; it is named in every message about a missing binary.
const MosquittoInstall = "apt-get install -y mosquitto mosquitto-clients"

// MosquittoOptions configures StartMosquitto. The zero value is a stock
// Mosquitto (its built-in limits) with persistence on, anonymous access and
// one loopback listener.
type MosquittoOptions struct {
	// ConfigFile, when set, is a mosquitto.conf (typically
	// packaging/mosquitto/mosquitto.conf) whose tuning settings are applied.
	// Deployment-specific lines (listeners, paths, TLS, authentication,
	// user, logging) are dropped: the test owns its port, directory and log.
	ConfigFile string
	// Config lines are appended verbatim, e.g. "acl_file /tmp/x/acl".
	// A key given here replaces the generated line with the same key, so
	// "allow_anonymous false" together with a password_file works.
	Config []string
	// NoPersistence turns persistence off; by default it is on so Restart
	// can show what survives a broker restart.
	NoPersistence bool
}

// Mosquitto is a mosquitto child process listening on a loopback port.
type Mosquitto struct {
	bin, dir, confPath, logPath string
	port                        int
	persistent                  bool
	version                     string

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{}
}

// errPortInUse lets StartMosquitto retry on another port when the free port
// it picked was taken by someone else before mosquitto bound it.
var errPortInUse = errors.New("address already in use")

// FindMosquitto returns the mosquitto binary's path from PATH or the Debian
// location (/usr/sbin is often not on a non-root user's PATH), or "".
func FindMosquitto() string {
	if p, err := exec.LookPath("mosquitto"); err == nil {
		return p
	}
	for _, p := range []string{"/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto", "/opt/homebrew/sbin/mosquitto"} {
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0 {
			return p
		}
	}
	return ""
}

// RequireMosquitto returns the binary's path. Without one it fails the test
// in CI (CI=true), where a silent skip would hide that the broker tests
// never ran, and skips loudly elsewhere.
func RequireMosquitto(t testing.TB) string {
	t.Helper()
	if p := FindMosquitto(); p != "" {
		return p
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("mosquitto is required in CI: %s", MosquittoInstall)
	}
	t.Skipf("\n**************************************************************\n"+
		"SKIPPING: mosquitto not found (PATH, /usr/sbin/mosquitto).\n"+
		"Broker tests against Mosquitto did NOT run. Install it with:\n"+
		"    %s\n"+
		"**************************************************************", MosquittoInstall)
	return ""
}

// StartMosquitto writes a config into t.TempDir(), starts mosquitto on a
// free loopback port and waits until the port accepts connections. The
// broker is stopped by t.Cleanup; if the test failed, the broker's log is
// written to the test log.
func StartMosquitto(t testing.TB, opts MosquittoOptions) *Mosquitto {
	t.Helper()
	bin := RequireMosquitto(t)
	dir := t.TempDir()
	m := &Mosquitto{
		bin:      bin,
		dir:      dir,
		confPath: filepath.Join(dir, "mosquitto.conf"),
		logPath:  filepath.Join(dir, "mosquitto.log"),
		version:  mosquittoVersion(bin),
	}
	if err := os.MkdirAll(filepath.Join(dir, "data"), 0o700); err != nil {
		t.Fatal(err)
	}
	var tuning []Setting
	if opts.ConfigFile != "" {
		all, err := ParseMosquittoConf(opts.ConfigFile)
		if err != nil {
			t.Fatalf("brokertest: %v", err)
		}
		tuning = TuningSettings(all)
	}
	t.Cleanup(func() {
		m.Stop()
		if t.Failed() {
			t.Logf("mosquitto log (%s):\n%s", m.logPath, m.Log())
		}
	})

	// Picking a port by binding :0 and closing it leaves a window in which
	// another process can take it; mosquitto then exits with "Address
	// already in use" and we try another port.
	var lastErr error
	for attempt := 0; attempt < 5; attempt++ {
		port, err := freePort()
		if err != nil {
			t.Fatalf("brokertest: free port: %v", err)
		}
		m.port = port
		conf, persistent := m.config(tuning, opts)
		m.persistent = persistent
		if err := os.WriteFile(m.confPath, []byte(conf), 0o600); err != nil {
			t.Fatal(err)
		}
		lastErr = m.start()
		if lastErr == nil {
			return m
		}
		if !errors.Is(lastErr, errPortInUse) {
			break
		}
	}
	t.Fatalf("brokertest: starting mosquitto: %v\nconfig (%s):\n%s", lastErr, m.confPath, readOrErr(m.confPath))
	return nil
}

// repeatableKeys may appear several times in a mosquitto.conf; any other
// key may appear once (mosquitto 2 refuses duplicates).
var repeatableKeys = map[string]bool{"log_type": true, "log_dest": true, "include_dir": true}

// config renders the file mosquitto runs with and reports whether
// persistence ends up on. Later sources win for a key: generated lines,
// then tuning from ConfigFile, then opts.Config; NoPersistence wins over all.
func (m *Mosquitto) config(tuning []Setting, opts MosquittoOptions) (string, bool) {
	var order []string
	values := map[string][]string{}
	set := func(key, value string) {
		if _, seen := values[key]; !seen {
			order = append(order, key)
		}
		if repeatableKeys[key] {
			values[key] = append(values[key], value)
		} else {
			values[key] = []string{value}
		}
	}
	set("allow_anonymous", "true")
	set("persistence", "true")
	// The trailing slash matters: mosquitto concatenates it with the file name.
	set("persistence_location", filepath.Join(m.dir, "data")+"/")
	// stdout is redirected to the log file by start, which also catches
	// errors printed before the config has been read.
	set("log_dest", "stdout")
	for _, lt := range []string{"error", "warning", "notice", "information"} {
		set("log_type", lt)
	}
	set("log_timestamp_format", "%Y-%m-%dT%H:%M:%S")
	if os.Geteuid() == 0 {
		// As root mosquitto drops to the "mosquitto" user, which cannot
		// write to a 0700 t.TempDir(); stay root in tests.
		set("user", "root")
	}
	for _, s := range tuning {
		set(s.Key, s.Value)
	}
	extra := map[string]bool{}
	for _, l := range opts.Config {
		key, value, _ := strings.Cut(strings.TrimSpace(l), " ")
		if key == "" || strings.HasPrefix(key, "#") {
			continue
		}
		if repeatableKeys[key] && !extra[key] {
			delete(values, key) // the caller's list replaces ours
			order = slices.DeleteFunc(order, func(k string) bool { return k == key })
		}
		extra[key] = true
		set(key, strings.TrimSpace(value))
	}
	if opts.NoPersistence {
		values["persistence"] = []string{"false"}
	}

	var b strings.Builder
	b.WriteString("# generated by internal/brokertest\n")
	// The listener comes first: with per_listener_settings false (the
	// default) every later option is global.
	fmt.Fprintf(&b, "listener %d 127.0.0.1\n", m.port)
	for _, key := range order {
		for _, v := range values[key] {
			fmt.Fprintf(&b, "%s %s\n", key, v)
		}
	}
	return b.String(), values["persistence"][0] == "true"
}

func (m *Mosquitto) start() error {
	logf, err := os.OpenFile(m.logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	defer logf.Close() // the child holds its own descriptor
	cmd := exec.Command(m.bin, "-c", m.confPath)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Dir = m.dir
	cmd.SysProcAttr = childProcAttr()
	if err := cmd.Start(); err != nil {
		return err
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	m.mu.Lock()
	m.cmd, m.exited = cmd, exited
	m.mu.Unlock()

	deadline := time.Now().Add(10 * time.Second)
	for {
		select {
		case <-exited:
			if strings.Contains(m.Log(), "Address already in use") {
				return errPortInUse
			}
			return fmt.Errorf("mosquitto exited during start-up (%v)", cmd.ProcessState)
		default:
		}
		c, err := net.DialTimeout("tcp", m.Addr(), 200*time.Millisecond)
		if err == nil {
			c.Close()
			// A process that lost the race for the port exits right after
			// failing to bind; give it no chance to pass for ready.
			select {
			case <-exited:
				continue
			case <-time.After(20 * time.Millisecond):
				return nil
			}
		}
		if time.Now().After(deadline) {
			m.Stop()
			return fmt.Errorf("mosquitto did not accept connections on %s within 10s", m.Addr())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Name names the broker and its version in results tables.
func (m *Mosquitto) Name() string { return "mosquitto " + m.version }

// URL is the broker's address for paho: mqtt://127.0.0.1:PORT.
func (m *Mosquitto) URL() string { return "mqtt://" + m.Addr() }

// Addr is host:port of the listener.
func (m *Mosquitto) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(m.port)) }

// Port is the listener's port; it stays the same across Restart.
func (m *Mosquitto) Port() int { return m.port }

// ConfigPath is the generated mosquitto.conf, for messages and debugging.
func (m *Mosquitto) ConfigPath() string { return m.confPath }

// Persistent reports whether the broker keeps sessions, queued and retained
// messages across Restart.
func (m *Mosquitto) Persistent() bool { return m.persistent }

// Log returns everything the broker logged so far, across restarts.
func (m *Mosquitto) Log() string {
	b, err := os.ReadFile(m.logPath)
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	return string(b)
}

// Stop terminates the broker with SIGTERM, on which mosquitto writes its
// persistence file, and waits for it; after 5 s it is killed. Stopping a
// stopped broker does nothing.
func (m *Mosquitto) Stop() {
	m.mu.Lock()
	cmd, exited := m.cmd, m.exited
	m.cmd = nil
	m.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(5 * time.Second):
		_ = cmd.Process.Kill()
		<-exited
	}
}

// Restart stops the broker and starts it again with the same config, port
// and persistence directory, as an operator's restart or a crash-free
// upgrade would.
func (m *Mosquitto) Restart() error {
	m.Stop()
	if err := m.start(); err != nil {
		return fmt.Errorf("restarting mosquitto: %w\nlog:\n%s", err, m.Log())
	}
	return nil
}

// Reload sends SIGHUP: Mosquitto re-reads its password and ACL files (as an operator does after
// changing accounts). It returns at once; the reload happens in the broker's next loop.
func (m *Mosquitto) Reload() error {
	m.mu.Lock()
	cmd := m.cmd
	m.mu.Unlock()
	if cmd == nil {
		return errors.New("mosquitto is not running")
	}
	return cmd.Process.Signal(syscall.SIGHUP)
}

var versionRE = regexp.MustCompile(`mosquitto version (\S+)`)

// mosquittoVersion asks the binary; "-h" prints the version and exits 3.
func mosquittoVersion(bin string) string {
	out, _ := exec.Command(bin, "-h").CombinedOutput()
	if m := versionRE.FindSubmatch(out); m != nil {
		return string(m[1])
	}
	return "(unknown version)"
}

// freePort asks the kernel for an unused loopback port.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// Setting is one "key value" line of a mosquitto.conf.
type Setting struct {
	Key, Value string
	Line       int
}

// ParseMosquittoConf reads the settings of a mosquitto.conf, skipping
// comments and blank lines. Repeated keys (listener, log_type) are all kept,
// in order.
func ParseMosquittoConf(path string) ([]Setting, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []Setting
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		key, value, _ := strings.Cut(line, " ")
		out = append(out, Setting{Key: key, Value: strings.TrimSpace(value), Line: n})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return out, nil
}

// deploymentKeys are settings that depend on where the broker runs (ports,
// paths, certificates, accounts) rather than on how it behaves; tests
// replace them with their own.
var deploymentKeys = map[string]bool{
	"listener": true, "port": true, "bind_address": true, "bind_interface": true,
	"socket_domain": true, "protocol": true, "mount_point": true, "http_dir": true,
	"per_listener_settings": true, "max_connections": true,
	"persistence_location": true, "persistence_file": true, "pid_file": true, "user": true,
	"log_dest": true, "log_type": true, "log_facility": true,
	"include_dir": true, "allow_anonymous": true, "password_file": true, "acl_file": true,
	"psk_file": true, "psk_hint": true, "use_username_as_clientid": true,
	"use_identity_as_username": true, "use_subject_as_username": true,
	"cafile": true, "capath": true, "certfile": true, "keyfile": true, "crlfile": true,
	"require_certificate": true, "tls_version": true, "ciphers": true, "ciphers_tls1.3": true,
	"dhparamfile": true, "tls_engine": true, "tls_keyform": true, "tls_engine_kpass_sha1": true,
	"plugin": true, "plugin_opt": true, "auth_plugin": true,
}

// TuningSettings keeps the settings that shape broker behaviour (limits,
// persistence, expiry) and drops deployment-specific ones.
func TuningSettings(all []Setting) []Setting {
	var out []Setting
	for _, s := range all {
		if !deploymentKeys[s.Key] && !strings.HasPrefix(s.Key, "plugin_opt_") && !strings.HasPrefix(s.Key, "auth_opt_") {
			out = append(out, s)
		}
	}
	return out
}

func readOrErr(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	return string(b)
}
