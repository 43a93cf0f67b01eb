package admin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"net/url"
	"path"
	"strings"
	"time"

	"github.com/outpost-edge/outpost/coordinator/placement"
)

// MaxModule bounds a deploy upload: the module, its manifest and the
// library modules and data files sent with it.
const MaxModule = 256 << 20

// MaxManifest bounds the manifest part of a deploy.
const MaxManifest = 1 << 20

// ObjectPart prefixes the form name of an uploaded library module or data
// file: "object:" + the reference as written in the manifest.
const ObjectPart = "object:"

// Errors a Registry returns (wrapped); they choose the HTTP status.
var (
	ErrInvalid  = errors.New("invalid")   // 400: bad name, manifest or module (compile error…)
	ErrConflict = errors.New("conflict")  // 409: a config task, no previous version
	ErrNotFound = errors.New("not found") // 404
	ErrInternal = errors.New("internal")  // 500: the daemon could not store or fetch
)

// Registry manages deployed tasks (POST/DELETE /v1/tasks/{name},
// POST /v1/tasks/{name}/rollback, GET /v1/tasks/{name}).
type Registry interface {
	// StoreBlob stores r as a content-addressed blob (once) and returns its
	// sha256 (hex) and size.
	StoreBlob(ctx context.Context, r io.Reader) (digest string, size int64, err error)
	Deploy(ctx context.Context, name string, up Upload) (TaskDetail, error)
	Remove(ctx context.Context, name string) error
	Rollback(ctx context.Context, name string) (TaskDetail, error)
	Inspect(name string) (TaskDetail, bool)
	// Release drops what StoreBlob holds for an upload that will not reach
	// Deploy (the request failed first); Deploy drops it itself.
	Release(up Upload)
}

// Upload is a deploy whose parts are stored as blobs.
type Upload struct {
	Module   string // digest of the uploaded module; "" = none (the manifest's module key names it)
	Size     int64  // of the module
	Manifest []byte
	// Objects maps a manifest reference (a library module or a file
	// source) to the digest of its uploaded part.
	Objects map[string]string
	// Phase, when set, is told when the deploy moves on to a phase a
	// person waits for (PhaseCompiling).
	Phase func(name string)
}

// PhaseCompiling: the upload is stored; the daemon compiles the task's
// modules and warms its instances (seconds for a Go-built module).
const PhaseCompiling = "compiling"

// ReportPhase tells up's Phase (if any) that the deploy entered name.
func (up Upload) ReportPhase(name string) {
	if up.Phase != nil {
		up.Phase(name)
	}
}

// PhaseContentType is the deploy answer that streams phases: one JSON
// object per line, {"phase":"compiling"}… then {"task":{…}} or
// {"error":{"code","message"}}. A client asks for it with Accept.
const PhaseContentType = "application/x-ndjson"

// phaseLine is one line of a streamed deploy answer.
type phaseLine struct {
	Phase string      `json:"phase,omitempty"`
	Task  *TaskDetail `json:"task,omitempty"`
	Error *ErrorText  `json:"error,omitempty"`
}

// TaskDetail is the body of GET /v1/tasks/{name} and of a deploy or
// rollback answer: the running task and, for a deployed task, its kept
// versions (oldest first; the last one runs).
type TaskDetail struct {
	Task
	// FreshInstance: every call gets a new instance (fresh_instance, and
	// always for a command).
	FreshInstance bool   `json:"fresh_instance"`
	MaxInput      uint64 `json:"max_input"`  // bytes
	MaxOutput     uint64 `json:"max_output"` // bytes
	// Permissions are the host API grants the task runs with.
	Permissions TaskPermissions `json:"permissions"`
	// Pool is the task's instance pool now.
	Pool TaskPool `json:"pool"`
	// Artifacts are the task's code per execution environment: its wasm
	// module (local) and its native executables (process).
	Artifacts []Artifact `json:"artifacts"`
	// Placement are the task's own placement rules.
	Placement []placement.Rule `json:"placement,omitempty"`
	Versions  []TaskVersion    `json:"versions,omitempty"`
}

// TaskPermissions are a task's host API grants (config key permissions).
type TaskPermissions struct {
	Publish   []string `json:"publish"`   // MQTT topic filters it may publish to
	Call      []string `json:"call"`      // tasks it may call; "*": any
	KVQuota   uint64   `json:"kv_quota"`  // bytes of kv; 0: no kv access
	Telemetry bool     `json:"telemetry"` // may read collected telemetry
	Network   bool     `json:"network"`   // its native executable may use the network
	Shadows   []string `json:"shadows"`   // device id patterns whose shadows it may read and change
}

