package coordinator

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	goruntime "runtime"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/outpost-edge/outpost/coordinator/admin"
	"github.com/outpost-edge/outpost/coordinator/calls"
	"github.com/outpost-edge/outpost/coordinator/placement"
	"github.com/outpost-edge/outpost/coordinator/remote"
	"github.com/outpost-edge/outpost/coordinator/tasks"
	"github.com/outpost-edge/outpost/internal/ratelog"
	outpostrt "github.com/outpost-edge/outpost/runtime"
	"github.com/outpost-edge/outpost/runtime/sandbox"
)

// environments runs every executed call where the placement rules say
// (docs/placement.md): in this daemon's wasm runtime (local), as the
// task's native executable in a bubblewrap sandbox (process), or on the
// control plane's worker pool (cloud, cloudenv.go). It sits
// behind the scheduler, so the journal, dedupe, deadlines and reporting
// are the same whichever environment runs a call.
type environments struct {
	c       *Coordinator
	rules   placement.Rules
	sandbox sandbox.Runner
	// processOK says whether the sandbox works here (checked at start).
	processOK atomic.Bool
	// slots holds one token per sandboxed process running, at most
	// placement.process.max_running.
	slots chan struct{}
	peers *peers // the peer environment (peers.go)
	// cloudHeld is what the control plane is known to hold of this
	// node's code objects (provisiontime.go).
	cloudHeld heldObjects
	decisions *prometheus.CounterVec
	evalLog   ratelog.Limiter // rules that fail to evaluate
}

// waitRetry is how often a call whose rule says wait is placed again.
const waitRetry = 50 * time.Millisecond

func newEnvironments(c *Coordinator) *environments {
	cfg := c.cfg.Load().Placement
	e := &environments{
		c: c, sandbox: sandbox.Runner{Bwrap: cfg.Process.Bwrap}, slots: make(chan struct{}, cfg.Process.MaxRunning),
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "outpost_placement_calls_total",
			Help: "Calls placed, by the environment that ran them (none: no environment could) and the rule that chose it (default: no rule matched).",
		}, []string{"env", "rule"}),
		evalLog: ratelog.Limiter{Every: time.Minute},
		peers:   newPeers(c),
	}
	c.reg.MustRegister(e.decisions)
	return e
}

// start checks the process environment: bubblewrap must create a sandbox.
func (e *environments) start(ctx context.Context) {
	mode, err := e.sandbox.Check(ctx)
	if err != nil {
		e.c.log.Warn("process environment unavailable: calls placed there fall back or fail", "err", err)
		return
	}
	e.c.log.Info("process environment ready", "memory_limit", mode)
	e.processOK.Store(true)
}

// task returns the task name runs as a config task: the config's, or the
// current version of the deployed one.
func (e *environments) task(name string) (tasks.Task, bool) {
	if t, ok := e.c.configTask(name); ok {
		return t, true
	}
	if d := e.c.deployments()[name]; d != nil {
		return e.c.deployedTask(name, d.current()), true
	}
	return tasks.Task{}, false
}

// executable is the task's artifact for the process environment on this
// host's OS and architecture.
func executable(t tasks.Task) (string, bool) {
	for _, a := range t.Artifacts {
		if a.Env == placement.Process && a.OS == goruntime.GOOS && a.Arch == goruntime.GOARCH {
			return a.Executable, true
		}
	}
	return "", false
}

