package placement

import (
	"errors"
	"os"
	"path/filepath"
	goruntime "runtime"
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
		{"process-only, no rule matches: process", input(10, 0, true, Process), Decision{Env: Process, Rule: DefaultRule}, ""},
		{"process-only, process down: refused", input(10, 0, false, Process), Decision{Rule: DefaultRule}, "rule default: process: unhealthy"},
		{"process-only, a rule for local only: refused naming the task and artifact", func() Input {
			in := input(4096, 0, true, Process)
			in.Task.Devices = true
			return in
		}(), Decision{Rule: "devices-stay"}, "rule devices-stay: local: task t has no wasm module (module)"},
		{"wasm-only, process: refused naming the executable", input(10, 9, true, Local), Decision{Rule: "overflow"}, "process: task t has no native executable for " + goruntime.GOOS + "/" + goruntime.GOARCH},
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
	got, err := r.Decide([]Rule{{Name: "bad", When: "envs['peer:nowhere'].healthy", Run: []string{Process}}}, input(1, 0, true, Local, Process))
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
		`rules[1].run[0]: "moon" is not an environment (local, process, cloud, peer, peer:NAME)`,
		`rules[2].name: must name the rule`,
		`rules[2].run: must list at least one environment`,
	} {
		if !strings.Contains(got, want) {
			t.Errorf("problems lack %q:\n%s", want, got)
		}
	}
}

func TestValidatePeers(t *testing.T) {
	dir := t.TempDir()
	token := filepath.Join(dir, "token")
	if err := os.WriteFile(token, []byte("secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	exposed := filepath.Join(dir, "exposed")
	if err := os.WriteFile(exposed, []byte("secret\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	doc := confval.NewDoc([]byte(`peers:
  refresh: 10ms
  list:
    - {name: b, url: "http://127.0.0.1:7700", token_file: `+token+`}
    - {name: b, url: "http://10.0.0.2:7700", token_file: `+exposed+`}
    - {name: "c:d", url: "ftp://x", token_file: `+token+`}
    - {name: e, url: "https://10.0.0.3:7700"}
    - {name: f, url: "https://10.0.0.4:7700", token_file: `+token+`, cert_file: `+token+`}
rules:
  - {name: r, run: ["peer:b", "peer:", peer, "peer:z"]}
`), "test.yaml")
	var c Config
	if !doc.Decode(&c) {
		t.Fatal(doc.Err())
	}
	c.ApplyDefaults()
	c.Validate(doc.Checker())
	got := doc.Err().Error()
	for _, want := range []string{
		`peers.refresh: must be at least 100ms`,
		`test.yaml:5: peers.list[1].name: duplicate peer "b"`,
		`peers.list[1].url: "http://10.0.0.2:7700": beyond loopback the peer's admin API is reached over https`,
		`peers.list[1].token_file:`,
		`peers.list[2].name: must name the peer`,
		`peers.list[2].url: "ftp://x" is not an http(s)://host:port URL`,
		`peers.list[3].token_file: must name a file`,
		`peers.list[4].cert_file: cert_file and key_file come together`,
		`rules[0].run[1]: "peer:" is not an environment`,
		`rules[0].run[3]: "peer:z": no peer "z" in placement.peers.list`,
	} {
		if !strings.Contains(got, want) {
			t.Errorf("problems lack %q:\n%s", want, got)
		}
	}
	for _, bad := range []string{"peers.list[0]", "rules[0].run[0]", "rules[0].run[2]"} {
		if strings.Contains(got, bad) {
			t.Errorf("a good setting is refused (%s):\n%s", bad, got)
		}
	}
}

// A peer's environment, peer:NAME, needs the task's artifact for the peer
// kind (its wasm module, sendable) and the peer healthy.
func TestDecidePeer(t *testing.T) {
	rules := []Rule{{Name: "to-b", Run: []string{"peer:b", Local}}}
	for _, tc := range []struct {
		name      string
		healthy   bool
		artifacts []string
		want      string
	}{
		{"healthy peer", true, []string{Local, Peer}, "peer:b"},
		{"peer down: fallback", false, []string{Local, Peer}, Local},
		{"nothing to send: fallback", true, []string{Local}, Local},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := input(1, 0, true, tc.artifacts...)
			in.Envs["peer:b"] = Env{Healthy: tc.healthy, Capacity: 4, Free: 4}
			var r Rules
			if d, err := r.Decide(rules, in); d.Env != tc.want || d.Rule != "to-b" || err != nil {
				t.Fatalf("Decide = %+v, %v; want %s by to-b", d, err, tc.want)
			}
		})
	}
}

// Rules on the call's labels and on an environment's expected
// provisioning time: a batch call goes to the cloud while provisioning it
// is quick, a gpu call to the sandbox; with no labels, or a cloud that
// would take long to provision, the next rule or the default decides.
func TestDecideLabelsAndProvisioning(t *testing.T) {
	rules := []Rule{
		{Name: "gpu", When: "'gpu' in call.labels", Run: []string{Process}},
		{Name: "batch-cloud", When: "call.labels.tier == 'batch' && envs.cloud.provision_seconds < 2", Run: []string{Cloud, Local}},
	}
	for _, tc := range []struct {
		name      string
		labels    map[string]string
		provision float64
		want      Decision
	}{
		{"batch, cloud quick to provision", map[string]string{"tier": "batch"}, 0.4, Decision{Env: Cloud, Rule: "batch-cloud"}},
		{"batch, cloud holds everything", map[string]string{"tier": "batch"}, 0, Decision{Env: Cloud, Rule: "batch-cloud"}},
		{"batch, cloud slow to provision", map[string]string{"tier": "batch"}, 2.5, Decision{Env: Local, Rule: DefaultRule}},
		{"gpu, with an empty value", map[string]string{"gpu": ""}, 0, Decision{Env: Process, Rule: "gpu"}},
		{"interactive", map[string]string{"tier": "interactive"}, 0, Decision{Env: Local, Rule: DefaultRule}},
		// No labels: call.labels.tier is not there, so batch-cloud fails
		// to evaluate and is skipped (its error is returned for the log).
		{"no labels", nil, 0, Decision{Env: Local, Rule: DefaultRule}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := input(10, 0, true, Local, Process, Cloud)
			in.Call.Labels = tc.labels
			in.Envs[Cloud] = Env{Healthy: true, Capacity: 4, Free: 4, ProvisionSeconds: tc.provision}
			var r Rules
			d, err := r.Decide(rules, in)
			if d != tc.want {
				t.Fatalf("Decide = %+v (%v), want %+v", d, err, tc.want)
			}
			// Only a call without a tier that reaches batch-cloud fails to evaluate it.
			if wantErr := tc.labels == nil; wantErr != (err != nil) || wantErr && !strings.Contains(err.Error(), "rule batch-cloud: no such key: tier") {
				t.Fatalf("Decide error %v, want one: %v", err, wantErr)
			}
		})
	}
}
