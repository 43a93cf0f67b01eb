package cluster

import (
	"fmt"
	"sync"

	"google.golang.org/grpc"
)

// conns shares one gRPC connection per holder among the follows of its
// targets (each follow is one stream on it).
type conns struct {
	opts []grpc.DialOption

	mu sync.Mutex
	m  map[string]*sharedConn // by gNMI address
}

type sharedConn struct {
	c    *grpc.ClientConn
	refs int
}

func (cs *conns) get(addr string) (*grpc.ClientConn, error) {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	if sc := cs.m[addr]; sc != nil {
		sc.refs++
		return sc.c, nil
	}
	c, err := grpc.NewClient(addr, cs.opts...)
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", addr, err)
	}
	cs.m[addr] = &sharedConn{c: c, refs: 1}
	return c, nil
}

// put releases a connection get returned; the last release closes it.
func (cs *conns) put(addr string) {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	if sc := cs.m[addr]; sc != nil {
		if sc.refs--; sc.refs == 0 {
			sc.c.Close()
			delete(cs.m, addr)
		}
	}
}

// DialOptions are how this instance connects to the others' gNMI servers.
func (n *Node) DialOptions() []grpc.DialOption { return n.conns.opts }
