package telemetry

import (
	"context"
	"errors"
	"io"
	"testing"
	"time"

	gpb "github.com/openconfig/gnmi/proto/gnmi"
	"github.com/openconfig/gnmi/proto/gnmi_ext"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/outpost-edge/outpost/telemetry/gnmiserver"
	"github.com/outpost-edge/outpost/telemetry/model"
)

// The daemon's gNMI server replays the telemetry store: what the hub
// stored comes back through a Subscribe with the history extension's range.
func TestGNMIServerReplaysTheStore(t *testing.T) {
	s := New(Config{GNMIServer: gnmiserver.Config{Listen: "127.0.0.1:0"}}, t.TempDir(), nil, nil, Sinks{})
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer s.Stop(context.Background())
	t0 := time.Now().Add(-time.Minute).UnixNano()
	const p = "/interfaces/interface[name=eth0]/state/counters/in-octets"
	for i := range 3 {
		s.hub.publish([]model.Update{{Target: "sw1", Path: p, Time: t0 + int64(i)*int64(time.Second), Value: model.Uint(uint64(10 + i))}})
	}
	conn, err := grpc.NewClient(s.GNMIAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := gpb.NewGNMIClient(conn).Subscribe(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Send(&gpb.SubscribeRequest{
		Request: &gpb.SubscribeRequest_Subscribe{Subscribe: &gpb.SubscriptionList{Prefix: &gpb.Path{Target: "sw1"}, Mode: gpb.SubscriptionList_STREAM,
			Encoding: gpb.Encoding_PROTO, UpdatesOnly: true, Subscription: []*gpb.Subscription{{Path: &gpb.Path{Elem: []*gpb.PathElem{{Name: "interfaces"}}}}}}},
		Extension: []*gnmi_ext.Extension{{Ext: &gnmi_ext.Extension_History{History: &gnmi_ext.History{Request: &gnmi_ext.History_Range{
			Range: &gnmi_ext.TimeRange{Start: t0, End: time.Now().UnixNano()}}}}}},
	}); err != nil {
		t.Fatal(err)
	}
	var got []uint64
	for {
		r, err := st.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		for _, u := range r.GetUpdate().GetUpdate() {
			got = append(got, u.GetVal().GetUintVal())
		}
	}
	if len(got) != 3 || got[0] != 10 || got[2] != 12 {
		t.Fatalf("replayed %v, want 10 11 12", got)
	}
}
