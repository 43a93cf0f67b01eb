package main

// Code objects end to end: the real outpost-cloud stores an object put
// with its CLI, a call names it by digest, the real outpost daemon, which
// does not have the task, fetches, verifies and deploys it, and runs the
// call; the failure cases come back as results that say why.

import (
	"crypto/rand"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/coordinator/remote/server"
)

// cloudCLI runs the outpost-cloud CLI against c and returns stdout,
// stderr and the exit code.
func (c *cloudProc) cli(args ...string) (string, string, int) {
	c.t.Helper()
	return runCmd(c.t, exec.Command(buildCloud(c.t), append(args, "--server", c.url)...))
}

// objectPath is where the server keeps an object (under its --data).
func (c *cloudProc) objectPath(digest string) string {
	for i, a := range c.cmd.Args {
		if a == "--data" {
			return filepath.Join(c.cmd.Args[i+1], "objects", strings.TrimPrefix(digest, "sha256:"))
		}
	}
	c.t.Fatal("outpost-cloud runs without --data")
	return ""
}

func (c *cloudProc) putObject(path string) string {
	c.t.Helper()
	out, errOut, code := c.cli("object", "put", path)
	d := strings.TrimSpace(out)
	if code != 0 || !strings.HasPrefix(d, "sha256:") || len(d) != 71 {
		c.t.Fatalf("object put %s: exit %d, %q %s", path, code, out, errOut)
	}
	return d
}

// fetches is the FETCHES column of `object ls` for digest.
func (c *cloudProc) fetches(digest string) string {
	c.t.Helper()
	out, errOut, code := c.cli("object", "ls")
	if code != 0 {
		c.t.Fatalf("object ls: exit %d %s", code, errOut)
	}
	for _, l := range strings.Split(out, "\n") {
		if f := strings.Fields(l); len(f) > 2 && f[0] == digest { // DIGEST SIZE (with its unit) FETCHES
			return f[len(f)-1]
		}
	}
	c.t.Fatalf("object ls does not list %s:\n%s", digest, out)
	return ""
}

