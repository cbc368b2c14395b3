package shards_test

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/edgefleet/edgefleet/controlplane/shards"
	"github.com/edgefleet/edgefleet/internal/etcdtest"
	"github.com/edgefleet/edgefleet/internal/wire"
)

func TestSplit(t *testing.T) {
	for _, c := range []struct {
		members []string
		counts  map[string]int
	}{
		{[]string{"a"}, map[string]int{"a": 64}},
		{[]string{"b", "a"}, map[string]int{"a": 32, "b": 32}},
		{[]string{"a", "b", "c"}, map[string]int{"a": 22, "b": 21, "c": 21}},
		{[]string{"a"}, map[string]int{"z": 0}},
	} {
		seen := map[int]bool{}
		for id, want := range c.counts {
			got := shards.Split(c.members, id)
			if len(got) != want {
				t.Errorf("members %v: %s gets %d shards, want %d", c.members, id, len(got), want)
			}
			for _, k := range got {
				if seen[k] {
					t.Errorf("members %v: shard %d given twice", c.members, k)
				}
				seen[k] = true
			}
		}
	}
	if n := len(shards.All{}.Owned()); n != wire.Shards {
		t.Fatalf("a lone process owns %d shards", n)
	}
}

type replica struct {
	cli *clientv3.Client
	sh  *shards.Etcd
}

func start(t *testing.T, ctx context.Context, c *etcdtest.Cluster, id string) *replica {
	cli, err := clientv3.New(clientv3.Config{Endpoints: c.Endpoints(), DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	r := &replica{cli: cli, sh: shards.NewEtcd(cli, "test", id, time.Second, slog.New(slog.DiscardHandler))}
	go r.sh.Run(ctx)
	return r
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

// TestEtcdShardsSplitAndMove: one replica holds all 64 shards; a second one takes half, with no
// shard held twice; when the first crashes (no goodbye: its lease expires), the second holds all.
func TestEtcdShardsSplitAndMove(t *testing.T) {
	c := etcdtest.StartCluster(t, 3)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	a := start(t, ctx, c, "a")
	waitFor(t, "a to hold every shard", func() bool { return len(a.sh.Owned()) == wire.Shards })
	b := start(t, ctx, c, "b")
	waitFor(t, "an even split", func() bool { return len(a.sh.Owned()) == 32 && len(b.sh.Owned()) == 32 })
	all := slices.Sorted(slices.Values(append(a.sh.Owned(), b.sh.Owned()...)))
	if fmt.Sprint(all) != fmt.Sprint(shards.All{}.Owned()) {
		t.Fatalf("split is not a partition of the shards: %v", all)
	}
	if !slices.Equal(b.sh.Owned(), shards.Split([]string{"a", "b"}, "b")) {
		t.Fatalf("b holds %v", b.sh.Owned())
	}
	a.cli.Close() // a crash: the lease is left to expire
	waitFor(t, "b to hold every shard", func() bool { return len(b.sh.Owned()) == wire.Shards })
}
