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
	"strings"
	"time"
)

// MaxModule bounds an uploaded module (and its manifest).
const MaxModule = 256 << 20

// Errors a Registry returns (wrapped); they choose the HTTP status.
var (
	ErrInvalid  = errors.New("invalid")   // 400: bad name, manifest or module (compile error…)
	ErrConflict = errors.New("conflict")  // 409: a config task, no previous version
	ErrNotFound = errors.New("not found") // 404
)

// Registry manages deployed tasks (POST/DELETE /v1/tasks/{name},
// POST /v1/tasks/{name}/rollback, GET /v1/tasks/{name}).
type Registry interface {
	Deploy(ctx context.Context, name string, module, manifest []byte) (TaskDetail, error)
	Remove(ctx context.Context, name string) error
	Rollback(ctx context.Context, name string) (TaskDetail, error)
	Inspect(name string) (TaskDetail, bool)
}

// TaskDetail is the body of GET /v1/tasks/{name} and of a deploy or
// rollback answer: the running task and, for a deployed task, its kept
// versions (oldest first; the last one runs).
type TaskDetail struct {
	Task
	Versions []TaskVersion `json:"versions,omitempty"`
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
	code, name := http.StatusInternalServerError, "internal"
	switch {
	case errors.Is(err, ErrInvalid):
		code, name = http.StatusBadRequest, "invalid"
	case errors.Is(err, ErrConflict):
		code, name = http.StatusConflict, "conflict"
	case errors.Is(err, ErrNotFound):
		code, name = http.StatusNotFound, "not_found"
	}
	writeJSON(w, code, errorAnswer{ErrorText{Code: name, Message: err.Error()}})
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
// parts "module" and (optional) "manifest".
func (h registryHandler) deploy(w http.ResponseWriter, r *http.Request) {
	body := http.MaxBytesReader(w, r.Body, MaxModule)
	var module, manifest []byte
	var err error
	mt, params, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if mt == "multipart/form-data" {
		mr := multipart.NewReader(body, params["boundary"])
		for {
			p, perr := mr.NextPart()
			if perr == io.EOF {
				break
			}
			if perr != nil {
				err = perr
				break
			}
			b, rerr := io.ReadAll(p)
			if rerr != nil {
				err = rerr
				break
			}
			switch p.FormName() {
			case "module":
				module = b
			case "manifest":
				manifest = b
			default:
				registryError(w, fmt.Errorf("%w: unknown part %q (want module, manifest)", ErrInvalid, p.FormName()))
				return
			}
		}
	} else {
		module, err = io.ReadAll(body)
	}
	if err != nil {
		registryError(w, fmt.Errorf("%w: read upload: %v (at most %d bytes)", ErrInvalid, err, MaxModule))
		return
	}
	d, err := h.r.Deploy(r.Context(), r.PathValue("name"), module, manifest)
	if err != nil {
		registryError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, d)
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

// Deploy uploads module (size bytes) with an optional manifest as task
// name. progress, when set, is called as the module is sent.
func (c *Client) Deploy(ctx context.Context, name string, module io.Reader, size int64, manifest []byte, progress func(sent, total int64)) (TaskDetail, error) {
	pr, pw := io.Pipe()
	mw := multipart.NewWriter(pw)
	go func() {
		err := func() error {
			if len(manifest) > 0 {
				if err := mw.WriteField("manifest", string(manifest)); err != nil {
					return err
				}
			}
			fw, err := mw.CreateFormFile("module", name+".wasm")
			if err != nil {
				return err
			}
			var src io.Reader = module
			if progress != nil {
				src = &progressReader{r: module, total: size, fn: progress}
			}
			if _, err := io.Copy(fw, src); err != nil {
				return err
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
	return d, c.registryDo(req, &d)
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
	if n > 0 || err == io.EOF {
		p.fn(p.sent, p.total)
	}
	return n, err
}
