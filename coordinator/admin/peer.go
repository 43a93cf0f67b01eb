package admin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"

	"github.com/outpost-edge/outpost/coordinator/calls"
)

// The node-to-node endpoint of the peer environment (docs/placement.md,
// "The peer environment"): another Outpost instance runs calls on this
// one through these routes, authorized by this daemon's admin token like
// every other admin route.
//
//	GET  /v1/peer/status            this node's load (PeerStatus)
//	POST /v1/peer/calls             run a call (PeerCall); 200 with its calls.Result,
//	                                409 with the objects to send first (PeerMissing)
//	PUT  /v1/peer/objects/{digest}  store one object, checked against its sha256

// PeerStatus is a node's load as its peers read it.
type PeerStatus struct {
	Name      string `json:"name"`
	Workers   int    `json:"workers"`
	Running   int    `json:"running"`
	Queued    int    `json:"queued"`
	QueueSize int    `json:"queue_size"`
	Draining  bool   `json:"draining"`
}

// PeerCall is a call another node sends to run here.
type PeerCall struct {
	ID     string `json:"id"` // the call's id on the calling node
	Caller string `json:"caller"`
	Task   string `json:"task"`
	// Digest ("sha256:HEX") is the module of the task version to run; a
	// node that has the task with another module refuses the call
	// (task_conflict).
	Digest string `json:"digest"`
	// Manifest deploys that version on a node that lacks the task: a
	// deploy manifest whose module, libraries and files are sha256:HEX
	// objects.
	Manifest       []byte `json:"manifest"`
	Input          []byte `json:"input,omitempty"`
	IdempotencyKey string `json:"idempotency_key,omitempty"`
	Attempt        int    `json:"attempt,omitempty"`
	// TimeoutMS is what is left of the call's deadline (0: the task's
	// timeout).
	TimeoutMS int64 `json:"timeout_ms,omitempty"`
	// Resume, when set, makes the call the next step of a suspended
	// call: outpost_resume with this state and these results.
	Resume *PeerResume `json:"resume,omitempty"`
	// Labels are the call's labels (absent: none; a node that predates
	// them ignores them).
	Labels map[string]string `json:"labels,omitempty"`
}

// PeerResume is the next step of a suspended call run on a peer.
type PeerResume struct {
	State []byte       `json:"state"`
	Waits []calls.Wait `json:"waits"`
}

// PeerMissing is the answer to a PeerCall whose task version this node
// lacks objects of: the caller sends them, then the call again.
type PeerMissing struct {
	Error   ErrorText `json:"error"`
	Missing []string  `json:"missing"`
}

// PeerNode runs calls of other nodes.
type PeerNode interface {
	PeerStatus() PeerStatus
	// PeerCall runs c and returns its result, or the objects its task
	// version needs first (missing), or an error wrapping ErrInvalid
	// for a malformed call.
	PeerCall(ctx context.Context, c PeerCall) (res calls.Result, missing []string, err error)
	// StorePeerObject stores r, which must hash to digest (sha256:HEX).
	StorePeerObject(ctx context.Context, digest string, r io.Reader) error
}

// maxPeerCall bounds a PeerCall's JSON: an input and a resume state of
// MaxInput each, in base64, and a manifest.
const maxPeerCall = 3*MaxInput + MaxManifest

