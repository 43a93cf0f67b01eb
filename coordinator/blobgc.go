package coordinator

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/outpost-edge/outpost/coordinator/admin"
	"github.com/outpost-edge/outpost/internal/cas"
	"github.com/outpost-edge/outpost/internal/format"
)

// Blob GC. A blob (<data_dir>/blobs/sha256/<digest>.wasm: a module, a
// library or a data file) is deleted once nothing needs it: no kept
// version of any deployed task, no config task (a config path may point
// into the blob directory) and no deploy in progress. It runs after a
// remove, a rollback, an update that drops the oldest kept version
// (reloadMu held, after the registry change is persisted) and a refused
// deploy or upload (reloadMu held, after its holds are dropped), and once at
// start, before the admin API listens, when it also deletes the temporary
// files of uploads a stop interrupted.
//
// The race it must not lose: a deploy stores its blobs (StoreBlob, as the
// request's parts arrive; a pinned URL or "sha256:" reference as Deploy
// resolves it) before it records the version that references them. Each
// such blob is held (a count per digest) from the moment it is stored or
// found until the deploy is recorded or has failed (Deploy, or Release
// from the admin API when the request fails before Deploy). Holding, the
// existence check and the rename of a new blob, and GC's delete decisions
// are all under blobMu, so a blob is never deleted between being found and
// being held.

// uploadPrefix starts the temporary file of a blob being uploaded.
const uploadPrefix = ".upload-"

// blobHolds counts the holds of deploys in progress on blobs.
type blobHolds struct {
	n map[string]int // digest -> holds; guarded by Coordinator.blobMu
}

// blobFormat is the blob directory's format: files named
// <sha256>.wasm (docs/architecture.md, "Format versions").
var blobFormat = format.New("blob store", 1)

// blobDir is the blob directory, absolute when it can be.
func (c *Coordinator) blobDir() string {
	dir := filepath.Dir(c.blobPath("x"))
	if abs, err := filepath.Abs(dir); err == nil {
		return abs
	}
	return dir
}

// holdBlob holds the stored blob digest; false if there is none.
func (c *Coordinator) holdBlob(digest string) bool {
	c.blobMu.Lock()
	defer c.blobMu.Unlock()
	if _, err := os.Stat(c.blobPath(digest)); err != nil {
		return false
	}
	c.holdLocked(digest)
	return true
}

// renameHeld moves a finished upload to its digest's path and holds it.
func (c *Coordinator) renameHeld(st *cas.Staged, digest string) error {
	c.blobMu.Lock()
	defer c.blobMu.Unlock()
	if err := st.Rename(c.blobPath(digest)); err != nil {
		return err
	}
	c.holdLocked(digest)
	return nil
}

func (c *Coordinator) holdLocked(digest string) {
	if c.holds.n == nil {
		c.holds.n = map[string]int{}
	}
	c.holds.n[digest]++
}

// releaseBlobs drops one hold on each digest ("" is skipped).
func (c *Coordinator) releaseBlobs(digests ...string) {
	c.blobMu.Lock()
	defer c.blobMu.Unlock()
	for _, d := range digests {
		if d == "" || c.holds.n[d] == 0 {
			continue
		}
		if c.holds.n[d]--; c.holds.n[d] == 0 {
			delete(c.holds.n, d)
		}
	}
}

// uploadBlobs are the blobs an upload's parts hold.
func uploadBlobs(up admin.Upload) []string {
	ds := []string{up.Module}
	for _, d := range up.Objects {
		ds = append(ds, d)
	}
	return ds
}

// Release implements admin.Registry: the upload will not be deployed.
func (c *Coordinator) Release(up admin.Upload) { c.refusedDeploy(uploadBlobs(up)) }

// refusedDeploy drops the holds of a deploy that failed and deletes the
// blobs it stored that nothing else needs, at once rather than at the
// next start or remove.
func (c *Coordinator) refusedDeploy(digests []string) {
	c.releaseBlobs(digests...)
	c.reloadMu.Lock()
	defer c.reloadMu.Unlock()
	c.collectBlobs("refused deploy", false)
}

// referencedBlobs is the set of blob digests that kept versions of
// deployed tasks and config tasks use.
func (c *Coordinator) referencedBlobs() map[string]bool {
	keep := map[string]bool{}
	for _, d := range c.deployments() {
		for _, v := range d.Versions {
			keep[v.Digest] = true
			for _, l := range v.Libraries {
				keep[l.Digest] = true
			}
			for _, f := range v.Files {
				keep[f.Digest] = true
			}
			for _, a := range v.Artifacts {
				keep[a.Digest] = true
			}
		}
	}
	dir := c.blobDir()
	inBlobDir := func(p string) {
		if p == "" || strings.HasPrefix(p, "builtin:") {
			return
		}
		if abs, err := filepath.Abs(p); err == nil && filepath.Dir(abs) == dir {
			keep[strings.TrimSuffix(filepath.Base(abs), ".wasm")] = true
		}
	}
	for _, t := range c.cfg.Load().Tasks {
		inBlobDir(t.Module)
		for _, l := range t.Libraries {
			inBlobDir(l.Module)
		}
		for _, f := range t.Files {
			inBlobDir(f.Source)
		}
		for _, a := range t.Artifacts {
			inBlobDir(a.Executable)
		}
	}
	return keep
}

// collectBlobs deletes the blobs nothing needs (see above); with sweep
// (at start, no upload running) also leftover upload files. why names the
// occasion in the log.
func (c *Coordinator) collectBlobs(why string, sweep bool) {
	dir := c.blobDir()
	ents, err := os.ReadDir(dir)
	if err != nil {
		if !errors.Is(err, fs.ErrNotExist) {
			c.log.Warn("blob gc: cannot list the blob directory", "dir", dir, "err", err)
		}
		return
	}
	keep := c.referencedBlobs()
	c.blobMu.Lock()
	defer c.blobMu.Unlock()
	if c.backups > 0 {
		c.log.Info("blob gc: skipped while a backup is written", "after", why)
		return
	}
	var objects, bytes int64
	for _, e := range ents {
		name := e.Name()
		digest, isBlob := strings.CutSuffix(name, ".wasm")
		switch {
		case isBlob && hexDigestRE.MatchString(digest):
			if keep[digest] || c.holds.n[digest] > 0 {
				continue
			}
		case strings.HasPrefix(name, uploadPrefix) && sweep:
		default:
			continue // an upload in progress, or not a blob of ours
		}
		var size int64
		if info, err := e.Info(); err == nil {
			size = info.Size()
		}
		if err := os.Remove(filepath.Join(dir, name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			c.log.Warn("blob gc: cannot delete", "file", name, "err", err)
			continue
		}
		objects++
		bytes += size
	}
	if objects == 0 {
		return
	}
	c.m.blobsReclaimed.Add(float64(objects))
	c.m.blobBytesReclaimed.Add(float64(bytes))
	c.log.Info("blob gc: deleted unreferenced blobs", "after", why, "objects", objects, "bytes", bytes, "kept", len(ents)-int(objects))
}
