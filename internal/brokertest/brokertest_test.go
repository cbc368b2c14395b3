package brokertest

import (
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
)

// shippedConf is the mosquitto.conf edgefleet ships for fleets.
var shippedConf = filepath.Join(repoRoot(), "packaging", "mosquitto", "mosquitto.conf")

func repoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// Known gaps of mochi-mqtt v2.7.9, found by this suite; each names the
// code so it can be re-checked when mochi is upgraded.
var (
	mochiGaps = []KnownGap{{
		Requirement: "offline-queue-order",
		Reason: "mochi resends a session's queued messages sorted by uint16(Created), a Unix time in " +
			"seconds, with an unstable sort over a map (inflight.go GetAll), so messages queued " +
			"within the same second arrive in random order",
	}}
	mochiBoltPacketID = KnownGap{
		Requirement: "restart-persistence",
		Reason: "the bolt storage hook's OnQosPublish does not store the packet id (hooks/storage/bolt; " +
			"the badger and pebble hooks do), so after a restart all queued messages of a session " +
			"load with packet id 0, collapse into one, and its resend fails with \"missing packet id\"",
	}
)

// TestConformance runs the suite against every broker edgefleet claims to
// support that can run here, then logs one table for docs/OPERATIONS.md.
func TestConformance(t *testing.T) {
	brokers := []struct {
		name  string
		start func(t *testing.T) Broker
		known []KnownGap
	}{
		{"mosquitto-shipped", func(t *testing.T) Broker {
			return StartMosquitto(t, MosquittoOptions{ConfigFile: shippedConf})
		}, nil},
		{"mochi-bolt", func(t *testing.T) Broker {
			return StartMochi(t, MochiOptions{Persistence: true})
		}, append([]KnownGap{mochiBoltPacketID}, mochiGaps...)},
		{"mochi-memory", func(t *testing.T) Broker {
			return StartMochi(t, MochiOptions{})
		}, mochiGaps},
	}
	// One slot per broker, so the table's columns keep this order whichever
	// parallel subtest finishes first.
	var mu sync.Mutex
	perBroker := make([][]Result, len(brokers))
	for i, br := range brokers {
		t.Run(br.name, func(t *testing.T) {
			t.Parallel() // separate brokers, separate ids: nothing shared
			res := Conformance(t, br.start(t), br.known...)
			mu.Lock()
			perBroker[i] = res
			mu.Unlock()
		})
	}
	t.Cleanup(func() {
		mu.Lock()
		defer mu.Unlock()
		allResults := slices.Concat(perBroker...)
		t.Logf("broker conformance (internal/brokertest):\n%s", FormatResults(allResults))
		for _, r := range Requirements {
			t.Logf("- %s: %s Why: %s", r.ID, r.Title, r.Why)
		}
	})
}

// TestShippedLimits checks that the shipped config sets the limits whose
// stock values lose acknowledged QoS 1 messages, and that the broker we
// test against actually runs with them.
func TestShippedLimits(t *testing.T) {
	settings, err := ParseMosquittoConf(shippedConf)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, s := range settings {
		got[s.Key] = s.Value
	}
	// Stock values are from mosquitto.conf(5) for 2.0.11; ours are the ones
	// measured to lose nothing (SETUP.md "Broker settings that matter").
	for _, w := range []struct{ key, stock, want string }{
		{"max_inflight_messages", "20", "1000"},
		{"max_queued_messages", "1000", "1000000"},
		{"persistence", "false", "true"},
	} {
		if got[w.key] != w.want {
			t.Errorf("%s = %q in %s, want %s (stock %s)", w.key, got[w.key], shippedConf, w.want, w.stock)
		}
	}
	for _, key := range []string{"message_size_limit", "persistent_client_expiration", "password_file", "acl_file"} {
		if got[key] == "" {
			t.Errorf("%s not set in %s", key, shippedConf)
		}
	}
	if got["allow_anonymous"] != "false" {
		t.Errorf("allow_anonymous = %q, want false", got["allow_anonymous"])
	}

	// The tuning must reach the broker the conformance suite runs against.
	tuning := map[string]string{}
	for _, s := range TuningSettings(settings) {
		tuning[s.Key] = s.Value
	}
	for _, key := range []string{"max_inflight_messages", "max_queued_messages", "message_size_limit", "persistent_client_expiration", "persistence"} {
		if tuning[key] != got[key] {
			t.Errorf("TuningSettings dropped %s", key)
		}
	}
	for _, key := range []string{"listener", "password_file", "acl_file", "persistence_location", "certfile"} {
		if _, ok := tuning[key]; ok {
			t.Errorf("TuningSettings kept deployment setting %s", key)
		}
	}
}

// TestMosquittoHelper covers the helper itself: generated config, log
// capture, Restart on the same port, and Stop.
func TestMosquittoHelper(t *testing.T) {
	m := StartMosquitto(t, MosquittoOptions{ConfigFile: shippedConf, Config: []string{"max_keepalive 120"}})
	conf := readFile(t, m.ConfigPath())
	for _, want := range []string{"max_inflight_messages 1000", "max_queued_messages 1000000", "max_keepalive 120", "listener "} {
		if !strings.Contains(conf, want) {
			t.Errorf("generated config lacks %q:\n%s", want, conf)
		}
	}
	if strings.Contains(conf, "/etc/mosquitto") || strings.Contains(conf, "8883") {
		t.Errorf("generated config kept deployment settings:\n%s", conf)
	}
	port := m.Port()
	if err := m.Restart(); err != nil {
		t.Fatal(err)
	}
	if m.Port() != port {
		t.Errorf("port changed across Restart: %d -> %d", port, m.Port())
	}
	m.Stop()
	m.Stop() // idempotent
	if log := m.Log(); strings.Count(log, "mosquitto version") < 2 {
		t.Errorf("log does not show two starts:\n%s", log)
	}
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
