package runtime

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/tetratelabs/wazero/api"

	"github.com/outpost-edge/outpost/devices/topic"
)

// hostDef is one function of the host module "outpost" (docs/abi.md).
type hostDef struct {
	name    string
	fn      func(c *code) api.GoModuleFunc
	params  []api.ValueType
	names   []string
	results []api.ValueType
}

// hostDefs is the whole host module, ABI v1. Order is the index into the
// host-call metrics.
var hostDefs = []hostDef{
	{"fail", func(c *code) api.GoModuleFunc { return c.hostFail }, []api.ValueType{i32, i32}, []string{"ptr", "len"}, nil},
	{"log", func(c *code) api.GoModuleFunc { return c.hostLog }, []api.ValueType{i32, i32, i32}, []string{"level", "ptr", "len"}, nil},
	{"publish", func(c *code) api.GoModuleFunc { return c.hostPublish }, []api.ValueType{i32, i32, i32, i32, i32},
		[]string{"topic_ptr", "topic_len", "payload_ptr", "payload_len", "qos"}, []api.ValueType{i32}},
	{"kv_get", func(c *code) api.GoModuleFunc { return c.hostKVGet }, []api.ValueType{i32, i32, i32, i32},
		[]string{"key_ptr", "key_len", "buf_ptr", "buf_cap"}, []api.ValueType{i32}},
	{"kv_put", func(c *code) api.GoModuleFunc { return c.hostKVPut }, []api.ValueType{i32, i32, i32, i32},
		[]string{"key_ptr", "key_len", "val_ptr", "val_len"}, []api.ValueType{i32}},
	{"kv_delete", func(c *code) api.GoModuleFunc { return c.hostKVDelete }, []api.ValueType{i32, i32},
		[]string{"key_ptr", "key_len"}, []api.ValueType{i32}},
	{"kv_list", func(c *code) api.GoModuleFunc { return c.hostKVList }, []api.ValueType{i32, i32, i32, i32},
		[]string{"prefix_ptr", "prefix_len", "buf_ptr", "buf_cap"}, []api.ValueType{i32}},
	{"call", func(c *code) api.GoModuleFunc { return c.hostCall }, []api.ValueType{i32, i32, i32, i32, i32, i32},
		[]string{"task_ptr", "task_len", "in_ptr", "in_len", "buf_ptr", "buf_cap"}, []api.ValueType{i32}},
	{"result", func(c *code) api.GoModuleFunc { return c.hostResult }, []api.ValueType{i32, i32},
		[]string{"buf_ptr", "buf_cap"}, []api.ValueType{i32}},
	{"meta", func(c *code) api.GoModuleFunc { return c.hostMeta }, []api.ValueType{i32, i32, i32},
		[]string{"field", "buf_ptr", "buf_cap"}, []api.ValueType{i32}},
	{"deadline", func(c *code) api.GoModuleFunc { return c.hostDeadline }, nil, nil, []api.ValueType{i64}},
	{"now", func(c *code) api.GoModuleFunc { return c.hostNow }, nil, nil, []api.ValueType{i64}},
	{"telemetry_latest", func(c *code) api.GoModuleFunc { return c.hostTelemetryLatest }, []api.ValueType{i32, i32, i32, i32},
		[]string{"target_ptr", "target_len", "path_ptr", "path_len"}, []api.ValueType{i32}},
	{"telemetry_query", func(c *code) api.GoModuleFunc { return c.hostTelemetryQuery }, []api.ValueType{i32, i32},
		[]string{"req_ptr", "req_len"}, []api.ValueType{i32}},
	{"call_async", func(c *code) api.GoModuleFunc { return c.hostCallAsync }, []api.ValueType{i32, i32, i32, i32},
		[]string{"task_ptr", "task_len", "in_ptr", "in_len"}, []api.ValueType{i32}},
	{"await", func(c *code) api.GoModuleFunc { return c.hostAwait }, []api.ValueType{i32, i32},
		[]string{"handle", "timeout_ms"}, []api.ValueType{i32}},
	{"call_async_by", func(c *code) api.GoModuleFunc { return c.hostCallAsyncBy }, []api.ValueType{i32, i32, i32, i32, i64},
		[]string{"task_ptr", "task_len", "in_ptr", "in_len", "need_by"}, []api.ValueType{i32}},
	{"suspend", func(c *code) api.GoModuleFunc { return c.hostSuspend }, []api.ValueType{i32, i32, i32, i32},
		[]string{"state_ptr", "state_len", "handles_ptr", "handles_count"}, []api.ValueType{i32}},
	{"shadow_get", func(c *code) api.GoModuleFunc { return c.hostShadowGet }, []api.ValueType{i32, i32, i32, i32},
		[]string{"thing_ptr", "thing_len", "name_ptr", "name_len"}, []api.ValueType{i32}},
	{"shadow_update", func(c *code) api.GoModuleFunc { return c.hostShadowUpdate }, []api.ValueType{i32, i32, i32, i32, i32, i32},
		[]string{"thing_ptr", "thing_len", "name_ptr", "name_len", "req_ptr", "req_len"}, []api.ValueType{i32}},
	{"shadow_delete", func(c *code) api.GoModuleFunc { return c.hostShadowDelete }, []api.ValueType{i32, i32, i32, i32, i32, i32},
		[]string{"thing_ptr", "thing_len", "name_ptr", "name_len", "req_ptr", "req_len"}, []api.ValueType{i32}},
}

