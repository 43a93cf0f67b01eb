package configs

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/coordinator/tasks"
	"github.com/outpost-edge/outpost/internal/confval"
)

// The documented example must show every default as it is.
func TestExampleMatchesDefaults(t *testing.T) {
	c, err := Parse(Default, "configs/outpost.yaml")
	if err != nil {
		t.Fatal(err)
	}
	want := Defaults()
	want.Source = c.Source
	want.resolve(".")
	got := *c
	if len(got.Tasks) != 1 || got.Tasks[0].Name != "echo" || len(got.Routes) != 1 {
		t.Fatalf("example should declare the demo echo task and route, got %+v %+v", got.Tasks, got.Routes)
	}
	got.Tasks, got.Routes = nil, nil
	nilEmpty(reflect.ValueOf(&got).Elem())
	nilEmpty(reflect.ValueOf(&want).Elem())
	if !reflect.DeepEqual(got, want) {
		t.Errorf("configs/outpost.yaml differs from Defaults():\n got %+v\nwant %+v", got, want)
	}
	if got := c.Tasks[0]; !reflect.DeepEqual(got.Limits, tasks.Defaults.Limits) || got.ABI != tasks.Defaults.ABI {
		t.Errorf("example task limits %+v differ from tasks.Defaults %+v", got, tasks.Defaults)
	}
}

// nilEmpty sets every empty slice under v to nil: a file's "users: []"
// and a default's absent list mean the same.
func nilEmpty(v reflect.Value) {
	switch v.Kind() {
	case reflect.Struct:
		for i := range v.NumField() {
			if v.Type().Field(i).IsExported() {
				nilEmpty(v.Field(i))
			}
		}
	case reflect.Slice:
		if v.Len() == 0 {
			v.Set(reflect.Zero(v.Type()))
		}
		for i := range v.Len() {
			nilEmpty(v.Index(i))
		}
	case reflect.Map:
		if v.Len() == 0 {
			v.Set(reflect.Zero(v.Type()))
		}
	}
}

func TestEmptyFileIsDefaults(t *testing.T) {
	c, err := Parse(nil, "empty.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if c.Admin.Listen != "127.0.0.1:7700" || c.MQTT.Broker.Listen != "127.0.0.1:1883" || c.DataDir != "./data" {
		t.Errorf("unexpected defaults: %+v", c)
	}
	if c.Node.ID == "" || c.MQTT.ClientID != "outpost-"+c.Node.ID || c.Scheduler.Workers < 4 {
		t.Errorf("derived values not filled: %+v", c)
	}
	if want := max(16*c.Scheduler.Workers, 64); c.Scheduler.MaxParked != want {
		t.Errorf("scheduler.max_parked = %d, want the scheduler's default %d", c.Scheduler.MaxParked, want)
	}
}

