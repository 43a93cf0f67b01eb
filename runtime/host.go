package runtime

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/outpost-edge/outpost/devices/shadow"
	"github.com/outpost-edge/outpost/devices/topic"
)

// Host is what the host functions of ABI v1 (module "outpost", see
// docs/abi.md) reach the rest of the daemon through. The coordinator
// implements it (publish through its MQTT client, call through the
// scheduler, kv in the state store, telemetry from its telemetry service,
// shadows through its shadow service). Permissions are checked by the runtime
// before a Host method is called; the Host only does the work.
//
// Methods are called from the goroutine running a guest call, with that
// call's context (its deadline and CallMeta). The byte slices passed in are
// copies the Host may keep.
type Host interface {
	// Publish sends an MQTT message on behalf of task.
	Publish(ctx context.Context, task, topic string, qos byte, payload []byte) error
	// Call runs task synchronously on behalf of caller and returns its
	// output. An unknown task is an error wrapping ErrUnknownTask; a call
	// that ran and failed is any other error (its text reaches the guest).
	Call(ctx context.Context, caller, task string, input []byte) ([]byte, error)
	// CallAsync submits a call of task on behalf of caller without waiting
	// for it (outpost.call_async, call_async_by); the caller needs its
	// result by needBy (zero: no time given). An error (unknown task:
	// wrapping ErrUnknownTask; a needBy the task cannot meet: ErrTooLate)
	// means nothing was submitted.
	CallAsync(ctx context.Context, caller, task string, input []byte, needBy time.Time) (Pending, error)
	// KV is the key-value namespace of task.
	KV(task string) KV
	// Telemetry reads the daemon's collected telemetry; nil when the
	// daemon has none (the guest gets unavailable).
	Telemetry() Telemetry
	// Shadows reads and changes device shadows; nil when the daemon has
	// no shadow service (the guest gets unavailable).
	Shadows() Shadows
}

// Shadows answers outpost.shadow_get, shadow_update and shadow_delete
// through the daemon's shadow service, as a device's request on the AWS
// shadow topics would be answered (versions, delta and documents
// published to MQTT, persistence). name is "" for the classic shadow. A
// request the service rejects is a *ShadowError; an error wrapping
// ErrUnavailable means the service is not running; any other error is
// failed.
type Shadows interface {
	// Get returns the shadow's document, the payload of get/accepted.
	Get(ctx context.Context, thing, name string) ([]byte, error)
	// Update applies an update request (the AWS request document) and
	// returns the payload of update/accepted once it is on disk.
	Update(ctx context.Context, thing, name string, request []byte) ([]byte, error)
	// Delete applies a delete request (empty, or {"version":..,
	// "clientToken":..}) and returns the payload of delete/accepted.
	Delete(ctx context.Context, thing, name string, request []byte) ([]byte, error)
}

// ShadowError is a shadow request the shadow service rejected: Code is the
// AWS error code (400, 404, 409, 413, 500), Document the error document
// sent on .../rejected ({"code":..,"message":..,"timestamp":..}), held for
// the guest.
type ShadowError struct {
	Code     int
	Document []byte
}

func (e *ShadowError) Error() string { return fmt.Sprintf("shadow request rejected: %s", e.Document) }

// code maps an AWS shadow error code to a return code.
func (e *ShadowError) code() int32 {
	switch e.Code {
	case 400:
		return codeInvalid
	case 404:
		return codeNotFound
	case 409:
		return codeConflict
	case 413:
		return codeTooLarge
	}
	return codeFailed
}

// Pending is a call submitted by Host.CallAsync (an outpost.call_async
// handle).
type Pending interface {
	// Await waits until the call finished and returns its output or error
	// as Host.Call would, or until ctx ends, returning ctx's error; ctx
	// ending does not cancel the call, which may be awaited again. A call
	// that already finished is returned even when ctx has ended.
	Await(ctx context.Context) ([]byte, error)
	// Cancel cancels the call if it has not finished. The runtime cancels
	// the calls a guest call did not await when it ends.
	Cancel()
}

// Telemetry answers outpost.telemetry_latest and outpost.telemetry_query
// with the JSON documents described in docs/abi.md. An error wrapping
// ErrInvalid (a bad pattern, time or bucket) makes the guest's call return
// invalid, one wrapping ErrUnavailable (telemetry is not enabled)
// unavailable, any other failed.
type Telemetry interface {
	// Latest returns {"points":[...]}: the latest point of each series
	// whose target matches the glob target ("" all) and whose path matches
	// the pattern path ("" all).
	Latest(ctx context.Context, target, path string) ([]byte, error)
	// Query returns {"since":...,"until":...,"series":[...]}: the points
	// (or buckets) of each matching series in the request's time range.
	Query(ctx context.Context, q TelemetryQuery) ([]byte, error)
}

