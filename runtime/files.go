package runtime

import (
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"slices"
	"strings"
	"time"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/experimental/sysfs"
)

// File is a host file mounted read-only in a task's WASI filesystem.
type File struct {
	Path   string // guest path, absolute, e.g. /data/model.bin
	Source string // host path
}

// filesFS is a read-only fs.FS holding only the mounted files and the
// directories leading to them; wazero mounts it at "/". Nothing else of the
// host is reachable, and wazero refuses writes to an fs.FS.
type filesFS struct {
	files map[string]string   // guest path without the leading "/" -> host path
	dirs  map[string][]string // directory -> sorted entry names ("." is the root)
}

func newFilesFS(files []File) (*filesFS, error) {
	if len(files) == 0 {
		return nil, nil
	}
	f := &filesFS{files: map[string]string{}, dirs: map[string][]string{".": nil}}
	for _, file := range files {
		if !strings.HasPrefix(file.Path, "/") {
			return nil, fmt.Errorf("file %q: the guest path must be absolute", file.Path)
		}
		p := strings.TrimPrefix(path.Clean(file.Path), "/")
		if p == "" || !fs.ValidPath(p) {
			return nil, fmt.Errorf("file %q: not a file path", file.Path)
		}
		if _, dup := f.files[p]; dup {
			return nil, fmt.Errorf("file %q: mounted twice", file.Path)
		}
		if _, isDir := f.dirs[p]; isDir {
			return nil, fmt.Errorf("file %q: is a directory of another file", file.Path)
		}
		st, err := os.Stat(file.Source)
		if err != nil {
			return nil, fmt.Errorf("file %q: %w", file.Path, err)
		}
		if !st.Mode().IsRegular() {
			return nil, fmt.Errorf("file %q: source %s is not a regular file", file.Path, file.Source)
		}
		f.files[p] = file.Source
		for child := p; child != "."; {
			dir := path.Dir(child)
			if _, isFile := f.files[dir]; isFile {
				return nil, fmt.Errorf("file %q: /%s is a mounted file", file.Path, dir)
			}
			base := path.Base(child)
			if !slices.Contains(f.dirs[dir], base) {
				f.dirs[dir] = append(f.dirs[dir], base)
				slices.Sort(f.dirs[dir])
			}
			child = dir
		}
	}
	return f, nil
}

// config mounts the files at "/" through wazero's read-only wrapper: an
// open for writing fails with EROFS (a plain fs.FS mount would open the file
// and fail only the write).
func (f *filesFS) config() wazero.FSConfig {
	ro := &sysfs.ReadFS{FS: &sysfs.AdaptFS{FS: f}}
	return wazero.NewFSConfig().(sysfs.FSConfig).WithSysFSMount(ro, "/")
}

// equal reports whether two mounts have the same files.
func (f *filesFS) equal(o *filesFS) bool {
	if f == nil || o == nil {
		return f == o
	}
	if len(f.files) != len(o.files) {
		return false
	}
	for k, v := range f.files {
		if o.files[k] != v {
			return false
		}
	}
	return true
}

// Open implements fs.FS.
func (f *filesFS) Open(name string) (fs.File, error) {
	if !fs.ValidPath(name) {
		return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrInvalid}
	}
	if src, ok := f.files[name]; ok {
		h, err := os.Open(src)
		if err != nil {
			return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrNotExist}
		}
		return h, nil
	}
	if entries, ok := f.dirs[name]; ok {
		return &memDir{fs: f, name: name, entries: entries}, nil
	}
	return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrNotExist}
}

// memDir is a directory of a filesFS.
type memDir struct {
	fs      *filesFS
	name    string
	entries []string
	off     int
}

func (d *memDir) Stat() (fs.FileInfo, error) { return dirInfo(path.Base(d.name)), nil }
func (d *memDir) Read([]byte) (int, error) {
	return 0, &fs.PathError{Op: "read", Path: d.name, Err: fs.ErrInvalid}
}
func (d *memDir) Close() error { return nil }

func (d *memDir) ReadDir(n int) ([]fs.DirEntry, error) {
	rest := d.entries[d.off:]
	if n > 0 && len(rest) == 0 {
		return nil, io.EOF
	}
	if n > 0 && n < len(rest) {
		rest = rest[:n]
	}
	out := make([]fs.DirEntry, 0, len(rest))
	for _, e := range rest {
		p := path.Join(d.name, e)
		if src, ok := d.fs.files[p]; ok {
			st, err := os.Stat(src)
			if err != nil {
				return nil, err
			}
			out = append(out, fs.FileInfoToDirEntry(st))
			continue
		}
		out = append(out, fs.FileInfoToDirEntry(dirInfo(e)))
	}
	d.off += len(rest)
	return out, nil
}

type dirInfo string

func (i dirInfo) Name() string     { return string(i) }
func (dirInfo) Size() int64        { return 0 }
func (dirInfo) Mode() fs.FileMode  { return fs.ModeDir | 0o555 }
func (dirInfo) ModTime() time.Time { return time.Time{} }
func (dirInfo) IsDir() bool        { return true }
func (dirInfo) Sys() any           { return nil }
