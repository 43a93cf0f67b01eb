package format

import (
	"bufio"
	"errors"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dgraph-io/badger/v4"

	"github.com/outpost-edge/outpost/internal/buildinfo"
)

var (
	verKey = []byte("format/test")
	quiet  = slog.New(slog.DiscardHandler)
)

func openDB(t testing.TB, dir string) *badger.DB {
	t.Helper()
	db, err := badger.Open(badger.DefaultOptions(dir).WithLogger(nil).WithMemTableSize(1 << 20).WithValueThreshold(1 << 10))
	if err != nil {
		t.Fatal(err)
	}
	return db
}

func get(t testing.TB, db *badger.DB, k string) string {
	t.Helper()
	var v []byte
	err := db.View(func(txn *badger.Txn) error {
		item, err := txn.Get([]byte(k))
		if errors.Is(err, badger.ErrKeyNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		v, err = item.ValueCopy(nil)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return string(v)
}

func put(t testing.TB, db *badger.DB, k, v string) {
	t.Helper()
	if err := db.Update(func(txn *badger.Txn) error { return txn.Set([]byte(k), []byte(v)) }); err != nil {
		t.Fatal(err)
	}
}

// v2 is a test-only format: version 2 renames "rec/<id>" values to upper
// case and writes "rec/n", the record count. fail, when set, runs after
// the rewrites, inside the step.
func v2(fail func() error) *Store {
	f := New("test store", 2)
	f.Register(Step{From: 1, What: "upper-case records", Txn: func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte("rec/")})
		var keys, vals [][]byte
		for it.Rewind(); it.Valid(); it.Next() {
			v, err := it.Item().ValueCopy(nil)
			if err != nil {
				it.Close()
				return err
			}
			keys, vals = append(keys, it.Item().KeyCopy(nil)), append(vals, v)
		}
		it.Close()
		for i, k := range keys {
			if err := txn.Set(k, []byte(strings.ToUpper(string(vals[i])))); err != nil {
				return err
			}
		}
		if err := txn.Set([]byte("rec/n"), []byte{byte('0' + len(keys))}); err != nil {
			return err
		}
		if fail != nil {
			return fail()
		}
		return nil
	}})
	return f
}

// v1Store returns a dir holding a version 1 store with two records.
func v1Store(t *testing.T) string {
	dir := t.TempDir()
	db := openDB(t, dir)
	if err := New("test store", 1).OpenBadger(db, verKey, []byte(""), quiet); err != nil {
		t.Fatal(err)
	}
	put(t, db, "rec/a", "alpha")
	put(t, db, "rec/b", "beta")
	db.Close()
	return dir
}

func TestBadgerMigration(t *testing.T) {
	t.Run("fresh store is stamped current", func(t *testing.T) {
		db := openDB(t, t.TempDir())
		defer db.Close()
		if err := v2(nil).OpenBadger(db, verKey, nil, quiet); err != nil {
			t.Fatal(err)
		}
		if v := get(t, db, string(verKey)); v != "2" || get(t, db, "rec/n") != "" {
			t.Fatalf("version %q, rec/n %q: want 2 and no step run", v, get(t, db, "rec/n"))
		}
	})
	t.Run("unversioned data is version 1", func(t *testing.T) {
		dir := t.TempDir()
		db := openDB(t, dir)
		put(t, db, "rec/a", "alpha")
		if err := New("test store", 1).OpenBadger(db, verKey, nil, quiet); err != nil {
			t.Fatal(err)
		}
		if v := get(t, db, string(verKey)); v != "1" {
			t.Fatalf("version %q, want 1", v)
		}
		db.Close()
	})
	t.Run("1 to 2", func(t *testing.T) {
		dir := v1Store(t)
		db := openDB(t, dir)
		defer db.Close()
		var logs strings.Builder
		if err := v2(nil).OpenBadger(db, verKey, nil, slog.New(slog.NewTextHandler(&logs, nil))); err != nil {
			t.Fatal(err)
		}
		if get(t, db, string(verKey)) != "2" || get(t, db, "rec/a") != "ALPHA" || get(t, db, "rec/b") != "BETA" || get(t, db, "rec/n") != "2" {
			t.Fatalf("not migrated: version %q a %q b %q n %q", get(t, db, string(verKey)), get(t, db, "rec/a"), get(t, db, "rec/b"), get(t, db, "rec/n"))
		}
		if !strings.Contains(logs.String(), "migrating format") || !strings.Contains(logs.String(), "from=1 to=2") {
			t.Fatalf("step not logged: %s", logs.String())
		}
	})
	t.Run("failed step keeps version 1", func(t *testing.T) {
		dir := v1Store(t)
		db := openDB(t, dir)
		defer db.Close()
		boom := errors.New("disk full")
		if err := v2(func() error { return boom }).OpenBadger(db, verKey, nil, quiet); !errors.Is(err, boom) {
			t.Fatalf("err %v, want the step's", err)
		}
		if get(t, db, string(verKey)) != "1" || get(t, db, "rec/a") != "alpha" || get(t, db, "rec/n") != "" {
			t.Fatal("a failed step left a mix of formats")
		}
		if err := v2(nil).OpenBadger(db, verKey, nil, quiet); err != nil || get(t, db, "rec/a") != "ALPHA" {
			t.Fatalf("retry: %v, a %q", err, get(t, db, "rec/a"))
		}
	})
	t.Run("newer refused", func(t *testing.T) {
		dir := t.TempDir()
		db := openDB(t, dir)
		defer db.Close()
		put(t, db, string(verKey), "3")
		err := v2(nil).OpenBadger(db, verKey, nil, quiet)
		if !errors.Is(err, ErrNewer) || !strings.Contains(err.Error(), "format version 3") || !strings.Contains(err.Error(), "up to version 2") || !strings.Contains(err.Error(), "outpost "+buildinfo.Version()) {
			t.Fatalf("err %v", err)
		}
	})
	t.Run("missing step", func(t *testing.T) {
		dir := v1Store(t)
		db := openDB(t, dir)
		defer db.Close()
		if err := New("test store", 2).OpenBadger(db, verKey, nil, quiet); err == nil || !strings.Contains(err.Error(), "no migration from format version 1 to 2") {
			t.Fatalf("err %v", err)
		}
	})
}