// TelemetryQuery is the request of outpost.telemetry_query, decoded
// strictly by the runtime; the Telemetry interprets the fields.
type TelemetryQuery struct {
	Target string `json:"target"` // glob on the target name; "" all
	Path   string `json:"path"`   // path pattern; "" all
	Since  string `json:"since"`  // a duration back from now ("1h") or an RFC 3339 time; "" an hour ago
	Until  string `json:"until"`  // as Since; "" now
	Bucket string `json:"bucket"` // a positive duration to downsample; "" raw points
	Limit  int    `json:"limit"`  // most points per series; 0 the store's default
}

// KV is one task's key-value namespace.
type KV interface {
	// Get returns the value of key, or an error wrapping ErrNotFound.
	Get(ctx context.Context, key []byte) ([]byte, error)
	// Put stores value at key. When the namespace's total size (the sum of
	// len(key)+len(value) over its entries) would exceed quota bytes it
	// stores nothing and returns an error wrapping ErrQuota.
	Put(ctx context.Context, key, value []byte, quota uint64) error
	// Delete removes key; a missing key is not an error.
	Delete(ctx context.Context, key []byte) error
	// List returns the keys starting with prefix in byte order, at most
	// limit of them.
	List(ctx context.Context, prefix []byte, limit int) ([][]byte, error)
}

// Sentinel errors a Host returns (wrapped) to tell the guest what happened.
var (
	// ErrNotFound: a kv key does not exist.
	ErrNotFound = errors.New("not found")
	// ErrQuota: a kv put would exceed the task's quota.
	ErrQuota = errors.New("kv quota exceeded")
	// ErrInvalid: an argument the Host interprets is bad (a telemetry
	// pattern, time or bucket).
	ErrInvalid = errors.New("invalid request")
	// ErrTooLarge: a message is over the broker's limit (publish).
	ErrTooLarge = errors.New("too large")
	// ErrUnavailable: the service behind a host function is off (telemetry
	// not enabled).
	ErrUnavailable = errors.New("unavailable")
	// ErrTooLate: a call_async cannot finish by the time its caller needs
	// it (the task's measured run time is longer than what is left).
	ErrTooLate = errors.New("need-by time cannot be met")
)

// Permissions say what a task may do through the host API. The zero value
// grants nothing: no publish, no calls, no kv, no telemetry.
type Permissions struct {
	// Publish lists the MQTT topic filters (+ and # wildcards) the task may
	// publish to.
	Publish []string
	// Call lists the tasks the task may call; "*" allows any task.
	Call []string
	// KVQuota is the most bytes (keys plus values) the task may keep in its
	// kv namespace; 0 denies kv access.
	KVQuota uint64
	// Telemetry allows reading the daemon's collected telemetry
	// (telemetry_latest, telemetry_query).
	Telemetry bool
	// Shadows lists the device ids (thing names) whose shadows the task
	// may read and change (shadow_get, shadow_update, shadow_delete): an
	// exact id, or a glob with * (any run of characters) and ? (one
	// character), as path.Match; "*" allows every device.
	Shadows []string
}

func (p Permissions) equal(o Permissions) bool {
	return fmt.Sprint(p.Publish) == fmt.Sprint(o.Publish) && fmt.Sprint(p.Call) == fmt.Sprint(o.Call) &&
		p.KVQuota == o.KVQuota && p.Telemetry == o.Telemetry && fmt.Sprint(p.Shadows) == fmt.Sprint(o.Shadows)
}

// check reports every invalid entry of p.
func (p Permissions) check() error {
	var errs []error
	for _, f := range p.Publish {
		if err := topic.CheckFilter(f); err != nil {
			errs = append(errs, fmt.Errorf("permissions.publish: %w", err))
		}
	}
	for _, c := range p.Call {
		if c == "" {
			errs = append(errs, errors.New("permissions.call: empty task name"))
		}
	}
	for _, pat := range p.Shadows {
		if err := shadow.CheckThingPattern(pat); err != nil {
			errs = append(errs, fmt.Errorf("permissions.shadows: %w", err))
		}
	}
	return errors.Join(errs...)
}

// perms is Permissions compiled for the checks made on every host call.
type perms struct {
	publish   []topic.Filter
	callAny   bool
	call      map[string]bool
	kvQuota   uint64
	telemetry bool
	shadows   []string
}

