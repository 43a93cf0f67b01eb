package server

import (
	"cmp"
	"context"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"time"

	"github.com/outpost-edge/outpost/internal/confval"
)

// Fleet views (docs/control-plane.md, "Nodes, labels and groups"): every
// node the server knows (it polled, has calls or has labels) with its
// labels, link state and queue depths; operators set labels (POST
// /api/v1/nodes/{node}/labels), list nodes matching a label selector (GET
// /api/v1/nodes?selector=S) with counts grouped by one label's values
// (&group=KEY), and address calls and jobs to the nodes a selector
// matches.

// NodeInfo describes one node for operators.
type NodeInfo struct {
	ID       string            `json:"id"`
	Boot     string            `json:"boot_id"`
	Labels   map[string]string `json:"labels,omitempty"`
	LastSeen time.Time         `json:"last_seen,omitzero"` // when its last poll began
	Polling  bool              `json:"polling"`            // a poll of it is parked now
	Online   bool              `json:"online"`             // polling, or polled in the last minute
	Pending  int               `json:"pending"`            // calls queued for it
	Held     int               `json:"held"`               // calls delivered to it and not finished
}

// NodeGroup counts the nodes whose label Label has the value Value ("" and
// None: the nodes without it).
type NodeGroup struct {
	Label   string `json:"label"`
	Value   string `json:"value"`
	None    bool   `json:"none,omitempty"`
	Nodes   int    `json:"nodes"`
	Online  int    `json:"online"`
	Pending int    `json:"pending"`
	Held    int    `json:"held"`
}

// NodesView is the answer of GET /api/v1/nodes: the nodes a selector
// matched, their totals, and (with group) the totals by one label.
type NodesView struct {
	Nodes  []NodeInfo  `json:"nodes"`
	Total  NodeGroup   `json:"total"`
	Groups []NodeGroup `json:"groups,omitempty"`
}

// LabelRequest is the body of POST /api/v1/nodes/{node}/labels.
type LabelRequest struct {
	Set    map[string]string `json:"set,omitempty"`
	Remove []string          `json:"remove,omitempty"`
}

func (s *Server) nodeRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET /api/v1/nodes", s.handleNodes)
	mux.HandleFunc("POST /api/v1/nodes/{node}/labels", s.handleLabels)
}

// selectNodes lists the nodes sel matches.
func (s *Server) selectNodes(ctx context.Context, sel Selector) ([]NodeInfo, error) {
	all, err := s.st.nodes(ctx)
	if err != nil {
		return nil, err
	}
	return slices.DeleteFunc(all, func(n NodeInfo) bool { return !sel.Matches(n.Labels) }), nil
}

// nodesView is the view of the nodes sel matches, grouped by the label
// group ("": no groups).
func nodesView(nodes []NodeInfo, group string) NodesView {
	v := NodesView{Nodes: nodes}
	at := map[string]int{} // "=value" or "!" (label absent): index in v.Groups
	add := func(g *NodeGroup, n NodeInfo) {
		g.Nodes++
		g.Pending += n.Pending
		g.Held += n.Held
		if n.Online {
			g.Online++
		}
	}
	for _, n := range nodes {
		add(&v.Total, n)
		if group == "" {
			continue
		}
		val, has := n.Labels[group]
		key := "=" + val
		if !has {
			key = "!"
		}
		i, ok := at[key]
		if !ok {
			i = len(v.Groups)
			at[key] = i
			v.Groups = append(v.Groups, NodeGroup{Label: group, Value: val, None: !has})
		}
		add(&v.Groups[i], n)
	}
	// By value; the nodes without the label last.
	slices.SortFunc(v.Groups, func(a, b NodeGroup) int {
		if a.None != b.None {
			if a.None {
				return 1
			}
			return -1
		}
		return cmp.Compare(a.Value, b.Value)
	})
	return v
}

func (s *Server) handleNodes(w http.ResponseWriter, r *http.Request) {
	sel, err := ParseSelector(r.URL.Query().Get("selector"))
	if err != nil {
		httpError(w, http.StatusBadRequest, err.Error())
		return
	}
	group := r.URL.Query().Get("group")
	if group != "" {
		if err := confval.CheckLabelKeyRef(group); err != nil {
			httpError(w, http.StatusBadRequest, "group: label "+err.Error())
			return
		}
	}
	nodes, err := s.selectNodes(r.Context(), sel)
	if err != nil {
		s.storeError(w, "nodes", err)
		return
	}
	writeJSON(w, r, http.StatusOK, nodesView(nodes, group))
}

func (s *Server) handleLabels(w http.ResponseWriter, r *http.Request) {
	var req LabelRequest
	if err := readBody(r, &req); err != nil {
		httpError(w, http.StatusBadRequest, err.Error())
		return
	}
	node := r.PathValue("node")
	if msg := checkNodeID(node); msg != "" {
		httpError(w, http.StatusBadRequest, msg)
		return
	}
	// Labels are checked as they are written; a key stored under an
	// earlier, longer limit is still listed and may be removed.
	for _, k := range slices.Sorted(maps.Keys(req.Set)) {
		if err := confval.CheckLabel(k, req.Set[k]); err != nil {
			httpError(w, http.StatusBadRequest, fmt.Sprintf("labels of node %s: set: %v", node, err))
			return
		}
	}
	for _, k := range req.Remove {
		if err := confval.CheckLabelKeyRef(k); err != nil {
			httpError(w, http.StatusBadRequest, fmt.Sprintf("labels of node %s: remove: %v", node, err))
			return
		}
	}
	labels, err := s.st.setLabels(r.Context(), node, req.Set, req.Remove)
	if err != nil {
		s.storeError(w, "labels", err)
		return
	}
	writeJSON(w, r, http.StatusOK, map[string]any{"node": node, "labels": labels})
}

// checkNodeID says what is wrong with a node id ("": nothing).
func checkNodeID(id string) string {
	if id == "" || len(id) > 256 {
		return fmt.Sprintf("node id %q: want 1 to 256 characters", id)
	}
	return ""
}

// fanOut makes one call of each template per node sel matches, its id
// the template's id, '@' and the node's.
func (s *Server) fanOut(ctx context.Context, sel Selector, templates []Call) ([]Call, error) {
	nodes, err := s.selectNodes(ctx, sel)
	if err != nil {
		return nil, err
	}
	out := make([]Call, 0, len(nodes)*len(templates))
	for _, c := range templates {
		for _, n := range nodes {
			cc := c
			cc.ID, cc.Node = c.ID+"@"+n.ID, n.ID
			out = append(out, cc)
		}
	}
	return out, nil
}
