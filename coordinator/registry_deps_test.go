package coordinator

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/outpost-edge/outpost/coordinator/admin"
)

func TestPinnedURL(t *testing.T) {
	pin := "#sha256=" + strings.Repeat("0a", 32)
	for _, c := range []struct{ name, ref, err string }{
		{"https", "https://example.com/m.wasm" + pin, ""},
		{"http loopback v4", "http://127.0.0.1:8080/m.wasm" + pin, ""},
		{"http localhost", "http://localhost/m.wasm" + pin, ""},
		{"http loopback v6", "http://[::1]:9/m.wasm" + pin, ""},
		{"upper case hex", "https://example.com/m.wasm#sha256=" + strings.Repeat("0A", 32), ""},
		{"http remote", "http://example.com/m.wasm" + pin, "only to a loopback host"},
		{"http private", "http://10.0.0.1/m.wasm" + pin, "only to a loopback host"},
		{"ftp", "ftp://example.com/m.wasm" + pin, `scheme "ftp"`},
		{"no pin", "https://example.com/m.wasm", "not pinned"},
		{"short pin", "https://example.com/m.wasm#sha256=abc", "not pinned"},
		{"other hash", "https://example.com/m.wasm#md5=" + strings.Repeat("0a", 16), "not pinned"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, digest, err := pinnedURL(c.ref)
			switch {
			case c.err == "" && (err != nil || digest != strings.Repeat("0a", 32)):
				t.Fatalf("%s: %q %v", c.ref, digest, err)
			case c.err != "" && (err == nil || !strings.Contains(err.Error(), c.err)):
				t.Fatalf("%s: %v, want %q", c.ref, err, c.err)
			}
		})
	}
}

func TestCapReader(t *testing.T) {
	r := &capReader{r: bytes.NewReader(make([]byte, 10)), left: 10}
	if b, err := io.ReadAll(r); err != nil || len(b) != 10 {
		t.Fatalf("at the bound: %d %v", len(b), err)
	}
	r = &capReader{r: bytes.NewReader(make([]byte, 11)), left: 10}
	if _, err := io.ReadAll(r); err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Fatalf("over the bound: %v", err)
	}
}

// A pinned URL is fetched once; a wrong digest stores nothing and names
// the URL; a redirect to plain http elsewhere is refused.
func TestFetchBlob(t *testing.T) {
	c := New(testConfig(t), quiet, "test")
	body := []byte("library bytes")
	sum := sha256.Sum256(body)
	digest := hex.EncodeToString(sum[:])
	var hits atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		switch r.URL.Path {
		case "/redirect":
			http.Redirect(w, r, "http://example.com/x", http.StatusFound)
		case "/missing":
			http.NotFound(w, r)
		default:
			_, _ = w.Write(body)
		}
	}))
	defer srv.Close()
	ctx := context.Background()
	blobDir := filepath.Dir(c.blobPath("x"))
	countFiles := func() int {
		ents, _ := os.ReadDir(blobDir)
		return len(ents)
	}

	wrong := srv.URL + "/m.wasm#sha256=" + strings.Repeat("ab", 32)
	_, err := c.fetchBlob(ctx, wrong)
	if !errors.Is(err, admin.ErrInvalid) || !errors.Is(err, errDigestMismatch) || !strings.Contains(err.Error(), wrong) {
		t.Fatalf("wrong digest: %v", err)
	}
	if n := countFiles(); n != 0 {
		t.Fatalf("%d files in the blob dir after a refused fetch", n)
	}
	for range 2 {
		got, err := c.fetchBlob(ctx, srv.URL+"/m.wasm#sha256="+digest)
		if err != nil || got != digest {
			t.Fatalf("fetch: %q %v", got, err)
		}
	}
	if b, err := os.ReadFile(c.blobPath(digest)); err != nil || !bytes.Equal(b, body) {
		t.Fatalf("stored blob: %q %v", b, err)
	}
	if hits.Load() != 2 {
		t.Fatalf("%d requests, want 2 (the wrong digest, then one fetch)", hits.Load())
	}
	for _, c2 := range []struct{ path, want string }{
		{"/redirect", "loopback"},
		{"/missing", "404"},
	} {
		if _, err := c.fetchBlob(ctx, srv.URL+c2.path+"#sha256="+strings.Repeat("cd", 32)); err == nil || !strings.Contains(err.Error(), c2.want) {
			t.Fatalf("%s: %v, want %q", c2.path, err, c2.want)
		}
	}
}

// resolveRef: an uploaded part, a stored blob, and what is neither.
func TestResolveRef(t *testing.T) {
	c := New(testConfig(t), quiet, "test")
	digest, _, err := c.StoreBlob(context.Background(), strings.NewReader("x"))
	if err != nil {
		t.Fatal(err)
	}
	objs := map[string]string{"lib.wasm": digest}
	for _, c2 := range []struct{ ref, want, err string }{
		{"lib.wasm", digest, ""},
		{"sha256:" + digest, digest, ""},
		{"sha256:" + strings.Repeat("ef", 32), "", "no stored blob"},
		{"other.wasm", "", "was not uploaded"},
		{"", "", "empty"},
	} {
		var held []string
		got, err := c.resolveRef(context.Background(), "libraries[0] (m)", c2.ref, objs, &held)
		c.releaseBlobs(held...)
		if c2.err == "" && (err != nil || got != c2.want) || c2.err != "" && (err == nil || !strings.Contains(err.Error(), c2.err) || !errors.Is(err, admin.ErrInvalid)) {
			t.Errorf("%q: %q %v", c2.ref, got, err)
		}
	}
}