func compilePerms(p Permissions) perms {
	c := perms{kvQuota: p.KVQuota, telemetry: p.Telemetry, shadows: p.Shadows, call: make(map[string]bool, len(p.Call))}
	for _, f := range p.Publish {
		c.publish = append(c.publish, topic.Compile(f))
	}
	for _, t := range p.Call {
		if t == "*" {
			c.callAny = true
		}
		c.call[t] = true
	}
	return c
}

func (p *perms) mayPublish(t string) bool {
	for _, f := range p.publish {
		if _, ok := f.Match(t); ok {
			return true
		}
	}
	return false
}

func (p *perms) mayCall(task string) bool { return p.callAny || p.call[task] }

// mayShadow reports whether a permissions.shadows pattern matches thing.
func (p *perms) mayShadow(thing string) bool {
	for _, pat := range p.shadows {
		if shadow.MatchThing(pat, thing) {
			return true
		}
	}
	return false
}

// CallMeta is what a guest can learn about the call it serves (outpost.meta,
// outpost.deadline). The caller of Engine.Call attaches it to the context
// with WithCallMeta; the deadline the guest sees is the call's effective
// one (the earlier of the context's and the task's timeout).
type CallMeta struct {
	ID             string
	Source         string // kind:ref, for example "mqtt:sensors/1/temp"
	IdempotencyKey string
}

// CallMeta returns m itself: a CallMeta is a CallMetaSource.
func (m CallMeta) CallMeta() CallMeta { return m }

// CallMetaSource gives the CallMeta of a call when it is asked for (a guest
// calling outpost.meta, a host function), so a caller of Engine.Call does
// not build one for every call.
type CallMetaSource interface{ CallMeta() CallMeta }

// CallMetaKey is the context key of the CallMetaSource of a call:
// WithCallMeta attaches one, and a context type of the caller may answer
// Value(CallMetaKey{}) itself (the scheduler's contexts do, for the
// coordinator), which spares a context.WithValue per call.
type CallMetaKey struct{}

// WithCallMeta returns ctx carrying src (a CallMeta, or what gives one) for
// the guest of the call.
func WithCallMeta(ctx context.Context, src CallMetaSource) context.Context {
	return context.WithValue(ctx, CallMetaKey{}, src)
}

// CallMetaFrom returns the CallMeta attached to ctx, if any.
func CallMetaFrom(ctx context.Context) (CallMeta, bool) {
	src, ok := ctx.Value(CallMetaKey{}).(CallMetaSource)
	if !ok {
		return CallMeta{}, false
	}
	return src.CallMeta(), true
}

// Limits of the host API (docs/abi.md "Host API limits").
const (
	maxLogMessage = 4096
	maxTopic      = 1024
	maxKVKey      = 1024
	maxKVValue    = 1 << 20
	maxKVList     = 10000
	maxTaskName   = 256
	// maxPending bounds the outpost.call_async handles a guest call holds.
	maxPending = 64
	// maxTelemetrySelector bounds a telemetry target glob or path pattern.
	maxTelemetrySelector = 1024
	// maxTelemetryRequest bounds a telemetry_query request.
	maxTelemetryRequest = 64 << 10
	// maxTelemetryAnswer bounds the JSON answer of a telemetry function.
	maxTelemetryAnswer = 4 << 20
	// maxShadowName bounds a thing or shadow name given to a shadow
	// function (device ids and shadow names are shorter).
	maxShadowName = 256
)

// ABI v1 return codes of the host functions (docs/abi.md "Return codes").
const (
	codeOK          = 0
	codeDenied      = -1
	codeNotFound    = -2
	codeInvalid     = -3
	codeTooLarge    = -4
	codeQuota       = -5
	codeFailed      = -6
	codeUnavailable = -7
	codeTooLate     = -8
	codeConflict    = -9
)

var codeNames = map[int32]string{
	codeOK: "ok", codeDenied: "denied", codeNotFound: "not_found", codeInvalid: "invalid",
	codeTooLarge: "too_large", codeQuota: "quota", codeFailed: "failed", codeUnavailable: "unavailable",
	codeTooLate:  "too_late",
	codeConflict: "conflict",
}

// numCodes is the number of return codes, ok included.
const numCodes = 10

// deadlineOf returns ctx's deadline as Unix nanoseconds, 0 for none.
func deadlineOf(ctx context.Context) int64 {
	if d, ok := ctx.Deadline(); ok {
		return d.UnixNano()
	}
	return 0
}

// now is the wall clock of outpost.now; a variable for tests.
var now = time.Now
