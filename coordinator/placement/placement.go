// Package placement decides in which execution environment a call runs.
// An ordered list of rules, the task's own first and then the node's
// (config key placement.rules), is evaluated for every call; a rule is an
// expression in a subset of CEL (lang.go, check.go) over the call, the
// task, the node and the environments, and the first rule that matches
// gives an ordered list of environments: the first one that is healthy and
// has the task's artifact runs the call, the others are its fallbacks. docs/placement.md describes the language.
package placement

import (
	"errors"
	"fmt"
	goruntime "runtime"
	"slices"
	"strings"
	"sync"

	"github.com/outpost-edge/outpost/internal/confval"
)

// The execution environments.
const (
	// Local runs the task's wasm module in this daemon's runtime.
	Local = "local"
	// Process runs the task's native executable for this OS and
	// architecture in a bubblewrap sandbox (runtime/sandbox).
	Process = "process"
	// Cloud runs the task's wasm module on the control plane's worker
	// pool, submitted over the cloud link.
	Cloud = "cloud"
	// Peer runs the task on another Outpost instance (the peer with the
	// most free workers); "peer:NAME" names one peer.
	Peer = "peer"
)

// Envs lists the environments, in the order they are shown.
var Envs = []string{Local, Process, Cloud, Peer}

// PeerPrefix starts the name of one peer's environment: "peer:NAME".
const PeerPrefix = Peer + ":"

// Kind is the environment kind of an environment name: "peer" for
// "peer:NAME", else the name.
func Kind(name string) string {
	if strings.HasPrefix(name, PeerPrefix) {
		return Peer
	}
	return name
}

// DefaultRule is the name a decision records when no rule matched: the
// call runs locally, or in process for a task without a wasm module.
const DefaultRule = "default"

// Rule is one placement rule.
type Rule struct {
	// Name names the rule in calls' records and in the metric's rule label.
	Name string `yaml:"name" json:"name"`
	// When is an expression of type bool; empty matches every call.
	When string `yaml:"when" json:"when,omitempty"`
	// Run lists environments in order of preference.
	Run []string `yaml:"run" json:"run"`
	// Wait: when none of Run can take the call, it waits until one can
	// (or its deadline passes) instead of being refused.
	Wait bool `yaml:"wait" json:"wait,omitempty"`
}

// Call is what a rule sees of the call (CEL variable call).
type Call struct {
	Task        string `cel:"task"`
	InputSize   int64  `cel:"input_size"`
	Source      string `cel:"source"` // the source kind: mqtt, admin, cloud, task, telemetry
	Queue       string `cel:"queue"`
	Priority    int64  `cel:"priority"`
	HasDeadline bool   `cel:"has_deadline"`
	Attempt     int64  `cel:"attempt"`
	// Resume: the run is the next step of a suspended call (its state
	// and the results it waited for travel with it).
	Resume bool `cel:"resume"`
	// Labels are the call's labels: given with the call (outpost call
	// --label, the admin API, a cloud call) or by its route
	// (routes[].labels).
	Labels map[string]string `cel:"labels"`
}

// Task is what a rule sees of the task (CEL variable task).
type Task struct {
	Name string `cel:"name"`
	// Devices: the task may publish to the node's MQTT devices (its
	// permissions.publish is not empty), so it should stay on this node.
	Devices bool     `cel:"devices"`
	Publish []string `cel:"publish"`
	Network bool     `cel:"network"`
	// Artifacts lists the environments the task has an artifact for.
	Artifacts []string `cel:"artifacts"`
	// Labels are the task's labels (config key tasks[].labels).
	Labels map[string]string `cel:"labels"`
}

// Node is what a rule sees of this node (CEL variable node).
type Node struct {
	QueueDepth int64 `cel:"queue_depth"` // calls waiting in the scheduler
	Running    int64 `cel:"running"`     // calls running
	Workers    int64 `cel:"workers"`     // scheduler.workers
	Draining   bool  `cel:"draining"`
	// MemoryUsed is the linear memory the wasm instances hold;
	// MemoryBudget bounds it (runtime.memory_budget; 0: no bound).
	MemoryUsed   int64 `cel:"memory_used"`
	MemoryBudget int64 `cel:"memory_budget"`
	// CloudUp says the cloud link's last poll succeeded (false without a
	// cloud link).
	CloudUp bool `cel:"cloud_up"`
}

