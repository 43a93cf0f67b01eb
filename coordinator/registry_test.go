package coordinator

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
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

// A config's warnings (here: the file's tasks replace the built-in echo
// task and route) are logged when the daemon starts.
func TestConfigWarningsLogged(t *testing.T) {
	cfg := testConfig(t)
	if len(cfg.Warnings) != 1 {
		t.Fatalf("want one warning for the replaced built-in route, got %v", cfg.Warnings)
	}
	var buf bytes.Buffer // the handler serializes writes; read once Run has returned
	c := New(cfg, slog.New(slog.NewTextHandler(&buf, nil)), "test")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx, nil) }()
	<-c.Ready()
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if want := `level=WARN msg="config warning" warning="test.yaml:4: warning: tasks: this file's tasks and routes replace the built-in ones, so route devices/+/in → echo no longer run`; !strings.Contains(buf.String(), want) {
		t.Errorf("log lacks %s:\n%s", want, buf.String())
	}
}