// Indexes into hostDefs, for metrics.
const (
	hfFail = iota
	hfLog
	hfPublish
	hfKVGet
	hfKVPut
	hfKVDelete
	hfKVList
	hfCall
	hfResult
	hfMeta
	hfDeadline
	hfNow
	hfTelemetryLatest
	hfTelemetryQuery
	hfCallAsync
	hfAwait
	hfCallAsyncBy
	hfSuspend
	hfShadowGet
	hfShadowUpdate
	hfShadowDelete
)

// hostNames are the names of hostDefs by index (kept apart from hostDefs to
// avoid an initialization cycle).
var hostNames = [...]string{"fail", "log", "publish", "kv_get", "kv_put", "kv_delete", "kv_list", "call", "result", "meta", "deadline", "now",
	"telemetry_latest", "telemetry_query", "call_async", "await", "call_async_by", "suspend", "shadow_get", "shadow_update", "shadow_delete"}

// instantiateHostModule adds module "outpost" to c's runtime.
func (c *code) instantiateHostModule(ctx context.Context) error {
	b := c.rt.NewHostModuleBuilder(hostModule)
	for _, d := range hostDefs {
		b = b.NewFunctionBuilder().
			WithGoModuleFunction(d.fn(c), d.params, d.results).
			WithParameterNames(d.names...).
			Export(d.name)
	}
	_, err := b.Instantiate(ctx)
	return err
}

// hostCounters counts host function calls by function and return code
// (outpost_runtime_host_calls_total); resolved once so a host call costs an
// atomic add.
type hostCounters [][numCodes]prometheus.Counter

func newHostCounters(vec *prometheus.CounterVec) hostCounters {
	hc := make(hostCounters, len(hostDefs))
	for i, d := range hostDefs {
		for code := int32(0); code < numCodes; code++ {
			hc[i][code] = vec.WithLabelValues(d.name, codeNames[-code])
		}
	}
	return hc
}

// hcall is the state of one host function call.
type hcall struct {
	c    *code
	fn   int
	inst *instance
	mem  api.Memory
}

// begin finds the instance calling a host function. A host function called
// while the module is instantiated (from a start section) has none and traps.
func (c *code) begin(fn int, mod api.Module) hcall {
	c.mu.Lock()
	inst := c.insts[mod]
	c.mu.Unlock()
	h := hcall{c: c, fn: fn, inst: inst, mem: mod.Memory()}
	if inst == nil {
		panic(fmt.Errorf("outpost.%s: host functions cannot be called while the module is instantiated", hostNames[fn]))
	}
	return h
}

// trap stops the guest with err: wazero turns the panic into an error of
// the guest call, and classify reports it as a trap with this message.
func (h hcall) trap(err error) {
	h.inst.hostErr = err
	panic(err)
}

func (h hcall) memSize() uint32 {
	if h.mem == nil {
		return 0
	}
	return h.mem.Size()
}

// read returns a view of [ptr, ptr+n) or traps naming the argument.
func (h hcall) read(what string, ptr, n uint32) []byte {
	if h.mem != nil {
		if b, ok := h.mem.Read(ptr, n); ok {
			return b
		}
	}
	h.trap(fmt.Errorf("outpost.%s: %s at %#x length %d is outside linear memory (%d bytes)", hostNames[h.fn], what, ptr, n, h.memSize()))
	return nil
}

// check traps unless [ptr, ptr+n) is inside linear memory.
func (h hcall) check(what string, ptr, n uint32) { h.read(what, ptr, n) }

// copyIn returns a copy of [ptr, ptr+n), trapping when out of range.
func (h hcall) copyIn(what string, ptr, n uint32) []byte {
	return append([]byte(nil), h.read(what, ptr, n)...)
}

// fail finishes the host call with a negative code and keeps msg as the
// held value, readable with outpost.result.
func (h hcall) fail(code int32, msg string) int32 {
	h.inst.held = []byte(msg)
	h.done(code)
	return code
}

func (h hcall) done(code int32) {
	if hc := h.c.e.hostCalls; hc != nil && code <= 0 && code > -numCodes {
		hc[h.fn][-code].Inc()
	}
}

