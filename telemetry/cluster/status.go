package cluster

import "sort"

// Roles of an instance for a target.
const (
	RoleHolder  = "holder"  // collects it
	RoleReplica = "replica" // copies it from the holder
	RoleNone    = "none"    // no holder known
	// RoleProxy marks an answer the holder gave because the replica here
	// was stale (never in Status).
	RoleProxy = "proxy"
)

// TargetState is one target as this instance sees it.
type TargetState struct {
	Target     string  `json:"target"`
	Role       string  `json:"role"`
	Holder     string  `json:"holder,omitempty"`
	HolderGNMI string  `json:"holder_gnmi,omitempty"`
	Epoch      int64   `json:"epoch,omitempty"`
	PlacedOn   string  `json:"placed_on,omitempty"`
	LagSeconds float64 `json:"replica_lag_seconds,omitempty"` // see follow.lag
	Live       bool    `json:"replica_live,omitempty"`        // the replica's stream from the holder is live
	Points     uint64  `json:"replicated_points,omitempty"`
	Error      string  `json:"replica_error,omitempty"`
}

// Status is the cluster as this instance sees it.
type Status struct {
	Name    string        `json:"name"`
	Member  bool          `json:"member"` // its lease is confirmed
	Drained bool          `json:"drained"`
	Members []Member      `json:"members"`
	Targets []TargetState `json:"targets"`
	// OtherTargets lists the members configured with other targets than
	// this one: placement needs the same targets everywhere.
	OtherTargets []string `json:"other_targets,omitempty"`
}

// Status returns the members and each target's holder, epoch and replica lag.
func (n *Node) Status() Status {
	lease, _, _ := n.fence.state()
	n.mu.Lock()
	defer n.mu.Unlock()
	st := Status{Name: n.cfg.Name, Member: lease != 0, Drained: n.drained, Members: []Member{}, Targets: []TargetState{}}
	for _, m := range n.members {
		st.Members = append(st.Members, m)
		if m.Targets != n.digest {
			st.OtherTargets = append(st.OtherTargets, m.Name)
		}
	}
	sort.Strings(st.OtherTargets)
	sort.Slice(st.Members, func(i, j int) bool { return st.Members[i].Name < st.Members[j].Name })
	for _, t := range n.targets {
		ts := TargetState{Target: t, Role: RoleNone}
		ts.PlacedOn, _ = Place(t, st.Members)
		if h, ok := n.holders[t]; ok {
			ts.Holder, ts.HolderGNMI, ts.Epoch = h.Member, h.GNMI, h.Epoch
		}
		switch f := n.following[t]; {
		case n.epochs[t] != 0:
			ts.Role, ts.Epoch = RoleHolder, n.epochs[t]
		case f != nil:
			ts.Role = RoleReplica
			ts.LagSeconds, ts.Live, ts.Points, ts.Error = f.lag()
		}
		st.Targets = append(st.Targets, ts)
	}
	return st
}
