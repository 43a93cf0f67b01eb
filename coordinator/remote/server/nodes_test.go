package server

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"testing"

	"github.com/outpost-edge/outpost/coordinator/remote"
)

func TestSelector(t *testing.T) {
	long := strings.Repeat("k", 100) // a key stored under the earlier node limit (128)
	labels := map[string]string{"region": "eu", "tier": "gold", "site": "paris-1", "room": "a 1", long: "x"}
	for _, c := range []struct {
		sel  string
		want bool
	}{
		{"", true},
		{"region=eu", true},
		{"region==eu", true},
		{"region=us", false},
		{"region!=us", true},
		{"zone!=a", true},
		{"region in (us, eu)", true},
		{"region in (us,asia)", false},
		{"tier notin (silver,bronze)", true},
		{"tier notin (gold)", false},
		{"zone notin (a)", true},
		{"site", true},
		{"zone", false},
		{"!zone", true},
		{"!site", false},
		{"region=eu, tier in (gold,silver), !zone", true},
		{"region=eu,tier=silver", false},
		{"room=a 1", true},
		{"room in (a 1, b)", true},
		{long, true},
		{long + "=x", true},
	} {
		t.Run(c.sel, func(t *testing.T) {
			sel, err := ParseSelector(c.sel)
			if err != nil {
				t.Fatal(err)
			}
			if got := sel.Matches(labels); got != c.want {
				t.Fatalf("%q matches %v: %v, want %v", c.sel, labels, got, c.want)
			}
		})
	}
	for _, bad := range []string{"region=eu,", "region in (eu", "=eu", "re gion=eu", "region=(eu)", "k>3", "!"} {
		if _, err := ParseSelector(bad); err == nil || !strings.Contains(err.Error(), "bad label selector") {
			t.Errorf("%q: %v, want a bad label selector error", bad, err)
		}
	}
}

// getJSON decodes the answer of a GET, failing on another code than want.
func getJSON(t testing.TB, u string, want int, out any) {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != want {
		t.Fatalf("GET %s: %s %s, want %d", u, resp.Status, b, want)
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatal(err)
		}
	}
}