// TaskPool is a task's instance pool: idle warm instances, and calls
// running now (each on its own instance).
type TaskPool struct {
	Warm  int `json:"warm"`
	InUse int `json:"in_use"`
}

// TaskVersion is one kept version of a deployed task.
type TaskVersion struct {
	Version     int       `json:"version"`
	Digest      string    `json:"digest"`
	Size        int       `json:"size"`
	Deployed    time.Time `json:"deployed"`
	ABI         string    `json:"abi"`
	MemoryLimit uint64    `json:"memory_limit"`
	Timeout     float64   `json:"timeout_seconds"`
	Concurrency int       `json:"concurrency"`
	Publish     []string  `json:"publish,omitempty"`
	Call        []string  `json:"call,omitempty"`
	KVQuota     uint64    `json:"kv_quota,omitempty"`
	Libraries   []BlobRef `json:"libraries,omitempty"` // Name: the import module name
	Files       []BlobRef `json:"files,omitempty"`     // Name: the guest path
	// Artifacts are the version's native executables (process
	// environment); its wasm module is Digest.
	Artifacts []Artifact `json:"artifacts,omitempty"`
	// From is "cloud" for a version a cloud call's code object deployed,
	// "peer" for one a peer's call brought.
	From string `json:"from,omitempty"`
}

// Artifact is a task's code for one execution environment: where it is,
// its sha256 (hex) and size.
type Artifact struct {
	Env      string `json:"env"`
	OS       string `json:"os,omitempty"`
	Arch     string `json:"arch,omitempty"`
	Digest   string `json:"digest"`
	Size     int64  `json:"size"`
	Location string `json:"location"`
}

// BlobRef names a stored blob of a task version.
type BlobRef struct {
	Name   string `json:"name"`
	Digest string `json:"digest"`
}

// MountRegistry adds the task registry routes to s.
func MountRegistry(s *Server, r Registry) {
	h := registryHandler{r}
	s.mux.HandleFunc("GET /v1/tasks/{name}", h.inspect)
	s.mux.HandleFunc("POST /v1/tasks/{name}", h.deploy)
	s.mux.HandleFunc("DELETE /v1/tasks/{name}", h.remove)
	s.mux.HandleFunc("POST /v1/tasks/{name}/rollback", h.rollback)
}

type registryHandler struct{ r Registry }

type errorAnswer struct {
	Error ErrorText `json:"error"`
}

// ErrorText is the error of a registry request.
type ErrorText struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

func registryError(w http.ResponseWriter, err error) {
	code, text := registryStatus(err)
	writeJSON(w, code, errorAnswer{text})
}

// registryStatus is the HTTP status and error text of a registry error.
func registryStatus(err error) (int, ErrorText) {
	code, name := http.StatusInternalServerError, "internal"
	switch {
	case errors.Is(err, ErrInvalid):
		code, name = http.StatusBadRequest, "invalid"
	case errors.Is(err, ErrConflict):
		code, name = http.StatusConflict, "conflict"
	case errors.Is(err, ErrNotFound):
		code, name = http.StatusNotFound, "not_found"
	case errors.Is(err, ErrInternal):
		code, name = http.StatusInternalServerError, "internal"
	}
	return code, ErrorText{Code: name, Message: err.Error()}
}

func (h registryHandler) inspect(w http.ResponseWriter, r *http.Request) {
	d, ok := h.r.Inspect(r.PathValue("name"))
	if !ok {
		registryError(w, fmt.Errorf("%w: no task %q", ErrNotFound, r.PathValue("name")))
		return
	}
	writeJSON(w, http.StatusOK, d)
}

