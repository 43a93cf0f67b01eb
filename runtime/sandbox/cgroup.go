package sandbox

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// Memory limits in a cgroup: each run gets a memory cgroup of its own
// (v1: under the memory controller's hierarchy; v2: under the unified
// one) with the task's limit and no swap; the process is killed by the
// kernel past it, and the cgroup's oom_kill count tells the call's
// memory failure from other deaths. Where no memory cgroup can be made,
// the limit is RLIMIT_DATA instead (see Runner.Run).

// cgroupParent names the cgroup every run's cgroup is made in.
const cgroupParent = "outpost-sandbox"

var cgroupSeq atomic.Uint64

// memCgroup is one run's memory cgroup.
type memCgroup struct {
	dir string
	v2  bool
}

// findCgroupRoot returns the memory hierarchy's root: root when given,
// else the v1 memory controller's mount or the v2 unified mount with the
// memory controller; "" when there is none.
func findCgroupRoot(root string) (dir string, v2 bool) {
	if root != "" {
		_, err := os.Stat(filepath.Join(root, "cgroup.controllers"))
		return root, err == nil
	}
	if _, err := os.Stat("/sys/fs/cgroup/memory/memory.limit_in_bytes"); err == nil {
		return "/sys/fs/cgroup/memory", false
	}
	if b, err := os.ReadFile("/sys/fs/cgroup/cgroup.controllers"); err == nil && strings.Contains(" "+string(b)+" ", " memory ") {
		return "/sys/fs/cgroup", true
	}
	return "", false
}

// newMemCgroup makes a cgroup under root limited to limit bytes.
func newMemCgroup(root string, v2 bool, limit uint64) (*memCgroup, error) {
	parent := filepath.Join(root, cgroupParent)
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return nil, err
	}
	if v2 { // the parent must hand the memory controller down
		_ = os.WriteFile(filepath.Join(parent, "cgroup.subtree_control"), []byte("+memory"), 0)
	}
	cg := &memCgroup{dir: filepath.Join(parent, fmt.Sprintf("run-%d-%d", os.Getpid(), cgroupSeq.Add(1))), v2: v2}
	if err := os.Mkdir(cg.dir, 0o755); err != nil {
		return nil, err
	}
	lim := strconv.FormatUint(limit, 10)
	var err error
	if v2 {
		err = cg.write("memory.max", lim)
		if err == nil {
			err = cg.write("memory.swap.max", "0")
			if errors.Is(err, os.ErrNotExist) { // no swap accounting: no swap to limit
				err = nil
			}
		}
	} else {
		err = cg.write("memory.limit_in_bytes", lim)
		if err == nil {
			if werr := cg.write("memory.memsw.limit_in_bytes", lim); werr != nil && !errors.Is(werr, os.ErrNotExist) {
				err = werr
			}
		}
	}
	if err != nil {
		cg.remove()
		return nil, err
	}
	return cg, nil
}

// sweepCgroups removes the run cgroups under root left by daemons that
// died (killed during a run): those whose pid is gone. The kernel refuses
// to remove one that still has processes.
func sweepCgroups(root string) {
	dirs, _ := filepath.Glob(filepath.Join(root, cgroupParent, "run-*"))
	for _, d := range dirs {
		pid, _, _ := strings.Cut(strings.TrimPrefix(filepath.Base(d), "run-"), "-")
		if _, err := os.Stat(filepath.Join("/proc", pid)); errors.Is(err, os.ErrNotExist) {
			_ = os.Remove(d)
		}
	}
}

func (cg *memCgroup) write(file, v string) error {
	return os.WriteFile(filepath.Join(cg.dir, file), []byte(v), 0)
}

// procs is the file a process writes its pid to, to join the cgroup.
func (cg *memCgroup) procs() string { return filepath.Join(cg.dir, "cgroup.procs") }

// oomKilled reports whether the kernel killed a process of the cgroup for
// going over its limit.
func (cg *memCgroup) oomKilled() bool {
	file := "memory.oom_control"
	if cg.v2 {
		file = "memory.events"
	}
	f, err := os.Open(filepath.Join(cg.dir, file))
	if err != nil {
		return false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if n, ok := strings.CutPrefix(sc.Text(), "oom_kill "); ok && n != "0" {
			return true
		}
	}
	return false
}

// remove deletes the cgroup once its processes are gone: the kernel
// refuses (EBUSY) while the last ones, killed with the sandbox, are being
// torn down.
func (cg *memCgroup) remove() {
	for range 200 {
		if err := os.Remove(cg.dir); err == nil || errors.Is(err, os.ErrNotExist) {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}
