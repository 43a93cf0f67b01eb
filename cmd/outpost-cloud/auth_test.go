package main

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/internal/syncbuf"
)

// serve runs `outpost-cloud serve` in process on a free loopback port and
// returns its URL and its log; it stops with the test.
func serve(t *testing.T, args ...string) (string, *syncbuf.Buffer) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var out, logs syncbuf.Buffer
	done := make(chan int, 1)
	// The data dir is made before the server's cleanup is registered, so
	// that it is removed after the server has stopped (cleanups run last
	// in, first out).
	args = append([]string{"serve", "--listen", "127.0.0.1:0", "--data", filepath.Join(t.TempDir(), "cloud")}, args...)
	go func() { done <- run(ctx, args, nil, &out, &logs) }()
	t.Cleanup(func() {
		cancel()
		if code := <-done; code != 0 {
			t.Errorf("serve exited %d:\n%s", code, logs.String())
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		if addr, ok := strings.CutPrefix(strings.TrimSpace(out.String()), "listening on "); ok {
			return "http://" + addr, &logs
		}
		select {
		case code := <-done:
			t.Fatalf("serve exited %d before listening:\n%s", code, logs.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("serve not listening after 10s:\n%s", logs.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// runCLI runs one client subcommand in process.
func runCLI(args ...string) (int, string, string) {
	var out, errOut bytes.Buffer
	code := run(context.Background(), args, strings.NewReader(""), &out, &errOut)
	return code, out.String(), errOut.String()
}

// The operator API wants the token from --operator-token-file; every CLI
// subcommand sends it from --token-file or $OUTPOST_CLOUD_TOKEN_FILE, and
// without it gets a clear 401.
func TestOperatorTokenCLI(t *testing.T) {
	dir := t.TempDir()
	tok := filepath.Join(dir, "operator.token")
	if err := os.WriteFile(tok, []byte("op-secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	wrong := filepath.Join(dir, "wrong.token")
	_ = os.WriteFile(wrong, []byte("not-it"), 0o600)
	url, logs := serve(t, "--operator-token-file", tok)
	items := filepath.Join(dir, "items.jsonl")
	_ = os.WriteFile(items, []byte("{\"n\":1}\n"), 0o600)

	commands := []struct {
		name string
		args []string
	}{
		{"enqueue", []string{"enqueue", "--node", "edge-1", "--task", "echo", "--id", "c1", "--data", "x"}},
		{"results", []string{"results"}},
		{"nodes", []string{"nodes"}},
		{"cancel", []string{"cancel", "c1"}},
		{"batch", []string{"batch", "--node", "edge-1", "--task", "echo", "--timeout", "300ms", items}},
	}
	for _, c := range commands {
		t.Run(c.name, func(t *testing.T) {
			base := append(append([]string{}, c.args[0], "--server", url), c.args[1:]...)
			code, _, stderr := runCLI(base...)
			if code != 1 || !strings.Contains(stderr, "401 Unauthorized") || !strings.Contains(stderr, "missing bearer token") {
				t.Errorf("without a token: exit %d, %q", code, stderr)
			}
			code, _, stderr = runCLI(append(base, "--token-file", wrong)...)
			if code != 1 || !strings.Contains(stderr, "wrong bearer token") {
				t.Errorf("wrong token: exit %d, %q", code, stderr)
			}
			code, _, stderr = runCLI(append(base, "--token-file", filepath.Join(dir, "nope"))...)
			if code != 1 || !strings.Contains(stderr, "read operator token (--token-file)") {
				t.Errorf("missing token file: exit %d, %q", code, stderr)
			}
		})
	}
	// With the token (flag, then the environment variable): the calls go
	// through. No node runs them: batch ends at its timeout, not a 401.
	if code, out, stderr := runCLI("enqueue", "--server", url, "--token-file", tok, "--node", "edge-1", "--task", "echo", "--id", "c1", "--data", "x"); code != 0 || strings.TrimSpace(out) != "c1" {
		t.Fatalf("enqueue with --token-file: exit %d %q %q", code, out, stderr)
	}
	t.Setenv(tokenFileEnv, tok)
	if code, out, stderr := runCLI("results", "--server", url); code != 0 || !strings.Contains(out, "c1") {
		t.Errorf("results with $%s: exit %d %q %q", tokenFileEnv, code, out, stderr)
	}
	if code, out, stderr := runCLI("nodes", "--server", url); code != 0 || !strings.Contains(out, "NODE") {
		t.Errorf("nodes: exit %d %q %q", code, out, stderr)
	}
	if code, _, stderr := runCLI("cancel", "--server", url, "c1"); code != 0 {
		t.Errorf("cancel: exit %d %q", code, stderr)
	}
	if code, out, stderr := runCLI("batch", "--server", url, "--node", "edge-1", "--task", "echo", "--timeout", "300ms", items); code != 1 || !strings.Contains(out, "1 enqueued") || !strings.Contains(stderr, "without a result") {
		t.Errorf("batch: exit %d %q %q", code, out, stderr)
	}
	if strings.Contains(logs.String(), "no authentication") {
		t.Errorf("warned about an open operator API although a token is set:\n%s", logs.String())
	}
}

// Loopback without an operator token: allowed for local use, with a
// warning; beyond loopback it is refused before serving.
func TestServeOperatorTokenRequiredBeyondLoopback(t *testing.T) {
	url, logs := serve(t)
	if code, _, stderr := runCLI("nodes", "--server", url); code != 0 {
		t.Errorf("open loopback operator API: exit %d %q", code, stderr)
	}
	if !strings.Contains(logs.String(), "operator API has no authentication (loopback only") {
		t.Errorf("no warning for an open operator API:\n%s", logs.String())
	}

	code, _, stderr := runCLI("serve", "--listen", "0.0.0.0:0", "--data", filepath.Join(t.TempDir(), "cloud"))
	if code != 2 || !strings.Contains(stderr, "refusing to serve the operator API without authentication on a non-loopback address: give --operator-token-file") {
		t.Errorf("serve on all interfaces without a token: exit %d %q", code, stderr)
	}

	// The rule itself, for addresses the test does not listen on.
	log := slog.New(slog.DiscardHandler)
	tests := []struct {
		name  string
		addr  net.Addr
		token string
		want  error
	}{
		{"loopback v4, no token", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)}, "", nil},
		{"loopback v6, no token", &net.TCPAddr{IP: net.IPv6loopback}, "", nil},
		{"all interfaces, no token", &net.TCPAddr{IP: net.IPv4zero}, "", errOpenOperatorAPI},
		{"public address, no token", &net.TCPAddr{IP: net.IPv4(192, 0, 2, 7)}, "", errOpenOperatorAPI},
		{"public address, token", &net.TCPAddr{IP: net.IPv4(192, 0, 2, 7)}, "/etc/outpost-cloud/operator.token", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := checkOperatorAuth(tt.addr, tt.token, log); !errors.Is(err, tt.want) {
				t.Errorf("checkOperatorAuth = %v, want %v", err, tt.want)
			}
		})
	}
}

// Secret files that group or others may read are refused, naming the file,
// its mode and the fix: node tokens, the operator token (server and CLI)
// and the TLS key.
func TestSecretFilesReadableByOthersRefused(t *testing.T) {
	dir := t.TempDir()
	file := func(name, content string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	tokens := file("tokens", "edge-1 node-secret\n", 0o644)
	op := file("operator.token", "op-secret\n", 0o640)
	key := file("key.pem", "not read\n", 0o604)
	cert := file("cert.pem", "not read\n", 0o644)
	data := filepath.Join(dir, "cloud")
	for _, tc := range []struct {
		name string
		args []string
		file string
		mode string
	}{
		{"node tokens", []string{"serve", "--listen", "127.0.0.1:0", "--data", data, "--tokens", tokens}, tokens, "0644"},
		{"operator token", []string{"serve", "--listen", "127.0.0.1:0", "--data", data, "--operator-token-file", op}, op, "0640"},
		{"tls key", []string{"serve", "--listen", "127.0.0.1:0", "--data", data, "--tls-cert", cert, "--tls-key", key}, key, "0604"},
		{"cli token", []string{"nodes", "--server", "http://127.0.0.1:1", "--token-file", op}, op, "0640"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, _, stderr := runCLI(tc.args...)
			want := "secret file " + tc.file + " is readable by group or others (mode " + tc.mode + "): run `chmod 600 " + tc.file + "`"
			if code == 0 || !strings.Contains(stderr, want) {
				t.Errorf("exit %d, stderr %q; want %q", code, stderr, want)
			}
		})
	}
}
