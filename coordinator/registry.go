package coordinator

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/outpost-edge/outpost/coordinator/admin"
	"github.com/outpost-edge/outpost/coordinator/config"
	outpostrt "github.com/outpost-edge/outpost/runtime"
)

// Deployed tasks (issue 3): tasks added at run time through the admin API,
// living in one registry with the config file's tasks. Each deployed task
// keeps its last versions in the state store (bucket "tasks", key the task
// name, value a JSON deployment); module bytes are content-addressed blobs
// under <data_dir>/blobs/sha256/. Every change builds the whole task set
// (config tasks + deployed tasks), loads it (compile and warm; unchanged
// tasks keep their warm pools), persists the registry, then activates the
// set: calls in flight finish on the old version, new calls get the new one.
// Changes are serialized by Coordinator.reloadMu.

// maxVersions is how many versions of a deployed task are kept for rollback.
const maxVersions = 5

// Manifest describes a deployed task's settings: the keys of a config task
// besides name and module.
type Manifest struct {
	ABI         string             `yaml:"abi" json:"abi"`
	Limits      config.Limits      `yaml:"limits" json:"limits"`
	Permissions config.Permissions `yaml:"permissions" json:"permissions"`
	// FreshInstance: a new instance per call (config key fresh_instance).
	FreshInstance bool `yaml:"fresh_instance" json:"fresh_instance,omitempty"`
}

// deployment is one deployed task with its versions, oldest first; the
// last one runs.
type deployment struct {
	Name     string    `json:"name"`
	Versions []version `json:"versions"`
}

type version struct {
	Digest   string    `json:"digest"` // sha256 of the module, hex
	Size     int       `json:"size"`
	Manifest Manifest  `json:"manifest"`
	Deployed time.Time `json:"deployed"`
}

func (d *deployment) current() version { return d.Versions[len(d.Versions)-1] }

var deployNameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9_.-]{0,62}$`)

// parseManifest decodes a YAML (or JSON) manifest strictly and applies the
// task defaults.
func parseManifest(b []byte) (Manifest, error) {
	var m Manifest
	if len(bytes.TrimSpace(b)) > 0 {
		dec := yaml.NewDecoder(bytes.NewReader(b))
		dec.KnownFields(true)
		if err := dec.Decode(&m); err != nil {
			return m, fmt.Errorf("manifest: %w", err)
		}
	}
	if m.ABI == "" {
		m.ABI = config.TaskDefaults.ABI
	}
	if m.Limits.Memory == 0 {
		m.Limits.Memory = config.TaskDefaults.Limits.Memory
	}
	if m.Limits.Timeout == 0 {
		m.Limits.Timeout = config.TaskDefaults.Limits.Timeout
	}
	if m.Limits.Concurrency == 0 {
		m.Limits.Concurrency = config.TaskDefaults.Limits.Concurrency
	}
	m.Limits.ApplyDefaults()
	return m, nil
}

func (c *Coordinator) blobPath(digest string) string {
	return filepath.Join(c.cfg.Load().DataDir, "blobs", "sha256", digest+".wasm")
}

// writeBlob stores module under its digest (once) and returns the digest.
func (c *Coordinator) writeBlob(module []byte) (string, error) {
	sum := sha256.Sum256(module)
	digest := hex.EncodeToString(sum[:])
	path := c.blobPath(digest)
	if _, err := os.Stat(path); err == nil {
		return digest, nil
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return "", fmt.Errorf("create blob dir: %w", err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".upload-*")
	if err != nil {
		return "", fmt.Errorf("store module: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(module); err != nil {
		tmp.Close()
		return "", fmt.Errorf("store module: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return "", fmt.Errorf("store module: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return "", fmt.Errorf("store module: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return "", fmt.Errorf("store module: %w", err)
	}
	return digest, nil
}

// deployments returns the registry (never nil).
func (c *Coordinator) deployments() map[string]*deployment {
	if m := c.deployed.Load(); m != nil {
		return *m
	}
	return map[string]*deployment{}
}

// loadDeployments reads the registry from the state store.
func (c *Coordinator) loadDeployments(ctx context.Context) error {
	m := map[string]*deployment{}
	err := c.db.Bucket("tasks").Scan(ctx, nil, func(k, v []byte) error {
		d := &deployment{}
		if err := json.Unmarshal(v, d); err != nil || len(d.Versions) == 0 {
			c.log.Error("ignoring a bad deployed task record", "key", string(k), "err", err)
			return nil
		}
		m[d.Name] = d
		return nil
	})
	if err != nil {
		return fmt.Errorf("read deployed tasks: %w", err)
	}
	c.deployed.Store(&m)
	return nil
}

// taskSpecs turns config tasks into runtime specs.
func taskSpecs(ts []config.Task) []outpostrt.Spec {
	specs := make([]outpostrt.Spec, len(ts))
	for i, t := range ts {
		specs[i] = outpostrt.Spec{
			Name: t.Name, Module: t.Module, ABI: t.ABI,
			MemoryLimit: uint64(t.Limits.Memory), Timeout: t.Limits.Timeout.Std(), Concurrency: t.Limits.Concurrency,
			MaxInput: uint64(t.Limits.MaxInput), MaxOutput: uint64(t.Limits.MaxOutput),
			Permissions: outpostrt.Permissions{Publish: t.Permissions.Publish, Call: t.Permissions.Call, KVQuota: uint64(t.Permissions.KVQuota),
				Telemetry: t.Permissions.Telemetry},
			FreshInstance: t.FreshInstance,
		}
		for _, l := range t.Libraries {
			specs[i].Libraries = append(specs[i].Libraries, outpostrt.Library{Name: l.Name, Module: l.Module})
		}
		for _, f := range t.Files {
			specs[i].Files = append(specs[i].Files, outpostrt.File{Path: f.Path, Source: f.Source})
		}
	}
	return specs
}

// allSpecs is the whole task set: the config's tasks, then deployed tasks
// (a deployed task named like a config task is skipped: the config wins).
func (c *Coordinator) allSpecs(tasks []config.Task, deps map[string]*deployment) []outpostrt.Spec {
	specs := taskSpecs(tasks)
	inConfig := make(map[string]bool, len(tasks))
	for _, t := range tasks {
		inConfig[t.Name] = true
	}
	names := make([]string, 0, len(deps))
	for n := range deps {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		if inConfig[n] {
			c.log.Warn("deployed task shadowed by a config task of the same name", "task", n)
			continue
		}
		v := deps[n].current()
		specs = append(specs, taskSpecs([]config.Task{{
			Name: n, Module: c.blobPath(v.Digest), ABI: v.Manifest.ABI,
			Limits: v.Manifest.Limits, Permissions: v.Manifest.Permissions,
			FreshInstance: v.Manifest.FreshInstance,
		}})...)
	}
	return specs
}

// swap loads the task set with deps as the registry, persists the changed
// entry (nil d deletes name), and activates the set. reloadMu is held.
func (c *Coordinator) swap(ctx context.Context, deps map[string]*deployment, name string, d *deployment) error {
	set, err := c.engine.Load(ctx, c.allSpecs(c.cfg.Load().Tasks, deps))
	if err != nil {
		return fmt.Errorf("%w: %v", admin.ErrInvalid, err)
	}
	b := c.db.Bucket("tasks")
	if d == nil {
		err = b.Delete([]byte(name))
	} else {
		var v []byte
		v, err = json.Marshal(d)
		if err == nil {
			err = b.Put([]byte(name), v)
		}
	}
	if err == nil {
		err = c.db.Sync()
	}
	if err != nil {
		set.Close()
		return fmt.Errorf("persist task %s: %w", name, err)
	}
	c.deployed.Store(&deps)
	c.engine.Activate(set)
	return nil
}

func (c *Coordinator) isConfigTask(name string) bool {
	for _, t := range c.cfg.Load().Tasks {
		if t.Name == name {
			return true
		}
	}
	return false
}

func copyDeps(m map[string]*deployment) map[string]*deployment {
	out := make(map[string]*deployment, len(m)+1)
	for k, v := range m {
		out[k] = v
	}
	return out
}

// Deploy implements admin.Registry: it adds a task or a new version of one.
func (c *Coordinator) Deploy(ctx context.Context, name string, module, manifest []byte) (admin.TaskDetail, error) {
	switch {
	case !deployNameRE.MatchString(name):
		return admin.TaskDetail{}, fmt.Errorf("%w: %q is not a task name (lower case letters, digits, '_', '.', '-'; at most 63)", admin.ErrInvalid, name)
	case c.isConfigTask(name):
		return admin.TaskDetail{}, fmt.Errorf("%w: task %q is defined in the config file %s; change it there", admin.ErrConflict, name, c.cfg.Load().Source)
	case len(module) == 0:
		return admin.TaskDetail{}, fmt.Errorf("%w: no module", admin.ErrInvalid)
	}
	m, err := parseManifest(manifest)
	if err != nil {
		return admin.TaskDetail{}, fmt.Errorf("%w: %v", admin.ErrInvalid, err)
	}
	c.reloadMu.Lock()
	defer c.reloadMu.Unlock()
	digest, err := c.writeBlob(module)
	if err != nil {
		return admin.TaskDetail{}, err
	}
	deps := copyDeps(c.deployments())
	d := &deployment{Name: name}
	if old := deps[name]; old != nil {
		d.Versions = append(d.Versions, old.Versions...)
	}
	d.Versions = append(d.Versions, version{Digest: digest, Size: len(module), Manifest: m, Deployed: time.Now().UTC()})
	if len(d.Versions) > maxVersions {
		d.Versions = d.Versions[len(d.Versions)-maxVersions:]
	}
	deps[name] = d
	if err := c.swap(ctx, deps, name, d); err != nil {
		return admin.TaskDetail{}, err
	}
	c.log.Info("task deployed", "task", name, "digest", digest, "version", len(d.Versions))
	detail, _ := c.Inspect(name)
	return detail, nil
}

// Remove implements admin.Registry.
func (c *Coordinator) Remove(ctx context.Context, name string) error {
	c.reloadMu.Lock()
	defer c.reloadMu.Unlock()
	deps := copyDeps(c.deployments())
	if deps[name] == nil {
		if c.isConfigTask(name) {
			return fmt.Errorf("%w: task %q is defined in the config file; remove it there", admin.ErrConflict, name)
		}
		return fmt.Errorf("%w: no deployed task %q", admin.ErrNotFound, name)
	}
	delete(deps, name)
	if err := c.swap(ctx, deps, name, nil); err != nil {
		return err
	}
	c.log.Info("task removed", "task", name)
	return nil
}

// Rollback implements admin.Registry: the previous version runs again.
func (c *Coordinator) Rollback(ctx context.Context, name string) (admin.TaskDetail, error) {
	c.reloadMu.Lock()
	defer c.reloadMu.Unlock()
	deps := copyDeps(c.deployments())
	old := deps[name]
	switch {
	case old == nil:
		return admin.TaskDetail{}, fmt.Errorf("%w: no deployed task %q", admin.ErrNotFound, name)
	case len(old.Versions) < 2:
		return admin.TaskDetail{}, fmt.Errorf("%w: task %q has no previous version", admin.ErrConflict, name)
	}
	d := &deployment{Name: name, Versions: old.Versions[:len(old.Versions)-1]}
	deps[name] = d
	if err := c.swap(ctx, deps, name, d); err != nil {
		return admin.TaskDetail{}, err
	}
	c.log.Info("task rolled back", "task", name, "digest", d.current().Digest)
	detail, _ := c.Inspect(name)
	return detail, nil
}

// Inspect implements admin.Registry.
func (c *Coordinator) Inspect(name string) (admin.TaskDetail, bool) {
	var det admin.TaskDetail
	found := false
	for _, t := range c.Tasks() {
		if t.Name == name {
			det.Task, found = t, true
		}
	}
	if d := c.deployments()[name]; d != nil {
		for i, v := range d.Versions {
			det.Versions = append(det.Versions, admin.TaskVersion{
				Version: i + 1, Digest: v.Digest, Size: v.Size, Deployed: v.Deployed,
				ABI: v.Manifest.ABI, MemoryLimit: uint64(v.Manifest.Limits.Memory),
				Timeout: v.Manifest.Limits.Timeout.Std().Seconds(), Concurrency: v.Manifest.Limits.Concurrency,
				Publish: v.Manifest.Permissions.Publish, Call: v.Manifest.Permissions.Call, KVQuota: uint64(v.Manifest.Permissions.KVQuota),
			})
		}
	}
	return det, found
}