// input builds what the rules see of call c of task t.
func (e *environments) input(c *calls.Call, t tasks.Task) placement.Input {
	st := e.c.sched.Stats()
	var artifacts []string
	if t.Module != "" {
		artifacts = append(artifacts, placement.Local)
	}
	if _, ok := executable(t); ok {
		artifacts = append(artifacts, placement.Process)
	}
	if e.peers.sendable(t) {
		artifacts = append(artifacts, placement.Peer)
	}
	if _, ok := e.cloudModule(t); ok {
		artifacts = append(artifacts, placement.Cloud)
	}
	running, capacity := int64(len(e.slots)), int64(cap(e.slots))
	memUsed, memBudget := e.c.engine.Memory()
	cloudUp := false
	if link := e.cloudLink(); link != nil {
		cloudUp = link.State() == remote.StateUp
	}
	in := placement.Input{
		Call: placement.Call{Task: c.Task, InputSize: int64(len(c.Input)), Source: c.Source.Kind, Queue: c.Queue,
			Priority: int64(c.Priority), HasDeadline: !c.Deadline.IsZero() || !c.StartBy.IsZero() || c.MaxRun > 0,
			Attempt: int64(c.Attempt), Resume: c.Resume != nil, Labels: c.Labels},
		Task: placement.Task{Name: t.Name, Devices: len(t.Permissions.Publish) > 0, Publish: t.Permissions.Publish,
			Network: t.Permissions.Network, Artifacts: artifacts, Labels: t.Labels},
		Node: placement.Node{QueueDepth: int64(st.Queued), Running: int64(st.Running), Workers: int64(st.Workers), Draining: st.Draining,
			MemoryUsed: int64(memUsed), MemoryBudget: int64(memBudget), CloudUp: cloudUp},
		Envs: map[string]placement.Env{
			placement.Local: {Healthy: true, Running: int64(st.Running), Capacity: int64(st.Workers), Load: float64(st.Running) / float64(max(st.Workers, 1)),
				Free: int64(max(st.Workers-st.Running, 0)), Queued: int64(st.Queued)},
			placement.Process: {Healthy: e.processOK.Load() && running < capacity, Running: running, Capacity: capacity,
				Load: float64(running) / float64(capacity), Free: capacity - running},
			placement.Cloud: e.cloudEnv(t),
		},
	}
	e.peers.addEnvs(in.Envs, t)
	return in
}

// run places call c and runs it there; local runs it through x. A call
// a peer sent runs here: it is not placed again, so no call travels in
// circles.
func (e *environments) run(ctx context.Context, x executor, c *calls.Call) calls.Result {
	t, ok := e.task(c.Task)
	var rules []placement.Rule
	if ok && c.Source.Kind != peerSource {
		rules = append(slices.Clone(t.Placement), e.c.cfg.Load().Placement.Rules...)
	}
	if !ok || (len(rules) == 0 && t.Module != "") {
		// A task not loaded (the runtime says so), or no rules for a wasm
		// task: local, as Decide answers without rules, without building
		// its input on every call of a node that has none. A process-only
		// task is placed by Decide: process, if it can run there.
		if ok {
			e.decisions.WithLabelValues(placement.Local, placement.DefaultRule).Inc()
		}
		res := x.Execute(ctx, c)
		res.Env, res.Rule = placement.Local, placement.DefaultRule
		return res
	}
	// A peer that did not take the call, or lost an idempotent one, is
	// down until its next refresh: the call is placed again, at most once
	// per peer.
	for range len(e.peers.all()) + 1 {
		d, err := e.rules.Decide(rules, e.input(c, t))
		for d.Env == "" && d.Wait && ctx.Err() == nil { // the rule says wait: decide again shortly
			select {
			case <-ctx.Done():
			case <-time.After(waitRetry):
				d, err = e.rules.Decide(rules, e.input(c, t))
			}
		}
		if d.Env == "" {
			e.decisions.WithLabelValues("none", d.Rule).Inc()
			return calls.Result{Status: calls.StatusRejected, Error: err.Error(), Rule: d.Rule}
		}
		if err != nil { // a rule failed to evaluate and did not match
			if n, ok := e.evalLog.Allow(time.Now()); ok {
				e.c.log.Warn("placement rule failed to evaluate; skipped", "task", c.Task, "err", err, "not_logged", n)
			}
		}
		var res calls.Result
		env := d.Env
		switch placement.Kind(d.Env) {
		case placement.Process:
			res = e.runProcess(ctx, c, t)
		case placement.Cloud:
			res = e.runCloud(ctx, c, t)
		case placement.Peer:
			var done bool
			if res, env, done = e.peers.run(ctx, c, t, d.Env); !done {
				continue
			}
		default:
			res = x.Execute(ctx, c)
		}
		e.decisions.WithLabelValues(env, d.Rule).Inc()
		res.Env, res.Rule = env, d.Rule
		return res
	}
	return calls.Result{Status: calls.StatusRejected, Error: "no peer took the call, and the rules placed it on a peer each time"}
}

