// Package tasks declares a task's settings as a config file's tasks list and
// a deploy manifest write them: the module, its libraries and files, the
// ABI, limits and host API permissions, with their defaults and validation.
// The coordinator turns them into runtime specs.
package tasks

import (
	"cmp"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/outpost-edge/outpost/coordinator/placement"
	"github.com/outpost-edge/outpost/devices/shadow"
	"github.com/outpost-edge/outpost/devices/topic"
	"github.com/outpost-edge/outpost/internal/confval"
)

// Task declares a task (one entry of the config key tasks): a wasm
// module, native artifacts, or both. A task without a module is
// process-only: the wasm runtime never loads it.
type Task struct {
	Name   string `yaml:"name"`
	Module string `yaml:"module"` // path (relative to the config file) or builtin:NAME
	ABI    string `yaml:"abi"`    // auto, reactor or command
	Limits Limits `yaml:"limits"`
	// Permissions grant the task host API access (docs/abi.md); none by default.
	Permissions Permissions `yaml:"permissions"`
	// FreshInstance gives every call of a reactor a new instance (no state
	// kept between calls); commands always run fresh.
	FreshInstance bool `yaml:"fresh_instance"`
	// Libraries are modules the task imports by module name; Files are
	// host files mounted read-only for the task (docs/abi.md "Dependencies").
	Libraries []Library `yaml:"libraries"`
	Files     []File    `yaml:"files"`
	// Artifacts are the task's code for other execution environments
	// (native executables for the process environment); Placement are
	// its own placement rules, evaluated before the node's
	// (docs/placement.md).
	Artifacts []Artifact       `yaml:"artifacts"`
	Placement []placement.Rule `yaml:"placement"`
	// Labels are the operator's names for the task (tier: batch, site:
	// north), seen by placement rules as task.labels.
	Labels map[string]string `yaml:"labels"`
}

// Artifact is a task's code for an execution environment other than its
// wasm module: a native executable for one OS and architecture, run by
// the process environment in a sandbox.
type Artifact struct {
	Env        string `yaml:"env" json:"env"`               // process (the default)
	OS         string `yaml:"os" json:"os"`                 // linux (the default)
	Arch       string `yaml:"arch" json:"arch"`             // a GOARCH: amd64, arm64, arm
	Executable string `yaml:"executable" json:"executable"` // a file, or a reference in a manifest
}

// applyArtifactDefaults fills the artifacts' zero environment and OS.
func applyArtifactDefaults(as []Artifact) {
	for i := range as {
		as[i].Env = cmp.Or(as[i].Env, placement.Process)
		as[i].OS = cmp.Or(as[i].OS, "linux")
	}
}

// Library is a library of a task: the import module name and its .wasm.
type Library struct {
	Name   string `yaml:"name" json:"name"`
	Module string `yaml:"module" json:"module"`
}

// File is a host file (source) mounted read-only at a guest path.
type File struct {
	Path   string `yaml:"path" json:"path"`
	Source string `yaml:"source" json:"source"`
}

// Permissions say what a task may do through the host API.
type Permissions struct {
	Publish []string         `yaml:"publish"`  // MQTT topic filters the task may publish to
	Call    []string         `yaml:"call"`     // tasks it may call; "*" for any
	KVQuota confval.ByteSize `yaml:"kv_quota"` // bytes of keys+values in its kv namespace; 0: no kv
	// Telemetry lets the task read collected telemetry (telemetry_latest,
	// telemetry_query); false: those return denied.
	Telemetry bool `yaml:"telemetry"`
	// Network lets the task's native executable (process environment)
	// use the host's network; false: it has none.
	Network bool `yaml:"network"`
	// Shadows lists the device ids whose shadows the task may read and
	// change (shadow_get, shadow_update, shadow_delete): exact ids or globs
	// (* and ?, "*" every device); none: those return denied.
	Shadows []string `yaml:"shadows"`
}

// Limits bound one task.
type Limits struct {
	Memory      confval.ByteSize `yaml:"memory"`
	Timeout     confval.Duration `yaml:"timeout"`
	Concurrency int              `yaml:"concurrency"`
	MaxInput    confval.ByteSize `yaml:"max_input"`  // largest call input; larger calls are refused
	MaxOutput   confval.ByteSize `yaml:"max_output"` // largest call output; larger fails the call
	// LogRate and LogBurst bound the task's lines in the daemon's log: a
	// burst of LogBurst, then LogRate lines a second; more are dropped
	// (counted, and one line says how many).
	LogRate  int `yaml:"log_rate"`
	LogBurst int `yaml:"log_burst"`
}