// give holds data as the call's value and copies what fits into the guest
// buffer (already checked), returning the full length.
func (h hcall) give(data []byte, buf, bufCap uint32) int32 {
	if len(data) > math.MaxInt32 {
		return h.fail(codeTooLarge, fmt.Sprintf("value of %d bytes is too large for ABI v1", len(data)))
	}
	h.inst.held = data
	if n := min(uint32(len(data)), bufCap); n > 0 {
		h.mem.Write(buf, data[:n])
	}
	h.done(codeOK)
	return int32(len(data))
}

func (h hcall) host() Host { return h.c.e.opts.Host }

func (h hcall) taskName() string { return h.inst.task.name }

// hostErrCode maps an error of the Host to a return code.
func hostErrCode(err error) int32 {
	switch {
	case errors.Is(err, ErrNotFound), errors.Is(err, ErrUnknownTask):
		return codeNotFound
	case errors.Is(err, ErrQuota):
		return codeQuota
	case errors.Is(err, ErrInvalid):
		return codeInvalid
	case errors.Is(err, ErrTooLarge):
		return codeTooLarge
	case errors.Is(err, ErrUnavailable):
		return codeUnavailable
	case errors.Is(err, ErrTooLate):
		return codeTooLate
	}
	return codeFailed
}

// hostFail implements outpost.fail(ptr, len): it records the guest's failure
// message on the calling instance. An out-of-range message traps the guest.
func (c *code) hostFail(_ context.Context, mod api.Module, stack []uint64) {
	h := c.begin(hfFail, mod)
	msg := h.read("message", api.DecodeU32(stack[0]), api.DecodeU32(stack[1]))
	h.done(codeOK)
	if h.inst.failed {
		return // first message wins
	}
	if len(msg) > maxFailMessage {
		msg = msg[:maxFailMessage]
	}
	h.inst.failed = true
	h.inst.failMsg = string(msg)
}

var logLevels = [...]slog.Level{slog.LevelDebug, slog.LevelInfo, slog.LevelWarn, slog.LevelError}

// hostLog implements outpost.log(level, ptr, len), within the task's log
// rate limit.
func (c *code) hostLog(ctx context.Context, mod api.Module, stack []uint64) {
	h := c.begin(hfLog, mod)
	level := min(max(api.DecodeI32(stack[0]), 0), 3)
	msg := h.read("message", api.DecodeU32(stack[1]), api.DecodeU32(stack[2]))
	if len(msg) > maxLogMessage {
		msg = msg[:maxLogMessage]
	}
	if h.inst.task.logs.allow(ctx, logLevels[level]) {
		h.inst.task.log.Log(ctx, logLevels[level], string(msg), "from", "guest")
	}
	h.done(codeOK)
}

// hostPublish implements outpost.publish(topic_ptr, topic_len, payload_ptr,
// payload_len, qos) -> code.
func (c *code) hostPublish(ctx context.Context, mod api.Module, stack []uint64) {
	h := c.begin(hfPublish, mod)
	tp, tl := api.DecodeU32(stack[0]), api.DecodeU32(stack[1])
	pp, pl := api.DecodeU32(stack[2]), api.DecodeU32(stack[3])
	qos := api.DecodeI32(stack[4])
	topicB := h.read("topic", tp, tl)
	h.check("payload", pp, pl)
	stack[0] = api.EncodeI32(h.publish(ctx, string(topicB), pp, pl, qos))
}

func (h hcall) publish(ctx context.Context, t string, pp, pl uint32, qos int32) int32 {
	switch {
	case qos < 0 || qos > 2:
		return h.fail(codeInvalid, fmt.Sprintf("publish: qos %d is not 0, 1 or 2", qos))
	case len(t) == 0 || len(t) > maxTopic:
		return h.fail(codeInvalid, fmt.Sprintf("publish: topic length %d is not between 1 and %d", len(t), maxTopic))
	case topic.CheckName(t) != nil:
		return h.fail(codeInvalid, fmt.Sprintf("publish: topic %q contains a wildcard character or NUL", t))
	case h.c.e.opts.MaxPublish > 0 && uint64(pl) > uint64(h.c.e.opts.MaxPublish):
		return h.fail(codeTooLarge, fmt.Sprintf("publish: payload of %d bytes exceeds the broker's message size limit of %d", pl, h.c.e.opts.MaxPublish))
	case !h.inst.task.perms.mayPublish(t):
		return h.fail(codeDenied, fmt.Sprintf("publish to %q denied: no filter of permissions.publish matches it", t))
	case h.host() == nil:
		return h.fail(codeUnavailable, "publish: no host services in this engine")
	}
	payload := h.copyIn("payload", pp, pl)
	if err := h.host().Publish(ctx, h.taskName(), t, byte(qos), payload); err != nil {
		return h.fail(hostErrCode(err), "publish: "+err.Error())
	}
	h.inst.held = nil
	h.done(codeOK)
	return codeOK
}

