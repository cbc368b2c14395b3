// Package pgtest runs a real PostgreSQL server for tests: Debian's `postgresql` package's initdb and
// postgres on a free loopback port, in a temporary folder, stopped when the test ends. PostgreSQL
// refuses to run as root, so under root the server runs as the `postgres` user the package creates.
// Only tests import it.
package pgtest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// Install is the command that provides the binaries.
const Install = "apt-get install -y postgresql"

// Options adjust Start.
type Options struct {
	// Durable keeps fsync and synchronous commit on, as in production (benchmarks); by default
	// they are off so that creating a database per subtest is quick.
	Durable bool
}

// Server is a running PostgreSQL.
type Server struct {
	// DSN connects to the "postgres" database as the superuser "edgefleet" (trust authentication
	// on loopback).
	DSN  string
	Addr string
	dir  string
	n    atomic.Int64
}

// BinDir returns the folder of initdb and postgres: `pg_config --bindir` when on PATH, else the
// newest /usr/lib/postgresql/N/bin (Debian keeps them off PATH), or "".
func BinDir() string {
	if out, err := exec.Command("pg_config", "--bindir").Output(); err == nil {
		d := strings.TrimSpace(string(out))
		if isExec(filepath.Join(d, "initdb")) && isExec(filepath.Join(d, "postgres")) {
			return d
		}
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool { return version(dirs[i]) > version(dirs[j]) })
	for _, d := range dirs {
		if isExec(filepath.Join(d, "initdb")) && isExec(filepath.Join(d, "postgres")) {
			return d
		}
	}
	return ""
}

func version(binDir string) int {
	n, _ := strconv.Atoi(filepath.Base(filepath.Dir(binDir)))
	return n
}

func isExec(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0
}

// Require returns the binaries' folder. Without one it fails the test in CI (CI=true), where a
// silent skip would hide that the PostgreSQL tests never ran, and skips loudly elsewhere.
func Require(t testing.TB) string {
	t.Helper()
	if d := BinDir(); d != "" {
		return d
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("PostgreSQL is required in CI: %s", Install)
	}
	t.Skipf("\n**************************************************************\n"+
		"SKIPPING: PostgreSQL not found (pg_config, /usr/lib/postgresql/*/bin).\n"+
		"Tests against PostgreSQL did NOT run. Install it with:\n"+
		"    %s\n"+
		"**************************************************************", Install)
	return ""
}

// Start runs initdb and postgres in a new temporary folder and waits until the server accepts
// connections. The server is stopped (fast shutdown) and its folder removed by t.Cleanup; if the
// test failed, the server's log is written to the test log.
func Start(t testing.TB, o Options) *Server {
	t.Helper()
	bin := Require(t)
	cred, err := credential()
	if err != nil {
		t.Fatal(err)
	}
	// Not t.TempDir(): it is private to the test's user, and the server may run as another.
	dir, err := os.MkdirTemp("", "pgtest-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if cred != nil {
		if err := os.Chown(dir, int(cred.Uid), int(cred.Gid)); err != nil {
			t.Fatalf("hand %s to the postgres user: %v", dir, err)
		}
	}
	data := filepath.Join(dir, "data")
	initdb := command(filepath.Join(bin, "initdb"), dir, cred, "-D", data, "-U", "edgefleet", "--auth=trust",
		"-E", "UTF8", "--locale=C", "--no-sync")
	if out, err := initdb.CombinedOutput(); err != nil {
		t.Fatalf("initdb: %v\n%s", err, out)
	}
	logPath := filepath.Join(dir, "postgres.log")
	var s *Server
	for attempt := 0; ; attempt++ {
		s, err = start(t, bin, dir, data, logPath, cred, o)
		if err == nil {
			break
		}
		if attempt == 4 || !errors.Is(err, errPortInUse) {
			b, _ := os.ReadFile(logPath)
			t.Fatalf("start postgres: %v\n%s", err, b)
		}
	}
	return s
}

var errPortInUse = errors.New("port taken before postgres bound it")

func start(t testing.TB, bin, dir, data, logPath string, cred *syscall.Credential, o Options) (*Server, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	args := []string{"-D", data, "-p", strconv.Itoa(port), "-c", "listen_addresses=127.0.0.1",
		"-c", "unix_socket_directories=" + dir, "-c", "max_connections=100", "-c", "logging_collector=off",
		// Containers often have a small /dev/shm; files in the data folder work everywhere.
		"-c", "dynamic_shared_memory_type=mmap"}
	if !o.Durable {
		args = append(args, "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
			"-c", "shared_buffers=32MB")
	}
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return nil, err
	}
	cmd := command(filepath.Join(bin, "postgres"), dir, cred, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("run postgres: %w", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait(); logf.Close() }()
	s := &Server{Addr: fmt.Sprintf("127.0.0.1:%d", port), dir: dir}
	s.DSN = fmt.Sprintf("postgres://edgefleet@%s/postgres?sslmode=disable", s.Addr)
	deadline := time.Now().Add(60 * time.Second)
	for {
		select {
		case err := <-exited:
			b, _ := os.ReadFile(logPath)
			if strings.Contains(string(b), "Address already in use") {
				return nil, errPortInUse
			}
			return nil, fmt.Errorf("postgres exited: %v", err)
		case <-time.After(100 * time.Millisecond):
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		c, err := pgx.Connect(ctx, s.DSN)
		if err == nil {
			c.Close(ctx)
			cancel()
			break
		}
		cancel()
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			<-exited
			return nil, fmt.Errorf("postgres did not accept connections within 60s: %v", err)
		}
	}
	t.Cleanup(func() {
		// SIGINT is PostgreSQL's fast shutdown: roll back open transactions, close, exit.
		cmd.Process.Signal(syscall.SIGINT)
		select {
		case <-exited:
		case <-time.After(30 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			t.Logf("postgres log:\n%s", b)
		}
	})
	return s, nil
}

// credential returns who the server must run as: nil (the current user) unless that is root,
// which PostgreSQL refuses; then the `postgres` user that Debian's package creates.
func credential() (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("PostgreSQL will not run as root and there is no postgres user to run it as (%v): %s", err, Install)
	}
	uid, _ := strconv.ParseUint(u.Uid, 10, 32)
	gid, _ := strconv.ParseUint(u.Gid, 10, 32)
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{}}, nil
}

func command(path, dir string, cred *syscall.Credential, args ...string) *exec.Cmd {
	cmd := exec.Command(path, args...)
	cmd.Dir = dir
	cmd.Env = []string{"PATH=/usr/bin:/bin", "LC_ALL=C", "HOME=" + dir}
	cmd.SysProcAttr = procAttr(cred)
	return cmd
}

// NewDatabase creates an empty database and returns its DSN, so that each subtest starts clean
// on one server.
func (s *Server) NewDatabase(t testing.TB) string {
	t.Helper()
	name := fmt.Sprintf("t%d", s.n.Add(1))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, s.DSN)
	if err != nil {
		t.Fatalf("connect to test PostgreSQL: %v", err)
	}
	defer c.Close(ctx)
	if _, err := c.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatalf("create database %s: %v", name, err)
	}
	return strings.Replace(s.DSN, "/postgres?", "/"+name+"?", 1)
}
