package main

// The README walkthrough as a test: every shell block of README.md runs
// against the real binaries, in order, and what it prints is compared with
// the output the README shows. Drift between the two fails the test.
//
// How the README is read:
//
//   - A ```sh block whose lines start with "$ " is a transcript: each
//     command runs with bash and its standard output and error, together,
//     must equal the lines shown under it (after masking, below).
//   - Any other ```sh block is a script, run whole with bash. A plain ```
//     block right after it shows lines of its output: each must appear in
//     what the script printed, in any order.
//   - Any other plain ``` block shows lines of the daemon's log: each must
//     appear in it (the test waits up to 30 s for them), in any order.
//   - HTML comments (invisible on GitHub) direct the test:
//     <!-- readme-test: skip --> the next block is not run (a build the test
//     has done); <!-- readme-test: daemon ARGS --> the next block starts
//     `outpost ARGS`: the test starts it in the background instead
//     (stopping one that runs), and a plain block after it shows lines of
//     its log; <!-- readme-test: cloud ARGS --> the same for `outpost-cloud
//     ARGS`; <!-- readme-test: stop --> stops the daemon before the next
//     block runs. A transcript after a daemon or cloud directive still runs.
//
// Everything runs in a temporary folder laid out like a clone (examples/
// linked, bin/ holding the binaries this test built, so `go build` steps
// are skipped). Ports are random: 127.0.0.1:7700 (admin), :1883 (broker)
// and :8480 (cloud) in commands are replaced with free loopback ports
// ($OUTPOST_ADMIN and $OUTPOST_CLOUD name them too, and mosquitto clients
// get -p); a daemon started on a config file runs a copy of it with admin
// and broker addresses added, made again before every block so that a
// reload reads the edited file.
//
// The masking rule, applied to the README's output and to the real one
// alike before they are compared:
//
//   - the free ports are written back as the README's (7700, 1883, 8480),
//     and the work folder's path is dropped (paths print as relative);
//   - the host name is written as "vm" (the README's host);
//   - log lines lose their time= field;
//   - a development build's version (dev-COMMIT, dev-COMMIT-dirty) is dev;
//   - sha256 digests (12 to 64 hex digits) become DIGEST;
//   - call ids (20-character xids) become CALLID;
//   - RFC 3339 times become TIME;
//   - durations (888ms, 1.5s, 2m0s) become DURATION;
//   - sizes with a unit (3.0 MiB, 198 B) become SIZE;
//   - runs of spaces become one (table columns widen with masked values).

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/configs"
	"github.com/outpost-edge/outpost/internal/freeport"
	"github.com/outpost-edge/outpost/internal/syncbuf"
)

// readmeBlock is one fenced block of the README with the directive before it.
type readmeBlock struct {
	line      int    // of the opening fence
	lang      string // "sh", "" (output), "yaml"…
	text      string
	directive string // "skip", "daemon ARGS", "stop", "cloud ARGS", ""
}

var directiveRE = regexp.MustCompile(`^<!-- readme-test: (.*) -->$`)

// parseReadme returns the fenced blocks of a Markdown file.
func parseReadme(b []byte) []readmeBlock {
	var (
		blocks    []readmeBlock
		cur       *readmeBlock
		directive string
		body      strings.Builder
	)
	sc := bufio.NewScanner(bytes.NewReader(b))
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		switch {
		case cur == nil && strings.HasPrefix(line, "```"):
			cur = &readmeBlock{line: n, lang: strings.TrimPrefix(line, "```"), directive: directive}
			directive = ""
			body.Reset()
		case cur != nil && line == "```":
			cur.text = body.String()
			blocks = append(blocks, *cur)
			cur = nil
		case cur != nil:
			body.WriteString(line + "\n")
		default:
			if m := directiveRE.FindStringSubmatch(strings.TrimSpace(line)); m != nil {
				directive = m[1]
			}
		}
	}
	return blocks
}

// transcript splits a block of "$ command" lines and their output.
func transcript(text string) (cmds, outs []string) {
	for _, line := range strings.SplitAfter(text, "\n") {
		if c, ok := strings.CutPrefix(line, "$ "); ok {
			cmds = append(cmds, strings.TrimSuffix(c, "\n"))
			outs = append(outs, "")
		} else if len(outs) > 0 {
			outs[len(outs)-1] += line
		}
	}
	return cmds, outs
}

