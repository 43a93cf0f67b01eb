package gnmiserver

import (
	"context"
	"os/exec"
	"strings"
	"testing"
	"time"

	gpath "github.com/openconfig/gnmi/path"
	gpb "github.com/openconfig/gnmi/proto/gnmi"

	"github.com/outpost-edge/outpost/internal/gnmitest"
	"github.com/outpost-edge/outpost/telemetry/model"
)

// twoInterfaces: counters of eth0 and eth1 and a keyless leaf beside them.
func twoInterfaces(s *Server, ts int64) {
	s.Update([]model.Update{
		{Target: "sw1", Path: pathOctets0, Time: ts, Value: model.Uint(1001)},
		{Target: "sw1", Path: pathOctets1, Time: ts, Value: model.Uint(2001)},
		{Target: "sw1", Path: pathOper, Time: ts, Value: model.String("UP")},
		{Target: "sw1", Path: pathHost, Time: ts, Value: model.String("sw1")},
	})
}

// paths renders the updates of notifications as keyed() does.
func paths(ns []*gpb.Notification) map[string]bool {
	out := map[string]bool{}
	for _, n := range ns {
		for _, u := range n.GetUpdate() {
			out["/"+strings.Join(append(gpath.ToStrings(n.GetPrefix(), false), gpath.ToStrings(u.GetPath(), false)...), "/")] = true
		}
	}
	return out
}

func wantCounters(t *testing.T, what string, got map[string]bool) {
	t.Helper()
	want := map[string]bool{keyed(pathOctets0): true, keyed(pathOctets1): true}
	if len(got) != len(want) || !got[keyed(pathOctets0)] || !got[keyed(pathOctets1)] {
		t.Errorf("%s: got %v, want the counters of both interfaces %v", what, got, want)
	}
}

