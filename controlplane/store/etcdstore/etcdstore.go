// Package etcdstore is a store.Store on etcd, for control planes that run as several replicas.
//
// Layout under a prefix P (default "edgefleet"):
//
//	P/<bucket>/<key>        a value
//	P/_seq/<bucket>         the bucket's NextSequence counter (decimal)
//	P/_rev/<bucket>         written (empty) by every transaction that changes the bucket
//
// Bucket names are non-empty, without '/', and do not start with '_' (reserved for the above and
// for leader election keys).
//
// Update is an optimistic, serializable transaction: reads run at one snapshot revision R (the
// first read's) and remember what they saw; the writes are sent as one etcd Txn whose
// conditions hold only if nothing that was read changed since: a key read by Get must still have
// the modification revision it had (0 when it was missing, so a creation or deletion counts),
// and a bucket walked by ForEach must have no write after R, which its P/_rev/<bucket> key
// tells in a single comparison however many keys the walk saw. When a condition fails the
// function runs again on fresh data, so it must not keep side effects of an earlier run.
package etcdstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/edgefleet/edgefleet/controlplane/store"
)

// DefaultPrefix is the key prefix when Config.Prefix is empty.
const DefaultPrefix = "edgefleet"

// MaxRequestBytes is etcd's default --max-request-bytes (1.5 MiB): the largest request, so the
// largest transaction, a member accepts.
const MaxRequestBytes = 1536 * 1024

// requestOverhead is room left for the request's framing, the bookkeeping keys and the
// conditions of a transaction, so that a check made here agrees with the server's.
const requestOverhead = 16 * 1024

// pointReadsPerBucket is how many keys of one bucket a transaction validates one by one; past
// that it compares the bucket's _rev key instead (one comparison), because etcd caps the
// comparisons of a transaction at --max-txn-ops (default 128).
const pointReadsPerBucket = 16

// maxAttempts bounds the retries of one Update that keeps losing to concurrent writers.
const maxAttempts = 1000

// Config of an etcd store.
type Config struct {
	// Endpoints are etcd client URLs (http://host:2379); give every member so the client fails
	// over by itself.
	Endpoints []string
	// Prefix is prepended to every key; replicas of one control plane share it, different
	// control planes on one etcd cluster use different ones that are not prefixes of each other.
	Prefix string
	// DialTimeout bounds the first contact with the cluster in Open (default 5 s).
	DialTimeout time.Duration
	// RequestTimeout bounds each request to etcd (default 10 s), so that an unreachable cluster
	// fails an operation instead of hanging it.
	RequestTimeout time.Duration
	// MaxRequestBytes bounds one value with its key (default MaxRequestBytes, etcd's default
	// request limit): metadata values stay small even on a cluster whose limit was raised.
	MaxRequestBytes int
}

// Store is a store.Store in etcd.
type Store struct {
	cli        *clientv3.Client
	own        bool
	prefix     string
	reqTimeout time.Duration
	maxRequest int
	closed     atomic.Bool
	conflicts  atomic.Int64
}

// Open connects to the cluster and checks that it answers.
func Open(ctx context.Context, cfg Config) (*Store, error) {
	if len(cfg.Endpoints) == 0 {
		return nil, errors.New("etcd store: no endpoints: pass --etcd-endpoints with the client URLs of the members")
	}
	dial := cfg.DialTimeout
	if dial <= 0 {
		dial = 5 * time.Second
	}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   cfg.Endpoints,
		DialTimeout: dial,
		// A rollout stage's transaction grows with the stage; the cluster's --max-request-bytes,
		// not the client's 2 MiB default, should be the limit.
		MaxCallSendMsgSize: 64 << 20,
		// Failures reach the caller as errors; the client's own retry chatter would only repeat them.
		Logger: zap.NewNop(),
	})
	if err != nil {
		return nil, fmt.Errorf("etcd store: connect to %s: %w", strings.Join(cfg.Endpoints, ","), err)
	}
	s, err := New(cli, cfg)
	if err != nil {
		cli.Close()
		return nil, err
	}
	s.own = true
	// The client connects lazily: one read proves the cluster is there and has a quorum.
	cctx, cancel := context.WithTimeout(ctx, dial)
	defer cancel()
	if _, err := cli.Get(cctx, s.prefix+"/_seq/"); err != nil {
		cli.Close()
		return nil, fmt.Errorf("etcd store: no answer from %s within %s (is a majority of the members up?): %w", strings.Join(cfg.Endpoints, ","), dial, err)
	}
	return s, nil
}