func TestProblems(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		want []string // each must appear, in order, as one problem
	}{
		{
			name: "three distinct errors",
			yaml: `admin:
  listen: nowhere
tasks:
  - name: echo
    module: builtin:echo
    limits:
      timeout: -1s
routes:
  - topic: devices/+/in
    task: missing
`,
			want: []string{
				"x.yaml:2: admin.listen: \"nowhere\" is not host:port",
				"x.yaml:7: tasks[0].limits.timeout: must be positive",
				"x.yaml:10: routes[0].task: no task named \"missing\"",
			},
		},
		{
			name: "unknown keys and bad types all reported",
			yaml: `admin:
  listn: 127.0.0.1:1
scheduler:
  workers: many
  drain_timeout: soon
`,
			want: []string{
				"x.yaml:2: admin.listn: unknown key \"listn\"",
				"x.yaml:4: scheduler.workers: cannot unmarshal !!str `many` into int",
				"x.yaml:5: scheduler.drain_timeout: \"soon\" is not a duration",
			},
		},
		{
			name: "negative max_parked",
			yaml: "scheduler:\n  workers: 2\n  max_parked: -1\n",
			want: []string{"x.yaml:3: scheduler.max_parked: must not be negative (0: max(16 × workers, 64))"},
		},
		{
			name: "unknown key in flow style",
			yaml: "mqtt: {brokr: {listen: x}}\n",
			want: []string{"x.yaml:1: mqtt.brokr: unknown key \"brokr\""},
		},
		{
			name: "syntax error",
			yaml: "admin:\n  listen: [\n",
			want: []string{"x.yaml:2: did not find expected node content"},
		},
		{
			// yaml.v3 puts a syntax error at the start of the enclosing
			// block (line 1 here); the problem is on line 4.
			name: "indentation error inside a list",
			yaml: "tasks:\n  - name: a\n    module: builtin:echo\n   abi: auto\n",
			want: []string{"x.yaml:4: did not find expected '-' indicator"},
		},
		{
			name: "indentation error inside a mapping",
			yaml: "log:\n  level: info\nadmin:\n   listen: 127.0.0.1:7700\n  foo: 1\n",
			want: []string{"x.yaml:5: did not find expected key"},
		},
		{
			name: "not a mapping",
			yaml: "- a\n- b\n",
			want: []string{"x.yaml:1: the config must be a mapping"},
		},
		{
			name: "routes and replies",
			yaml: `tasks: [{name: t, module: builtin:echo}]
routes:
  - {topic: "a/#/b", task: t}
  - {topic: "a/+", task: t, reply: "r/{2}"}
  - {topic: "a/+", task: t, reply: "r/+", qos: 2}
`,
			want: []string{
				"x.yaml:3: routes[0].topic: \"a/#/b\": '#' must be the last segment",
				"x.yaml:4: routes[1].reply: \"r/{2}\": {2} must be {topic} or {1}..{1}",
				"x.yaml:5: routes[2].qos: must be 0 or 1",
				"x.yaml:5: routes[2].reply: \"r/+\": a reply topic cannot contain wildcards",
			},
		},
		{
			name: "reply loops",
			yaml: `tasks: [{name: t, module: builtin:echo}]
routes:
  - {topic: "devices/#", task: t, reply: "devices/{1}/out"}
  - {topic: "a/+/in", task: t, reply: "a/{1}/out"}
  - {topic: "b/+", task: t, reply: "a/x/in"}
`,
			want: []string{
				"x.yaml:3: routes[0].reply: every reply on \"devices/{1}/out\" would match routes[0] (\"devices/#\") and start another call: a loop",
				"x.yaml:5: routes[2].reply: every reply on \"a/x/in\" would match routes[1] (\"a/+/in\")",
			},
		},
		{
			name: "routes to the cloud",
			yaml: `tasks: [{name: t, module: builtin:echo}]
routes:
  - {topic: "a/+", cloud: true}
  - {topic: "b/+", cloud: true, task: t}
  - {topic: "c/+"}
`,
			want: []string{
				"x.yaml:3: routes[0].cloud: the cloud target needs the cloud link (cloud.url)",
				"x.yaml:4: routes[1].cloud: a route has one target: task \"t\" or the cloud (write two routes for both)",
				"x.yaml:5: routes[2].task: must name a task (or cloud: true)",
			},
		},
		{
			name: "a cloud route has no reply",
			yaml: `cloud: {url: "http://127.0.0.1:8480", messages_max_bytes: 10}
routes:
  - {topic: "a/+", cloud: true, reply: "r/{1}"}
`,
			want: []string{
				"x.yaml:1: cloud.messages_max_bytes: must be at least 1KiB",
				"x.yaml:3: routes[0].reply: a route to the cloud has no reply",
			},
		},
		{
			name: "anonymous beyond loopback",
			yaml: "mqtt:\n  broker:\n    listen: 0.0.0.0:1883\n",
			want: []string{"x.yaml:3: mqtt.broker.listen: anonymous clients are only allowed on a loopback listener"},
		},
		{
			name: "tasks",
			yaml: `tasks:
  - name: Bad Name
    module: /does/not/exist.wasm
  - name: a
    module: builtin:echo
    abi: fancy
  - name: a
    module: builtin:echo
    limits: {memory: 1KiB, concurrency: -1}
`,
			want: []string{
				"x.yaml:2: tasks[0].name: \"Bad Name\" is not a task name",
				"x.yaml:3: tasks[0].module: cannot read /does/not/exist.wasm: no such file or directory",
				"x.yaml:6: tasks[1].abi: \"fancy\" is not an ABI",
				"x.yaml:7: tasks[2].name: duplicate task \"a\"",
				"x.yaml:9: tasks[2].limits.memory: must be between 64KiB",
				"x.yaml:9: tasks[2].limits.concurrency: must be at least 1",
			},
		},
		{
			name: "external broker url",
			yaml: "mqtt:\n  url: http://x\n",
			want: []string{"x.yaml:2: mqtt.url: scheme \"http\" is not supported"},
		},
		{
			name: "external broker's message size limit",
			yaml: "mqtt:\n  url: tcp://b:1883\n  max_message_size: 512\n",
			want: []string{"x.yaml:3: mqtt.max_message_size: must be between 1KiB and 256MiB"},
		},
		{
			name: "message size limit of an external broker with the embedded one",
			yaml: "mqtt:\n  max_message_size: 1MiB\n",
			want: []string{"x.yaml:2: mqtt.max_message_size: is the limit of an external broker"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.yaml), "x.yaml")
			var ps Problems
			if !errors.As(err, &ps) {
				t.Fatalf("want Problems, got %v", err)
			}
			if len(ps) != len(tt.want) {
				t.Fatalf("want %d problems, got %d:\n%v", len(tt.want), len(ps), err)
			}
			for i, w := range tt.want {
				if !strings.HasPrefix(ps[i].String(), w) {
					t.Errorf("problem %d:\n got %s\nwant %s…", i, ps[i], w)
				}
			}
		})
	}
}

