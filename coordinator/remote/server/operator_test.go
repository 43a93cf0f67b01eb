package server

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/coordinator/remote"
)

func openWithOperatorToken(t *testing.T, tokenFile string) *httptest.Server {
	t.Helper()
	s, err := Open(Options{Dir: t.TempDir(), OperatorTokenFile: tokenFile})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(s.Handler())
	t.Cleanup(func() { hs.Close(); _ = s.Close() })
	return hs
}

// request sends one request with an optional bearer token and returns the
// status and body.
func request(t *testing.T, method, url, token string) (int, string) {
	t.Helper()
	body := io.Reader(nil)
	if method == "POST" {
		body = strings.NewReader(`{"calls":[{"id":"c1","node":"n1","task":"t"}],"ids":["c1"]}`)
	}
	req, _ := http.NewRequest(method, url, body)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	req.Header.Set(remote.HeaderProtocol, remote.Protocol)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// Every operator endpoint wants the operator token: 401 without it or with
// a wrong one, with a message that says which; the node endpoints do not.
func TestOperatorToken(t *testing.T) {
	tok := filepath.Join(t.TempDir(), "operator.token")
	if err := os.WriteFile(tok, []byte("s3cret-operator\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	hs := openWithOperatorToken(t, tok)
	endpoints := []struct{ method, path string }{
		{"POST", "/api/v1/calls"},
		{"POST", "/api/v1/calls:status"},
		{"GET", "/api/v1/calls"},
		{"GET", "/api/v1/calls/c1"},
		{"GET", "/api/v1/nodes"},
		{"DELETE", "/api/v1/calls/c1"},
	}
	for _, ep := range endpoints {
		t.Run(ep.method+" "+ep.path, func(t *testing.T) {
			if code, body := request(t, ep.method, hs.URL+ep.path, ""); code != 401 || !strings.Contains(body, "missing bearer token") {
				t.Errorf("no token: %d %s", code, body)
			}
			if code, body := request(t, ep.method, hs.URL+ep.path, "s3cret-operatoR"); code != 401 || !strings.Contains(body, "wrong bearer token") {
				t.Errorf("wrong token: %d %s", code, body)
			}
			if code, body := request(t, ep.method, hs.URL+ep.path, "s3cret-operator"); code == 401 || code >= 500 {
				t.Errorf("right token: %d %s", code, body)
			}
		})
	}
	// The node endpoints keep their own credentials (none configured here).
	if code, body := request(t, "GET", hs.URL+"/edge/v1/nodes/n1/calls?state=pending", ""); code != 200 {
		t.Errorf("node endpoint behind the operator token: %d %s", code, body)
	}
}

// A rotated token file takes effect on the next request; an unreadable or
// emptied one lets no one in.
func TestOperatorTokenRotation(t *testing.T) {
	dir := t.TempDir()
	tok := filepath.Join(dir, "operator.token")
	if err := os.WriteFile(tok, []byte("first"), 0o600); err != nil {
		t.Fatal(err)
	}
	hs := openWithOperatorToken(t, tok)
	if code, _ := request(t, "GET", hs.URL+"/api/v1/nodes", "first"); code != 200 {
		t.Fatalf("first token: %d", code)
	}
	// Rotate by rename, as an operator or a secret manager would.
	tmp := filepath.Join(dir, "new")
	if err := os.WriteFile(tmp, []byte("second-token"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, tok); err != nil {
		t.Fatal(err)
	}
	if code, _ := request(t, "GET", hs.URL+"/api/v1/nodes", "first"); code != 401 {
		t.Errorf("old token after the rotation: %d", code)
	}
	if code, _ := request(t, "GET", hs.URL+"/api/v1/nodes", "second-token"); code != 200 {
		t.Errorf("new token: %d", code)
	}
	// Same size, rewritten in place: the modification time changes.
	time.Sleep(10 * time.Millisecond) // distinct mtime even on coarse file systems
	if err := os.WriteFile(tok, []byte("third-token!"), 0o600); err != nil {
		t.Fatal(err)
	}
	if code, _ := request(t, "GET", hs.URL+"/api/v1/nodes", "third-token!"); code != 200 {
		t.Errorf("token rewritten in place: %d", code)
	}
	for name, content := range map[string]*string{"emptied": ptr("  \n"), "deleted": nil} {
		if content == nil {
			_ = os.Remove(tok)
		} else if err := os.WriteFile(tok, []byte(*content), 0o600); err != nil {
			t.Fatal(err)
		}
		if code, body := request(t, "GET", hs.URL+"/api/v1/nodes", "third-token!"); code != 503 || !strings.Contains(body, "cannot read its operator token") {
			t.Errorf("%s token file: %d %s", name, code, body)
		}
	}
}

func ptr(s string) *string { return &s }

// Open refuses a token file that is missing or empty, naming it.
func TestOperatorTokenFileRefused(t *testing.T) {
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty")
	_ = os.WriteFile(empty, []byte("\n"), 0o600)
	if _, err := Open(Options{Dir: t.TempDir(), OperatorTokenFile: empty}); !errors.Is(err, ErrNoOperatorToken) || !strings.Contains(err.Error(), empty) {
		t.Errorf("empty token file: %v", err)
	}
	missing := filepath.Join(dir, "missing")
	if _, err := Open(Options{Dir: t.TempDir(), OperatorTokenFile: missing}); !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), missing) {
		t.Errorf("missing token file: %v", err)
	}
}
