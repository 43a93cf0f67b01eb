package gnmiserver

import (
	"context"
	"testing"
	"time"

	gpb "github.com/openconfig/gnmi/proto/gnmi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// A Get at an instance told to pass it on is answered by the other one,
// and says so; an instance never passes on a Get passed on to it.
func TestGetDiverted(t *testing.T) {
	holder, replica := start(t, Config{}), start(t, Config{})
	holder.Update(sample(time.Now().UnixNano()))
	// Each would pass the Get to the other: the second one answers.
	insec := grpc.WithTransportCredentials(insecure.NewCredentials())
	replica.SetDivert(func(string) (string, string) { return holder.Addr(), "proxy h" }, insec)
	holder.SetDivert(func(string) (string, string) { return replica.Addr(), "proxy r" }, insec)
	get := func(s *Server) (*gpb.GetResponse, metadata.MD, error) {
		var md metadata.MD
		r, err := dial(t, s.Addr()).Get(context.Background(), &gpb.GetRequest{Prefix: &gpb.Path{Target: "sw1"},
			Path: []*gpb.Path{{Elem: []*gpb.PathElem{{Name: "system"}}}}}, grpc.Header(&md))
		return r, md, err
	}
	r, md, err := get(replica)
	if err != nil || len(r.GetNotification()) == 0 {
		t.Fatalf("get at the replica: %v %v", err, r)
	}
	if got := md.Get(ServedFromHeader); len(got) != 1 || got[0] != "proxy h" {
		t.Errorf("%s: %v", ServedFromHeader, got)
	}
	replica.SetDivert(func(string) (string, string) { return "", "replica" }, insec)
	if _, md, _ := get(replica); len(md.Get(ServedFromHeader)) != 1 || md.Get(ServedFromHeader)[0] != "replica" {
		t.Errorf("answered here: %v", md)
	}
}

// A Subscribe at an instance told to pass it on is relayed as a whole
// (its polls too) to the other one, and says so; a history subscription
// is answered here.
func TestSubscribeDiverted(t *testing.T) {
	holder, replica := start(t, Config{}), start(t, Config{})
	holder.Update(sample(time.Now().UnixNano()))
	insec := grpc.WithTransportCredentials(insecure.NewCredentials())
	replica.SetDivert(func(string) (string, string) { return holder.Addr(), "proxy h" }, insec)
	holder.SetDivert(func(string) (string, string) { return replica.Addr(), "proxy r" }, insec)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := dial(t, replica.Addr()).Subscribe(ctx)
	if err != nil {
		t.Fatal(err)
	}
	l := &gpb.SubscriptionList{Prefix: &gpb.Path{Target: "sw1"}, Mode: gpb.SubscriptionList_POLL, Subscription: []*gpb.Subscription{{Path: elems("/system")}}}
	if err := st.Send(&gpb.SubscribeRequest{Request: &gpb.SubscribeRequest_Subscribe{Subscribe: l}}); err != nil {
		t.Fatal(err)
	}
	md, err := st.Header()
	if got := md.Get(ServedFromHeader); err != nil || len(got) != 1 || got[0] != "proxy h" {
		t.Errorf("%s: %v %v", ServedFromHeader, got, err)
	}
	rounds := 0
	for rounds < 2 {
		r, err := st.Recv()
		if err != nil {
			t.Fatalf("round %d: %v", rounds, err)
		}
		if r.GetSyncResponse() {
			if rounds++; rounds == 1 {
				if err := st.Send(&gpb.SubscribeRequest{Request: &gpb.SubscribeRequest_Poll{Poll: &gpb.Poll{}}}); err != nil {
					t.Fatal(err)
				}
			}
		} else if len(r.GetUpdate().GetUpdate()) == 0 {
			t.Errorf("an empty update: %v", r)
		}
	}
	// The replica has no data: only the holder's answer carries rounds.
	_, err = subscribeLines(t, dial(t, replica.Addr()), &gpb.SubscribeRequest{Request: &gpb.SubscribeRequest_Subscribe{Subscribe: &gpb.SubscriptionList{
		Prefix: &gpb.Path{Target: "sw1"}, Mode: gpb.SubscriptionList_ONCE, Subscription: []*gpb.Subscription{{Path: elems("/system")}}}},
		Extension: snapshotExt(time.Now().UnixNano())})
	if status.Code(err) != codes.Unimplemented {
		t.Errorf("a history subscription at the replica (no store there): %v, want it answered there (Unimplemented)", err)
	}
}
