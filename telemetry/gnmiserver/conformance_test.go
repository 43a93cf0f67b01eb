package gnmiserver

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	gpb "github.com/openconfig/gnmi/proto/gnmi"
	"github.com/openconfig/gnmi/proto/gnmi_ext"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/outpost-edge/outpost/internal/confval"
	"github.com/outpost-edge/outpost/internal/gnmitest"
	"github.com/outpost-edge/outpost/telemetry/model"
	"github.com/outpost-edge/outpost/telemetry/tsdb"
)

// The conformance table: every Get and Subscribe variant against a real
// server on a loopback port, through a real gRPC client, with a real
// telemetry store behind the history extension. Each answer is rendered
// as lines "target path kind:value" ("-" for no prefix target), "sync"
// between rounds, "empty" for a notification without updates.

const (
	cOctets = "/interfaces/interface[name=eth0]/state/counters/in-octets"
	cOper   = "/interfaces/interface[name=eth0]/state/oper-status"
	cHost   = "/system/state/hostname"
)

// histT0 is when the stored history starts: ten minutes ago, on a whole
// minute so the stored points fall in as few hours as possible.
var histT0 = time.Now().Add(-10 * time.Minute).Truncate(time.Minute)

func at(d time.Duration) int64 { return histT0.Add(d).UnixNano() }

