package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dgraph-io/badger/v4"
)

// A data dir whose state store a newer outpost wrote is refused at start:
// the daemon exits, naming the store, both versions and its own version.
func TestNewerFormatRefused(t *testing.T) {
	dir := t.TempDir()
	state := filepath.Join(dir, "data", "state")
	db, err := badger.Open(badger.DefaultOptions(state).WithLogger(nil))
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(txn *badger.Txn) error { return txn.Set([]byte("format/store"), []byte("7")) }); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "outpost.yaml")
	if err := os.WriteFile(cfg, []byte("data_dir: "+filepath.Join(dir, "data")+"\nadmin: {listen: \"127.0.0.1:0\"}\nmqtt: {broker: {listen: \"127.0.0.1:0\"}}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, errOut, code := runCmd(t, exec.Command(binPath, "run", "--config", cfg))
	if code == 0 || !strings.Contains(errOut, "state store has format version 7") || !strings.Contains(errOut, "reads up to version 1") || !strings.Contains(errOut, "this binary (outpost ") {
		t.Fatalf("exit %d:\n%s", code, errOut)
	}
}
