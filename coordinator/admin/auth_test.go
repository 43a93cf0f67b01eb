package admin

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/outpost-edge/outpost/internal/secretfile"
	"github.com/outpost-edge/outpost/internal/testpki"
)

// protected lists a request of every route that needs the token.
var protected = []struct{ method, path string }{
	{http.MethodGet, "/v1/tasks"},
	{http.MethodGet, "/v1/tasks/echo"},
	{http.MethodPost, "/v1/tasks/echo"},
	{http.MethodDelete, "/v1/tasks/echo"},
	{http.MethodPost, "/v1/tasks/echo/rollback"},
	{http.MethodPost, "/v1/tasks/echo/call"},
	{http.MethodPost, "/v1/tasks/echo/call?async=true"},
	{http.MethodGet, "/v1/calls"},
	{http.MethodGet, "/v1/calls/x"},
	{http.MethodGet, "/v1/telemetry/targets"},
	{http.MethodGet, "/v1/backup"},
	{http.MethodGet, "/v1/session"},
	{http.MethodDelete, "/v1/session"},
}

// backupFunc is a Backuper.
type backupFunc func(w io.Writer, telemetry bool) error

func (f backupFunc) Backup(w io.Writer, telemetry bool) error { return f(w, telemetry) }

// Without the token, or with another, every protected route answers 401
// with a challenge and an error document, counts the failure, and never
// reaches its handler; the token is not logged.
func TestProtectedRoutesRefused(t *testing.T) {
	reg := prometheus.NewRegistry()
	var logs bytes.Buffer
	s := newServer(t, &asyncNode{}, reg)
	s.log = slog.New(slog.NewTextHandler(&logs, nil))
	reached := 0
	s.Handle("/v1/calls", http.HandlerFunc(func(http.ResponseWriter, *http.Request) { reached++ }))
	s.Handle("/v1/calls/", http.HandlerFunc(func(http.ResponseWriter, *http.Request) { reached++ }))
	s.Handle("/v1/telemetry/", http.HandlerFunc(func(http.ResponseWriter, *http.Request) { reached++ }))
	MountRegistry(s, &memRegistry{blobs: map[string]string{}})
	MountBackup(s, backupFunc(func(io.Writer, bool) error { reached++; return nil }))
	c := run(t, s)
	for _, tc := range []struct{ name, header, reason, challenge string }{
		{"no token", "", reasonMissing, `Bearer realm="outpost"`},
		{"basic auth", "Basic dXNlcjpwYXNz", reasonMissing, `Bearer realm="outpost"`},
		{"wrong token", "Bearer " + strings.Repeat("0", 64), reasonInvalid, `Bearer realm="outpost", error="invalid_token"`},
		{"token prefix", "Bearer " + c.token[:10], reasonInvalid, `Bearer realm="outpost", error="invalid_token"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := testutil.ToFloat64(s.authFailures.WithLabelValues(tc.reason))
			for _, p := range protected {
				req, _ := http.NewRequest(p.method, c.base+p.path, strings.NewReader("x"))
				if tc.header != "" {
					req.Header.Set("Authorization", tc.header)
				}
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				var doc errorAnswer
				derr := json.NewDecoder(resp.Body).Decode(&doc)
				resp.Body.Close()
				if resp.StatusCode != http.StatusUnauthorized || resp.Header.Get("WWW-Authenticate") != tc.challenge ||
					derr != nil || doc.Error.Code != "unauthorized" || doc.Error.Message == "" {
					t.Errorf("%s %s: %d %q %+v %v", p.method, p.path, resp.StatusCode, resp.Header.Get("WWW-Authenticate"), doc, derr)
				}
			}
			if got := testutil.ToFloat64(s.authFailures.WithLabelValues(tc.reason)) - before; got != float64(len(protected)) {
				t.Errorf("outpost_admin_auth_failures_total{reason=%q} rose by %v, want %d", tc.reason, got, len(protected))
			}
		})
	}
	if reached != 0 {
		t.Errorf("handlers reached %d times without the token", reached)
	}
	if strings.Contains(logs.String(), c.token) || strings.Count(logs.String(), "admin API request refused") != 1 {
		t.Errorf("log (the token, or more than one line in %s):\n%s", logEvery, logs.String())
	}
	// With the token every route reaches its handler.
	for _, p := range protected {
		if code, body := send(t, c, p.method, p.path); code == http.StatusUnauthorized {
			t.Errorf("%s %s with the token: %d %s", p.method, p.path, code, body)
		}
	}
	if reached != 4 {
		t.Errorf("mounted handlers reached %d times with the token, want 4", reached)
	}
}

// Health and metrics are open to a loopback peer and need the token from
// any other.
func TestHealthAndMetricsOpenOnLoopbackOnly(t *testing.T) {
	s := newServer(t, &node{}, prometheus.NewRegistry())
	c := run(t, s)
	h := s.srv.Handler
	for _, path := range []string{"/v1/health", "/metrics"} {
		for _, tc := range []struct {
			peer, auth string
			want       int
		}{
			{"127.0.0.1:5000", "", http.StatusOK},
			{"[::1]:5000", "", http.StatusOK},
			{"192.0.2.7:5000", "", http.StatusUnauthorized},
			{"[2001:db8::1]:5000", "Bearer nope", http.StatusUnauthorized},
			{"192.0.2.7:5000", "Bearer " + c.token, http.StatusOK},
		} {
			req := httptest.NewRequest(http.MethodGet, path, nil)
			req.RemoteAddr = tc.peer
			if tc.auth != "" {
				req.Header.Set("Authorization", tc.auth)
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != tc.want {
				t.Errorf("GET %s from %s (auth %t): %d, want %d", path, tc.peer, tc.auth != "", rec.Code, tc.want)
			}
		}
	}
}

// The token is made once, 32 random bytes in hex, mode 0600, and read back
// on the next start; one readable by others is refused with the fix.
func TestEnsureToken(t *testing.T) {
	path := filepath.Join(t.TempDir(), "data", TokenFileName)
	tok, err := EnsureToken(path)
	if err != nil || len(tok) != 64 || strings.Trim(string(tok), "0123456789abcdef") != "" {
		t.Fatalf("token %q %v", tok, err)
	}
	st, err := os.Stat(path)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("token file %v %v", st.Mode(), err)
	}
	again, err := EnsureToken(path)
	if err != nil || string(again) != string(tok) {
		t.Fatalf("second start: %q %v", again, err)
	}
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = EnsureToken(path)
	if !errors.Is(err, secretfile.ErrExposed) || !strings.Contains(err.Error(), "mode 0644") || !strings.Contains(err.Error(), "chmod 600 "+path) {
		t.Fatalf("exposed token: %v", err)
	}
	empty := filepath.Join(t.TempDir(), "empty")
	if err := os.WriteFile(empty, []byte("\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadToken(empty); !errors.Is(err, ErrNoToken) {
		t.Fatalf("empty token file: %v", err)
	}
}

// An operator's token file is used as it is and must exist.
func TestProvisionedToken(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "op.token")
	s := NewServer(Options{Listen: "127.0.0.1:0", TokenFile: file}, &node{}, prometheus.NewRegistry(), prometheus.NewRegistry(), slog.New(slog.DiscardHandler))
	if err := s.Start(context.Background()); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("start without the operator's token: %v", err)
	}
	if err := os.WriteFile(file, []byte("operator-secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c := run(t, s)
	t.Setenv(TokenEnv, "operator-secret")
	envc, err := Dial(ClientOptions{Addr: s.Addr()})
	if err != nil {
		t.Fatal(err)
	}
	for _, cl := range []*Client{c, envc} {
		if _, err := cl.Tasks(context.Background()); err != nil {
			t.Fatalf("token from %s: %v", cl.from, err)
		}
	}
}

// The client takes --token-file over $OUTPOST_TOKEN over the daemon's
// file, and says what to do when it has none or the wrong one.
func TestClientTokenDiscovery(t *testing.T) {
	s := newServer(t, &node{}, prometheus.NewRegistry())
	good := run(t, s)
	ctx := context.Background()
	wrong := filepath.Join(t.TempDir(), "wrong.token")
	if err := os.WriteFile(wrong, []byte("not-it"), 0o600); err != nil {
		t.Fatal(err)
	}

	t.Setenv(TokenEnv, "from-env")
	c, err := Dial(ClientOptions{Addr: s.Addr(), TokenFile: wrong, DaemonTokenFile: s.opts.TokenFile})
	if err != nil || c.from != wrong {
		t.Fatalf("flag first: %v %v", c, err)
	}
	_, err = c.Tasks(ctx)
	if !errors.Is(err, ErrUnauthorized) || !strings.Contains(err.Error(), "refused the token from "+wrong) {
		t.Fatalf("wrong token: %v", err)
	}
	if c, _ = Dial(ClientOptions{Addr: s.Addr(), DaemonTokenFile: s.opts.TokenFile}); c.from != "$"+TokenEnv {
		t.Fatalf("env second: token from %s", c.from)
	}
	t.Setenv(TokenEnv, "")
	if c, _ = Dial(ClientOptions{Addr: s.Addr(), DaemonTokenFile: s.opts.TokenFile}); c.from != s.opts.TokenFile || c.token != good.token {
		t.Fatalf("daemon's file last: token from %s", c.from)
	}
	if _, err := Dial(ClientOptions{Addr: s.Addr(), TokenFile: filepath.Join(t.TempDir(), "missing")}); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("missing --token-file: %v", err)
	}

	// The daemon's file unreadable (as for another user): health still
	// answers on loopback, the rest says what to do.
	c, err = Dial(ClientOptions{Addr: s.Addr(), DaemonTokenFile: filepath.Join(t.TempDir(), "nope", TokenFileName)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Health(ctx); err != nil {
		t.Fatalf("health without a token: %v", err)
	}
	_, err = c.Call(ctx, "echo", nil, CallOptions{})
	if !errors.Is(err, ErrUnauthorized) || !strings.Contains(err.Error(), "run as the daemon's user") || !strings.Contains(err.Error(), TokenEnv) {
		t.Fatalf("no token: %v", err)
	}
}

// The token never travels in clear beyond loopback.
func TestClientKeepsTokenOffPlainHTTP(t *testing.T) {
	t.Setenv(TokenEnv, "secret")
	for addr, sends := range map[string]bool{
		"127.0.0.1:7700": true, "localhost:7700": true, "http://[::1]:7700": true, "https://192.0.2.1:7700": true,
		"192.0.2.1:7700": false, "http://edge.example:7700": false,
	} {
		c, err := Dial(ClientOptions{Addr: addr})
		if err != nil {
			t.Fatal(err)
		}
		if (c.token != "") != sends {
			t.Errorf("%s: token sent %t, want %t (%v)", addr, c.token != "", sends, c.noToken)
		}
	}
}

// Beyond loopback the server wants TLS; with it (and mTLS) the token is
// still required.
func TestServerTLS(t *testing.T) {
	if err := NewServer(Options{Listen: "0.0.0.0:0", TokenFile: filepath.Join(t.TempDir(), "t"), CreateToken: true}, &node{},
		prometheus.NewRegistry(), prometheus.NewRegistry(), slog.New(slog.DiscardHandler)).Start(context.Background()); !errors.Is(err, ErrPlainBeyondLoopback) {
		t.Fatalf("plain beyond loopback: %v", err)
	}
	dir := t.TempDir()
	ca := testpki.New(t, dir, "admin")
	cert, key := ca.Server(t, "server", net.IPv4(127, 0, 0, 1))
	ccert, ckey := ca.Client(t, "operator")
	for _, mtls := range []bool{false, true} {
		s := newServer(t, &node{}, prometheus.NewRegistry())
		s.opts.TLSCertFile, s.opts.TLSKeyFile = cert, key
		if mtls {
			s.opts.TLSClientCAFile = ca.CAFile
		}
		run(t, s)
		base := "https://" + s.Addr()
		anon, err := Dial(ClientOptions{Addr: base, CAFile: ca.CAFile, CertFile: ccert, KeyFile: ckey})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := anon.Tasks(context.Background()); !errors.Is(err, ErrUnauthorized) {
			t.Errorf("mtls %t: tasks without a token: %v", mtls, err)
		}
		withTok, _ := Dial(ClientOptions{Addr: base, CAFile: ca.CAFile, CertFile: ccert, KeyFile: ckey, DaemonTokenFile: s.opts.TokenFile})
		if _, err := withTok.Tasks(context.Background()); err != nil {
			t.Errorf("mtls %t: tasks with the token: %v", mtls, err)
		}
		noCert, _ := Dial(ClientOptions{Addr: base, CAFile: ca.CAFile, DaemonTokenFile: s.opts.TokenFile})
		if _, err := noCert.Tasks(context.Background()); (err == nil) == mtls {
			t.Errorf("mtls %t: tasks without a client certificate: %v", mtls, err)
		}
	}
	// A key others can read is refused before anything listens.
	if err := os.Chmod(key, 0o640); err != nil {
		t.Fatal(err)
	}
	s := newServer(t, &node{}, prometheus.NewRegistry())
	s.opts.TLSCertFile, s.opts.TLSKeyFile = cert, key
	if err := s.Start(context.Background()); !errors.Is(err, secretfile.ErrExposed) || !strings.Contains(err.Error(), "chmod 600 "+key) {
		t.Fatalf("exposed key: %v", err)
	}
}

// ReloadCredentials (SIGHUP) rotates the token and the TLS certificate
// without a restart: the old token is refused at once, the next handshake
// shows the new certificate, a deleted generated token comes back as a
// new one, and unreadable files are refused with the running ones kept.
func TestReloadCredentials(t *testing.T) {
	dir := t.TempDir()
	ca := testpki.New(t, dir, "admin")
	certA, keyA := ca.Server(t, "server-a", net.IPv4(127, 0, 0, 1))
	certB, keyB := ca.Server(t, "server-b", net.IPv4(127, 0, 0, 1))
	cert, key := filepath.Join(dir, "live.pem"), filepath.Join(dir, "live-key.pem")
	install := func(c, k string) {
		t.Helper()
		for from, to := range map[string]string{c: cert, k: key} {
			b, err := os.ReadFile(from)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(to, b, 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}
	install(certA, keyA)
	s := newServer(t, &node{}, prometheus.NewRegistry())
	s.opts.TLSCertFile, s.opts.TLSKeyFile = cert, key
	run(t, s)
	base := "https://" + s.Addr()
	dial := func() *Client {
		t.Helper()
		c, err := Dial(ClientOptions{Addr: base, CAFile: ca.CAFile, DaemonTokenFile: s.opts.TokenFile})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	servedName := func() string {
		t.Helper()
		pool, err := secretfile.CertPool(ca.CAFile)
		if err != nil {
			t.Fatal(err)
		}
		conn, err := tls.Dial("tcp", s.Addr(), &tls.Config{RootCAs: pool})
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		return conn.ConnectionState().PeerCertificates[0].Subject.CommonName
	}
	old := dial()
	if _, err := old.Tasks(context.Background()); err != nil || servedName() != "server-a" {
		t.Fatalf("before the reload: %v, certificate %s", err, servedName())
	}

	if err := os.WriteFile(s.opts.TokenFile, []byte("rotated-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	install(certB, keyB)
	if err := s.ReloadCredentials(); err != nil {
		t.Fatal(err)
	}
	if _, err := old.Tasks(context.Background()); !errors.Is(err, ErrUnauthorized) {
		t.Errorf("old token after the rotation: %v", err)
	}
	if _, err := dial().Tasks(context.Background()); err != nil {
		t.Errorf("new token after the rotation: %v", err)
	}
	if n := servedName(); n != "server-b" {
		t.Errorf("certificate after the reload: %s, want server-b", n)
	}

	// Delete the generated token and reload: a new one is written.
	if err := os.Remove(s.opts.TokenFile); err != nil {
		t.Fatal(err)
	}
	if err := s.ReloadCredentials(); err != nil {
		t.Fatal(err)
	}
	if tok, err := ReadToken(s.opts.TokenFile); err != nil || string(tok) == "rotated-token" {
		t.Fatalf("token after deleting the file: %q %v", tok, err)
	}
	current := dial()
	if _, err := current.Tasks(context.Background()); err != nil {
		t.Errorf("the regenerated token: %v", err)
	}

	// A broken key: refused, the running credentials stay.
	if err := os.WriteFile(key, []byte("not a key"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := s.ReloadCredentials(); err == nil || !strings.Contains(err.Error(), "admin tls") {
		t.Fatalf("reload with a broken key: %v", err)
	}
	if _, err := current.Tasks(context.Background()); err != nil || servedName() != "server-b" {
		t.Errorf("after a refused reload: %v, certificate %s", err, servedName())
	}
}
