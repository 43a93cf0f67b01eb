package remote

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// Cloud runs (docs/cloud-link.md "Cloud runs"): a node whose placement rule
// chose the cloud environment asks the control plane to run a call itself,
// on the control plane's worker pool, and waits for the result:
//
//	POST /edge/v1/nodes/{node}/runs/{run}     submit or wait (RunRequest; 200 RunResponse, 202 running)
//	PUT  /edge/v1/nodes/{node}/objects/{digest}  upload the module when the answer names it missing
//
// run is the node's call id and attempt: the same run submitted again (after
// a lost answer, or the control plane's restart) is the same run, never a
// second one. Every poll answer advertises the pool (HeaderRuns), which the
// node's rules see as envs.cloud.

// HeaderRuns is the poll answer's header advertising the control plane's
// cloud-run pool: "RUNNING/WORKERS" ("0/0": it runs no calls itself).
const HeaderRuns = "Outpost-Cloud-Runs"

// RunRequest is the body of a run submission.
type RunRequest struct {
	Task string `json:"task"`
	// Digest names the task's wasm module ("sha256:HEX"), which the
	// control plane takes from its object store.
	Digest string `json:"digest"`
	Input  []byte `json:"input,omitempty"`
	// Effect (idempotent, at_most_once) says whether the control plane may
	// run the call again after it restarted mid-run.
	Effect string `json:"effect,omitempty"`
	ABI    string `json:"abi,omitempty"`
	// The task's limits, as the node would apply them.
	MemoryBytes uint64 `json:"memory_bytes,omitempty"`
	TimeoutMS   int64  `json:"timeout_ms,omitempty"`
	MaxInput    uint64 `json:"max_input,omitempty"`
	MaxOutput   uint64 `json:"max_output,omitempty"`
	// Permissions: what the task may do through the host API; those only
	// an edge host has answer unavailable in the cloud.
	Publish   []string `json:"publish,omitempty"`
	Call      []string `json:"call,omitempty"`
	KVQuota   uint64   `json:"kv_quota,omitempty"`
	Telemetry bool     `json:"telemetry,omitempty"`
	Shadows   []string `json:"shadows,omitempty"`
	// WaitMS: how long the server may hold the request for the result.
	WaitMS int64 `json:"wait_ms,omitempty"`
}

// RunResponse is the answer to a run submission: its state (running,
// done) and, once done, the call's status, output and error.
type RunResponse struct {
	State  string `json:"state"`
	Status string `json:"status,omitempty"`
	Output []byte `json:"output,omitempty"`
	Error  string `json:"error,omitempty"`
	// Missing names the object the server lacks (404): upload it and
	// submit again.
	Missing string `json:"missing,omitempty"`
}

// Runs is the control plane's cloud-run pool as last advertised.
type Runs struct {
	Running, Workers int
}

// ParseRuns reads a HeaderRuns value.
func ParseRuns(v string) (Runs, bool) {
	a, b, ok := strings.Cut(v, "/")
	if !ok {
		return Runs{}, false
	}
	r, err1 := strconv.Atoi(a)
	w, err2 := strconv.Atoi(b)
	if err1 != nil || err2 != nil || r < 0 || w < 0 {
		return Runs{}, false
	}
	return Runs{Running: r, Workers: w}, true
}

// runsSeen holds the pool the last poll answer advertised.
type runsSeen struct{ v atomic.Pointer[Runs] }

func (s *runsSeen) note(h http.Header) {
	if r, ok := ParseRuns(h.Get(HeaderRuns)); ok {
		s.v.Store(&r)
	}
}

// CloudRuns returns the control plane's cloud-run pool as the last poll
// answer advertised it, and whether the link is up now: the cloud
// environment's health and capacity.
func (c *Client) CloudRuns() (Runs, bool) {
	r := c.runs.v.Load()
	if r == nil {
		return Runs{}, false
	}
	return *r, c.State() == StateUp
}

// ErrRunRefused: the control plane refused the run for good (a bad
// request, a node it does not know); submitting it again will not help.
var ErrRunRefused = errors.New("the control plane refused the cloud run")

// Run submits run (the node's call id and attempt) to the control plane and
// waits for its result. module opens the task's module, uploaded when the
// control plane lacks it. Connection failures, 5xx and 429 are retried with
// the link's backoff (the same run id, so a run the control plane already
// has is not started twice) until ctx ends, which is returned.
func (c *Client) Run(ctx context.Context, run string, req RunRequest, module func() (io.ReadCloser, int64, error)) (RunResponse, error) {
	b := &backoff{base: c.cfg.BackoffBase, max: c.cfg.BackoffMax}
	req.WaitMS = c.cfg.PollWait.Milliseconds()
	uploaded := false
	for {
		r, err := c.do(ctx, http.MethodPost, c.endpoint("runs", run), req)
		wait := time.Duration(0)
		switch {
		case ctx.Err() != nil:
			return RunResponse{}, ctx.Err()
		case err != nil:
			wait = b.next()
			c.log.Warn("cloud run: control plane unreachable; submitting again", "run", run, "err", err, "retry_in", wait)
		case r.status == http.StatusOK || r.status == http.StatusAccepted:
			var resp RunResponse
			if err := json.Unmarshal(r.body, &resp); err != nil {
				wait = b.next()
				break
			}
			b.reset()
			if resp.State == "done" {
				return resp, nil
			}
		case r.status == http.StatusNotFound:
			var resp RunResponse
			_ = json.Unmarshal(r.body, &resp)
			if resp.Missing != req.Digest {
				return RunResponse{}, fmt.Errorf("%w: %s", ErrRunRefused, trim(r.body))
			}
			if uploaded { // missing again (a control plane that lost its objects): not at once
				if err := sleepCtx(ctx, b.next()); err != nil {
					return RunResponse{}, err
				}
			}
			if err := c.uploadObject(ctx, req.Digest, module); err != nil {
				wait = b.next()
				c.log.Warn("cloud run: module upload failed", "run", run, "digest", req.Digest, "err", err, "retry_in", wait)
				break
			}
			uploaded = true
		case r.status == http.StatusUnauthorized:
			_ = c.loadToken()
			wait = b.next()
		case r.status == http.StatusTooManyRequests || r.status >= 500:
			wait = retryWait(r, b)
		default:
			return RunResponse{}, fmt.Errorf("%w: status %d: %s", ErrRunRefused, r.status, trim(r.body))
		}
		if err := sleepCtx(ctx, wait); err != nil {
			return RunResponse{}, err
		}
	}
}

// sleepCtx waits d, or returns ctx's error when it ends first.
func sleepCtx(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// uploadObject puts the module of digest into the control plane's object
// store; the server checks the bytes against the digest.
func (c *Client) uploadObject(ctx context.Context, digest string, open func() (io.ReadCloser, int64, error)) error {
	body, size, err := open()
	if err != nil {
		return fmt.Errorf("open module: %w", err)
	}
	defer body.Close()
	req, err := c.objectRequest(ctx, http.MethodPut, c.endpoint("objects", digest), body)
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/wasm")
	req.ContentLength = size
	resp, err := c.hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusCreated {
		return fmt.Errorf("status %d: %s", resp.StatusCode, trim(msg))
	}
	return nil
}
