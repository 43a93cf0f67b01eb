package devices

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/outpost-edge/outpost/internal/ratelog"
)

// tcpListener is the broker's TCP listener, plain or TLS, carrying MQTT
// packets as they are or in WebSocket messages. It owns the goroutine of
// every connection, which the server reads it on: Close closes every
// connection (also those that never sent CONNECT) and waits for their
// goroutines, so the broker stops without leftovers; and an ordinary
// disconnect is logged at debug level, not as a warning.
type tcpListener struct {
	id, address string
	log         *slog.Logger
	tls         *tls.Config // nil: plain TCP
	ws          *wsUpgrader // nil: MQTT straight on the connection

	mu     sync.Mutex // guards ln, conns, closed
	ln     net.Listener
	conns  map[net.Conn]struct{}
	closed bool
	wg     sync.WaitGroup // Serve and the connection goroutines

	handshakes ratelog.Limiter // failed handshake warnings
}

// newTCPListener returns a listener on address; with tcfg, a TLS one.
func newTCPListener(id, address string, tcfg *tls.Config, log *slog.Logger) *tcpListener {
	return &tcpListener{id: id, address: address, tls: tcfg, log: log, conns: map[net.Conn]struct{}{},
		handshakes: ratelog.Limiter{Every: denyWarnEvery}}
}

// handshakeTimeout bounds a TLS handshake: a client that connects and
// stays silent holds no goroutine longer.
const handshakeTimeout = 10 * time.Second

// Address returns the bound address once Init succeeded.
func (l *tcpListener) Address() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.ln != nil {
		return l.ln.Addr().String()
	}
	return l.address
}

// Init binds the address.
func (l *tcpListener) Init() error {
	ln, err := net.Listen("tcp", l.address)
	if err != nil {
		return err
	}
	l.mu.Lock()
	l.ln = ln
	l.mu.Unlock()
	return nil
}

// Serve accepts connections until Close.
func (l *tcpListener) Serve(establish EstablishFunc) {
	l.mu.Lock()
	if l.closed || l.ln == nil {
		l.mu.Unlock()
		return
	}
	l.wg.Add(1)
	ln := l.ln
	l.mu.Unlock()
	defer l.wg.Done()
	for {
		conn, err := ln.Accept()
		if err != nil {
			return
		}
		l.mu.Lock()
		if l.closed {
			l.mu.Unlock()
			conn.Close()
			return
		}
		l.conns[conn] = struct{}{}
		l.wg.Add(1)
		l.mu.Unlock()
		go l.serveConn(conn, establish)
	}
}

// EstablishFunc serves a client on c (mqttd.Server.Establish): it calls
// done once the connection ended.
type EstablishFunc func(listener string, c net.Conn, done func(error))

// serveConn opens one accepted connection (handshakes) and hands it to
// the server, which serves it on a goroutine of its own until it ends.
func (l *tcpListener) serveConn(conn net.Conn, establish EstablishFunc) {
	c, err := l.open(conn)
	if err != nil {
		l.ended(conn, err)
		return
	}
	establish(l.id, c, func(err error) { l.ended(conn, err) })
}

// ended closes a connection that ended with err and forgets it.
func (l *tcpListener) ended(conn net.Conn, err error) {
	defer l.wg.Done()
	l.mu.Lock()
	delete(l.conns, conn) // the accepted connection, under what wraps it
	l.mu.Unlock()
	conn.Close()
	l.logEnd(conn, err)
}

// open runs the TLS and WebSocket handshakes of a connection, as the
// listener has them.
func (l *tcpListener) open(conn net.Conn) (net.Conn, error) {
	c, err := l.handshake(conn)
	if err == nil && l.ws != nil {
		c, err = l.ws.upgrade(c)
	}
	return c, err
}

// handshake runs the TLS handshake of a connection to a TLS listener, so
// that the client's certificate is verified before its CONNECT is read.
func (l *tcpListener) handshake(conn net.Conn) (net.Conn, error) {
	if l.tls == nil {
		return conn, nil
	}
	tc := tls.Server(conn, l.tls)
	ctx, cancel := context.WithTimeout(context.Background(), handshakeTimeout)
	defer cancel()
	if err := tc.HandshakeContext(ctx); err != nil {
		return conn, &handshakeError{what: "tls handshake", err: err}
	}
	return tc, nil
}

// handshakeError is a failed TLS handshake (an unknown CA, an expired
// certificate, no certificate where one is required, or not TLS at all) or
// a failed WebSocket handshake (not an HTTP request opening a WebSocket,
// or from a web page of an origin not allowed).
type handshakeError struct {
	what string
	err  error
}

func (e *handshakeError) Error() string { return e.what + ": " + e.err.Error() }
func (e *handshakeError) Unwrap() error { return e.err }

// logEnd logs why a connection ended: refusals and protocol errors as
// warnings, ordinary disconnects at debug level.
func (l *tcpListener) logEnd(conn net.Conn, err error) {
	if err == nil {
		return
	}
	var code packets.Code
	var hs *handshakeError
	switch {
	case errors.As(err, &hs):
		if n, ok := l.handshakes.Allow(time.Now()); ok {
			l.log.Warn("broker refused a connection", "listener", l.id, "remote", conn.RemoteAddr().String(), "reason", err, "unlogged", n)
		}
	case errors.Is(err, io.EOF), errors.Is(err, net.ErrClosed), errors.Is(err, packets.ErrServerShuttingDown),
		errors.Is(err, packets.CodeDisconnect), errors.Is(err, packets.ErrSessionTakenOver):
		l.log.Debug("broker client disconnected", "remote", conn.RemoteAddr().String(), "reason", err)
	case errors.As(err, &code):
		l.log.Info("broker client refused or disconnected", "remote", conn.RemoteAddr().String(), "reason", err)
	default:
		l.log.Debug("broker client connection ended", "remote", conn.RemoteAddr().String(), "error", err)
	}
}

// Close stops accepting, closes every remaining connection and waits for
// the connection goroutines (the server disconnected its clients first).
func (l *tcpListener) Close() {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return
	}
	l.closed = true
	ln := l.ln
	l.mu.Unlock()
	if ln != nil {
		ln.Close()
	}
	l.mu.Lock()
	for c := range l.conns {
		c.Close()
	}
	l.mu.Unlock()
	l.wg.Wait()
}
