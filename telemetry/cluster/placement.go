package cluster

import (
	"hash/fnv"
	"math"
	"slices"
	"sort"
	"strconv"
)

// Member is an instance registered in the cluster.
type Member struct {
	Name string `json:"name"`
	GNMI string `json:"gnmi"` // gNMI address others reach it at
	// Admin is its admin API's URL for peers (Config.AdvertiseAdmin).
	Admin    string `json:"admin,omitempty"`
	Capacity int    `json:"capacity"` // placement weight
	Drained  bool   `json:"drained"`  // takes no targets
	// Targets digests the member's configured target names: placement
	// assumes every member has the same targets.
	Targets string `json:"targets"`
}

// targetsDigest digests a list of target names, in any order.
func targetsDigest(targets []string) string {
	ts := slices.Clone(targets)
	slices.Sort(ts)
	h := fnv.New64a()
	for _, t := range ts {
		h.Write([]byte(t))
		h.Write([]byte{0})
	}
	return strconv.FormatUint(h.Sum64(), 16)
}

// Place returns the member a target belongs on: weighted rendezvous
// hashing, so each target goes to the member with the highest score
// -capacity/ln(h) for a uniform h of (member, target). A join takes from
// each member only the targets the newcomer now scores highest on; a leave
// moves only the leaver's targets. Drained members and members of capacity
// 0 take nothing; ok is false when no member can take the target.
func Place(target string, members []Member) (name string, ok bool) {
	best := math.Inf(-1)
	for _, m := range members {
		if m.Drained || m.Capacity <= 0 {
			continue
		}
		h := fnv.New64a()
		h.Write([]byte(m.Name))
		h.Write([]byte{0})
		h.Write([]byte(target))
		// A uniform value in (0, 1): the top 53 bits of the mixed hash.
		u := (float64(mix(h.Sum64())>>11) + 0.5) / (1 << 53)
		score := -float64(m.Capacity) / math.Log(u)
		if score > best || (score == best && m.Name < name) {
			best, name, ok = score, m.Name, true
		}
	}
	return name, ok
}

// Assign places every target: member name → its targets, sorted.
func Assign(targets []string, members []Member) map[string][]string {
	out := map[string][]string{}
	for _, t := range targets {
		if m, ok := Place(t, members); ok {
			out[m] = append(out[m], t)
		}
	}
	for _, ts := range out {
		sort.Strings(ts)
	}
	return out
}

// mix is murmur3's 64-bit finalizer: FNV alone leaves the high bits of
// similar names close together.
func mix(x uint64) uint64 {
	x ^= x >> 33
	x *= 0xff51afd7ed558ccd
	x ^= x >> 33
	x *= 0xc4ceb9fe1a85ec53
	x ^= x >> 33
	return x
}
