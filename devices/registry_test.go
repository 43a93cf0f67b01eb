package devices

import (
	"bytes"
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/internal/store"
)

// The registry keeps devices in the state store, with the secret's bcrypt
// hash only, and writes last seen back when it closes.
func TestRegistryPersists(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	db, err := store.Open(dir, store.Defaults(), testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	r := NewRegistry(testLogger(t))
	if err := r.Open(context.Background(), db.Bucket("devices")); err != nil {
		t.Fatal(err)
	}
	_, secret, err := r.Add("d1", []string{"g"})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		id   string
		want error
	}{
		{"taken", "d1", ErrDeviceExists},
		{"wildcard", "d+", ErrInvalidDevice},
		{"level separator", "a/b", ErrInvalidDevice},
		{"empty", "", ErrInvalidDevice},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, _, err := r.Add(tc.id, nil); !errors.Is(err, tc.want) {
				t.Errorf("add %q: %v, want %v", tc.id, err, tc.want)
			}
		})
	}
	if _, ok := r.Authenticate("d1", []byte(secret)); !ok {
		t.Fatal("right secret refused")
	}
	if _, ok := r.Authenticate("d1", []byte(secret+"x")); ok {
		t.Fatal("wrong secret accepted")
	}
	seen := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	if n := r.Connected("d1", "127.0.0.1:5000", seen); n != 1 || r.Online() != 1 {
		t.Errorf("connected: event %d, online %d", n, r.Online())
	}
	if err := r.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	raw, err := db.Bucket("devices").Get([]byte("d1"))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(raw, []byte(secret)) || !bytes.Contains(raw, []byte(`"hash":`)) {
		t.Errorf("stored record: %s", raw)
	}

	r2 := NewRegistry(testLogger(t))
	if err := r2.Open(context.Background(), db.Bucket("devices")); err != nil {
		t.Fatal(err)
	}
	d, err := r2.Get("d1")
	if err != nil {
		t.Fatal(err)
	}
	if !d.LastSeen.Equal(seen) || d.Address != "127.0.0.1:5000" || len(d.Groups) != 1 || d.Connected || r2.Online() != 0 {
		t.Errorf("after reopen (a connection does not outlive the process): %+v, online %d", d, r2.Online())
	}
	r2.Connected("d1", "127.0.0.1:5001", seen)
	r2.Connected("d1", "127.0.0.1:5002", seen)
	if n := r2.Disconnected("d1", "127.0.0.1:5001", ReasonClean, seen); n != 3 || r2.Online() != 1 {
		t.Errorf("one of two connections ended: event %d, online %d", n, r2.Online())
	}
	if groups, ok := r2.Authenticate("d1", []byte(secret)); !ok || groups[0] != "g" {
		t.Errorf("after reopen: authenticate %v %v", groups, ok)
	}
	if err := r2.Remove("d1"); err != nil {
		t.Fatal(err)
	}
	if _, ok := r2.Authenticate("d1", []byte(secret)); ok || r2.Known("d1") || r2.Online() != 0 {
		t.Errorf("a removed device authenticated, or is still counted online (%d)", r2.Online())
	}
	if err := r2.Remove("d1"); !errors.Is(err, ErrUnknownDevice) {
		t.Errorf("second remove: %v", err)
	}
	_ = r2.Close(context.Background())
	_ = db.Close()
}