// New uses an existing client (not closed by Close).
func New(cli *clientv3.Client, cfg Config) (*Store, error) {
	p := cfg.Prefix
	if p == "" {
		p = DefaultPrefix
	}
	p = strings.TrimRight(p, "/")
	if p == "" {
		return nil, fmt.Errorf("etcd store: prefix %q leaves nothing once trailing slashes are removed", cfg.Prefix)
	}
	s := &Store{cli: cli, prefix: p, reqTimeout: cfg.RequestTimeout, maxRequest: cfg.MaxRequestBytes}
	if s.reqTimeout <= 0 {
		s.reqTimeout = 10 * time.Second
	}
	if s.maxRequest <= 0 {
		s.maxRequest = MaxRequestBytes
	}
	return s, nil
}

// Client is the etcd client, for other users of the same cluster (leader election).
func (s *Store) Client() *clientv3.Client { return s.cli }

// Prefix is the key prefix in use.
func (s *Store) Prefix() string { return s.prefix }

// MaxWritesPerTx is how many independent writes a caller should put in one transaction: well
// under etcd's default --max-txn-ops (128), leaving room for the bookkeeping keys.
func (s *Store) MaxWritesPerTx() int { return 100 }

// Conflicts counts Update attempts that lost to a concurrent writer and ran again.
func (s *Store) Conflicts() int64 { return s.conflicts.Load() }

// Close closes the client when Open created it.
func (s *Store) Close() error {
	if s.closed.Swap(true) {
		return nil
	}
	if s.own {
		return s.cli.Close()
	}
	return nil
}

// View runs fn once on a consistent snapshot. Reads are linearizable: the snapshot is at least as
// new as any Update that returned before View began. A walk that outlives etcd's compaction of
// its snapshot fails (callers of View collect results as they go, so it is not run again).
func (s *Store) View(ctx context.Context, fn func(store.Tx) error) error {
	if err := s.usable(ctx); err != nil {
		return err
	}
	return fn(&tx{s: s, ctx: ctx})
}

// Update runs fn and commits its writes atomically if nothing it read changed meanwhile, else
// runs it again.
func (s *Store) Update(ctx context.Context, fn func(store.Tx) error) error {
	for attempt := 0; attempt < maxAttempts; attempt++ {
		if err := s.usable(ctx); err != nil {
			return err
		}
		t := &tx{s: s, ctx: ctx, writable: true, reads: map[string]int64{}, ranged: map[string]bool{},
			writes: map[string]write{}, seq: map[string]uint64{}}
		err := fn(t)
		if t.compacted {
			s.conflicts.Add(1)
			continue
		}
		if err != nil {
			return err
		}
		ok, err := t.commit()
		if err != nil {
			return err
		}
		if ok {
			return nil
		}
		s.conflicts.Add(1)
		// Back off a little, randomly, so that writers that collided do not collide again.
		d := time.Duration(rand.Int64N(int64(time.Millisecond) << min(attempt, 6)))
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(d):
		}
	}
	return fmt.Errorf("etcd store: transaction gave up after %d attempts lost to concurrent writers", maxAttempts)
}

func (s *Store) usable(ctx context.Context) error {
	if s.closed.Load() {
		return store.ErrClosed
	}
	return ctx.Err()
}

func (s *Store) dataKey(bucket, key string) string { return s.prefix + "/" + bucket + "/" + key }
func (s *Store) seqKey(bucket string) string       { return s.prefix + "/_seq/" + bucket }
func (s *Store) revKey(bucket string) string       { return s.prefix + "/_rev/" + bucket }

func checkBucket(bucket string) error {
	if bucket == "" || strings.Contains(bucket, "/") || strings.HasPrefix(bucket, "_") {
		return fmt.Errorf("etcd store: bucket name %q: must be non-empty, without '/', not starting with '_'", bucket)
	}
	return nil
}

type write struct {
	val []byte
	del bool
}

type tx struct {
	s        *Store
	ctx      context.Context
	writable bool

	rev       int64 // snapshot revision; 0 until the first read
	compacted bool  // a read found its snapshot compacted: run again

	reads  map[string]int64  // data or sequence key -> mod revision seen (0: missing)
	ranged map[string]bool   // buckets walked by ForEach
	writes map[string]write  // data key -> pending write
	seq    map[string]uint64 // bucket -> next sequence value to store
}