// Env is what a rule sees of one environment (CEL variable envs, a map by
// environment name).
type Env struct {
	Healthy  bool    `cel:"healthy"`
	Running  int64   `cel:"running"`
	Capacity int64   `cel:"capacity"`
	Load     float64 `cel:"load"` // running / capacity
	// Free is capacity - running; Queued the calls waiting there (a
	// peer's scheduler queue; 0 for the others).
	Free   int64 `cel:"free"`
	Queued int64 `cel:"queued"`
	// ProvisionSeconds is the expected time to provision the environment
	// with the task's code objects (module, libraries, files) it is not
	// known to hold, over the link measured to it; 0 when it holds them
	// all (docs/placement.md "Provisioning time").
	ProvisionSeconds float64 `cel:"provision_seconds"`
}

// Input is everything a decision sees.
type Input struct {
	Call Call
	Task Task
	Node Node
	Envs map[string]Env
}

// Decision is where a call runs and which rule chose it. With no Env,
// Wait says the rule wants the call to wait for one of its environments.
type Decision struct {
	Env  string
	Rule string
	Wait bool
}

// ErrNoEnvironment: the rule that matched names no environment that can run
// the call now.
var ErrNoEnvironment = errors.New("no environment can run the call")

// Rules evaluates rules, compiling each expression once.
type Rules struct {
	mu    sync.Mutex
	progs map[string]*program
}

func (r *Rules) program(expr string) (*program, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if p, ok := r.progs[expr]; ok {
		return p, nil
	}
	p, err := compile(expr)
	if err != nil {
		return nil, err
	}
	if r.progs == nil {
		r.progs = map[string]*program{}
	}
	r.progs[expr] = p
	return p, nil
}

// Decide evaluates rules in order and returns the first environment of the
// first matching rule that is healthy and that the task has an artifact
// for. No matching rule: local, or process for a task that has no local
// artifact (a process-only task). A rule that fails to evaluate is skipped
// (its error is returned with the decision, for the log).
func (r *Rules) Decide(rules []Rule, in Input) (Decision, error) {
	var evalErrs []error
	for _, rule := range rules {
		if rule.When != "" {
			p, err := r.program(rule.When)
			if err != nil {
				evalErrs = append(evalErrs, fmt.Errorf("rule %s: %w", rule.Name, err))
				continue
			}
			match, err := p.matches(&in)
			if err != nil {
				evalErrs = append(evalErrs, fmt.Errorf("rule %s: %w", rule.Name, err))
				continue
			}
			if !match {
				continue
			}
		}
		d, err := pick(rule, in)
		return d, errors.Join(append(evalErrs, err)...)
	}
	def := Local
	if !slices.Contains(in.Task.Artifacts, Local) {
		def = Process
	}
	d, err := pick(Rule{Name: DefaultRule, Run: []string{def}}, in)
	return d, errors.Join(append(evalErrs, err)...)
}

// pick returns the first environment of rule that can run the call.
func pick(rule Rule, in Input) (Decision, error) {
	var why []string
	for _, name := range rule.Run {
		switch e := in.Envs[name]; {
		case !slices.Contains(in.Task.Artifacts, Kind(name)):
			why = append(why, fmt.Sprintf("%s: task %s has no %s", name, in.Task.Name, artifactOf(Kind(name))))
		case !e.Healthy:
			why = append(why, name+": unhealthy")
		default:
			return Decision{Env: name, Rule: rule.Name}, nil
		}
	}
	return Decision{Rule: rule.Name, Wait: rule.Wait}, fmt.Errorf("%w: rule %s: %s", ErrNoEnvironment, rule.Name, strings.Join(why, "; "))
}

// artifactOf names the artifact environment kind k runs, for errors.
func artifactOf(k string) string {
	switch k {
	case Process:
		return "native executable for " + goruntime.GOOS + "/" + goruntime.GOARCH + " (artifacts)"
	case Cloud:
		return "wasm module the cloud can run (module, without libraries or files, and cloud.url set)"
	}
	return "wasm module (module)"
}

// Validate reports every problem of rules under c: names, environments and
// expressions that do not type-check as bool.
func Validate(c *confval.Checker, rules []Rule) {
	names := map[string]bool{}
	for i, r := range rules {
		rc := c.Index("", i)
		switch {
		case r.Name == "":
			rc.Errorf("name", "must name the rule (calls record it)")
		case names[r.Name]:
			rc.Errorf("name", "duplicate rule %q", r.Name)
		}
		names[r.Name] = true
		if r.When != "" {
			if _, err := compile(r.When); err != nil {
				rc.Errorf("when", "%v", err)
			}
		}
		if len(r.Run) == 0 {
			rc.Errorf("run", "must list at least one environment (%s)", strings.Join(Envs, ", "))
		}
		for j, e := range r.Run {
			if !slices.Contains(Envs, e) && (Kind(e) != Peer || e == PeerPrefix) {
				rc.Errorf(fmt.Sprintf("run[%d]", j), "%q is not an environment (%s, %sNAME)", e, strings.Join(Envs, ", "), PeerPrefix)
			}
		}
	}
}
