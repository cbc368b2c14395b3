// Package store is the control plane's persistence boundary: a small transactional key-value
// interface with a bbolt implementation (the default, one machine), an in-memory one (tests,
// ephemeral runs) and an etcd one (store/etcdstore, several control-plane replicas). Callers see
// buckets of keys holding bytes; they never see bbolt or etcd. The same conformance suite
// (storetest) runs against every implementation.
package store

import (
	"context"
	"errors"
)

// ErrNotFound is returned by Get for a missing key.
var ErrNotFound = errors.New("not found")

// ErrClosed is returned after Close.
var ErrClosed = errors.New("store closed")

// Store runs transactions. Update's function runs as if it had exclusive write access and its
// writes are applied all or nothing: a returned error discards them. An optimistic backend
// (etcdstore) runs the function again when a concurrent writer changed what it read, so the
// function must not keep side effects of an earlier run.
type Store interface {
	View(ctx context.Context, fn func(Tx) error) error
	Update(ctx context.Context, fn func(Tx) error) error
	Close() error
}

// Tx is one transaction. Buckets are created on first Put. Keys iterate in byte order.
type Tx interface {
	Get(bucket, key string) ([]byte, error)
	Put(bucket, key string, value []byte) error
	Delete(bucket, key string) error
	// ForEach calls fn for every key with the prefix, in order; fn's error stops the walk.
	ForEach(bucket, prefix string, fn func(key string, value []byte) error) error
	// NextSequence returns a number larger than any it returned before for the bucket.
	NextSequence(bucket string) (uint64, error)
}

// ErrStop can be returned from a ForEach callback to end the walk early without an error.
var ErrStop = errors.New("stop iteration")

// Capped is implemented by stores that bound the writes of one transaction (etcd: its
// --max-txn-ops, default 128). Callers that write many independent keys at once (the registry's
// flush) split them into transactions of at most WritesPerTx.
type Capped interface {
	MaxWritesPerTx() int
}

// WritesPerTx is s's cap on the writes of one transaction, or 0 when it has none.
func WritesPerTx(s Store) int {
	if c, ok := s.(Capped); ok {
		return c.MaxWritesPerTx()
	}
	return 0
}

// MultiGetter is implemented by transactions that can read many keys of a bucket in one round
// trip (a networked store); callers that read a batch use it when the Tx has it, Get otherwise.
type MultiGetter interface {
	// GetMany returns the values of the keys that exist; missing keys are absent from the map.
	GetMany(bucket string, keys []string) (map[string][]byte, error)
}

// Seeker is implemented by transactions that can start a prefix walk at a key (a B-tree seek, an
// indexed range query) instead of at the prefix's first key: reading what was appended to a long
// sequence-keyed history then costs what was appended, not the history.
type Seeker interface {
	// ForEachFrom is ForEach over the keys with the prefix that sort at or after start.
	ForEachFrom(bucket, prefix, start string, fn func(key string, value []byte) error) error
}

// ForEachFrom calls fn for every key with the prefix that sorts at or after start, in order: by a
// seek where tx is a Seeker, by walking the prefix and skipping the earlier keys otherwise.
func ForEachFrom(tx Tx, bucket, prefix, start string, fn func(key string, value []byte) error) error {
	if s, ok := tx.(Seeker); ok {
		return s.ForEachFrom(bucket, prefix, start, fn)
	}
	return tx.ForEach(bucket, prefix, func(k string, v []byte) error {
		if k < start {
			return nil
		}
		return fn(k, v)
	})
}
