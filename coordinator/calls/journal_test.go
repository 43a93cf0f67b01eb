package calls

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/outpost-edge/outpost/internal/format"
	"github.com/outpost-edge/outpost/internal/store"
)

var quietLog = slog.New(slog.DiscardHandler)

func openJournal(t testing.TB, db *store.DB, opts JournalOptions, log *slog.Logger, reg prometheus.Registerer) *Journal {
	t.Helper()
	j, err := OpenJournal(db, opts, log, reg)
	if err != nil {
		t.Fatal(err)
	}
	return j
}

func openDB(t testing.TB, dir string) *store.DB {
	t.Helper()
	db, err := store.Open(dir, store.Defaults(), quietLog)
	if err != nil {
		t.Fatal(err)
	}
	return db
}

// rig is a journal, a scheduler and a Durable over a fake executor.
type rig struct {
	db   *store.DB
	j    *Journal
	s    *Scheduler
	d    *Durable
	f    *fakeExec
	reg  *prometheus.Registry
	mu   sync.Mutex
	done map[string]*Record
	got  chan *Record
}

func newRig(t testing.TB, dir string, run func(ctx context.Context, c *Call) Result) *rig {
	t.Helper()
	return newRigOpts(t, dir, JournalOptions{}, run)
}

func newRigOpts(t testing.TB, dir string, opts JournalOptions, run func(ctx context.Context, c *Call) Result) *rig {
	t.Helper()
	r := &rig{db: openDB(t, dir), reg: prometheus.NewRegistry(), done: map[string]*Record{}, got: make(chan *Record, 10000)}
	r.j = openJournal(t, r.db, opts, nil, r.reg)
	r.f = newFake(map[string]int{"t": 4, "u": 4}, run)
	r.s = NewScheduler(r.f, Options{Workers: 4, QueueSize: 10000}, nil, nil)
	r.d = NewDurable(r.j, r.s, nil, func(rec *Record) {
		r.mu.Lock()
		r.done[rec.ID] = rec
		r.mu.Unlock()
		r.got <- rec
	})
	t.Cleanup(r.close)
	return r
}

func (r *rig) close() {
	_ = r.s.Drain(context.Background())
	_ = r.j.Close()
	_ = r.db.Close()
}

func (r *rig) wait(t *testing.T, n int) []*Record {
	t.Helper()
	var out []*Record
	for range n {
		select {
		case rec := <-r.got:
			out = append(out, rec)
		case <-time.After(10 * time.Second):
			t.Fatalf("only %d of %d results", len(out), n)
		}
	}
	return out
}

func cloudCall(id string, effect Effect) *Call {
	c := New("t", []byte("in-"+id), Source{Kind: "cloud"})
	c.ID, c.Effect = id, effect
	return c
}

func TestJournalDedupe(t *testing.T) {
	release := make(chan struct{})
	r := newRig(t, t.TempDir(), func(ctx context.Context, c *Call) Result {
		<-release
		return Result{Status: StatusOK, Output: append([]byte("out-"), c.Input...)}
	})
	out, err := r.d.Accept([]*Call{cloudCall("a", Idempotent), cloudCall("a", Idempotent)})
	if err != nil || out[0] != Accepted || out[1] != InFlight {
		t.Fatalf("same call twice in one batch: %v %v", out, err)
	}
	// Redelivered while running: acknowledged, not run.
	if out, _ := r.d.Accept([]*Call{cloudCall("a", Idempotent)}); out[0] != InFlight {
		t.Fatalf("redelivery while running: %v", out)
	}
	close(release)
	first := r.wait(t, 1)[0]
	if first.ID != "a" || string(first.Result.Output) != "out-in-a" || first.Runs != 1 {
		t.Fatalf("result %+v", first)
	}
	// Redelivered after it finished: the stored result is sent again.
	if out, _ := r.d.Accept([]*Call{cloudCall("a", Idempotent)}); out[0] != Replayed {
		t.Fatalf("redelivery after finish: %v", out)
	}
	if again := r.wait(t, 1)[0]; string(again.Result.Output) != "out-in-a" {
		t.Fatalf("replayed result %+v", again)
	}
	// After it was reported too.
	if err := r.j.MarkReported("a"); err != nil {
		t.Fatal(err)
	}
	if out, _ := r.d.Accept([]*Call{cloudCall("a", Idempotent)}); out[0] != Replayed {
		t.Fatalf("redelivery after report: %v", out)
	}
	r.wait(t, 1)
	// A new id with the key of finished work: not run, result copied.
	c := cloudCall("b", Idempotent)
	c.IdempotencyKey = "a"
	if out, _ := r.d.Accept([]*Call{c}); out[0] != Replayed {
		t.Fatalf("same idempotency key: %v", out)
	}
	if rec := r.wait(t, 1)[0]; rec.ID != "b" || string(rec.Result.Output) != "out-in-a" {
		t.Fatalf("key replay %+v", rec)
	}
	if len(r.f.started) != 1 {
		t.Errorf("task ran %d times, want 1", len(r.f.started))
	}
	if got := testutil.ToFloat64(r.j.m.duplicates.WithLabelValues("id", "replayed")); got != 2 {
		t.Errorf("id replays counted %v", got)
	}
}

