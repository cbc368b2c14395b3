// Package shards assigns the telemetry shards (wire.Shards of them, by device id) to control-plane
// replicas. A lone process owns them all (All). Replicas on etcd (Etcd) each announce themselves
// with a key on their session lease; every replica computes the same split of the shards over the
// live members (shard k goes to the (k mod n)-th member in id order) and claims its shards by
// creating `<prefix>/_shards/<k>` on its lease, only when no one holds it. A shard thus has at
// most one owner at any moment; a replica releases the shards the split gives to another, and
// when a replica dies its lease expires, its keys vanish and the survivors claim them.
package shards

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"

	"github.com/edgefleet/edgefleet/internal/wire"
)

// All owns every shard: the assignment of a process that runs alone.
type All struct{}

// Owned returns every shard.
func (All) Owned() []int {
	out := make([]int, wire.Shards)
	for i := range out {
		out[i] = i
	}
	return out
}

// Etcd is one replica's shard ownership through etcd leases.
type Etcd struct {
	cli    *clientv3.Client
	prefix string
	id     string
	ttl    int
	log    *slog.Logger

	mu      sync.Mutex
	owned   []int
	changed chan struct{}
}

// NewEtcd returns the ownership of replica id under prefix (the store's key prefix). ttl is how
// long the shards of a replica that stopped answering stay with it.
func NewEtcd(cli *clientv3.Client, prefix, id string, ttl time.Duration, log *slog.Logger) *Etcd {
	if log == nil {
		log = slog.Default()
	}
	return &Etcd{cli: cli, prefix: prefix, id: id, ttl: max(1, int(ttl/time.Second)), log: log, changed: make(chan struct{}, 1)}
}

// Owned returns the shards this replica holds now, in order.
func (e *Etcd) Owned() []int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Clone(e.owned)
}

// Changed is signalled (without blocking, so changes may merge) whenever Owned changes.
func (e *Etcd) Changed() <-chan struct{} { return e.changed }

func (e *Etcd) setOwned(s []int) {
	e.mu.Lock()
	same := slices.Equal(s, e.owned)
	e.owned = s
	e.mu.Unlock()
	if !same {
		e.log.Info("telemetry shards owned", "replica", e.id, "count", len(s))
		select {
		case e.changed <- struct{}{}:
		default:
		}
	}
}

func (e *Etcd) membersKey() string { return e.prefix + "/_members/" }
func (e *Etcd) shardsKey() string  { return e.prefix + "/_shards/" }

// Run takes part until ctx ends; then it gives its shards back at once.
func (e *Etcd) Run(ctx context.Context) {
	for ctx.Err() == nil {
		if err := e.session(ctx); err != nil && ctx.Err() == nil {
			e.log.Warn("telemetry shard assignment: trying again", "replica", e.id, "err", err)
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
		}
	}
}

func (e *Etcd) session(ctx context.Context) error {
	// On the client's context, so Close can still revoke the lease (and free the shards at once)
	// after ctx ended.
	sess, err := concurrency.NewSession(e.cli, concurrency.WithTTL(e.ttl))
	if err != nil {
		return fmt.Errorf("open etcd session: %w", err)
	}
	defer func() {
		e.setOwned(nil)
		sess.Close()
	}()
	if _, err := e.cli.Put(ctx, e.membersKey()+e.id, e.id, clientv3.WithLease(sess.Lease())); err != nil {
		return fmt.Errorf("announce replica: %w", err)
	}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	members := e.cli.Watch(wctx, e.membersKey(), clientv3.WithPrefix())
	claims := e.cli.Watch(wctx, e.shardsKey(), clientv3.WithPrefix())
	// A periodic pass as well: a claim that failed (someone still held the shard) is retried even
	// if the watch event that freed it was merged with others.
	tick := time.NewTicker(2 * time.Second)
	defer tick.Stop()
	for {
		if err := e.reconcile(ctx, sess.Lease()); err != nil && ctx.Err() == nil {
			e.log.Warn("telemetry shard assignment pass failed", "replica", e.id, "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-sess.Done():
			return fmt.Errorf("lease lost")
		case r, ok := <-members:
			if !ok || r.Err() != nil {
				return fmt.Errorf("watch members: %v", r.Err())
			}
		case r, ok := <-claims:
			if !ok || r.Err() != nil {
				return fmt.Errorf("watch shards: %v", r.Err())
			}
		case <-tick.C:
		}
	}
}

// Split returns the shards the split gives to id among members.
func Split(members []string, id string) []int {
	ms := slices.Clone(members)
	sort.Strings(ms)
	i := slices.Index(ms, id)
	if i < 0 {
		return nil
	}
	var out []int
	for k := 0; k < wire.Shards; k++ {
		if k%len(ms) == i {
			out = append(out, k)
		}
	}
	return out
}

// reconcile releases the shards this replica holds but should not, claims the free ones it
// should hold, and publishes what it holds afterwards.
func (e *Etcd) reconcile(ctx context.Context, lease clientv3.LeaseID) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	resp, err := e.cli.Get(ctx, e.membersKey(), clientv3.WithPrefix())
	if err != nil {
		return fmt.Errorf("list replicas: %w", err)
	}
	var members []string
	for _, kv := range resp.Kvs {
		members = append(members, strings.TrimPrefix(string(kv.Key), e.membersKey()))
	}
	want := map[int]bool{}
	for _, k := range Split(members, e.id) {
		want[k] = true
	}
	held, err := e.holders(ctx)
	if err != nil {
		return err
	}
	for k, owner := range held {
		if owner == e.id && !want[k] {
			key := e.shardsKey() + strconv.Itoa(k)
			if _, err := e.cli.Txn(ctx).If(clientv3.Compare(clientv3.Value(key), "=", e.id), clientv3.Compare(clientv3.LeaseValue(key), "=", lease)).
				Then(clientv3.OpDelete(key)).Commit(); err != nil {
				return fmt.Errorf("release shard %d: %w", k, err)
			}
		}
	}
	for k := range want {
		if _, ok := held[k]; ok {
			continue
		}
		key := e.shardsKey() + strconv.Itoa(k)
		if _, err := e.cli.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
			Then(clientv3.OpPut(key, e.id, clientv3.WithLease(lease))).Commit(); err != nil {
			return fmt.Errorf("claim shard %d: %w", k, err)
		}
	}
	held, err = e.holders(ctx)
	if err != nil {
		return err
	}
	var owned []int
	for k, owner := range held {
		if owner == e.id {
			owned = append(owned, k)
		}
	}
	sort.Ints(owned)
	e.setOwned(owned)
	return nil
}

// holders maps each held shard to its owner.
func (e *Etcd) holders(ctx context.Context) (map[int]string, error) {
	resp, err := e.cli.Get(ctx, e.shardsKey(), clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("list shard owners: %w", err)
	}
	out := map[int]string{}
	for _, kv := range resp.Kvs {
		k, err := strconv.Atoi(strings.TrimPrefix(string(kv.Key), e.shardsKey()))
		if err != nil || k < 0 || k >= wire.Shards {
			continue
		}
		out[k] = string(kv.Value)
	}
	return out, nil
}
