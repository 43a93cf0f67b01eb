package coordinator

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/outpost-edge/outpost/configs"
	"github.com/outpost-edge/outpost/coordinator/admin"
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

// The daemon decodes a deployed manifest with the config's strict decoder:
// a typo is refused as invalid with its line and key, never with Go type
// names.
func TestDeployManifestProblems(t *testing.T) {
	c := startCoordinator(t, testConfig(t))
	_, err := c.Deploy(context.Background(), "x", admin.Upload{Manifest: []byte("abi: reactor\nlimits: {timout: 5s}\n")})
	if !errors.Is(err, admin.ErrInvalid) || !strings.Contains(err.Error(), `manifest:2: limits.timout: unknown key "timout"`) || strings.Contains(err.Error(), "not found in type") {
		t.Fatalf("deploy: %v", err)
	}
}
