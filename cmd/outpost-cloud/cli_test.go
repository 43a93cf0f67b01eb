package main

import (
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/coordinator/remote/server"
)

// `help` after any command prints its help and never acts: cancel help
// cancels nothing, serve help serves nothing, object help lists nothing.
func TestHelpNeverActs(t *testing.T) {
	url, logs := serve(t)
	for _, args := range [][]string{
		{"help"}, {"-h"}, {"cancel", "help"}, {"serve", "help"}, {"object", "help"}, {"object", "-h"}, {"object", "put", "help"},
		{"enqueue", "help"}, {"batch", "--help"}, {"results", "help"}, {"nodes", "help"}, {"version", "help"},
		{"job", "help"}, {"job", "create", "help"}, {"job", "wait", "help"}, {"job", "status", "-h"}, {"job", "ls", "help"},
		{"node", "help"}, {"node", "ls", "help"}, {"node", "label", "help"},
	} {
		if args[0] == "cancel" || args[0] == "enqueue" || args[0] == "results" || args[0] == "nodes" || len(args) > 2 {
			args = append(args, "--server", url)
		}
		code, out, errOut := runCLI(args...)
		if code != 0 || !strings.Contains(out, "Usage:") {
			t.Errorf("%q: exit %d\n%s%s", args, code, out, errOut)
		}
	}
	if strings.Contains(logs.String(), "help") {
		t.Errorf("a help request reached the server:\n%s", logs.String())
	}
	code, out, _ := runCLI("enqueue", "--help")
	if code != 0 || !strings.Contains(out, "outpost-cloud enqueue --node NODE --task TASK [--data INPUT] [--wait] [flags]") {
		t.Errorf("enqueue usage line:\n%s", out)
	}
	if code, out, _ := runCLI("--version"); code != 0 || !strings.HasPrefix(out, "outpost-cloud ") || !strings.Contains(out, "\ngo: ") {
		t.Errorf("--version: exit %d %q", code, out)
	}
	if code, _, errOut := runCLI("nodes", "--server", "http://127.0.0.1:1"); code != 1 || !strings.Contains(errOut, "give its URL with --server or $OUTPOST_CLOUD") {
		t.Errorf("unreachable server: exit %d %s", code, errOut)
	}
	if code, _, errOut := runCLI("cancel"); code != 2 || !strings.Contains(errOut, "want 1 argument(s) (cancel CALL_ID), got 0") {
		t.Errorf("cancel without an id: exit %d %s", code, errOut)
	}
}

// Enqueueing for a node that never polled warns at once; --wait says it is
// waiting for that node.
func TestEnqueueUnknownNode(t *testing.T) {
	url, _ := serve(t)
	start := time.Now()
	code, out, errOut := runCLI("enqueue", "--server", url, "--node", "edeg-1", "--task", "echo", "--data", "x", "--wait", "--timeout", "500ms")
	if code != 1 {
		t.Fatalf("exit %d, want 1 (timed out)\n%s%s", code, out, errOut)
	}
	lines := strings.Split(errOut, "\n")
	if len(lines) < 3 || !strings.Contains(lines[0], `warning: node "edeg-1" has not polled this control plane`) ||
		!strings.Contains(lines[1], `waiting for node "edeg-1", which has not polled yet (up to 500ms)`) {
		t.Errorf("stderr:\n%s", errOut)
	}
	if time.Since(start) > 20*time.Second {
		t.Errorf("took %s", time.Since(start))
	}
	// Without --wait: the warning and the id.
	code, out, errOut = runCLI("enqueue", "--server", url, "--node", "edeg-1", "--task", "echo", "--data", "x")
	if code != 0 || strings.TrimSpace(out) == "" || !strings.Contains(errOut, "has not polled") {
		t.Errorf("exit %d %q %s", code, out, errOut)
	}
	// -o json on a listing.
	if code, out, _ := runCLI("results", "--server", url, "-o", "json"); code != 0 || !strings.Contains(out, `"node": "edeg-1"`) {
		t.Errorf("results -o json: exit %d\n%s", code, out)
	}
}

// serve --store-file wants a secret file (mode 600) holding a postgres://
// URL: anything else stops serve with exit 2 before it opens a store.
func TestServeStoreFile(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	tests := []struct {
		name, file, want string
	}{
		{"readable by others", write("open.url", "postgres://u:pw@127.0.0.1:1/db", 0o644), "readable by group or others"},
		{"not a postgres URL", write("mysql.url", "mysql://u:pw@127.0.0.1/db", 0o600), "want a postgres:// or postgresql:// URL"},
		{"empty", write("empty.url", "\n", 0o600), "empty"},
		{"missing", filepath.Join(dir, "none.url"), "no such file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, _, errOut := runCLI("serve", "--listen", "127.0.0.1:0", "--data", filepath.Join(dir, "cloud"), "--store-file", tt.file)
			if code != 2 || !strings.Contains(errOut, "--store-file") || !strings.Contains(errOut, tt.want) || strings.Contains(errOut, "pw@") {
				t.Errorf("exit %d, stderr %q; want 2 and %q, without the password", code, errOut, tt.want)
			}
		})
	}
	// A database that does not answer: exit 1, the error names user and
	// database, never the password.
	code, _, errOut := runCLI("serve", "--listen", "127.0.0.1:0", "--data", filepath.Join(dir, "cloud"),
		"--store-file", write("down.url", "postgres://u:secretpw@127.0.0.1:1/db", 0o600))
	if code != 1 || !strings.Contains(errOut, "failed to connect to `user=u database=db`") || strings.Contains(errOut, "secretpw") {
		t.Errorf("database down: exit %d, stderr %q", code, errOut)
	}
}

