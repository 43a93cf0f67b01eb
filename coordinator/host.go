package coordinator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/outpost-edge/outpost/coordinator/calls"
	"github.com/outpost-edge/outpost/devices"
	outpostrt "github.com/outpost-edge/outpost/runtime"
	"github.com/outpost-edge/outpost/telemetry"
	"github.com/outpost-edge/outpost/telemetry/model"
	"github.com/outpost-edge/outpost/telemetry/tsdb"
)

// host serves the runtime's host functions (ABI v1): publish through the
// daemon's MQTT client, call through the scheduler, kv in the state store,
// telemetry from the telemetry service, device shadows through the shadow
// service (shadows.go). The runtime has already checked the task's
// permissions.
type host struct{ c *Coordinator }

var _ outpostrt.Host = host{}

func (h host) Publish(ctx context.Context, task, topic string, qos byte, payload []byte) error {
	if h.c.client == nil {
		return errors.New("MQTT client not started")
	}
	err := h.c.client.Publish(ctx, topic, qos, payload)
	if errors.Is(err, devices.ErrTooLarge) {
		return fmt.Errorf("%w: %w", outpostrt.ErrTooLarge, err)
	}
	return err
}

// Call runs task through the scheduler like any other call, with the
// caller's deadline. The caller's worker slot is given back while it waits
// (Scheduler.Wait), so a chain of synchronous calls deeper than the worker
// cap completes; a call that could never start because its task's slots
// are all held by the calling chain fails at once (docs/abi.md, "call").
func (h host) Call(ctx context.Context, caller, task string, input []byte) ([]byte, error) {
	call := h.newCall(ctx, caller, task, input)
	var res calls.Result
	err := h.c.sched.Wait(ctx, call, func() error {
		var err error
		res, err = h.c.sched.Do(ctx, call)
		return err
	})
	return callOutput(task, res, err)
}

// CallAsync submits task to the scheduler, needed by needBy (its deadline
// too): the scheduler defers it while the node is busy and starts it in
// time (calls.Call.NeedBy). The call of a journaled caller is journaled as
// its dependency, so the caller may suspend until it finishes. The Pending
// waits for it with the caller's worker slot given back.
func (h host) CallAsync(ctx context.Context, caller, task string, input []byte, needBy time.Time) (outpostrt.Pending, error) {
	call := h.newCall(ctx, caller, task, input)
	call.NeedBy, call.Deadline = needBy, needBy
	p := &pendingCall{sched: h.c.sched, call: call, task: task, done: make(chan struct{})}
	call.Done = func(*calls.Call) { close(p.done) }
	var err error
	if parent := h.c.sched.JournaledCaller(ctx); parent != nil {
		err = parent.Depend(call)
	} else {
		err = h.c.sched.Submit(call)
	}
	if err != nil {
		_, err = callOutput(task, calls.Result{}, err)
		return nil, err
	}
	return p, nil
}

// newCall is a call the guest of ctx makes (call, call_async): it
// inherits the labels of the calling call (docs/placement.md, "Call
// labels"), so placement rules see a child as they saw its parent.
func (h host) newCall(ctx context.Context, caller, task string, input []byte) *calls.Call {
	ref := caller
	if m, ok := outpostrt.CallMetaFrom(ctx); ok && m.ID != "" {
		ref = caller + "/" + m.ID
	}
	c := calls.New(task, input, calls.Source{Kind: "task", Ref: ref})
	if parent := h.c.sched.Caller(ctx); parent != nil {
		c.Labels = parent.Labels // never changed once a call is made: shared
	}
	return c
}