func TestCloudCodeObjectsEndToEnd(t *testing.T) {
	c := startCloudProc(t)
	d := cloudDaemon(t, c)
	upper := c.putObject("../../examples/tasks/build/upper.wasm")
	echo := c.putObject("../../examples/tasks/build/echo.wasm")

	enqueue := func(args ...string) (string, string, int) {
		return c.cli(append([]string{"enqueue", "--node", "edge-1", "--wait", "--timeout", "60s"}, args...)...)
	}

	t.Run("fetched, deployed, run; then cached", func(t *testing.T) {
		out, errOut, code := enqueue("--task", "up", "--digest", upper, "--data", "abc")
		if code != 0 || strings.TrimSpace(out) != "ABC" {
			t.Fatalf("enqueue --digest: exit %d %q %s", code, out, errOut)
		}
		out, errOut, code = enqueue("--task", "up", "--digest", upper, "--data", "xyz")
		if code != 0 || strings.TrimSpace(out) != "XYZ" {
			t.Fatalf("second call: exit %d %q %s", code, out, errOut)
		}
		if n := c.fetches(upper); n != "1" {
			t.Fatalf("the server served %s fetches of %s, want 1 (the second call uses the deployment)", n, upper)
		}
		items := filepath.Join(t.TempDir(), "items.jsonl")
		_ = os.WriteFile(items, []byte("\"a\"\n\"b\"\n"), 0o644)
		out, errOut, code = c.cli("batch", "--node", "edge-1", "--task", "up-batch", "--digest", upper, "--timeout", "60s", items)
		if code != 0 || !strings.Contains(out, "all 2 items have a result: 2 ok") {
			t.Fatalf("batch --digest: exit %d\n%s%s", code, out, errOut)
		}
		if n := c.fetches(upper); n != "1" {
			t.Fatalf("the server served %s fetches of %s after a batch under another task name, want 1 (the blob is stored)", n, upper)
		}
		out, errOut, code = d.cli("task", "inspect", "up")
		if code != 0 || !strings.Contains(out, strings.TrimPrefix(upper, "sha256:")) || !strings.Contains(out, "(from cloud)") {
			t.Fatalf("task inspect up: exit %d\n%s%s", code, out, errOut)
		}
	})

	t.Run("unknown digest refused by the control plane", func(t *testing.T) {
		_, errOut, code := enqueue("--task", "up", "--digest", "sha256:"+strings.Repeat("0", 64), "--data", "a")
		if code != 1 || !strings.Contains(errOut, "no such object") {
			t.Fatalf("exit %d, stderr %s; want 1 and no such object", code, errOut)
		}
		_, errOut, code = enqueue("--task", "up", "--digest", "sha1:00", "--data", "a")
		if code != 2 || !strings.Contains(errOut, "want sha256:HEX") {
			t.Fatalf("exit %d, stderr %s; want 2 and the digest form", code, errOut)
		}
	})

	t.Run("object gone when the node fetches it", func(t *testing.T) {
		// Polls are held at the proxy while the object is removed after
		// the enqueue (which checks that it exists).
		release := make(chan struct{})
		c.setFault(func(w http.ResponseWriter, r *http.Request) bool {
			if strings.HasSuffix(r.URL.Path, "/poll") {
				select {
				case <-release:
				case <-r.Context().Done():
					return true
				}
			}
			return false
		})
		waitNotPolling(t, c)
		gone := filepath.Join(t.TempDir(), "gone.wasm")
		_ = os.WriteFile(gone, []byte("an object removed before the fetch"), 0o644)
		dg := c.putObject(gone)
		c.enqueue(server.Call{ID: "gone", Node: "edge-1", Task: "gone", Digest: dg, Effect: "idempotent"})
		if err := os.Remove(c.objectPath(dg)); err != nil {
			t.Fatal(err)
		}
		close(release)
		c.setFault(nil)
		got := c.waitDone("gone", 60*time.Second)
		if got.Result.Status != "fetch_failed" || !strings.Contains(got.Result.Error, "not found") || !strings.Contains(got.Result.Error, dg) {
			t.Fatalf("result %+v, want fetch_failed: not found", got.Result)
		}
	})

	t.Run("tampered object bytes", func(t *testing.T) {
		f := filepath.Join(t.TempDir(), "t.wasm")
		_ = os.WriteFile(f, []byte("the bytes the operator put"), 0o644)
		dt := c.putObject(f)
		if err := os.WriteFile(c.objectPath(dt), []byte("other bytes on the server's disk"), 0o600); err != nil {
			t.Fatal(err)
		}
		_, errOut, code := enqueue("--task", "tampered", "--digest", dt, "--data", "a")
		if code != 1 || !strings.Contains(errOut, "fetch_failed") || !strings.Contains(errOut, "hash mismatch") {
			t.Fatalf("exit %d, stderr %s; want fetch_failed: hash mismatch", code, errOut)
		}
	})

	t.Run("digest mismatch with the deployed task", func(t *testing.T) {
		_, errOut, code := enqueue("--task", "up", "--digest", echo, "--data", "a")
		if code != 1 || !strings.Contains(errOut, "task_conflict") || !strings.Contains(errOut, upper) || !strings.Contains(errOut, echo) {
			t.Fatalf("exit %d, stderr %s; want task_conflict naming %s and %s", code, errOut, upper, echo)
		}
		if out, _, code := enqueue("--task", "up", "--data", "still"); code != 0 || strings.TrimSpace(out) != "STILL" {
			t.Fatalf("the local task after the conflict: exit %d %q", code, out)
		}
	})

	t.Run("unknown task without a digest", func(t *testing.T) {
		_, errOut, code := enqueue("--task", "nosuch", "--data", "a")
		if code != 1 || !strings.Contains(errOut, "unknown_task") {
			t.Fatalf("exit %d, stderr %s; want unknown_task", code, errOut)
		}
	})

	t.Run("put says what it uploads, in one line off a terminal", func(t *testing.T) {
		big := make([]byte, 3<<20)
		_, _ = rand.Read(big)
		f := filepath.Join(t.TempDir(), "big.bin")
		_ = os.WriteFile(f, big, 0o644)
		out, errOut, code := c.cli("object", "put", f)
		if code != 0 || !strings.HasPrefix(out, "sha256:") || errOut != "uploading "+f+" (3.0 MiB)\n" {
			t.Fatalf("object put: exit %d %q, progress %q", code, out, errOut)
		}
	})
}

// waitNotPolling returns once no poll of the node is parked on the server.
func waitNotPolling(t *testing.T, c *cloudProc) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		var resp struct{ Nodes []server.NodeInfo }
		c.api("GET", "/api/v1/nodes", nil, &resp)
		polling := false
		for _, n := range resp.Nodes {
			polling = polling || n.Polling
		}
		if !polling {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("a poll is still parked on the server after 30s")
		}
		time.Sleep(20 * time.Millisecond)
	}
}
