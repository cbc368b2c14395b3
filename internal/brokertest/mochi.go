package brokertest

import (
	"bytes"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"strconv"
	"sync"
	"testing"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/hooks/storage/bolt"
	"github.com/mochi-mqtt/server/v2/listeners"
)

// MochiOptions configures StartMochi.
type MochiOptions struct {
	// Persistence adds mochi's bolt storage hook (a bbolt file in
	// t.TempDir()), so sessions, queued and retained messages survive
	// Restart. Without it mochi keeps everything in memory only.
	Persistence bool
	// Setup, when set, is called on every (re)start before the server
	// serves, e.g. to add ACL hooks. Without it an allow-all auth hook is
	// added (mochi refuses every client when no auth hook is present).
	Setup func(*mqtt.Server) error
}

// Mochi is an in-process mochi-mqtt server on a loopback port.
type Mochi struct {
	opts   MochiOptions
	port   int
	dbPath string
	log    *syncBuffer

	mu  sync.Mutex
	srv *mqtt.Server
}

// StartMochi starts a mochi-mqtt server on a free loopback port; t.Cleanup
// closes it.
func StartMochi(t testing.TB, opts MochiOptions) *Mochi {
	t.Helper()
	m := &Mochi{opts: opts, log: &syncBuffer{}}
	if opts.Persistence {
		m.dbPath = filepath.Join(t.TempDir(), "mochi.db")
	}
	// Binding ourselves (instead of handing mochi an address) gives the
	// port without a pick-then-bind race.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("brokertest: %v", err)
	}
	m.port = l.Addr().(*net.TCPAddr).Port
	t.Cleanup(func() {
		m.Stop()
		if t.Failed() {
			t.Logf("mochi log:\n%s", m.Log())
		}
	})
	if err := m.start(l); err != nil {
		l.Close()
		t.Fatalf("brokertest: starting mochi: %v", err)
	}
	return m
}

func (m *Mochi) start(l net.Listener) error {
	srv := mqtt.New(&mqtt.Options{
		// Warnings (e.g. "client store quota reached") are the lines worth
		// keeping; info-level connection chatter would drown them.
		Logger: slog.New(slog.NewTextHandler(m.log, &slog.HandlerOptions{Level: slog.LevelWarn})),
	})
	if m.opts.Setup != nil {
		if err := m.opts.Setup(srv); err != nil {
			return err
		}
	} else if err := srv.AddHook(new(auth.AllowHook), nil); err != nil {
		return err
	}
	if m.opts.Persistence {
		if err := srv.AddHook(new(bolt.Hook), &bolt.Options{Path: m.dbPath}); err != nil {
			return err
		}
	}
	if err := srv.AddListener(listeners.NewNet("t1", l)); err != nil {
		return err
	}
	if err := srv.Serve(); err != nil {
		_ = srv.Close()
		return err
	}
	m.mu.Lock()
	m.srv = srv
	m.mu.Unlock()
	return nil
}

// Name names the broker, its version and storage in results tables.
func (m *Mochi) Name() string {
	if m.opts.Persistence {
		return "mochi " + mqtt.Version + " + bolt"
	}
	return "mochi " + mqtt.Version
}

// URL is the broker's address for paho: mqtt://127.0.0.1:PORT.
func (m *Mochi) URL() string { return "mqtt://" + m.Addr() }

// Addr is host:port of the listener.
func (m *Mochi) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(m.port)) }

// Server is the running server, e.g. for inline publishing or hooks; it
// changes at Restart.
func (m *Mochi) Server() *mqtt.Server {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.srv
}

// Persistent reports whether state survives Restart (the bolt hook is on).
func (m *Mochi) Persistent() bool { return m.opts.Persistence }

// Log returns mochi's warnings and errors so far.
func (m *Mochi) Log() string { return m.log.String() }

// Stop closes the server and its clients; stopping twice does nothing.
func (m *Mochi) Stop() {
	m.mu.Lock()
	srv := m.srv
	m.srv = nil
	m.mu.Unlock()
	if srv != nil {
		_ = srv.Close()
	}
}

// Restart closes the server and starts a new one on the same port with the
// same storage file, which is all a restarted process would have.
func (m *Mochi) Restart() error {
	m.Stop()
	l, err := net.Listen("tcp", m.Addr())
	if err != nil {
		return fmt.Errorf("rebinding %s: %w", m.Addr(), err)
	}
	if err := m.start(l); err != nil {
		l.Close()
		return fmt.Errorf("restarting mochi: %w", err)
	}
	return nil
}

// syncBuffer is a bytes.Buffer safe for the server's goroutines to log into
// while a test reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