// runProcess runs c as t's native executable in the sandbox, under the
// task's limits.
func (e *environments) runProcess(ctx context.Context, c *calls.Call, t tasks.Task) calls.Result {
	if len(c.Input) > int(t.Limits.MaxInput) {
		return calls.Result{Status: calls.StatusTooLarge, Error: fmt.Sprintf("input of %d bytes is over the task's max_input of %d", len(c.Input), t.Limits.MaxInput)}
	}
	exe, _ := executable(t) // the decision saw it
	select {                // a slot freed since the decision may be taken by another call: wait for one
	case e.slots <- struct{}{}:
		defer func() { <-e.slots }()
	case <-ctx.Done():
		st := calls.StatusCanceled
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			st = calls.StatusTimeout
		}
		return calls.Result{Status: st, Error: "no free process slot (placement.process.max_running) before the call ended"}
	}
	spec := sandbox.Spec{Task: t.Name, Executable: exe, Network: t.Permissions.Network, Memory: uint64(t.Limits.Memory),
		Timeout: t.Limits.Timeout.Std(), MaxOutput: uint64(t.Limits.MaxOutput)}
	if c.MaxRun > 0 {
		spec.Timeout = c.MaxRun
	}
	for _, f := range t.Files {
		spec.Files = append(spec.Files, outpostrt.File{Path: f.Path, Source: f.Source})
	}
	out, err := e.sandbox.Run(ctx, spec, c.Input)
	if err == nil {
		return calls.Result{Status: calls.StatusOK, Output: out}
	}
	if ce, ok := errors.AsType[*outpostrt.CallError](err); ok {
		return calls.Result{Status: kindStatus[ce.Kind], Error: ce.Msg}
	}
	return calls.Result{Status: calls.StatusFailed, Error: err.Error()}
}

// artifacts lists t's code per environment for task inspect: its wasm
// module (local, as the runtime loaded it; none for a process-only task)
// and its native executables.
func artifacts(t tasks.Task, info outpostrt.TaskInfo) []admin.Artifact {
	var out []admin.Artifact
	if t.Module != "" {
		out = append(out, admin.Artifact{Env: placement.Local, Digest: info.Digest, Size: int64(info.Size), Location: info.Module})
	}
	for _, a := range t.Artifacts {
		art := admin.Artifact{Env: a.Env, OS: a.OS, Arch: a.Arch, Location: a.Executable}
		art.Digest, art.Size, _ = fileDigest(a.Executable) // a file gone missing shows without
		out = append(out, art)
	}
	return out
}

// fileDigest returns the sha256 (hex) and size of a file.
func fileDigest(path string) (string, int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", 0, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	return hex.EncodeToString(h.Sum(nil)), n, err
}

// processOnly returns the task name when it runs only as native
// executables (no wasm module): the wasm runtime does not know it.
func (c *Coordinator) processOnly(name string) (tasks.Task, bool) {
	t, ok := c.envs.task(name)
	return t, ok && t.Module == ""
}

// processOnlyTasks lists the process-only tasks: the config's, then the
// deployed ones a config task does not shadow, by name.
func (c *Coordinator) processOnlyTasks() []tasks.Task {
	var out []tasks.Task
	for _, t := range c.cfg.Load().Tasks {
		if t.Module == "" {
			out = append(out, t)
		}
	}
	for name, d := range c.deployments() {
		if v := d.current(); v.Digest == "" && !c.isConfigTask(name) {
			out = append(out, c.deployedTask(name, v))
		}
	}
	slices.SortFunc(out, func(a, b tasks.Task) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// nativeAdminTask describes a process-only task for the admin API: no
// ABI, module or digest (task inspect lists its artifacts).
func nativeAdminTask(t tasks.Task) admin.Task {
	return admin.Task{Name: t.Name, MemoryLimit: uint64(t.Limits.Memory), Timeout: t.Limits.Timeout.Std().Seconds(), Concurrency: t.Limits.Concurrency}
}