var maskRules = []struct {
	re   *regexp.Regexp
	with string
}{
	{regexp.MustCompile(`time=\S+ `), ""},
	{regexp.MustCompile(`\bdev-[0-9a-f]{12}(-dirty)?\b`), "dev"},
	{regexp.MustCompile(`\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)`), "TIME"},
	{regexp.MustCompile(`\b[0-9a-v]{20}\b`), "CALLID"},
	{regexp.MustCompile(`\b[0-9a-f]{12,64}\b`), "DIGEST"},
	{regexp.MustCompile(`\b(\d+h)?(\d+m)?\d+(\.\d+)?(ns|µs|ms|s|m|h)\b`), "DURATION"},
	{regexp.MustCompile(`\b\d+(\.\d+)? (B|KiB|MiB|GiB)\b`), "SIZE"},
	{regexp.MustCompile(` +`), " "},
}

// mask applies the masking rule to output that already has the README's
// ports and host name.
func mask(s string) string {
	for _, r := range maskRules {
		s = r.re.ReplaceAllString(s, r.with)
	}
	return strings.TrimSpace(s)
}

func TestMask(t *testing.T) {
	for in, want := range map[string]string{
		"time=2026-12-03T12:16:55.457Z level=INFO msg=x":    "level=INFO msg=x",
		"deployed visits version 1 (856daab4f2cd) in 888ms": "deployed visits version 1 (DIGEST) in DURATION",
		`{"call":"dc26kotqmd2u85ors3dg"}`:                   `{"call":"CALLID"}`,
		"uploading x.wasm (3.0 MiB)":                        "uploading x.wasm (SIZE)",
		"echo  reactor  16MiB   5s":                         "echo reactor 16MiB DURATION",
		"1  856daab4f2cd  2026-11-23T16:31:30Z":             "1 DIGEST TIME",
		"version=dev-2e729be3c1d0-dirty admin=":             "version=dev admin=",
	} {
		if got := mask(in); got != want {
			t.Errorf("mask(%q) = %q, want %q", in, got, want)
		}
	}
}

// walkthrough is the state of a README run.
type walkthrough struct {
	t                    *testing.T
	dir                  string
	admin, broker, cloud string // free loopback addresses
	host                 string
	daemon, cloudProc    *exec.Cmd
	daemonLog, cloudLog  *syncbuf.Buffer
	daemonCfg            string // the README's config file the daemon runs, "" for the built-in one
}

func TestREADMEWalkthrough(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	host, _ := os.Hostname()
	w := &walkthrough{t: t, dir: t.TempDir(), admin: freeport.Addr(t), broker: freeport.Addr(t), cloud: freeport.Addr(t), host: host}
	w.layout()
	t.Cleanup(w.stopAll)
	blocks := parseReadme(readme)
	for i := 0; i < len(blocks); i++ {
		b := blocks[i]
		var shown *readmeBlock
		if i+1 < len(blocks) && blocks[i+1].lang == "" && blocks[i+1].directive == "" {
			shown = &blocks[i+1]
		}
		switch d := b.directive; {
		case d == "skip":
			continue
		case d == "stop":
			w.stopDaemon()
		case strings.HasPrefix(d, "daemon "), strings.HasPrefix(d, "cloud "):
			// The block starts it (in the foreground, for a person): the
			// test starts it in the background instead, and checks the
			// log lines shown after it.
			if strings.HasPrefix(d, "daemon ") {
				w.startDaemon(strings.Fields(strings.TrimPrefix(d, "daemon ")))
				if shown != nil {
					w.containsLines(*shown, w.daemonLog.String)
					i++
				}
			} else {
				w.startCloud(strings.Fields(strings.TrimPrefix(d, "cloud ")))
			}
			if !strings.HasPrefix(b.text, "$ ") {
				continue
			}
		case d != "":
			t.Fatalf("README.md:%d: unknown directive %q", b.line, d)
		}
		if b.lang == "" && w.daemon != nil { // lines of the daemon's log
			w.containsLines(b, w.daemonLog.String)
			continue
		}
		if b.lang != "sh" {
			continue
		}
		if strings.HasPrefix(b.text, "$ ") {
			w.runTranscript(b)
			continue
		}
		out := w.bash(b.text)
		if shown != nil {
			w.containsLines(*shown, func() string { return out })
			i++
		}
	}
}

