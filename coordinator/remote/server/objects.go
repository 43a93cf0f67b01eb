package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/outpost-edge/outpost/coordinator/remote"
	"github.com/outpost-edge/outpost/internal/cas"
)

// Code objects (docs/cloud-link.md "Code objects"): operators put modules
// by content (POST /api/v1/objects), calls name them by digest, and nodes
// fetch those they lack (GET /edge/v1/nodes/{node}/objects/{digest}). An
// object is a file named by its hex sha256 under Options.ObjectDir,
// written to a temporary file, synced and renamed, so a crash leaves no
// half object behind. On PostgreSQL the database holds every object too
// (objectDB: 1 MiB chunks, the object's row committed with its last
// chunk), so every replica serves every object: the directory is each
// replica's copy, filled from the database on the first use. Objects are
// not deleted.

// DefaultMaxObject bounds an object (Options.MaxObject): the node's own
// cap on a fetched module.
const DefaultMaxObject = 256 << 20

// ObjectInfo describes a stored object.
type ObjectInfo struct {
	Digest string `json:"digest"` // sha256:HEX
	Size   int64  `json:"size"`
	// Fetches counts node fetches served since the server started.
	Fetches int `json:"fetches"`
}

// objectDB keeps objects in the state store's database (PostgreSQL).
type objectDB interface {
	// putObject stores the object digest of size bytes read from r;
	// created is false when it was stored already.
	putObject(ctx context.Context, digest string, size int64, r io.Reader) (created bool, err error)
	// objectSize is the size of a stored object (false: none).
	objectSize(ctx context.Context, digest string) (int64, bool, error)
	// readObject writes a stored object's bytes to w (errNoObject: none).
	readObject(ctx context.Context, digest string, w io.Writer) error
	listObjects(ctx context.Context) ([]ObjectInfo, error)
}

var errNoObject = errors.New("no such object")

// objects is the object store of a Server.
type objects struct {
	dir string
	max int64
	db  objectDB // nil: the directory only (badger)

	mu      sync.Mutex
	known   map[string]int64           // sizes of objects found in the database (never deleted)
	fetches map[string]int             // by digest
	roots   map[string]map[string]bool // by digest: the roots provisioned with it (provision.go)
}

func openObjects(dir string, max int64, db objectDB, log *slog.Logger) (*objects, error) {
	if err := objectsFormat.OpenDir(dir, log); err != nil {
		return nil, fmt.Errorf("open object store: %w", err)
	}
	return &objects{dir: dir, max: max, db: db, known: map[string]int64{}, fetches: map[string]int{}, roots: map[string]map[string]bool{}}, nil
}

func (o *objects) path(digest string) string {
	return filepath.Join(o.dir, strings.TrimPrefix(digest, remote.DigestPrefix))
}

// importLocal puts into the database the objects of the directory it
// lacks: those stored before the objects moved into the database (schema
// version 5), so every replica serves them.
func (o *objects) importLocal(ctx context.Context, log *slog.Logger) error {
	if o.db == nil {
		return nil
	}
	ents, err := os.ReadDir(o.dir)
	if err != nil {
		return fmt.Errorf("import objects: %w", err)
	}
	for _, e := range ents {
		d := remote.DigestPrefix + e.Name()
		if !remote.ValidDigest(d) {
			continue // a temporary file
		}
		if _, ok, err := o.db.objectSize(ctx, d); err != nil || ok {
			if err != nil {
				return fmt.Errorf("import objects: %w", err)
			}
			continue
		}
		f, err := os.Open(o.path(d))
		if err != nil {
			return fmt.Errorf("import objects: %w", err)
		}
		fi, err := f.Stat()
		if err == nil {
			_, err = o.db.putObject(ctx, d, fi.Size(), f)
		}
		f.Close()
		if err != nil {
			return fmt.Errorf("import object %s: %w", d, err)
		}
		log.Info("object imported into the database", "digest", d, "size", fi.Size())
	}
	return nil
}