// kv returns the task's namespace or a failure code.
func (h hcall) kv(op string) (KV, int32) {
	switch {
	case h.inst.task.perms.kvQuota == 0:
		return nil, h.fail(codeDenied, op+": kv denied: the task's kv quota is 0")
	case h.host() == nil:
		return nil, h.fail(codeUnavailable, op+": no host services in this engine")
	}
	return h.host().KV(h.taskName()), codeOK
}

func (h hcall) checkKey(op string, key []byte, allowEmpty bool) int32 {
	if (len(key) == 0 && !allowEmpty) || len(key) > maxKVKey {
		return h.fail(codeInvalid, fmt.Sprintf("%s: key length %d is not between 1 and %d", op, len(key), maxKVKey))
	}
	return codeOK
}

// hostKVGet implements outpost.kv_get(key_ptr, key_len, buf_ptr, buf_cap) -> len or code.
func (c *code) hostKVGet(ctx context.Context, mod api.Module, stack []uint64) {
	h := c.begin(hfKVGet, mod)
	key := h.read("key", api.DecodeU32(stack[0]), api.DecodeU32(stack[1]))
	buf, bufCap := api.DecodeU32(stack[2]), api.DecodeU32(stack[3])
	h.check("buffer", buf, bufCap)
	stack[0] = api.EncodeI32(func() int32 {
		if code := h.checkKey("kv_get", key, false); code != codeOK {
			return code
		}
		kv, code := h.kv("kv_get")
		if code != codeOK {
			return code
		}
		v, err := kv.Get(ctx, append([]byte(nil), key...))
		if err != nil {
			return h.fail(hostErrCode(err), fmt.Sprintf("kv_get %q: %v", key, err))
		}
		return h.give(v, buf, bufCap)
	}())
}

// hostKVPut implements outpost.kv_put(key_ptr, key_len, val_ptr, val_len) -> code.
func (c *code) hostKVPut(ctx context.Context, mod api.Module, stack []uint64) {
	h := c.begin(hfKVPut, mod)
	key := h.read("key", api.DecodeU32(stack[0]), api.DecodeU32(stack[1]))
	vp, vl := api.DecodeU32(stack[2]), api.DecodeU32(stack[3])
	h.check("value", vp, vl)
	stack[0] = api.EncodeI32(func() int32 {
		if code := h.checkKey("kv_put", key, false); code != codeOK {
			return code
		}
		if vl > maxKVValue {
			return h.fail(codeTooLarge, fmt.Sprintf("kv_put: value of %d bytes exceeds %d", vl, maxKVValue))
		}
		kv, code := h.kv("kv_put")
		if code != codeOK {
			return code
		}
		quota := h.inst.task.perms.kvQuota
		if err := kv.Put(ctx, append([]byte(nil), key...), h.copyIn("value", vp, vl), quota); err != nil {
			return h.fail(hostErrCode(err), fmt.Sprintf("kv_put %q: %v", key, err))
		}
		h.inst.held = nil
		h.done(codeOK)
		return codeOK
	}())
}

// hostKVDelete implements outpost.kv_delete(key_ptr, key_len) -> code.
func (c *code) hostKVDelete(ctx context.Context, mod api.Module, stack []uint64) {
	h := c.begin(hfKVDelete, mod)
	key := h.read("key", api.DecodeU32(stack[0]), api.DecodeU32(stack[1]))
	stack[0] = api.EncodeI32(func() int32 {
		if code := h.checkKey("kv_delete", key, false); code != codeOK {
			return code
		}
		kv, code := h.kv("kv_delete")
		if code != codeOK {
			return code
		}
		if err := kv.Delete(ctx, append([]byte(nil), key...)); err != nil {
			return h.fail(hostErrCode(err), fmt.Sprintf("kv_delete %q: %v", key, err))
		}
		h.inst.held = nil
		h.done(codeOK)
		return codeOK
	}())
}

// hostKVList implements outpost.kv_list(prefix_ptr, prefix_len, buf_ptr,
// buf_cap) -> len or code. The value is each key as a little-endian u32
// length followed by its bytes.
func (c *code) hostKVList(ctx context.Context, mod api.Module, stack []uint64) {
	h := c.begin(hfKVList, mod)
	prefix := h.read("prefix", api.DecodeU32(stack[0]), api.DecodeU32(stack[1]))
	buf, bufCap := api.DecodeU32(stack[2]), api.DecodeU32(stack[3])
	h.check("buffer", buf, bufCap)
	stack[0] = api.EncodeI32(func() int32 {
		if code := h.checkKey("kv_list", prefix, true); code != codeOK {
			return code
		}
		kv, code := h.kv("kv_list")
		if code != codeOK {
			return code
		}
		keys, err := kv.List(ctx, append([]byte(nil), prefix...), maxKVList)
		if err != nil {
			return h.fail(hostErrCode(err), fmt.Sprintf("kv_list %q: %v", prefix, err))
		}
		var out []byte
		for _, k := range keys {
			out = binary.LittleEndian.AppendUint32(out, uint32(len(k)))
			out = append(out, k...)
		}
		return h.give(out, buf, bufCap)
	}())
}

