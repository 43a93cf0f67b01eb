// Package deb tests the Debian package that scripts/release.sh builds with
// nfpm from nfpm.yaml and the maintainer scripts beside it.
package deb

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/coordinator/admin"
	"github.com/outpost-edge/outpost/devices/mqtttest"
	"github.com/outpost-edge/outpost/internal/syncbuf"
	"github.com/outpost-edge/outpost/internal/wasmtest"
)

// release runs scripts/release.sh for this host's architecture with
// version and returns the .deb it wrote.
func release(t *testing.T, version string) string {
	t.Helper()
	arch := map[string]string{"amd64": "amd64", "arm64": "arm64", "arm": "armv7"}[runtime.GOARCH]
	if arch == "" {
		t.Fatalf("release.sh builds no package for %s", runtime.GOARCH)
	}
	out := t.TempDir()
	cmd := exec.Command("../release.sh", "--arch", arch, "--out", out)
	cmd.Env = append(os.Environ(), "VERSION="+version)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("release.sh %s: %v\n%s", version, err, b)
	}
	debs, _ := filepath.Glob(filepath.Join(out, "*.deb"))
	if len(debs) != 1 {
		t.Fatalf("release.sh %s wrote %v, want one .deb", version, debs)
	}
	return debs[0]
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %v: %v\n%s", name, args, err, out)
	}
	return string(out)
}