// MaxCallBytes bounds limits.max_input and limits.max_output: what one
// call carries is held in memory whole (and an output is journaled and
// uploaded whole), and the admin API reads at most this much of a call.
const MaxCallBytes confval.ByteSize = 32 << 20

// DefaultConcurrency is a task's default limits.concurrency: half the
// smallest default worker count (max(4, 2 × CPUs)), so that a task that
// loops leaves workers for the others.
const DefaultConcurrency = 2

// Defaults are applied to every task's zero-valued fields.
var Defaults = Task{
	ABI: "auto",
	Limits: Limits{Memory: 16 << 20, Timeout: confval.Duration(5 * time.Second), Concurrency: DefaultConcurrency, MaxInput: 1 << 20, MaxOutput: 4 << 20,
		LogRate: 100, LogBurst: 1000},
}

// ApplyDefaults fills the zero limits with Defaults'.
func (l *Limits) ApplyDefaults() {
	l.Memory = cmp.Or(l.Memory, Defaults.Limits.Memory)
	l.Timeout = cmp.Or(l.Timeout, Defaults.Limits.Timeout)
	l.Concurrency = cmp.Or(l.Concurrency, Defaults.Limits.Concurrency)
	l.MaxInput = cmp.Or(l.MaxInput, Defaults.Limits.MaxInput)
	l.MaxOutput = cmp.Or(l.MaxOutput, Defaults.Limits.MaxOutput)
	l.LogRate = cmp.Or(l.LogRate, Defaults.Limits.LogRate)
	l.LogBurst = cmp.Or(l.LogBurst, Defaults.Limits.LogBurst)
}

// ApplyDefaults fills the task's zero ABI and limits.
func (t *Task) ApplyDefaults() {
	if t.ABI == "" {
		t.ABI = Defaults.ABI
	}
	t.Limits.ApplyDefaults()
	applyArtifactDefaults(t.Artifacts)
}

// Resolve makes the module, library and file names absolute against dir,
// the config file's directory.
func (t *Task) Resolve(dir string) {
	confval.Rel(dir, &t.Module)
	for j := range t.Libraries {
		confval.Rel(dir, &t.Libraries[j].Module)
	}
	for j := range t.Files {
		confval.Rel(dir, &t.Files[j].Source)
	}
	for j := range t.Artifacts {
		confval.Rel(dir, &t.Artifacts[j].Executable)
	}
}

var nameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9_.-]{0,62}$`)

// ValidName reports whether s is a task name: lower case letters, digits,
// '_', '.', '-', at most 63.
func ValidName(s string) bool { return nameRE.MatchString(s) }

// Validate reports every problem of the tasks, listed under c (the tasks
// key). Module, library and file names must name readable files.
func Validate(c *confval.Checker, ts []Task) {
	names := map[string]bool{}
	for i, t := range ts {
		tc := c.Index("", i)
		switch {
		case t.Name == "":
			tc.Errorf("name", "must not be empty")
		case !ValidName(t.Name):
			tc.Errorf("name", "%q is not a task name (lower case letters, digits, '_', '.', '-'; at most 63)", t.Name)
		case names[t.Name]:
			tc.Errorf("name", "duplicate task %q", t.Name)
		}
		names[t.Name] = true
		if t.Module != "" && !strings.HasPrefix(t.Module, "builtin:") {
			tc.File("module", t.Module, false)
		}
		for _, p := range nativeProblems(t.Name, t.Module, t.Libraries, t.Artifacts, t.FreshInstance) {
			tc.Errorf(p.key, "%s", p.msg)
		}
		validateDeps(tc, t.Libraries, t.Files, true)
		validateArtifacts(tc, t.Artifacts, true)
		placement.Validate(tc.At("placement"), t.Placement)
		validateSettings(tc, t.ABI, t.Limits, t.Permissions)
		tc.Labels("labels", t.Labels)
	}
}

// problem is a problem of a task at one of its keys.
type problem struct{ key, msg string }

// nativeProblems lists what is wrong with a task without a wasm module
// (module ""; none for one with a module): a process-only task runs only
// its native executables, so it needs one, and what only a wasm module
// uses (libraries, fresh_instance) is an error.
func nativeProblems(name, module string, libs []Library, as []Artifact, fresh bool) []problem {
	if module != "" {
		return nil
	}
	var ps []problem
	if len(as) == 0 {
		ps = append(ps, problem{"module", fmt.Sprintf("task %q needs a module (a .wasm file or builtin:NAME) or a process artifact", name)})
	}
	if len(libs) > 0 {
		ps = append(ps, problem{"libraries", fmt.Sprintf("task %q has no module to import them", name)})
	}
	if fresh {
		ps = append(ps, problem{"fresh_instance", fmt.Sprintf("task %q has no module to instantiate (its process starts afresh for every call)", name)})
	}
	return ps
}

// validateDeps checks libraries and files; local says their modules and
// sources are local file names that must exist (a config file's), not the
// references of a manifest, which the daemon resolves.
func validateDeps(c *confval.Checker, libs []Library, files []File, local bool) {
	ref := ", sha256:HEX or a pinned URL"
	if local {
		ref = ""
	}
	for j, l := range libs {
		lc := c.Index("libraries", j)
		if l.Name == "" {
			lc.Errorf("name", "must name the import module")
		}
		if l.Module == "" {
			lc.Errorf("module", "must name a .wasm file%s", ref)
		} else if local {
			lc.File("module", l.Module, false)
		}
	}
	for j, f := range files {
		fc := c.Index("files", j)
		if !strings.HasPrefix(f.Path, "/") {
			fc.Errorf("path", "must be an absolute guest path")
		}
		if f.Source == "" {
			fc.Errorf("source", "must name a host file%s", ref)
		} else if local {
			fc.File("source", f.Source, false)
		}
	}
}

// validateArtifacts checks artifacts: one per environment, OS and
// architecture; local as validateDeps'.
func validateArtifacts(c *confval.Checker, as []Artifact, local bool) {
	seen := map[Artifact]bool{}
	for j, a := range as {
		ac := c.Index("artifacts", j)
		if a.Env != placement.Process {
			ac.Errorf("env", "%q is not an environment with artifacts (process; the wasm module is the local environment's)", a.Env)
		}
		if !archRE.MatchString(a.OS) {
			ac.Errorf("os", "%q is not an OS name (a GOOS such as linux)", a.OS)
		}
		if !archRE.MatchString(a.Arch) {
			ac.Errorf("arch", "%q is not an architecture (a GOARCH such as amd64, arm64, arm)", a.Arch)
		}
		key := Artifact{Env: a.Env, OS: a.OS, Arch: a.Arch}
		if seen[key] {
			ac.Errorf("", "a second %s artifact for %s/%s", a.Env, a.OS, a.Arch)
		}
		seen[key] = true
		switch {
		case a.Executable == "" && local:
			ac.Errorf("executable", "must name an executable file")
		case a.Executable == "":
			ac.Errorf("executable", "must name an executable file, sha256:HEX or a pinned URL")
		case local:
			ac.File("executable", a.Executable, false)
		}
	}
}

var archRE = regexp.MustCompile(`^[a-z][a-z0-9]{1,15}$`)

// validateSettings checks what a config task and a manifest share.
func validateSettings(c *confval.Checker, abi string, l Limits, p Permissions) {
	switch abi {
	case "auto", "reactor", "command":
	default:
		c.Errorf("abi", "%q is not an ABI (auto, reactor, command)", abi)
	}
	if l.Memory < 64<<10 || l.Memory > 4<<30 {
		c.Errorf("limits.memory", "must be between 64KiB (one wasm page) and 4GiB")
	}
	if l.Timeout <= 0 {
		c.Errorf("limits.timeout", "must be positive")
	}
	if l.Concurrency < 1 {
		c.Errorf("limits.concurrency", "must be at least 1")
	}
	if l.MaxInput > MaxCallBytes {
		c.Errorf("limits.max_input", "must be at most %s (a call's input is held in memory whole)", MaxCallBytes)
	}
	if l.MaxOutput > MaxCallBytes {
		c.Errorf("limits.max_output", "must be at most %s (a call's output is held in memory, journaled and uploaded whole)", MaxCallBytes)
	}
	if l.LogRate < 1 {
		c.Errorf("limits.log_rate", "must be at least 1 (lines a second)")
	}
	if l.LogBurst < 1 {
		c.Errorf("limits.log_burst", "must be at least 1 (lines)")
	}
	for j, f := range p.Publish {
		if err := topic.CheckFilter(f); err != nil {
			c.Errorf("permissions.publish["+strconv.Itoa(j)+"]", "%v", err)
		}
	}
	for j, n := range p.Call {
		if n != "*" && !ValidName(n) {
			c.Errorf("permissions.call["+strconv.Itoa(j)+"]", "%q is not a task name or *", n)
		}
	}
	for j, pat := range p.Shadows {
		if err := shadow.CheckThingPattern(pat); err != nil {
			c.Errorf("permissions.shadows["+strconv.Itoa(j)+"]", "%v", err)
		}
	}
}
