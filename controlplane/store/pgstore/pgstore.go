// Package pgstore is a store.Store on PostgreSQL, for data that outgrows one machine's bbolt file
// and that several control-plane replicas share: telemetry history above all, which does not
// belong in etcd (small requests, a small quota).
//
// All buckets live in one table keyed by (bucket, key) with bytea keys, so keys sort by their bytes
// as bbolt's do; NextSequence uses a second table. Update runs in a SERIALIZABLE transaction and is
// retried on serialization failures and deadlocks, so concurrent writers, in this process or in
// another replica, behave as if one ran after the other, as with bbolt's single writer. Writes are
// buffered in the transaction (reads see them) and sent at commit as one statement for all upserts
// and one for all deletes: an ingest batch of 512 messages costs a handful of round trips, not 512.
package pgstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sort"
	"strings"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/edgefleet/edgefleet/controlplane/store"
)

// Table names. A deployment that shares a database with other software can put them in their own
// schema with the DSN's search_path parameter (postgres://.../db?search_path=edgefleet).
const (
	tableKV  = "edgefleet_kv"
	tableSeq = "edgefleet_seq"
)

// maxAttempts bounds how often Update re-runs a transaction that lost a serialization race.
const maxAttempts = 50

// pageSize is how many rows ForEach reads per query: a walk over millions of telemetry rows
// holds one page in memory, not the table.
const pageSize = 1000

// Store is a store.Store on PostgreSQL.
type Store struct {
	pool   *pgxpool.Pool
	closed atomic.Bool
}

var _ store.Store = (*Store)(nil)

// Open connects to the database named by dsn (a postgres:// URL or key=value string; a password
// can come from PGPASSWORD or ~/.pgpass instead of the DSN) and creates the tables if needed.
func Open(ctx context.Context, dsn string) (*Store, error) {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		// pgx redacts the password in its parse errors.
		return nil, fmt.Errorf("PostgreSQL store: %w", err)
	}
	if !strings.Contains(dsn, "pool_max_conns") {
		// pgxpool's default is the CPU count (at least 4); API reads, drift views and ingest run
		// side by side, and each transaction holds a connection until it ends.
		cfg.MaxConns = max(cfg.MaxConns, 16)
	}
	where := fmt.Sprintf("%s:%d/%s", cfg.ConnConfig.Host, cfg.ConnConfig.Port, cfg.ConnConfig.Database)
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("PostgreSQL store at %s: %w", where, err)
	}
	s := &Store{pool: pool}
	if err := s.migrate(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("PostgreSQL store at %s: %w", where, err)
	}
	return s, nil
}

// migrate creates the tables. Replicas starting together take an advisory lock first: concurrent
// CREATE TABLE IF NOT EXISTS can still fail on the catalog's unique index.
func (s *Store) migrate(ctx context.Context) error {
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer tx.Rollback(ctx)
	stmts := []string{
		`SELECT pg_advisory_xact_lock(7365528129837110273)`,
		`CREATE TABLE IF NOT EXISTS ` + tableKV + ` (
			bucket text COLLATE "C" NOT NULL,
			key bytea NOT NULL,
			value bytea NOT NULL,
			PRIMARY KEY (bucket, key))`,
		`CREATE TABLE IF NOT EXISTS ` + tableSeq + ` (
			bucket text COLLATE "C" PRIMARY KEY,
			n bigint NOT NULL)`,
	}
	for _, q := range stmts {
		if _, err := tx.Exec(ctx, q); err != nil {
			return fmt.Errorf("create tables: %w", err)
		}
	}
	return tx.Commit(ctx)
}

// View runs fn on a consistent read-only snapshot.
func (s *Store) View(ctx context.Context, fn func(store.Tx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if s.closed.Load() {
		return store.ErrClosed
	}
	pt, err := s.pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return fmt.Errorf("begin read transaction: %w", err)
	}
	defer pt.Rollback(context.WithoutCancel(ctx))
	if err := fn(&tx{ctx: ctx, pt: pt}); err != nil {
		return err
	}
	return pt.Commit(ctx)
}

// Update runs fn in a serializable transaction and commits its writes all together, or none when
// fn fails. When the transaction loses a race with another writer it is rolled back and fn runs
// again on fresh data, so fn must not have effects outside the transaction that cannot repeat.
func (s *Store) Update(ctx context.Context, fn func(store.Tx) error) error {
	var err error
	for attempt := 0; attempt < maxAttempts; attempt++ {
		if err := ctx.Err(); err != nil {
			return err
		}
		if s.closed.Load() {
			return store.ErrClosed
		}
		var retry bool
		retry, err = s.update(ctx, fn)
		if !retry {
			return err
		}
		// Back off with jitter so that the writers that collided do not collide again.
		d := time.Duration(1+rand.IntN(1<<min(attempt, 6))) * time.Millisecond
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(d):
		}
	}
	return fmt.Errorf("transaction kept conflicting with other writers (%d attempts): %w", maxAttempts, err)
}