// put stores r under its digest; created is false when it was stored.
// want, when set, is the digest r must have (errMismatch).
func (o *objects) put(ctx context.Context, r io.Reader, want string) (info ObjectInfo, created bool, err error) {
	st, err := cas.Stage(o.dir, ".put-", io.LimitReader(r, o.max+1))
	if err != nil {
		return ObjectInfo{}, false, fmt.Errorf("store object: %w", err)
	}
	defer st.Discard()
	if st.Size > o.max {
		return ObjectInfo{}, false, fmt.Errorf("%w: larger than %d bytes", errTooLarge, o.max)
	}
	info = ObjectInfo{Digest: remote.DigestPrefix + st.Digest, Size: st.Size}
	if want != "" && info.Digest != want {
		return ObjectInfo{}, false, fmt.Errorf("%w: the bytes hash to %s, not %s", errMismatch, info.Digest, want)
	}
	if _, err := os.Stat(o.path(info.Digest)); err == nil {
		created = false
	} else {
		if err := st.Sync(); err != nil {
			return ObjectInfo{}, false, fmt.Errorf("store object: %w", err)
		}
		if err := st.Rename(o.path(info.Digest)); err != nil {
			return ObjectInfo{}, false, fmt.Errorf("store object: %w", err)
		}
		created = true
	}
	if o.db == nil {
		return info, created, nil
	}
	// The database is the store every replica reads; the file is this
	// replica's copy.
	f, err := os.Open(o.path(info.Digest))
	if err != nil {
		return ObjectInfo{}, false, fmt.Errorf("store object: %w", err)
	}
	defer f.Close()
	if created, err = o.db.putObject(ctx, info.Digest, info.Size, f); err != nil {
		return ObjectInfo{}, false, fmt.Errorf("store object: %w", err)
	}
	return info, created, nil
}

var (
	errTooLarge = errors.New("object too large")
	errMismatch = errors.New("object digest mismatch")
)

// has reports whether digest is stored.
func (o *objects) has(ctx context.Context, digest string) bool {
	_, ok, err := o.size(ctx, digest)
	return ok && err == nil
}

// size is a stored object's size (false: none).
func (o *objects) size(ctx context.Context, digest string) (int64, bool, error) {
	if !remote.ValidDigest(digest) {
		return 0, false, nil
	}
	if fi, err := os.Stat(o.path(digest)); err == nil {
		return fi.Size(), true, nil
	}
	if o.db == nil {
		return 0, false, nil
	}
	o.mu.Lock()
	size, ok := o.known[digest]
	o.mu.Unlock()
	if ok {
		return size, true, nil // a call per item of a job asks again and again
	}
	size, ok, err := o.db.objectSize(ctx, digest)
	if ok && err == nil {
		o.mu.Lock()
		o.known[digest] = size
		o.mu.Unlock()
	}
	return size, ok, err
}

// open opens a stored object (errNoObject: none); on PostgreSQL one this
// replica has no copy of is copied from the database first, and checked.
func (o *objects) open(ctx context.Context, digest string) (*os.File, error) {
	if !remote.ValidDigest(digest) {
		return nil, errNoObject
	}
	f, err := os.Open(o.path(digest))
	if err == nil || !errors.Is(err, os.ErrNotExist) {
		return f, err
	}
	if o.db == nil {
		return nil, errNoObject
	}
	pr, pw := io.Pipe()
	go func() { pw.CloseWithError(o.db.readObject(ctx, digest, pw)) }()
	st, err := cas.Stage(o.dir, ".copy-", pr)
	pr.CloseWithError(io.ErrClosedPipe) // stops the reader if staging failed
	if err != nil {
		return nil, fmt.Errorf("copy object %s from the database: %w", digest, err)
	}
	defer st.Discard()
	if remote.DigestPrefix+st.Digest != digest {
		return nil, fmt.Errorf("copy object %s from the database: its bytes hash to %s", digest, st.Digest)
	}
	if err := st.Sync(); err != nil {
		return nil, err
	}
	if err := st.Rename(o.path(digest)); err != nil {
		return nil, err
	}
	return os.Open(o.path(digest))
}

func (o *objects) list(ctx context.Context) ([]ObjectInfo, error) {
	var out []ObjectInfo
	if o.db != nil {
		var err error
		if out, err = o.db.listObjects(ctx); err != nil {
			return nil, fmt.Errorf("list objects: %w", err)
		}
	} else {
		ents, err := os.ReadDir(o.dir)
		if err != nil {
			return nil, fmt.Errorf("list objects: %w", err)
		}
		out = []ObjectInfo{}
		for _, e := range ents {
			d := remote.DigestPrefix + e.Name()
			if !remote.ValidDigest(d) {
				continue // a temporary file
			}
			fi, err := e.Info()
			if err != nil {
				continue // removed meanwhile
			}
			out = append(out, ObjectInfo{Digest: d, Size: fi.Size()})
		}
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	for i := range out {
		out[i].Fetches = o.fetches[out[i].Digest]
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Digest < out[j].Digest })
	return out, nil
}

