package placement

import (
	"reflect"
	"strings"
	"testing"

	"github.com/google/cel-go/cel"
	"github.com/google/cel-go/ext"
)

func langInput() Input {
	return Input{
		Call: Call{Task: "resize", InputSize: 4096, Source: "cloud", Queue: "bulk", Priority: 3, HasDeadline: true, Attempt: 2,
			Labels: map[string]string{"tier": "batch", "gpu": ""}},
		Task: Task{Name: "resize", Devices: true, Publish: []string{"devices/+/out", "alerts"}, Artifacts: []string{Local, Process},
			Labels: map[string]string{"tier": "batch", "site": "north"}},
		Node: Node{QueueDepth: 7, Running: 3, Workers: 4, MemoryUsed: 48 << 20, MemoryBudget: 64 << 20, CloudUp: true},
		Envs: map[string]Env{Local: {Healthy: true, Running: 3, Capacity: 4, Load: 0.75}, Process: {Capacity: 2},
			Cloud: {Healthy: true, Capacity: 8, Free: 8, ProvisionSeconds: 1.5}},
	}
}

// The expressions below mean the same in the rule language and in CEL:
// the same type-check outcome and, where they check, the same value.
var langCases = []string{
	"true", "false", "!false", "!task.devices",
	"call.input_size > 1024", "call.input_size >= 4096 && call.input_size <= 4096", "call.input_size < 10 || call.attempt == 2",
	"call.source == 'cloud'", `call.source != "admin"`, "call.queue + '-x' == 'bulk-x'", "call.task < 'z'",
	"node.queue_depth >= node.workers", "node.queue_depth - node.running * 2 == 1", "node.queue_depth / 2 == 3", "node.queue_depth % 4 == 3",
	"-node.workers < 0", "(1 + 2) * 3 == 9", "call.has_deadline ? node.running > 1 : false",
	"envs['local'].load < 0.8", "envs['process'].healthy", "envs.local.healthy", "envs['local'].load * 2.0 > 1.4",
	"'process' in task.artifacts", "'peer' in task.artifacts", "'local' in envs", "'peer' in envs", "3 in [1, 2, 3]",
	"size(task.publish) == 2", "task.publish.size() > 1", "size(envs) == 2", "size(call.task) == 6",
	"task.publish[1] == 'alerts'", "task.publish[0].startsWith('devices/')", "call.task.endsWith('ize')", "call.task.contains('siz')",
	"double(node.workers) / 8.0 == 0.5", "int(envs['local'].load * 4.0) == 3", "[1, 2] == [1, 2]", "1e3 > 999.0",
	"envs['peer'].healthy || true", "false && envs['peer'].healthy",
	"node.memory_used * 2 < node.memory_budget", "!node.cloud_up || node.memory_budget == 0",
	"task.labels['tier'] == 'batch'", "'site' in task.labels && task.labels.site != 'south'", "size(task.labels) == 2",
	"task.labels['tier'] > 1",
	"call.labels.tier == 'batch'", "'gpu' in call.labels", "'cpu' in call.labels", "call.labels['gpu'] == ''", "size(call.labels) == 2",
	"call.labels.tier == task.labels.tier", "call.labels.zone == 'x'", "'zone' in call.labels && call.labels.zone == 'x'",
	"call.labels.x > 3", "call.labels == task.labels", "call.labels[1] == 'a'", "call.labels.tier.size() > 1",
	"envs.cloud.provision_seconds < 2.0", "envs.local.provision_seconds == 0.0",
	"envs.cloud.provision_seconds * 2.0 > 2.5", "envs.cloud.provision_seconds", "envs.cloud.provision_seconds < '2'",
	// Type errors in both.
	"call.input_sise > 10", "call.input_size", "call.source > 1", "nosuch.field", "task.devices && 1", "envs[1].healthy",
	"task.publish.startsWith('x')", "size(1)", "call == call", "frobnicate(1)", "'a' in envs['local']",
	// Syntax errors in both.
	"call.", "(true", "call.input_size >", "'open", "1 ++ 2",
}

// celEnv is the CEL environment the rule language follows.
func celEnv(tb testing.TB) *cel.Env {
	tb.Helper()
	e, err := cel.NewEnv(
		ext.NativeTypes(reflect.TypeFor[Call](), reflect.TypeFor[Task](), reflect.TypeFor[Node](), reflect.TypeFor[Env](),
			ext.ParseStructTags(true)),
		cel.Variable("call", cel.ObjectType("placement.Call")),
		cel.Variable("task", cel.ObjectType("placement.Task")),
		cel.Variable("node", cel.ObjectType("placement.Node")),
		cel.Variable("envs", cel.MapType(cel.StringType, cel.ObjectType("placement.Env"))),
	)
	if err != nil {
		tb.Fatal(err)
	}
	return e
}

func celVars(in Input) map[string]any {
	return map[string]any{"call": in.Call, "task": in.Task, "node": in.Node, "envs": in.Envs}
}

// celEval is what cel-go answers for expr: whether it checks as bool and
// its value.
func celEval(t *testing.T, expr string, in Input) (checks bool, value any, evalErr bool) {
	t.Helper()
	e := celEnv(t)
	ast, iss := e.Compile(expr)
	if iss.Err() != nil || ast.OutputType() != cel.BoolType {
		return false, nil, false
	}
	p, err := e.Program(ast)
	if err != nil {
		t.Fatal(err)
	}
	out, _, err := p.Eval(celVars(in))
	if err != nil {
		return true, nil, true
	}
	return true, out.Value(), false
}

