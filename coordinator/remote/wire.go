package remote

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Protocol is the cloud link version carried in HeaderProtocol.
const (
	Protocol       = "1"
	HeaderProtocol = "Outpost-Protocol"
)

// PollRequest is the body of POST /edge/v1/nodes/{node}/poll.
type PollRequest struct {
	BootID     string   `json:"boot_id"`
	AckThrough uint64   `json:"ack_through"`
	Renew      []string `json:"renew,omitempty"`
	Capacity   int      `json:"capacity"`
	Queues     []string `json:"queues,omitempty"`
	// QueueWeights and AgingMS advertise how the node orders its queues:
	// control first, then the weighted queues (a queue not listed weighs
	// 1) by smooth weighted round robin, a queue not served for AgingMS
	// going next. The server hands calls out in that order.
	QueueWeights map[string]int `json:"queue_weights,omitempty"`
	AgingMS      int64          `json:"aging_ms,omitempty"`
	WaitMS       int64          `json:"wait_ms"`
}

// PollResponse is the 200 body of a poll.
type PollResponse struct {
	Calls      []WireCall `json:"calls,omitempty"`
	Lost       []string   `json:"lost,omitempty"`
	Cancel     []string   `json:"cancel,omitempty"`
	NextPollMS int64      `json:"next_poll_ms,omitempty"`
}

// WireCall is one call handed to a node.
type WireCall struct {
	Seq     uint64 `json:"seq"`
	ID      string `json:"id"`
	Attempt int    `json:"attempt"`
	Task    string `json:"task"`
	// Digest, "sha256:HEX" (64 lower-case hex digits), names the code
	// object the task runs: a node that has no task of this name fetches
	// it (GET objects/{digest}) and deploys it; one that has it with
	// another module fails the call (task_conflict).
	Digest   string `json:"digest,omitempty"`
	Input    []byte `json:"input,omitempty"`
	Queue    string `json:"queue,omitempty"`
	Priority int    `json:"priority,omitempty"`
	// Labels are the call's labels (placement rules see them as
	// call.labels); absent when it has none.
	Labels         map[string]string `json:"labels,omitempty"`
	Effect         string            `json:"effect,omitempty"`
	IdempotencyKey string            `json:"idempotency_key,omitempty"`
	LeaseMS        int64             `json:"lease_ms"`
	StartByMS      int64             `json:"start_by_ms,omitempty"`
	MaxRunMS       int64             `json:"max_run_ms,omitempty"`
}

// Result is one call's outcome as uploaded.
type Result struct {
	CallID  string `json:"call_id"`
	Attempt int    `json:"attempt"`
	Status  string `json:"status"`
	Output  []byte `json:"output,omitempty"`
	Error   string `json:"error,omitempty"`
	Hash    string `json:"hash"`
	// Env and Rule say where the call ran and which placement rule chose
	// it (docs/placement.md); not part of the hash.
	Env  string `json:"env,omitempty"`
	Rule string `json:"rule,omitempty"`
}

// ResultHash is the hash a Result carries: hex sha256 of status, output
// and error separated by newlines.
func ResultHash(status string, output []byte, errMsg string) string {
	h := sha256.New()
	h.Write([]byte(status))
	h.Write([]byte{'\n'})
	h.Write(output)
	h.Write([]byte{'\n'})
	h.Write([]byte(errMsg))
	return hex.EncodeToString(h.Sum(nil))
}

// BatchRequest is the body of POST results:batch.
type BatchRequest struct {
	Results []Result `json:"results"`
}

// BatchResponse says what happened to each result, by HTTP status code.
type BatchResponse struct {
	Items []BatchItem `json:"items"`
}

// BatchItem is one result's status in a batch.
type BatchItem struct {
	CallID  string `json:"call_id"`
	Attempt int    `json:"attempt"`
	Status  int    `json:"status"`
}

// CallState is what the server holds for a node, answered after a 410.
type CallState struct {
	ID      string `json:"id"`
	State   string `json:"state"`
	Attempt int    `json:"attempt"`
}

// CallList is the body of GET calls.
type CallList struct {
	Calls []CallState `json:"calls"`
}

// Limits on what a node accepts from the cloud.
const (
	maxCallsPerPoll = 10000
	maxIDLen        = 256
	// MaxInput is the largest input of one call on the link: the server
	// refuses to enqueue more, a node refuses a poll response carrying more.
	MaxInput = 4 << 20
	// MaxResponseBody bounds the body of every JSON answer of the edge API
	// (polls, results, call lists; code objects stream under their own
	// cap): a server fills a poll response with calls up to it (always at
	// least one), a node reads no more of an answer and counts a larger one
	// as a protocol error.
	MaxResponseBody = 16 << 20
	// MaxRequestBody bounds the body of a request to the edge API (after
	// decompression): the server reads no more. A node sends results
	// batches of at most maxBatchResults bytes of outputs and errors, so a
	// batch (base64, JSON) stays under it; a single result always goes.
	MaxRequestBody  = 64 << 20
	maxBatchResults = 16 << 20
)

