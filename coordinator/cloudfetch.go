package coordinator

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/outpost-edge/outpost/coordinator/admin"
	"github.com/outpost-edge/outpost/coordinator/calls"
	"github.com/outpost-edge/outpost/coordinator/remote"
)

// Code objects of cloud calls (docs/cloud-link.md "Code objects"). A call
// may carry the digest of its task's module. When it runs (the scheduler
// admits it although the task is unknown, one call of that task at a
// time), objectExecutor:
//   - runs it if the task is loaded with that module;
//   - fails it as task_conflict, naming both digests, if the task is
//     loaded with another module (a local task is never replaced);
//   - else fetches the object through the cloud link (its transport,
//     token and timeouts; one fetch per digest at a time, callers of the
//     same digest wait for it), verifies its sha256 while streaming it
//     into the blob store under the size cap, deploys it as the task
//     through the registry (default limits, no permissions, version
//     marked from: cloud), and runs the call. Any failure there finishes
//     the call as fetch_failed with the reason; nothing is retried for
//     that call (its result is final, a redelivery replays it), and the
//     next call naming the digest tries again.

// fromCloud marks a task version deployed from a cloud code object.
const fromCloud = "cloud"

// objectExecutor is the scheduler's executor: executor plus code objects.
type objectExecutor struct {
	executor
	c   *Coordinator
	max int64 // cap on a fetched object (maxFetch)

	fetches *prometheus.CounterVec

	mu      sync.Mutex
	flights map[string]*flight // fetches in progress, by hex digest
}

// flight is one fetch that callers of the same digest wait for.
type flight struct {
	done chan struct{}
	err  error
	// cut: the download ended because its own call's context did.
	cut bool
}

var _ calls.Executor = (*objectExecutor)(nil)

func newObjectExecutor(c *Coordinator) *objectExecutor {
	x := &objectExecutor{
		executor: executor{c.engine}, c: c, max: maxFetch, flights: map[string]*flight{},
		fetches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "outpost_cloud_object_fetches_total",
			Help: "Code objects fetched from the control plane for cloud calls, by result (ok, not_found, mismatch, too_large, error).",
		}, []string{"result"}),
	}
	c.reg.MustRegister(x.fetches)
	return x
}

// Concurrency is the task's limits.concurrency: the runtime's, or a
// process-only task's own.
func (x *objectExecutor) Concurrency(task string) (int, bool) {
	if t, ok := x.c.processOnly(task); ok {
		return t.Limits.Concurrency, true
	}
	return x.executor.Concurrency(task)
}

// Execute resolves a call's digest, then runs it.
func (x *objectExecutor) Execute(ctx context.Context, call *calls.Call) calls.Result {
	res := x.execute(ctx, call)
	if !res.OK() && res.Status != calls.StatusSuspended {
		// Every executed call of every source passes here: one warning per
		// failed call, with its kind (the status of its error document).
		x.c.log.Warn("call failed", "task", call.Task, "call", call.ID, "source", call.Source.String(), "kind", res.Status, "err", res.Error)
	}
	return res
}

func (x *objectExecutor) execute(ctx context.Context, call *calls.Call) calls.Result {
	if call.Digest != "" {
		if res, ok := x.resolve(ctx, call.Task, call.Digest); !ok {
			return res
		}
	}
	return x.c.envs.run(ctx, x.executor, call)
}

// resolve makes task run the module digest ("sha256:HEX"), fetching and
// deploying it if the task is not loaded; false with the call's result
// when it cannot.
func (x *objectExecutor) resolve(ctx context.Context, task, digest string) (calls.Result, bool) {
	want := strings.TrimPrefix(digest, remote.DigestPrefix)
	if have, ok := x.moduleDigest(task); ok {
		if have == want {
			return calls.Result{}, true
		}
		return taskConflict(task, have, want), false
	}
	failed := func(err error) (calls.Result, bool) {
		return calls.Result{Status: calls.StatusFetchFailed, Error: fmt.Sprintf("task %q is not deployed and its code object %s could not be used: %v", task, digest, err)}, false
	}
	if err := x.fetch(ctx, want); err != nil {
		return failed(err)
	}
	if m, ok := x.manifestObject(want); ok {
		defer x.c.releaseBlobs(want)
		if err := x.provision(ctx, task, want, m); err != nil {
			var tc *taskConflictError
			if errors.As(err, &tc) {
				return taskConflict(task, tc.have, want), false
			}
			return failed(err)
		}
		return calls.Result{}, true
	}
	st, err := os.Stat(x.c.blobPath(want))
	if err != nil {
		x.c.releaseBlobs(want)
		return failed(fmt.Errorf("fetched object gone from the blob store: %w", err))
	}
	if _, err := x.c.deploy(ctx, task, admin.Upload{Module: want, Size: st.Size()}, fromCloud, ""); err != nil {
		var tc *taskConflictError
		if errors.As(err, &tc) {
			return taskConflict(task, tc.have, want), false
		}
		return failed(fmt.Errorf("deploy: %w", err))
	}
	return calls.Result{}, true
}

