package placement

import (
	"errors"
	"strings"
	"testing"

	"github.com/outpost-edge/outpost/internal/confval"
)

func input(size int64, depth int64, processHealthy bool, artifacts ...string) Input {
	return Input{
		Call: Call{Task: "t", InputSize: size, Source: "admin"},
		Task: Task{Name: "t", Artifacts: artifacts},
		Node: Node{QueueDepth: depth, Workers: 4},
		Envs: map[string]Env{Local: {Healthy: true, Capacity: 4}, Process: {Healthy: processHealthy, Capacity: 2}},
	}
}

func TestDecide(t *testing.T) {
	rules := []Rule{
		{Name: "devices-stay", When: "task.devices", Run: []string{Local}},
		{Name: "large", When: "call.input_size > 1024", Run: []string{Process, Local}},
		{Name: "overflow", When: "node.queue_depth >= node.workers && envs['process'].load < 1.0", Run: []string{Process}},
		{Name: "native-or-wait", When: "call.input_size == 11", Run: []string{Process}, Wait: true},
	}
	both := []string{Local, Process}
	for _, tc := range []struct {
		name string
		in   Input
		want Decision
		err  string
	}{
		{"no rule matches: local", input(10, 0, true, both...), Decision{Env: Local, Rule: DefaultRule}, ""},
		{"large input: process", input(4096, 0, true, both...), Decision{Env: Process, Rule: "large"}, ""},
		{"large input, process down: its fallback", input(4096, 0, false, both...), Decision{Env: Local, Rule: "large"}, ""},
		{"large input, no executable: its fallback", input(4096, 0, true, Local), Decision{Env: Local, Rule: "large"}, ""},
		{"overflow", input(10, 9, true, both...), Decision{Env: Process, Rule: "overflow"}, ""},
		{"overflow, process down: no fallback", input(10, 9, false, both...), Decision{Rule: "overflow"}, "process: unhealthy"},
		{"a rule that waits", input(11, 0, false, both...), Decision{Rule: "native-or-wait", Wait: true}, "process: unhealthy"},
		{"a device task stays", func() Input { in := input(4096, 9, true, both...); in.Task.Devices = true; return in }(), Decision{Env: Local, Rule: "devices-stay"}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var r Rules
			got, err := r.Decide(rules, tc.in)
			if got != tc.want {
				t.Fatalf("Decide = %+v, want %+v", got, tc.want)
			}
			if tc.err == "" && err != nil || tc.err != "" && (!errors.Is(err, ErrNoEnvironment) || !strings.Contains(err.Error(), tc.err)) {
				t.Fatalf("Decide error %v, want %q", err, tc.err)
			}
		})
	}
}

func TestDecideEvalError(t *testing.T) {
	var r Rules
	// A key missing from envs fails at evaluation: the rule is skipped.
	got, err := r.Decide([]Rule{{Name: "bad", When: "envs['peer'].healthy", Run: []string{Process}}}, input(1, 0, true, Local, Process))
	if got != (Decision{Env: Local, Rule: DefaultRule}) || err == nil || !strings.Contains(err.Error(), "rule bad") {
		t.Fatalf("Decide = %+v, %v", got, err)
	}
}

func TestValidate(t *testing.T) {
	doc := confval.NewDoc([]byte(`rules:
  - name: a
    when: call.input_sise > 10
    run: [local]
  - name: a
    when: call.input_size
    run: [moon]
  - when: "true"
    run: []
`), "test.yaml")
	var c Config
	if !doc.Decode(&c) {
		t.Fatal(doc.Err())
	}
	c.ApplyDefaults()
	c.Validate(doc.Checker())
	got := doc.Err().Error()
	for _, want := range []string{
		`test.yaml:3: rules[0].when: ERROR: <input>:1:5: undefined field 'input_sise'`,
		`test.yaml:5: rules[1].name: duplicate rule "a"`,
		`rules[1].when: is of type int, want bool`,
		`rules[1].run[0]: "moon" is not an environment (local, process, cloud)`,
		`rules[2].name: must name the rule`,
		`rules[2].run: must list at least one environment`,
	} {
		if !strings.Contains(got, want) {
			t.Errorf("problems lack %q:\n%s", want, got)
		}
	}
}