// hostCall implements outpost.call(task_ptr, task_len, in_ptr, in_len,
// buf_ptr, buf_cap) -> len or code.
func (c *code) hostCall(ctx context.Context, mod api.Module, stack []uint64) {
	h := c.begin(hfCall, mod)
	name := h.read("task name", api.DecodeU32(stack[0]), api.DecodeU32(stack[1]))
	ip, il := api.DecodeU32(stack[2]), api.DecodeU32(stack[3])
	buf, bufCap := api.DecodeU32(stack[4]), api.DecodeU32(stack[5])
	h.check("input", ip, il)
	h.check("buffer", buf, bufCap)
	task := string(name)
	stack[0] = api.EncodeI32(func() int32 {
		if code := h.checkCall("call", task); code != codeOK {
			return code
		}
		out, err := h.host().Call(ctx, h.taskName(), task, h.copyIn("input", ip, il))
		if err != nil {
			return h.fail(hostErrCode(err), fmt.Sprintf("call %s: %v", task, err))
		}
		return h.give(out, buf, bufCap)
	}())
}

// checkCall returns a failure code unless the task may call task.
func (h hcall) checkCall(op, task string) int32 {
	switch {
	case len(task) == 0 || len(task) > maxTaskName:
		return h.fail(codeInvalid, fmt.Sprintf("%s: task name length %d is not between 1 and %d", op, len(task), maxTaskName))
	case !h.inst.task.perms.mayCall(task):
		return h.fail(codeDenied, fmt.Sprintf("%s of task %q denied: not in permissions.call", op, task))
	case h.host() == nil:
		return h.fail(codeUnavailable, op+": no host services in this engine")
	}
	return codeOK
}

// handles are the calls a guest call submitted with outpost.call_async and
// has not awaited. Handles count up from 1 within a guest call and are
// never reused in it.
type handles struct {
	last    int32
	pending map[int32]pendingCall
}

type pendingCall struct {
	task string
	p    Pending
}

// cancelAll cancels the calls not awaited when a guest call ends and
// forgets every handle.
func (hs *handles) cancelAll() {
	for _, pc := range hs.pending {
		pc.p.Cancel()
	}
	hs.last, hs.pending = 0, nil
}

// hostCallAsync implements outpost.call_async(task_ptr, task_len, in_ptr,
// in_len) -> handle or code: needed by the caller's deadline.
func (c *code) hostCallAsync(ctx context.Context, mod api.Module, stack []uint64) {
	h := c.begin(hfCallAsync, mod)
	stack[0] = api.EncodeI32(h.callAsync(ctx, stack, time.Time{}))
}

// hostCallAsyncBy implements outpost.call_async_by(task_ptr, task_len,
// in_ptr, in_len, need_by) -> handle or code: need_by is when the caller
// needs the result, Unix nanoseconds (0: the caller's deadline).
func (c *code) hostCallAsyncBy(ctx context.Context, mod api.Module, stack []uint64) {
	h := c.begin(hfCallAsyncBy, mod)
	var needBy time.Time
	if ns := int64(stack[4]); ns > 0 {
		needBy = time.Unix(0, ns)
	}
	stack[0] = api.EncodeI32(h.callAsync(ctx, stack, needBy))
}

// callAsync submits the call of call_async and call_async_by and returns
// its handle or a failure code.
func (h hcall) callAsync(ctx context.Context, stack []uint64, needBy time.Time) int32 {
	op := hostNames[h.fn]
	name := h.read("task name", api.DecodeU32(stack[0]), api.DecodeU32(stack[1]))
	ip, il := api.DecodeU32(stack[2]), api.DecodeU32(stack[3])
	h.check("input", ip, il)
	task := string(name)
	if code := h.checkCall(op, task); code != codeOK {
		return code
	}
	hs := &h.inst.async
	if len(hs.pending) >= maxPending || hs.last == math.MaxInt32 {
		return h.fail(codeQuota, fmt.Sprintf("%s %s: %d handles are not awaited yet, the most a call may hold", op, task, len(hs.pending)))
	}
	if needBy.IsZero() {
		needBy, _ = ctx.Deadline()
	}
	p, err := h.host().CallAsync(ctx, h.taskName(), task, h.copyIn("input", ip, il), needBy)
	if err != nil {
		return h.fail(hostErrCode(err), fmt.Sprintf("%s %s: %v", op, task, err))
	}
	if hs.pending == nil {
		hs.pending = make(map[int32]pendingCall, maxPending)
	}
	hs.last++
	hs.pending[hs.last] = pendingCall{task: task, p: p}
	h.inst.held = nil
	h.done(codeOK)
	return hs.last
}