// enqueue --label labels the call the control plane keeps and hands to the
// node; a bad label is a usage error before anything is sent.
func TestEnqueueLabels(t *testing.T) {
	url, _ := serve(t)
	code, out, errOut := runCLI("enqueue", "--server", url, "--node", "edge-1", "--task", "echo", "--data", "x", "--id", "l1", "--label", "tier=batch", "--label", "gpu=")
	if code != 0 || strings.TrimSpace(out) != "l1" {
		t.Fatalf("enqueue: exit %d %s%s", code, out, errOut)
	}
	resp, err := http.Get(url + "/api/v1/calls/l1")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var c server.Call
	if err := json.NewDecoder(resp.Body).Decode(&c); err != nil || len(c.Labels) != 2 || c.Labels["tier"] != "batch" || c.Labels["gpu"] != "" {
		t.Fatalf("stored call %+v (%v)", c, err)
	}
	for _, bad := range []string{"tier", "bad key=x"} {
		if code, _, errOut := runCLI("enqueue", "--server", url, "--node", "edge-1", "--task", "echo", "--data", "x", "--label", bad); code != 2 || !strings.Contains(errOut, "--label") {
			t.Errorf("--label %q: exit %d %s, want a usage error", bad, code, errOut)
		}
	}
}

// batch --label and job create --label label every call they enqueue;
// results --label selects by labels (every one given); a bad label is a
// usage error before anything is sent.
func TestBatchAndJobLabels(t *testing.T) {
	url, _ := serve(t)
	src := filepath.Join(t.TempDir(), "items.jsonl")
	if err := os.WriteFile(src, []byte("{\"a\":1}\n{\"a\":2}\n{\"a\":3}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	// No node polls: batch enqueues, then gives up waiting for results.
	code, out, errOut := runCLI("batch", "--server", url, "--node", "edge-1", "--task", "echo", "--label", "tier=batch", "--label", "site=north",
		"--timeout", "300ms", src)
	if code != 1 || !strings.Contains(out, "3 items: 3 enqueued") || !strings.Contains(errOut, "3 of 3 items without a result") {
		t.Fatalf("batch: exit %d\n%s%s", code, out, errOut)
	}
	code, out, errOut = runCLI("job", "create", "--server", url, "--id", "j1", "--task", "score", "--nodes", "edge-2", "--label", "tier=batch",
		"--source", "jsonl:"+src)
	if code != 0 || strings.TrimSpace(out) != "j1" {
		t.Fatalf("job create --label: exit %d %q %s", code, out, errOut)
	}
	if code, _, errOut := runCLI("enqueue", "--server", url, "--node", "edge-1", "--task", "echo", "--data", "x", "--label", "tier=other"); code != 0 {
		t.Fatalf("enqueue: exit %d %s", code, errOut)
	}
	results := func(labels ...string) []server.Call {
		t.Helper()
		args := []string{"results", "--server", url, "-o", "json"}
		for _, l := range labels {
			args = append(args, "--label", l)
		}
		code, out, errOut := runCLI(args...)
		var cs []server.Call
		if err := json.Unmarshal([]byte(out), &cs); code != 0 || err != nil {
			t.Fatalf("results %v: exit %d %v\n%s%s", labels, code, err, out, errOut)
		}
		return cs
	}
	var batched []server.Call
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(50 * time.Millisecond) { // the job enqueues on the server
		if batched = results("tier=batch"); len(batched) == 6 || time.Now().After(deadline) {
			break
		}
	}
	perTask := map[string]int{}
	for _, c := range batched {
		perTask[c.Task]++
		if c.Labels["tier"] != "batch" || c.Task == "echo" && (c.Labels["site"] != "north" || !strings.HasPrefix(c.ID, "b-")) ||
			c.Task == "score" && (len(c.Labels) != 1 || !strings.HasPrefix(c.ID, "j-")) {
			t.Errorf("call %+v", c)
		}
	}
	if perTask["echo"] != 3 || perTask["score"] != 3 {
		t.Fatalf("calls with tier=batch by task %v, want 3 of the batch (echo) and 3 of the job (score)", perTask)
	}
	if cs := results("tier=batch", "site=north"); len(cs) != 3 {
		t.Fatalf("calls with tier=batch and site=north: %d, want the batch's 3", len(cs))
	}
	if cs := results(); len(cs) != 7 {
		t.Fatalf("calls without a label filter: %d, want 7", len(cs))
	}
	for _, args := range [][]string{
		{"batch", "--node", "edge-1", "--task", "echo", "--label", "bad key=x", src},
		{"job", "create", "--task", "score", "--nodes", "edge-2", "--label", "tier", "--source", "jsonl:" + src},
		{"results", "--label", "tier"},
	} {
		if code, _, errOut := runCLI(append(args, "--server", url)...); code != 2 || !strings.Contains(errOut, "--label: ") {
			t.Errorf("%s with a bad --label: exit %d %s, want a usage error", args[0], code, errOut)
		}
	}
}
