package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Ratios are taken within a run, never across runs: the figure of run 2
// divided by the baseline of run 1 would be 5, not 1.
func TestRatiosWithinRuns(t *testing.T) {
	out := `benchpair-run: 1
BenchmarkX/raw-2         	 1000	      100 ns/op
BenchmarkX/outpost-2     	 1000	      200 ns/op	  3 allocs/op
benchpair-run: 2
BenchmarkX/raw-2         	 1000	      400 ns/op
BenchmarkX/outpost-2     	 1000	      500 ns/op
benchpair-run: 3
BenchmarkX/raw-2         	 1000	      100 ns/op
BenchmarkX/outpost-2     	 1000	      300 ns/op
BenchmarkOnlyOne-2       	 1000	      300 ns/op	 12.5 writes/commit
BenchmarkBoth-2          	 1	      300 ns/op	 30 round-s	 20 raw-round-s
`
	dir := t.TempDir()
	pairs := filepath.Join(dir, "pairs")
	if err := os.WriteFile(pairs, []byte("# comment\n\nX call | BenchmarkX/raw | BenchmarkX/outpost | ns/op | target: < 3x\n"+
		"missing | BenchmarkOnlyOne | BenchmarkNone | ns/op |\n"+
		"batch | - | BenchmarkOnlyOne | writes/commit | across devices\n"+
		"both | BenchmarkBoth | BenchmarkBoth | round-s,raw-round-s | one line\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	if code := run([]string{"-pairs", pairs}, strings.NewReader(out), &stdout, &stderr); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	got := stdout.String()
	// figure median 300, baseline median 100, ratios 1.25, 2, 3.
	for _, want := range []string{"X call", "300.0 vs        100.0 ns/op", "1.25/2/3x (n=3) target: < 3x"} {
		if !strings.Contains(got, want) {
			t.Errorf("output lacks %q:\n%s", want, got)
		}
	}
	// A figure alone: one run measured it.
	if !strings.Contains(got, "12.5/12.5/12.5 (n=1) across devices") {
		t.Errorf("figure without a baseline missing:\n%s", got)
	}
	// Both sides from one benchmark line, in two units.
	if !strings.Contains(got, "1.5/1.5/1.5x (n=1) one line") {
		t.Errorf("pair of two units of one line missing:\n%s", got)
	}
	if strings.Contains(got, "missing") || strings.Count(got, "\n") != 3 {
		t.Errorf("a pair with one side measured was printed:\n%s", got)
	}
}

func TestBadInput(t *testing.T) {
	for _, tc := range []struct {
		name, pairs, results, want string
	}{
		{"short pair line", "a | b | c\n", "", "line 1: 3 fields"},
		{"empty field", "a | | c | d | e\n", "", "line 1: empty field"},
		{"result before a run", "a | b | c | d | e\n", "BenchmarkA-2 1 5 ns/op\n", "before the first benchpair-run"},
		{"bad value", "a | b | c | d | e\n", "benchpair-run: 1\nBenchmarkA-2 1 x ns/op\n", `value "x"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pairs := filepath.Join(t.TempDir(), "pairs")
			if err := os.WriteFile(pairs, []byte(tc.pairs), 0o644); err != nil {
				t.Fatal(err)
			}
			var stdout, stderr bytes.Buffer
			if code := run([]string{"-pairs", pairs}, strings.NewReader(tc.results), &stdout, &stderr); code == 0 {
				t.Fatalf("exit 0, output %q", stdout.String())
			}
			if !strings.Contains(stderr.String(), tc.want) {
				t.Errorf("stderr %q lacks %q", stderr.String(), tc.want)
			}
		})
	}
}
