package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
)

// Memory is a Store held in memory. Update buffers its writes and applies them only when the
// function returns nil, so it has the same all-or-nothing behaviour as bbolt.
type Memory struct {
	mu     sync.RWMutex
	data   map[string]map[string][]byte
	seq    map[string]uint64
	closed bool
}

// NewMemory returns an empty in-memory store.
func NewMemory() *Memory {
	return &Memory{data: map[string]map[string][]byte{}, seq: map[string]uint64{}}
}

func (m *Memory) View(ctx context.Context, fn func(Tx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.closed {
		return ErrClosed
	}
	return fn(&memTx{m: m})
}

func (m *Memory) Update(ctx context.Context, fn func(Tx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return ErrClosed
	}
	tx := &memTx{m: m, writable: true, pending: map[string]map[string][]byte{}, seq: map[string]uint64{}}
	if err := fn(tx); err != nil {
		return err
	}
	for b, kv := range tx.pending {
		if m.data[b] == nil {
			m.data[b] = map[string][]byte{}
		}
		for k, v := range kv {
			if v == nil {
				delete(m.data[b], k)
			} else {
				m.data[b][k] = v
			}
		}
	}
	for b, s := range tx.seq {
		m.seq[b] = s
	}
	return nil
}

func (m *Memory) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.closed = true
	return nil
}

type memTx struct {
	m        *Memory
	writable bool
	pending  map[string]map[string][]byte // nil value = deleted
	seq      map[string]uint64
}

func (t *memTx) Get(bucket, key string) ([]byte, error) {
	if kv, ok := t.pending[bucket]; ok {
		if v, ok := kv[key]; ok {
			if v == nil {
				return nil, ErrNotFound
			}
			return bytes.Clone(v), nil
		}
	}
	v, ok := t.m.data[bucket][key]
	if !ok {
		return nil, ErrNotFound
	}
	return bytes.Clone(v), nil
}

func (t *memTx) Put(bucket, key string, value []byte) error {
	if !t.writable {
		return fmt.Errorf("put %s/%s: read-only transaction", bucket, key)
	}
	if t.pending[bucket] == nil {
		t.pending[bucket] = map[string][]byte{}
	}
	v := bytes.Clone(value)
	if v == nil {
		v = []byte{}
	}
	t.pending[bucket][key] = v
	return nil
}

func (t *memTx) Delete(bucket, key string) error {
	if !t.writable {
		return fmt.Errorf("delete %s/%s: read-only transaction", bucket, key)
	}
	if t.pending[bucket] == nil {
		t.pending[bucket] = map[string][]byte{}
	}
	t.pending[bucket][key] = nil
	return nil
}

func (t *memTx) ForEach(bucket, prefix string, fn func(string, []byte) error) error {
	merged := map[string][]byte{}
	for k, v := range t.m.data[bucket] {
		if strings.HasPrefix(k, prefix) {
			merged[k] = v
		}
	}
	for k, v := range t.pending[bucket] {
		if !strings.HasPrefix(k, prefix) {
			continue
		}
		if v == nil {
			delete(merged, k)
		} else {
			merged[k] = v
		}
	}
	keys := make([]string, 0, len(merged))
	for k := range merged {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if err := fn(k, bytes.Clone(merged[k])); err != nil {
			if errors.Is(err, ErrStop) {
				return nil
			}
			return err
		}
	}
	return nil
}

func (t *memTx) NextSequence(bucket string) (uint64, error) {
	if !t.writable {
		return 0, fmt.Errorf("next sequence %s: read-only transaction", bucket)
	}
	cur, ok := t.seq[bucket]
	if !ok {
		cur = t.m.seq[bucket]
	}
	cur++
	t.seq[bucket] = cur
	return cur, nil
}