// callOutput maps the outcome of a call a guest made to what Host.Call returns.
func callOutput(task string, res calls.Result, err error) ([]byte, error) {
	switch {
	case errors.Is(err, calls.ErrUnknownTask):
		return nil, fmt.Errorf("%w %q", outpostrt.ErrUnknownTask, task)
	case errors.Is(err, calls.ErrTooLate):
		return nil, fmt.Errorf("%w: %w", outpostrt.ErrTooLate, err)
	case err != nil:
		return nil, err
	case res.Status == calls.StatusUnknown:
		return nil, fmt.Errorf("%w %q", outpostrt.ErrUnknownTask, task)
	case !res.OK():
		return nil, fmt.Errorf("%s: %s", res.Status, res.Error)
	}
	return res.Output, nil
}

// pendingCall is a call submitted by host.CallAsync.
type pendingCall struct {
	sched *calls.Scheduler
	call  *calls.Call
	task  string
	done  chan struct{} // closed by the call's Done, after its Result is set
}

var _ outpostrt.Pending = (*pendingCall)(nil)

func (p *pendingCall) Await(ctx context.Context) ([]byte, error) {
	select {
	case <-p.done:
		return callOutput(p.task, p.call.Result, nil)
	default:
	}
	err := p.sched.Wait(ctx, p.call, func() error {
		select {
		case <-p.done:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	})
	if err != nil {
		if errors.Is(err, calls.ErrCallCycle) {
			p.Cancel() // it could not start while this chain waits, and nobody else waits for it
		}
		return nil, err
	}
	return callOutput(p.task, p.call.Result, nil)
}

func (p *pendingCall) Cancel() { p.sched.Cancel(p.call.ID) }

func (h host) KV(task string) outpostrt.KV {
	return storeKV{db: h.c.db, commit: h.c.kvCommit, space: h.c.kv.space(task), task: task, log: h.c.log}
}

// Telemetry reads the daemon's telemetry service; when telemetry is not
// enabled its methods return errors wrapping ErrUnavailable.
func (h host) Telemetry() outpostrt.Telemetry { return hostTelemetry{h.c.tele} }

// hostTelemetry answers outpost.telemetry_latest and telemetry_query with
// the documents of GET /v1/telemetry/latest and /v1/telemetry/query.
type hostTelemetry struct{ s *telemetry.Service }

var _ outpostrt.Telemetry = hostTelemetry{}

func (t hostTelemetry) Latest(_ context.Context, target, path string) ([]byte, error) {
	if err := t.check(path); err != nil {
		return nil, err
	}
	pts, err := t.s.Latest(target, path)
	if err != nil {
		return nil, telemetryErr(err)
	}
	return json.Marshal(map[string]any{"points": pts})
}

func (t hostTelemetry) Query(ctx context.Context, q outpostrt.TelemetryQuery) ([]byte, error) {
	if err := t.check(q.Path); err != nil {
		return nil, err
	}
	req, err := telemetry.ParseQuery(q.Target, q.Path, q.Since, q.Until, q.Bucket, q.Limit, time.Now())
	if err != nil {
		return nil, fmt.Errorf("%w: %w", outpostrt.ErrInvalid, err)
	}
	series, err := t.s.Query(ctx, req)
	if err != nil {
		return nil, telemetryErr(err)
	}
	if series == nil {
		series = []tsdb.Series{}
	}
	return json.Marshal(map[string]any{"since": req.Since.UTC(), "until": req.Until.UTC(), "series": series})
}

// check tells apart what the service's errors do not: telemetry off
// (unavailable) and a bad path pattern (invalid).
func (t hostTelemetry) check(path string) error {
	if t.s == nil || !t.s.Enabled() {
		return fmt.Errorf("%w: %w", outpostrt.ErrUnavailable, telemetry.ErrDisabled)
	}
	if _, err := model.ParsePattern(path); err != nil {
		return fmt.Errorf("%w: path: %w", outpostrt.ErrInvalid, err)
	}
	return nil
}

// telemetryErr maps an error of the service: disabled (or not started) is
// unavailable, anything else failed.
func telemetryErr(err error) error {
	if errors.Is(err, telemetry.ErrDisabled) {
		return fmt.Errorf("%w: %w", outpostrt.ErrUnavailable, err)
	}
	return err
}
