package coordinator

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/outpost-edge/outpost/configs"
	"github.com/outpost-edge/outpost/coordinator/admin"
	"github.com/outpost-edge/outpost/coordinator/calls"
	"github.com/outpost-edge/outpost/coordinator/remote"
	"github.com/outpost-edge/outpost/internal/confval"
)

// The peer side of the peer environment (peers.go is the caller's): calls
// other Outpost instances send here through admin.MountPeer's routes,
// with this daemon's admin token.

var _ admin.PeerNode = (*Coordinator)(nil)

// PeerStatus implements admin.PeerNode: this node's load.
func (c *Coordinator) PeerStatus() admin.PeerStatus {
	st := c.sched.Stats()
	return admin.PeerStatus{Name: c.cfg.Load().Node.ID, Workers: st.Workers, Running: st.Running, Queued: st.Queued,
		QueueSize: st.QueueSize, Draining: st.Draining}
}

// PeerCall implements admin.PeerNode: it runs a peer's call in this
// node's scheduler with the task version the call names, deploying it
// from the call's manifest if the task is not here.
func (c *Coordinator) PeerCall(ctx context.Context, pc admin.PeerCall) (calls.Result, []string, error) {
	want, ok := strings.CutPrefix(pc.Digest, remote.DigestPrefix)
	if !ok || !hexDigestRE.MatchString(want) {
		return calls.Result{}, nil, fmt.Errorf("%w: digest %q is not sha256:HEX", admin.ErrInvalid, pc.Digest)
	}
	if err := confval.CheckLabels(pc.Labels); err != nil {
		return calls.Result{}, nil, fmt.Errorf("%w: call %s of %s: %v", admin.ErrInvalid, pc.ID, pc.Caller, err)
	}
	if have, ok := c.moduleOf(pc.Task); !ok {
		missing, err := c.deployForPeer(ctx, pc.Task, want, pc.Manifest)
		if err != nil || len(missing) > 0 {
			return calls.Result{}, missing, err
		}
	} else if have != want {
		return taskConflict(pc.Task, have, want), nil, nil
	}
	call := calls.New(pc.Task, pc.Input, calls.Source{Kind: peerSource, Ref: pc.Caller + "/" + pc.ID})
	call.IdempotencyKey, call.Attempt, call.Labels = pc.IdempotencyKey, max(pc.Attempt, 1), pc.Labels
	if pc.TimeoutMS > 0 {
		call.Deadline = time.Now().Add(time.Duration(pc.TimeoutMS) * time.Millisecond)
	}
	if r := pc.Resume; r != nil {
		call.Resume = &calls.Continuation{State: r.State, Waits: r.Waits}
	}
	// The caller gone (killed, its call canceled or past its deadline,
	// the connection cut): the call is canceled here too.
	stop := context.AfterFunc(ctx, func() { c.sched.Cancel(call.ID) })
	defer stop()
	res, err := c.sched.Do(ctx, call)
	switch {
	case ctx.Err() != nil:
		return ctxResult(ctx, "by the calling node"), nil, nil
	case err != nil:
		// Not run (queue full, draining, unknown task): the caller places
		// the call again.
		return calls.Result{}, nil, fmt.Errorf("%w: not run here: %v", admin.ErrInternal, err)
	}
	return res, nil, nil
}

// moduleOf returns the hex digest of the module task runs here.
func (c *Coordinator) moduleOf(task string) (string, bool) {
	info, ok := c.engine.Task(task)
	return info.Digest, ok
}

// deployForPeer deploys task from a peer's manifest b, whose module must
// be want; it returns the objects of b not stored here instead, if any.
func (c *Coordinator) deployForPeer(ctx context.Context, task, want string, b []byte) ([]string, error) {
	m, err := configs.ParseManifest(b, "peer manifest of "+task)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", admin.ErrInvalid, err)
	}
	if m.Module != remote.DigestPrefix+want {
		return nil, fmt.Errorf("%w: the manifest's module %s is not the call's %s%s", admin.ErrInvalid, m.Module, remote.DigestPrefix, want)
	}
	refs, err := manifestObjects(m)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", admin.ErrInvalid, err)
	}
	var held, missing []string
	defer func() { c.releaseBlobs(held...) }()
	for _, ref := range refs {
		if d := strings.TrimPrefix(ref, remote.DigestPrefix); c.holdBlob(d) {
			held = append(held, d)
		} else {
			missing = append(missing, ref)
		}
	}
	if len(missing) > 0 {
		return missing, nil
	}
	if _, err := c.deploy(ctx, task, admin.Upload{Manifest: b}, fromPeer, ""); err != nil {
		return nil, err
	}
	c.log.Info("task deployed for a peer's call", "task", task, "digest", remote.DigestPrefix+want)
	return nil, nil
}

// StorePeerObject implements admin.PeerNode: it stores an object a peer
// sends, checked against its digest.
func (c *Coordinator) StorePeerObject(_ context.Context, digest string, r io.Reader) error {
	want, ok := strings.CutPrefix(digest, remote.DigestPrefix)
	if !ok || !hexDigestRE.MatchString(want) {
		return fmt.Errorf("%w: digest %q is not sha256:HEX", admin.ErrInvalid, digest)
	}
	got, _, err := c.storeBlob(&capReader{r: r, left: maxFetch}, want)
	if errors.Is(err, errDigestMismatch) {
		return fmt.Errorf("%w: the bytes hash to sha256:%s, not %s", admin.ErrInvalid, got, digest)
	}
	if err != nil {
		return err
	}
	c.releaseBlobs(want) // the call that follows holds it while it deploys
	return nil
}
