package coordinator

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/coordinator/admin"
)

// A daemon stopped while a client reads a backup slowly stops cleanly and
// promptly: the stream is cut (the client's backup.Copy calls such a
// stream incomplete) and the backup ends before the state store closes
// under it; no backup starts after.
func TestStopDuringBackup(t *testing.T) {
	cfg := testConfig(t)
	c := New(cfg, quiet, "test")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx, nil) }()
	select {
	case <-c.Ready():
	case err := <-done:
		t.Fatal(err)
	}
	// 16 MiB of kv: more than the socket buffers hold.
	val := bytes.Repeat([]byte("v"), 64<<10)
	for i := range 256 {
		if err := c.db.Bucket("kv").Put([]byte{byte(i)}, val); err != nil {
			t.Fatal(err)
		}
	}
	tok, err := admin.ReadToken(cfg.Admin.TokenPath(cfg.DataDir))
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest(http.MethodGet, "http://"+c.AdminAddr()+"/v1/backup", nil)
	req.Header.Set("Authorization", "Bearer "+string(tok))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if _, err := io.ReadFull(resp.Body, make([]byte, 4096)); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond) // the backup blocks on the unread stream
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("stop: %v", err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("the daemon did not stop while a backup was read")
	}
	if n, err := io.Copy(io.Discard, resp.Body); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("the rest of the backup (%d bytes) read with %v, want it cut", n, err)
	}
	if err := c.Backup(io.Discard, false); !errors.Is(err, admin.ErrConflict) {
		t.Fatalf("a backup after the stop: %v", err)
	}
}
