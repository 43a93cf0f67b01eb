// Package cas writes content-addressed files: the bytes go to a temporary
// file in the store's directory while they are hashed (sha256), and the
// file is synced and renamed to its digest only once whoever stores it has
// checked the digest. A crash leaves at most a temporary file, never half
// an object under a digest. The node's blob store (coordinator) and the
// control plane's object store (coordinator/remote/server) both use it.
package cas

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
)

// Staged is content written to a temporary file, not yet committed.
type Staged struct {
	f      *os.File
	Digest string // hex sha256 of the content
	Size   int64
}

// WriteError marks a failure to write the temporary file (the store's
// fault), as opposed to a failure to read the content (the source's).
type WriteError struct{ Err error }

func (e *WriteError) Error() string { return e.Err.Error() }
func (e *WriteError) Unwrap() error { return e.Err }

// Stage copies r into a new temporary file in dir named prefix+random,
// hashing it. Errors creating or writing the file are *WriteError; errors
// reading r are returned as they are. The caller commits a Staged with
// Sync then Rename, and calls Discard in any case.
func Stage(dir, prefix string, r io.Reader) (*Staged, error) {
	f, err := os.CreateTemp(dir, prefix+"*")
	if err != nil {
		return nil, &WriteError{err}
	}
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(fileWriter{f}, h), r)
	if err != nil {
		s := &Staged{f: f}
		s.Discard()
		return nil, err
	}
	return &Staged{f: f, Digest: hex.EncodeToString(h.Sum(nil)), Size: n}, nil
}

// Sync puts the content on disk and closes the file.
func (s *Staged) Sync() error {
	if err := s.f.Sync(); err != nil {
		return &WriteError{fmt.Errorf("sync: %w", err)}
	}
	if err := s.f.Close(); err != nil {
		return &WriteError{err}
	}
	return nil
}

// Close closes the file without syncing it, for content a power failure
// may take (a crash of the process does not): commit it with Rename.
func (s *Staged) Close() error {
	if err := s.f.Close(); err != nil {
		return &WriteError{err}
	}
	return nil
}

// Rename moves the synced (or closed) content to path, committing it.
func (s *Staged) Rename(path string) error {
	if err := os.Rename(s.f.Name(), path); err != nil {
		return &WriteError{err}
	}
	return nil
}

// Discard removes the temporary file (nothing once renamed).
func (s *Staged) Discard() {
	_ = s.f.Close()
	_ = os.Remove(s.f.Name())
}

// fileWriter marks the errors of writing the file.
type fileWriter struct{ f *os.File }

func (w fileWriter) Write(b []byte) (int, error) {
	n, err := w.f.Write(b)
	if err != nil {
		err = &WriteError{err}
	}
	return n, err
}
