package coordinator

import (
	"bytes"
	"encoding/json"
	"net/http"
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

// The state filter applies to the journal's current view of each call.
func TestListCallsByState(t *testing.T) {
	c := startCoordinator(t, testConfig(t))
	call := calls.New("echo", []byte("hi"), calls.Source{})
	if err := c.CallAsync(call); err != nil {
		t.Fatal(err)
	}
	list := func(query string) []calls.Record {
		resp := adminGet(t, c, "/v1/calls"+query)
		defer resp.Body.Close()
		var out struct{ Calls []calls.Record }
		if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
			t.Fatal(err)
		}
		return out.Calls
	}
	deadline := time.Now().Add(10 * time.Second)
	for len(list("?state=reported")) == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("call never reported: %+v", list(""))
		}
		time.Sleep(20 * time.Millisecond)
	}
	if got := list("?state=reported&limit=1"); len(got) != 1 || got[0].ID != call.ID {
		t.Errorf("reported: %+v", got)
	}
	if got := list("?state=received"); len(got) != 0 {
		t.Errorf("received: %+v", got)
	}
}
