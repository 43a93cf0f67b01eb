package telemetry

import (
	"context"
	"strings"
	"testing"
	"time"

	gpath "github.com/openconfig/gnmi/path"
	gpb "github.com/openconfig/gnmi/proto/gnmi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/outpost-edge/outpost/internal/confval"
	"github.com/outpost-edge/outpost/telemetry/gnmiserver"
	"github.com/outpost-edge/outpost/telemetry/model"
	"github.com/outpost-edge/outpost/telemetry/tsdb"
)

// A path a source deletes (an SNMP object the agent stopped returning) is
// no longer latest in the store, keeps its history with the delete as the
// last point, is deleted from the gNMI server (a STREAM subscriber gets the
// delete, Get no longer returns it), fires no trigger, and comes back with
// its next value; the store still knows after a restart.
func TestDeletedPaths(t *testing.T) {
	trig := &trigRec{}
	dir := t.TempDir()
	cfg := Config{
		GNMIServer: gnmiserver.Config{Listen: "127.0.0.1:0"},
		Store:      tsdb.Config{FlushInterval: confval.Duration(50 * time.Millisecond)},
		Triggers:   []TriggerRule{{Task: "t", Path: "/interfaces/...", Condition: "changed"}},
	}
	s := New(cfg, dir, nil, nil, Sinks{Trigger: trig})
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer s.Stop(context.Background())
	const gone, kept = "/interfaces/interface[name=eth3]/in-octets", "/interfaces/interface[name=eth1]/in-octets"
	t0 := time.Now().UnixNano()
	s.Publish([]Update{{Target: "sw1", Path: gone, Time: t0, Value: model.Uint(1)}, {Target: "sw1", Path: kept, Time: t0, Value: model.Uint(2)}})

	conn, err := grpc.NewClient(s.GNMIAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	st, err := gpb.NewGNMIClient(conn).Subscribe(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Send(&gpb.SubscribeRequest{Request: &gpb.SubscribeRequest_Subscribe{Subscribe: &gpb.SubscriptionList{
		Prefix: &gpb.Path{Target: "sw1"}, Mode: gpb.SubscriptionList_STREAM,
		Subscription: []*gpb.Subscription{{Path: &gpb.Path{}, Mode: gpb.SubscriptionMode_ON_CHANGE}}}}}); err != nil {
		t.Fatal(err)
	}
	for {
		r, err := st.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if r.GetSyncResponse() {
			break
		}
	}
	triggers := trig.count()
	s.Publish([]Update{{Target: "sw1", Path: gone, Time: t0 + 1e9, Value: model.Deleted()}})
	for {
		r, err := st.Recv()
		if err != nil {
			t.Fatalf("waiting for the delete: %v", err)
		}
		if d := r.GetUpdate().GetDelete(); len(d) == 1 {
			if got := strings.Join(gpath.ToStrings(d[0], false), "/"); got != "interfaces/interface/eth3/in-octets" {
				t.Errorf("delete of %s", got)
			}
			break
		}
	}
	g, err := gpb.NewGNMIClient(conn).Get(ctx, &gpb.GetRequest{Prefix: &gpb.Path{Target: "sw1"}})
	if err != nil {
		t.Fatal(err)
	}
	if n := len(g.GetNotification()); n != 1 || len(g.GetNotification()[0].GetUpdate()) != 1 {
		t.Errorf("get after the delete: %v, want eth1 only", g.GetNotification())
	}
	if n := trig.count(); n != triggers {
		t.Errorf("the delete fired %d triggers", n-triggers)
	}
	latest := func() []string {
		ps, err := s.Latest("sw1", "/...")
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, p := range ps {
			out = append(out, p.Path)
		}
		return out
	}
	if got := latest(); len(got) != 1 || got[0] != kept {
		t.Errorf("latest after the delete: %v, want %s only", got, kept)
	}
	series, err := s.Query(ctx, QueryRequest{Target: "sw1", Path: gone, Since: time.Unix(0, t0-1e9), Until: time.Unix(0, t0+5e9)})
	if err != nil || len(series) != 1 || len(series[0].Points) != 2 || series[0].Points[1].Kind != "deleted" {
		t.Errorf("history of the deleted path: %+v, %v; want the value then the delete", series, err)
	}
	// The delete is kept across a restart of the store.
	if err := s.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := latest(); len(got) != 1 || got[0] != kept {
		t.Errorf("latest after a restart: %v, want %s only", got, kept)
	}
	s.Publish([]Update{{Target: "sw1", Path: gone, Time: t0 + 2e9, Value: model.Uint(3)}})
	if got := latest(); len(got) != 2 {
		t.Errorf("latest after the path came back: %v", got)
	}
}

func (t *trigRec) count() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.calls)
}
