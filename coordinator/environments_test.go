package coordinator

import (
	"context"
	"log/slog"
	"strings"
	"testing"

	"github.com/outpost-edge/outpost/configs"
	"github.com/outpost-edge/outpost/coordinator/calls"
	"github.com/outpost-edge/outpost/devices/mqtttest"
	"github.com/outpost-edge/outpost/internal/syncbuf"
)

// A rule that fails to evaluate does not match and is logged, also after
// calls whose rules evaluated fine (they do not use up the log's rate).
func TestPlacementEvalErrorLogged(t *testing.T) {
	cfg, err := configs.Parse([]byte("data_dir: "+t.TempDir()+`
admin: {listen: "`+mqtttest.FreeAddr(t)+`"}
mqtt: {broker: {listen: "`+mqtttest.FreeAddr(t)+`"}}
tasks:
  - {name: fine, module: builtin:echo}
  - name: broken
    module: builtin:echo
    placement: [{name: no-such-env, when: "envs['peer:nowhere'].healthy", run: [process]}]
`), "test.yaml")
	if err != nil {
		t.Fatal(err)
	}
	logs := &syncbuf.Buffer{}
	c := startCoordinatorLog(t, cfg, slog.New(slog.NewTextHandler(logs, nil)))
	for _, task := range []string{"fine", "broken"} {
		r, err := c.Call(context.Background(), calls.New(task, []byte("x"), calls.Source{Kind: "test"}))
		if err != nil || !r.OK() || r.Env != "local" || r.Rule != "default" {
			t.Fatalf("%s: %+v %v, want ok in local by the default rule", task, r, err)
		}
	}
	if !strings.Contains(logs.String(), `msg="placement rule failed to evaluate; skipped" task=broken`) || !strings.Contains(logs.String(), "rule no-such-env") {
		t.Errorf("no warning for the rule that failed:\n%s", logs.String())
	}
}
