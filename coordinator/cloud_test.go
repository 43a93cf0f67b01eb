package coordinator

import (
	"bytes"
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/coordinator/admin"
	"github.com/outpost-edge/outpost/coordinator/calls"
)

// adminGet GETs path of c's admin API with the daemon's token.
func adminGet(t *testing.T, c *Coordinator, path string) *http.Response {
	t.Helper()
	cfg := c.cfg.Load()
	tok, err := admin.ReadToken(cfg.Admin.TokenPath(cfg.DataDir))
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest(http.MethodGet, "http://"+c.AdminAddr()+path, nil)
	req.Header.Set("Authorization", "Bearer "+string(tok))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

// GET /v1/calls refuses bad query parameters with 400 and answers a list,
// [] when empty, never null.
func TestListCallsQuery(t *testing.T) {
	c := startCoordinator(t, testConfig(t))
	for _, tc := range []struct {
		name, query string
		code        int
		want        string // in the body
	}{
		{"none", "", 200, `{"calls":[]}`},
		{"limit", "?limit=5", 200, `{"calls":[]}`},
		{"state", "?state=finished&limit=0", 200, `{"calls":[]}`},
		{"task and source", "?task=echo&source=mqtt", 200, `{"calls":[]}`},
		{"empty task", "?task=", 400, "task"},
		{"empty source", "?source=&task=echo", 400, "source"},
		{"repeated task", "?task=a&task=b", 400, "task"},
		{"newest", "?order=newest&limit=3", 200, `{"calls":[]}`},
		{"bad order", "?order=up", 400, "order"},
		{"negative limit", "?limit=-5&state=%FF", 400, "limit"},
		{"limit not a number", "?limit=x", 400, "limit"},
		{"limit too large", "?limit=100001", 400, "limit"},
		{"bad state", "?state=%FF", 400, "state"},
		{"unknown state", "?state=done", 400, "state"},
		{"repeated", "?limit=1&limit=2", 400, "limit"},
		{"unknown parameter", "?status=ok", 400, "status"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp := adminGet(t, c, "/v1/calls"+tc.query)
			defer resp.Body.Close()
			var body bytes.Buffer
			if _, err := body.ReadFrom(resp.Body); err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != tc.code || !strings.Contains(body.String(), tc.want) {
				t.Errorf("GET %s: %d %s, want %d with %q", tc.query, resp.StatusCode, body.String(), tc.code, tc.want)
			}
		})
	}
}

// The state filter applies to the journal's current view of each call;
// the task and source filters select on the server, before the limit, and
// the admin client sends them.
func TestListCallsFilters(t *testing.T) {
	c := startCoordinator(t, testConfig(t))
	call := calls.New("echo", []byte("hi"), calls.Source{}) // an admin call
	if err := c.CallAsync(call); err != nil {
		t.Fatal(err)
	}
	// A cloud call of a task the node lacks, first in the journal's id
	// order: a limit applied before the filter would miss the echo call.
	other := calls.New("other", nil, calls.Source{Kind: "cloud"})
	other.ID, other.Effect = "0"+other.ID[1:], calls.Idempotent
	if _, err := c.cloud.ready.Accept([]*calls.Call{other}); err != nil {
		t.Fatal(err)
	}
	cfg := c.cfg.Load()
	cl, err := admin.Dial(admin.ClientOptions{Addr: c.AdminAddr(), DaemonTokenFile: cfg.Admin.TokenPath(cfg.DataDir)})
	if err != nil {
		t.Fatal(err)
	}
	list := func(q admin.CallsQuery) []string {
		t.Helper()
		recs, err := cl.Calls(t.Context(), q)
		if err != nil {
			t.Fatal(err)
		}
		ids := []string{}
		for _, r := range recs {
			ids = append(ids, r.ID)
		}
		return ids
	}
	deadline := time.Now().Add(10 * time.Second)
	for len(list(admin.CallsQuery{State: "reported"})) == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("call never reported: %v", list(admin.CallsQuery{}))
		}
		time.Sleep(20 * time.Millisecond)
	}
	for _, tc := range []struct {
		name string
		q    admin.CallsQuery
		want []string
	}{
		{"reported, limit 1", admin.CallsQuery{State: "reported", Limit: 1}, []string{call.ID}},
		{"received", admin.CallsQuery{State: "received", Task: "echo"}, []string{}},
		{"task, limit 1", admin.CallsQuery{Task: "echo", Limit: 1}, []string{call.ID}},
		{"source, limit 1", admin.CallsQuery{Source: "admin", Limit: 1}, []string{call.ID}},
		{"other source", admin.CallsQuery{Source: "cloud"}, []string{other.ID}},
		{"task and other source", admin.CallsQuery{Task: "echo", Source: "mqtt"}, []string{}},
		{"no filter", admin.CallsQuery{}, []string{other.ID, call.ID}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := list(tc.q); !slices.Equal(got, tc.want) {
				t.Errorf("%+v: %v, want %v", tc.q, got, tc.want)
			}
		})
	}
	t.Run("newest first", func(t *testing.T) {
		resp := adminGet(t, c, "/v1/calls?order=newest&limit=1")
		defer resp.Body.Close()
		var out struct{ Calls []calls.Record }
		if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
			t.Fatal(err)
		}
		if len(out.Calls) != 1 || out.Calls[0].ID != call.ID {
			t.Errorf("order=newest&limit=1: %+v, want %s", out.Calls, call.ID)
		}
	})
}
