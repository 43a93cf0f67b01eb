package server

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/outpost-edge/outpost/coordinator/remote"
	"github.com/outpost-edge/outpost/internal/syncfile"
	outpostrt "github.com/outpost-edge/outpost/runtime"
)

// Cloud runs (docs/cloud-link.md "Cloud runs"): the control plane runs a
// node's call itself, on a pool of Options.RunWorkers workers sharing one
// wazero engine of the runtime package, with the node's ABI minus what
// only an edge host has: the engine has no Host, so publish, call,
// call_async, kv, telemetry and the shadow functions answer unavailable
// (a task without the permission is denied first, as on the node).
//
// A run is named by the node and its run id (the node's call id and
// attempt) and kept as two files under Options.RunDir, each created once,
// synced, never rewritten: NAME.started before the run starts, NAME.done
// with its result. A run submitted again is answered from them: done gives
// the stored result; started without a run in this process (the process
// stopped mid-run, killed or not) runs again when the call is idempotent
// and ends interrupted when it is at most once, so no call runs twice
// against its node's semantics.

// runLoadedMax bounds the task specs kept loaded (compiled, warm): the
// least recently used beyond it are dropped.
const runLoadedMax = 64

type cloudRuns struct {
	dir     string
	workers int
	log     *slog.Logger
	objs    *objects
	eng     *outpostrt.Engine
	ctx     context.Context // ended by close: runs stop, unrecorded
	stop    context.CancelFunc
	wg      sync.WaitGroup

	loading sync.Mutex // one Load and Activate at a time; before mu

	mu      sync.Mutex
	running map[string]*run           // by file name
	specs   map[string]outpostrt.Spec // loaded, by engine task name
	used    map[string]time.Time      // last use of each spec
}

// run is one run in progress in this process.
type run struct {
	done chan struct{}
	resp remote.RunResponse
}

func openRuns(dir string, workers int, memory uint64, objs *objects, log *slog.Logger) (*cloudRuns, error) {
	r := &cloudRuns{dir: dir, workers: workers, log: log, objs: objs, running: map[string]*run{},
		specs: map[string]outpostrt.Spec{}, used: map[string]time.Time{}}
	r.ctx, r.stop = context.WithCancel(context.Background())
	if workers == 0 {
		return r, nil
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("cloud runs: %w", err)
	}
	r.eng = outpostrt.New(outpostrt.Options{Logger: log.With("part", "cloud-runs"), MemoryBudget: memory})
	if err := r.eng.Start(r.ctx); err != nil {
		return nil, fmt.Errorf("cloud runs: %w", err)
	}
	return r, nil
}

// close stops the runs in progress without recording them (their started
// files stay: a restart answers them by effect) and closes the engine.
func (r *cloudRuns) close() {
	r.stop()
	r.wg.Wait()
	if r.eng != nil {
		_ = r.eng.Close(context.Background())
	}
}

// advert is the HeaderRuns value: running/workers.
func (r *cloudRuns) advert() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return strconv.Itoa(len(r.running)) + "/" + strconv.Itoa(r.workers)
}

func runName(node, id string) string {
	h := sha256.Sum256([]byte(node + "\x00" + id))
	return hex.EncodeToString(h[:])
}

// record is a run's file: started (the request, without input) or done.
type record struct {
	Node   string              `json:"node"`
	Run    string              `json:"run"`
	Task   string              `json:"task"`
	Effect string              `json:"effect,omitempty"`
	Result *remote.RunResponse `json:"result,omitempty"`
}

func (r *cloudRuns) readDone(name string) (*remote.RunResponse, error) {
	b, err := os.ReadFile(filepath.Join(r.dir, name+".done"))
	if err != nil {
		return nil, err
	}
	var rec record
	if err := json.Unmarshal(b, &rec); err != nil || rec.Result == nil {
		return nil, fmt.Errorf("cloud run record %s.done: unreadable: %v", name, err)
	}
	return rec.Result, nil
}

