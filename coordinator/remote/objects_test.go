package remote_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/coordinator/remote"
	"github.com/outpost-edge/outpost/coordinator/remote/server"
)

// The link fetches code objects from the real server with its token;
// an unknown object is ErrObjectNotFound; a call's digest reaches the
// journal and the executor (which admits it although the task is unknown).
func TestLinkObjects(t *testing.T) {
	cl := startCloud(t, server.Options{Tokens: map[string]string{"good": "edge-1"}})
	tok := tempFile(t, "good\n")
	e := startEdge(t, cl, t.TempDir(), func(c *remote.Config) { c.TokenFile = tok })
	body := bytes.Repeat([]byte("module "), 1000)
	info, err := cl.srv.PutObject(bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	t.Run("stored", func(t *testing.T) {
		rc, size, err := e.c.OpenObject(ctx, info.Digest)
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(rc)
		rc.Close()
		if err != nil || !bytes.Equal(got, body) || size != int64(len(body)) {
			t.Fatalf("object: %d bytes (announced %d), err %v; want %d bytes", len(got), size, err, len(body))
		}
	})
	t.Run("unknown", func(t *testing.T) {
		_, _, err := e.c.OpenObject(ctx, "sha256:"+strings.Repeat("0", 64))
		if !errors.Is(err, remote.ErrObjectNotFound) {
			t.Fatalf("err %v, want ErrObjectNotFound", err)
		}
	})
	t.Run("not a digest", func(t *testing.T) {
		if _, _, err := e.c.OpenObject(ctx, "sha256:../../x"); err == nil || !strings.Contains(err.Error(), "not a sha256:HEX digest") {
			t.Fatalf("err %v", err)
		}
	})
	t.Run("digest carried to the node", func(t *testing.T) {
		cl.enqueue(server.Call{ID: "with-digest", Node: "edge-1", Task: "not-loaded", Digest: info.Digest, Input: []byte("x"), Effect: "idempotent"})
		cl.waitFinal([]string{"with-digest"}, 10*time.Second)
		r, err := e.j.Get("with-digest")
		if err != nil || r == nil || r.Digest != info.Digest {
			t.Fatalf("journal record %+v %v, want digest %s", r, err, info.Digest)
		}
		if e.ex.count("with-digest") != 1 {
			t.Fatalf("executor saw the call %d times, want 1 (admitted for an unknown task with a digest)", e.ex.count("with-digest"))
		}
	})
}
