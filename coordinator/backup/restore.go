package backup

import (
	"archive/tar"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/dgraph-io/badger/v4"

	"github.com/outpost-edge/outpost/internal/store"
	"github.com/outpost-edge/outpost/internal/syncfile"
)

// phaseOf names the phase an entry belongs to.
func phaseOf(name string) string {
	switch {
	case name == manifestName:
		return "manifest"
	case strings.HasPrefix(name, statePrefix):
		return "state store"
	case strings.HasPrefix(name, telePrefix):
		return "telemetry store"
	case strings.HasPrefix(name, blobPrefix):
		return "blobs"
	case strings.HasPrefix(name, snapPrefix):
		return "snapshots"
	case strings.HasPrefix(name, filePrefix):
		return "files"
	}
	return name
}

// handler receives each entry of a backup in order; phaseEnd is called
// when the entries of a phase are over.
type handler interface {
	entry(h *tar.Header, r io.Reader) error
	phaseEnd(name string) error
}

// walk reads a backup, checking its shape, and reports each phase.
func walk(r io.Reader, h handler, progress func(Phase)) (Manifest, error) {
	var m Manifest
	tr := tar.NewReader(r)
	var cur Phase
	end := func() error {
		if cur.Name == "" {
			return nil
		}
		if err := h.phaseEnd(cur.Name); err != nil {
			return err
		}
		progress(cur)
		return nil
	}
	for first := true; ; first = false {
		hd, err := tr.Next()
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return m, ErrIncomplete
		}
		if err != nil {
			return m, fmt.Errorf("read backup: %w", err)
		}
		if first != (hd.Name == manifestName) {
			return m, fmt.Errorf("read backup: %s: not an outpost backup (it starts with %s)", hd.Name, manifestName)
		}
		if hd.Typeflag != tar.TypeReg || path.Clean(hd.Name) != hd.Name || strings.Contains(hd.Name, "..") {
			return m, fmt.Errorf("read backup: bad entry %q", hd.Name)
		}
		if hd.Name == completeName {
			if err := end(); err != nil {
				return m, err
			}
			_, err := io.Copy(io.Discard, tr) // the tar trailer
			if err != nil {
				return m, fmt.Errorf("read backup: %w", err)
			}
			return m, nil
		}
		if p := phaseOf(hd.Name); p != cur.Name {
			if err := end(); err != nil {
				return m, err
			}
			cur = Phase{Name: p}
		}
		cr := &countReader{r: tr}
		if hd.Name == manifestName {
			if err := json.NewDecoder(cr).Decode(&m); err != nil {
				return m, fmt.Errorf("read backup manifest: %w", err)
			}
		} else if err := h.entry(hd, cr); err != nil {
			if errors.Is(err, io.ErrUnexpectedEOF) {
				return m, ErrIncomplete
			}
			return m, err
		}
		if _, err := io.Copy(io.Discard, cr); err != nil {
			if errors.Is(err, io.ErrUnexpectedEOF) {
				return m, ErrIncomplete
			}
			return m, fmt.Errorf("read backup: %w", err)
		}
		cur.Items++
		cur.Bytes += cr.n
	}
}

type countReader struct {
	r io.Reader
	n int64
}

func (c *countReader) Read(b []byte) (int, error) {
	n, err := c.r.Read(b)
	c.n += int64(n)
	return n, err
}

// Copy saves the backup read from r to w, checking it as it goes, and
// reports its phases as they pass: a stream cut short is ErrIncomplete.
func Copy(w io.Writer, r io.Reader, progress func(Phase)) (Manifest, error) {
	m, err := walk(io.TeeReader(r, w), nopHandler{}, progress)
	if err != nil {
		return m, err
	}
	// Whatever follows the trailer (tar pads to a record) goes too.
	_, err = io.Copy(w, r)
	return m, err
}

type nopHandler struct{}

