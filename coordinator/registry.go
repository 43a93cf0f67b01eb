package coordinator

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/outpost-edge/outpost/configs"
	"github.com/outpost-edge/outpost/coordinator/admin"
	"github.com/outpost-edge/outpost/coordinator/tasks"
	"github.com/outpost-edge/outpost/internal/cas"
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

// deployment is one deployed task with its versions, oldest first; the
// last one runs.
type deployment struct {
	Name     string    `json:"name"`
	Versions []version `json:"versions"`
}

type version struct {
	Digest    string         `json:"digest"` // sha256 of the module, hex
	Size      int            `json:"size"`
	Manifest  tasks.Manifest `json:"manifest"`
	Libraries []libVersion   `json:"libraries,omitempty"` // Manifest.Libraries' blobs, in order
	Files     []fileBlob     `json:"files,omitempty"`     // Manifest.Files' blobs, in order
	Artifacts []artifactBlob `json:"artifacts,omitempty"` // Manifest.Artifacts' blobs, in order
	Deployed  time.Time      `json:"deployed"`
	// From is "cloud" for a version deployed by a cloud call's code
	// object (cloudfetch.go), "peer" for one a peer's call brought
	// (peers.go); "" for the admin API.
	From string `json:"from,omitempty"`
	// Root is the hex digest of the manifest object a cloud call named
	// (provision.go); "" when the call named the module itself.
	Root string `json:"root,omitempty"`
}

// root is the digest a cloud call names this version by.
func (v version) root() string { return cmp.Or(v.Root, v.Digest) }

// libVersion is a library of a version: its import name and blob.
type libVersion struct {
	Name   string `json:"name"`
	Digest string `json:"digest"`
}

// fileBlob is a data file of a version: its guest path and blob.
type fileBlob struct {
	Path   string `json:"path"`
	Digest string `json:"digest"`
}

// artifactBlob is an artifact of a version: its environment, platform
// and blob (an executable: mode 0750).
type artifactBlob struct {
	Env    string `json:"env"`
	OS     string `json:"os"`
	Arch   string `json:"arch"`
	Digest string `json:"digest"`
	Size   int64  `json:"size"`
}

func (d *deployment) current() version { return d.Versions[len(d.Versions)-1] }

var deployNameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9_.-]{0,62}$`)

func (c *Coordinator) blobPath(digest string) string {
	return filepath.Join(c.cfg.Load().DataDir, "blobs", "sha256", digest+".wasm")
}

// StoreBlob implements admin.Registry: it stores r under its sha256 (once)
// and returns the digest and size, held against blob GC until Deploy or
// Release drops the hold. Errors storing (not reading) wrap
// admin.ErrInternal.
func (c *Coordinator) StoreBlob(_ context.Context, r io.Reader) (string, int64, error) {
	return c.storeBlob(r, "")
}

// storeBlob writes r to a temporary file in the blob directory while
// hashing it, and, when want (hex) is given, refuses other bytes before
// anything is stored; then renames it to its digest. The blob is returned
// held (blobgc.go): the caller drops the hold with releaseBlobs.
func (c *Coordinator) storeBlob(r io.Reader, want string) (string, int64, error) {
	dir := filepath.Dir(c.blobPath("x"))
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return "", 0, fmt.Errorf("%w: create blob dir: %v", admin.ErrInternal, err)
	}
	internal := func(err error) error { return fmt.Errorf("%w: store blob: %v", admin.ErrInternal, err) }
	st, err := cas.Stage(dir, uploadPrefix, r)
	if err != nil {
		if _, ok := errors.AsType[*cas.WriteError](err); ok {
			return "", 0, internal(err)
		}
		return "", 0, err
	}
	defer st.Discard()
	if want != "" && !strings.EqualFold(st.Digest, want) {
		return st.Digest, st.Size, fmt.Errorf("%w: digest sha256:%s, want sha256:%s", errDigestMismatch, st.Digest, want)
	}
	if c.holdBlob(st.Digest) {
		return st.Digest, st.Size, nil
	}
	if err := st.Sync(); err != nil {
		return "", st.Size, internal(err)
	}
	if err := c.renameHeld(st, st.Digest); err != nil {
		return "", st.Size, internal(err)
	}
	return st.Digest, st.Size, nil
}

// Pinned URLs: a manifest reference "https://HOST/PATH#sha256=HEX" (or
// "http://" to a loopback host) is fetched by the daemon once, at most
// maxFetch bytes within fetchTimeout, its digest checked before it is
// stored as a blob; a stored blob of that digest is not fetched again.
const (
	maxFetch     = admin.MaxModule
	fetchTimeout = 2 * time.Minute
)

var (
	errDigestMismatch = errors.New("digest mismatch")
	hexDigestRE       = regexp.MustCompile(`^[0-9a-f]{64}$`)
)

// pinnedURL checks a pinned URL reference and returns its digest.
func pinnedURL(ref string) (*url.URL, string, error) {
	u, err := url.Parse(ref)
	if err != nil {
		return nil, "", err
	}
	if err := fetchAllowed(u); err != nil {
		return nil, "", err
	}
	want, ok := strings.CutPrefix(u.Fragment, "sha256=")
	want = strings.ToLower(want)
	if !ok || !hexDigestRE.MatchString(want) {
		return nil, "", errors.New("not pinned: end the URL with #sha256=HEX (64 hex digits)")
	}
	return u, want, nil
}

// fetchAllowed admits https, and http only to a loopback host.
func fetchAllowed(u *url.URL) error {
	switch u.Scheme {
	case "https":
		return nil
	case "http":
		h := u.Hostname()
		if ip := net.ParseIP(h); h == "localhost" || (ip != nil && ip.IsLoopback()) {
			return nil
		}
		return fmt.Errorf("http is allowed only to a loopback host, not %q: use https", h)
	}
	return fmt.Errorf("scheme %q: want https (or http to a loopback host)", u.Scheme)
}

// fetchBlob returns the blob of a pinned URL, fetching it if not stored;
// the blob is held as storeBlob's.
func (c *Coordinator) fetchBlob(ctx context.Context, ref string) (string, error) {
	u, want, err := pinnedURL(ref)
	if err != nil {
		return "", fmt.Errorf("%w: %s: %v", admin.ErrInvalid, ref, err)
	}
	if c.holdBlob(want) {
		return want, nil
	}
	ctx, cancel := context.WithTimeout(ctx, fetchTimeout)
	defer cancel()
	client := &http.Client{CheckRedirect: func(r *http.Request, via []*http.Request) error {
		if len(via) >= 5 {
			return errors.New("too many redirects")
		}
		return fetchAllowed(r.URL)
	}}
	get := *u
	get.Fragment = ""
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, get.String(), nil)
	if err != nil {
		return "", fmt.Errorf("%w: fetch %s: %v", admin.ErrInvalid, ref, err)
	}
	resp, err := client.Do(req)
	if err != nil {
		return "", fmt.Errorf("%w: fetch %s: %v", admin.ErrInvalid, ref, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("%w: fetch %s: %s", admin.ErrInvalid, ref, resp.Status)
	}
	digest, n, err := c.storeBlob(&capReader{r: resp.Body, left: maxFetch}, want)
	if err != nil {
		if errors.Is(err, admin.ErrInternal) {
			return "", err
		}
		return "", fmt.Errorf("%w: fetch %s: %w", admin.ErrInvalid, ref, err)
	}
	c.log.Info("fetched a pinned object", "url", get.String(), "digest", digest, "size", n)
	return digest, nil
}

// capReader fails once more than left bytes are read.
type capReader struct {
	r    io.Reader
	left int64
}

func (r *capReader) Read(b []byte) (int, error) {
	if r.left < 0 {
		return 0, fmt.Errorf("larger than %d bytes", maxFetch)
	}
	if int64(len(b)) > r.left+1 {
		b = b[:r.left+1]
	}
	n, err := r.r.Read(b)
	r.left -= int64(n)
	if r.left < 0 {
		return 0, fmt.Errorf("larger than %d bytes", maxFetch)
	}
	return n, err
}

// resolveRef returns the blob digest of a manifest reference (what names
// it in errors): a pinned URL, "sha256:HEX" of a stored blob, or the
// reference of an uploaded part (held already). A blob it resolves
// otherwise is held and added to held.
func (c *Coordinator) resolveRef(ctx context.Context, what, ref string, objects map[string]string, held *[]string) (string, error) {
	if d, ok := objects[ref]; ok {
		return d, nil
	}
	switch {
	case ref == "":
		return "", fmt.Errorf("%w: %s: empty", admin.ErrInvalid, what)
	case strings.HasPrefix(ref, "https://") || strings.HasPrefix(ref, "http://"):
		d, err := c.fetchBlob(ctx, ref)
		if err != nil {
			return "", fmt.Errorf("%s: %w", what, err)
		}
		*held = append(*held, d)
		return d, nil
	case strings.HasPrefix(ref, "sha256:"):
		d := strings.ToLower(strings.TrimPrefix(ref, "sha256:"))
		if !hexDigestRE.MatchString(d) || !c.holdBlob(d) {
			return "", fmt.Errorf("%w: %s: no stored blob %s", admin.ErrInvalid, what, ref)
		}
		*held = append(*held, d)
		return d, nil
	}
	return "", fmt.Errorf("%w: %s: %q was not uploaded with the deploy (nor is it a pinned URL or sha256:HEX)", admin.ErrInvalid, what, ref)
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

// taskSpecs turns config tasks into runtime specs; a process-only task
// (no module) has none: the wasm runtime never loads it.
func taskSpecs(ts []tasks.Task) []outpostrt.Spec {
	specs := make([]outpostrt.Spec, 0, len(ts))
	for _, t := range ts {
		if t.Module == "" {
			continue
		}
		specs = append(specs, outpostrt.Spec{
			Name: t.Name, Module: t.Module, ABI: t.ABI,
			MemoryLimit: uint64(t.Limits.Memory), Timeout: t.Limits.Timeout.Std(), Concurrency: t.Limits.Concurrency,
			MaxInput: uint64(t.Limits.MaxInput), MaxOutput: uint64(t.Limits.MaxOutput),
			LogRate: t.Limits.LogRate, LogBurst: t.Limits.LogBurst,
			Permissions: outpostrt.Permissions{Publish: t.Permissions.Publish, Call: t.Permissions.Call, KVQuota: uint64(t.Permissions.KVQuota),
				Telemetry: t.Permissions.Telemetry, Shadows: t.Permissions.Shadows},
			FreshInstance: t.FreshInstance,
		})
		spec := &specs[len(specs)-1]
		for _, l := range t.Libraries {
			spec.Libraries = append(spec.Libraries, outpostrt.Library{Name: l.Name, Module: l.Module})
		}
		for _, f := range t.Files {
			spec.Files = append(spec.Files, outpostrt.File{Path: f.Path, Source: f.Source})
		}
	}
	return specs
}

// allSpecs is the whole task set: the config's tasks, then deployed tasks
// (a deployed task named like a config task is skipped: the config wins).
func (c *Coordinator) allSpecs(configured []tasks.Task, deps map[string]*deployment) []outpostrt.Spec {
	specs := taskSpecs(configured)
	inConfig := make(map[string]bool, len(configured))
	for _, t := range configured {
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
		if v.Digest == "" { // process-only
			continue
		}
		spec := taskSpecs([]tasks.Task{c.deployedTask(n, v)})[0]
		for i, l := range v.Libraries {
			spec.Libraries[i].Digest = l.Digest
		}
		specs = append(specs, spec)
	}
	return specs
}

// deployedTask is version v of the deployed task name as a config task
// whose files are its blobs (no module: a process-only version).
func (c *Coordinator) deployedTask(name string, v version) tasks.Task {
	t := tasks.Task{
		Name: name, ABI: v.Manifest.ABI,
		Limits: v.Manifest.Limits, Permissions: v.Manifest.Permissions,
		FreshInstance: v.Manifest.FreshInstance, Placement: v.Manifest.Placement, Labels: v.Manifest.Labels,
	}
	if v.Digest != "" {
		t.Module = c.blobPath(v.Digest)
	}
	for _, l := range v.Libraries {
		t.Libraries = append(t.Libraries, tasks.Library{Name: l.Name, Module: c.blobPath(l.Digest)})
	}
	for _, f := range v.Files {
		t.Files = append(t.Files, tasks.File{Path: f.Path, Source: c.blobPath(f.Digest)})
	}
	for _, a := range v.Artifacts {
		t.Artifacts = append(t.Artifacts, tasks.Artifact{Env: a.Env, OS: a.OS, Arch: a.Arch, Executable: c.blobPath(a.Digest)})
	}
	return t
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
	if err != nil {
		set.Close()
		return fmt.Errorf("persist task %s: %w", name, err)
	}
	c.deployed.Store(&deps)
	c.engine.Activate(set)
	return nil
}

func (c *Coordinator) isConfigTask(name string) bool {
	_, ok := c.configTask(name)
	return ok
}

func copyDeps(m map[string]*deployment) map[string]*deployment {
	out := make(map[string]*deployment, len(m)+1)
	for k, v := range m {
		out[k] = v
	}
	return out
}

// Deploy implements admin.Registry: it adds a task or a new version of one.
// The uploaded parts are blobs already; references of the manifest to
// pinned URLs are fetched here, before the registry is locked. The blobs
// it uses are held against blob GC until the version is recorded (or the
// deploy failed).
func (c *Coordinator) Deploy(ctx context.Context, name string, up admin.Upload) (admin.TaskDetail, error) {
	return c.deploy(ctx, name, up, "", "")
}

// deploy is Deploy for a version from the admin API ("") or a cloud
// call's code object (fromCloud) or a peer's call (fromPeer): those only
// add a task that is not there; root is the manifest object's digest when
// a cloud call named one.
func (c *Coordinator) deploy(ctx context.Context, name string, up admin.Upload, from, root string) (_ admin.TaskDetail, err error) {
	held := uploadBlobs(up)
	defer func() {
		if err != nil {
			c.refusedDeploy(held)
			return
		}
		c.releaseBlobs(held...)
	}()
	switch {
	case !deployNameRE.MatchString(name):
		return admin.TaskDetail{}, fmt.Errorf("%w: %q is not a task name (lower case letters, digits, '_', '.', '-'; at most 63)", admin.ErrInvalid, name)
	case c.isConfigTask(name):
		return admin.TaskDetail{}, fmt.Errorf("%w: task %q is defined in the config file %s; change it there", admin.ErrConflict, name, c.cfg.Load().Source)
	}
	m, perr := configs.ParseManifest(up.Manifest, "manifest")
	if perr != nil {
		return admin.TaskDetail{}, fmt.Errorf("%w: %v", admin.ErrInvalid, perr)
	}
	v := version{Manifest: m, Deployed: time.Now().UTC(), From: from, Root: root}
	switch {
	case up.Module != "" && up.Size > 0:
		v.Digest, v.Size = up.Module, int(up.Size)
	case up.Module == "" && m.Module != "":
		if v.Digest, err = c.resolveRef(ctx, "module", m.Module, up.Objects, &held); err != nil {
			return admin.TaskDetail{}, err
		}
		if st, err := os.Stat(c.blobPath(v.Digest)); err == nil {
			v.Size = int(st.Size())
		}
	default: // process-only: its artifacts are its code
		if err := m.CheckNative(name); err != nil {
			return admin.TaskDetail{}, fmt.Errorf("%w: %w", admin.ErrInvalid, err)
		}
	}
	for i, l := range m.Libraries {
		d, err := c.resolveRef(ctx, fmt.Sprintf("libraries[%d] (%s)", i, l.Name), l.Module, up.Objects, &held)
		if err != nil {
			return admin.TaskDetail{}, err
		}
		v.Libraries = append(v.Libraries, libVersion{Name: l.Name, Digest: d})
	}
	for i, f := range m.Files {
		d, err := c.resolveRef(ctx, fmt.Sprintf("files[%d] (%s)", i, f.Path), f.Source, up.Objects, &held)
		if err != nil {
			return admin.TaskDetail{}, err
		}
		v.Files = append(v.Files, fileBlob{Path: f.Path, Digest: d})
	}
	for i, a := range m.Artifacts {
		d, err := c.resolveRef(ctx, fmt.Sprintf("artifacts[%d] (%s %s/%s)", i, a.Env, a.OS, a.Arch), a.Executable, up.Objects, &held)
		if err != nil {
			return admin.TaskDetail{}, err
		}
		st, err := os.Stat(c.blobPath(d))
		if err == nil {
			err = os.Chmod(c.blobPath(d), 0o750) // an executable; the same bytes as any other blob
		}
		if err != nil {
			return admin.TaskDetail{}, fmt.Errorf("%w: artifacts[%d]: %v", admin.ErrInternal, i, err)
		}
		v.Artifacts = append(v.Artifacts, artifactBlob{Env: a.Env, OS: a.OS, Arch: a.Arch, Digest: d, Size: st.Size()})
	}
	up.ReportPhase(admin.PhaseCompiling)
	c.reloadMu.Lock()
	defer c.reloadMu.Unlock()
	deps := copyDeps(c.deployments())
	if old := deps[name]; old != nil && from != "" {
		return c.cloudDeployed(name, old.current().root(), v.root())
	}
	d := &deployment{Name: name}
	if old := deps[name]; old != nil {
		d.Versions = append(d.Versions, old.Versions...)
	}
	d.Versions = append(d.Versions, v)
	trimmed := len(d.Versions) > maxVersions
	if trimmed {
		d.Versions = d.Versions[len(d.Versions)-maxVersions:]
	}
	deps[name] = d
	if err := c.swap(ctx, deps, name, d); err != nil {
		return admin.TaskDetail{}, err
	}
	c.log.Info("task deployed", "task", name, "digest", v.Digest, "version", len(d.Versions), "libraries", len(v.Libraries), "files", len(v.Files))
	if trimmed {
		c.collectBlobs("update", false) // the oldest version fell out of the kept history
	}
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
	c.collectBlobs("remove", false)
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
	c.collectBlobs("rollback", false)
	detail, _ := c.Inspect(name)
	return detail, nil
}

// Inspect implements admin.Registry.
func (c *Coordinator) Inspect(name string) (admin.TaskDetail, bool) {
	var det admin.TaskDetail
	found := false
	for _, t := range c.engine.Tasks() {
		if t.Name == name {
			det.Task, found = adminTask(t), true
			det.FreshInstance, det.MaxInput, det.MaxOutput = t.FreshInstance, t.Limits.MaxInput, t.Limits.MaxOutput
			if tt, ok := c.envs.task(name); ok {
				det.Artifacts, det.Placement = artifacts(tt, t), tt.Placement
				det.Permissions.Network = tt.Permissions.Network
			}
		}
	}
	if t, ok := c.processOnly(name); ok {
		det.Task, found = nativeAdminTask(t), true
		det.MaxInput, det.MaxOutput = uint64(t.Limits.MaxInput), uint64(t.Limits.MaxOutput)
		det.Artifacts, det.Placement = artifacts(t, outpostrt.TaskInfo{}), t.Placement
		p := t.Permissions
		det.Permissions = admin.TaskPermissions{Publish: p.Publish, Call: p.Call, KVQuota: uint64(p.KVQuota), Telemetry: p.Telemetry, Network: p.Network, Shadows: p.Shadows}
	}
	if st, ok := c.engine.Inspect(name); ok {
		p := st.Permissions
		det.Permissions = admin.TaskPermissions{Publish: p.Publish, Call: p.Call, KVQuota: p.KVQuota, Telemetry: p.Telemetry, Network: det.Permissions.Network, Shadows: p.Shadows}
		det.Pool = admin.TaskPool{Warm: st.Warm, InUse: st.InUse}
	}
	if d := c.deployments()[name]; d != nil {
		for i, v := range d.Versions {
			det.Versions = append(det.Versions, admin.TaskVersion{
				Version: i + 1, Digest: v.Digest, Size: v.Size, Deployed: v.Deployed,
				ABI: v.Manifest.ABI, MemoryLimit: uint64(v.Manifest.Limits.Memory),
				Timeout: v.Manifest.Limits.Timeout.Std().Seconds(), Concurrency: v.Manifest.Limits.Concurrency,
				Publish: v.Manifest.Permissions.Publish, Call: v.Manifest.Permissions.Call, KVQuota: uint64(v.Manifest.Permissions.KVQuota),
			})
			tv := &det.Versions[len(det.Versions)-1]
			tv.From = v.From
			for _, l := range v.Libraries {
				tv.Libraries = append(tv.Libraries, admin.BlobRef{Name: l.Name, Digest: l.Digest})
			}
			for _, f := range v.Files {
				tv.Files = append(tv.Files, admin.BlobRef{Name: f.Path, Digest: f.Digest})
			}
			for _, a := range v.Artifacts {
				tv.Artifacts = append(tv.Artifacts, admin.Artifact{Env: a.Env, OS: a.OS, Arch: a.Arch, Digest: a.Digest, Size: a.Size, Location: c.blobPath(a.Digest)})
			}
		}
	}
	return det, found
}