// MountPeer adds the node-to-node routes to s.
func MountPeer(s *Server, n PeerNode) {
	s.mux.HandleFunc("GET /v1/peer/status", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, n.PeerStatus())
	})
	s.mux.HandleFunc("POST /v1/peer/calls", func(w http.ResponseWriter, r *http.Request) {
		var c PeerCall
		if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxPeerCall)).Decode(&c); err != nil {
			writeJSON(w, http.StatusBadRequest, errorAnswer{ErrorText{Code: "invalid", Message: "peer call: " + err.Error()}})
			return
		}
		res, missing, err := n.PeerCall(r.Context(), c)
		switch {
		case err != nil:
			registryError(w, err)
		case len(missing) > 0:
			writeJSON(w, http.StatusConflict, PeerMissing{Error: ErrorText{Code: "missing_objects",
				Message: fmt.Sprintf("%d objects of task %s are not stored here: send them, then the call", len(missing), c.Task)}, Missing: missing})
		default:
			writeJSON(w, http.StatusOK, res)
		}
	})
	s.mux.HandleFunc("PUT /v1/peer/objects/{digest}", func(w http.ResponseWriter, r *http.Request) {
		if err := n.StorePeerObject(r.Context(), r.PathValue("digest"), r.Body); err != nil {
			registryError(w, err)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
}

// PeerStatus reads the load of the node c speaks to.
func (c *Client) PeerStatus(ctx context.Context) (PeerStatus, error) {
	var st PeerStatus
	return st, c.Get(ctx, "/v1/peer/status", &st)
}

// ErrPeerMissing wraps the answer of a node that lacks objects of the
// call's task version (PeerMissingError says which).
var ErrPeerMissing = errors.New("peer lacks objects of the task")

// PeerMissingError lists the objects a peer lacks.
type PeerMissingError struct{ Missing []string }

func (e *PeerMissingError) Error() string {
	return fmt.Sprintf("%v: %d objects", ErrPeerMissing, len(e.Missing))
}

func (e *PeerMissingError) Unwrap() error { return ErrPeerMissing }

// PeerCall runs pc on the node c speaks to and returns its result; a
// *PeerMissingError when the node needs objects first, a
// *PeerAnswerError when it refused the call, ErrUnauthorized when it
// refused the token. A transport error is returned as it is (the caller
// tells a call never sent from one cut while it ran).
func (c *Client) PeerCall(ctx context.Context, pc PeerCall) (calls.Result, error) {
	body, err := json.Marshal(pc)
	if err != nil {
		return calls.Result{}, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.base+"/v1/peer/calls", bytes.NewReader(body))
	if err != nil {
		return calls.Result{}, err
	}
	req.Header.Set("Content-Type", "application/json")
	b, code, err := c.do(req)
	if err != nil {
		return calls.Result{}, err
	}
	switch code {
	case http.StatusOK:
		var res calls.Result
		if err := json.Unmarshal(b, &res); err != nil || res.Status == "" {
			return calls.Result{}, fmt.Errorf("peer call %s: bad answer: %s", pc.Task, bytes.TrimSpace(b))
		}
		return res, nil
	case http.StatusConflict:
		var m PeerMissing
		if err := json.Unmarshal(b, &m); err == nil && len(m.Missing) > 0 {
			return calls.Result{}, &PeerMissingError{Missing: m.Missing}
		}
	}
	return calls.Result{}, &PeerAnswerError{Code: code, Body: string(bytes.TrimSpace(b))}
}

// PeerAnswerError: a peer answered a call with an error, so it did not
// run it (a malformed call, a task it cannot deploy, a full queue).
type PeerAnswerError struct {
	Code int
	Body string
}

func (e *PeerAnswerError) Error() string {
	return fmt.Sprintf("peer refused the call: answer %d: %s", e.Code, e.Body)
}

// PutPeerObject sends one object (size bytes of r, which hash to digest)
// to the node c speaks to.
func (c *Client) PutPeerObject(ctx context.Context, digest string, r io.Reader, size int64) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, c.base+"/v1/peer/objects/"+url.PathEscape(digest), r)
	if err != nil {
		return err
	}
	req.ContentLength = size
	req.Header.Set("Content-Type", "application/octet-stream")
	b, code, err := c.do(req)
	if err != nil {
		return err
	}
	if code != http.StatusNoContent {
		return fmt.Errorf("send object %s: answer %d: %s", digest, code, bytes.TrimSpace(b))
	}
	return nil
}
