// Package syncfile writes new files that are on disk when the write
// returns: created exclusively, filled, synced, closed. A restored backup
// and a staged format migration both rely on it.
package syncfile

import (
	"io"
	"io/fs"
	"os"
)

// WriteNew creates path (it must not exist) with mode, copies r into it and
// syncs it. On an error the partial file is left for the caller's cleanup.
func WriteNew(path string, mode fs.FileMode, r io.Reader) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, r); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
