package leader_test

import (
	"context"
	"log/slog"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/edgefleet/edgefleet/controlplane/leader"
	"github.com/edgefleet/edgefleet/internal/etcdtest"
)

// replica is one candidate with its own etcd client, recording when it runs the singleton.
type replica struct {
	id  string
	cli *clientv3.Client
	el  *leader.Etcd

	mu      sync.Mutex
	running bool
	terms   int
}

func startReplica(t *testing.T, ctx context.Context, c *etcdtest.Cluster, id string) *replica {
	cli, err := clientv3.New(clientv3.Config{Endpoints: c.Endpoints(), DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	r := &replica{id: id, cli: cli, el: leader.NewEtcd(cli, "test/_leader/controller", id, time.Second, slog.New(slog.DiscardHandler))}
	go r.el.Lead(ctx, func(ctx context.Context) {
		r.mu.Lock()
		r.running, r.terms = true, r.terms+1
		r.mu.Unlock()
		<-ctx.Done()
		r.mu.Lock()
		r.running = false
		r.mu.Unlock()
	})
	return r
}

func (r *replica) state() (running bool, terms int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.running, r.terms
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestSingleAlwaysLeads(t *testing.T) {
	ran := false
	leader.Single{ID: "solo"}.Lead(context.Background(), func(context.Context) { ran = true })
	st := leader.Single{ID: "solo"}.Status(context.Background())
	if !ran || !st.IsLeader || st.Leader != "solo" {
		t.Fatalf("single process: ran %v, status %+v", ran, st)
	}
}

// TestEtcdOneLeaderAndTakeover: of two candidates exactly one runs the singleton; when the
// leader crashes (its client goes away without resigning), the other takes over once the lease
// expires; when that one stops cleanly it resigns and a new candidate takes over.
func TestEtcdOneLeaderAndTakeover(t *testing.T) {
	c := etcdtest.StartCluster(t, 3)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	a := startReplica(t, ctx, c, "a")
	waitFor(t, "a to lead", func() bool { r, _ := a.state(); return r })
	bctx, bcancel := context.WithCancel(ctx)
	b := startReplica(t, bctx, c, "b")
	waitFor(t, "b to see a as leader", func() bool { return b.el.Status(ctx).Leader == "a" })
	if r, _ := b.state(); r {
		t.Fatal("b runs the singleton while a leads")
	}
	if st := a.el.Status(ctx); !st.IsLeader || st.Leader != "a" || st.Replica != "a" {
		t.Fatalf("a's status %+v", st)
	}

	// Crash a: its client disappears, the lease is not revoked and expires by itself.
	a.cli.Close()
	waitFor(t, "b to take over", func() bool { r, _ := b.state(); return r })
	waitFor(t, "a to stop acting as leader", func() bool { r, _ := a.state(); return !r })
	if st := b.el.Status(ctx); !st.IsLeader || st.Leader != "b" {
		t.Fatalf("b's status after takeover %+v", st)
	}

	// A clean stop of b resigns: c takes over.
	cr := startReplica(t, ctx, c, "c")
	waitFor(t, "c to see b as leader", func() bool { return cr.el.Status(ctx).Leader == "b" })
	bcancel()
	waitFor(t, "c to take over", func() bool { r, _ := cr.state(); return r })
	if _, terms := b.state(); terms != 1 {
		t.Fatalf("b led %d terms, want 1", terms)
	}
}