// Records left in every state by a crash are recovered per the protocol.
func TestJournalRecover(t *testing.T) {
	dir := t.TempDir()
	db := openDB(t, dir)
	j := openJournal(t, db, JournalOptions{}, nil, nil)
	now := time.Now()
	recs := []*Record{
		{ID: "recv", Task: "t", Input: []byte("x"), Source: Source{Kind: "cloud"}, Effect: AtMostOnce, Attempt: 1, State: Received, Received: now},
		{ID: "idem", Task: "t", Input: []byte("y"), Source: Source{Kind: "cloud"}, Effect: Idempotent, Attempt: 1, Runs: 1, State: Started, Received: now.Add(time.Millisecond)},
		{ID: "amo", Task: "t", Input: []byte("z"), Source: Source{Kind: "cloud"}, Effect: AtMostOnce, Attempt: 1, Runs: 1, State: Started, Received: now.Add(2 * time.Millisecond)},
		{ID: "fin", Task: "t", Source: Source{Kind: "cloud"}, Attempt: 1, Runs: 1, State: Finished, Result: &Result{Status: StatusOK, Output: []byte("done")}, Received: now.Add(3 * time.Millisecond)},
		{ID: "rep", Task: "t", Source: Source{Kind: "cloud"}, Attempt: 1, Runs: 1, State: Reported, Result: &Result{Status: StatusOK}, Received: now, Reported: now},
		{ID: "late", Task: "t", Source: Source{Kind: "cloud"}, Attempt: 1, State: Received, StartByMS: -1, Received: now.Add(4 * time.Millisecond)},
	}
	for _, r := range recs {
		e, err := j.recordKV(r)
		if err != nil {
			t.Fatal(err)
		}
		if err := j.commit(true, e); err != nil {
			t.Fatal(err)
		}
	}
	_ = j.Close()
	_ = db.Close()

	r := newRig(t, dir, func(ctx context.Context, c *Call) Result {
		return Result{Status: StatusOK, Output: []byte(fmt.Sprintf("%s#%d", c.Input, c.Attempt))}
	})
	if err := r.d.Recover(context.Background()); err != nil {
		t.Fatal(err)
	}
	got := map[string]*Record{}
	for _, rec := range r.wait(t, 5) {
		got[rec.ID] = rec
	}
	want := map[string]string{"recv": "ok x#1", "idem": "ok y#2", "amo": "interrupted ", "fin": "ok done", "late": "expired "}
	for id, w := range want {
		rec := got[id]
		if rec == nil {
			t.Errorf("%s: no result", id)
			continue
		}
		if s := string(rec.Result.Status) + " " + string(rec.Result.Output); s != w {
			t.Errorf("%s: %q, want %q", id, s, w)
		}
	}
	if got["idem"].Runs != 2 || got["amo"].Runs != 1 {
		t.Errorf("runs: idem %d (want 2), amo %d (want 1)", got["idem"].Runs, got["amo"].Runs)
	}
	if _, ok := got["rep"]; ok {
		t.Error("a reported call was recovered")
	}
}