// TestBadgerMigrationKilled kills a process with kill -9 while its step
// is half done: the store reopens at version 1, untouched.
func TestBadgerMigrationKilled(t *testing.T) {
	if dir := os.Getenv("FORMAT_TEST_CHILD"); dir != "" {
		db := openDB(t, dir)
		_ = v2(func() error {
			os.Stdout.WriteString("in step\n")
			select {} // killed here
		}).OpenBadger(db, verKey, nil, quiet)
		return
	}
	dir := v1Store(t)
	cmd := exec.Command(os.Args[0], "-test.run=^TestBadgerMigrationKilled$")
	cmd.Env = append(os.Environ(), "FORMAT_TEST_CHILD="+dir)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line, _ := bufio.NewReader(out).ReadString('\n')
	if line != "in step\n" {
		t.Fatalf("child said %q", line)
	}
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
	db := openDB(t, dir)
	defer db.Close()
	if get(t, db, string(verKey)) != "1" || get(t, db, "rec/a") != "alpha" || get(t, db, "rec/n") != "" {
		t.Fatalf("after kill: version %q a %q n %q", get(t, db, string(verKey)), get(t, db, "rec/a"), get(t, db, "rec/n"))
	}
	if err := v2(nil).OpenBadger(db, verKey, nil, quiet); err != nil || get(t, db, "rec/a") != "ALPHA" {
		t.Fatalf("migrate after kill: %v", err)
	}
}

func dirV2(fail error) *Store {
	f := New("test dir", 2)
	f.Register(Step{From: 1, What: "add an index", Dir: func(staged string) error {
		if err := os.WriteFile(filepath.Join(staged, "index"), []byte("blob\n"), 0o640); err != nil {
			return err
		}
		return fail
	}})
	return f
}

func TestDirMigration(t *testing.T) {
	v1 := func(t *testing.T) string {
		dir := filepath.Join(t.TempDir(), "blobs")
		if err := New("test dir", 1).OpenDir(dir, quiet); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "blob"), []byte("x"), 0o640); err != nil {
			t.Fatal(err)
		}
		return dir
	}
	read := func(p string) string { b, _ := os.ReadFile(p); return string(b) }
	t.Run("1 to 2", func(t *testing.T) {
		dir := v1(t)
		if err := dirV2(nil).OpenDir(dir, quiet); err != nil {
			t.Fatal(err)
		}
		if read(filepath.Join(dir, FileName)) != "2\n" || read(filepath.Join(dir, "index")) != "blob\n" || read(filepath.Join(dir, "blob")) != "x" {
			t.Fatal("not migrated")
		}
	})
	t.Run("failed step keeps version 1", func(t *testing.T) {
		dir := v1(t)
		if err := dirV2(errors.New("boom")).OpenDir(dir, quiet); err == nil {
			t.Fatal("no error")
		}
		if read(filepath.Join(dir, FileName)) != "1\n" || read(filepath.Join(dir, "index")) != "" {
			t.Fatal("a failed step changed the store")
		}
		if _, err := os.Stat(dir + ".migrating"); err == nil {
			t.Fatal("staged copy left behind")
		}
	})
	t.Run("crash between the renames rolls back", func(t *testing.T) {
		dir := v1(t)
		// The state a kill leaves after the first rename: the old store
		// moved aside, the new one staged.
		if err := copyTree(dir, dir+".migrating"); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(dir, dir+".old"); err != nil {
			t.Fatal(err)
		}
		if err := New("test dir", 1).OpenDir(dir, quiet); err != nil {
			t.Fatal(err)
		}
		if read(filepath.Join(dir, FileName)) != "1\n" || read(filepath.Join(dir, "blob")) != "x" {
			t.Fatal("old store not restored")
		}
		for _, p := range []string{dir + ".old", dir + ".migrating"} {
			if _, err := os.Stat(p); err == nil {
				t.Fatalf("%s left behind", p)
			}
		}
	})
	t.Run("unversioned files are version 1", func(t *testing.T) {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, "blob"), []byte("x"), 0o640); err != nil {
			t.Fatal(err)
		}
		if err := dirV2(nil).OpenDir(dir, quiet); err != nil {
			t.Fatal(err)
		}
		if read(filepath.Join(dir, "index")) != "blob\n" {
			t.Fatal("step 1 to 2 not run on an unversioned store")
		}
	})
	t.Run("newer refused", func(t *testing.T) {
		dir := t.TempDir()
		if err := writeVersion(dir, 5); err != nil {
			t.Fatal(err)
		}
		if err := dirV2(nil).OpenDir(dir, quiet); !errors.Is(err, ErrNewer) || !strings.Contains(err.Error(), "format version 5") {
			t.Fatalf("err %v", err)
		}
	})
}
