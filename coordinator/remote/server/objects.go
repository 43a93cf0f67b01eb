package server

import (
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
// half object behind. Objects are not deleted.

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

// objects is the object store of a Server.
type objects struct {
	dir string
	max int64

	mu      sync.Mutex
	fetches map[string]int             // by digest
	roots   map[string]map[string]bool // by digest: the roots provisioned with it (provision.go)
}

func openObjects(dir string, max int64, log *slog.Logger) (*objects, error) {
	if err := objectsFormat.OpenDir(dir, log); err != nil {
		return nil, fmt.Errorf("open object store: %w", err)
	}
	return &objects{dir: dir, max: max, fetches: map[string]int{}, roots: map[string]map[string]bool{}}, nil
}

func (o *objects) path(digest string) string {
	return filepath.Join(o.dir, strings.TrimPrefix(digest, remote.DigestPrefix))
}

// put stores r under its digest; created is false when it was stored.
// want, when set, is the digest r must have (errMismatch).
func (o *objects) put(r io.Reader, want string) (info ObjectInfo, created bool, err error) {
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
		return info, false, nil
	}
	if err := st.Sync(); err != nil {
		return ObjectInfo{}, false, fmt.Errorf("store object: %w", err)
	}
	if err := st.Rename(o.path(info.Digest)); err != nil {
		return ObjectInfo{}, false, fmt.Errorf("store object: %w", err)
	}
	return info, true, nil
}

var (
	errTooLarge = errors.New("object too large")
	errMismatch = errors.New("object digest mismatch")
)

func (o *objects) has(digest string) bool {
	if !remote.ValidDigest(digest) {
		return false
	}
	_, err := os.Stat(o.path(digest))
	return err == nil
}

func (o *objects) list() ([]ObjectInfo, error) {
	ents, err := os.ReadDir(o.dir)
	if err != nil {
		return nil, fmt.Errorf("list objects: %w", err)
	}
	out := []ObjectInfo{}
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, e := range ents {
		d := remote.DigestPrefix + e.Name()
		if !remote.ValidDigest(d) {
			continue // a temporary file
		}
		fi, err := e.Info()
		if err != nil {
			continue // removed meanwhile
		}
		out = append(out, ObjectInfo{Digest: d, Size: fi.Size(), Fetches: o.fetches[d]})
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
	info, _, err := s.objs.put(r, "")
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
	info, created, err := s.objs.put(r.Body, "")
	switch {
	case errors.Is(err, errTooLarge):
		httpError(w, http.StatusRequestEntityTooLarge, err.Error())
		return
	case err != nil:
		httpError(w, http.StatusInternalServerError, err.Error())
		return
	}
	code := http.StatusOK
	if created {
		code = http.StatusCreated
		s.log.Info("object stored", "digest", info.Digest, "size", info.Size)
	}
	writeJSON(w, r, code, info)
}

func (s *Server) handleObjectList(w http.ResponseWriter, r *http.Request) {
	list, err := s.objs.list()
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
	f, err := os.Open(s.objs.path(d))
	if errors.Is(err, os.ErrNotExist) {
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
