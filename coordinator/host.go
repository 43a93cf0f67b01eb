package coordinator

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/outpost-edge/outpost/coordinator/calls"
	"github.com/outpost-edge/outpost/internal/store"
	outpostrt "github.com/outpost-edge/outpost/runtime"
	"github.com/outpost-edge/outpost/telemetry"
	"github.com/outpost-edge/outpost/telemetry/model"
	"github.com/outpost-edge/outpost/telemetry/tsdb"
)

// host serves the runtime's host functions (ABI v1): publish through the
// daemon's MQTT client, call through the scheduler, kv in the state store,
// telemetry from the telemetry service. The runtime has already checked the
// task's permissions.
type host struct{ c *Coordinator }

var _ outpostrt.Host = host{}

func (h host) Publish(ctx context.Context, task, topic string, qos byte, payload []byte) error {
	if h.c.client == nil {
		return errors.New("MQTT client not started")
	}
	return h.c.client.Publish(ctx, topic, qos, payload)
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

// CallAsync submits task to the scheduler with the caller's deadline; the
// Pending waits for it with the caller's worker slot given back.
func (h host) CallAsync(ctx context.Context, caller, task string, input []byte) (outpostrt.Pending, error) {
	call := h.newCall(ctx, caller, task, input)
	if dl, ok := ctx.Deadline(); ok {
		call.Deadline = dl
	}
	p := &pendingCall{sched: h.c.sched, call: call, task: task, done: make(chan struct{})}
	call.Done = func(*calls.Call) { close(p.done) }
	if err := h.c.sched.Submit(call); err != nil {
		_, err = callOutput(task, calls.Result{}, err)
		return nil, err
	}
	return p, nil
}

func (h host) newCall(ctx context.Context, caller, task string, input []byte) *calls.Call {
	ref := caller
	if m, ok := outpostrt.CallMetaFrom(ctx); ok && m.ID != "" {
		ref = caller + "/" + m.ID
	}
	return calls.New(task, input, calls.Source{Kind: "task", Ref: ref})
}

// callOutput maps the outcome of a call a guest made to what Host.Call returns.
func callOutput(task string, res calls.Result, err error) ([]byte, error) {
	switch {
	case errors.Is(err, calls.ErrUnknownTask):
		return nil, fmt.Errorf("%w %q", outpostrt.ErrUnknownTask, task)
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
	return storeKV{db: h.c.db, task: task}
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

// storeKV is one task's kv namespace in the state store: bucket "kv", key
// "<task>/<key>"; the namespace's size (sum of len(key)+len(value)) is kept
// at "kvsize/<task>" and updated in the same transaction as the entry.
// Writes are not synced: a put survives a daemon crash, not a power loss
// before badger flushes.
type storeKV struct {
	db   *store.DB
	task string
}

func (s storeKV) key(k []byte) []byte {
	return append([]byte("kv/"+s.task+"/"), k...)
}

func (s storeKV) sizeKey() []byte { return []byte("kvsize/" + s.task) }

func (s storeKV) Get(_ context.Context, key []byte) ([]byte, error) {
	var v []byte
	err := s.db.Badger().View(func(txn *badger.Txn) error {
		item, err := txn.Get(s.key(key))
		if errors.Is(err, badger.ErrKeyNotFound) {
			return outpostrt.ErrNotFound
		}
		if err != nil {
			return err
		}
		v, err = item.ValueCopy(nil)
		return err
	})
	return v, err
}

// update runs fn in a read-write transaction with the namespace's current
// size, retrying on a conflict with a concurrent writer.
func (s storeKV) update(fn func(txn *badger.Txn, size uint64) (uint64, error)) error {
	var err error
	for range 16 {
		err = s.db.Badger().Update(func(txn *badger.Txn) error {
			size := uint64(0)
			item, err := txn.Get(s.sizeKey())
			switch {
			case err == nil:
				if verr := item.Value(func(v []byte) error {
					if len(v) == 8 {
						size = binary.LittleEndian.Uint64(v)
					}
					return nil
				}); verr != nil {
					return verr
				}
			case !errors.Is(err, badger.ErrKeyNotFound):
				return err
			}
			next, err := fn(txn, size)
			if err != nil {
				return err
			}
			return txn.Set(s.sizeKey(), binary.LittleEndian.AppendUint64(nil, next))
		})
		if !errors.Is(err, badger.ErrConflict) {
			return err
		}
	}
	return err
}

// entrySize is the size an existing entry counts for, 0 if there is none.
func (s storeKV) entrySize(txn *badger.Txn, key []byte) (uint64, error) {
	item, err := txn.Get(s.key(key))
	if errors.Is(err, badger.ErrKeyNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	return uint64(len(key)) + uint64(item.ValueSize()), nil
}

func (s storeKV) Put(_ context.Context, key, value []byte, quota uint64) error {
	return s.update(func(txn *badger.Txn, size uint64) (uint64, error) {
		old, err := s.entrySize(txn, key)
		if err != nil {
			return 0, err
		}
		next := size - min(old, size) + uint64(len(key)+len(value))
		if next > quota {
			return 0, fmt.Errorf("%w: %d bytes used of %d, this entry needs %d", outpostrt.ErrQuota, size, quota, len(key)+len(value))
		}
		return next, txn.Set(s.key(key), value)
	})
}

func (s storeKV) Delete(_ context.Context, key []byte) error {
	return s.update(func(txn *badger.Txn, size uint64) (uint64, error) {
		old, err := s.entrySize(txn, key)
		if err != nil || old == 0 {
			return size, err
		}
		return size - min(old, size), txn.Delete(s.key(key))
	})
}

func (s storeKV) List(ctx context.Context, prefix []byte, limit int) ([][]byte, error) {
	var keys [][]byte
	ns := s.key(nil)
	err := s.db.Badger().View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{PrefetchValues: false})
		defer it.Close()
		p := s.key(prefix)
		for it.Seek(p); it.ValidForPrefix(p) && len(keys) < limit; it.Next() {
			if err := ctx.Err(); err != nil {
				return err
			}
			keys = append(keys, bytes.Clone(it.Item().Key()[len(ns):]))
		}
		return nil
	})
	return keys, err
}
