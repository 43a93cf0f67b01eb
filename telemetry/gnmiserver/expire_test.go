package gnmiserver

import (
	"context"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	gpath "github.com/openconfig/gnmi/path"
	gpb "github.com/openconfig/gnmi/proto/gnmi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/outpost-edge/outpost/internal/confval"
	"github.com/outpost-edge/outpost/internal/gnmitest"
	"github.com/outpost-edge/outpost/telemetry/model"
)

// keepHostname updates sw1's hostname every 100 ms until stop is closed, so
// sw1 stays while its other paths expire.
func keepHostname(s *Server, stop <-chan struct{}, wg *sync.WaitGroup) {
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			s.Update([]model.Update{{Target: "sw1", Path: pathHost, Time: time.Now().UnixNano(), Value: model.String("sw1")}})
			select {
			case <-stop:
				return
			case <-t.C:
			}
		}
	}()
}

// recvUntil reads the stream until a response satisfies ok, failing at
// the stream's deadline.
func recvUntil(t *testing.T, st gpb.GNMI_SubscribeClient, what string, ok func(*gpb.SubscribeResponse) bool) {
	t.Helper()
	for {
		r, err := st.Recv()
		if err != nil {
			t.Fatalf("waiting for %s: %v", what, err)
		}
		if ok(r) {
			return
		}
	}
}

func deletes(r *gpb.SubscribeResponse) []string {
	var out []string
	for _, d := range r.GetUpdate().GetDelete() {
		out = append(out, "/"+strings.Join(gpath.ToStrings(d, false), "/"))
	}
	return out
}

// A path not updated for expire_after is deleted from the cache: STREAM
// subscribers (SAMPLE and ON_CHANGE) get a gNMI delete of it and no more
// samples, Get no longer returns it; a target whose every path expired is
// removed (subscribers get the delete of "*", Get answers NotFound) until
// it sends again.
func TestExpiry(t *testing.T) {
	s := start(t, Config{ExpireAfter: confval.Duration(time.Second)})
	ts := time.Now().UnixNano()
	s.Update([]model.Update{
		{Target: "sw1", Path: pathOctets0, Time: ts, Value: model.Uint(1)},
		{Target: "sw2", Path: pathOctets0, Time: ts, Value: model.Uint(2)},
	})
	stop := make(chan struct{})
	var wg sync.WaitGroup
	keepHostname(s, stop, &wg)
	defer wg.Wait()
	defer close(stop)
	c := dial(t, s.Addr())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	sub := func(target string, mode gpb.SubscriptionMode) gpb.GNMI_SubscribeClient {
		st, err := c.Subscribe(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := st.Send(&gpb.SubscribeRequest{Request: &gpb.SubscribeRequest_Subscribe{Subscribe: &gpb.SubscriptionList{
			Prefix: &gpb.Path{Target: target}, Mode: gpb.SubscriptionList_STREAM, Encoding: gpb.Encoding_PROTO,
			Subscription: []*gpb.Subscription{{Path: &gpb.Path{}, Mode: mode, SampleInterval: uint64(MinSampleInterval)}}}}}); err != nil {
			t.Fatal(err)
		}
		recvUntil(t, st, "sync", (*gpb.SubscribeResponse).GetSyncResponse)
		return st
	}
	sample1 := sub("sw1", gpb.SubscriptionMode_SAMPLE)
	change2 := sub("sw2", gpb.SubscriptionMode_ON_CHANGE)

	recvUntil(t, sample1, "the delete of sw1's counter", func(r *gpb.SubscribeResponse) bool {
		d := deletes(r)
		return len(d) == 1 && d[0] == keyed(pathOctets0)
	})
	// From then on sw1's samples carry the hostname only.
	for range 3 {
		r, err := sample1.Recv()
		if err != nil {
			t.Fatal(err)
		}
		for p := range paths([]*gpb.Notification{r.GetUpdate()}) {
			if p != keyed(pathHost) {
				t.Fatalf("sample after the delete has %s", p)
			}
		}
	}
	g, err := c.Get(ctx, &gpb.GetRequest{Prefix: &gpb.Path{Target: "*"}})
	if err != nil {
		t.Fatal(err)
	}
	if got := paths(g.GetNotification()); len(got) != 1 || !got[keyed(pathHost)] || len(g.GetNotification()) != 1 || g.GetNotification()[0].GetPrefix().GetTarget() != "sw1" {
		t.Fatalf("get * after expiry: %v, want sw1's hostname only", g.GetNotification())
	}

	// sw2 sent nothing since: its path, then the target, went.
	var got []string
	recvUntil(t, change2, "the deletes of sw2", func(r *gpb.SubscribeResponse) bool {
		got = append(got, deletes(r)...)
		return len(got) == 2
	})
	if got[0] != keyed(pathOctets0) || got[1] != "/*" {
		t.Fatalf("sw2's subscriber got deletes %v, want its counter then the target (*)", got)
	}
	if _, err := c.Get(ctx, &gpb.GetRequest{Prefix: &gpb.Path{Target: "sw2"}}); status.Code(err) != codes.NotFound {
		t.Fatalf("get of the expired target: %v, want NotFound", err)
	}
	// sw2 comes back: the open subscription and Get see it again.
	s.Update([]model.Update{{Target: "sw2", Path: pathOctets0, Time: time.Now().UnixNano(), Value: model.Uint(3)}})
	recvUntil(t, change2, "sw2's new value", func(r *gpb.SubscribeResponse) bool {
		u := r.GetUpdate().GetUpdate()
		return len(u) == 1 && u[0].GetVal().GetUintVal() == 3
	})
	if _, err := c.Get(ctx, &gpb.GetRequest{Prefix: &gpb.Path{Target: "sw2"}}); err != nil {
		t.Fatalf("get of the returned target: %v", err)
	}
}

// gnmi_cli streaming from Outpost sees the delete of a path that stopped.
func TestGnmiCLISeesExpiry(t *testing.T) {
	cli := gnmitest.CLI(t)
	s := start(t, Config{ExpireAfter: confval.Duration(time.Second)})
	s.Update([]model.Update{{Target: "sw1", Path: pathOctets0, Time: time.Now().UnixNano(), Value: model.Uint(1234)}})
	stop := make(chan struct{})
	var wg sync.WaitGroup
	keepHostname(s, stop, &wg)
	defer wg.Wait()
	defer close(stop)
	cmd := exec.Command(cli, "-address", s.Addr(), "-insecure", "-client_types", "gnmi", "-target", "sw1", "-query", "/interfaces", "-query_type", "streaming",
		"-streaming_duration", "4s", "-display_type", "single", "-timeout", "10s")
	out, err := cmd.CombinedOutput()
	// gnmi_cli ends a stream at -streaming_duration with DeadlineExceeded and exit status 1.
	if err != nil && !strings.Contains(string(out), "DeadlineExceeded") {
		t.Fatalf("gnmi_cli: %v\n%s", err, out)
	}
	o := string(out)
	// gnmi_cli asks for the default encoding, JSON, and shows a json_val as
	// {Deprecated TypedValue_JsonVal 1234}; a delete shows as <nil>.
	if !strings.Contains(o, "in-octets, {Deprecated TypedValue_JsonVal 1234}") || !strings.Contains(o, "in-octets, <nil>") {
		t.Fatalf("gnmi_cli output lacks the value or its delete:\n%s", o)
	}
}