func (s *Store) update(ctx context.Context, fn func(store.Tx) error) (retry bool, err error) {
	pt, err := s.pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.Serializable})
	if err != nil {
		return retryable(err), fmt.Errorf("begin transaction: %w", err)
	}
	defer pt.Rollback(context.WithoutCancel(ctx))
	t := &tx{ctx: ctx, pt: pt, writable: true, pending: map[string]map[string][]byte{}}
	err = fn(t)
	if t.conflict || retryable(err) {
		// fn may have wrapped or swallowed the conflict; the transaction is aborted either way.
		return true, err
	}
	if err != nil {
		return false, err
	}
	if err := t.flush(); err != nil {
		return retryable(err), err
	}
	if err := pt.Commit(ctx); err != nil {
		return retryable(err), fmt.Errorf("commit: %w", err)
	}
	return false, nil
}

// retryable reports a serialization failure or a deadlock: the transaction did nothing wrong and
// succeeds when run again.
func retryable(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && (pe.Code == "40001" || pe.Code == "40P01")
}

// Close closes the connections; later calls return store.ErrClosed.
func (s *Store) Close() error {
	if s.closed.Swap(true) {
		return nil
	}
	s.pool.Close()
	return nil
}

type tx struct {
	ctx      context.Context
	pt       pgx.Tx
	writable bool
	pending  map[string]map[string][]byte // bucket -> key -> value; nil value = deleted
	conflict bool
}

func (t *tx) check(err error) error {
	if retryable(err) {
		t.conflict = true
	}
	return err
}

func (t *tx) Get(bucket, key string) ([]byte, error) {
	if v, ok := t.pending[bucket][key]; ok {
		if v == nil {
			return nil, store.ErrNotFound
		}
		return bytes.Clone(v), nil
	}
	var v []byte
	err := t.pt.QueryRow(t.ctx, `SELECT value FROM `+tableKV+` WHERE bucket = $1 AND key = $2`, bucket, []byte(key)).Scan(&v)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, store.ErrNotFound
	}
	if err != nil {
		return nil, t.check(fmt.Errorf("get %s/%s: %w", bucket, key, err))
	}
	if v == nil {
		v = []byte{}
	}
	return v, nil
}

func (t *tx) Put(bucket, key string, value []byte) error {
	if !t.writable {
		return fmt.Errorf("put %s/%s: read-only transaction", bucket, key)
	}
	v := bytes.Clone(value)
	if v == nil {
		v = []byte{}
	}
	t.set(bucket, key, v)
	return nil
}

func (t *tx) Delete(bucket, key string) error {
	if !t.writable {
		return fmt.Errorf("delete %s/%s: read-only transaction", bucket, key)
	}
	t.set(bucket, key, nil)
	return nil
}

func (t *tx) set(bucket, key string, v []byte) {
	kv := t.pending[bucket]
	if kv == nil {
		kv = map[string][]byte{}
		t.pending[bucket] = kv
	}
	kv[key] = v
}

// ForEach walks the committed rows page by page and merges the transaction's own writes in, so
// fn sees what a Get would.
func (t *tx) ForEach(bucket, prefix string, fn func(string, []byte) error) error {
	return t.ForEachFrom(bucket, prefix, prefix, fn)
}

// ForEachFrom is ForEach starting at start: the first page's query begins there (an index range
// scan), so the rows before it are never read.
func (t *tx) ForEachFrom(bucket, prefix, start string, fn func(string, []byte) error) error {
	start = max(prefix, start)
	var own []string // this transaction's keys under the prefix from start, sorted
	ownVal := map[string][]byte{}
	for k, v := range t.pending[bucket] {
		if strings.HasPrefix(k, prefix) && k >= start {
			own = append(own, k)
			ownVal[k] = v
		}
	}
	sort.Strings(own)
	emit := func(k string, v []byte) error {
		if v == nil {
			return nil
		}
		return fn(k, bytes.Clone(v))
	}
	lo, hi := []byte(start), prefixEnd(prefix)
	after := false
	for {
		keys, vals, err := t.page(bucket, lo, after, hi)
		if err != nil {
			return err
		}
		for i, k := range keys {
			for len(own) > 0 && own[0] <= k {
				o := own[0]
				own = own[1:]
				if o == k {
					vals[i] = nil // superseded by our own write, emitted here
				}
				if err := emit(o, ownVal[o]); err != nil {
					return stopped(err)
				}
			}
			if vals[i] == nil {
				continue
			}
			if err := fn(k, vals[i]); err != nil {
				return stopped(err)
			}
		}
		if len(keys) < pageSize {
			break
		}
		lo, after = []byte(keys[len(keys)-1]), true
	}
	for _, o := range own {
		if err := emit(o, ownVal[o]); err != nil {
			return stopped(err)
		}
	}
	return nil
}

func stopped(err error) error {
	if errors.Is(err, store.ErrStop) {
		return nil
	}
	return err
}