// Concurrent writers share fsyncs.
func TestJournalGroupCommit(t *testing.T) {
	r := newRig(t, t.TempDir(), func(ctx context.Context, c *Call) Result { return Result{Status: StatusOK} })
	const n = 400
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := range n / 8 {
				if _, err := r.d.Accept([]*Call{cloudCall(fmt.Sprintf("g%d-%d", i, k), Idempotent)}); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	r.wait(t, n)
	syncs := testutil.ToFloat64(r.j.m.syncs)
	// One durable write per call (received; started and finished of
	// idempotent calls are flushed by their reporter).
	if syncs >= n {
		t.Errorf("%v fsyncs for %d durable writes: no grouping", syncs, n)
	}
	t.Logf("%d durable writes, %v fsyncs", n, syncs)
}

// A full disk fails the accept (nothing is acknowledged, nothing kept in
// memory) and the journal works again once space is back.
func TestJournalDiskFull(t *testing.T) {
	r := newRig(t, t.TempDir(), func(ctx context.Context, c *Call) Result { return Result{Status: StatusOK} })
	var full atomic.Bool
	full.Store(true)
	r.j.fault = func() error {
		if full.Load() {
			return syscall.ENOSPC
		}
		return nil
	}
	if _, err := r.d.Accept([]*Call{cloudCall("x", Idempotent)}); !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("want ENOSPC, got %v", err)
	}
	if rec, _ := r.j.Get("x"); rec != nil {
		t.Fatalf("refused call kept: %+v", rec)
	}
	full.Store(false)
	if out, err := r.d.Accept([]*Call{cloudCall("x", Idempotent)}); err != nil || out[0] != Accepted {
		t.Fatalf("after space is back: %v %v", out, err)
	}
	r.wait(t, 1)
}

func TestJournalCompact(t *testing.T) {
	var mono fakeMono
	r := newRigOpts(t, t.TempDir(), JournalOptions{mono: mono.now}, func(ctx context.Context, c *Call) Result { return Result{Status: StatusOK} })
	c := cloudCall("old", Idempotent)
	c.IdempotencyKey = "k-old"
	if _, err := r.d.Accept([]*Call{c, cloudCall("new", Idempotent)}); err != nil {
		t.Fatal(err)
	}
	r.wait(t, 2)
	if err := r.j.MarkReported("old"); err != nil {
		t.Fatal(err)
	}
	if err := r.j.Flush(); err != nil {
		t.Fatal(err)
	}
	mono.add(24*time.Hour + time.Millisecond) // past the default retention
	n, err := r.j.Compact(context.Background())
	if err != nil || n != 2 {
		t.Fatalf("compacted %d keys (%v), want the record and its key", n, err)
	}
	if rec, _ := r.j.Get("old"); rec != nil {
		t.Error("old record survived compaction")
	}
	if rec, _ := r.j.Get("new"); rec == nil {
		t.Error("unreported record was compacted")
	}
}

// A redelivery of a reported call that lands while compaction is deleting
// it: the committer decides the deletes as it writes them, so the record
// the redelivery brought back is kept (its replayed result is not lost).
func TestJournalCompactKeepsRedelivered(t *testing.T) {
	var mono fakeMono
	r := newRigOpts(t, t.TempDir(), JournalOptions{mono: mono.now}, func(ctx context.Context, c *Call) Result { return Result{Status: StatusOK} })
	if _, err := r.d.Accept([]*Call{cloudCall("old", Idempotent)}); err != nil {
		t.Fatal(err)
	}
	r.wait(t, 1)
	if err := r.j.MarkReported("old"); err != nil {
		t.Fatal(err)
	}
	if err := r.j.Flush(); err != nil {
		t.Fatal(err)
	}
	mono.add(24*time.Hour + time.Millisecond)
	// Hold the committer in its next write: compaction has scanned and
	// chosen "old" by then.
	held, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	r.j.fault = func() error {
		once.Do(func() { close(held); <-release })
		return nil
	}
	compacted := make(chan int, 1)
	go func() {
		n, err := r.j.Compact(context.Background())
		if err != nil {
			t.Error(err)
		}
		compacted <- n
	}()
	<-held
	accepted := make(chan []Outcome, 1)
	go func() {
		out, err := r.d.Accept([]*Call{cloudCall("old", Idempotent)})
		if err != nil {
			t.Error(err)
		}
		accepted <- out
	}()
	deadline := time.Now().Add(10 * time.Second)
	for {
		r.j.mu.Lock()
		back := r.j.recs["old"] != nil
		r.j.mu.Unlock()
		if back {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the redelivery did not bring the record back")
		}
		time.Sleep(time.Millisecond)
	}
	close(release)
	if n := <-compacted; n != 0 {
		t.Errorf("compacted %d keys, want 0: the redelivered record is live again", n)
	}
	if out := <-accepted; len(out) != 1 || out[0] != Replayed {
		t.Fatalf("redelivery outcome %v, want replayed", out)
	}
	if err := r.j.Flush(); err != nil {
		t.Fatal(err)
	}
	rec, err := r.j.load("old")
	if err != nil || rec == nil || rec.State != Finished {
		t.Fatalf("record on disk after compaction and redelivery: %+v (%v), want FINISHED (its result replayed)", rec, err)
	}
}