// writeFile creates dir/file once, synced, and syncs the directory.
func (r *cloudRuns) writeFile(file string, rec record) error {
	b, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	if err := syncfile.WriteNew(filepath.Join(r.dir, file), 0o640, strings.NewReader(string(b))); err != nil {
		return err
	}
	d, err := os.Open(r.dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// errBusy: every worker runs a call.
var errBusy = errors.New("every cloud worker is busy")

// submit starts the run or finds it; the returned run is done or running.
func (r *cloudRuns) submit(node, id string, req *remote.RunRequest) (*run, error) {
	name := runName(node, id)
	r.mu.Lock()
	defer r.mu.Unlock()
	if ru := r.running[name]; ru != nil {
		return ru, nil
	}
	if res, err := r.readDone(name); err == nil {
		ru := &run{done: make(chan struct{}), resp: *res}
		close(ru.done)
		return ru, nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	if len(r.running) >= r.workers { // before .started: a refused run never began
		return nil, errBusy
	}
	rec := record{Node: node, Run: id, Task: req.Task, Effect: req.Effect}
	err := r.writeFile(name+".started", rec)
	switch {
	case errors.Is(err, os.ErrExist) && req.Effect != "idempotent":
		// This process stopped while the run ran: it may have had its
		// effect, so it does not run again.
		rec.Result = &remote.RunResponse{State: "done", Status: "interrupted",
			Error: "the control plane stopped while the call ran in the cloud; at most once: not run again"}
		if err := r.writeFile(name+".done", rec); err != nil && !errors.Is(err, os.ErrExist) {
			return nil, fmt.Errorf("record cloud run: %w", err)
		}
		res, err := r.readDone(name) // the first record wins
		if err != nil {
			return nil, err
		}
		ru := &run{done: make(chan struct{}), resp: *res}
		close(ru.done)
		r.log.Warn("cloud run interrupted by a restart: not run again (at most once)", "node", node, "run", id, "task", req.Task)
		return ru, nil
	case errors.Is(err, os.ErrExist):
		r.log.Info("cloud run interrupted by a restart: running it again (idempotent)", "node", node, "run", id, "task", req.Task)
	case err != nil:
		return nil, fmt.Errorf("record cloud run: %w", err)
	}
	ru := &run{done: make(chan struct{})}
	r.running[name] = ru
	r.wg.Add(1)
	go r.exec(name, rec, req, ru)
	return ru, nil
}

// exec runs one call and records its result.
func (r *cloudRuns) exec(name string, rec record, req *remote.RunRequest, ru *run) {
	defer r.wg.Done()
	out, err := r.call(req)
	if r.ctx.Err() != nil { // stopped: unrecorded, answered by effect after the restart
		r.mu.Lock()
		delete(r.running, name)
		r.mu.Unlock()
		return
	}
	res := remote.RunResponse{State: "done", Status: "ok", Output: out}
	if err != nil {
		res.Output, res.Status, res.Error = nil, "failed", err.Error()
		if ce, ok := errors.AsType[*outpostrt.CallError](err); ok { // of the call, or of the instance a load warms
			res.Status, res.Error = string(ce.Kind), ce.Msg
		}
	}
	rec.Result = &res
	if err := r.writeFile(name+".done", rec); err != nil && !errors.Is(err, os.ErrExist) {
		r.log.Error("cloud run: result not recorded; the node submits it again", "run", rec.Run, "err", err)
	}
	if stored, err := r.readDone(name); err == nil {
		res = *stored // the first record wins
	}
	r.mu.Lock()
	ru.resp = res
	delete(r.running, name)
	r.mu.Unlock()
	close(ru.done)
}

// spec is the engine task of a request: one per module, limits and
// permissions, named by their hash. Every run gets a fresh instance,
// closed after it: no state passes between runs (of one node or of two),
// and the memory the runs hold is the instances running, within the
// budget (Options.RunMemory).
func (r *cloudRuns) spec(req *remote.RunRequest) outpostrt.Spec {
	s := outpostrt.Spec{Module: r.objs.path(req.Digest), ABI: req.ABI, MemoryLimit: req.MemoryBytes, Concurrency: r.workers, FreshInstance: true,
		Timeout: time.Duration(req.TimeoutMS) * time.Millisecond, MaxInput: req.MaxInput, MaxOutput: req.MaxOutput,
		Permissions: outpostrt.Permissions{Publish: req.Publish, Call: req.Call, KVQuota: req.KVQuota,
			Telemetry: req.Telemetry, Shadows: req.Shadows}}
	b, _ := json.Marshal(s)
	h := sha256.Sum256(b)
	s.Name = req.Task + "@" + hex.EncodeToString(h[:8])
	return s
}

// call loads the request's task if it is not loaded and calls it. The
// module is read from this replica's copy, made first from the database
// when the object came through another replica.
func (r *cloudRuns) call(req *remote.RunRequest) ([]byte, error) {
	f, err := r.objs.open(r.ctx, req.Digest)
	if err != nil {
		return nil, fmt.Errorf("module %s: %w", req.Digest, err)
	}
	_ = f.Close()
	s := r.spec(req)
	if err := r.load(s); err != nil {
		return nil, err
	}
	return r.eng.Call(r.ctx, s.Name, req.Input)
}

// load makes s part of the engine's active set, dropping the least
// recently used specs beyond runLoadedMax.
func (r *cloudRuns) load(s outpostrt.Spec) error {
	r.loading.Lock()
	defer r.loading.Unlock()
	r.mu.Lock()
	r.used[s.Name] = time.Now()
	_, loaded := r.specs[s.Name]
	r.mu.Unlock()
	if loaded {
		return nil
	}
	r.mu.Lock()
	specs := []outpostrt.Spec{s}
	for _, sp := range r.specs {
		specs = append(specs, sp)
	}
	if len(specs) > runLoadedMax {
		oldest := ""
		for name := range r.specs {
			if oldest == "" || r.used[name].Before(r.used[oldest]) {
				oldest = name
			}
		}
		for i, sp := range specs {
			if sp.Name == oldest {
				specs = append(specs[:i], specs[i+1:]...)
				break
			}
		}
	}
	r.mu.Unlock()
	set, err := r.eng.Load(r.ctx, specs)
	if err != nil {
		return fmt.Errorf("load task: %w", err)
	}
	r.eng.Activate(set)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.specs = map[string]outpostrt.Spec{}
	for _, sp := range specs {
		r.specs[sp.Name] = sp
	}
	for name := range r.used {
		if _, ok := r.specs[name]; !ok {
			delete(r.used, name)
		}
	}
	return nil
}

// handleRun submits a run or waits for it: 200 with its result once done,
// 202 while it runs (the node asks again), 404 naming a missing object,
// 503 when cloud runs are off or every worker is busy.
func (s *Server) handleRun(w http.ResponseWriter, r *http.Request) {
	var req remote.RunRequest
	if err := readBody(r, &req); err != nil {
		httpError(w, http.StatusBadRequest, err.Error())
		return
	}
	node, id := r.PathValue("node"), r.PathValue("run")
	switch {
	case s.runs.workers == 0:
		httpError(w, http.StatusServiceUnavailable, "this control plane runs no calls itself (outpost-cloud serve --run-workers)")
		return
	case req.Task == "" || id == "" || len(id) > 300:
		httpError(w, http.StatusBadRequest, "task and a run id of at most 300 characters are required")
		return
	case !remote.ValidDigest(req.Digest):
		httpError(w, http.StatusBadRequest, fmt.Sprintf("digest %q: want sha256:HEX", req.Digest))
		return
	case !s.objs.has(r.Context(), req.Digest):
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusNotFound)
		_ = json.NewEncoder(w).Encode(remote.RunResponse{Missing: req.Digest})
		return
	}
	ru, err := s.runs.submit(node, id, &req)
	if errors.Is(err, errBusy) {
		w.Header().Set("Retry-After", "1")
		httpError(w, http.StatusServiceUnavailable, err.Error())
		return
	}
	if err != nil {
		s.storeError(w, "cloud run", err)
		return
	}
	t := time.NewTimer(min(time.Duration(req.WaitMS)*time.Millisecond, 60*time.Second))
	defer t.Stop()
	select {
	case <-ru.done:
		writeJSON(w, r, http.StatusOK, ru.resp)
	case <-t.C:
		writeJSON(w, r, http.StatusAccepted, remote.RunResponse{State: "running"})
	case <-r.Context().Done():
	}
}

// handleObjectUpload stores a node's upload of the object digest (the
// module of a call it runs in the cloud): 201, or 200 when it was stored;
// 400 when the bytes do not hash to digest.
func (s *Server) handleObjectUpload(w http.ResponseWriter, r *http.Request) {
	d := r.PathValue("digest")
	if !remote.ValidDigest(d) {
		httpError(w, http.StatusBadRequest, fmt.Sprintf("object %q: want sha256:HEX", d))
		return
	}
	s.storeObject(w, r, d)
}