// get reads at the snapshot, taking it on the first read.
func (t *tx) get(key string, opts ...clientv3.OpOption) (*clientv3.GetResponse, error) {
	ctx, cancel := context.WithTimeout(t.ctx, t.s.reqTimeout)
	defer cancel()
	if t.rev != 0 {
		opts = append(opts, clientv3.WithRev(t.rev))
	}
	resp, err := t.s.cli.Get(ctx, key, opts...)
	if err != nil {
		if errors.Is(err, rpctypes.ErrCompacted) {
			t.compacted = true
		}
		return nil, fmt.Errorf("etcd store: read %s: %w", key, err)
	}
	if t.rev == 0 {
		t.rev = resp.Header.Revision
	}
	return resp, nil
}

func (t *tx) Get(bucket, key string) ([]byte, error) {
	if err := checkBucket(bucket); err != nil {
		return nil, err
	}
	k := t.s.dataKey(bucket, key)
	if w, ok := t.writes[k]; ok {
		if w.del {
			return nil, store.ErrNotFound
		}
		return bytes.Clone(w.val), nil
	}
	resp, err := t.get(k)
	if err != nil {
		return nil, err
	}
	var modRev int64
	var val []byte
	if len(resp.Kvs) > 0 {
		modRev, val = resp.Kvs[0].ModRevision, resp.Kvs[0].Value
	}
	if t.writable {
		t.reads[k] = modRev
	}
	if len(resp.Kvs) == 0 {
		return nil, store.ErrNotFound
	}
	if val == nil {
		val = []byte{}
	}
	return val, nil // a fresh slice from the response, owned by the caller
}

func (t *tx) Put(bucket, key string, value []byte) error {
	if !t.writable {
		return fmt.Errorf("put %s/%s: read-only transaction", bucket, key)
	}
	if err := checkBucket(bucket); err != nil {
		return err
	}
	if key == "" {
		return fmt.Errorf("put %s/: empty key", bucket)
	}
	k := t.s.dataKey(bucket, key)
	if n := len(k) + len(value); n > t.s.maxRequest-requestOverhead {
		return fmt.Errorf("put %s/%s: %d bytes is more than etcd takes in one request (%d bytes, its --max-request-bytes): keep large data out of the metadata store", bucket, key, n, t.s.maxRequest)
	}
	v := bytes.Clone(value)
	if v == nil {
		v = []byte{}
	}
	t.writes[k] = write{val: v}
	return nil
}

func (t *tx) Delete(bucket, key string) error {
	if !t.writable {
		return fmt.Errorf("delete %s/%s: read-only transaction", bucket, key)
	}
	if err := checkBucket(bucket); err != nil {
		return err
	}
	t.writes[t.s.dataKey(bucket, key)] = write{del: true}
	return nil
}

// pageSize bounds one range read of a ForEach walk.
const pageSize = 500

func (t *tx) ForEach(bucket, prefix string, fn func(string, []byte) error) error {
	if err := checkBucket(bucket); err != nil {
		return err
	}
	base := t.s.prefix + "/" + bucket + "/"
	from := base + prefix
	end := clientv3.GetPrefixRangeEnd(from)
	if t.writable {
		t.ranged[bucket] = true
	}
	// This transaction's own writes in the range, merged in key order with what etcd holds.
	var pend []string
	for k := range t.writes {
		if strings.HasPrefix(k, from) {
			pend = append(pend, k)
		}
	}
	sort.Strings(pend)
	emit := func(k string, v []byte) error {
		if err := fn(strings.TrimPrefix(k, base), bytes.Clone(v)); err != nil {
			if errors.Is(err, store.ErrStop) {
				return store.ErrStop
			}
			return err
		}
		return nil
	}
	flushPending := func(upTo string, all bool) error {
		for len(pend) > 0 && (all || pend[0] < upTo) {
			k := pend[0]
			pend = pend[1:]
			if w := t.writes[k]; !w.del {
				if err := emit(k, w.val); err != nil {
					return err
				}
			}
		}
		return nil
	}
	walk := func() error {
		start := from
		for {
			resp, err := t.get(start, clientv3.WithRange(end), clientv3.WithLimit(pageSize))
			if err != nil {
				return err
			}
			for _, kv := range resp.Kvs {
				k := string(kv.Key)
				if err := flushPending(k, false); err != nil {
					return err
				}
				if w, ok := t.writes[k]; ok {
					pend = pend[1:] // pend[0] == k: the transaction's own version wins
					if w.del {
						continue
					}
					if err := emit(k, w.val); err != nil {
						return err
					}
					continue
				}
				if err := emit(k, kv.Value); err != nil {
					return err
				}
			}
			if !resp.More || len(resp.Kvs) == 0 {
				return flushPending("", true)
			}
			start = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
		}
	}
	if err := walk(); err != nil && !errors.Is(err, store.ErrStop) {
		return err
	}
	return nil
}

