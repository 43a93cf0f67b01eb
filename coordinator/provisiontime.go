package coordinator

import (
	"sync"

	"github.com/outpost-edge/outpost/coordinator/remote"
)

// Expected provisioning time (docs/placement.md "Provisioning time"): the
// rules see, for every environment, how long provisioning it with the
// task's code objects is expected to take (envs[NAME].provision_seconds).
// It is the cost of the packages remote.Plan would make of the objects the
// receiver is not known to hold, over the link measured to it
// (remote.Link.Cost): the estimate the control plane plans a node's
// provisioning by, applied here to each candidate. This node's own
// environments (local, process) hold the task's objects: 0.

// maxHeld bounds the digests remembered per receiver; past it the set is
// forgotten and learnt again (an object then counts as missing once).
const maxHeld = 4096

// heldObjects is what one receiver (the control plane, a peer) is known to
// hold of this node's code objects: the digests of modules it ran, of
// objects sent to it or fetched from it, and of those it answered it has.
type heldObjects struct {
	mu sync.Mutex
	m  map[string]bool // "sha256:HEX"
}

// add records digests as held.
func (h *heldObjects) add(digests ...string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.m == nil || len(h.m)+len(digests) > maxHeld {
		h.m = make(map[string]bool, len(digests))
	}
	for _, d := range digests {
		h.m[d] = true
	}
}

// remove records digests as not held.
func (h *heldObjects) remove(digests ...string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, d := range digests {
		delete(h.m, d)
	}
}

// provisionSeconds is the expected time to provision the receiver h
// describes with objs over link: 0 when it holds them all.
func (h *heldObjects) provisionSeconds(objs []remote.PackedObject, link remote.Link) float64 {
	h.mu.Lock()
	have := make(map[string]bool, len(objs))
	for _, o := range objs {
		if h.m[o.Digest] {
			have[o.Digest] = true
		}
	}
	h.mu.Unlock()
	if len(have) == len(objs) {
		return 0
	}
	return link.Cost(remote.Plan(objs, have, link)).Seconds()
}