// hostSuspend implements outpost.suspend(state_ptr, state_len,
// handles_ptr, handles_count) -> code: the run ends suspended once the
// guest returns, keeping the state and waiting for the handles, which
// are then spent in this run.
func (c *code) hostSuspend(ctx context.Context, mod api.Module, stack []uint64) {
	h := c.begin(hfSuspend, mod)
	sp, sl := api.DecodeU32(stack[0]), api.DecodeU32(stack[1])
	hp, hn := api.DecodeU32(stack[2]), api.DecodeU32(stack[3])
	h.check("state", sp, sl)
	raw := h.read("handles", hp, uint32(min(uint64(hn)*4, math.MaxUint32)))
	stack[0] = api.EncodeI32(func() int32 {
		hs := &h.inst.async
		switch {
		case h.inst.suspend != nil:
			return h.fail(codeInvalid, "suspend: this run is already suspended")
		case h.inst.resume == nil:
			return h.fail(codeInvalid, "suspend: the module does not export "+exportResume)
		case !suspendable(ctx):
			return h.fail(codeUnavailable, "suspend: this call cannot be suspended (only journaled calls can); use await")
		case hn == 0 || hn > maxPending:
			return h.fail(codeInvalid, fmt.Sprintf("suspend: %d handles; give 1 to %d", hn, maxPending))
		case sl > maxSuspendState:
			return h.fail(codeTooLarge, fmt.Sprintf("suspend: state of %d bytes exceeds %d bytes", sl, maxSuspendState))
		}
		s := &Suspended{Task: h.taskName(), State: h.copyIn("state", sp, sl)}
		seen := make(map[int32]bool, hn)
		for i := range hn {
			hd := int32(binary.LittleEndian.Uint32(raw[4*i:]))
			pc, ok := hs.pending[hd]
			if !ok || seen[hd] {
				return h.fail(codeInvalid, fmt.Sprintf("suspend: handle %d is not a call_async handle of this run waiting to be awaited (or is given twice)", hd))
			}
			seen[hd] = true
			s.Waits = append(s.Waits, Awaited{Handle: hd, Task: pc.task, Pending: pc.p})
		}
		for _, w := range s.Waits {
			delete(hs.pending, w.Handle)
		}
		h.inst.suspend = s
		h.inst.held = nil
		h.done(codeOK)
		return codeOK
	}())
}

// hostAwait implements outpost.await(handle, timeout_ms) -> len or code.
// The output or error of the call is held for outpost.result, as for
// outpost.call.
func (c *code) hostAwait(ctx context.Context, mod api.Module, stack []uint64) {
	h := c.begin(hfAwait, mod)
	hd, ms := api.DecodeI32(stack[0]), api.DecodeI32(stack[1])
	stack[0] = api.EncodeI32(func() int32 {
		hs := &h.inst.async
		pc, ok := hs.pending[hd]
		if !ok {
			return h.fail(codeInvalid, fmt.Sprintf("await: unknown handle %d (never returned by call_async in this call, or already awaited)", hd))
		}
		wctx := ctx
		if ms > 0 {
			var cancel context.CancelFunc
			wctx, cancel = context.WithTimeout(ctx, time.Duration(ms)*time.Millisecond)
			defer cancel()
		}
		out, err := pc.p.Await(wctx)
		if err != nil && wctx.Err() != nil && ctx.Err() == nil {
			return h.fail(codeUnavailable, fmt.Sprintf("await: call %s (handle %d) did not finish within %d ms; the handle stays valid", pc.task, hd, ms))
		}
		delete(hs.pending, hd)
		if err != nil {
			if ctx.Err() != nil {
				pc.p.Cancel()
			}
			return h.fail(hostErrCode(err), fmt.Sprintf("call %s: %v", pc.task, err))
		}
		return h.give(out, 0, 0)
	}())
}

// telemetry returns the daemon's telemetry or a failure code.
func (h hcall) telemetry(op string) (Telemetry, int32) {
	if !h.inst.task.perms.telemetry {
		return nil, h.fail(codeDenied, op+": telemetry denied: permissions.telemetry is false")
	}
	if h.host() != nil {
		if t := h.host().Telemetry(); t != nil {
			return t, codeOK
		}
	}
	return nil, h.fail(codeUnavailable, op+": no telemetry in this engine")
}

