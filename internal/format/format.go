// Package format gives every on-disk store a format version and moves an
// older store forward at open, one step at a time.
//
// A badger store keeps its version in one key; a directory store (blobs,
// objects) in a FORMAT file. A store without a version record that holds
// data was written before versions existed and is version 1; an empty one
// is stamped with the current version. A newer version is refused, naming
// both versions and the binary's version, as PostgreSQL refuses a data
// directory of another major version.
//
// Every step is crash-safe: a badger step runs in the same transaction as
// the version bump, and a directory step runs on a staged copy that is
// renamed over the original only when complete. A crash leaves either the
// old format or the new one, never a mix.
package format

import (
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/outpost-edge/outpost/internal/buildinfo"
)

// ErrNewer is returned when a store was written by a newer binary.
var ErrNewer = errors.New("format newer than this binary understands")

// Step migrates a store from version From to From+1. A badger store's step
// sets Txn, a directory store's step sets Dir.
type Step struct {
	From int
	What string // logged while the step runs
	// Txn rewrites records inside the transaction that bumps the version.
	Txn func(txn *badger.Txn) error
	// Dir rewrites a staged copy of the directory (see OpenDir).
	Dir func(staged string) error
}

// Store is the format of one kind of store: its name for messages, its
// current version and the steps that lead to it.
type Store struct {
	Name    string
	Current int
	steps   map[int]Step
}

// New returns the format of a store at version current.
func New(name string, current int) *Store {
	return &Store{Name: name, Current: current, steps: map[int]Step{}}
}

// Register adds the step from s.From to s.From+1. Every version below
// Current needs one before a store at that version can be opened.
func (f *Store) Register(s Step) { f.steps[s.From] = s }

// refuse is the error for a store written by a newer binary.
func (f *Store) refuse(found int) error {
	return fmt.Errorf("%s has format version %d, this binary (outpost %s) reads up to version %d: %w; run the newer outpost again or restore a backup taken with this version",
		f.Name, found, buildinfo.Version(), f.Current, ErrNewer)
}

// plan checks found against the current version and returns the steps to
// run, in order.
func (f *Store) plan(found int) ([]Step, error) {
	if found > f.Current {
		return nil, f.refuse(found)
	}
	var steps []Step
	for v := found; v < f.Current; v++ {
		s, ok := f.steps[v]
		if !ok {
			return nil, fmt.Errorf("%s: no migration from format version %d to %d", f.Name, v, v+1)
		}
		steps = append(steps, s)
	}
	return steps, nil
}

func parseVersion(b []byte) (int, error) {
	v, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || v < 1 {
		return 0, fmt.Errorf("bad format version %q", b)
	}
	return v, nil
}

// OpenBadger reads the version at key in db (data under prefix, besides
// the key, marks a store that existed before versions: version 1), runs
// the steps to the current version, each in one transaction with the
// version bump and synced, and stamps a new store.
func (f *Store) OpenBadger(db *badger.DB, key, prefix []byte, log *slog.Logger) error {
	found, stamped, err := readBadger(db, key, prefix)
	if err != nil {
		return fmt.Errorf("%s: read format version: %w", f.Name, err)
	}
	if !stamped && found == 0 {
		found = f.Current // empty: nothing to migrate
	}
	steps, err := f.plan(found)
	if err != nil {
		return err
	}
	for _, s := range steps {
		start := time.Now()
		log.Info("migrating format", "store", f.Name, "from", s.From, "to", s.From+1, "step", s.What)
		err := db.Update(func(txn *badger.Txn) error {
			if err := s.Txn(txn); err != nil {
				return err
			}
			return txn.Set(key, []byte(strconv.Itoa(s.From+1)))
		})
		if err == nil {
			err = db.Sync()
		}
		if err != nil {
			return fmt.Errorf("%s: migrate format %d to %d (%s): %w", f.Name, s.From, s.From+1, s.What, err)
		}
		log.Info("migrated format", "store", f.Name, "to", s.From+1, "took", time.Since(start).Round(time.Millisecond))
	}
	if !stamped {
		if err := db.Update(func(txn *badger.Txn) error { return txn.Set(key, []byte(strconv.Itoa(f.Current))) }); err != nil {
			return fmt.Errorf("%s: record format version: %w", f.Name, err)
		}
		if err := db.Sync(); err != nil {
			return fmt.Errorf("%s: record format version: %w", f.Name, err)
		}
	}
	return nil
}

// readBadger returns the recorded version (stamped), or 1 when data
// exists without a record, or 0 for an empty store.
func readBadger(db *badger.DB, key, prefix []byte) (v int, stamped bool, err error) {
	err = db.View(func(txn *badger.Txn) error {
		item, err := txn.Get(key)
		if err == nil {
			b, err := item.ValueCopy(nil)
			if err != nil {
				return err
			}
			v, err = parseVersion(b)
			stamped = err == nil
			return err
		}
		if !errors.Is(err, badger.ErrKeyNotFound) {
			return err
		}
		it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			if string(it.Item().Key()) != string(key) {
				v = 1
				break
			}
		}
		return nil
	})
	return v, stamped, err
}
