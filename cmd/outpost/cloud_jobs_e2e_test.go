package main

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/coordinator/calls"
	"github.com/outpost-edge/outpost/coordinator/remote/server"
	"github.com/outpost-edge/outpost/internal/pgtest"
)

// A data-set job end to end on PostgreSQL: the real outpost-cloud reads a
// directory of 300 items and a real outpost node runs them; outpost-cloud
// is killed with -9 twice mid-job, each time started again on the same
// database and port; every item runs once (journal runs 1) and has one result, the
// signed webhook notice arrives once, `job wait` ends with the job done;
// a second job after 20 files were added runs only those.
func TestCloudJobEndToEnd(t *testing.T) {
	skipShort(t, "PostgreSQL, 300 items and two kills of outpost-cloud; remote/server TestJobs and TestJobDriverKill9 cover jobs")
	pg := pgtest.Start(t)
	dir := t.TempDir()
	storeFile, secret := filepath.Join(dir, "store.url"), filepath.Join(dir, "hook.secret")
	_ = os.WriteFile(storeFile, []byte(pg.NewDatabase()), 0o600)
	_ = os.WriteFile(secret, []byte("s3cret"), 0o600)
	src := filepath.Join(dir, "items")
	_ = os.Mkdir(src, 0o755)
	// The spin task echoes its input after 500 ms times its first digit:
	// thirty items take a second each, so the job is still running when
	// outpost-cloud is killed.
	item := func(i int) string {
		if i%10 == 5 {
			return fmt.Sprintf("2 slow item %d", i)
		}
		return fmt.Sprintf("0 item %d", i)
	}
	for i := range 300 {
		_ = os.WriteFile(filepath.Join(src, fmt.Sprintf("item-%03d", i)), []byte(item(i)), 0o644)
	}
	var mu sync.Mutex
	var notices []string
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		notices = append(notices, r.Header.Get("Outpost-Job")+" "+r.Header.Get("Outpost-Signature")+" "+string(b))
		mu.Unlock()
	}))
	defer hook.Close()
	args := []string{"--store-file", storeFile, "--webhook-secret-file", secret, "--data", filepath.Join(dir, "cloud")}
	c := startCloudProcArgs(t, args...)
	d := cloudDaemonAt(t, c.url)
	out, err := exec.Command(buildCloud(t), "job", "create", "--server", c.url, "--id", "set1", "--task", "spin",
		"--nodes", "edge-1", "--source", "dir:"+src, "--webhook", hook.URL).CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "set1" {
		t.Fatalf("job create: %v %s", err, out)
	}
	// Killed with -9 twice mid-job, each time started again on the same
	// database and port.
	for _, at := range []int{30, 150} {
		deadline := time.Now().Add(60 * time.Second)
		for {
			var j server.Job
			c.api("GET", "/api/v1/jobs/set1", nil, &j)
			if j.Done >= at {
				if j.Done == 300 {
					t.Fatal("the job was done before outpost-cloud could be killed mid-job")
				}
				t.Logf("killing outpost-cloud at %d of 300 done", j.Done)
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("job %+v", j)
			}
			time.Sleep(20 * time.Millisecond)
		}
		_ = c.cmd.Process.Signal(syscall.SIGKILL)
		<-c.exited
		c = startCloudProcArgs(t, append(args, "--listen", strings.TrimPrefix(c.url, "http://"))...)
	}
	out, err = exec.Command(buildCloud(t), "job", "wait", "set1", "--server", c.url).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "job set1: done, 300/300 done, 0 failed") {
		t.Fatalf("job wait: %v\n%s", err, out)
	}
	// Each item's call (found by its output, the item) ran once on the node.
	var done struct{ Calls []server.Call }
	c.api("GET", "/api/v1/calls?node=edge-1&state=done", nil, &done)
	byItem := map[string]string{}
	for _, call := range done.Calls {
		byItem[string(call.Result.Output)] = call.ID
	}
	for i := range 300 {
		id := byItem[item(i)]
		if id == "" {
			t.Fatalf("no call ran item %d", i)
		}
		if r := d.waitState(id, calls.Reported, 20*time.Second); r.Runs != 1 {
			t.Fatalf("item %d ran %d times", i, r.Runs)
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		mu.Lock()
		n := len(notices)
		mu.Unlock()
		if n > 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(500 * time.Millisecond)
	mu.Lock()
	if len(notices) != 1 || !strings.HasPrefix(notices[0], "set1 sha256=") || !strings.Contains(notices[0], `"done":300`) {
		t.Errorf("notices %q", notices)
	}
	mu.Unlock()
	// The source grows: a second job runs only the new items.
	for i := 300; i < 320; i++ {
		_ = os.WriteFile(filepath.Join(src, fmt.Sprintf("item-%03d", i)), []byte(fmt.Sprintf("0 new item %d", i)), 0o644)
	}
	out, err = exec.Command(buildCloud(t), "job", "create", "--wait", "--server", c.url, "--id", "set2", "--task", "spin",
		"--nodes", "edge-1", "--source", "dir:"+src).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "job set2: done, 320/320 done, 0 failed, 300 already cached") {
		t.Fatalf("second job: %v\n%s", err, out)
	}
	var all struct{ Calls []server.Call }
	c.api("GET", "/api/v1/calls?node=edge-1", nil, &all)
	if len(all.Calls) != 320 {
		t.Fatalf("%d calls on the server, want 320", len(all.Calls))
	}
}