// batchBySize returns the first records of recs whose outputs and errors
// add up to at most maxBatchResults bytes (at least one record).
func batchBySize[T any](recs []T, size func(T) int) []T {
	total := 0
	for i, r := range recs {
		total += size(r)
		if i > 0 && total > maxBatchResults {
			return recs[:i]
		}
	}
	return recs
}

// ErrProtocol marks a response that breaks the protocol.
var ErrProtocol = errors.New("cloud protocol error")

// ParsePollResponse decodes and checks a poll response body.
func ParsePollResponse(b []byte) (PollResponse, error) {
	var r PollResponse
	if err := json.Unmarshal(b, &r); err != nil {
		return PollResponse{}, fmt.Errorf("%w: poll response: %w", ErrProtocol, err)
	}
	if len(r.Calls) > maxCallsPerPoll {
		return PollResponse{}, fmt.Errorf("%w: poll response: %d calls (at most %d)", ErrProtocol, len(r.Calls), maxCallsPerPoll)
	}
	for i, c := range r.Calls {
		where := fmt.Sprintf("poll response: calls[%d]", i)
		switch {
		case c.ID == "" || len(c.ID) > maxIDLen || strings.ContainsAny(c.ID, "/\x00"):
			return PollResponse{}, fmt.Errorf("%w: %s: bad id %q", ErrProtocol, where, c.ID)
		case c.Task == "":
			return PollResponse{}, fmt.Errorf("%w: %s (%s): no task", ErrProtocol, where, c.ID)
		case len(c.Input) > MaxInput:
			return PollResponse{}, fmt.Errorf("%w: %s (%s): input of %d bytes (at most %d)", ErrProtocol, where, c.ID, len(c.Input), MaxInput)
		case c.Seq == 0:
			return PollResponse{}, fmt.Errorf("%w: %s (%s): seq must be positive", ErrProtocol, where, c.ID)
		case c.Attempt < 1:
			return PollResponse{}, fmt.Errorf("%w: %s (%s): attempt %d", ErrProtocol, where, c.ID, c.Attempt)
		case c.LeaseMS <= 0 || c.StartByMS < 0 || c.MaxRunMS < 0:
			return PollResponse{}, fmt.Errorf("%w: %s (%s): lease_ms, start_by_ms or max_run_ms out of range", ErrProtocol, where, c.ID)
		case c.Effect != "" && c.Effect != "idempotent" && c.Effect != "at_most_once":
			return PollResponse{}, fmt.Errorf("%w: %s (%s): effect %q (want idempotent or at_most_once)", ErrProtocol, where, c.ID, c.Effect)
		case c.Digest != "" && !ValidDigest(c.Digest):
			return PollResponse{}, fmt.Errorf("%w: %s (%s): digest %q (want sha256:HEX, 64 lower-case hex digits)", ErrProtocol, where, c.ID, c.Digest)
		}
	}
	if r.NextPollMS < 0 {
		r.NextPollMS = 0
	}
	return r, nil
}

// ParseBatchResponse decodes a results:batch answer.
func ParseBatchResponse(b []byte) (BatchResponse, error) {
	var r BatchResponse
	if err := json.Unmarshal(b, &r); err != nil {
		return BatchResponse{}, fmt.Errorf("%w: batch response: %w", ErrProtocol, err)
	}
	for i, it := range r.Items {
		if it.CallID == "" || it.Status < 100 || it.Status > 599 {
			return BatchResponse{}, fmt.Errorf("%w: batch response: items[%d]: call %q status %d", ErrProtocol, i, it.CallID, it.Status)
		}
	}
	return r, nil
}

// MaxRetryAfter caps what a server may ask the node to wait.
const MaxRetryAfter = time.Hour

// ParseRetryAfter reads a Retry-After header: delay-seconds, or an
// HTTP-date measured against date (the response's own Date header, so
// that a server clock an hour off changes nothing); without a usable Date
// it is measured against now. It reports false for an absent, zero,
// negative or unparsable value; the result is capped at MaxRetryAfter.
func ParseRetryAfter(v, date string, now time.Time) (time.Duration, bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, false
	}
	var d time.Duration
	if n, err := strconv.ParseInt(v, 10, 64); err == nil {
		if n <= 0 {
			return 0, false
		}
		if n > int64(MaxRetryAfter/time.Second) {
			return MaxRetryAfter, true
		}
		d = time.Duration(n) * time.Second
	} else {
		t, err := http.ParseTime(v)
		if err != nil {
			return 0, false
		}
		ref := now
		if dt, err := http.ParseTime(strings.TrimSpace(date)); err == nil {
			ref = dt
		}
		d = t.Sub(ref)
		if d <= 0 {
			return 0, false
		}
	}
	return min(d, MaxRetryAfter), true
}
