// Package store is the control plane's persistence boundary: a small transactional key-value
// interface with a bbolt implementation (the default, one machine) and an in-memory one (tests,
// ephemeral runs). Callers see buckets of keys holding bytes; they never see bbolt. The same
// conformance suite (storetest) runs against every implementation, so a distributed backend can be
// added later as configuration, not a rewrite.
package store

import (
	"context"
	"errors"
)

// ErrNotFound is returned by Get for a missing key.
var ErrNotFound = errors.New("not found")

// ErrClosed is returned after Close.
var ErrClosed = errors.New("store closed")

// Store runs transactions. Update's function runs with exclusive write access and its writes are
// applied all or nothing: a returned error discards them.
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

// MultiGetter is implemented by transactions that can read many keys of a bucket in one round
// trip (a networked store); callers that read a batch use it when the Tx has it, Get otherwise.
type MultiGetter interface {
	// GetMany returns the values of the keys that exist; missing keys are absent from the map.
	GetMany(bucket string, keys []string) (map[string][]byte, error)
}