// TestPackage builds the .deb of two versions, inspects the first with
// dpkg-deb (control fields, conffiles, maintainer scripts, files and
// modes, the stamped binary, the unit and config as packaged) and, as
// root, installs it with dpkg -i inside a private mount namespace whose
// /etc, /usr and /var are overlays of the host's (the host is untouched):
// user, permissions, enabled unit verified by systemd-analyze, a daemon
// run as the outpost user with a deployed task; the upgrade to the second
// version keeps the edited config and the data dir (the task is still
// deployed); remove keeps config and data; purge leaves nothing.
func TestPackage(t *testing.T) {
	if testing.Short() {
		t.Skip("builds two releases (about a minute with a warm build cache): not in -short")
	}
	deb1, deb2 := release(t, "v1.0.0"), release(t, "v1.0.1-rc.1")
	if !strings.HasPrefix(filepath.Base(deb2), "outpost_1.0.1~rc.1_") {
		t.Errorf("pre-release package name %s: want the version 1.0.1~rc.1", deb2)
	}

	info := run(t, "dpkg-deb", "--info", deb1)
	for _, want := range []string{"Package: outpost\n", "Version: 1.0.0\n", "Section: net\n", "conffiles", "postinst", "prerm", "postrm"} {
		if !strings.Contains(info, want) {
			t.Errorf("dpkg-deb --info lacks %q:\n%s", want, info)
		}
	}
	debArch := map[string]string{"amd64": "amd64", "arm64": "arm64", "arm": "armhf"}[runtime.GOARCH]
	if got := strings.TrimSpace(run(t, "dpkg-deb", "--field", deb1, "Architecture")); got != debArch {
		t.Errorf("Architecture %q, want %q", got, debArch)
	}
	contents := run(t, "dpkg-deb", "--contents", deb1)
	for _, want := range []string{
		"-rwxr-xr-x root/root", "./usr/bin/outpost\n",
		"-rw-r--r-- root/root", "./usr/lib/systemd/system/outpost.service\n",
		"drwxr-x--- root/root", "./etc/outpost/\n",
		"-rw-r----- root/root", "./etc/outpost/outpost.yaml\n",
	} {
		if !strings.Contains(contents, want) {
			t.Errorf("dpkg-deb --contents lacks %q:\n%s", want, contents)
		}
	}
	x := t.TempDir()
	run(t, "dpkg-deb", "--extract", deb1, x)
	commit := strings.TrimSpace(run(t, "git", "rev-parse", "HEAD"))
	if v := run(t, filepath.Join(x, "usr/bin/outpost"), "version"); !strings.HasPrefix(v, "outpost v1.0.0\ncommit: "+commit+"\nbuilt: 20") {
		t.Errorf("the packaged binary's version:\n%s", v)
	}
	unit, err := os.ReadFile(filepath.Join(x, "usr/lib/systemd/system/outpost.service"))
	if err != nil || !strings.Contains(string(unit), "\nExecStart=/usr/bin/outpost run --config /etc/outpost/outpost.yaml --data-dir /var/lib/outpost\n") {
		t.Errorf("packaged unit: %v\n%s", err, unit)
	}
	cfg, err := os.ReadFile(filepath.Join(x, "etc/outpost/outpost.yaml"))
	if err != nil || !strings.Contains(string(cfg), "\ndata_dir: /var/lib/outpost\n") {
		t.Errorf("packaged config: %v", err)
	}

	if os.Geteuid() != 0 {
		t.Skip("installing the package in a mount namespace needs root")
	}
	ns := newMountNS(t)
	ns.run(t, "dpkg", "-i", deb1)
	if got := ns.run(t, "getent", "passwd", "outpost"); !strings.Contains(got, ":/var/lib/outpost:/usr/sbin/nologin") {
		t.Errorf("the outpost user: %s", got)
	}
	for path, want := range map[string]string{
		"/etc/outpost":              "root:outpost 750",
		"/etc/outpost/outpost.yaml": "root:outpost 640",
		"/var/lib/outpost":          "outpost:outpost 750",
		"/usr/bin/outpost":          "root:root 755",
	} {
		if got := strings.TrimSpace(ns.run(t, "stat", "-c", "%U:%G %a", path)); got != want {
			t.Errorf("%s: %s, want %s", path, got, want)
		}
	}
	if got := ns.run(t, "readlink", "/etc/systemd/system/multi-user.target.wants/outpost.service"); !strings.HasSuffix(strings.TrimSpace(got), "/systemd/system/outpost.service") {
		t.Errorf("the unit is not enabled: %q", got)
	}
	ns.run(t, "systemd-analyze", "verify", "/usr/lib/systemd/system/outpost.service")

	// The operator's edit of the config (free ports for the test) and a
	// daemon run as the unit runs it, with a deployed task.
	adminAddr, brokerAddr := mqtttest.FreeAddr(t), mqtttest.FreeAddr(t)
	ns.run(t, "sed", "-i", "-e", "s/^  listen: 127.0.0.1:7700$/  listen: "+adminAddr+"/", "-e", "s/^    listen: 127.0.0.1:1883$/    listen: "+brokerAddr+"/", "/etc/outpost/outpost.yaml")
	edited := ns.run(t, "cat", "/etc/outpost/outpost.yaml")
	if !strings.Contains(edited, adminAddr) || !strings.Contains(edited, brokerAddr) {
		t.Fatalf("the config edit did not apply:\n%s", edited)
	}
	upper := wasmtest.WAT(t, filepath.Join("..", "..", "examples", "tasks", "wat", "upper.wat"), "")
	d := ns.daemon(t, adminAddr)
	if v := d.health(t).Version; v != "v1.0.0" {
		t.Errorf("health version %q", v)
	}
	ns.run(t, "/usr/bin/outpost", "task", "deploy", "svc", upper, "--config", "/etc/outpost/outpost.yaml")
	d.call(t, "svc", "hello", "HELLO")
	d.stop(t)

	// Upgrade: the edited config and the data dir are kept.
	ns.run(t, "dpkg", "-i", deb2)
	if got := ns.run(t, "cat", "/etc/outpost/outpost.yaml"); got != edited {
		t.Error("the upgrade changed the edited config")
	}
	d = ns.daemon(t, adminAddr)
	if v := d.health(t).Version; v != "v1.0.1-rc.1" {
		t.Errorf("health version after the upgrade %q", v)
	}
	d.call(t, "svc", "kept", "KEPT")
	d.stop(t)

	// Remove keeps config and data; purge deletes them.
	ns.run(t, "dpkg", "-r", "outpost")
	if got := ns.run(t, "dpkg-query", "-W", "-f", "${db:Status-Status}", "outpost"); got != "config-files" {
		t.Errorf("after dpkg -r: status %q", got)
	}
	for path, exists := range map[string]bool{"/usr/bin/outpost": false, "/usr/lib/systemd/system/outpost.service": false, "/etc/outpost/outpost.yaml": true, "/var/lib/outpost/admin.token": true} {
		if got := ns.exists(t, path); got != exists {
			t.Errorf("after dpkg -r: %s exists %v, want %v", path, got, exists)
		}
	}
	ns.run(t, "dpkg", "-P", "outpost")
	if out, err := ns.cmd("dpkg-query", "-W", "outpost").CombinedOutput(); err == nil {
		t.Errorf("after dpkg -P the package is still known: %s", out)
	}
	for _, path := range []string{"/etc/outpost", "/var/lib/outpost", "/etc/systemd/system/multi-user.target.wants/outpost.service"} {
		if ns.exists(t, path) {
			t.Errorf("after dpkg -P: %s is left", path)
		}
	}
}

