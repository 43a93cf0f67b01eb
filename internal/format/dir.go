package format

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/outpost-edge/outpost/internal/syncfile"
)

// FileName is the file that holds a directory store's format version.
const FileName = "FORMAT"

// OpenDir reads dir/FORMAT (files without it mark a store that existed
// before versions: version 1), creating dir if needed, and runs the steps
// to the current version. Each step copies dir to dir.migrating, runs on
// the copy, writes the new FORMAT there, and swaps the copy in with two
// renames through dir.old; a crash between them is rolled back to the old
// format at the next open.
func (f *Store) OpenDir(dir string, log *slog.Logger) error {
	if err := recoverDir(dir); err != nil {
		return fmt.Errorf("%s: recover an interrupted migration: %w", f.Name, err)
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return fmt.Errorf("%s: %w", f.Name, err)
	}
	found, stamped, err := readDir(dir)
	if err != nil {
		return fmt.Errorf("%s: read format version: %w", f.Name, err)
	}
	if !stamped && found == 0 {
		found = f.Current
	}
	steps, err := f.plan(found)
	if err != nil {
		return err
	}
	for _, s := range steps {
		start := time.Now()
		log.Info("migrating format", "store", f.Name, "from", s.From, "to", s.From+1, "step", s.What)
		if err := migrateDir(dir, s); err != nil {
			return fmt.Errorf("%s: migrate format %d to %d (%s): %w", f.Name, s.From, s.From+1, s.What, err)
		}
		log.Info("migrated format", "store", f.Name, "to", s.From+1, "took", time.Since(start).Round(time.Millisecond))
	}
	if !stamped {
		if err := writeVersion(dir, f.Current); err != nil {
			return fmt.Errorf("%s: record format version: %w", f.Name, err)
		}
	}
	return nil
}

// recoverDir finishes or rolls back a swap cut short by a crash: without
// dir, dir.old is the old format; with dir, leftovers are removed.
func recoverDir(dir string) error {
	old, staged := dir+".old", dir+".migrating"
	if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
		if _, err := os.Stat(old); err == nil {
			if err := os.Rename(old, dir); err != nil {
				return err
			}
		}
	}
	if err := os.RemoveAll(staged); err != nil {
		return err
	}
	return os.RemoveAll(old)
}

func readDir(dir string) (v int, stamped bool, err error) {
	b, err := os.ReadFile(filepath.Join(dir, FileName))
	if err == nil {
		v, err = parseVersion(b)
		return v, err == nil, err
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return 0, false, err
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return 0, false, err
	}
	if len(ents) > 0 {
		return 1, false, nil
	}
	return 0, false, nil
}

// writeVersion writes dir/FORMAT through a synced temporary file.
func writeVersion(dir string, v int) error {
	tmp := filepath.Join(dir, FileName+".tmp")
	if err := os.WriteFile(tmp, []byte(strconv.Itoa(v)+"\n"), 0o640); err != nil {
		return err
	}
	if err := syncPath(tmp); err != nil {
		return err
	}
	if err := os.Rename(tmp, filepath.Join(dir, FileName)); err != nil {
		return err
	}
	return syncPath(dir)
}

func migrateDir(dir string, s Step) error {
	staged, old := dir+".migrating", dir+".old"
	if err := os.RemoveAll(staged); err != nil {
		return err
	}
	if err := copyTree(dir, staged); err != nil {
		return fmt.Errorf("stage a copy: %w", err)
	}
	if err := s.Dir(staged); err != nil {
		_ = os.RemoveAll(staged)
		return err
	}
	if err := writeVersion(staged, s.From+1); err != nil {
		return err
	}
	if err := os.Rename(dir, old); err != nil {
		return err
	}
	if err := os.Rename(staged, dir); err != nil {
		return err
	}
	if err := syncPath(filepath.Dir(dir)); err != nil {
		return err
	}
	return os.RemoveAll(old)
}

// copyTree copies the regular files and directories under src to dst,
// synced.
func copyTree(src, dst string) error {
	return filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		to := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(to, 0o750)
		}
		if !d.Type().IsRegular() {
			return nil
		}
		return copyFile(p, to)
	})
}

func copyFile(from, to string) error {
	in, err := os.Open(from)
	if err != nil {
		return err
	}
	defer in.Close()
	return syncfile.WriteNew(to, 0o640, in)
}

func syncPath(p string) error {
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}