// A request path that leaves a list's keys out (/interfaces/interface/...)
// matches every entry of the list, in Get and in Subscribe ONCE, POLL and
// STREAM, also when the list element is in the prefix, and so does one
// naming only some elements' keys; a given key still selects.
func TestPathWithoutKeysMatchesEveryEntry(t *testing.T) {
	s := start(t, Config{})
	ts := time.Now().UnixNano()
	twoInterfaces(s, ts)
	c := dial(t, s.Addr())
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	counters := elems("/interfaces/interface/state/counters")

	t.Run("get", func(t *testing.T) {
		g, err := c.Get(ctx, &gpb.GetRequest{Prefix: &gpb.Path{Target: "sw1"}, Path: []*gpb.Path{counters}})
		if err != nil {
			t.Fatal(err)
		}
		wantCounters(t, "get", paths(g.GetNotification()))
		// The list element in the prefix, the rest in the path.
		g, err = c.Get(ctx, &gpb.GetRequest{Prefix: &gpb.Path{Target: "sw1", Elem: elems("/interfaces/interface").GetElem()}, Path: []*gpb.Path{elems("/state/counters/in-octets")}})
		if err != nil {
			t.Fatal(err)
		}
		wantCounters(t, "get with the list in the prefix", paths(g.GetNotification()))
		g, err = c.Get(ctx, &gpb.GetRequest{Prefix: &gpb.Path{Target: "sw1"}, Path: []*gpb.Path{elems("/interfaces/interface[name=eth1]/state/counters")}})
		if err != nil {
			t.Fatal(err)
		}
		if got := paths(g.GetNotification()); len(got) != 1 || !got[keyed(pathOctets1)] {
			t.Errorf("get of eth1: %v", got)
		}
	})

	// subscribe reads one SubscriptionList's answers up to the sync response.
	subscribe := func(t *testing.T, mode gpb.SubscriptionList_Mode, polls int) map[string]bool {
		st, err := c.Subscribe(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := st.Send(&gpb.SubscribeRequest{Request: &gpb.SubscribeRequest_Subscribe{Subscribe: &gpb.SubscriptionList{
			Prefix: &gpb.Path{Target: "sw1"}, Mode: mode, Subscription: []*gpb.Subscription{{Path: counters, Mode: gpb.SubscriptionMode_ON_CHANGE}}}}}); err != nil {
			t.Fatal(err)
		}
		got := map[string]bool{}
		for round := 0; round <= polls; round++ {
			if round > 0 {
				clear(got)
				if err := st.Send(&gpb.SubscribeRequest{Request: &gpb.SubscribeRequest_Poll{Poll: &gpb.Poll{}}}); err != nil {
					t.Fatal(err)
				}
			}
			for {
				r, err := st.Recv()
				if err != nil {
					t.Fatal(err)
				}
				if r.GetSyncResponse() {
					break
				}
				for p := range paths([]*gpb.Notification{r.GetUpdate()}) {
					got[p] = true
				}
			}
		}
		return got
	}
	t.Run("once", func(t *testing.T) { wantCounters(t, "once", subscribe(t, gpb.SubscriptionList_ONCE, 0)) })
	t.Run("poll", func(t *testing.T) { wantCounters(t, "second poll", subscribe(t, gpb.SubscriptionList_POLL, 1)) })
	t.Run("stream", func(t *testing.T) {
		wantCounters(t, "stream initial", subscribe(t, gpb.SubscriptionList_STREAM, 0))
		// ...and a change of eth1 arrives on change.
		sctx, scancel := context.WithCancel(ctx)
		defer scancel()
		st, err := c.Subscribe(sctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := st.Send(&gpb.SubscribeRequest{Request: &gpb.SubscribeRequest_Subscribe{Subscribe: &gpb.SubscriptionList{
			Prefix: &gpb.Path{Target: "sw1"}, Mode: gpb.SubscriptionList_STREAM, UpdatesOnly: true, Encoding: gpb.Encoding_PROTO,
			Subscription: []*gpb.Subscription{{Path: counters, Mode: gpb.SubscriptionMode_ON_CHANGE}}}}}); err != nil {
			t.Fatal(err)
		}
		if r, err := st.Recv(); err != nil || !r.GetSyncResponse() {
			t.Fatalf("first answer %v %v, want the sync response", r, err)
		}
		s.Update([]model.Update{{Target: "sw1", Path: pathOctets1, Time: ts + 1, Value: model.Uint(2002)}})
		r, err := st.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if u := r.GetUpdate().GetUpdate(); len(u) != 1 || u[0].GetVal().GetUintVal() != 2002 {
			t.Errorf("streamed %v, want eth1's 2002", r)
		}
	})
}

// gnmi_cli's queries without keys (ONCE, POLL, and Get) reach every interface.
func TestGnmiCLIPathWithoutKeys(t *testing.T) {
	cli := gnmitest.CLI(t)
	s := start(t, Config{})
	twoInterfaces(s, time.Now().UnixNano())
	base := []string{"-address", s.Addr(), "-insecure", "-client_types", "gnmi", "-timeout", "10s"}
	for _, tc := range []struct {
		name string
		args []string
	}{
		{"once", []string{"-target", "sw1", "-query", "/interfaces/interface/state/counters", "-query_type", "once", "-display_type", "single"}},
		{"poll", []string{"-target", "sw1", "-query", "/interfaces/interface/state/counters", "-query_type", "polling", "-polling_interval", "100ms", "-count", "2", "-display_type", "single"}},
		{"get", []string{"-get", "-proto", `prefix: <target: "sw1"> path: <elem: <name: "interfaces"> elem: <name: "interface"> elem: <name: "state"> elem: <name: "counters">>`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := exec.Command(cli, append(base, tc.args...)...).CombinedOutput()
			if err != nil {
				t.Fatalf("gnmi_cli: %v\n%s", err, out)
			}
			o := string(out)
			for _, want := range []string{"eth0", "1001", "eth1", "2001"} {
				if !strings.Contains(o, want) {
					t.Errorf("gnmi_cli output lacks %q:\n%s", want, o)
				}
			}
			if strings.Contains(o, "oper-status") || strings.Contains(o, "hostname") {
				t.Errorf("gnmi_cli output has more than the counters:\n%s", o)
			}
		})
	}
}