func (t *tx) NextSequence(bucket string) (uint64, error) {
	if !t.writable {
		return 0, fmt.Errorf("next sequence %s: read-only transaction", bucket)
	}
	if err := checkBucket(bucket); err != nil {
		return 0, err
	}
	cur, ok := t.seq[bucket]
	if !ok {
		k := t.s.seqKey(bucket)
		resp, err := t.get(k)
		if err != nil {
			return 0, err
		}
		t.reads[k] = 0
		if len(resp.Kvs) > 0 {
			t.reads[k] = resp.Kvs[0].ModRevision
			cur, err = strconv.ParseUint(string(resp.Kvs[0].Value), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("etcd store: sequence of %s at %s is %q, not a number: %w", bucket, k, resp.Kvs[0].Value, err)
			}
		}
	}
	cur++
	t.seq[bucket] = cur
	return cur, nil
}

// commit sends the writes with the conditions that make the transaction serializable; false
// means a condition failed (a concurrent writer won) and nothing was written.
func (t *tx) commit() (bool, error) {
	if len(t.writes) == 0 && len(t.seq) == 0 {
		return true, nil // read only: the snapshot was consistent, nothing to check
	}
	var cmps []clientv3.Cmp
	perBucket := map[string]int{}
	for k := range t.reads {
		if b, ok := t.dataBucket(k); ok {
			perBucket[b]++
		}
	}
	byRev := map[string]bool{} // buckets validated by their _rev key
	for b := range t.ranged {
		byRev[b] = true
	}
	for b, n := range perBucket {
		if n > pointReadsPerBucket {
			byRev[b] = true
		}
	}
	for b := range byRev {
		cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(t.s.revKey(b)), "<", t.rev+1))
	}
	for k, rev := range t.reads {
		if b, ok := t.dataBucket(k); ok && byRev[b] {
			continue
		}
		cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(k), "=", rev))
	}

	var ops []clientv3.Op
	size := 0
	touched := map[string]bool{}
	for k, w := range t.writes {
		if w.del {
			ops = append(ops, clientv3.OpDelete(k))
		} else {
			ops = append(ops, clientv3.OpPut(k, string(w.val)))
		}
		size += len(k) + len(w.val)
		if b, ok := t.dataBucket(k); ok {
			touched[b] = true
		}
	}
	for b := range touched {
		ops = append(ops, clientv3.OpPut(t.s.revKey(b), ""))
	}
	for b, n := range t.seq {
		ops = append(ops, clientv3.OpPut(t.s.seqKey(b), strconv.FormatUint(n, 10)))
	}
	ctx, cancel := context.WithTimeout(t.ctx, t.s.reqTimeout)
	defer cancel()
	resp, err := t.s.cli.Txn(ctx).If(cmps...).Then(ops...).Commit()
	switch {
	case errors.Is(err, rpctypes.ErrTooManyOps):
		return false, fmt.Errorf("etcd store: transaction of %d writes and %d conditions is more than etcd allows (its --max-txn-ops, default 128): raise --max-txn-ops on every member or write in smaller transactions: %w", len(ops), len(cmps), err)
	case errors.Is(err, rpctypes.ErrRequestTooLarge):
		return false, fmt.Errorf("etcd store: transaction of %d bytes in %d writes is larger than etcd's --max-request-bytes (default 1.5 MiB): raise it on every member or write in smaller transactions: %w", size, len(ops), err)
	case errors.Is(err, rpctypes.ErrNoSpace):
		return false, fmt.Errorf("etcd store: etcd is out of space (its --quota-backend-bytes; compact and defragment, see docs/OPERATIONS.md): %w", err)
	case err != nil:
		return false, fmt.Errorf("etcd store: commit %d writes: %w", len(ops), err)
	}
	return resp.Succeeded, nil
}

// dataBucket returns the bucket of a data key (false for bookkeeping keys).
func (t *tx) dataBucket(k string) (string, bool) {
	rest, ok := strings.CutPrefix(k, t.s.prefix+"/")
	if !ok || strings.HasPrefix(rest, "_") {
		return "", false
	}
	b, _, ok := strings.Cut(rest, "/")
	return b, ok
}