// objectRoutes adds the object endpoints to the API.
func (s *Server) objectRoutes(mux *http.ServeMux) {
	mux.HandleFunc("POST /api/v1/objects", s.handleObjectPut)
	mux.HandleFunc("GET /api/v1/objects", s.handleObjectList)
	mux.HandleFunc("GET /edge/v1/nodes/{node}/objects/{digest}", s.edge(s.handleObjectGet))
	mux.HandleFunc("POST /edge/v1/nodes/{node}/provision", s.edge(s.handleProvision))
	mux.HandleFunc("GET /edge/v1/nodes/{node}/package", s.edge(s.handlePackage))
}

// PutObject stores an object (tests and tools; operators POST it).
func (s *Server) PutObject(r io.Reader) (ObjectInfo, error) {
	info, _, err := s.objs.put(context.Background(), r, "")
	return info, err
}

// ObjectPath is where the object of digest is stored.
func (s *Server) ObjectPath(digest string) string { return s.objs.path(digest) }

// ObjectFetches counts node fetches of digest served since the start.
func (s *Server) ObjectFetches(digest string) int {
	s.objs.mu.Lock()
	defer s.objs.mu.Unlock()
	return s.objs.fetches[digest]
}

// handleObjectPut stores the raw request body; 201 with its ObjectInfo,
// 200 when it was stored already, 413 over Options.MaxObject.
func (s *Server) handleObjectPut(w http.ResponseWriter, r *http.Request) {
	s.storeObject(w, r, "")
}

// storeObject stores the raw request body as an object and answers with
// its ObjectInfo: 201 when new, 200 when it was stored already, 413 over
// Options.MaxObject, 400 when want is set and the body has another digest.
func (s *Server) storeObject(w http.ResponseWriter, r *http.Request, want string) {
	info, created, err := s.objs.put(r.Context(), r.Body, want)
	switch {
	case errors.Is(err, errTooLarge):
		httpError(w, http.StatusRequestEntityTooLarge, err.Error())
		return
	case errors.Is(err, errMismatch):
		httpError(w, http.StatusBadRequest, err.Error())
		return
	case err != nil:
		httpError(w, http.StatusInternalServerError, err.Error())
		return
	}
	code := http.StatusOK
	if created {
		code = http.StatusCreated
		s.log.Info("object stored", "digest", info.Digest, "size", info.Size, "node", r.PathValue("node"))
	}
	writeJSON(w, r, code, info)
}

func (s *Server) handleObjectList(w http.ResponseWriter, r *http.Request) {
	list, err := s.objs.list(r.Context())
	if err != nil {
		httpError(w, http.StatusInternalServerError, err.Error())
		return
	}
	writeJSON(w, r, http.StatusOK, map[string]any{"objects": list})
}

// handleObjectGet streams an object to a node as stored: the node checks
// the digest itself.
func (s *Server) handleObjectGet(w http.ResponseWriter, r *http.Request) {
	d := r.PathValue("digest")
	if !remote.ValidDigest(d) {
		httpError(w, http.StatusBadRequest, fmt.Sprintf("object %q: want sha256:HEX (64 lower-case hex digits)", d))
		return
	}
	f, err := s.objs.open(r.Context(), d)
	if errors.Is(err, errNoObject) {
		httpError(w, http.StatusNotFound, "no object "+d)
		return
	}
	if err != nil {
		httpError(w, http.StatusInternalServerError, err.Error())
		return
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		httpError(w, http.StatusInternalServerError, err.Error())
		return
	}
	s.objs.mu.Lock()
	s.objs.fetches[d]++
	s.objs.mu.Unlock()
	s.log.Info("object fetched", "node", r.PathValue("node"), "digest", d, "size", fi.Size())
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Length", strconv.FormatInt(fi.Size(), 10))
	w.WriteHeader(http.StatusOK)
	_, _ = io.Copy(w, f) // a node gone mid-transfer fetches again
}
