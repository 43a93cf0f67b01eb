package admin

import (
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/outpost-edge/outpost/internal/loopback"
	"github.com/outpost-edge/outpost/internal/secretfile"
)

// The admin access model: every request needs the bearer token
// (Authorization: Bearer TOKEN) except GET /v1/health and GET /metrics
// from a loopback peer. Beyond loopback the server only listens with TLS.

// ErrPlainBeyondLoopback: the server was asked to listen beyond loopback
// without TLS.
var ErrPlainBeyondLoopback = errors.New("refusing to serve the admin API without tls on a non-loopback address: set admin.tls.cert_file and key_file, or listen on 127.0.0.1")

// openOnLoopback are the paths a loopback peer reads without a token.
var openOnLoopback = map[string]bool{"/v1/health": true, "/metrics": true}

// Reasons a request is refused, the label values of
// outpost_admin_auth_failures_total.
const (
	reasonMissing = "missing" // no bearer token
	reasonInvalid = "invalid" // a token that is not the daemon's
)

// authorize guards next with the admin token, or a browser session
// (session.go). Paths mounted with HandlePublic and the login need
// neither.
func (s *Server) authorize(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if openOnLoopback[r.URL.Path] && loopback.HostPort(r.RemoteAddr) || s.public(r) {
			next.ServeHTTP(w, r)
			return
		}
		var reason string
		if _, err := r.Cookie(SessionCookie); err == nil && r.Header.Get("Authorization") == "" {
			reason = s.checkSession(r)
		} else {
			reason = s.checkToken(r.Header.Get("Authorization"))
		}
		if reason == "" {
			next.ServeHTTP(w, r)
			return
		}
		s.refuse(w, r, reason)
	})
}

// public: r needs no credential (the login, and what HandlePublic mounted).
func (s *Server) public(r *http.Request) bool {
	if r.URL.Path == sessionPath && r.Method == http.MethodPost {
		return true
	}
	for _, p := range s.publicPrefixes {
		if strings.HasPrefix(r.URL.Path, p) {
			return true
		}
	}
	return false
}

// refuse answers a request refused for reason: 401 with a challenge, or
// 403 for a change without its CSRF token.
func (s *Server) refuse(w http.ResponseWriter, r *http.Request, reason string) {
	s.authFailures.WithLabelValues(reason).Inc()
	if n, ok := s.refusedLog.Allow(time.Now()); ok {
		s.log.Warn("admin API request refused", "peer", r.RemoteAddr, "method", r.Method, "path", r.URL.Path, "reason", reason, "not_logged_before", n)
	}
	challenge := `Bearer realm="outpost"`
	msg := "this request needs the admin token (Authorization: Bearer TOKEN, from " + TokenFileName + " in the daemon's data dir)"
	switch reason {
	case reasonInvalid:
		challenge += `, error="invalid_token"`
		msg = "the admin token is not this daemon's"
	case reasonSession:
		msg = "the session has ended (it expired, or the admin token changed): log in again"
	case reasonCSRF:
		writeJSON(w, http.StatusForbidden, errorAnswer{ErrorText{Code: "forbidden", Message: "a change made with a session needs its CSRF token (" + HeaderCSRF + ") and the console's own origin"}})
		return
	}
	w.Header().Set("WWW-Authenticate", challenge)
	writeJSON(w, http.StatusUnauthorized, errorAnswer{ErrorText{Code: "unauthorized", Message: msg}})
}

// logEvery is the least time between two log lines of refused requests:
// whoever floods the API with bad tokens does not flood the log.
const logEvery = 10 * time.Second

// checkToken returns "" for the daemon's token, else why it is refused.
// The comparison takes the same time whatever the token.
func (s *Server) checkToken(header string) string {
	scheme, tok, ok := strings.Cut(header, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(tok) == "" {
		return reasonMissing
	}
	got := sha256.Sum256([]byte(strings.TrimSpace(tok)))
	want := s.creds.Load().tokenSum
	if subtle.ConstantTimeCompare(got[:], want[:]) != 1 {
		return reasonInvalid
	}
	return ""
}

// credentials are what the server checks requests and serves TLS with:
// read at start and again by ReloadCredentials.
type credentials struct {
	tokenSum [sha256.Size]byte // of the token
	tls      *tls.Config       // nil: plain HTTP on loopback
}

// loadCredentials reads the token (creating it first if the options say
// so and it is missing) and the TLS material.
func (o Options) loadCredentials() (*credentials, error) {
	read := ReadToken
	if o.CreateToken {
		read = EnsureToken
	}
	tok, err := read(o.TokenFile)
	if err != nil {
		return nil, err
	}
	tcfg, err := o.serverTLS()
	if err != nil {
		return nil, err
	}
	return &credentials{tokenSum: sha256.Sum256(tok), tls: tcfg}, nil
}

// ReloadCredentials reads the token file and the TLS files again and
// swaps them in for the requests and handshakes that follow; on an error
// the running ones stay. The files' names are restart-only settings (the
// admin section), their contents are reloaded. When the daemon creates its
// own token, a deleted token file is created again with a new token.
func (s *Server) ReloadCredentials() error {
	creds, err := s.opts.loadCredentials()
	if err != nil {
		return fmt.Errorf("admin API: %w", err)
	}
	s.creds.Store(creds)
	s.sessions.sweep(creds.tokenSum, time.Now()) // a new token ends the old sessions
	s.log.Info("admin credentials reloaded", "token_file", s.opts.TokenFile, "tls", creds.tls != nil)
	return nil
}

// serverTLS loads the server's certificate and, for mTLS, the CA that
// signs client certificates. Nil without a certificate.
func (o Options) serverTLS() (*tls.Config, error) {
	if o.TLSCertFile == "" {
		return nil, nil
	}
	crt, err := secretfile.LoadX509KeyPair(o.TLSCertFile, o.TLSKeyFile)
	if err != nil {
		return nil, fmt.Errorf("admin tls: %w", err)
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{crt}}
	if o.TLSClientCAFile != "" {
		pool, err := secretfile.CertPool(o.TLSClientCAFile)
		if err != nil {
			return nil, fmt.Errorf("admin tls: %w", err)
		}
		cfg.ClientCAs, cfg.ClientAuth = pool, tls.RequireAndVerifyClientCert
	}
	return cfg, nil
}
