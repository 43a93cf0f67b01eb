package calls

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// suspender is the run function of a rig whose task "t" fans out to n calls
// of "u" and suspends on them, and on resume outputs its state and the
// outputs it waited for; "u" runs u.
func suspender(n int, u func(ctx context.Context, c *Call) Result) func(ctx context.Context, c *Call) Result {
	return func(ctx context.Context, c *Call) Result {
		if c.Task == "u" {
			return u(ctx, c)
		}
		if c.Resume != nil {
			out := string(c.Resume.State)
			for _, w := range c.Resume.Waits {
				out += "|" + string(w.Result.Status) + ":" + string(w.Result.Output)
			}
			return Result{Status: StatusOK, Output: []byte(out)}
		}
		cont := &Continuation{State: []byte("kept")}
		for i := range n {
			dep := New("u", []byte{byte('a' + i)}, Source{Kind: "task", Ref: c.ID})
			if err := c.Depend(dep); err != nil {
				return Result{Status: StatusFailed, Error: err.Error()}
			}
			cont.Waits = append(cont.Waits, Wait{Handle: int32(i + 1), ID: dep.ID, Task: "u"})
		}
		c.Suspension = cont
		return Result{Status: StatusSuspended}
	}
}

func snapshotRig(t *testing.T, dir string, run func(ctx context.Context, c *Call) Result) *rig {
	t.Helper()
	r := newRig(t, dir, run)
	snaps, err := OpenSnapshots(filepath.Join(dir, "snapshots"))
	if err != nil {
		t.Fatal(err)
	}
	r.d.UseSnapshots(snaps)
	return r
}