func postJSON(t testing.TB, u string, body any, out any) int {
	t.Helper()
	b, _ := json.Marshal(body)
	resp, err := http.Post(u, "application/json", strings.NewReader(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	rb, _ := io.ReadAll(resp.Body)
	if out != nil && resp.StatusCode < 300 {
		if err := json.Unmarshal(rb, out); err != nil {
			t.Fatal(err)
		}
	}
	return resp.StatusCode
}

// Labels on each engine: set and removed (kept over a restart), a node
// labelled before it ever polled is listed; GET /api/v1/nodes filters by
// selector and groups by a label with online state and queue depths; an
// enqueue by selector makes one call per matching node (ID@NODE); a job
// by selector spreads its items over the matching nodes only.
func TestNodeLabels(t *testing.T) { forEngines(t, testNodeLabels) }

func testNodeLabels(t *testing.T, e *engine) {
	s := e.open(Options{})
	hs := httptest.NewServer(s.Handler())
	label := func(node string, req LabelRequest) map[string]string {
		t.Helper()
		var got struct{ Labels map[string]string }
		if code := postJSON(t, hs.URL+"/api/v1/nodes/"+node+"/labels", req, &got); code != http.StatusOK {
			t.Fatalf("label %s: %d", node, code)
		}
		return got.Labels
	}
	for _, n := range []struct{ id, region, tier string }{{"a", "eu", "gold"}, {"b", "eu", "silver"}, {"c", "us", "gold"}} {
		label(n.id, LabelRequest{Set: map[string]string{"region": n.region, "tier": n.tier, "old": "x"}})
	}
	if got := label("a", LabelRequest{Remove: []string{"old"}, Set: map[string]string{"rack": "r1"}}); len(got) != 3 || got["rack"] != "r1" || got["old"] != "" {
		t.Fatalf("labels of a after a change: %v", got)
	}
	if code := postJSON(t, hs.URL+"/api/v1/nodes/a/labels", LabelRequest{Set: map[string]string{"bad key": "v"}}, nil); code != http.StatusBadRequest {
		t.Fatalf("a bad key: %d", code)
	}
	hs.Close()
	_ = s.Close()
	s, hs = e.serve(Options{})
	// a polls (online), d polls and has no labels.
	for _, n := range []string{"a", "d"} {
		if code, _ := pollCode(t, hs, n, remote.PollRequest{BootID: "boot-" + n}); code != http.StatusNoContent {
			t.Fatalf("poll %s: %d", n, code)
		}
	}
	var items struct{ Calls []EnqueueItem }
	if code := postJSON(t, hs.URL+"/api/v1/calls", EnqueueRequest{Selector: "region=eu", Calls: []Call{{ID: "up", Task: "t"}}}, &items); code != http.StatusOK {
		t.Fatalf("enqueue by selector: %d", code)
	}
	ids := []string{}
	for _, it := range items.Calls {
		ids = append(ids, it.ID)
	}
	slices.Sort(ids)
	if !slices.Equal(ids, []string{"up@a", "up@b"}) {
		t.Fatalf("enqueue by region=eu made %v", ids)
	}
	if code := postJSON(t, hs.URL+"/api/v1/calls", EnqueueRequest{Selector: "region=eu", Calls: []Call{{ID: "x", Node: "a", Task: "t"}}}, nil); code != http.StatusBadRequest {
		t.Fatalf("a call by selector naming a node: %d", code)
	}
	var v NodesView
	getJSON(t, hs.URL+"/api/v1/nodes?group=region", http.StatusOK, &v)
	if len(v.Nodes) != 4 || v.Total != (NodeGroup{Nodes: 4, Online: 2, Pending: 2}) {
		t.Fatalf("all nodes: %+v", v)
	}
	want := []NodeGroup{
		{Label: "region", Value: "eu", Nodes: 2, Online: 1, Pending: 2},
		{Label: "region", Value: "us", Nodes: 1},
		{Label: "region", None: true, Nodes: 1, Online: 1},
	}
	if !slices.Equal(v.Groups, want) {
		t.Fatalf("groups by region:\n%+v\nwant\n%+v", v.Groups, want)
	}
	if v.Nodes[0].ID != "a" || !v.Nodes[0].Online || v.Nodes[0].Labels["tier"] != "gold" || v.Nodes[1].Online || v.Nodes[1].Pending != 1 {
		t.Fatalf("nodes %+v", v.Nodes)
	}
	v = NodesView{}
	getJSON(t, hs.URL+"/api/v1/nodes?selector="+url.QueryEscape("tier in (gold), region!=us"), http.StatusOK, &v)
	if len(v.Nodes) != 1 || v.Nodes[0].ID != "a" || v.Groups != nil {
		t.Fatalf("tier in (gold), region!=us: %+v", v)
	}
	getJSON(t, hs.URL+"/api/v1/nodes?selector="+url.QueryEscape("tier in (gold"), http.StatusBadRequest, nil)
	// A job by selector: the nodes matched at create.
	var j Job
	src := t.TempDir() + "/items.jsonl"
	writeLines(t, src, 40)
	if code := postJSON(t, hs.URL+"/api/v1/jobs", JobSpec{ID: "gold", Task: "t", Selector: "tier=gold", Source: "jsonl:" + src}, &j); code != http.StatusCreated {
		t.Fatalf("create job by selector: %d", code)
	}
	if !slices.Equal(j.Nodes, []string{"a", "c"}) {
		t.Fatalf("job nodes %v, want [a c]", j.Nodes)
	}
	if code := postJSON(t, hs.URL+"/api/v1/jobs", JobSpec{Task: "t", Selector: "tier=platinum", Source: "jsonl:" + src}, nil); code != http.StatusBadRequest {
		t.Fatalf("a job whose selector matches nothing: %d", code)
	}
	if _, err := s.waitListed(t, "gold"); err != nil {
		t.Fatal(err)
	}
	cs, _ := s.st.list(t.Context(), callFilter{state: "pending"})
	per := map[string]int{}
	for _, c := range cs {
		if strings.HasPrefix(c.ID, "j-") {
			per[c.Node]++
		}
	}
	if per["a"]+per["c"] != 40 || per["a"] == 0 || per["c"] == 0 {
		t.Fatalf("items per node %v", per)
	}
}

// Node labels are written under the one label rule (confval.CheckLabel):
// a key over 63 characters is refused, the error naming the node and the
// key. A label stored earlier with a longer key (the node limit was 128)
// still loads, is listed, selected, grouped by and removed.
func TestNodeLabelRule(t *testing.T) { forEngines(t, testNodeLabelRule) }

func testNodeLabelRule(t *testing.T, e *engine) {
	long := "site.example.com/" + strings.Repeat("z", 83) // 100 characters
	s := e.open(Options{})
	// As a server of the earlier rule stored it.
	if _, err := s.st.setLabels(t.Context(), "old", map[string]string{long: "north", "tier": "gold"}, nil); err != nil {
		t.Fatal(err)
	}
	_ = s.Close()
	_, hs := e.serve(Options{})
	resp, err := http.Post(hs.URL+"/api/v1/nodes/edge-1/labels", "application/json",
		strings.NewReader(`{"set": {"tier": "gold", "`+long+`": "north"}}`))
	if err != nil {
		t.Fatal(err)
	}
	var refused struct{ Error string }
	err = json.NewDecoder(resp.Body).Decode(&refused)
	resp.Body.Close()
	want := `labels of node edge-1: set: key "` + long + `": want 1 to 63 letters, digits, '-', '_', '.' or '/'`
	if err != nil || resp.StatusCode != http.StatusBadRequest || refused.Error != want {
		t.Fatalf("a key of 100 characters: %s %q (%v), want 400 %s", resp.Status, refused.Error, err, want)
	}
	var v NodesView
	getJSON(t, hs.URL+"/api/v1/nodes", http.StatusOK, &v)
	if len(v.Nodes) != 1 || v.Nodes[0].ID != "old" || v.Nodes[0].Labels[long] != "north" {
		t.Fatalf("nodes after a restart: %+v, want old with %s=north (edge-1 refused whole)", v.Nodes, long)
	}
	v = NodesView{}
	getJSON(t, hs.URL+"/api/v1/nodes?group="+url.QueryEscape(long)+"&selector="+url.QueryEscape(long+"=north"), http.StatusOK, &v)
	if len(v.Nodes) != 1 || len(v.Groups) != 1 || v.Groups[0].Value != "north" {
		t.Fatalf("selected and grouped by the stored key: %+v", v)
	}
	var got struct{ Labels map[string]string }
	if code := postJSON(t, hs.URL+"/api/v1/nodes/old/labels", LabelRequest{Remove: []string{long}}, &got); code != http.StatusOK ||
		len(got.Labels) != 1 || got.Labels["tier"] != "gold" {
		t.Fatalf("remove the stored key: %d %v", code, got.Labels)
	}
}
