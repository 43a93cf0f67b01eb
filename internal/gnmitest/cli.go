package gnmitest

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
)

// cliVersion is the openconfig/gnmi release of gnmi_cli: the module's own
// (go.mod), so the module cache already holds it.
const cliVersion = "v0.14.1"

var cli struct {
	once sync.Once
	path string
	err  error
}

// CLI returns openconfig's gnmi_cli, built once per machine into the temp
// dir from the module cache (or the module proxy), so no test depends on a
// gnmi_cli installed by hand. A build is renamed into place whole: test
// processes of other packages may build it at the same time.
func CLI(t testing.TB) string {
	t.Helper()
	cli.once.Do(func() { cli.path, cli.err = buildCLI() })
	if cli.err != nil {
		t.Fatalf("gnmi_cli: %v", cli.err)
	}
	return cli.path
}

func buildCLI() (string, error) {
	out := filepath.Join(os.TempDir(), "outpost-gnmi_cli-"+cliVersion, "gnmi_cli")
	if _, err := os.Stat(out); err == nil {
		return out, nil
	}
	b, err := exec.Command("go", "mod", "download", "-json", "github.com/openconfig/gnmi@"+cliVersion).Output()
	if err != nil {
		return "", fmt.Errorf("go mod download github.com/openconfig/gnmi@%s: %w", cliVersion, err)
	}
	var mod struct{ Dir string }
	if err := json.Unmarshal(b, &mod); err != nil || mod.Dir == "" {
		return "", fmt.Errorf("go mod download github.com/openconfig/gnmi@%s: no module dir in %s", cliVersion, b)
	}
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return "", err
	}
	tmp, err := os.CreateTemp(filepath.Dir(out), "gnmi_cli-*")
	if err != nil {
		return "", err
	}
	tmp.Close()
	defer os.Remove(tmp.Name())
	cmd := exec.Command("go", "build", "-o", tmp.Name(), "./cmd/gnmi_cli")
	cmd.Dir = mod.Dir
	cmd.Env = append(os.Environ(), "GOFLAGS=-mod=mod")
	if o, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/gnmi_cli in %s: %w\n%s", mod.Dir, err, o)
	}
	return out, os.Rename(tmp.Name(), out)
}
