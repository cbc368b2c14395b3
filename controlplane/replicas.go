package controlplane

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/edgefleet/edgefleet/controlplane/api"
	"github.com/edgefleet/edgefleet/controlplane/leader"
	"github.com/edgefleet/edgefleet/controlplane/shards"
	"github.com/edgefleet/edgefleet/controlplane/store"
	"github.com/edgefleet/edgefleet/controlplane/store/etcdstore"
	"github.com/edgefleet/edgefleet/internal/wire"
)

// Store backends (Config.Store, --store).
const (
	StoreBolt = "bbolt"
	StoreEtcd = "etcd"
)

// EtcdConfig selects the etcd cluster that holds the metadata of several replicas.
type EtcdConfig struct {
	// Endpoints are the client URLs of the members.
	Endpoints []string
	// Prefix is the key prefix (default "edgefleet"); the replicas of one control plane share it.
	Prefix string
	// LeaderTTL is how long a crashed leader keeps its term (default 10 s).
	LeaderTTL time.Duration
}

// Leadership decides whether this replica runs the singletons: the work that must run once per
// fleet (the rollout controller, the re-issuer of expiring desired states).
type Leadership interface {
	// Lead runs fn whenever this replica leads, with a context that ends when it stops leading;
	// it returns when ctx ends.
	Lead(ctx context.Context, fn func(context.Context))
	Status(ctx context.Context) leader.Status
}

// stores are what openStore opened.
type stores struct {
	meta store.Store
	// telemetry holds telemetry history: the metadata store with bbolt; with etcd, which is built
	// for small metadata (1.5 MiB requests, 2 GiB default quota), a bbolt file of the replica's
	// own (DATA/telemetry.db). Every replica receives all telemetry on its own subscription, so
	// each one's history is complete for the time it ran; a store that replicas share belongs
	// here when one exists.
	telemetry store.Store
	lead      Leadership
	// shards is this replica's share of the telemetry shards; run, when set, keeps it current.
	shards Shards
	run    func(context.Context)
}

// Shards tells which telemetry shards this replica holds.
type Shards interface {
	Owned() []int
}

func (s stores) Close() error {
	err := s.meta.Close()
	if s.telemetry != s.meta {
		err = errors.Join(err, s.telemetry.Close())
	}
	return err
}

// openStore opens the configured metadata store and the leadership that goes with it: a bbolt
// file belongs to one process, which therefore always leads; an etcd cluster is shared, and its
// replicas elect a leader.
func openStore(ctx context.Context, cfg Config, id string, log *slog.Logger) (stores, error) {
	switch cfg.Store {
	case "", StoreBolt:
		st, err := store.OpenBolt(filepath.Join(cfg.DataDir, "controlplane.db"))
		if err != nil {
			return stores{}, err
		}
		return stores{meta: st, telemetry: st, lead: leader.Single{ID: id}, shards: shards.All{}}, nil
	case StoreEtcd:
		st, err := etcdstore.Open(ctx, etcdstore.Config{Endpoints: cfg.Etcd.Endpoints, Prefix: cfg.Etcd.Prefix})
		if err != nil {
			return stores{}, err
		}
		tel, err := store.OpenBolt(filepath.Join(cfg.DataDir, "telemetry.db"))
		if err != nil {
			st.Close()
			return stores{}, err
		}
		ttl := cfg.Etcd.LeaderTTL
		if ttl <= 0 {
			ttl = 10 * time.Second
		}
		lead := leader.NewEtcd(st.Client(), st.Prefix()+"/_leader/controller", id, ttl, log)
		sh := shards.NewEtcd(st.Client(), st.Prefix(), id, ttl, log)
		return stores{meta: st, telemetry: tel, lead: lead, shards: sh, run: sh.Run}, nil
	default:
		return stores{}, fmt.Errorf("unknown store %q: use --store bbolt (one machine) or --store etcd (several replicas)", cfg.Store)
	}
}

// replicaID is Config.ReplicaID, or the host name with a random suffix, so that two replicas on
// one host differ.
func replicaID(cfg Config) string {
	if cfg.ReplicaID != "" {
		return cfg.ReplicaID
	}
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "controlplane"
	}
	b := make([]byte, 3)
	rand.Read(b)
	return host + "-" + hex.EncodeToString(b)
}

// clusterAPI serves GET /api/v1/cluster.
type clusterAPI struct {
	lead   Leadership
	shards Shards
	store  string
}

func (c clusterAPI) Cluster(ctx context.Context) api.ClusterStatus {
	st := c.lead.Status(ctx)
	store := c.store
	if store == "" {
		store = StoreBolt
	}
	owned := c.shards.Owned()
	if owned == nil {
		owned = []int{}
	}
	return api.ClusterStatus{Replica: st.Replica, Leader: st.Leader, IsLeader: st.IsLeader, Store: store, Shards: owned, Error: st.Error}
}

// shardSet answers "does this replica ingest this device's telemetry?". Replicas that share a
// telemetry store (PostgreSQL) split ingest by the shards they hold; a message of a shard another
// replica holds is left to it (and a message that arrives while its shard changes hands is re-sent
// by the device, whose spool keeps it until an acknowledgement covers it). Replicas with their own
// history, and a control plane alone, ingest everything.
type shardSet struct {
	filter bool
	held   atomic.Pointer[[wire.Shards]bool]
}

func newShardSet(ctx context.Context, s Shards, filter bool) *shardSet {
	set := &shardSet{filter: filter}
	if !filter {
		return set
	}
	refresh := func() {
		var h [wire.Shards]bool
		for _, k := range s.Owned() {
			if k >= 0 && k < wire.Shards {
				h[k] = true
			}
		}
		set.held.Store(&h)
	}
	refresh()
	go func() {
		t := time.NewTicker(250 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				refresh()
			}
		}
	}()
	return set
}

// has reports whether this replica ingests device's telemetry.
func (s *shardSet) has(device string) bool {
	if !s.filter {
		return true
	}
	return s.held.Load()[wire.Shard(device)]
}