// The kill -9 test: a child process accepts calls and prints each id once
// Accept returned (the moment the daemon would acknowledge it); the
// parent kills it with SIGKILL mid-stream, then checks that every printed
// id is in the journal.
func TestJournalKill9(t *testing.T) {
	if dir := os.Getenv("OUTPOST_JOURNAL_CHILD"); dir != "" {
		journalChild(dir)
		return
	}
	dir := t.TempDir()
	for round := range 3 {
		cmd := exec.Command(os.Args[0], "-test.run=^TestJournalKill9$")
		cmd.Env = append(os.Environ(), "OUTPOST_JOURNAL_CHILD="+dir, fmt.Sprintf("OUTPOST_JOURNAL_ROUND=%d", round))
		stdout, _ := cmd.StdoutPipe()
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(stdout)
		var acked []string
		for sc.Scan() && len(acked) < 300 {
			if id, ok := strings.CutPrefix(sc.Text(), "acked "); ok {
				acked = append(acked, id)
			}
		}
		_ = cmd.Process.Signal(syscall.SIGKILL)
		_ = cmd.Wait()
		if len(acked) < 300 {
			t.Fatalf("round %d: child acknowledged only %d calls", round, len(acked))
		}
		db := openDB(t, dir)
		j := openJournal(t, db, JournalOptions{}, nil, nil)
		for _, id := range acked {
			if rec, err := j.Get(id); err != nil || rec == nil {
				t.Errorf("round %d: acknowledged call %s not in the journal after kill -9 (%v)", round, id, err)
			} else if rec.ReceivedClock > j.Clock() {
				// The clock is saved with every batch: a crash loses time
				// (records live longer), never puts a stamp in the future.
				t.Errorf("round %d: %s stamped at journal clock %v, after the saved clock %v", round, id, rec.ReceivedClock, j.Clock())
			}
		}
		_ = j.Close()
		_ = db.Close()
	}
}

func journalChild(dir string) {
	db, err := store.Open(dir, store.Defaults(), quietLog)
	if err != nil {
		fmt.Println("open:", err)
		os.Exit(1)
	}
	j, err := OpenJournal(db, JournalOptions{}, nil, nil)
	if err != nil {
		fmt.Println("open journal:", err)
		os.Exit(1)
	}
	s := NewScheduler(newFake(map[string]int{"t": 2}, func(ctx context.Context, c *Call) Result {
		return Result{Status: StatusOK, Output: c.Input}
	}), Options{Workers: 2, QueueSize: 100000}, nil, nil)
	d := NewDurable(j, s, nil, nil)
	round := os.Getenv("OUTPOST_JOURNAL_ROUND")
	var mu sync.Mutex
	for w := range 4 {
		go func() {
			for i := 0; ; i++ {
				id := fmt.Sprintf("r%s-w%d-%d", round, w, i)
				if _, err := d.Accept([]*Call{cloudCall(id, Idempotent)}); err != nil {
					fmt.Println("accept:", err)
					os.Exit(1)
				}
				mu.Lock()
				fmt.Println("acked", id)
				mu.Unlock()
			}
		}()
	}
	select {}
}

// TestJournalFormat: the journal records its own format version (2),
// migrates a version 1 journal, and refuses a newer one, naming both.
func TestJournalFormat(t *testing.T) {
	dir := t.TempDir()
	db := openDB(t, dir)
	defer db.Close()
	j := openJournal(t, db, JournalOptions{}, nil, nil)
	j.Close()
	if v, err := db.Bucket("calls").Get([]byte("format")); err != nil || string(v) != "2" {
		t.Fatalf("version %q, %v", v, err)
	}
	if err := db.Bucket("calls").Put([]byte("format"), []byte("1")); err != nil {
		t.Fatal(err)
	}
	openJournal(t, db, JournalOptions{}, nil, nil).Close()
	if v, err := db.Bucket("calls").Get([]byte("format")); err != nil || string(v) != "2" {
		t.Fatalf("version after migrating from 1: %q, %v", v, err)
	}
	if err := db.Bucket("calls").Put([]byte("format"), []byte("3")); err != nil {
		t.Fatal(err)
	}
	_, err := OpenJournal(db, JournalOptions{}, nil, nil)
	if !errors.Is(err, format.ErrNewer) || !strings.Contains(err.Error(), "call journal has format version 3") {
		t.Fatalf("err %v", err)
	}
}
