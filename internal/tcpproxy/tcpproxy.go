// Package tcpproxy forwards TCP connections on loopback for tests that
// need to break a link between two real processes: Drop closes the
// connections open now (the next ones go through), Cut closes everything,
// Stall holds every byte for a while (a peer that does not answer).
package tcpproxy

import (
	"net"
	"sync"
	"testing"
	"time"
)

// Proxy forwards each connection to its Addr to the address To returns.
type Proxy struct {
	Addr string

	to func() string
	l  net.Listener

	mu      sync.Mutex
	conns   []net.Conn
	done    bool
	stalled time.Time // bytes wait until then
}

// Start listens on a random loopback port and forwards to the address to
// returns when a connection comes (so it may be known only later); it
// stops when the test ends.
func Start(t testing.TB, to func() string) *Proxy {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &Proxy{Addr: l.Addr().String(), to: to, l: l}
	t.Cleanup(p.Cut)
	go p.accept()
	return p
}

func (p *Proxy) accept() {
	for {
		c, err := p.l.Accept()
		if err != nil {
			return
		}
		u, err := net.Dial("tcp", p.to())
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		if p.done {
			c.Close()
			u.Close()
		}
		p.conns = append(p.conns, c, u)
		p.mu.Unlock()
		go p.pipe(u, c)
		go p.pipe(c, u)
	}
}

// pipe copies src to dst, holding each read while stalled, then closes
// dst.
func (p *Proxy) pipe(dst, src net.Conn) {
	defer dst.Close()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			p.mu.Lock()
			until := p.stalled
			p.mu.Unlock()
			time.Sleep(time.Until(until))
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// Stall holds every byte that arrives in the next d, both ways, until d
// has passed; the connections stay open.
func (p *Proxy) Stall(d time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.stalled = time.Now().Add(d)
}

// Drop closes every connection forwarded so far; new ones are forwarded.
func (p *Proxy) Drop() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

// Cut closes the listener and every forwarded connection.
func (p *Proxy) Cut() {
	p.mu.Lock()
	p.done = true
	p.mu.Unlock()
	p.l.Close()
	p.Drop()
}
