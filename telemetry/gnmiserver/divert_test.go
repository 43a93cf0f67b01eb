package gnmiserver

import (
	"context"
	"testing"
	"time"

	gpb "github.com/openconfig/gnmi/proto/gnmi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
)

// A Get at an instance told to pass it on is answered by the other one,
// and says so; an instance never passes on a Get passed on to it.
func TestGetDiverted(t *testing.T) {
	holder, replica := start(t, Config{}), start(t, Config{})
	holder.Update(sample(time.Now().UnixNano()))
	// Each would pass the Get to the other: the second one answers.
	replica.SetDivert(func(string) (string, string) { return holder.Addr(), "proxy h" })
	holder.SetDivert(func(string) (string, string) { return replica.Addr(), "proxy r" })
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
	replica.SetDivert(func(string) (string, string) { return "", "replica" })
	if _, md, _ := get(replica); len(md.Get(ServedFromHeader)) != 1 || md.Get(ServedFromHeader)[0] != "replica" {
		t.Errorf("answered here: %v", md)
	}
}
