// Package leader decides which control-plane replica runs the singletons: the work that must
// happen once per fleet, not once per replica (the rollout controller, the desired-state
// re-issuer). A lone process is always the leader (Single); replicas that share an etcd cluster
// elect one with etcd's concurrency.Election (Etcd), whose lease ends the term of a replica that
// stops answering.
package leader

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
)

// Status is what a replica knows about the election.
type Status struct {
	// Replica is this replica's id.
	Replica string `json:"replica"`
	// Leader is the current leader's id ("" when there is none, or it could not be asked).
	Leader string `json:"leader"`
	// IsLeader says whether this replica runs the singletons now.
	IsLeader bool `json:"is_leader"`
	// Error says why Leader is unknown.
	Error string `json:"error,omitempty"`
}

// Single is the leadership of a process that runs alone: it always leads.
type Single struct{ ID string }

// Lead runs fn once, with ctx.
func (s Single) Lead(ctx context.Context, fn func(context.Context)) { fn(ctx) }

// Status reports this process as the leader.
func (s Single) Status(context.Context) Status {
	return Status{Replica: s.ID, Leader: s.ID, IsLeader: true}
}

// Etcd campaigns for leadership in an etcd election.
type Etcd struct {
	cli *clientv3.Client
	key string
	id  string
	ttl int
	log *slog.Logger

	mu      sync.Mutex
	leading bool
}

// NewEtcd returns a candidate named id in the election at key. ttl is how long a leader that
// stops answering keeps the term (etcd's lease TTL, whole seconds, at least 1): the longest gap
// before another replica takes over after a crash.
func NewEtcd(cli *clientv3.Client, key, id string, ttl time.Duration, log *slog.Logger) *Etcd {
	if log == nil {
		log = slog.Default()
	}
	secs := int(ttl / time.Second)
	if secs < 1 {
		secs = 1
	}
	return &Etcd{cli: cli, key: key, id: id, ttl: secs, log: log}
}

// Lead campaigns until elected, runs fn with a context that ends when the term ends (the lease
// is lost, or ctx ends), and campaigns again, until ctx ends. fn must return once its context
// ends: a replica that lost its lease must stop acting as the leader.
func (e *Etcd) Lead(ctx context.Context, fn func(context.Context)) {
	for ctx.Err() == nil {
		if err := e.term(ctx, fn); err != nil && ctx.Err() == nil {
			e.log.Warn("leader election failed; trying again", "replica", e.id, "err", err)
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
		}
	}
}

func (e *Etcd) term(ctx context.Context, fn func(context.Context)) error {
	// The session lives on the client's context, not ctx: Close must still be able to revoke the
	// lease after ctx ended, so that the next replica takes over at once, not after the TTL.
	sess, err := concurrency.NewSession(e.cli, concurrency.WithTTL(e.ttl))
	if err != nil {
		return fmt.Errorf("open etcd session: %w", err)
	}
	defer sess.Close()
	el := concurrency.NewElection(sess, e.key)
	if err := el.Campaign(ctx, e.id); err != nil {
		return fmt.Errorf("campaign: %w", err)
	}
	lctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-sess.Done(): // keep-alives failed for a whole TTL: another replica may lead now
			cancel()
		case <-lctx.Done():
		}
	}()
	e.setLeading(true)
	e.log.Info("leading: running the singletons", "replica", e.id)
	fn(lctx)
	e.setLeading(false)
	if ctx.Err() == nil {
		e.log.Warn("leadership lost; singletons stopped", "replica", e.id)
	}
	rctx, rcancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer rcancel()
	el.Resign(rctx)
	return nil
}

func (e *Etcd) setLeading(v bool) {
	e.mu.Lock()
	e.leading = v
	e.mu.Unlock()
}

// Status asks etcd who leads: the candidate whose key was created first.
func (e *Etcd) Status(ctx context.Context) Status {
	e.mu.Lock()
	st := Status{Replica: e.id, IsLeader: e.leading}
	e.mu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	resp, err := e.cli.Get(ctx, e.key+"/", clientv3.WithFirstCreate()...)
	switch {
	case err != nil:
		st.Error = "ask etcd for the leader: " + err.Error()
	case len(resp.Kvs) > 0:
		st.Leader = string(resp.Kvs[0].Value)
	}
	return st
}