// page reads up to pageSize rows of bucket with lo <= key (lo < key when after) and key < hi
// (no upper bound when hi is nil), in byte order.
func (t *tx) page(bucket string, lo []byte, after bool, hi []byte) ([]string, [][]byte, error) {
	op := ">="
	if after {
		op = ">"
	}
	q := `SELECT key, value FROM ` + tableKV + ` WHERE bucket = $1 AND key ` + op + ` $2`
	args := []any{bucket, lo}
	if hi != nil {
		q += ` AND key < $3`
		args = append(args, hi)
	}
	q += fmt.Sprintf(` ORDER BY key LIMIT %d`, pageSize)
	rows, err := t.pt.Query(t.ctx, q, args...)
	if err != nil {
		return nil, nil, t.check(fmt.Errorf("list %s/%s*: %w", bucket, lo, err))
	}
	var keys []string
	var vals [][]byte
	for rows.Next() {
		var k, v []byte
		if err := rows.Scan(&k, &v); err != nil {
			rows.Close()
			return nil, nil, fmt.Errorf("list %s: %w", bucket, err)
		}
		if v == nil {
			v = []byte{}
		}
		keys = append(keys, string(k))
		vals = append(vals, v)
	}
	if err := rows.Err(); err != nil {
		return nil, nil, t.check(fmt.Errorf("list %s: %w", bucket, err))
	}
	return keys, vals, nil
}

// prefixEnd is the smallest key greater than every key with the prefix, or nil when there is none
// (an empty prefix, or one of 0xff bytes only).
func prefixEnd(prefix string) []byte {
	b := []byte(prefix)
	for i := len(b) - 1; i >= 0; i-- {
		if b[i] < 0xff {
			b[i]++
			return b[:i+1]
		}
	}
	return nil
}

// NextSequence increments the bucket's counter inside the transaction: a rolled-back
// transaction gives its number back, as bbolt's does.
func (t *tx) NextSequence(bucket string) (uint64, error) {
	if !t.writable {
		return 0, fmt.Errorf("next sequence %s: read-only transaction", bucket)
	}
	var n int64
	err := t.pt.QueryRow(t.ctx, `INSERT INTO `+tableSeq+` (bucket, n) VALUES ($1, 1)
		ON CONFLICT (bucket) DO UPDATE SET n = `+tableSeq+`.n + 1 RETURNING n`, bucket).Scan(&n)
	if err != nil {
		return 0, t.check(fmt.Errorf("next sequence %s: %w", bucket, err))
	}
	return uint64(n), nil
}

// flush sends the buffered writes: one multi-row upsert and one multi-row delete, pipelined.
func (t *tx) flush() error {
	var putB, delB []string
	var putK, putV, delK [][]byte
	for b, kv := range t.pending {
		for k, v := range kv {
			if v == nil {
				delB, delK = append(delB, b), append(delK, []byte(k))
			} else {
				putB, putK, putV = append(putB, b), append(putK, []byte(k)), append(putV, v)
			}
		}
	}
	if len(putB)+len(delB) == 0 {
		return nil
	}
	batch := &pgx.Batch{}
	if len(delB) > 0 {
		batch.Queue(`DELETE FROM `+tableKV+` t USING unnest($1::text[], $2::bytea[]) AS d(bucket, key)
			WHERE t.bucket = d.bucket AND t.key = d.key`, delB, delK)
	}
	if len(putB) > 0 {
		batch.Queue(`INSERT INTO `+tableKV+` (bucket, key, value)
			SELECT * FROM unnest($1::text[], $2::bytea[], $3::bytea[])
			ON CONFLICT (bucket, key) DO UPDATE SET value = EXCLUDED.value`, putB, putK, putV)
	}
	if err := t.pt.SendBatch(t.ctx, batch).Close(); err != nil {
		return fmt.Errorf("write %d keys, delete %d: %w", len(putB), len(delB), err)
	}
	return nil
}

var _ store.MultiGetter = (*tx)(nil)

// GetMany reads many keys in one query: ingest reads the accounting of every device in a batch.
func (t *tx) GetMany(bucket string, keys []string) (map[string][]byte, error) {
	out := make(map[string][]byte, len(keys))
	var ask [][]byte
	for _, k := range keys {
		if v, ok := t.pending[bucket][k]; ok {
			if v != nil {
				out[k] = bytes.Clone(v)
			}
			continue
		}
		ask = append(ask, []byte(k))
	}
	if len(ask) == 0 {
		return out, nil
	}
	rows, err := t.pt.Query(t.ctx, `SELECT key, value FROM `+tableKV+` WHERE bucket = $1 AND key = ANY($2::bytea[])`, bucket, ask)
	if err != nil {
		return nil, t.check(fmt.Errorf("get %d keys of %s: %w", len(ask), bucket, err))
	}
	defer rows.Close()
	for rows.Next() {
		var k, v []byte
		if err := rows.Scan(&k, &v); err != nil {
			return nil, fmt.Errorf("get keys of %s: %w", bucket, err)
		}
		if v == nil {
			v = []byte{}
		}
		out[string(k)] = v
	}
	if err := rows.Err(); err != nil {
		return nil, t.check(fmt.Errorf("get %d keys of %s: %w", len(ask), bucket, err))
	}
	return out, nil
}
