package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// node label sets and removes labels; node ls filters by selector and
// counts by a label; enqueue -l makes one call per matching node; job
// create -l spreads a job over the matching nodes and job status shows
// the retry counts of a job with a retry policy.
func TestNodeLabelsCLI(t *testing.T) {
	url, _ := serve(t)
	for _, args := range [][]string{{"edge-1", "region=eu", "tier=gold", "old=x"}, {"edge-2", "region=eu"}, {"edge-3", "region=us", "tier=gold"}} {
		if code, _, errOut := runCLI(append([]string{"node", "label", "--server", url}, args...)...); code != 0 {
			t.Fatalf("label %v: exit %d %s", args, code, errOut)
		}
	}
	if code, out, _ := runCLI("node", "label", "--server", url, "edge-1", "old-"); code != 0 || strings.TrimSpace(out) != "edge-1 region=eu,tier=gold" {
		t.Fatalf("remove a label: exit %d %q", code, out)
	}
	if code, _, errOut := runCLI("node", "label", "--server", url, "edge-1", "bad"); code != 2 || !strings.Contains(errOut, "want KEY=VALUE to set or KEY- to remove") {
		t.Fatalf("a bad label: exit %d %s", code, errOut)
	}
	long := strings.Repeat("k", 64)
	if code, _, errOut := runCLI("node", "label", "--server", url, "edge-1", long+"=v"); code != 2 ||
		!strings.Contains(errOut, `label "`+long+`=v" of node edge-1: key "`+long+`": want 1 to 63 letters`) {
		t.Fatalf("a key over 63 characters: exit %d %s", code, errOut)
	}
	code, out, _ := runCLI("node", "ls", "--server", url, "-l", "tier=gold", "--group-by", "region")
	if code != 0 || !strings.Contains(out, "edge-1") || strings.Contains(out, "edge-2") || !strings.Contains(out, "region=eu") ||
		!strings.Contains(out, "GROUP") || !strings.Contains(out, "region=us") || !strings.Contains(out, "total") {
		t.Fatalf("node ls -l tier=gold --group-by region: exit %d\n%s", code, out)
	}
	if code, _, errOut := runCLI("node", "ls", "--server", url, "-l", "tier in (gold"); code != 1 || !strings.Contains(errOut, "bad label selector") {
		t.Fatalf("a bad selector: exit %d %s", code, errOut)
	}
	code, out, errOut := runCLI("enqueue", "--server", url, "-l", "region=eu", "--task", "echo", "--id", "hello", "--data", "x")
	if code != 0 || out != "hello@edge-1\nhello@edge-2\n" {
		t.Fatalf("enqueue -l region=eu: exit %d %q %s", code, out, errOut)
	}
	if code, _, errOut := runCLI("enqueue", "--server", url, "--task", "echo"); code != 2 || !strings.Contains(errOut, "node selector") {
		t.Fatalf("enqueue without --node or -l: exit %d %s", code, errOut)
	}
	src := filepath.Join(t.TempDir(), "items.jsonl")
	if err := os.WriteFile(src, []byte("{\"a\":1}\n{\"a\":2}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	code, out, errOut = runCLI("job", "create", "--server", url, "--id", "j1", "--task", "t", "-l", "tier=gold", "--source", "jsonl:"+src, "--max-attempts", "3")
	if code != 0 || strings.TrimSpace(out) != "j1" {
		t.Fatalf("job create -l: exit %d %q %s", code, out, errOut)
	}
	code, out, _ = runCLI("job", "status", "--server", url, "j1", "-o", "json")
	if code != 0 || !strings.Contains(out, `"edge-1",`) || !strings.Contains(out, `"edge-3"`) || !strings.Contains(out, `"max_attempts": 3`) {
		t.Fatalf("job status -o json: exit %d\n%s", code, out)
	}
	if code, out, _ = runCLI("job", "status", "--server", url, "j1"); code != 0 || !strings.Contains(out, "0 retried, 0 gave up") {
		t.Fatalf("job status: exit %d %q", code, out)
	}
}