// conformanceServer serves the live data (sw1: a counter, a state and the
// hostname; sw2: its hostname) and, from a store, their history: sw1's
// counter 100, 200, 300 at t0, t0+1m, t0+2m, sw2's hostname "old" at t0.
func conformanceServer(t *testing.T) *Server {
	t.Helper()
	db, err := tsdb.Open(tsdb.Options{Dir: t.TempDir(), Cfg: tsdb.Config{}.WithDefaults(), Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	db.Start()
	t.Cleanup(func() { db.Close() })
	if err := db.Append([]model.Update{
		{Target: "sw1", Path: cOctets, Time: at(0), Value: model.Uint(100)},
		{Target: "sw2", Path: cHost, Time: at(0), Value: model.String("old")},
		{Target: "sw1", Path: cOctets, Time: at(time.Minute), Value: model.Uint(200)},
		{Target: "sw1", Path: cOctets, Time: at(2 * time.Minute), Value: model.Uint(300)},
	}); err != nil {
		t.Fatal(err)
	}
	s, err := New(Config{Listen: "127.0.0.1:0", ExpireAfter: confval.Duration(time.Hour)}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	s.SetHistory(db)
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Stop(context.Background()) })
	now := time.Now().UnixNano()
	s.Update([]model.Update{
		{Target: "sw1", Path: cOctets, Time: now, Value: model.Uint(1234)},
		{Target: "sw1", Path: cOper, Time: now, Value: model.String("UP")},
		{Target: "sw1", Path: cHost, Time: now, Value: model.String("sw1")},
		{Target: "sw2", Path: cHost, Time: now, Value: model.String("sw2")},
	})
	return s
}

func valString(tv *gpb.TypedValue) string {
	switch v := tv.GetValue().(type) {
	case *gpb.TypedValue_JsonVal:
		return "json:" + string(v.JsonVal)
	case *gpb.TypedValue_JsonIetfVal:
		return "ietf:" + string(v.JsonIetfVal)
	case *gpb.TypedValue_UintVal:
		return fmt.Sprintf("uint:%d", v.UintVal)
	case *gpb.TypedValue_StringVal:
		return "string:" + v.StringVal
	}
	return fmt.Sprintf("other:%v", tv)
}

func render(n *gpb.Notification) []string {
	target := n.GetPrefix().GetTarget()
	if target == "" {
		target = "-"
	}
	if len(n.GetUpdate()) == 0 && len(n.GetDelete()) == 0 {
		return []string{"empty " + target}
	}
	var out []string
	for _, u := range n.GetUpdate() {
		out = append(out, target+" "+model.FromGNMI(n.GetPrefix(), u.GetPath()).String()+" "+valString(u.GetVal()))
	}
	for _, d := range n.GetDelete() {
		out = append(out, "delete "+target+" "+model.FromGNMI(n.GetPrefix(), d).String())
	}
	return out
}

// sortRounds sorts the lines between "sync" lines (the order of leaves in
// one round is not specified).
func sortRounds(lines []string) []string {
	out := slices.Clone(lines)
	start := 0
	for i := 0; i <= len(out); i++ {
		if i == len(out) || out[i] == "sync" {
			slices.Sort(out[start:i])
			start = i + 1
		}
	}
	return out
}

func gp(p string) *gpb.Path {
	if p == "/" {
		return &gpb.Path{}
	}
	return elems(p)
}

func depthExt(level uint32) []*gnmi_ext.Extension {
	return []*gnmi_ext.Extension{{Ext: &gnmi_ext.Extension_Depth{Depth: &gnmi_ext.Depth{Level: level}}}}
}

func snapshotExt(ts int64) []*gnmi_ext.Extension {
	return []*gnmi_ext.Extension{{Ext: &gnmi_ext.Extension_History{History: &gnmi_ext.History{Request: &gnmi_ext.History_SnapshotTime{SnapshotTime: ts}}}}}
}

func rangeExt(start, end int64) []*gnmi_ext.Extension {
	return []*gnmi_ext.Extension{{Ext: &gnmi_ext.Extension_History{History: &gnmi_ext.History{Request: &gnmi_ext.History_Range{Range: &gnmi_ext.TimeRange{Start: start, End: end}}}}}}
}

var masterArbitration = []*gnmi_ext.Extension{{Ext: &gnmi_ext.Extension_MasterArbitration{MasterArbitration: &gnmi_ext.MasterArbitration{}}}}

func TestConformanceGet(t *testing.T) {
	s := conformanceServer(t)
	c := dial(t, s.Addr())
	sw1 := &gpb.Path{Target: "sw1"}
	get := func(prefix *gpb.Path, enc gpb.Encoding, paths ...string) *gpb.GetRequest {
		r := &gpb.GetRequest{Prefix: prefix, Encoding: enc}
		for _, p := range paths {
			r.Path = append(r.Path, gp(p))
		}
		return r
	}
	with := func(r *gpb.GetRequest, f func(*gpb.GetRequest)) *gpb.GetRequest { f(r); return r }
	for _, tc := range []struct {
		name string
		req  *gpb.GetRequest
		code codes.Code
		want []string
	}{
		{"encoding JSON (the default): json_val", get(sw1, gpb.Encoding_JSON, "/interfaces"), codes.OK,
			[]string{"sw1 " + cOctets + " json:1234", "sw1 " + cOper + ` json:"UP"`}},
		{"encoding JSON_IETF: json_ietf_val, 64-bit integers as strings", get(sw1, gpb.Encoding_JSON_IETF, "/interfaces"), codes.OK,
			[]string{"sw1 " + cOctets + ` ietf:"1234"`, "sw1 " + cOper + ` ietf:"UP"`}},
		{"encoding PROTO: typed scalars", get(sw1, gpb.Encoding_PROTO, "/interfaces"), codes.OK,
			[]string{"sw1 " + cOctets + " uint:1234", "sw1 " + cOper + " string:UP"}},
		{"encoding BYTES: refused", get(sw1, gpb.Encoding_BYTES, "/interfaces"), codes.Unimplemented, nil},
		{"encoding ASCII: refused", get(sw1, gpb.Encoding_ASCII, "/interfaces"), codes.Unimplemented, nil},
		{"type STATE: every leaf", with(get(sw1, gpb.Encoding_PROTO, "/system"), func(r *gpb.GetRequest) { r.Type = gpb.GetRequest_STATE }), codes.OK,
			[]string{"sw1 " + cHost + " string:sw1"}},
		{"type OPERATIONAL: every leaf", with(get(sw1, gpb.Encoding_PROTO, "/system"), func(r *gpb.GetRequest) { r.Type = gpb.GetRequest_OPERATIONAL }), codes.OK,
			[]string{"sw1 " + cHost + " string:sw1"}},
		{"type CONFIG: no read/write leaves, one empty notification per path with data", with(get(sw1, gpb.Encoding_PROTO, "/system", "/interfaces"), func(r *gpb.GetRequest) { r.Type = gpb.GetRequest_CONFIG }), codes.OK,
			[]string{"empty sw1", "empty sw1"}},
		{"type CONFIG of a path without data: NotFound", with(get(sw1, gpb.Encoding_PROTO, "/nothing"), func(r *gpb.GetRequest) { r.Type = gpb.GetRequest_CONFIG }), codes.NotFound, nil},
		{"unknown data type: refused", with(get(sw1, gpb.Encoding_PROTO, "/system"), func(r *gpb.GetRequest) { r.Type = 9 }), codes.InvalidArgument, nil},
		{"depth 1: the leaves right below the path", with(get(sw1, gpb.Encoding_PROTO, "/interfaces/interface/state"), func(r *gpb.GetRequest) { r.Extension = depthExt(1) }), codes.OK,
			[]string{"sw1 " + cOper + " string:UP"}},
		{"depth 2: two levels", with(get(sw1, gpb.Encoding_PROTO, "/interfaces/interface/state"), func(r *gpb.GetRequest) { r.Extension = depthExt(2) }), codes.OK,
			[]string{"sw1 " + cOctets + " uint:1234", "sw1 " + cOper + " string:UP"}},
		{"depth 0: no limit", with(get(sw1, gpb.Encoding_PROTO, "/interfaces"), func(r *gpb.GetRequest) { r.Extension = depthExt(0) }), codes.OK,
			[]string{"sw1 " + cOctets + " uint:1234", "sw1 " + cOper + " string:UP"}},
		{"depth with ...: refused", with(get(sw1, gpb.Encoding_PROTO, "/interfaces/..."), func(r *gpb.GetRequest) { r.Extension = depthExt(1) }), codes.InvalidArgument, nil},
		{"history extension: Subscribe only", with(get(sw1, gpb.Encoding_PROTO, "/system"), func(r *gpb.GetRequest) { r.Extension = snapshotExt(at(0)) }), codes.InvalidArgument, nil},
		{"other extension: refused", with(get(sw1, gpb.Encoding_PROTO, "/system"), func(r *gpb.GetRequest) { r.Extension = masterArbitration }), codes.Unimplemented, nil},
		{"use_models: refused (no models)", with(get(sw1, gpb.Encoding_PROTO, "/system"), func(r *gpb.GetRequest) {
			r.UseModels = []*gpb.ModelData{{Name: "openconfig-interfaces"}}
		}), codes.Unimplemented, nil},
		{"prefix with elements", get(&gpb.Path{Target: "sw1", Elem: []*gpb.PathElem{{Name: "system"}}}, gpb.Encoding_PROTO, "/state"), codes.OK,
			[]string{"sw1 " + cHost + " string:sw1"}},
		{"origin: ignored (one tree per target)", with(get(sw1, gpb.Encoding_PROTO, "/system"), func(r *gpb.GetRequest) { r.Path[0].Origin = "openconfig" }), codes.OK,
			[]string{"sw1 " + cHost + " string:sw1"}},
		{"origin in the prefix: ignored", get(&gpb.Path{Target: "sw1", Origin: "openconfig"}, gpb.Encoding_PROTO, "/system"), codes.OK,
			[]string{"sw1 " + cHost + " string:sw1"}},
		{"origin in both prefix and path: refused", with(get(&gpb.Path{Target: "sw1", Origin: "openconfig"}, gpb.Encoding_PROTO, "/system"), func(r *gpb.GetRequest) { r.Path[0].Origin = "openconfig" }), codes.InvalidArgument, nil},
		{"no target: every target, none named", get(nil, gpb.Encoding_PROTO, "/system"), codes.OK,
			[]string{"- " + cHost + " string:sw1", "- " + cHost + " string:sw2"}},
		{"target *: every target, each named", get(&gpb.Path{Target: "*"}, gpb.Encoding_PROTO, "/system"), codes.OK,
			[]string{"sw1 " + cHost + " string:sw1", "sw2 " + cHost + " string:sw2"}},
		{"unknown target: NotFound", get(&gpb.Path{Target: "sw9"}, gpb.Encoding_PROTO, "/system"), codes.NotFound, nil},
		{"path without data: NotFound", get(sw1, gpb.Encoding_PROTO, "/nothing"), codes.NotFound, nil},
		{"/meta leaves are not served", get(sw1, gpb.Encoding_PROTO, "/meta"), codes.NotFound, nil},
		{"root: data leaves only", get(sw1, gpb.Encoding_PROTO, "/"), codes.OK,
			[]string{"sw1 " + cOctets + " uint:1234", "sw1 " + cOper + " string:UP", "sw1 " + cHost + " string:sw1"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			r, err := c.Get(ctx, tc.req)
			if status.Code(err) != tc.code {
				t.Fatalf("code %v (%v), want %v", status.Code(err), err, tc.code)
			}
			var got []string
			for _, n := range r.GetNotification() {
				got = append(got, render(n)...)
			}
			if !slices.Equal(sortRounds(got), sortRounds(tc.want)) {
				t.Errorf("got\n  %s\nwant\n  %s", strings.Join(got, "\n  "), strings.Join(tc.want, "\n  "))
			}
		})
	}
}

// subscribeLines runs one Subscribe RPC: first, then after each sync
// response the next of then (a POLL's polls); a STREAM without history is
// ended by the client after its first sync response, everything else is
// read to its end.
func subscribeLines(t *testing.T, c gpb.GNMIClient, first *gpb.SubscribeRequest, then ...*gpb.SubscribeRequest) ([]string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := c.Subscribe(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Send(first); err != nil {
		t.Fatal(err)
	}
	list := first.GetSubscribe()
	live := list.GetMode() == gpb.SubscriptionList_STREAM && len(then) == 0
	for _, e := range first.GetExtension() {
		live = live && e.GetHistory() == nil
	}
	if len(then) == 0 { // a STREAM goes on after its client closed its side
		if err := st.CloseSend(); err != nil {
			t.Fatal(err)
		}
	}
	var lines []string
	for {
		r, err := st.Recv()
		if errors.Is(err, io.EOF) {
			return lines, nil
		}
		if err != nil {
			return lines, err
		}
		if !r.GetSyncResponse() {
			lines = append(lines, render(r.GetUpdate())...)
			continue
		}
		lines = append(lines, "sync")
		switch {
		case live:
			return lines, nil
		case len(then) > 0:
			if err := st.Send(then[0]); err != nil {
				t.Fatal(err)
			}
			if then = then[1:]; len(then) == 0 && list.GetMode() == gpb.SubscriptionList_POLL {
				st.CloseSend()
			}
		}
	}
}

func TestConformanceSubscribe(t *testing.T) {
	s := conformanceServer(t)
	c := dial(t, s.Addr())
	sw1 := &gpb.Path{Target: "sw1"}
	list := func(prefix *gpb.Path, mode gpb.SubscriptionList_Mode, enc gpb.Encoding, paths ...string) *gpb.SubscriptionList {
		l := &gpb.SubscriptionList{Prefix: prefix, Mode: mode, Encoding: enc}
		for _, p := range paths {
			l.Subscription = append(l.Subscription, &gpb.Subscription{Path: gp(p)})
		}
		return l
	}
	req := func(l *gpb.SubscriptionList, ext ...*gnmi_ext.Extension) *gpb.SubscribeRequest {
		return &gpb.SubscribeRequest{Request: &gpb.SubscribeRequest_Subscribe{Subscribe: l}, Extension: ext}
	}
	with := func(l *gpb.SubscriptionList, f func(*gpb.SubscriptionList)) *gpb.SubscriptionList { f(l); return l }
	subMode := func(m gpb.SubscriptionMode, sample, heartbeat time.Duration) func(*gpb.SubscriptionList) {
		return func(l *gpb.SubscriptionList) {
			for _, s := range l.Subscription {
				s.Mode, s.SampleInterval, s.HeartbeatInterval = m, uint64(sample), uint64(heartbeat)
			}
		}
	}
	poll := &gpb.SubscribeRequest{Request: &gpb.SubscribeRequest_Poll{Poll: &gpb.Poll{}}}
	ONCE, POLL, STREAM := gpb.SubscriptionList_ONCE, gpb.SubscriptionList_POLL, gpb.SubscriptionList_STREAM
	JSON, IETF, PROTO := gpb.Encoding_JSON, gpb.Encoding_JSON_IETF, gpb.Encoding_PROTO
	octets, oper, host := "sw1 "+cOctets, "sw1 "+cOper, "sw1 "+cHost
	for _, tc := range []struct {
		name    string
		first   *gpb.SubscribeRequest
		then    []*gpb.SubscribeRequest
		code    codes.Code
		want    []string
		ordered bool // the lines' order within a round matters
	}{
		{"ONCE JSON", req(list(sw1, ONCE, JSON, "/interfaces")), nil, codes.OK, []string{octets + " json:1234", oper + ` json:"UP"`, "sync"}, false},
		{"ONCE JSON_IETF", req(list(sw1, ONCE, IETF, "/interfaces")), nil, codes.OK, []string{octets + ` ietf:"1234"`, oper + ` ietf:"UP"`, "sync"}, false},
		{"ONCE PROTO", req(list(sw1, ONCE, PROTO, "/interfaces")), nil, codes.OK, []string{octets + " uint:1234", oper + " string:UP", "sync"}, false},
		{"ONCE BYTES: refused", req(list(sw1, ONCE, gpb.Encoding_BYTES, "/interfaces")), nil, codes.Unimplemented, nil, false},
		{"ONCE ASCII: refused", req(list(sw1, ONCE, gpb.Encoding_ASCII, "/interfaces")), nil, codes.Unimplemented, nil, false},
		{"ONCE updates_only: the sync response alone", req(with(list(sw1, ONCE, PROTO, "/interfaces"), func(l *gpb.SubscriptionList) { l.UpdatesOnly = true })), nil, codes.OK, []string{"sync"}, false},
		{"ONCE root: no /meta leaves", req(list(sw1, ONCE, PROTO, "/")), nil, codes.OK, []string{octets + " uint:1234", oper + " string:UP", host + " string:sw1", "sync"}, false},
		{"ONCE two subscriptions", req(list(sw1, ONCE, PROTO, "/system", cOper)), nil, codes.OK, []string{oper + " string:UP", host + " string:sw1", "sync"}, false},
		{"ONCE depth 1", req(list(sw1, ONCE, PROTO, "/interfaces/interface/state"), depthExt(1)...), nil, codes.OK, []string{oper + " string:UP", "sync"}, false},
		{"ONCE origin: ignored", req(with(list(sw1, ONCE, PROTO, "/system"), func(l *gpb.SubscriptionList) { l.Subscription[0].Path.Origin = "openconfig" })), nil, codes.OK, []string{host + " string:sw1", "sync"}, false},
		{"ONCE no target: every target, none named", req(list(nil, ONCE, PROTO, "/system")), nil, codes.OK, []string{"- " + cHost + " string:sw1", "- " + cHost + " string:sw2", "sync"}, false},
		{"ONCE target *: each named", req(list(&gpb.Path{Target: "*"}, ONCE, PROTO, "/system")), nil, codes.OK, []string{host + " string:sw1", "sw2 " + cHost + " string:sw2", "sync"}, false},
		{"ONCE unknown target: NotFound", req(list(&gpb.Path{Target: "sw9"}, ONCE, PROTO, "/system")), nil, codes.NotFound, nil, false},
		{"ONCE use_models: refused", req(with(list(sw1, ONCE, PROTO, "/system"), func(l *gpb.SubscriptionList) { l.UseModels = []*gpb.ModelData{{Name: "openconfig-system"}} })), nil, codes.Unimplemented, nil, false},
		{"ONCE other extension: refused", req(list(sw1, ONCE, PROTO, "/system"), masterArbitration...), nil, codes.Unimplemented, nil, false},
		{"ONCE qos marking: refused", req(with(list(sw1, ONCE, PROTO, "/system"), func(l *gpb.SubscriptionList) { l.Qos = &gpb.QOSMarking{Marking: 46} })), nil, codes.Unimplemented, nil, false},
		{"ONCE qos marking 0: the default, served", req(with(list(sw1, ONCE, PROTO, "/system"), func(l *gpb.SubscriptionList) { l.Qos = &gpb.QOSMarking{} })), nil, codes.OK, []string{host + " string:sw1", "sync"}, false},
		{"ONCE allow_aggregation: nothing is eligible, one leaf per notification", req(with(list(sw1, ONCE, PROTO, "/system"), func(l *gpb.SubscriptionList) { l.AllowAggregation = true })), nil, codes.OK, []string{host + " string:sw1", "sync"}, false},
		{"no subscriptions: refused", req(list(sw1, ONCE, PROTO)), nil, codes.InvalidArgument, nil, false},
		{"a poll first: refused", poll, nil, codes.InvalidArgument, nil, false},
		{"unknown list mode: refused", req(list(sw1, 7, PROTO, "/system")), nil, codes.InvalidArgument, nil, false},
		{"POLL: a round at the start and per poll", req(list(sw1, POLL, PROTO, "/system")), []*gpb.SubscribeRequest{poll, poll}, codes.OK,
			[]string{host + " string:sw1", "sync", host + " string:sw1", "sync", host + " string:sw1", "sync"}, false},
		{"POLL updates_only: the first round is the sync alone", req(with(list(sw1, POLL, JSON, "/system"), func(l *gpb.SubscriptionList) { l.UpdatesOnly = true })), []*gpb.SubscribeRequest{poll}, codes.OK,
			[]string{"sync", host + ` json:"sw1"`, "sync"}, false},
		{"POLL a second subscription list: refused", req(list(sw1, POLL, PROTO, "/system")), []*gpb.SubscribeRequest{req(list(sw1, POLL, PROTO, "/system"))}, codes.InvalidArgument,
			[]string{host + " string:sw1", "sync"}, false},
		{"STREAM SAMPLE JSON_IETF", req(with(list(sw1, STREAM, IETF, "/interfaces"), subMode(gpb.SubscriptionMode_SAMPLE, time.Second, 0))), nil, codes.OK,
			[]string{octets + ` ietf:"1234"`, oper + ` ietf:"UP"`, "sync"}, false},
		{"STREAM ON_CHANGE JSON", req(with(list(sw1, STREAM, JSON, "/interfaces"), subMode(gpb.SubscriptionMode_ON_CHANGE, 0, time.Second))), nil, codes.OK,
			[]string{octets + " json:1234", oper + ` json:"UP"`, "sync"}, false},
		{"STREAM TARGET_DEFINED PROTO", req(with(list(sw1, STREAM, PROTO, "/interfaces"), subMode(gpb.SubscriptionMode_TARGET_DEFINED, 0, 0))), nil, codes.OK,
			[]string{octets + " uint:1234", oper + " string:UP", "sync"}, false},
		{"STREAM updates_only: the sync first", req(with(list(sw1, STREAM, PROTO, "/interfaces"), func(l *gpb.SubscriptionList) { l.UpdatesOnly = true })), nil, codes.OK, []string{"sync"}, false},
		{"STREAM depth 1", req(with(list(sw1, STREAM, PROTO, "/interfaces/interface/state"), subMode(gpb.SubscriptionMode_ON_CHANGE, 0, 0)), depthExt(1)...), nil, codes.OK, []string{oper + " string:UP", "sync"}, false},
		{"STREAM a second subscription list: refused", req(list(sw1, STREAM, PROTO, "/system")), []*gpb.SubscribeRequest{req(list(sw1, STREAM, PROTO, "/system"))}, codes.InvalidArgument,
			[]string{host + " string:sw1", "sync"}, false},
		{"STREAM a poll: refused", req(list(sw1, STREAM, PROTO, "/system")), []*gpb.SubscribeRequest{poll}, codes.InvalidArgument,
			[]string{host + " string:sw1", "sync"}, false},
		{"STREAM BYTES: refused", req(list(sw1, STREAM, gpb.Encoding_BYTES, "/interfaces")), nil, codes.Unimplemented, nil, false},
		{"STREAM sample interval below the minimum: refused", req(with(list(sw1, STREAM, PROTO, "/interfaces"), subMode(gpb.SubscriptionMode_SAMPLE, MinSampleInterval/2, 0))), nil, codes.InvalidArgument, nil, false},
		{"STREAM heartbeat below the minimum: refused", req(with(list(sw1, STREAM, PROTO, "/interfaces"), subMode(gpb.SubscriptionMode_ON_CHANGE, 0, MinSampleInterval/2))), nil, codes.InvalidArgument, nil, false},
		{"STREAM unknown subscription mode: refused", req(with(list(sw1, STREAM, PROTO, "/interfaces"), subMode(9, 0, 0))), nil, codes.InvalidArgument, nil, false},
		{"history snapshot (ONCE): the values as they were", req(list(sw1, ONCE, PROTO, "/interfaces"), snapshotExt(at(90*time.Second))...), nil, codes.OK,
			[]string{octets + " uint:200", "sync"}, false},
		{"history snapshot, every target, JSON_IETF", req(list(&gpb.Path{Target: "*"}, ONCE, IETF, "/"), snapshotExt(at(30*time.Second))...), nil, codes.OK,
			[]string{octets + ` ietf:"100"`, "sw2 " + cHost + ` ietf:"old"`, "sync"}, false},
		{"history snapshot before anything was stored: the sync alone", req(list(sw1, ONCE, PROTO, "/interfaces"), snapshotExt(at(-time.Minute))...), nil, codes.OK,
			[]string{"sync"}, false},
		{"history snapshot with STREAM: refused", req(list(sw1, STREAM, PROTO, "/interfaces"), snapshotExt(at(0))...), nil, codes.InvalidArgument, nil, false},
		{"history snapshot in the future: refused", req(list(sw1, ONCE, PROTO, "/interfaces"), snapshotExt(time.Now().Add(time.Hour).UnixNano())...), nil, codes.Unimplemented, nil, false},
		{"history range (STREAM): the tree before start, sync, then the updates in [start, end) in time order", req(list(sw1, STREAM, PROTO, "/interfaces"), rangeExt(at(30*time.Second), at(2*time.Minute))...), nil, codes.OK,
			[]string{octets + " uint:100", "sync", octets + " uint:200"}, true},
		{"history range with updates_only: the updates alone", req(with(list(sw1, STREAM, PROTO, "/interfaces"), func(l *gpb.SubscriptionList) { l.UpdatesOnly = true }), rangeExt(at(0), at(3*time.Minute))...), nil, codes.OK,
			[]string{"sync", octets + " uint:100", octets + " uint:200", octets + " uint:300"}, true},
		{"history range of a target the live cache no longer has", req(list(&gpb.Path{Target: "sw7"}, STREAM, PROTO, "/"), rangeExt(at(0), at(3*time.Minute))...), nil, codes.OK,
			[]string{"sync"}, true},
		{"history range with ONCE: refused", req(list(sw1, ONCE, PROTO, "/interfaces"), rangeExt(at(0), at(time.Minute))...), nil, codes.InvalidArgument, nil, false},
		{"history range start after end: refused", req(list(sw1, STREAM, PROTO, "/interfaces"), rangeExt(at(time.Minute), at(0))...), nil, codes.InvalidArgument, nil, false},
		{"history range ending in the future: followed until its end", req(list(sw1, STREAM, PROTO, "/interfaces"), rangeExt(at(90*time.Second), time.Now().Add(time.Second).UnixNano())...), nil, codes.OK,
			[]string{octets + " uint:200", octets + " uint:300", "sync"}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := subscribeLines(t, c, tc.first, tc.then...)
			if status.Code(err) != tc.code {
				t.Fatalf("code %v (%v), want %v; got %q", status.Code(err), err, tc.code, got)
			}
			g, w := got, tc.want
			if !tc.ordered {
				g, w = sortRounds(g), sortRounds(w)
			}
			if !slices.Equal(g, w) {
				t.Errorf("got\n  %s\nwant\n  %s", strings.Join(got, "\n  "), strings.Join(tc.want, "\n  "))
			}
		})
	}
}

// A server without the telemetry store refuses the history extension.
func TestHistoryWithoutStore(t *testing.T) {
	s := start(t, Config{})
	s.Update(sample(time.Now().UnixNano()))
	l := &gpb.SubscriptionList{Prefix: &gpb.Path{Target: "sw1"}, Mode: gpb.SubscriptionList_ONCE, Subscription: []*gpb.Subscription{{Path: &gpb.Path{}}}}
	_, err := subscribeLines(t, dial(t, s.Addr()), &gpb.SubscribeRequest{Request: &gpb.SubscribeRequest_Subscribe{Subscribe: l}, Extension: snapshotExt(time.Now().UnixNano())})
	if status.Code(err) != codes.Unimplemented {
		t.Fatalf("history without a store: %v, want Unimplemented", err)
	}
}

// Capabilities lists exactly the encodings Get and Subscribe answer, and
// each of them is answered.
func TestCapabilitiesMatchWhatIsServed(t *testing.T) {
	s := conformanceServer(t)
	c := dial(t, s.Addr())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	caps, err := c.Capabilities(ctx, &gpb.CapabilityRequest{})
	if err != nil {
		t.Fatal(err)
	}
	advertised := map[gpb.Encoding]bool{}
	for _, e := range caps.GetSupportedEncodings() {
		advertised[e] = true
	}
	for e := range gpb.Encoding_name {
		enc := gpb.Encoding(e)
		_, gerr := c.Get(ctx, &gpb.GetRequest{Prefix: &gpb.Path{Target: "sw1"}, Encoding: enc})
		_, serr := subscribeLines(t, c, &gpb.SubscribeRequest{Request: &gpb.SubscribeRequest_Subscribe{Subscribe: &gpb.SubscriptionList{
			Prefix: &gpb.Path{Target: "sw1"}, Mode: gpb.SubscriptionList_ONCE, Encoding: enc, Subscription: []*gpb.Subscription{{Path: &gpb.Path{}}}}}})
		for what, err := range map[string]error{"get": gerr, "subscribe": serr} {
			want := codes.Unimplemented
			if advertised[enc] {
				want = codes.OK
			}
			if status.Code(err) != want {
				t.Errorf("%s with %v (advertised %v): %v, want %v", what, enc, advertised[enc], err, want)
			}
		}
	}
	if len(caps.GetSupportedModels()) != 0 {
		t.Errorf("models %v: the server knows none", caps.GetSupportedModels())
	}
}

// SAMPLE and TARGET_DEFINED with sample_interval 0 sample at the lowest
// interval served, MinSampleInterval, as the specification asks.
func TestSampleIntervalZero(t *testing.T) {
	s := start(t, Config{})
	s.Update(sample(time.Now().UnixNano()))
	c := dial(t, s.Addr())
	for _, mode := range []gpb.SubscriptionMode{gpb.SubscriptionMode_SAMPLE, gpb.SubscriptionMode_TARGET_DEFINED} {
		ctx, cancel := context.WithTimeout(context.Background(), 2*MinSampleInterval+MinSampleInterval/2)
		st, err := c.Subscribe(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := st.Send(&gpb.SubscribeRequest{Request: &gpb.SubscribeRequest_Subscribe{Subscribe: &gpb.SubscriptionList{
			Prefix: &gpb.Path{Target: "sw1"}, Mode: gpb.SubscriptionList_STREAM, UpdatesOnly: true,
			Subscription: []*gpb.Subscription{{Path: elems(pathOctets0), Mode: mode}}}}}); err != nil {
			t.Fatal(err)
		}
		n := 0
		for {
			r, err := st.Recv()
			if err != nil {
				break
			}
			n += len(r.GetUpdate().GetUpdate())
		}
		cancel()
		if n < 1 || n > 3 {
			t.Errorf("%v with interval 0: %d samples in 2.5 intervals, want 2 (one per %v)", mode, n, MinSampleInterval)
		}
	}
}

// gnmi_cli sends the history extension in a text-proto request and prints
// what the store kept: a snapshot (ONCE) and a range (STREAM).
func TestGnmiCLIHistory(t *testing.T) {
	cli := gnmitest.CLI(t)
	s := conformanceServer(t)
	for name, tc := range map[string]struct {
		req  string
		want []string
	}{
		"snapshot": {fmt.Sprintf(`subscribe: {prefix: {target: "sw1"} mode: ONCE encoding: PROTO subscription: {path: {elem: {name: "interfaces"}}}} extension: {history: {snapshot_time: %d}}`, at(90*time.Second)),
			[]string{"in-octets, 200"}},
		"range": {fmt.Sprintf(`subscribe: {prefix: {target: "sw1"} mode: STREAM encoding: PROTO updates_only: true subscription: {path: {elem: {name: "interfaces"}}}} extension: {history: {range: {start: %d end: %d}}}`, at(30*time.Second), at(3*time.Minute)),
			[]string{"in-octets, 200\n", "in-octets, 300\n"}},
	} {
		t.Run(name, func(t *testing.T) {
			out, err := exec.Command(cli, "-address", s.Addr(), "-insecure", "-client_types", "gnmi", "-proto", tc.req,
				"-display_type", "single", "-timeout", "10s", "-streaming_duration", "5s").CombinedOutput()
			if err != nil {
				t.Fatalf("gnmi_cli: %v\n%s", err, out)
			}
			for _, w := range tc.want {
				if !strings.Contains(string(out), w) {
					t.Errorf("gnmi_cli output lacks %q:\n%s", w, out)
				}
			}
		})
	}
}
