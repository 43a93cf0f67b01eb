package gnmiserver

import (
	"context"
	"errors"
	"io"
	"math"
	"slices"
	"testing"
	"time"

	gpb "github.com/openconfig/gnmi/proto/gnmi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/outpost-edge/outpost/telemetry/model"
)

// A range without an end sends the stored updates from its start, the
// sync response, then the live ones as they arrive, each once, and ends when the target is
// released, after everything received before.
func TestFollowStoredThenLive(t *testing.T) {
	s := conformanceServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	st, err := dial(t, s.Addr()).Subscribe(ctx)
	if err != nil {
		t.Fatal(err)
	}
	l := &gpb.SubscriptionList{Prefix: &gpb.Path{Target: "sw1"}, Mode: gpb.SubscriptionList_STREAM, UpdatesOnly: true, Encoding: gpb.Encoding_PROTO,
		Subscription: []*gpb.Subscription{{Path: elems("/interfaces")}}}
	if err := st.Send(&gpb.SubscribeRequest{Request: &gpb.SubscribeRequest_Subscribe{Subscribe: l}, Extension: rangeExt(at(30*time.Second), math.MaxInt64)}); err != nil {
		t.Fatal(err)
	}
	next := func() []string {
		t.Helper()
		r, err := st.Recv()
		if err != nil {
			t.Fatalf("recv: %v", err)
		}
		if r.GetSyncResponse() {
			return []string{"sync"}
		}
		return render(r.GetUpdate())
	}
	var got []string
	for range 3 {
		got = append(got, next()...)
	}
	octets := "sw1 " + cOctets
	if want := []string{octets + " uint:200", octets + " uint:300", "sync"}; !slices.Equal(got, want) {
		t.Fatalf("stored part: %q, want %q", got, want)
	}
	now := time.Now().UnixNano()
	s.Update([]model.Update{
		{Target: "sw1", Path: cOctets, Time: at(2 * time.Minute), Value: model.Uint(300)}, // sent from the store already
		{Target: "sw2", Path: cHost, Time: now, Value: model.String("other")},             // another target
		{Target: "sw1", Path: cHost, Time: now, Value: model.String("sw1")},               // another path
		{Target: "sw1", Path: cOctets, Time: now, Value: model.Uint(400)},
	})
	s.Update([]model.Update{{Target: "sw1", Path: cOctets, Time: now + 1, Value: model.Uint(401)}})
	s.Released("sw1")
	got = nil
	for range 2 {
		got = append(got, next()...)
	}
	if want := []string{octets + " uint:400", octets + " uint:401"}; !slices.Equal(got, want) {
		t.Fatalf("live part: %q, want %q", got, want)
	}
	if _, err := st.Recv(); !errors.Is(err, io.EOF) {
		t.Fatalf("after the release: %v, want the end of the stream", err)
	}
}

// A follower that does not keep up is cut off rather than waited for.
func TestFollowerTooSlowIsCutOff(t *testing.T) {
	s := start(t, Config{})
	tl := s.addTail("sw1")
	for range tailBuffer + 1 {
		s.Update(sample(time.Now().UnixNano()))
	}
	n := 0
	for range tl.ch {
		n++
	}
	if n != tailBuffer || status.Code(tl.err) != codes.ResourceExhausted {
		t.Fatalf("%d batches queued then %v, want %d then ResourceExhausted", n, tl.err, tailBuffer)
	}
	s.dropTail(tl) // already gone: no second close
}
