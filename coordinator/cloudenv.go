package coordinator

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"github.com/outpost-edge/outpost/coordinator/calls"
	"github.com/outpost-edge/outpost/coordinator/placement"
	"github.com/outpost-edge/outpost/coordinator/remote"
	"github.com/outpost-edge/outpost/coordinator/tasks"
	outpostrt "github.com/outpost-edge/outpost/runtime"
	"github.com/outpost-edge/outpost/runtime/builtin"
)

// The cloud environment (docs/placement.md): a call placed there is
// submitted over the cloud link, authenticated as this node, to the control
// plane, which runs the task's wasm module on its worker pool and answers
// with the result (remote.Client.Run). The call stays this node's: it is
// journaled, deduplicated, bounded by its deadline and reported here like
// any other; only its run happens elsewhere. The control plane takes the
// module from its object store by digest, or the node uploads it.

// cloudLink is the cloud link, nil without cloud.url.
func (e *environments) cloudLink() *remote.Client {
	if e.c.cloud == nil {
		return nil
	}
	return e.c.cloud.link
}

// cloudModule is the module t runs in the cloud: its wasm module, when the
// link is configured and the task has no libraries or files (the cloud
// runs one module without a filesystem).
func (e *environments) cloudModule(t tasks.Task) (outpostrt.TaskInfo, bool) {
	if e.cloudLink() == nil || len(t.Libraries) > 0 || len(t.Files) > 0 {
		return outpostrt.TaskInfo{}, false
	}
	return e.c.engine.Task(t.Name)
}

// cloudEnv is what the rules see of the cloud environment for task t: the
// pool the control plane advertised on its last poll answer, healthy while
// the link is up and a worker is free, and the expected time to upload t's
// module unless the control plane is known to hold it (it ran it, or this
// node fetched it from there) over the link's measured rate (DefaultLink
// before any transfer was measured).
func (e *environments) cloudEnv(t tasks.Task) placement.Env {
	link := e.cloudLink()
	if link == nil {
		return placement.Env{}
	}
	runs, up := link.CloudRuns()
	env := placement.Env{Running: int64(runs.Running), Capacity: int64(runs.Workers), Free: int64(max(runs.Workers-runs.Running, 0))}
	env.Healthy = up && runs.Running < runs.Workers
	if runs.Workers > 0 {
		env.Load = float64(runs.Running) / float64(runs.Workers)
	}
	if info, ok := e.c.engine.Task(t.Name); ok {
		module := remote.PackedObject{Digest: remote.DigestPrefix + info.Digest, Size: int64(info.Size)}
		env.ProvisionSeconds = e.cloudHeld.provisionSeconds([]remote.PackedObject{module}, link.Link())
	}
	return env
}

// runCloud submits c to the control plane and waits for its result, at
// most the task's timeout (or the call's max run) plus placement.cloud.wait,
// and within the call's own deadline.
func (e *environments) runCloud(ctx context.Context, c *calls.Call, t tasks.Task) calls.Result {
	info, ok := e.cloudModule(t) // the decision saw it; a reload may have removed it since
	if !ok {
		return calls.Result{Status: calls.StatusUnknown, Error: fmt.Sprintf("task %q has no module for the cloud environment", t.Name)}
	}
	if len(c.Input) > int(info.Limits.MaxInput) {
		return calls.Result{Status: calls.StatusTooLarge, Error: fmt.Sprintf("input of %d bytes is over the task's max_input of %d", len(c.Input), info.Limits.MaxInput)}
	}
	timeout := info.Limits.Timeout
	if c.MaxRun > 0 {
		timeout = c.MaxRun
	}
	ctx, cancel := context.WithTimeout(ctx, timeout+e.c.cfg.Load().Placement.Cloud.Wait.Std())
	defer cancel()
	effect := c.Effect
	if effect == "" {
		effect = calls.AtMostOnce
	}
	p := t.Permissions
	req := remote.RunRequest{
		Task: t.Name, Digest: remote.DigestPrefix + info.Digest, Input: c.Input, Effect: string(effect), ABI: info.ABI,
		MemoryBytes: info.Limits.MemoryLimit, TimeoutMS: timeout.Milliseconds(), MaxInput: info.Limits.MaxInput, MaxOutput: info.Limits.MaxOutput,
		Publish: p.Publish, Call: p.Call, KVQuota: uint64(p.KVQuota), Telemetry: p.Telemetry, Shadows: p.Shadows,
	}
	resp, err := e.cloudLink().Run(ctx, c.ID+"."+strconv.Itoa(c.Attempt), req, func() (io.ReadCloser, int64, error) {
		return openModule(info.Module)
	})
	switch {
	case err == nil:
		e.cloudHeld.add(req.Digest) // it ran the module: it holds it
		return calls.Result{Status: calls.Status(resp.Status), Output: resp.Output, Error: resp.Error}
	case errors.Is(err, context.DeadlineExceeded):
		return calls.Result{Status: calls.StatusTimeout, Error: "no result from the cloud environment before the call's deadline"}
	case errors.Is(err, context.Canceled):
		return calls.Result{Status: calls.StatusCanceled, Error: "canceled while it ran in the cloud environment"}
	}
	return calls.Result{Status: calls.StatusFailed, Error: err.Error()}
}

// openModule opens a task's module as the runtime loaded it: a file, or a
// built-in module's bytes.
func openModule(module string) (io.ReadCloser, int64, error) {
	if name, ok := strings.CutPrefix(module, "builtin:"); ok {
		b, ok := builtin.Lookup(name)
		if !ok {
			return nil, 0, fmt.Errorf("no built-in module %q", name)
		}
		return io.NopCloser(bytes.NewReader(b)), int64(len(b)), nil
	}
	f, err := os.Open(module)
	if err != nil {
		return nil, 0, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, 0, err
	}
	return f, fi.Size(), nil
}