// deploy takes the module as the body, or a multipart/form-data body with
// parts "module" (optional when the manifest names it), "manifest"
// (optional) and "object:REF" (a library module or data file the manifest
// references as REF). Each module and object part is stored as a blob as it
// arrives.
func (h registryHandler) deploy(w http.ResponseWriter, r *http.Request) {
	if r.ContentLength > MaxModule {
		// Refused before a byte is read or stored.
		writeJSON(w, http.StatusRequestEntityTooLarge, errorAnswer{ErrorText{Code: "invalid",
			Message: fmt.Sprintf("upload of %d bytes: at most %d bytes", r.ContentLength, MaxModule)}})
		return
	}
	body := http.MaxBytesReader(w, r.Body, MaxModule)
	up := Upload{Objects: map[string]string{}}
	deploying := false
	defer func() {
		if !deploying {
			h.r.Release(up)
		}
	}()
	var err error
	mt, params, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if mt == "multipart/form-data" {
		mr := multipart.NewReader(body, params["boundary"])
		seen := map[string]bool{}
		for {
			p, perr := mr.NextPart()
			if perr == io.EOF {
				break
			}
			if perr != nil {
				err = perr
				break
			}
			name := p.FormName()
			if seen[name] {
				registryError(w, fmt.Errorf("%w: part %q sent twice", ErrInvalid, name))
				return
			}
			seen[name] = true
			switch {
			case name == "module":
				up.Module, up.Size, err = h.r.StoreBlob(r.Context(), p)
			case name == "manifest":
				up.Manifest, err = io.ReadAll(io.LimitReader(p, MaxManifest+1))
				if err == nil && len(up.Manifest) > MaxManifest {
					registryError(w, fmt.Errorf("%w: manifest larger than %d bytes", ErrInvalid, MaxManifest))
					return
				}
			case strings.HasPrefix(name, ObjectPart) && len(name) > len(ObjectPart):
				up.Objects[strings.TrimPrefix(name, ObjectPart)], _, err = h.r.StoreBlob(r.Context(), p)
			default:
				registryError(w, fmt.Errorf("%w: unknown part %q (want module, manifest, %sREF)", ErrInvalid, name, ObjectPart))
				return
			}
			if err != nil {
				break
			}
		}
	} else {
		up.Module, up.Size, err = h.r.StoreBlob(r.Context(), body)
	}
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) || !errors.Is(err, ErrInternal) {
			registryError(w, fmt.Errorf("%w: read upload: %v (at most %d bytes)", ErrInvalid, err, MaxModule))
			return
		}
		registryError(w, err)
		return
	}
	deploying = true
	if r.Header.Get("Accept") != PhaseContentType {
		d, err := h.r.Deploy(r.Context(), r.PathValue("name"), up)
		if err != nil {
			registryError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, d)
		return
	}
	// Streamed: the status is 200 once the upload is in; the outcome is
	// the last line.
	w.Header().Set("Content-Type", PhaseContentType)
	w.WriteHeader(http.StatusOK)
	enc := json.NewEncoder(w)
	flush := func(l phaseLine) {
		_ = enc.Encode(l)
		_ = http.NewResponseController(w).Flush()
	}
	up.Phase = func(name string) { flush(phaseLine{Phase: name}) }
	d, err := h.r.Deploy(r.Context(), r.PathValue("name"), up)
	if err != nil {
		_, text := registryStatus(err)
		flush(phaseLine{Error: &text})
		return
	}
	flush(phaseLine{Task: &d})
}