func TestLanguageAgreesWithCEL(t *testing.T) {
	in := langInput()
	for _, expr := range langCases {
		t.Run(expr, func(t *testing.T) {
			wantChecks, want, wantErr := celEval(t, expr, in)
			p, err := compile(expr)
			if (err == nil) != wantChecks {
				t.Fatalf("compile error %v; CEL checks it: %v", err, wantChecks)
			}
			if err != nil {
				if !strings.HasPrefix(err.Error(), "ERROR: <input>:1:") && !strings.Contains(err.Error(), "want bool") {
					t.Fatalf("error %q has no position", err)
				}
				return
			}
			got, err := p.matches(&in)
			if (err != nil) != wantErr || err == nil && got != want {
				t.Fatalf("= %v, %v; CEL: %v, error %v", got, err, want, wantErr)
			}
		})
	}
}

func TestLanguageErrors(t *testing.T) {
	for _, tc := range []struct{ expr, want string }{
		{"call.input_sise > 10", "ERROR: <input>:1:5: undefined field 'input_sise'"},
		{"call.input_size", "is of type int, want bool"},
		{"task.publish", "is of type list(string), want bool"},
		{"envs", "is of type map(string, placement.Env), want bool"},
		{"call.labels", "is of type map(string, string), want bool"},
		{"call.labels.x > 3", "ERROR: <input>:1:15: found no matching overload for '_>_' applied to '(string, int)'"},
		{"call.labels['tier'] + 1 == 'x'", "ERROR: <input>:1:21: found no matching overload for '_+_' applied to '(string, int)'"},
		{"1 in call.labels", "ERROR: <input>:1:3: found no matching overload for '@in' applied to '(int, map(string, string))'"},
		{"call.label.tier == 'x'", "ERROR: <input>:1:5: undefined field 'label'"},
		{"envs.cloud.provision_seconds", "is of type double, want bool"},
		{"envs.cloud.provision_seconds < '2'", "ERROR: <input>:1:30: found no matching overload for '_<_' applied to '(double, string)'"},
		{"envs.cloud.provision_second < 2.0", "ERROR: <input>:1:11: undefined field 'provision_second'"},
		{"call.source > 1", "ERROR: <input>:1:13: found no matching overload for '_>_' applied to '(string, int)'"},
		{"nosuch", "ERROR: <input>:1:1: undeclared reference to 'nosuch'"},
		{"call.task.frob('x')", "ERROR: <input>:1:10: undeclared reference to 'frob'"},
		{"true &&\n  call.", "ERROR: <input>:2:8: syntax error: unexpected end of expression"},
		{"'open", "ERROR: <input>:1:1: string literal not terminated"},
		{"1 # 2", "ERROR: <input>:1:3: syntax error: unexpected character '#'"},
		{"[] == []", "ERROR: <input>:1:1: an empty list has no type"},
		{strings.Repeat("(", 200) + "true" + strings.Repeat(")", 200), "ERROR: <input>:1:51: expression nested more than 100 deep"},
		{strings.Repeat("!", 200) + "true", "ERROR: <input>:1:100: expression nested more than 100 deep"},
		{strings.Repeat("true && ", 1000) + "true", "is 8004 bytes long, at most 4096"},
	} {
		t.Run(tc.expr[:min(len(tc.expr), 40)], func(t *testing.T) {
			_, err := compile(tc.expr)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("compile error %v, want %q", err, tc.want)
			}
		})
	}
}

func TestLanguageEvalErrors(t *testing.T) {
	in := langInput()
	for _, tc := range []struct{ expr, want string }{
		{"envs['peer'].healthy", "no such key: peer"},
		{"node.workers / (node.running - 3) > 0", "division by zero"},
		{"task.publish[5] == 'x'", "index out of range: 5"},
		{"call.labels.zone == 'x'", "no such key: zone"},
	} {
		t.Run(tc.expr, func(t *testing.T) {
			p, err := compile(tc.expr)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := p.matches(&in); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want %q", err, tc.want)
			}
		})
	}
}

func FuzzCompile(f *testing.F) {
	for _, c := range langCases {
		f.Add(c)
	}
	in := langInput()
	f.Fuzz(func(t *testing.T, expr string) {
		p, err := compile(expr)
		if err != nil {
			return
		}
		_, _ = p.matches(&in) // never panics
	})
}

// BenchmarkDecide decides with two rules, the second matching, against
// cel-go evaluating the same two conditions.
func BenchmarkDecide(b *testing.B) {
	rules := []Rule{
		{Name: "devices-stay", When: "task.devices && call.source != 'cloud'", Run: []string{Local}},
		{Name: "overflow", When: "node.queue_depth >= node.workers && envs['local'].load < 0.8", Run: []string{Local}},
	}
	in := langInput()
	b.Run("rules", func(b *testing.B) {
		var r Rules
		for b.Loop() {
			if d, err := r.Decide(rules, in); err != nil || d.Rule != "overflow" {
				b.Fatal(d, err)
			}
		}
	})
	b.Run("cel-go", func(b *testing.B) {
		e := celEnv(b)
		var progs []cel.Program
		for _, r := range rules {
			ast, iss := e.Compile(r.When)
			if iss.Err() != nil {
				b.Fatal(iss.Err())
			}
			p, err := e.Program(ast)
			if err != nil {
				b.Fatal(err)
			}
			progs = append(progs, p)
		}
		for b.Loop() {
			vars := celVars(in)
			for _, p := range progs {
				if out, _, err := p.Eval(vars); err != nil || out.Value() == true {
					break
				}
			}
		}
	})
}
