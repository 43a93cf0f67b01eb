package coordinator

import (
	"testing"

	"github.com/outpost-edge/outpost/coordinator/config"
)

func TestManifestTaskSettings(t *testing.T) {
	m, err := parseManifest([]byte("fresh_instance: true\nlimits: {timeout: 2s}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if !m.FreshInstance {
		t.Fatal("fresh_instance not decoded")
	}
	specs := taskSpecs([]config.Task{{Name: "a", Module: "builtin:echo", Limits: m.Limits, FreshInstance: m.FreshInstance}})
	if !specs[0].FreshInstance {
		t.Fatal("fresh_instance not passed to the runtime")
	}
	if _, err := parseManifest([]byte("fresh: true\n")); err == nil {
		t.Fatal("unknown manifest key accepted")
	}
}