// holdAnswer holds a telemetry function's JSON answer and returns its
// length, or too_large past maxTelemetryAnswer.
func (h hcall) holdAnswer(op string, answer []byte) int32 {
	if len(answer) > maxTelemetryAnswer {
		return h.fail(codeTooLarge, fmt.Sprintf("%s: answer of %d bytes exceeds %d: narrow the target, path or time range, or set a limit", op, len(answer), maxTelemetryAnswer))
	}
	return h.give(answer, 0, 0)
}

// hostTelemetryLatest implements outpost.telemetry_latest(target_ptr,
// target_len, path_ptr, path_len) -> len or code. The answer,
// {"points":[...]}, is held for outpost.result.
func (c *code) hostTelemetryLatest(ctx context.Context, mod api.Module, stack []uint64) {
	h := c.begin(hfTelemetryLatest, mod)
	target := string(h.read("target", api.DecodeU32(stack[0]), api.DecodeU32(stack[1])))
	path := string(h.read("path", api.DecodeU32(stack[2]), api.DecodeU32(stack[3])))
	stack[0] = api.EncodeI32(func() int32 {
		switch {
		case len(target) > maxTelemetrySelector:
			return h.fail(codeInvalid, fmt.Sprintf("telemetry_latest: target of %d bytes exceeds %d", len(target), maxTelemetrySelector))
		case len(path) > maxTelemetrySelector:
			return h.fail(codeInvalid, fmt.Sprintf("telemetry_latest: path of %d bytes exceeds %d", len(path), maxTelemetrySelector))
		}
		tel, code := h.telemetry("telemetry_latest")
		if code != codeOK {
			return code
		}
		answer, err := tel.Latest(ctx, target, path)
		if err != nil {
			return h.fail(hostErrCode(err), "telemetry_latest: "+err.Error())
		}
		return h.holdAnswer("telemetry_latest", answer)
	}())
}

// hostTelemetryQuery implements outpost.telemetry_query(req_ptr, req_len)
// -> len or code. The request is a JSON TelemetryQuery (empty: {}); the
// answer, {"since":...,"until":...,"series":[...]}, is held for
// outpost.result.
func (c *code) hostTelemetryQuery(ctx context.Context, mod api.Module, stack []uint64) {
	h := c.begin(hfTelemetryQuery, mod)
	rp, rl := api.DecodeU32(stack[0]), api.DecodeU32(stack[1])
	h.check("request", rp, rl)
	stack[0] = api.EncodeI32(func() int32 {
		if rl > maxTelemetryRequest {
			return h.fail(codeTooLarge, fmt.Sprintf("telemetry_query: request of %d bytes exceeds %d", rl, maxTelemetryRequest))
		}
		q, err := decodeTelemetryQuery(h.read("request", rp, rl))
		if err != nil {
			return h.fail(codeInvalid, "telemetry_query: "+err.Error())
		}
		tel, code := h.telemetry("telemetry_query")
		if code != codeOK {
			return code
		}
		answer, err := tel.Query(ctx, q)
		if err != nil {
			return h.fail(hostErrCode(err), "telemetry_query: "+err.Error())
		}
		return h.holdAnswer("telemetry_query", answer)
	}())
}

// decodeTelemetryQuery decodes a telemetry_query request strictly: one
// JSON object, known fields only; empty is {}.
func decodeTelemetryQuery(b []byte) (TelemetryQuery, error) {
	var q TelemetryQuery
	if len(bytes.TrimSpace(b)) == 0 {
		return q, nil
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&q); err != nil {
		return TelemetryQuery{}, fmt.Errorf("request: %w", err)
	}
	if len(bytes.TrimSpace(b[dec.InputOffset():])) > 0 {
		return TelemetryQuery{}, errors.New("request: data after the JSON object")
	}
	return q, nil
}

// shadowCall runs one shadow function: it reads the thing and shadow
// names and the request (none for shadow_get), checks them and the task's
// permissions.shadows, and holds the answer of do (the accepted document)
// or the rejection (the AWS error document).
func (h hcall) shadowCall(op string, stack []uint64, withRequest bool, do func(s Shadows, thing, name string, req []byte) ([]byte, error)) int32 {
	thing := string(h.read("thing", api.DecodeU32(stack[0]), api.DecodeU32(stack[1])))
	name := string(h.read("name", api.DecodeU32(stack[2]), api.DecodeU32(stack[3])))
	var rp, rl uint32
	if withRequest {
		rp, rl = api.DecodeU32(stack[4]), api.DecodeU32(stack[5])
		h.check("request", rp, rl)
	}
	switch {
	case thing == "" || len(thing) > maxShadowName:
		return h.fail(codeInvalid, fmt.Sprintf("%s: thing name of %d bytes (1 to %d)", op, len(thing), maxShadowName))
	case len(name) > maxShadowName:
		return h.fail(codeInvalid, fmt.Sprintf("%s: shadow name of %d bytes exceeds %d", op, len(name), maxShadowName))
	case !h.inst.task.perms.mayShadow(thing):
		return h.fail(codeDenied, fmt.Sprintf("%s: shadows of %q denied: no permissions.shadows pattern matches", op, thing))
	}
	var s Shadows
	if h.host() != nil {
		s = h.host().Shadows()
	}
	if s == nil {
		return h.fail(codeUnavailable, op+": no shadow service in this engine")
	}
	var req []byte
	if withRequest {
		req = h.copyIn("request", rp, rl)
	}
	answer, err := do(s, thing, name, req)
	var se *ShadowError
	switch {
	case errors.As(err, &se):
		h.inst.held = se.Document
		h.done(se.code())
		return se.code()
	case err != nil:
		return h.fail(hostErrCode(err), op+": "+err.Error())
	}
	return h.give(answer, 0, 0)
}