func TestRelativeModulePaths(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "m.wasm"), []byte{0}, 0o644); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "outpost.yaml")
	if err := os.WriteFile(p, []byte("tasks: [{name: m, module: m.wasm}]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	c, err := Load(p)
	if err != nil {
		t.Fatal(err)
	}
	if got := c.Tasks[0].Module; got != filepath.Join(dir, "m.wasm") {
		t.Errorf("module path %q not resolved against the config's directory", got)
	}
	if c.Tasks[0].Limits != tasks.Defaults.Limits {
		t.Errorf("task defaults not applied: %+v", c.Tasks[0].Limits)
	}
}

// The effective config printed by YAML parses back to the same config, and
// shows the defaults a file left out.
func TestEffectiveYAML(t *testing.T) {
	dir := t.TempDir()
	pw := filepath.Join(dir, "pw")
	if err := os.WriteFile(pw, []byte("x\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	src := `log: {level: debug}
cloud: {url: "http://127.0.0.1:8480", queues: [{name: bulk}]}
telemetry:
  snmp:
    targets: [{name: sw1, address: 10.0.0.1, community: public, oids: [{oid: 1.3.6.1.2.1.1.3.0}]}]
    traps: {listen: "127.0.0.1:9162", communities: [public]}
  gnmi_server: {listen: "127.0.0.1:9339", username: ops, password_file: pw}
`
	c, err := Parse([]byte(src), filepath.Join(dir, "outpost.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	out, err := c.YAML()
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"level: debug", "listen: 127.0.0.1:7700", "memtable_size: 4MiB", "poll_wait: 25s",
		"weight: 1", "max_repetitions: 10", "name: echo", "password_file: " + pw, "engine_id: 80001f8805"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("effective config lacks %q:\n%s", want, out)
		}
	}
	back, err := Parse(out, filepath.Join(t.TempDir(), "shown.yaml"))
	if err != nil {
		t.Fatalf("effective config does not parse: %v\n%s", err, out)
	}
	back.Source, c.Source = "", ""
	nilEmpty(reflect.ValueOf(back).Elem())
	nilEmpty(reflect.ValueOf(c).Elem())
	if !reflect.DeepEqual(back, c) {
		t.Errorf("effective config parses to a different config:\n got %+v\nwant %+v", back, c)
	}
}

func TestManifest(t *testing.T) {
	t.Run("defaults", func(t *testing.T) {
		m, err := ParseManifest([]byte("limits: {timeout: 2s}\npermissions: {kv_quota: 1KiB, shadows: [lamp-*]}\n"), "m.yaml")
		if err != nil {
			t.Fatal(err)
		}
		want := tasks.Defaults.Limits
		want.Timeout = confval.Duration(2 * time.Second)
		if m.ABI != "auto" || m.Limits != want || m.Permissions.KVQuota != 1<<10 || len(m.Permissions.Shadows) != 1 || m.Permissions.Shadows[0] != "lamp-*" {
			t.Errorf("manifest %+v", m)
		}
	})
	t.Run("json", func(t *testing.T) {
		m, err := ParseManifest([]byte(`{"abi": "command", "fresh_instance": true}`), "m.json")
		if err != nil || m.ABI != "command" || !m.FreshInstance {
			t.Errorf("manifest %+v, %v", m, err)
		}
	})
	t.Run("empty", func(t *testing.T) {
		if m, err := ParseManifest(nil, "m.yaml"); err != nil || m.Limits != tasks.Defaults.Limits {
			t.Errorf("manifest %+v, %v", m, err)
		}
	})
	t.Run("problems", func(t *testing.T) {
		_, err := ParseManifest([]byte(`abi: reactor
limits:
  timout: 5s
  memory: lots
permissions:
  publish: ["a/#/b"]
  shadows: ["lamp-*", "a/b"]
libraries: [{module: lib.wasm}]
files: [{path: data, source: d.txt}]
`), "m.yaml")
		var ps Problems
		if !errors.As(err, &ps) {
			t.Fatalf("want Problems, got %v", err)
		}
		want := []string{
			`m.yaml:3: limits.timout: unknown key "timout"`,
			`m.yaml:4: limits.memory: "lots" is not a size`,
			`m.yaml:6: permissions.publish[0]: "a/#/b": '#' must be the last segment`,
			`m.yaml:7: permissions.shadows[1]: "a/b" is not a device id pattern (non-empty, no /)`,
			`m.yaml:8: libraries[0].name: must name the import module`,
			`m.yaml:9: files[0].path: must be an absolute guest path`,
		}
		if len(ps) != len(want) {
			t.Fatalf("want %d problems, got %d:\n%v", len(want), len(ps), err)
		}
		for i, w := range want {
			if !strings.HasPrefix(ps[i].String(), w) {
				t.Errorf("problem %d:\n got %s\nwant %s…", i, ps[i], w)
			}
		}
		if strings.Contains(err.Error(), "not found in type") {
			t.Errorf("Go type names in %v", err)
		}
	})
}

// A file without tasks and routes keeps the built-in echo task and route;
// a file with either key replaces both, with a warning naming what goes.
func TestBuiltinTasksAndRoutes(t *testing.T) {
	tests := []struct {
		name          string
		yaml          string
		tasks, routes int
		warning       string // "" for none
	}{
		{name: "neither key", yaml: "log: {level: debug}\n", tasks: 1, routes: 1},
		{name: "empty file", yaml: "", tasks: 1, routes: 1},
		{
			name: "own tasks", yaml: "log: {level: debug}\ntasks: [{name: a, module: builtin:echo}]\n", tasks: 1,
			warning: "x.yaml:2: warning: tasks: this file's tasks and routes replace the built-in ones, so task echo and route devices/+/in → echo no longer run",
		},
		{
			name: "only routes", yaml: "tasks:\n  - {name: echo, module: builtin:echo}\nroutes: []\n", tasks: 1,
			warning: "x.yaml:1: warning: tasks: this file's tasks and routes replace the built-in ones, so route devices/+/in → echo no longer run",
		},
		{
			name: "empty lists", yaml: "\nroutes: []\n", tasks: 0,
			warning: "x.yaml:2: warning: routes: this file's tasks and routes replace the built-in ones, so task echo and route devices/+/in → echo no longer run",
		},
		{
			name: "built-ins listed", yaml: "tasks: [{name: echo, module: builtin:echo}, {name: b, module: builtin:echo}]\nroutes: [{topic: devices/+/in, task: echo, reply: 'devices/{1}/out'}]\n",
			tasks: 2, routes: 1,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Parse([]byte(tt.yaml), "x.yaml")
			if err != nil {
				t.Fatal(err)
			}
			if len(c.Tasks) != tt.tasks || len(c.Routes) != tt.routes {
				t.Errorf("%d tasks, %d routes; want %d, %d", len(c.Tasks), len(c.Routes), tt.tasks, tt.routes)
			}
			switch {
			case tt.warning == "" && len(c.Warnings) > 0:
				t.Errorf("unexpected warnings: %v", c.Warnings)
			case tt.warning != "" && (len(c.Warnings) != 1 || !strings.HasPrefix(c.Warnings[0].String(), tt.warning)):
				t.Errorf("warnings %v\nwant %s…", c.Warnings, tt.warning)
			}
		})
	}
}

// A task with only native artifacts (no module) is valid: it runs in the
// process environment. Without artifacts, or with what only a wasm module
// uses, the problems name the task and the key.
func TestProcessOnlyTasks(t *testing.T) {
	exe := filepath.Join(t.TempDir(), "nat")
	if err := os.WriteFile(exe, []byte("#!/bin/sh\ncat\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Run("valid", func(t *testing.T) {
		cfg, err := Parse([]byte("tasks:\n  - name: nat\n    artifacts: [{arch: amd64, executable: "+exe+"}]\n"), "x.yaml")
		if err != nil {
			t.Fatal(err)
		}
		if got := cfg.Tasks[0]; got.Module != "" || len(got.Artifacts) != 1 || got.Artifacts[0] != (tasks.Artifact{Env: "process", OS: "linux", Arch: "amd64", Executable: exe}) {
			t.Errorf("task %+v", got)
		}
	})
	for _, tc := range []struct {
		name, yaml string
		want       []string
	}{
		{"no module, no artifacts", "tasks:\n  - name: nat\n    limits: {timeout: 1s}\n",
			[]string{`x.yaml:2: tasks[0].module: task "nat" needs a module (a .wasm file or builtin:NAME) or a process artifact`}},
		{"libraries and fresh_instance without a module", "tasks:\n  - name: nat\n    fresh_instance: true\n    libraries: [{name: lib, module: " + exe + "}]\n    artifacts: [{arch: arm64, executable: " + exe + "}]\n",
			[]string{
				`x.yaml:3: tasks[0].fresh_instance: task "nat" has no module to instantiate`,
				`x.yaml:4: tasks[0].libraries: task "nat" has no module to import them`,
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.yaml), "x.yaml")
			var ps Problems
			if !errors.As(err, &ps) {
				t.Fatalf("want Problems, got %v", err)
			}
			if len(ps) != len(tc.want) {
				t.Fatalf("want %d problems, got %d:\n%v", len(tc.want), len(ps), err)
			}
			for i, w := range tc.want {
				if !strings.HasPrefix(ps[i].String(), w) {
					t.Errorf("problem %d:\n got %s\nwant %s…", i, ps[i], w)
				}
			}
		})
	}
}

// Task labels are checked by key and value, and named by file and line.
func TestTaskLabels(t *testing.T) {
	_, err := Parse([]byte("tasks:\n  - name: t\n    module: builtin:echo\n    labels: {\"bad key\": x, tier: batch, long: "+strings.Repeat("v", 254)+"}\n"), "l.yaml")
	for _, want := range []string{`l.yaml:4: tasks[0].labels: key "bad key": want 1 to 63 letters`, `l.yaml:4: tasks[0].labels: long: value of 254 bytes, at most 253`} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v, want it to contain %q", err, want)
		}
	}
	c, err := Parse([]byte("tasks:\n  - name: t\n    module: builtin:echo\n    labels: {tier: batch, site/zone: north-1}\n"), "ok.yaml")
	if err != nil || c.Tasks[0].Labels["site/zone"] != "north-1" {
		t.Fatalf("valid labels: %v %+v", err, c)
	}
}

// Route labels are checked like task labels, and a route to the cloud,
// which makes no call, takes none.
func TestRouteLabels(t *testing.T) {
	_, err := Parse([]byte("cloud: {url: \"http://127.0.0.1:8480\"}\ntasks: [{name: t, module: builtin:echo}]\nroutes:\n  - {topic: a/+, task: t, labels: {\"x y\": v}}\n  - {topic: b, cloud: true, labels: {tier: batch}}\n"), "r.yaml")
	for _, want := range []string{`r.yaml:4: routes[0].labels: key "x y": want 1 to 63 letters`, `r.yaml:5: routes[1].labels: a route to the cloud makes no call to label`} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v, want it to contain %q", err, want)
		}
	}
	c, err := Parse([]byte("tasks: [{name: t, module: builtin:echo}]\nroutes: [{topic: a/+, task: t, labels: {origin: sensor}}]\n"), "ok.yaml")
	if err != nil || c.Routes[0].Labels["origin"] != "sensor" {
		t.Fatalf("valid route labels: %v %+v", err, c)
	}
}