// moduleDigest is the hex digest a cloud call names a loaded task by: the
// manifest object it was provisioned from, else its module's.
func (x *objectExecutor) moduleDigest(task string) (string, bool) {
	if _, ok := x.Concurrency(task); !ok {
		return "", false
	}
	if d := x.c.deployments()[task]; d != nil {
		return d.current().root(), true
	}
	for _, t := range x.e.Tasks() {
		if t.Name == task {
			return t.Digest, true
		}
	}
	return "", false
}

func taskConflict(task, have, want string) calls.Result {
	return calls.Result{Status: calls.StatusTaskConflict, Error: fmt.Sprintf(
		"task %q is deployed from sha256:%s but the call names sha256:%s: the local task is not replaced (remove it, or call it without a digest)", task, have, want)}
}

// taskConflictError: a cloud deploy found the task deployed meanwhile.
type taskConflictError struct{ name, have string }

func (e *taskConflictError) Error() string {
	return fmt.Sprintf("task %q is deployed from sha256:%s", e.name, e.have)
}

// cloudDeployed answers a cloud deploy of a task that is deployed already
// (the registry is locked): nothing to do for the same module, a conflict
// for another.
func (c *Coordinator) cloudDeployed(name, have, want string) (admin.TaskDetail, error) {
	if have == want {
		det, _ := c.Inspect(name)
		return det, nil
	}
	return admin.TaskDetail{}, fmt.Errorf("%w: %w", admin.ErrConflict, &taskConflictError{name: name, have: have})
}

// fetch puts the object of hex digest want in the blob store, fetching it
// unless stored, and holds it against blob GC for the caller (deploy
// releases the hold); concurrent fetches of one digest share one download. A
// download cut by its own call's end (canceled, deadline) is tried again
// by a waiting call that is still on.
func (x *objectExecutor) fetch(ctx context.Context, want string) error {
	for {
		if x.c.holdBlob(want) {
			return nil
		}
		x.mu.Lock()
		f := x.flights[want]
		if f == nil {
			break // x.mu is held
		}
		x.mu.Unlock()
		select {
		case <-f.done:
			if f.err != nil && f.cut && ctx.Err() == nil {
				continue
			}
			return f.err
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	f := &flight{done: make(chan struct{})}
	x.flights[want] = f
	x.mu.Unlock()
	f.err = x.download(ctx, want)
	f.cut = ctx.Err() != nil
	x.mu.Lock()
	delete(x.flights, want)
	x.mu.Unlock()
	close(f.done)
	return f.err
}

// download streams the object from the control plane into the blob store,
// checking its size and digest on the way.
func (x *objectExecutor) download(ctx context.Context, want string) error {
	link := x.c.cloud.link
	if link == nil {
		x.fetches.WithLabelValues("error").Inc()
		return errors.New("no cloud link (cloud.url) to fetch it from")
	}
	digest := remote.DigestPrefix + want
	body, size, err := link.OpenObject(ctx, digest)
	if err != nil {
		if errors.Is(err, remote.ErrObjectNotFound) {
			x.fetches.WithLabelValues("not_found").Inc()
		} else {
			x.fetches.WithLabelValues("error").Inc()
		}
		return err
	}
	defer body.Close()
	if size > x.max {
		x.fetches.WithLabelValues("too_large").Inc()
		return fmt.Errorf("object is %d bytes, over the cap of %d", size, x.max)
	}
	got, n, err := x.c.storeBlob(&capReader{r: body, left: x.max}, want)
	switch {
	case errors.Is(err, errDigestMismatch):
		x.fetches.WithLabelValues("mismatch").Inc()
		return fmt.Errorf("hash mismatch: the bytes served hash to sha256:%s (nothing stored)", got)
	case err != nil:
		x.fetches.WithLabelValues("error").Inc()
		return fmt.Errorf("store %s: %w", digest, err)
	}
	x.fetches.WithLabelValues("ok").Inc()
	x.c.envs.cloudHeld.add(digest) // it served the object: it holds it
	x.c.log.Info("fetched a code object from the control plane", "digest", digest, "size", n)
	return nil
}