func (nopHandler) entry(*tar.Header, io.Reader) error { return nil }
func (nopHandler) phaseEnd(string) error              { return nil }

// Restore fills dataDir, which must be empty or absent, from the backup
// read from r, sizing the badger stores it loads with cfg (the node's
// storage settings). On error it removes what it wrote, leaving dataDir
// empty.
func Restore(r io.Reader, dataDir string, cfg store.Config, log *slog.Logger, progress func(Phase)) (m Manifest, err error) {
	ents, err := os.ReadDir(dataDir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return m, err
	case len(ents) > 0:
		return m, fmt.Errorf("restore into %s: %w (restore only into an empty or new directory)", dataDir, ErrNotEmpty)
	}
	if err := os.MkdirAll(dataDir, 0o750); err != nil {
		return m, err
	}
	rs := &restorer{dir: dataDir, opts: func(dir string) badger.Options { return store.Options(dir, cfg, log) }}
	defer func() {
		if rs.load != nil {
			err = errors.Join(err, rs.finishLoad())
		}
		if err != nil {
			ents, _ := os.ReadDir(dataDir)
			for _, e := range ents {
				_ = os.RemoveAll(filepath.Join(dataDir, e.Name()))
			}
		}
	}()
	return walk(r, rs, progress)
}

// restorer writes a backup's entries into a data dir; a badger stream is
// loaded by a goroutine reading its chunks through a pipe.
type restorer struct {
	dir  string
	opts func(dir string) badger.Options
	load *loader
}

type loader struct {
	pw   *io.PipeWriter
	done chan error
}

func (rs *restorer) entry(h *tar.Header, r io.Reader) error {
	switch phaseOf(h.Name) {
	case "state store", "telemetry store":
		if rs.load == nil {
			sub := StateDir
			if strings.HasPrefix(h.Name, telePrefix) {
				sub = TelemetryDir
			}
			rs.startLoad(filepath.Join(rs.dir, sub))
		}
		if _, err := io.Copy(rs.load.pw, r); err != nil {
			return fmt.Errorf("load %s: %w", h.Name, err)
		}
		return nil
	case "blobs":
		return restoreFile(filepath.Join(rs.dir, BlobDir), strings.TrimPrefix(h.Name, blobPrefix), h, r)
	case "snapshots":
		return restoreFile(filepath.Join(rs.dir, SnapshotDir), strings.TrimPrefix(h.Name, snapPrefix), h, r)
	case "files":
		return restoreFile(rs.dir, strings.TrimPrefix(h.Name, filePrefix), h, r)
	}
	return fmt.Errorf("read backup: unknown entry %q", h.Name)
}

func (rs *restorer) phaseEnd(name string) error {
	if rs.load == nil {
		return nil
	}
	if err := rs.finishLoad(); err != nil {
		return fmt.Errorf("load the %s: %w", name, err)
	}
	return nil
}

func (rs *restorer) startLoad(dir string) {
	pr, pw := io.Pipe()
	l := &loader{pw: pw, done: make(chan error, 1)}
	rs.load = l
	go func() {
		l.done <- load(dir, rs.opts(dir), pr)
	}()
}

func (rs *restorer) finishLoad() error {
	l := rs.load
	rs.load = nil
	_ = l.pw.Close()
	return <-l.done
}

func load(dir string, o badger.Options, r *io.PipeReader) (err error) {
	defer func() { r.CloseWithError(err) }() // unblocks the writer on error
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return err
	}
	db, err := badger.Open(o)
	if err != nil {
		return err
	}
	if err := db.Load(r, 256); err != nil {
		_ = db.Close()
		return err
	}
	return db.Close()
}

func restoreFile(dir, name string, h *tar.Header, r io.Reader) error {
	if strings.Contains(name, "/") || name == "" {
		return fmt.Errorf("read backup: bad entry %q", h.Name)
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return err
	}
	return syncfile.WriteNew(filepath.Join(dir, name), fs.FileMode(h.Mode).Perm(), r)
}