// hostShadowGet implements outpost.shadow_get(thing_ptr, thing_len,
// name_ptr, name_len) -> len or code; the document is held for
// outpost.result.
func (c *code) hostShadowGet(ctx context.Context, mod api.Module, stack []uint64) {
	h := c.begin(hfShadowGet, mod)
	stack[0] = api.EncodeI32(h.shadowCall("shadow_get", stack, false, func(s Shadows, thing, name string, _ []byte) ([]byte, error) {
		return s.Get(ctx, thing, name)
	}))
}

// hostShadowUpdate implements outpost.shadow_update(thing_ptr, thing_len,
// name_ptr, name_len, req_ptr, req_len) -> len or code.
func (c *code) hostShadowUpdate(ctx context.Context, mod api.Module, stack []uint64) {
	h := c.begin(hfShadowUpdate, mod)
	stack[0] = api.EncodeI32(h.shadowCall("shadow_update", stack, true, func(s Shadows, thing, name string, req []byte) ([]byte, error) {
		return s.Update(ctx, thing, name, req)
	}))
}

// hostShadowDelete implements outpost.shadow_delete(thing_ptr, thing_len,
// name_ptr, name_len, req_ptr, req_len) -> len or code.
func (c *code) hostShadowDelete(ctx context.Context, mod api.Module, stack []uint64) {
	h := c.begin(hfShadowDelete, mod)
	stack[0] = api.EncodeI32(h.shadowCall("shadow_delete", stack, true, func(s Shadows, thing, name string, req []byte) ([]byte, error) {
		return s.Delete(ctx, thing, name, req)
	}))
}

// hostResult implements outpost.result(buf_ptr, buf_cap) -> len.
func (c *code) hostResult(_ context.Context, mod api.Module, stack []uint64) {
	h := c.begin(hfResult, mod)
	buf, bufCap := api.DecodeU32(stack[0]), api.DecodeU32(stack[1])
	h.check("buffer", buf, bufCap)
	held := h.inst.held
	if n := min(uint32(len(held)), bufCap); n > 0 {
		h.mem.Write(buf, held[:n])
	}
	h.done(codeOK)
	stack[0] = api.EncodeI32(int32(len(held)))
}

// Fields of outpost.meta.
const (
	metaID = iota
	metaSource
	metaIdempotencyKey
	metaTask
)

// hostMeta implements outpost.meta(field, buf_ptr, buf_cap) -> len or code.
func (c *code) hostMeta(ctx context.Context, mod api.Module, stack []uint64) {
	h := c.begin(hfMeta, mod)
	field := api.DecodeI32(stack[0])
	buf, bufCap := api.DecodeU32(stack[1]), api.DecodeU32(stack[2])
	h.check("buffer", buf, bufCap)
	m, _ := CallMetaFrom(ctx)
	var v string
	switch field {
	case metaID:
		v = m.ID
	case metaSource:
		v = m.Source
	case metaIdempotencyKey:
		v = m.IdempotencyKey
	case metaTask:
		v = h.taskName()
	default:
		stack[0] = api.EncodeI32(h.fail(codeInvalid, fmt.Sprintf("meta: unknown field %d", field)))
		return
	}
	stack[0] = api.EncodeI32(h.give([]byte(v), buf, bufCap))
}

// hostDeadline implements outpost.deadline() -> unix nanoseconds (0: none).
func (c *code) hostDeadline(ctx context.Context, mod api.Module, stack []uint64) {
	h := c.begin(hfDeadline, mod)
	h.done(codeOK)
	stack[0] = api.EncodeI64(deadlineOf(ctx))
}

// hostNow implements outpost.now() -> unix nanoseconds.
func (c *code) hostNow(_ context.Context, mod api.Module, stack []uint64) {
	h := c.begin(hfNow, mod)
	h.done(codeOK)
	stack[0] = api.EncodeI64(now().UnixNano())
}
