package fleet

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/edgefleet/edgefleet/controlplane/store"
	"github.com/edgefleet/edgefleet/internal/wire"
	"github.com/edgefleet/edgefleet/telemetry"
)

var topics = wire.NewTopics("")

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func newRegistry(t *testing.T, st store.Store) *Registry {
	t.Helper()
	r, err := Open(context.Background(), st, topics, quiet())
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func status(state string, session uint64, group string) []byte {
	b, _ := json.Marshal(wire.Status{State: state, Session: session, Group: group})
	return b
}

func TestStatusAndStaleWill(t *testing.T) {
	r := newRegistry(t, store.NewMemory())
	r.HandleMessage(topics.Status("dev-1"), status("online", 5, "line-a"))
	d, err := r.Get("dev-1")
	if err != nil || !d.Online || d.Group != "line-a" || d.Session != 5 {
		t.Fatalf("after online: %+v %v", d, err)
	}
	// Reconnect: session 6 online, then the broker delivers session 5's Will late.
	r.HandleMessage(topics.Status("dev-1"), status("online", 6, "line-a"))
	r.HandleMessage(topics.Status("dev-1"), status("offline", 5, ""))
	if d, _ := r.Get("dev-1"); !d.Online || d.Session != 6 {
		t.Fatalf("late Will of session 5 marked the device offline: %+v", d)
	}
	r.HandleMessage(topics.Status("dev-1"), status("offline", 6, ""))
	if d, _ := r.Get("dev-1"); d.Online {
		t.Fatalf("Will of the current session ignored: %+v", d)
	}
	// A device that lost its state folder starts counting from 1 again and must still come online.
	r.HandleMessage(topics.Status("dev-1"), status("online", 1, ""))
	if d, _ := r.Get("dev-1"); !d.Online || d.Session != 1 {
		t.Fatalf("restarted counter not accepted: %+v", d)
	}
}

func TestGroupAppliesAtFirstRegistrationOnly(t *testing.T) {
	r := newRegistry(t, store.NewMemory())
	r.HandleMessage(topics.Status("dev-1"), status("online", 1, "line-a"))
	if _, err := r.SetGroup(context.Background(), "dev-1", "line-b"); err != nil {
		t.Fatal(err)
	}
	r.HandleMessage(topics.Status("dev-1"), status("online", 2, "line-a"))
	if d, _ := r.Get("dev-1"); d.Group != "line-b" {
		t.Fatalf("agent's --group overrode the registry: %q", d.Group)
	}
	if _, err := r.SetGroup(context.Background(), "dev-1", "Bad Group"); err == nil {
		t.Fatal("invalid group accepted")
	}
	if _, err := r.SetGroup(context.Background(), "nope", "line-a"); err == nil {
		t.Fatal("unknown device accepted")
	}
	r.HandleMessage(topics.Status("dev-2"), status("online", 1, "NOT VALID"))
	if d, _ := r.Get("dev-2"); d.Group != DefaultGroup {
		t.Fatalf("invalid requested group: %q", d.Group)
	}
}

type malformedCase struct {
	Name    string `json:"name"`
	Topic   string `json:"topic"`
	Payload string `json:"payload"`
}

func TestMalformedPayloadsAreRefusedAndCounted(t *testing.T) {
	raw, err := os.ReadFile("testdata/malformed.json")
	if err != nil {
		t.Fatal(err)
	}
	var cases []malformedCase
	if err := json.Unmarshal(raw, &cases); err != nil {
		t.Fatal(err)
	}
	st := store.NewMemory()
	r := newRegistry(t, st)
	r.HandleMessage(topics.Status("dev-1"), status("online", 3, "line-a"))
	if err := r.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	before, _ := r.Get("dev-1")
	for i, c := range cases {
		t.Run(c.Name, func(t *testing.T) {
			topic := c.Topic
			if rest, ok := strings.CutPrefix(topic, "SHARD(dev-1)"); ok {
				topic = strings.TrimSuffix(topics.Telemetry("dev-1", "x"), "/x") + rest
			}
			payload := []byte(c.Payload)
			if c.Payload == "HUGE" {
				payload = []byte(`{"state":"online","session":3,"labels":{"k":"` + strings.Repeat("a", 1<<20) + `"}}`)
			}
			_, m0 := r.Stats()
			if err := r.handle(topic, payload); err == nil {
				t.Fatalf("accepted")
			} else if !strings.Contains(err.Error(), "malformed") {
				t.Fatalf("error does not say malformed: %v", err)
			}
			r.HandleMessage(topic, payload)
			if _, m1 := r.Stats(); m1 != m0+1 {
				t.Fatalf("malformed counter %d -> %d", m0, m1)
			}
			_ = i
		})
	}
	after, _ := r.Get("dev-1")
	// Only the malformed counter and nothing else may change.
	after.Malformed, before.Malformed = 0, 0
	if !reflect.DeepEqual(before, after) {
		t.Fatalf("malformed messages changed the registry:\nbefore %+v\nafter  %+v", before, after)
	}
	if _, err := r.Get("dev_one"); err == nil {
		t.Fatal("a device was registered from a malformed topic")
	}
	if len(r.List(Filter{})) != 1 {
		t.Fatalf("devices: %v", r.List(Filter{}))
	}
}

func TestPersistsAcrossReopen(t *testing.T) {
	st, err := store.OpenBolt(t.TempDir() + "/cp.db")
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	r := newRegistry(t, st)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { r.Run(ctx, time.Hour); close(done) }()
	for i := 0; i < 5; i++ {
		r.HandleMessage(topics.Status(fmt.Sprintf("dev-%d", i)), status("online", 1, "g"))
	}
	h, _ := json.Marshal(wire.Telemetry{Device: "dev-0", Seq: 4, Kind: "health", At: time.Now(), Body: json.RawMessage(`{"cpu_percent":12.5}`)})
	r.HandleMessage(topics.Telemetry("dev-0", "health"), h)
	cancel()
	<-done // final flush on shutdown
	r2 := newRegistry(t, st)
	if n := len(r2.List(Filter{Group: "g"})); n != 5 {
		t.Fatalf("reopened registry has %d devices", n)
	}
	d, _ := r2.Get("dev-0")
	if d.Health == nil || d.Health.CPUPercent != 12.5 || d.LastSeq != 4 {
		t.Fatalf("health not persisted: %+v", d)
	}
	on := true
	if n := len(r2.List(Filter{Online: &on, Search: "dev-3"})); n != 1 {
		t.Fatalf("filter online+search: %d", n)
	}
	if g := r2.Groups(); len(g) != 1 || g[0].Devices != 5 || g[0].Online != 5 {
		t.Fatalf("groups %+v", g)
	}
}

// capped is a store that takes at most max writes per transaction, like etcd's --max-txn-ops.
type capped struct {
	*store.Memory
	max     int
	updates int
}

func (c *capped) MaxWritesPerTx() int { return c.max }

func (c *capped) Update(ctx context.Context, fn func(store.Tx) error) error {
	c.updates++
	return c.Memory.Update(ctx, func(tx store.Tx) error {
		ct := &countingTx{Tx: tx}
		if err := fn(ct); err != nil {
			return err
		}
		if ct.writes > c.max {
			return fmt.Errorf("%d writes in one transaction, the store takes %d", ct.writes, c.max)
		}
		return nil
	})
}

type countingTx struct {
	store.Tx
	writes int
}

func (c *countingTx) Put(b, k string, v []byte) error { c.writes++; return c.Tx.Put(b, k, v) }

// TestFlushSplitsForCappedStores: a flush of more devices than a transaction may hold is split,
// and every device is stored.
func TestFlushSplitsForCappedStores(t *testing.T) {
	st := &capped{Memory: store.NewMemory(), max: 3}
	r := newRegistry(t, st)
	for i := 0; i < 10; i++ {
		r.HandleMessage(topics.Status(fmt.Sprintf("dev-%d", i)), status("online", 1, "g"))
	}
	st.updates = 0
	if err := r.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := len(newRegistry(t, st).List(Filter{Group: "g"})); n != 10 || st.updates != 4 {
		t.Fatalf("%d devices stored in %d transactions, want 10 in 4", n, st.updates)
	}
}

// TestSyncGroupsAdoptsNewerChoices: two registries on one store (two replicas): a group set
// through one reaches the other, and the other's older record does not win it back.
func TestSyncGroupsAdoptsNewerChoices(t *testing.T) {
	ctx := context.Background()
	st := store.NewMemory()
	a, b := newRegistry(t, st), newRegistry(t, st)
	for _, r := range []*Registry{a, b} {
		r.HandleMessage(topics.Status("dev-1"), status("online", 1, "line-a"))
		if err := r.Flush(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := a.SetGroup(ctx, "dev-1", "line-b"); err != nil {
		t.Fatal(err)
	}
	// b rewrites its (older) record, as a replica does on every flush.
	b.HandleMessage(topics.Status("dev-1"), status("online", 2, ""))
	b.Flush(ctx)
	for i, want := range []int{1, 0} {
		n, err := b.SyncGroups(ctx)
		if err != nil || n != want {
			t.Fatalf("sync %d: %d changed, %v; want %d", i, n, err, want)
		}
	}
	if d, _ := b.Get("dev-1"); d.Group != "line-b" {
		t.Fatalf("b sees group %q after sync", d.Group)
	}
	b.Flush(ctx)
	if d, _ := newRegistry(t, st).Get("dev-1"); d.Group != "line-b" {
		t.Fatalf("stored group %q", d.Group)
	}
}

// TestReportOfNewerSessionMeansOnline: when a device's online status is lost or late (brokers do
// not order across topics; a clustered broker may deliver a retained status late), a report from
// a newer session than any status seen brings it online; a report of the session whose Last Will
// arrived does not undo it.
func TestReportOfNewerSessionMeansOnline(t *testing.T) {
	rep := func(session uint64) []byte {
		b, _ := json.Marshal(wire.Reported{Device: "dev-1", Session: session, Models: map[string]wire.ModelReport{}})
		return b
	}
	tel := func(session uint64) []byte {
		b, _ := json.Marshal(wire.Telemetry{Device: "dev-1", Seq: 9, Session: session, Kind: telemetry.KindHealth, Body: json.RawMessage(`{}`)})
		return b
	}
	cases := []struct {
		name   string
		msgs   [][2]string // topic kind, payload
		online bool
	}{
		{"report alone (status never arrived)", [][2]string{{"reported", string(rep(3))}}, true},
		{"Will of session 3, then a report of session 3 delivered late", [][2]string{
			{"status", string(status("online", 3, ""))}, {"status", string(status("offline", 3, ""))}, {"reported", string(rep(3))}}, false},
		{"Will of session 3, then a report of session 4 (status 4 lost)", [][2]string{
			{"status", string(status("online", 3, ""))}, {"status", string(status("offline", 3, ""))}, {"reported", string(rep(4))}}, true},
		{"offline of session 5 after a report of session 5", [][2]string{
			{"reported", string(rep(5))}, {"status", string(status("offline", 5, ""))}}, false},
		{"Will of session 3, then telemetry of session 4 (status 4 lost)", [][2]string{
			{"status", string(status("online", 3, ""))}, {"status", string(status("offline", 3, ""))}, {"telemetry", string(tel(4))}}, true},
		{"Will of session 3, then telemetry of session 3 delivered late", [][2]string{
			{"status", string(status("online", 3, ""))}, {"status", string(status("offline", 3, ""))}, {"telemetry", string(tel(3))}}, false},
		{"Will of session 3, then telemetry of an agent that stamps no session", [][2]string{
			{"status", string(status("online", 3, ""))}, {"status", string(status("offline", 3, ""))}, {"telemetry", string(tel(0))}}, false},
	}
	for _, c := range cases {
		r := newRegistry(t, store.NewMemory())
		for _, m := range c.msgs {
			topic := topics.Status("dev-1")
			switch m[0] {
			case "reported":
				topic = topics.Reported("dev-1")
			case "telemetry":
				topic = topics.Telemetry("dev-1", telemetry.KindHealth)
			}
			if err := r.HandleMessage(topic, []byte(m[1])); err != nil {
				t.Fatalf("%s: %v", c.name, err)
			}
		}
		if d, _ := r.Get("dev-1"); d.Online != c.online {
			t.Errorf("%s: online %v, want %v", c.name, d.Online, c.online)
		}
	}
}

// TestPage: pages come in id order whatever the registration order, filters apply before
// offset and limit, and total counts every match.
func TestPage(t *testing.T) {
	r := newRegistry(t, store.NewMemory())
	for _, id := range []string{"dev-5", "dev-1", "dev-4", "dev-2", "dev-3", "dev-6"} {
		g := "line-a"
		if id == "dev-2" || id == "dev-5" {
			g = "line-b"
		}
		r.HandleMessage(topics.Status(id), status("online", 1, g))
	}
	r.HandleMessage(topics.Status("dev-4"), status("offline", 1, ""))
	online := true
	cases := []struct {
		name          string
		f             Filter
		offset, limit int
		want          []string
		total         int
	}{
		{"all", Filter{}, 0, 0, []string{"dev-1", "dev-2", "dev-3", "dev-4", "dev-5", "dev-6"}, 6},
		{"first page", Filter{}, 0, 2, []string{"dev-1", "dev-2"}, 6},
		{"second page", Filter{}, 2, 2, []string{"dev-3", "dev-4"}, 6},
		{"past the end", Filter{}, 10, 2, nil, 6},
		{"group", Filter{Group: "line-a"}, 1, 2, []string{"dev-3", "dev-4"}, 4},
		{"group online", Filter{Group: "line-a", Online: &online}, 0, 10, []string{"dev-1", "dev-3", "dev-6"}, 3},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			devs, total := r.Page(c.f, c.offset, c.limit)
			var got []string
			for _, d := range devs {
				got = append(got, d.ID)
			}
			if !reflect.DeepEqual(got, c.want) || total != c.total {
				t.Fatalf("got %v total %d, want %v total %d", got, total, c.want, c.total)
			}
		})
	}
}
