// Package pgtest runs a real PostgreSQL server for tests (the Debian
// postgresql package; its binaries live under /usr/lib/postgresql/VER/bin):
// a throwaway cluster made by initdb in a temporary directory, started on
// a random loopback port with trust authentication, and killed when the
// test ends. PostgreSQL refuses to run as root, so a test running as root
// runs initdb and postgres as the user nobody, in a directory owned by it.
package pgtest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/outpost-edge/outpost/internal/freeport"
	"github.com/outpost-edge/outpost/internal/syncbuf"
)

// Server is a running PostgreSQL cluster.
type Server struct {
	t      fataler
	bin    string // directory of initdb and postgres
	dir    string // owns data/ and the socket
	port   int
	cred   *syscall.Credential // nil: run as the test's user
	cmd    *exec.Cmd
	exited chan struct{}
	logs   *syncbuf.Buffer
	dbs    *atomic.Int64 // databases made, for their names
}

// Bin finds the directory of PostgreSQL's server binaries: the newest
// /usr/lib/postgresql/*/bin, else the directory of initdb on PATH.
func Bin() (string, error) {
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	slices.SortFunc(dirs, func(a, b string) int { return version(b) - version(a) })
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, "postgres")); err == nil {
			return d, nil
		}
	}
	p, err := exec.LookPath("initdb")
	if err != nil {
		return "", fmt.Errorf("postgresql not installed (Debian postgresql): no /usr/lib/postgresql/*/bin and no initdb on PATH")
	}
	return filepath.Dir(p), nil
}

func version(binDir string) int {
	v, _ := strconv.Atoi(filepath.Base(filepath.Dir(binDir)))
	return v
}

// fataler is what a Server needs of a test: testing.TB, or panics for a
// cluster shared by a package's tests (Shared).
type fataler interface {
	Helper()
	Fatal(args ...any)
	Fatalf(format string, args ...any)
}

// Start makes a cluster and starts it for one test; the test fails when it
// cannot.
func Start(t testing.TB) *Server {
	t.Helper()
	s := start(t)
	t.Cleanup(s.remove)
	return s
}

var shared struct {
	sync.Mutex
	s   *Server
	err any
}

// Shared returns one cluster for all the tests of a package (each takes its
// own database with NewDatabase), started by the first caller; the
// package's TestMain calls StopShared after m.Run.
func Shared(t testing.TB) *Server {
	t.Helper()
	shared.Lock()
	defer shared.Unlock()
	if shared.s == nil && shared.err == nil {
		func() {
			defer func() { shared.err = recover() }()
			shared.s = start(panicker{})
		}()
	}
	if shared.err != nil {
		t.Fatalf("shared postgres: %v", shared.err)
	}
	return &Server{t: t, bin: shared.s.bin, dir: shared.s.dir, port: shared.s.port, logs: shared.s.logs, dbs: shared.s.dbs}
}

// StopShared kills the shared cluster, if one was started.
func StopShared() {
	shared.Lock()
	defer shared.Unlock()
	if shared.s != nil {
		shared.s.remove()
		shared.s = nil
	}
}

type panicker struct{}

func (panicker) Helper()                      {}
func (panicker) Fatal(args ...any)            { panic(fmt.Sprint(args...)) }
func (panicker) Fatalf(f string, args ...any) { panic(fmt.Sprintf(f, args...)) }

func (s *Server) remove() {
	s.Kill()
	_ = os.RemoveAll(s.dir)
}

func start(t fataler) *Server {
	bin, err := Bin()
	if err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "pgtest-")
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{t: t, bin: bin, dir: dir, port: freeport.Port(t, "127.0.0.1"), logs: &syncbuf.Buffer{}, dbs: new(atomic.Int64)}
	if os.Geteuid() == 0 {
		u, err := user.Lookup("nobody")
		if err != nil {
			t.Fatalf("postgres refuses root and there is no user nobody: %v", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		s.cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
		if err := os.Chown(dir, uid, gid); err != nil {
			t.Fatal(err)
		}
	}
	initdb := s.command("initdb", "-D", filepath.Join(dir, "data"), "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync", "--no-instructions")
	if out, err := initdb.CombinedOutput(); err != nil {
		_ = os.RemoveAll(dir)
		t.Fatalf("initdb: %v\n%s", err, out)
	}
	s.Restart()
	return s
}

func (s *Server) command(name string, args ...string) *exec.Cmd {
	cmd := exec.Command(filepath.Join(s.bin, name), args...)
	cmd.Dir = s.dir
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: s.cred, Pdeathsig: syscall.SIGKILL}
	return cmd
}

// Restart starts the server (again, on the same port and data) and waits
// until it accepts connections.
func (s *Server) Restart() {
	s.t.Helper()
	// fsync off: a test cluster is thrown away and the machine is shared; a
	// commit still reaches the kernel before it is acknowledged, so a kill
	// -9 of the server loses nothing committed (only a machine crash would).
	s.cmd = s.command("postgres", "-D", filepath.Join(s.dir, "data"), "-p", strconv.Itoa(s.port), "-k", s.dir,
		"-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "full_page_writes=off",
		"-c", "max_connections=200")
	s.cmd.Stdout, s.cmd.Stderr = s.logs, s.logs
	if err := s.cmd.Start(); err != nil {
		s.t.Fatalf("start postgres: %v", err)
	}
	s.exited = make(chan struct{})
	go func(c *exec.Cmd, done chan struct{}) { _ = c.Wait(); close(done) }(s.cmd, s.exited)
	deadline := time.Now().Add(60 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		conn, err := pgx.Connect(ctx, s.URL("postgres"))
		if err == nil {
			_ = conn.Close(ctx)
			cancel()
			return
		}
		cancel()
		select {
		case <-s.exited:
			s.t.Fatalf("postgres exited:\n%s", s.logs.String())
		default:
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("postgres did not accept connections: %v\n%s", err, s.logs.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// URL is the connection URL of database db.
func (s *Server) URL(db string) string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", s.port, db)
}

// NewDatabase creates an empty database and returns its URL.
func (s *Server) NewDatabase() string {
	s.t.Helper()
	name := fmt.Sprintf("test%d", s.dbs.Add(1))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, s.URL("postgres"))
	if err != nil {
		s.t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		s.t.Fatalf("create database: %v", err)
	}
	return s.URL(name)
}

// Logs is what the server printed.
func (s *Server) Logs() string { return s.logs.String() }

// Kill stops the server with SIGKILL and waits for it to exit (a cluster
// from Start; a Shared one is stopped by StopShared).
func (s *Server) Kill() {
	if s.cmd == nil || s.cmd.Process == nil {
		return
	}
	_ = s.cmd.Process.Kill()
	<-s.exited
	s.cmd = nil
}
