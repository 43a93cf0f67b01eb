package coordinator

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/outpost-edge/outpost/configs"
	"github.com/outpost-edge/outpost/coordinator/admin"
	"github.com/outpost-edge/outpost/coordinator/remote"
	"github.com/outpost-edge/outpost/coordinator/tasks"
)

// A cloud call may name a manifest object instead of a module: a deploy
// manifest whose module, libraries, files and artifacts are all
// "sha256:HEX" objects of the control plane. The node deploys the whole
// task: it reports which of those objects it holds, fetches the others in
// the packages the control plane plans (remote.Plan) with each object's
// digest checked as it is stored, and deploys the manifest as an admin
// deploy would (docs/placement.md "Packaging").

// wasmMagic starts every wasm module.
var wasmMagic = []byte("\x00asm")

// manifestObject returns the bytes of blob digest when it is a manifest
// (not a wasm module, and small enough to be one).
func (x *objectExecutor) manifestObject(digest string) ([]byte, bool) {
	f, err := os.Open(x.c.blobPath(digest))
	if err != nil {
		return nil, false
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, admin.MaxManifest+1))
	if err != nil || len(b) > admin.MaxManifest || bytes.HasPrefix(b, wasmMagic) {
		return nil, false
	}
	return b, true
}

// manifestObjects lists the objects a manifest names, in order, each
// "sha256:HEX".
func manifestObjects(m tasks.Manifest) ([]string, error) {
	var (
		refs []string
		errs []error
	)
	add := func(what, ref string) {
		if !remote.ValidDigest(ref) {
			errs = append(errs, fmt.Errorf("%s %q: a cloud manifest names its objects by sha256:HEX", what, ref))
			return
		}
		refs = append(refs, ref)
	}
	add("module", m.Module)
	for _, l := range m.Libraries {
		add("library "+l.Name, l.Module)
	}
	for _, f := range m.Files {
		add("file "+f.Path, f.Source)
	}
	for _, a := range m.Artifacts {
		add("artifact "+a.OS+"/"+a.Arch, a.Executable)
	}
	return refs, errors.Join(errs...)
}

// provision deploys task from the manifest object root (hex) with the
// bytes b: the objects the node lacks come in packages.
func (x *objectExecutor) provision(ctx context.Context, task, root string, b []byte) error {
	m, err := configs.ParseManifest(b, "manifest sha256:"+root)
	if err != nil {
		return err
	}
	refs, err := manifestObjects(m)
	if err != nil {
		return err
	}
	var have, held []string
	defer func() { x.c.releaseBlobs(held...) }()
	missing := 0
	for _, ref := range refs {
		if d := strings.TrimPrefix(ref, remote.DigestPrefix); x.c.holdBlob(d) {
			have, held = append(have, ref), append(held, d)
		} else {
			missing++
		}
	}
	link := x.c.cloud.link
	if missing > 0 && link == nil {
		return fmt.Errorf("no cloud link (cloud.url) to fetch %d objects from", missing)
	}
	if missing > 0 {
		pkgs, err := link.Provision(ctx, remote.DigestPrefix+root, refs, have)
		if err != nil {
			return err
		}
		x.c.envs.cloudHeld.add(refs...) // it planned them from its store: it holds them
		for _, p := range pkgs {
			err := link.FetchPackage(ctx, p, func(digest string, r io.Reader) error {
				want := strings.TrimPrefix(digest, remote.DigestPrefix)
				got, _, err := x.c.storeBlob(&capReader{r: r, left: x.max}, want)
				if err != nil {
					x.fetches.WithLabelValues("mismatch").Inc()
					return fmt.Errorf("object %s: %w (bytes hash to sha256:%s)", digest, err, got)
				}
				held = append(held, want)
				return nil
			})
			if err != nil {
				x.fetches.WithLabelValues("error").Inc()
				return err
			}
			x.fetches.WithLabelValues("ok").Add(float64(len(p.Objects)))
		}
		x.c.log.Info("provisioned a task from the control plane", "task", task, "root", remote.DigestPrefix+root,
			"objects", len(refs), "held", len(have), "packages", len(pkgs))
	}
	_, err = x.c.deploy(ctx, task, admin.Upload{Manifest: b}, fromCloud, root)
	return err
}
