// Package etcdtest runs a real etcd server (the Debian etcd-server
// package's etcd) for tests: one member on random loopback ports, its data
// in a temporary directory, stopped when the test ends. It can be killed
// and started again on the same ports and data.
package etcdtest

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/internal/freeport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// Server is a running etcd.
type Server struct {
	t       testing.TB
	dir     string
	client  string // client URL
	peer    string
	cmd     *exec.Cmd
	exited  chan struct{}
	logFile *os.File
}

// Start starts etcd and waits until it answers; the test fails when it
// cannot.
func Start(t testing.TB) *Server {
	t.Helper()
	if _, err := exec.LookPath("etcd"); err != nil {
		t.Fatalf("etcd not installed (Debian etcd-server): %v", err)
	}
	s := &Server{t: t, dir: t.TempDir(), client: "http://" + freeport.Addr(t), peer: "http://" + freeport.Addr(t)}
	s.Restart()
	t.Cleanup(s.Kill)
	return s
}

// Endpoint is the client URL.
func (s *Server) Endpoint() string { return s.client }

// Restart starts the server (again, on the same ports and data) and waits
// until it answers.
func (s *Server) Restart() {
	s.t.Helper()
	f, err := os.OpenFile(filepath.Join(s.dir, "etcd.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		s.t.Fatal(err)
	}
	s.logFile = f
	s.cmd = exec.Command("etcd", "--name", "default", "--data-dir", filepath.Join(s.dir, "data"),
		"--listen-client-urls", s.client, "--advertise-client-urls", s.client,
		"--listen-peer-urls", s.peer, "--initial-advertise-peer-urls", s.peer,
		"--initial-cluster", "default="+s.peer, "--log-level", "warn")
	s.cmd.Stdout, s.cmd.Stderr = f, f
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := s.cmd.Start(); err != nil {
		s.t.Fatalf("start etcd: %v", err)
	}
	s.exited = make(chan struct{})
	go func(c *exec.Cmd, done chan struct{}) { _ = c.Wait(); close(done) }(s.cmd, s.exited)
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{s.client}, DialTimeout: time.Second, Logger: zap.NewNop()})
	if err != nil {
		s.t.Fatal(err)
	}
	defer cli.Close()
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err := cli.Get(ctx, "health")
		cancel()
		if err == nil {
			return
		}
		select {
		case <-s.exited:
			b, _ := os.ReadFile(filepath.Join(s.dir, "etcd.log"))
			s.t.Fatalf("etcd exited: %s", b)
		default:
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("etcd did not answer: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Kill stops the server with SIGKILL and waits for it to exit.
func (s *Server) Kill() {
	if s.cmd == nil || s.cmd.Process == nil {
		return
	}
	_ = s.cmd.Process.Kill()
	<-s.exited
	s.logFile.Close()
	s.cmd = nil
}
