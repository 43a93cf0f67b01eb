package coordinator

import (
	"testing"

	"github.com/outpost-edge/outpost/configs"
	"github.com/outpost-edge/outpost/coordinator/tasks"
)

func TestManifestTaskSettings(t *testing.T) {
	m, err := configs.ParseManifest([]byte("fresh_instance: true\nlimits: {timeout: 2s}\n"), "manifest")
	if err != nil {
		t.Fatal(err)
	}
	if !m.FreshInstance {
		t.Fatal("fresh_instance not decoded")
	}
	specs := taskSpecs([]tasks.Task{{Name: "a", Module: "builtin:echo", Limits: m.Limits, FreshInstance: m.FreshInstance}})
	if !specs[0].FreshInstance {
		t.Fatal("fresh_instance not passed to the runtime")
	}
	if _, err := configs.ParseManifest([]byte("fresh: true\n"), "manifest"); err == nil {
		t.Fatal("unknown manifest key accepted")
	}
}
