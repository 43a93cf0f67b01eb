package devices

import (
	"bufio"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"

	"github.com/outpost-edge/outpost/internal/confval"
)

// BrokerWebSocket is the embedded broker's WebSocket listener (config key
// mqtt.broker.websocket): MQTT over WebSocket (ws://, or wss:// with TLS),
// for browsers and for devices that only get through HTTP proxies. Its
// clients log in and are held to the access rules and limits as on the TCP
// listeners; with TLS, a device certificate logs in as well.
type BrokerWebSocket struct {
	// Listen is the WebSocket listener's host:port; empty: none. Any
	// request path is served (clients often use /mqtt).
	Listen string `yaml:"listen"`
	// TLS serves wss:// with the certificate, key and client CAs of
	// mqtt.broker.tls (read again on SIGHUP like the TLS listener's).
	TLS bool `yaml:"tls"`
	// AllowedOrigins are the origins (scheme://host[:port]) of web pages
	// whose scripts may connect. A request without an Origin header (not
	// from a browser) or from the listener's own host is always served.
	AllowedOrigins []string `yaml:"allowed_origins"`
}

// Enabled reports whether the WebSocket listener is configured.
func (w BrokerWebSocket) Enabled() bool { return w.Listen != "" }

// Validate reports every problem of the WebSocket listener's settings
// (with tls, BrokerTLS.Validate checks the certificate and key).
func (w BrokerWebSocket) Validate(c *confval.Checker) {
	if !w.Enabled() {
		if w.TLS || len(w.AllowedOrigins) > 0 {
			c.Errorf("listen", "must be set (the WebSocket listener's host:port) when tls or allowed_origins are")
		}
		return
	}
	c.HostPort("listen", w.Listen)
	for i, o := range w.AllowedOrigins {
		if u, err := url.Parse(o); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || strings.Trim(u.Path, "/") != "" {
			c.Index("allowed_origins", i).Errorf("", "%q: an origin is scheme://host[:port], such as https://console.example.com", o)
		}
	}
}

// wsRequestLimit bounds the HTTP request that opens a WebSocket: a client
// sending more headers is refused.
const wsRequestLimit = 8 << 10

// wsBufferSize is the size of the buffers a WebSocket connection reads
// frames through and writes them from. The write buffers are shared by
// the connections through a pool (an idle connection holds none); the
// read buffer is the connection's own, sized like the TCP clients' read
// buffer, for the small packets of devices.
const wsBufferSize = 512

// wsUpgrader turns a connection accepted by a tcpListener (after its TLS
// handshake) into an MQTT over WebSocket connection.
type wsUpgrader struct {
	up      websocket.Upgrader
	origins []string // allowed, lower case
}

func newWSUpgrader(cfg BrokerWebSocket) *wsUpgrader {
	u := &wsUpgrader{}
	for _, o := range cfg.AllowedOrigins {
		u.origins = append(u.origins, strings.ToLower(strings.TrimRight(o, "/")))
	}
	u.up = websocket.Upgrader{
		HandshakeTimeout: handshakeTimeout,
		ReadBufferSize:   wsBufferSize,
		WriteBufferSize:  wsBufferSize,
		WriteBufferPool:  &sync.Pool{},
		Subprotocols:     []string{"mqtt", "mqttv3.1"},
		CheckOrigin:      u.checkOrigin,
		Error: func(w http.ResponseWriter, _ *http.Request, status int, reason error) {
			w.(*hijackWriter).refuse(status, reason)
		},
	}
	return u
}

// checkOrigin accepts a request without an Origin header, one from the
// host it was sent to, and one from an allowed origin; it refuses web
// pages of other sites (cross-site WebSocket hijacking).
func (u *wsUpgrader) checkOrigin(r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return true
	}
	if o, err := url.Parse(origin); err == nil && strings.EqualFold(o.Host, r.Host) {
		return true
	}
	return slices.Contains(u.origins, strings.ToLower(origin))
}

// upgrade reads the opening HTTP request from conn and answers it: a
// WebSocket handshake is accepted, anything else is refused with an HTTP
// error and a handshakeError.
func (u *wsUpgrader) upgrade(conn net.Conn) (net.Conn, error) {
	_ = conn.SetDeadline(time.Now().Add(handshakeTimeout))
	br := bufio.NewReaderSize(&io.LimitedReader{R: conn, N: wsRequestLimit}, wsBufferSize)
	req, err := http.ReadRequest(br)
	if err != nil {
		return conn, &handshakeError{what: "websocket handshake", err: fmt.Errorf("read http request: %w", err)}
	}
	w := &hijackWriter{conn: conn, br: br, header: http.Header{}}
	ws, err := u.up.Upgrade(w, req, nil)
	if err != nil {
		return conn, &handshakeError{what: "websocket handshake", err: err}
	}
	return &wsConn{Conn: conn, ws: ws}, nil
}

// hijackWriter is the http.ResponseWriter of one opening request read off
// a connection: the upgrader takes the connection over (Hijack), or
// refuses the request (refuse).
type hijackWriter struct {
	conn   net.Conn
	br     *bufio.Reader
	header http.Header
}

var _ http.Hijacker = (*hijackWriter)(nil)

func (w *hijackWriter) Header() http.Header { return w.header }

// Write and WriteHeader are not used: the upgrader answers through
// Hijack or its Error function (refuse).
func (w *hijackWriter) Write(p []byte) (int, error) { return 0, http.ErrNotSupported }
func (w *hijackWriter) WriteHeader(int)             {}

func (w *hijackWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	return w.conn, bufio.NewReadWriter(w.br, bufio.NewWriterSize(w.conn, wsBufferSize)), nil
}

// refuse answers a request that does not open a WebSocket.
func (w *hijackWriter) refuse(status int, reason error) {
	body := reason.Error() + "\n"
	_, _ = fmt.Fprintf(w.conn, "HTTP/1.1 %d %s\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s",
		status, http.StatusText(status), len(body), body)
}

// wsConn carries MQTT packets in binary WebSocket messages: the broker
// reads them as one stream (a packet may span messages, a message may hold
// more than one packet), and every write is one message.
type wsConn struct {
	net.Conn // the TCP or TLS connection: addresses, deadlines, Close
	ws       *websocket.Conn
	r        io.Reader // the message being read; nil between messages
}

// errTextMessage ends a connection that sent a text message: MQTT over
// WebSocket is binary only.
var errTextMessage = errors.New("websocket: text message; MQTT travels in binary messages")

func (c *wsConn) Read(p []byte) (int, error) {
	for {
		if c.r == nil {
			op, r, err := c.ws.NextReader()
			if err != nil {
				return 0, err
			}
			if op != websocket.BinaryMessage {
				return 0, errTextMessage
			}
			c.r = r
		}
		n, err := c.r.Read(p)
		if errors.Is(err, io.EOF) {
			c.r, err = nil, nil
			if n == 0 {
				continue // the next message
			}
		}
		return n, err
	}
}

func (c *wsConn) Write(p []byte) (int, error) {
	if err := c.ws.WriteMessage(websocket.BinaryMessage, p); err != nil {
		return 0, err
	}
	return len(p), nil
}

// ConnectionState is the TLS state of a wss:// connection (the client
// certificate a device logs in with); the zero value over plain ws://.
func (c *wsConn) ConnectionState() tls.ConnectionState {
	if tc, ok := c.Conn.(*tls.Conn); ok {
		return tc.ConnectionState()
	}
	return tls.ConnectionState{}
}