// mountNS is a private mount namespace (held by a sleep the test starts)
// where /etc, /usr and /var are overlays of the host's, writes going to a
// temporary directory.
type mountNS struct {
	pid int
}

func newMountNS(t *testing.T) *mountNS {
	t.Helper()
	hold := exec.Command("unshare", "--mount", "--propagation", "private", "sleep", "infinity")
	if err := hold.Start(); err != nil {
		t.Fatalf("unshare: %v", err)
	}
	t.Cleanup(func() { _ = hold.Process.Kill(); _ = hold.Wait() })
	ns := &mountNS{pid: hold.Process.Pid}
	// unshare has made the namespace once sleep runs in it.
	deadline := time.Now().Add(10 * time.Second)
	for {
		self, _ := os.Readlink("/proc/self/ns/mnt")
		theirs, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/mnt", ns.pid))
		comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", ns.pid))
		if theirs != "" && theirs != self && strings.TrimSpace(string(comm)) == "sleep" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("unshare made no mount namespace")
		}
		time.Sleep(10 * time.Millisecond)
	}
	layers := t.TempDir()
	for _, dir := range []string{"/etc", "/usr", "/var"} {
		up, work := filepath.Join(layers, dir, "upper"), filepath.Join(layers, dir, "work")
		for _, d := range []string{up, work} {
			if err := os.MkdirAll(d, 0o755); err != nil {
				t.Fatal(err)
			}
		}
		ns.run(t, "mount", "-t", "overlay", "overlay", "-o", "lowerdir="+dir+",upperdir="+up+",workdir="+work, dir)
	}
	return ns
}

func (ns *mountNS) cmd(name string, args ...string) *exec.Cmd {
	return exec.Command("nsenter", append([]string{"--target", fmt.Sprint(ns.pid), "--mount", "--", name}, args...)...)
}

func (ns *mountNS) run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := ns.cmd(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("in the namespace: %s %v: %v\n%s", name, args, err, out)
	}
	return string(out)
}

func (ns *mountNS) exists(t *testing.T, path string) bool {
	t.Helper()
	return ns.cmd("test", "-e", path).Run() == nil
}

// nsDaemon is outpost run as the unit runs it, as the outpost user, in the
// namespace.
type nsDaemon struct {
	cmd    *exec.Cmd
	admin  *admin.Client
	logs   *syncbuf.Buffer
	exited chan struct{}
}

func (ns *mountNS) daemon(t *testing.T, addr string) *nsDaemon {
	t.Helper()
	d := &nsDaemon{logs: &syncbuf.Buffer{}, exited: make(chan struct{})}
	d.cmd = ns.cmd("setpriv", "--reuid=outpost", "--regid=outpost", "--init-groups", "/usr/bin/outpost", "run", "--config", "/etc/outpost/outpost.yaml", "--data-dir", "/var/lib/outpost")
	d.cmd.Dir = "/"
	d.cmd.Stdout, d.cmd.Stderr = d.logs, d.logs
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = d.cmd.Wait(); close(d.exited) }()
	t.Cleanup(func() {
		_ = d.cmd.Process.Kill()
		<-d.exited
		if t.Failed() {
			t.Logf("outpost logs:\n%s", d.logs.String())
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		h, err := admin.Dial(admin.ClientOptions{Addr: addr})
		if err == nil {
			_, err = h.Health(ctx)
		}
		cancel()
		if err == nil {
			// The token as the daemon's user reads it, copied out of the
			// namespace.
			tok := filepath.Join(t.TempDir(), "admin.token")
			if err := os.WriteFile(tok, []byte(ns.run(t, "cat", "/var/lib/outpost/admin.token")), 0o600); err != nil {
				t.Fatal(err)
			}
			if d.admin, err = admin.Dial(admin.ClientOptions{Addr: addr, TokenFile: tok}); err != nil {
				t.Fatal(err)
			}
			return d
		}
		select {
		case <-d.exited:
			t.Fatal("outpost exited before it was ready")
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("outpost not ready after 30s: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (d *nsDaemon) health(t *testing.T) admin.Health {
	t.Helper()
	h, err := d.admin.Health(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func (d *nsDaemon) call(t *testing.T, task, in, want string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, err := d.admin.Call(ctx, task, []byte(in), admin.CallOptions{})
	if err != nil || string(out.Output) != want {
		t.Errorf("call %s: %q %v, want %q", task, out.Output, err, want)
	}
}

func (d *nsDaemon) stop(t *testing.T) {
	t.Helper()
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.exited:
	case <-time.After(60 * time.Second):
		t.Fatal("outpost did not stop within 60s of SIGTERM")
	}
}
