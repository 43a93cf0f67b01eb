// Package freeport hands tests TCP ports that were free a moment ago, for
// the real processes they start (daemons, brokers, etcd, PostgreSQL), which
// take addresses and not listeners. A port is handed out once per process:
// the kernel may give a port just closed to the next bind on :0, and a
// daemon once got the same port for its broker and its admin API.
package freeport

import (
	"net"
	"strconv"
	"sync"
)

// Fataler is what a helper needs of a test: testing.TB has it.
type Fataler interface {
	Fatalf(format string, args ...any)
}

var handed struct {
	sync.Mutex
	ports map[string]bool // "ip:port"
}

// Port returns a port free on ip a moment ago that this process has not
// handed out before.
func Port(t Fataler, ip string) int {
	handed.Lock()
	defer handed.Unlock()
	if handed.ports == nil {
		handed.ports = map[string]bool{}
	}
	for range 100 {
		l, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
		if err != nil {
			t.Fatalf("find a free port on %s: %v", ip, err)
		}
		addr := l.Addr().String()
		l.Close()
		if !handed.ports[addr] {
			handed.ports[addr] = true
			return l.Addr().(*net.TCPAddr).Port
		}
	}
	t.Fatalf("find a free port on %s: 100 binds gave ports handed out before", ip)
	return 0
}

// Addr returns "127.0.0.1:PORT" with a port from Port.
func Addr(t Fataler) string {
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(Port(t, "127.0.0.1")))
}