func snapshotFiles(t *testing.T, dir string) int {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(dir, "snapshots"))
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// A call suspends on two dependencies and resumes with their results once
// both are done; its snapshot is deleted when it finishes.
func TestSuspendResume(t *testing.T) {
	dir := t.TempDir()
	r := snapshotRig(t, dir, suspender(2, sleepy(20*time.Millisecond)))
	if _, err := r.d.Accept([]*Call{cloudCall("w1", Idempotent)}); err != nil {
		t.Fatal(err)
	}
	rec := r.wait(t, 1)[0]
	if rec.Result.Status != StatusOK || string(rec.Result.Output) != "kept|ok:a|ok:b" {
		t.Fatalf("result %+v", rec.Result)
	}
	if rec.Runs != 2 || rec.Snapshot != "" || rec.Waits != nil {
		t.Errorf("record: runs %d, snapshot %q, waits %v", rec.Runs, rec.Snapshot, rec.Waits)
	}
	if n := r.d.SuspendedCount(); n != 0 {
		t.Errorf("%d suspended", n)
	}
	deadline := time.Now().Add(5 * time.Second)
	for snapshotFiles(t, dir) != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d snapshot files left", snapshotFiles(t, dir))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A suspended call that is canceled finishes canceled at once, and the
// calls it waits for are canceled too.
func TestSuspendedCanceled(t *testing.T) {
	r := snapshotRig(t, t.TempDir(), suspender(2, sleepy(time.Hour)))
	if _, err := r.d.Accept([]*Call{cloudCall("w1", Idempotent)}); err != nil {
		t.Fatal(err)
	}
	waitState(t, r.j, "w1", Suspended)
	if !r.d.Cancel("w1") {
		t.Fatal("Cancel: not found")
	}
	rec := r.wait(t, 1)[0]
	if rec.ID != "w1" || rec.Result.Status != StatusCanceled || !strings.Contains(rec.Result.Error, "suspended") {
		t.Fatalf("record %+v", rec)
	}
	deadline := time.Now().Add(5 * time.Second)
	for st := r.s.Stats(); st.Running+st.Queued > 0; st = r.s.Stats() {
		if time.Now().After(deadline) {
			t.Fatalf("dependencies still running: %+v", st)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// waitState waits until the record of id is in state st.
func waitState(t *testing.T, j *Journal, id string, st State) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		rec, err := j.Get(id)
		if err != nil {
			t.Fatal(err)
		}
		if rec != nil && rec.State == st {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("call %s never %s: %+v", id, st, rec)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// A stop that cuts the dependencies of a suspended call leaves it
// suspended in the journal; the next start runs the dependencies again and
// resumes it. A dependency whose caller no longer waits for it is not run.
func TestSuspendedRecover(t *testing.T) {
	dir := t.TempDir()
	r := snapshotRig(t, dir, suspender(2, sleepy(time.Hour)))
	if _, err := r.d.Accept([]*Call{cloudCall("w1", Idempotent)}); err != nil {
		t.Fatal(err)
	}
	waitState(t, r.j, "w1", Suspended)
	orphan := New("u", nil, Source{Kind: "task", Ref: "gone"})
	if err := r.d.Depend(&Call{ID: "gone", Effect: Idempotent}, orphan); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_ = r.s.Drain(ctx) // cut: left for recovery as after a crash
	r.close()

	r2 := snapshotRig(t, dir, suspender(2, sleepy(time.Millisecond)))
	if err := r2.d.Recover(context.Background()); err != nil {
		t.Fatal(err)
	}
	rec := r2.wait(t, 1)[0]
	if rec.ID != "w1" || rec.Result.Status != StatusOK || string(rec.Result.Output) != "kept|ok:a|ok:b" {
		t.Fatalf("record %+v", rec)
	}
	o, err := r2.j.Get(orphan.ID)
	if err != nil || o == nil || o.Result == nil || o.Result.Status != StatusCanceled || o.Runs != 1 {
		t.Fatalf("orphan dependency: %+v, %v", o, err)
	}
}

// A call with a need-by time nearer than its task's recent run times is
// refused at once; one with room is deferred and runs in time.
func TestNeedByTooLate(t *testing.T) {
	f := newFake(map[string]int{"u": 1}, sleepy(30*time.Millisecond))
	s := NewScheduler(f, Options{Workers: 2, QueueSize: 100}, nil, nil)
	defer func() { _ = s.Drain(context.Background()) }()
	if r, err := s.Do(context.Background(), New("u", nil, Source{})); err != nil || !r.OK() {
		t.Fatal(r, err)
	}
	late := New("u", nil, Source{})
	late.NeedBy = time.Now().Add(5 * time.Millisecond)
	if err := s.Submit(late); !errors.Is(err, ErrTooLate) || !strings.Contains(err.Error(), "recent runs took up to") {
		t.Fatalf("Submit: %v, want ErrTooLate", err)
	}
	ok := New("u", nil, Source{})
	ok.NeedBy = time.Now().Add(time.Second)
	done := make(chan struct{})
	ok.Done = func(*Call) { close(done) }
	if err := s.Submit(ok); err != nil {
		t.Fatal(err)
	}
	<-done
	if !ok.Result.OK() || ok.Finished.After(ok.NeedBy) {
		t.Errorf("deferred call %+v finished %s after its need-by", ok.Result, ok.Finished.Sub(ok.NeedBy))
	}
}

// With one worker busy, a deferred call waits behind the queued calls
// until its latest start comes, then runs before the rest of them.
func TestSlackOrder(t *testing.T) {
	f := newFake(map[string]int{"q": 8, "d": 8}, sleepy(20*time.Millisecond))
	s := NewScheduler(f, Options{Workers: 1, QueueSize: 100}, nil, nil)
	defer func() { _ = s.Drain(context.Background()) }()
	// Measured run times of d: 20 ms.
	if _, err := s.Do(context.Background(), New("d", nil, Source{})); err != nil {
		t.Fatal(err)
	}
	f.mu.Lock()
	f.started = nil
	f.mu.Unlock()
	var wg = make(chan struct{}, 20)
	submit := func(task string, needBy time.Duration) {
		c := New(task, nil, Source{})
		if needBy > 0 {
			c.NeedBy = time.Now().Add(needBy)
		}
		c.Done = func(*Call) { wg <- struct{}{} }
		if err := s.Submit(c); err != nil {
			t.Fatal(err)
		}
	}
	for range 10 {
		submit("q", 0) // 200 ms of queued work
	}
	// Latest start 100 - 30 - 10 = 60 ms from now: after about 3 q runs.
	submit("d", 100*time.Millisecond)
	for range 11 {
		<-wg
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	pos := -1
	for i, task := range f.started {
		if task == "d" {
			pos = i
		}
	}
	if pos < 1 || pos > 6 {
		t.Errorf("deferred call started %dth of %v: want after the first queued call and well before the last", pos, f.started)
	}
}

// A suspended call whose snapshot is gone (a power failure: snapshots are
// not fsynced) runs again from its start when it would resume.
func TestSuspendedSnapshotLost(t *testing.T) {
	dir := t.TempDir()
	r := snapshotRig(t, dir, suspender(1, sleepy(time.Hour)))
	if _, err := r.d.Accept([]*Call{cloudCall("w1", Idempotent)}); err != nil {
		t.Fatal(err)
	}
	waitState(t, r.j, "w1", Suspended)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_ = r.s.Drain(ctx)
	r.close()
	if err := os.RemoveAll(filepath.Join(dir, "snapshots")); err != nil {
		t.Fatal(err)
	}

	r2 := snapshotRig(t, dir, suspender(1, sleepy(time.Millisecond)))
	if err := r2.d.Recover(context.Background()); err != nil {
		t.Fatal(err)
	}
	rec := r2.wait(t, 1)[0]
	if rec.ID != "w1" || rec.Result.Status != StatusOK || string(rec.Result.Output) != "kept|ok:a" || rec.Runs != 3 {
		t.Fatalf("record: %d runs, %+v", rec.Runs, rec.Result)
	}
}

// A backup's hold keeps snapshots whose calls resumed meanwhile until it
// has copied them; they go at the last release.
func TestSnapshotsHeldForBackup(t *testing.T) {
	s, err := OpenSnapshots(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	d, err := s.Put("c1", "t", []byte("state"))
	if err != nil {
		t.Fatal(err)
	}
	first, second := s.Hold(), s.Hold()
	if err := s.remove(d); err != nil {
		t.Fatal(err)
	}
	first()
	first() // a release counts once
	if got, err := s.Get(d, "c1"); err != nil || string(got) != "state" {
		t.Fatalf("snapshot deleted under a backup's hold: %q %v", got, err)
	}
	second()
	if _, err := s.Get(d, "c1"); !errors.Is(err, ErrSnapshot) {
		t.Fatalf("snapshot after the last release: %v, want deleted", err)
	}
}

// Dependencies that finish while their caller is still suspending: the
// caller's records reach the disk in the order they were made, so after
// the results are out no caller is left SUSPENDED (or waiting on a result
// an earlier write lacked) on disk. Before, the SUSPENDED write could be
// queued after the resumed run's, and a restart would have run the caller
// again.
func TestSuspendWritesInOrder(t *testing.T) {
	dir := t.TempDir()
	r := snapshotRig(t, dir, suspender(3, func(context.Context, *Call) Result { return Result{Status: StatusOK, Output: []byte("x")} }))
	const n = 200
	var cs []*Call
	for i := range n {
		cs = append(cs, cloudCall(fmt.Sprintf("p%03d", i), Idempotent))
	}
	if _, err := r.d.Accept(cs); err != nil {
		t.Fatal(err)
	}
	for _, rec := range r.wait(t, n) {
		if rec.Result.Status != StatusOK || string(rec.Result.Output) != "kept|ok:x|ok:x|ok:x" {
			t.Fatalf("%s: %+v", rec.ID, rec.Result)
		}
	}
	if err := r.j.Flush(); err != nil {
		t.Fatal(err)
	}
	r.close()
	db := openDB(t, dir)
	defer db.Close()
	j := openJournal(t, db, JournalOptions{}, nil, prometheus.NewRegistry())
	defer j.Close()
	for _, c := range cs {
		rec, err := j.Get(c.ID)
		if err != nil || rec == nil || rec.State < Finished || rec.Result == nil {
			t.Errorf("%s on disk: %+v %v, want finished", c.ID, rec, err)
		}
	}
}

// deadlineCall is a cloud call of "t" whose whole call must end within d.
func deadlineCall(id string, d time.Duration) *Call {
	c := cloudCall(id, Idempotent)
	c.Deadline = time.Now().Add(d)
	return c
}

// waitIdle waits until nothing runs or waits in the scheduler of r.
func waitIdle(t *testing.T, r *rig) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for st := r.s.Stats(); st.Running+st.Queued > 0; st = r.s.Stats() {
		if time.Now().After(deadline) {
			t.Fatalf("calls still running: %+v", st)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A suspended call whose deadline passes finishes timed out: the calls it
// waits for are canceled and its snapshot is deleted. Before, it stayed
// suspended until its dependencies ended, whenever that was.
func TestSuspendedDeadline(t *testing.T) {
	dir := t.TempDir()
	r := snapshotRig(t, dir, suspender(2, sleepy(time.Hour)))
	if _, err := r.d.Accept([]*Call{deadlineCall("w1", time.Second)}); err != nil {
		t.Fatal(err)
	}
	waitState(t, r.j, "w1", Suspended)
	susp, err := r.j.Get("w1")
	if err != nil || len(susp.Waits) != 2 {
		t.Fatalf("suspended record %+v %v", susp, err)
	}
	rec := r.wait(t, 1)[0]
	if rec.ID != "w1" || rec.Result.Status != StatusTimeout || !strings.Contains(rec.Result.Error, "suspended") {
		t.Fatalf("record %+v", rec)
	}
	waitIdle(t, r)
	for _, w := range susp.Waits {
		dep, err := r.j.Get(w.ID)
		if err != nil || dep == nil || dep.Result == nil || dep.Result.Status != StatusCanceled {
			t.Errorf("dependency %s: %+v %v, want canceled", w.ID, dep, err)
		}
	}
	if n := r.d.SuspendedCount(); n != 0 {
		t.Errorf("%d suspended", n)
	}
	deadline := time.Now().Add(5 * time.Second)
	for snapshotFiles(t, dir) != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d snapshot files left", snapshotFiles(t, dir))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// The deadline of a suspended call is journaled: after a restart it still
// ends the call, measured on the journal clock (time down does not count).
func TestSuspendedDeadlineRecovered(t *testing.T) {
	dir := t.TempDir()
	r := snapshotRig(t, dir, suspender(1, sleepy(time.Hour)))
	if _, err := r.d.Accept([]*Call{deadlineCall("w1", 3*time.Second)}); err != nil {
		t.Fatal(err)
	}
	waitState(t, r.j, "w1", Suspended)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_ = r.s.Drain(ctx) // cut: left for recovery as after a crash
	r.close()

	r2 := snapshotRig(t, dir, suspender(1, sleepy(time.Hour)))
	if err := r2.d.Recover(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := r2.d.SuspendedCount(); n != 1 {
		t.Fatalf("%d suspended after the restart, want 1", n)
	}
	rec := r2.wait(t, 1)[0]
	if rec.ID != "w1" || rec.Result.Status != StatusTimeout {
		t.Fatalf("record %+v", rec)
	}
	waitIdle(t, r2)
}

// A suspended call whose deadline passed before the restart found it ends
// timed out at once, and its dependencies are finished canceled without
// running again.
func TestSuspendedDeadlinePassedAtRecovery(t *testing.T) {
	dir := t.TempDir()
	r := snapshotRig(t, dir, suspender(2, sleepy(time.Hour)))
	if _, err := r.d.Accept([]*Call{deadlineCall("w1", time.Minute)}); err != nil {
		t.Fatal(err)
	}
	waitState(t, r.j, "w1", Suspended)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_ = r.s.Drain(ctx)
	r.close()

	mono := &fakeMono{}
	mono.add(time.Hour) // the journal clock an hour on: the node ran that long since
	var depRuns atomic.Int32
	r2 := newRigOpts(t, dir, JournalOptions{mono: mono.now}, suspender(2, func(context.Context, *Call) Result {
		depRuns.Add(1)
		return Result{Status: StatusOK}
	}))
	snaps, err := OpenSnapshots(filepath.Join(dir, "snapshots"))
	if err != nil {
		t.Fatal(err)
	}
	r2.d.UseSnapshots(snaps)
	if err := r2.d.Recover(context.Background()); err != nil {
		t.Fatal(err)
	}
	rec := r2.wait(t, 1)[0]
	if rec.ID != "w1" || rec.Result.Status != StatusTimeout {
		t.Fatalf("record %+v", rec)
	}
	waitIdle(t, r2)
	if n := depRuns.Load(); n != 0 {
		t.Errorf("dependencies ran %d times after the restart", n)
	}
}

// journalUse is what r's journal has taken so far: write requests queued
// to its committer, and keys written.
func journalUse(t *testing.T, r *rig) (requests, keys float64) {
	t.Helper()
	if err := r.j.Flush(); err != nil { // itself one request, without keys
		t.Fatal(err)
	}
	mfs, err := r.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		switch mf.GetName() {
		case "outpost_journal_commit_batch_size":
			requests = mf.GetMetric()[0].GetHistogram().GetSampleSum()
		case "outpost_journal_writes_total":
			keys = mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	return requests, keys
}

// Once the dependency of a suspended call finishes, the journal takes three
// writes: the dependency's result, REPORTED, with the caller's record that
// now holds it; the resumed run's STARTED; and the caller's FINISHED, which
// also deletes its snapshot once applied.
func TestResumeJournalWrites(t *testing.T) {
	dir := t.TempDir()
	release := make(chan struct{})
	r := snapshotRig(t, dir, suspender(1, func(ctx context.Context, c *Call) Result {
		select {
		case <-release:
			return Result{Status: StatusOK, Output: c.Input}
		case <-ctx.Done():
			return Result{Status: StatusTimeout, Error: ctx.Err().Error()}
		}
	}))
	if _, err := r.d.Accept([]*Call{cloudCall("w1", Idempotent)}); err != nil {
		t.Fatal(err)
	}
	waitState(t, r.j, "w1", Suspended)
	for r.s.Stats().Running != 1 { // the dependency, its STARTED queued
		time.Sleep(time.Millisecond)
	}
	w, err := r.j.Get("w1")
	if err != nil || len(w.Waits) != 1 {
		t.Fatalf("suspended record %+v: %v", w, err)
	}
	requests, keys := journalUse(t, r)
	close(release)
	rec := r.wait(t, 1)[0]
	if rec.Result.Status != StatusOK || string(rec.Result.Output) != "kept|ok:a" {
		t.Fatalf("result %+v", rec.Result)
	}
	requests2, keys2 := journalUse(t, r)
	if n, k := requests2-requests-1, keys2-keys; n != 3 || k != 4 {
		t.Errorf("resume took %v journal writes of %v keys, want 3 of 4", n, k)
	}
	dep, err := r.j.load(w.Waits[0].ID)
	if err != nil || dep == nil || dep.State != Reported || dep.Result == nil || string(dep.Result.Output) != "a" {
		t.Errorf("dependency on disk: %+v, %v", dep, err)
	}
	if _, n, _ := r.j.Outbox("task", 10); n != 1 { // w1's result only
		t.Errorf("%d results in the outbox, want 1", n)
	}
	deadline := time.Now().Add(5 * time.Second)
	for snapshotFiles(t, dir) != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d snapshot files left", snapshotFiles(t, dir))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A call whose source reads its result from the journal is journaled
// REPORTED in the write of its result: one write, no outbox, and its
// record leaves memory.
func TestReadInJournal(t *testing.T) {
	r := newRig(t, t.TempDir(), sleepy(0))
	r.d.ReadInJournal("admin")
	c := New("t", []byte("x"), Source{Kind: "admin"})
	c.Effect = Idempotent
	requests, keys := journalUse(t, r)
	if _, err := r.d.Accept([]*Call{c}); err != nil {
		t.Fatal(err)
	}
	if rec := r.wait(t, 1)[0]; rec.State != Reported || rec.Result.Status != StatusOK {
		t.Fatalf("record handed on: %+v", rec)
	}
	requests2, keys2 := journalUse(t, r)
	if n, k := requests2-requests-1, keys2-keys; n != 3 || k != 3 { // RECEIVED, STARTED, REPORTED
		t.Errorf("call took %v journal writes of %v keys, want 3 of 3", n, k)
	}
	if _, n, _ := r.j.Outbox("admin", 10); n != 0 {
		t.Errorf("%d results in the outbox", n)
	}
	r.j.mu.Lock()
	left := r.j.recs[c.ID]
	r.j.mu.Unlock()
	if left != nil {
		t.Errorf("record still in memory: %+v", left)
	}
	if rec, err := r.j.load(c.ID); err != nil || rec == nil || rec.State != Reported || string(rec.Result.Output) != "x" {
		t.Errorf("record on disk: %+v, %v", rec, err)
	}
}

// Deferred calls of a task whose slots are taken do not hide the calls
// behind them: a deferred call of another task runs at once, canceled
// calls among them finish at the next look at the list, and the rest run
// once the slot is free.
func TestDeferredBehindFullTask(t *testing.T) {
	release := make(chan struct{})
	f := newFake(map[string]int{"full": 1, "free": 1}, func(ctx context.Context, c *Call) Result {
		if c.Task == "full" {
			select {
			case <-release:
			case <-ctx.Done():
			}
		}
		return Result{Status: StatusOK}
	})
	s := NewScheduler(f, Options{Workers: 3, QueueSize: 100}, nil, nil)
	released := false
	defer func() {
		if !released {
			close(release)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = s.Drain(ctx)
	}()
	ends := make(chan *Call, 100)
	submit := func(task string) *Call {
		c := New(task, nil, Source{})
		c.NeedBy = time.Now().Add(time.Hour)
		c.Done = func(c *Call) { ends <- c }
		if err := s.Submit(c); err != nil {
			t.Fatal(err)
		}
		return c
	}
	// wait takes n ends and fails unless they are want (task and status).
	wait := func(n int, want map[string]int) {
		t.Helper()
		got := map[string]int{}
		for range n {
			select {
			case c := <-ends:
				got[c.Task+" "+string(c.Result.Status)]++
			case <-time.After(5 * time.Second):
				t.Fatalf("ends %v, want %v", got, want)
			}
		}
		if !maps.Equal(got, want) {
			t.Fatalf("ends %v, want %v", got, want)
		}
	}
	var full []*Call
	for range 40 {
		full = append(full, submit("full"))
	}
	submit("free")
	wait(1, map[string]int{"free ok": 1})
	for _, c := range full[10:15] {
		s.Cancel(c.ID)
	}
	submit("free") // its dispatch looks at the deferred list again
	wait(6, map[string]int{"free ok": 1, "full canceled": 5})
	close(release)
	released = true
	wait(35, map[string]int{"full ok": 35})
}

// A small state is read back from memory, a large one from its file; a
// removed snapshot is gone from both.
func TestSnapshotsSmallInMemory(t *testing.T) {
	dir := t.TempDir()
	s, err := OpenSnapshots(dir)
	if err != nil {
		t.Fatal(err)
	}
	small, large := []byte("progress"), bytes.Repeat([]byte("x"), smallState+1)
	ds, err := s.Put("c1", "t", small)
	if err != nil {
		t.Fatal(err)
	}
	dl, err := s.Put("c2", "t", large)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{ds, dl} { // the files are written all the same
		if _, err := os.Stat(filepath.Join(dir, strings.TrimPrefix(d, "sha256:"))); err != nil {
			t.Fatal(err)
		}
		if err := os.Remove(filepath.Join(dir, strings.TrimPrefix(d, "sha256:"))); err != nil {
			t.Fatal(err)
		}
	}
	if got, err := s.Get(ds, "c1"); err != nil || !bytes.Equal(got, small) {
		t.Fatalf("small state without its file: %q %v", got, err)
	}
	if _, err := s.Get(ds, "c2"); !errors.Is(err, ErrSnapshot) {
		t.Fatalf("small state of c1 read as c2's: %v", err)
	}
	if _, err := s.Get(dl, "c2"); !errors.Is(err, ErrSnapshot) {
		t.Fatalf("large state without its file: %v, want unreadable", err)
	}
	if err := s.remove(ds); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(ds, "c1"); !errors.Is(err, ErrSnapshot) {
		t.Fatalf("removed small state: %v, want gone", err)
	}
}