func (h registryHandler) remove(w http.ResponseWriter, r *http.Request) {
	if err := h.r.Remove(r.Context(), r.PathValue("name")); err != nil {
		registryError(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (h registryHandler) rollback(w http.ResponseWriter, r *http.Request) {
	d, err := h.r.Rollback(r.Context(), r.PathValue("name"))
	if err != nil {
		registryError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, d)
}

// UploadPart is a file sent with a deploy.
type UploadPart struct {
	Ref  string // the reference the manifest uses (objects only)
	R    io.Reader
	Size int64
}

// DeployProgress follows a deploy: Sent as the module and objects are
// sent (over their total size), Phase as the daemon reports what it does
// after the upload (PhaseCompiling). Either may be nil.
type DeployProgress struct {
	Sent  func(sent, total int64)
	Phase func(name string)
}

// Deploy uploads a task as name: module (nil: the manifest names it), an
// optional manifest, and objects, the library modules and data files the
// manifest references, in one request, and follows it with p (nil: quietly).
func (c *Client) Deploy(ctx context.Context, name string, module *UploadPart, manifest []byte, objects []UploadPart, p *DeployProgress) (TaskDetail, error) {
	var progress func(sent, total int64)
	if p != nil {
		progress = p.Sent
	}
	pr, pw := io.Pipe()
	mw := multipart.NewWriter(pw)
	var total int64
	if module != nil {
		total += module.Size
	}
	for _, o := range objects {
		total += o.Size
	}
	prog := &progressReader{total: total, fn: progress}
	send := func(fw io.Writer, r io.Reader) error {
		if progress == nil {
			_, err := io.Copy(fw, r)
			return err
		}
		prog.r = r
		_, err := io.Copy(fw, prog)
		return err
	}
	go func() {
		err := func() error {
			if len(manifest) > 0 {
				if err := mw.WriteField("manifest", string(manifest)); err != nil {
					return err
				}
			}
			if module != nil {
				fw, err := mw.CreateFormFile("module", name+".wasm")
				if err != nil {
					return err
				}
				if err := send(fw, module.R); err != nil {
					return err
				}
			}
			for _, o := range objects {
				fw, err := mw.CreateFormFile(ObjectPart+o.Ref, path.Base(o.Ref))
				if err != nil {
					return err
				}
				if err := send(fw, o.R); err != nil {
					return err
				}
			}
			if progress != nil && total == 0 {
				progress(0, 0)
			}
			return mw.Close()
		}()
		pw.CloseWithError(err)
	}()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.base+"/v1/tasks/"+url.PathEscape(name), pr)
	if err != nil {
		return TaskDetail{}, err
	}
	req.Header.Set("Content-Type", mw.FormDataContentType())
	var d TaskDetail
	if p == nil || p.Phase == nil {
		return d, c.registryDo(req, &d)
	}
	req.Header.Set("Accept", PhaseContentType)
	return c.deployStreamed(req, p.Phase)
}

// deployStreamed reads a deploy answer that streams phases; a daemon that
// does not stream answers as registryDo expects.
func (c *Client) deployStreamed(req *http.Request, phase func(string)) (TaskDetail, error) {
	resp, err := c.send(req)
	if err != nil {
		return TaskDetail{}, err
	}
	defer resp.Body.Close()
	if ct, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type")); ct != PhaseContentType {
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			return TaskDetail{}, fmt.Errorf("read answer from %s: %w", c.base, err)
		}
		var d TaskDetail
		return d, registryAnswer(req, body, resp.StatusCode, &d)
	}
	dec := json.NewDecoder(resp.Body)
	for {
		var l phaseLine
		if err := dec.Decode(&l); err != nil {
			return TaskDetail{}, fmt.Errorf("%s %s: answer ended before the outcome: %w", req.Method, req.URL.Path, err)
		}
		switch {
		case l.Task != nil:
			return *l.Task, nil
		case l.Error != nil:
			return TaskDetail{}, fmt.Errorf("%s", strings.TrimSpace(l.Error.Message))
		case l.Phase != "":
			phase(l.Phase)
		}
	}
}

// Remove removes a deployed task.
func (c *Client) Remove(ctx context.Context, name string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodDelete, c.base+"/v1/tasks/"+url.PathEscape(name), nil)
	if err != nil {
		return err
	}
	return c.registryDo(req, nil)
}

// Rollback returns a deployed task to its previous version.
func (c *Client) Rollback(ctx context.Context, name string) (TaskDetail, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.base+"/v1/tasks/"+url.PathEscape(name)+"/rollback", nil)
	if err != nil {
		return TaskDetail{}, err
	}
	var d TaskDetail
	return d, c.registryDo(req, &d)
}

// Inspect describes one task.
func (c *Client) Inspect(ctx context.Context, name string) (TaskDetail, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+"/v1/tasks/"+url.PathEscape(name), nil)
	if err != nil {
		return TaskDetail{}, err
	}
	var d TaskDetail
	return d, c.registryDo(req, &d)
}

func (c *Client) registryDo(req *http.Request, v any) error {
	body, code, err := c.do(req)
	if err != nil {
		return err
	}
	return registryAnswer(req, body, code, v)
}

// registryAnswer decodes a registry answer into v, or its error.
func registryAnswer(req *http.Request, body []byte, code int, v any) error {
	if code >= 200 && code < 300 {
		if v != nil {
			if err := json.Unmarshal(body, v); err != nil {
				return fmt.Errorf("%s %s: bad answer: %w", req.Method, req.URL.Path, err)
			}
		}
		return nil
	}
	var e errorAnswer
	if json.Unmarshal(body, &e) == nil && e.Error.Message != "" {
		return fmt.Errorf("%s", strings.TrimSpace(e.Error.Message))
	}
	return fmt.Errorf("%s %s: %d: %s", req.Method, req.URL.Path, code, bytes.TrimSpace(body))
}

type progressReader struct {
	r           io.Reader
	sent, total int64
	fn          func(sent, total int64)
}

func (p *progressReader) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	p.sent += int64(n)
	if n > 0 || (err == io.EOF && p.sent == p.total) {
		p.fn(p.sent, p.total)
	}
	return n, err
}