// layout makes the work folder: bin/ with the binaries, examples/ linked.
func (w *walkthrough) layout() {
	t := w.t
	if _, err := os.Stat("../../examples/tasks/build/go-visits.wasm"); err != nil {
		t.Fatalf("%v (run scripts/build-examples.sh)", err)
	}
	bin := filepath.Join(w.dir, "bin")
	if err := os.MkdirAll(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, path := range map[string]string{"outpost": binPath, "outpost-cloud": buildCloud(t)} {
		if err := os.Symlink(path, filepath.Join(bin, name)); err != nil {
			t.Fatal(err)
		}
	}
	abs, err := filepath.Abs("../../examples")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(abs, filepath.Join(w.dir, "examples")); err != nil {
		t.Fatal(err)
	}
}

// substitute puts the free ports into a command or a config.
func (w *walkthrough) substitute(s string) string {
	port := func(addr string) string { _, p, _ := net.SplitHostPort(addr); return p }
	s = strings.NewReplacer("127.0.0.1:7700", w.admin, "localhost:7700", w.admin, "127.0.0.1:1883", w.broker, "127.0.0.1:8480", w.cloud).Replace(s)
	return regexp.MustCompile(`\bmosquitto_(pub|sub) `).ReplaceAllString(s, "mosquitto_${1} -h 127.0.0.1 -p "+port(w.broker)+" ")
}

// unsubstitute writes the README's ports and host back into output.
func (w *walkthrough) unsubstitute(s string) string {
	s = strings.NewReplacer(w.dir+"/", "", w.admin, "127.0.0.1:7700", w.broker, "127.0.0.1:1883", w.cloud, "127.0.0.1:8480").Replace(s)
	if w.host != "" && w.host != "vm" {
		s = regexp.MustCompile(`\b`+regexp.QuoteMeta(w.host)+`\b`).ReplaceAllString(s, "vm")
	}
	return s
}

// bash runs script in the work folder and returns its output (standard
// output and error together), with the README's ports.
func (w *walkthrough) bash(script string) string {
	w.t.Helper()
	w.refreshConfig()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", "-c", "set -e\n"+w.killRefreshes()+w.substitute(script))
	cmd.Dir = w.dir
	cmd.WaitDelay = 5 * time.Second // a background process may hold the output open
	cmd.Env = append(os.Environ(), "OUTPOST_ADMIN="+w.admin, "OUTPOST_CLOUD=http://"+w.cloud, "PATH="+filepath.Join(w.dir, "bin")+":"+os.Getenv("PATH")+":/usr/sbin")
	out, err := cmd.CombinedOutput()
	if err != nil && ctx.Err() != nil {
		w.t.Fatalf("%s: timed out:\n%s", script, out)
	}
	return w.unsubstitute(string(out))
}

func (w *walkthrough) runTranscript(b readmeBlock) {
	w.t.Helper()
	cmds, outs := transcript(b.text)
	for i, c := range cmds {
		got := w.bash(c)
		if mask(got) != mask(outs[i]) {
			w.t.Errorf("README.md:%d: $ %s\nREADME shows:\n%s\ngot:\n%s\nmasked, README vs got:\n%s\n---\n%s", b.line, c, outs[i], got, mask(outs[i]), mask(got))
		}
	}
}

// containsLines checks that each line of block b appears in what out
// returns (waiting for a log to catch up: a reload compiling a Go-built
// module takes tens of seconds on a loaded 2-core host, and the blocks
// after it need the reloaded tasks).
func (w *walkthrough) containsLines(b readmeBlock, out func() string) {
	w.t.Helper()
	deadline := time.Now().Add(120 * time.Second)
	for {
		got := out()
		have := map[string]bool{}
		for _, l := range strings.Split(got, "\n") {
			have[mask(w.unsubstitute(l))] = true
		}
		var missing []string
		for _, l := range strings.Split(strings.TrimSpace(b.text), "\n") {
			if !have[mask(l)] {
				missing = append(missing, l)
			}
		}
		if len(missing) == 0 {
			return
		}
		if time.Now().After(deadline) {
			w.t.Errorf("README.md:%d: lines not in the output:\n%s\noutput:\n%s", b.line, strings.Join(missing, "\n"), w.unsubstitute(got))
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// killRefreshes returns bash that makes `kill` (the README's reload) write
// the daemon's config copy again first, so that the reload reads the file
// as the block left it.
func (w *walkthrough) killRefreshes() string {
	if w.daemon == nil || w.daemonCfg == "" {
		return ""
	}
	return fmt.Sprintf("kill() { sed 's/127.0.0.1:8480/%s/g' %q > %q && printf '\\nadmin: {listen: %%q}\\nmqtt: {broker: {listen: %%q}}\\n' %q %q >> %q && command kill \"$@\"; }\n",
		w.cloud, w.daemonCfg, w.copyPath(w.daemonCfg), w.admin, w.broker, w.copyPath(w.daemonCfg))
}

// refreshConfig writes the copy of the README's config file that the
// daemon runs, with the free admin and broker addresses.
func (w *walkthrough) refreshConfig() {
	if w.daemon == nil {
		return
	}
	src := w.daemonCfg
	var b []byte
	if src == "" {
		b = configs.Default
	} else {
		var err error
		if b, err = os.ReadFile(filepath.Join(w.dir, src)); err != nil {
			w.t.Fatal(err)
		}
	}
	cfg := w.substitute(string(b))
	if !strings.Contains(cfg, w.admin) {
		cfg += fmt.Sprintf("\nadmin: {listen: %q}\nmqtt: {broker: {listen: %q}}\n", w.admin, w.broker)
	}
	if err := os.WriteFile(w.copyPath(src), []byte(cfg), 0o644); err != nil {
		w.t.Fatal(err)
	}
}

// copyPath is where the daemon's config copy lives: beside the original,
// so that relative module paths stay true.
func (w *walkthrough) copyPath(src string) string {
	if src == "" {
		return filepath.Join(w.dir, "bin", ".readme-test-builtin.yaml")
	}
	return filepath.Join(w.dir, filepath.Dir(src), ".readme-test-"+filepath.Base(src))
}

// startDaemon runs `outpost ARGS` (args as the README gives them) on its
// config copy and waits until it is ready.
func (w *walkthrough) startDaemon(args []string) {
	t := w.t
	t.Helper()
	w.stopDaemon()
	w.daemonCfg = ""
	run := []string{}
	for i := 0; i < len(args); i++ {
		if args[i] == "--config" && i+1 < len(args) {
			w.daemonCfg = args[i+1]
			i++
			continue
		}
		run = append(run, args[i])
	}
	w.daemon = &exec.Cmd{} // refreshConfig writes the copy while a daemon is wanted
	w.refreshConfig()
	run = append(run, "--config", w.copyPath(w.daemonCfg))
	if w.daemonCfg == "" {
		run = append(run, "--data-dir", filepath.Join(w.dir, "data"))
	}
	w.daemonLog = &syncbuf.Buffer{}
	w.daemon = exec.Command(binPath, run...)
	w.daemon.Dir = w.dir
	w.daemon.Stdout, w.daemon.Stderr = w.daemonLog, w.daemonLog
	if err := w.daemon.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(60 * time.Second)
	for !strings.Contains(w.daemonLog.String(), `msg="outpost ready"`) {
		if time.Now().After(deadline) || w.daemon.ProcessState != nil {
			t.Fatalf("outpost %q not ready:\n%s", run, w.daemonLog.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (w *walkthrough) stopDaemon() {
	if w.daemon == nil || w.daemon.Process == nil {
		w.daemon = nil
		return
	}
	_ = w.daemon.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = w.daemon.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		_ = w.daemon.Process.Kill()
		<-done
	}
	if w.t.Failed() {
		w.t.Logf("outpost log:\n%s", w.daemonLog.String())
	}
	w.daemon = nil
}

func (w *walkthrough) startCloud(args []string) {
	t := w.t
	t.Helper()
	w.cloudLog = &syncbuf.Buffer{}
	w.cloudProc = exec.Command(buildCloud(t), append(args, "--listen", w.cloud)...)
	w.cloudProc.Dir = w.dir
	w.cloudProc.Stdout, w.cloudProc.Stderr = w.cloudLog, w.cloudLog
	if err := w.cloudProc.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(w.cloudLog.String(), "listening on") {
		if time.Now().After(deadline) {
			t.Fatalf("outpost-cloud not listening:\n%s", w.cloudLog.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (w *walkthrough) stopAll() {
	w.stopDaemon()
	if w.cloudProc != nil && w.cloudProc.Process != nil {
		_ = w.cloudProc.Process.Kill()
		_ = w.cloudProc.Wait()
	}
}
