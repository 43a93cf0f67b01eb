// Package backup writes and restores a node's backup: one tar stream
// holding a consistent snapshot of the state store (deployed tasks, kv,
// results and the call journal, read at one badger timestamp), optionally
// the telemetry store, the blobs the tasks run, the snapshots of suspended
// calls, and the identity files at
// the top of the data dir (the admin token, cloud credentials kept
// there). The daemon writes it while it runs (GET /v1/backup on the admin
// API); Copy checks a stream while saving it; Restore fills an empty data
// dir from one, offline.
//
// Layout, in order:
//
//	manifest.json            Manifest
//	state/000001 …           the state store's badger backup stream, in chunks
//	telemetry/000001 …       the telemetry store's, with the telemetry option
//	blobs/<name>             the blob directory's files (FORMAT, <sha256>.wasm)
//	snapshots/<name>         the states of suspended calls (<sha256>)
//	files/<name>             top-level files of the data dir
//	complete                 written last: a stream without it was cut short
//
// Badger streams carry every key, so the format versions of the stores
// (internal/format) travel with them; a newer binary migrates a restored
// store at its first start like any other.
package backup

import (
	"archive/tar"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Entry names.
const (
	manifestName = "manifest.json"
	completeName = "complete"
	statePrefix  = "state/"
	telePrefix   = "telemetry/"
	blobPrefix   = "blobs/"
	snapPrefix   = "snapshots/"
	filePrefix   = "files/"
)

// Data dir layout the backup reads and restores.
const (
	StateDir     = "state"
	TelemetryDir = "telemetry"
	BlobDir      = "blobs/sha256"
	SnapshotDir  = "snapshots/sha256"
)

// chunkSize bounds a chunk of a badger stream: the memory a backup holds.
const chunkSize = 4 << 20

// ErrIncomplete is returned for a stream that ends before its last entry.
var ErrIncomplete = errors.New("backup is incomplete (cut short while it was written)")

// ErrNotEmpty is returned by Restore for a data dir that holds files.
var ErrNotEmpty = errors.New("data dir is not empty")

// Manifest describes a backup.
type Manifest struct {
	Node      string    `json:"node"`
	Version   string    `json:"version"` // of the binary that wrote it
	Created   time.Time `json:"created"`
	Telemetry bool      `json:"telemetry"`
}

// Phase is one finished part of a backup or restore, for progress lines.
type Phase struct {
	Name  string // manifest, state store, telemetry store, blobs, files
	Items int    // chunks or files
	Bytes int64
}

// Source is what a backup reads from a running node.
type Source struct {
	Manifest Manifest
	// State writes the state store in badger's backup format (store.Snapshot).
	State func(w io.Writer) error
	// Telemetry writes the telemetry store's; nil leaves it out.
	Telemetry func(w io.Writer) error
	// DataDir holds the blob directory and the identity files.
	DataDir string
}

// Write writes a backup of src to w, calling progress after each phase.
// The state store is read first, at one timestamp; the caller keeps blobs
// from being deleted until Write returns, so that every blob the
// snapshot's tasks name is in the backup.
func Write(w io.Writer, src Source, progress func(Phase)) error {
	tw := tar.NewWriter(w)
	src.Manifest.Telemetry = src.Telemetry != nil
	m, err := json.Marshal(src.Manifest)
	if err != nil {
		return err
	}
	if err := writeEntry(tw, manifestName, m); err != nil {
		return err
	}
	progress(Phase{Name: "manifest", Items: 1, Bytes: int64(len(m))})
	stores := []struct {
		name, prefix string
		write        func(io.Writer) error
	}{{"state store", statePrefix, src.State}, {"telemetry store", telePrefix, src.Telemetry}}
	for _, s := range stores {
		if s.write == nil {
			continue
		}
		cw := &chunker{tw: tw, prefix: s.prefix, buf: make([]byte, 0, chunkSize)}
		if err := s.write(cw); err != nil {
			return fmt.Errorf("back up the %s: %w", s.name, err)
		}
		if err := cw.flush(); err != nil {
			return fmt.Errorf("back up the %s: %w", s.name, err)
		}
		progress(Phase{Name: s.name, Items: cw.n, Bytes: cw.bytes})
	}
	p, err := writeFiles(tw, filepath.Join(src.DataDir, BlobDir), blobPrefix, func(name string) bool {
		return name == "FORMAT" || strings.HasSuffix(name, ".wasm")
	})
	if err != nil {
		return fmt.Errorf("back up the blobs: %w", err)
	}
	p.Name = "blobs"
	progress(p)
	if p, err = writeFiles(tw, filepath.Join(src.DataDir, SnapshotDir), snapPrefix, func(string) bool { return true }); err != nil {
		return fmt.Errorf("back up the snapshots of suspended calls: %w", err)
	}
	p.Name = "snapshots"
	progress(p)
	if p, err = writeFiles(tw, src.DataDir, filePrefix, func(string) bool { return true }); err != nil {
		return fmt.Errorf("back up the data dir's files: %w", err)
	}
	p.Name = "files"
	progress(p)
	if err := writeEntry(tw, completeName, nil); err != nil {
		return err
	}
	return tw.Close()
}

func writeEntry(tw *tar.Writer, name string, b []byte) error {
	if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o600, Size: int64(len(b)), ModTime: time.Now(), Typeflag: tar.TypeReg}); err != nil {
		return err
	}
	_, err := tw.Write(b)
	return err
}

// writeFiles adds the regular files of dir that keep accepts (not its
// subdirectories, not temporary files starting with '.').
func writeFiles(tw *tar.Writer, dir, prefix string, keep func(string) bool) (Phase, error) {
	var p Phase
	ents, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return p, nil
	}
	if err != nil {
		return p, err
	}
	for _, e := range ents {
		if !e.Type().IsRegular() || strings.HasPrefix(e.Name(), ".") || !keep(e.Name()) {
			continue
		}
		n, err := writeFile(tw, filepath.Join(dir, e.Name()), prefix+e.Name())
		if errors.Is(err, fs.ErrNotExist) {
			continue // removed meanwhile
		}
		if err != nil {
			return p, err
		}
		p.Items++
		p.Bytes += n
	}
	return p, nil
}

func writeFile(tw *tar.Writer, path, name string) (int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return 0, err
	}
	if err := tw.WriteHeader(&tar.Header{Name: name, Mode: int64(fi.Mode().Perm()), Size: fi.Size(), ModTime: fi.ModTime(), Typeflag: tar.TypeReg}); err != nil {
		return 0, err
	}
	return io.Copy(tw, io.LimitReader(f, fi.Size()))
}

// chunker cuts a stream into tar entries prefix+000001, … of chunkSize.
type chunker struct {
	tw     *tar.Writer
	prefix string
	buf    []byte
	n      int
	bytes  int64
}

func (c *chunker) Write(b []byte) (int, error) {
	total := len(b)
	for len(b) > 0 {
		k := min(len(b), chunkSize-len(c.buf))
		c.buf = append(c.buf, b[:k]...)
		b = b[k:]
		if len(c.buf) == chunkSize {
			if err := c.flush(); err != nil {
				return total - len(b), err
			}
		}
	}
	return total, nil
}

func (c *chunker) flush() error {
	if len(c.buf) == 0 && c.n > 0 {
		return nil
	}
	c.n++
	c.bytes += int64(len(c.buf))
	if err := writeEntry(c.tw, fmt.Sprintf("%s%06d", c.prefix, c.n), c.buf); err != nil {
		return err
	}
	c.buf = c.buf[:0]
	return nil
}
