package admin

import (
	"bytes"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/outpost-edge/outpost/internal/testpki"
)

// browser is a client of the admin API that holds a session cookie, as
// the console's page does.
type browser struct {
	t      *testing.T
	base   string
	hc     *http.Client
	cookie *http.Cookie
	csrf   string
}

// login posts token to /v1/session and keeps the cookie; it returns the
// status.
func (b *browser) login(token string) int {
	b.t.Helper()
	body, _ := json.Marshal(Login{Token: token})
	req, _ := http.NewRequest(http.MethodPost, b.base+sessionPath, bytes.NewReader(body))
	req.Header.Set("Origin", b.base)
	resp, err := b.hc.Do(req)
	if err != nil {
		b.t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusOK {
		var info SessionInfo
		if err := json.NewDecoder(resp.Body).Decode(&info); err != nil {
			b.t.Fatal(err)
		}
		b.csrf = info.CSRF
		for _, c := range resp.Cookies() {
			if c.Name == SessionCookie {
				b.cookie = c
			}
		}
	}
	return resp.StatusCode
}

// do sends a request with the cookie and the given headers; it returns
// the status.
func (b *browser) do(method, path string, headers map[string]string) int {
	b.t.Helper()
	req, _ := http.NewRequest(method, b.base+path, strings.NewReader("x"))
	if b.cookie != nil {
		req.AddCookie(&http.Cookie{Name: b.cookie.Name, Value: b.cookie.Value})
	}
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	resp, err := b.hc.Do(req)
	if err != nil {
		b.t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// A session made with the token reads and, with its CSRF token and from
// its own origin, changes; without them a change is refused with 403 and
// never reaches its handler; a cookie of no session is refused with 401;
// the login needs the right token; logout and a token rotation end it.
func TestSessions(t *testing.T) {
	reg := prometheus.NewRegistry()
	s := newServer(t, &node{}, reg)
	rollbacks := 0
	s.Handle("POST /v1/tasks/{name}/rollback", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { rollbacks++ }))
	c := run(t, s)
	b := &browser{t: t, base: c.base, hc: &http.Client{}}

	if code := b.do(http.MethodGet, "/v1/tasks", nil); code != http.StatusUnauthorized {
		t.Fatalf("no session, no token: %d", code)
	}
	if code := b.login("wrong"); code != http.StatusUnauthorized || b.cookie != nil {
		t.Fatalf("login with a wrong token: %d, cookie %v", code, b.cookie)
	}
	if got := testutil.ToFloat64(s.authFailures.WithLabelValues(reasonInvalid)); got != 1 {
		t.Errorf("invalid failures after a wrong login: %v", got)
	}
	if code := b.login(c.token); code != http.StatusOK {
		t.Fatalf("login: %d", code)
	}
	if !b.cookie.HttpOnly || b.cookie.SameSite != http.SameSiteStrictMode || b.cookie.Secure || b.cookie.Path != "/" {
		t.Errorf("cookie %+v: want HttpOnly, SameSite=Strict, not Secure on plain HTTP, path /", b.cookie)
	}
	if code := b.do(http.MethodGet, "/v1/tasks", nil); code != http.StatusOK {
		t.Errorf("GET with the session: %d", code)
	}
	if code := b.do(http.MethodGet, sessionPath, nil); code != http.StatusOK {
		t.Errorf("GET %s with the session: %d", sessionPath, code)
	}

	for _, tc := range []struct {
		name    string
		headers map[string]string
		want    int
	}{
		{"no csrf token", map[string]string{"Origin": c.base}, http.StatusForbidden},
		{"wrong csrf token", map[string]string{HeaderCSRF: strings.Repeat("0", 64), "Origin": c.base}, http.StatusForbidden},
		{"another origin", map[string]string{HeaderCSRF: b.csrf, "Origin": "http://evil.example"}, http.StatusForbidden},
		{"another scheme", map[string]string{HeaderCSRF: b.csrf, "Origin": strings.Replace(c.base, "http:", "https:", 1)}, http.StatusForbidden},
		{"cross-site fetch", map[string]string{HeaderCSRF: b.csrf, "Sec-Fetch-Site": "cross-site"}, http.StatusForbidden},
		{"csrf token and own origin", map[string]string{HeaderCSRF: b.csrf, "Origin": c.base, "Sec-Fetch-Site": "same-origin"}, http.StatusOK},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := rollbacks
			if code := b.do(http.MethodPost, "/v1/tasks/echo/rollback", tc.headers); code != tc.want {
				t.Errorf("POST rollback: %d, want %d", code, tc.want)
			}
			if reached := rollbacks > before; reached != (tc.want == http.StatusOK) {
				t.Errorf("handler reached: %v", reached)
			}
		})
	}
	if got := testutil.ToFloat64(s.authFailures.WithLabelValues(reasonCSRF)); got != 5 {
		t.Errorf("csrf failures: %v, want 5", got)
	}

	forged := &browser{t: t, base: c.base, hc: b.hc, cookie: &http.Cookie{Name: SessionCookie, Value: strings.Repeat("a", 64)}}
	if code := forged.do(http.MethodGet, "/v1/tasks", nil); code != http.StatusUnauthorized {
		t.Errorf("a cookie of no session: %d", code)
	}
	if got := testutil.ToFloat64(s.authFailures.WithLabelValues(reasonSession)); got != 1 {
		t.Errorf("session failures: %v", got)
	}
	// A bearer token with a stale cookie is the token's request.
	if code := forged.do(http.MethodGet, "/v1/tasks", map[string]string{"Authorization": "Bearer " + c.token}); code != http.StatusOK {
		t.Errorf("bearer token beside a stale cookie: %d", code)
	}

	// Logout ends the session.
	other := &browser{t: t, base: c.base, hc: b.hc}
	if code := other.login(c.token); code != http.StatusOK {
		t.Fatal(code)
	}
	if got := gaugeValue(t, reg, "outpost_admin_sessions"); got != 2 {
		t.Errorf("sessions: %v, want 2", got)
	}
	if code := other.do(http.MethodDelete, sessionPath, map[string]string{HeaderCSRF: other.csrf}); code != http.StatusNoContent {
		t.Fatalf("logout: %d", code)
	}
	if code := other.do(http.MethodGet, "/v1/tasks", nil); code != http.StatusUnauthorized {
		t.Errorf("after logout: %d", code)
	}

	// A new token ends the sessions made with the old one.
	if err := os.WriteFile(s.opts.TokenFile, []byte("rotated-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := s.ReloadCredentials(); err != nil {
		t.Fatal(err)
	}
	if n := s.sessions.count(); n != 0 {
		t.Errorf("%d sessions kept after the token changed", n)
	}
	if code := b.do(http.MethodGet, "/v1/tasks", nil); code != http.StatusUnauthorized {
		t.Errorf("session after the token rotation: %d", code)
	}
	if code := b.login("rotated-token"); code != http.StatusOK {
		t.Errorf("login with the new token: %d", code)
	}
}

// gaugeValue is the value of the gauge name in reg.
func gaugeValue(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}

// A login from another site is refused before the token is looked at.
func TestLoginFromAnotherOrigin(t *testing.T) {
	s := newServer(t, &node{}, prometheus.NewRegistry())
	c := run(t, s)
	body, _ := json.Marshal(Login{Token: c.token})
	req, _ := http.NewRequest(http.MethodPost, c.base+sessionPath, bytes.NewReader(body))
	req.Header.Set("Origin", "http://evil.example")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden || len(resp.Cookies()) != 0 {
		t.Errorf("cross-origin login: %d, cookies %v", resp.StatusCode, resp.Cookies())
	}
}

// On TLS the cookie is Secure.
func TestSessionCookieSecureOnTLS(t *testing.T) {
	dir := t.TempDir()
	ca := testpki.New(t, dir, "admin")
	cert, key := ca.Server(t, "server", net.IPv4(127, 0, 0, 1))
	s := newServer(t, &node{}, prometheus.NewRegistry())
	s.opts.TLSCertFile, s.opts.TLSKeyFile = cert, key
	run(t, s)
	pem, err := os.ReadFile(ca.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	tok, err := ReadToken(s.opts.TokenFile)
	if err != nil {
		t.Fatal(err)
	}
	base := "https://" + s.Addr()
	b := &browser{t: t, base: base, hc: &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}}
	if code := b.login(string(tok)); code != http.StatusOK {
		t.Fatalf("login: %d", code)
	}
	if !b.cookie.Secure || !b.cookie.HttpOnly || b.cookie.SameSite != http.SameSiteStrictMode {
		t.Errorf("cookie on TLS %+v: want Secure, HttpOnly, SameSite=Strict", b.cookie)
	}
	if code := b.do(http.MethodPost, "/v1/tasks/echo/call", map[string]string{HeaderCSRF: b.csrf, "Origin": base}); code != http.StatusOK {
		t.Errorf("call with the session on TLS: %d", code)
	}
}

// Sessions end at their TTL, and the oldest goes when maxSessions are
// kept.
func TestSessionStoreBounds(t *testing.T) {
	var st sessionStore
	sum := sha256.Sum256([]byte("tok"))
	now := time.Now()
	first, _ := st.add(sum, now)
	if st.get(first, sum, now.Add(SessionTTL-time.Second)) == nil {
		t.Fatal("session gone before its TTL")
	}
	if st.get(first, sum, now.Add(SessionTTL)) != nil || st.count() != 0 {
		t.Fatal("session kept past its TTL")
	}
	ids := make([]string, maxSessions+1)
	for i := range ids {
		ids[i], _ = st.add(sum, now.Add(time.Duration(i)*time.Second))
	}
	if st.count() != maxSessions {
		t.Errorf("%d sessions kept, want %d", st.count(), maxSessions)
	}
	if st.get(ids[0], sum, now) != nil || st.get(ids[maxSessions], sum, now) == nil {
		t.Error("the oldest session should have gone, the newest stayed")
	}
	if st.get(ids[1], sha256.Sum256([]byte("other")), now) != nil {
		t.Error("a session answered for another token")
	}
}
