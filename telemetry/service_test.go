package telemetry

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	gpb "github.com/openconfig/gnmi/proto/gnmi"
	fake "github.com/openconfig/gnmi/testing/fake/gnmi"
	fpb "github.com/openconfig/gnmi/testing/fake/proto"
	"github.com/openconfig/gnmi/value"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/outpost-edge/outpost/internal/confval"
	"github.com/outpost-edge/outpost/telemetry/gnmi"
	"github.com/outpost-edge/outpost/telemetry/gnmiserver"
	"github.com/outpost-edge/outpost/telemetry/model"
	"github.com/outpost-edge/outpost/telemetry/tsdb"
)

func TestMain(m *testing.M) {
	// The fake gNMI agent logs every stream end through glog on stderr,
	// which go test mixes into benchmark lines: keep only fatal ones.
	_ = flag.Set("stderrthreshold", "FATAL")
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("github.com/golang/glog.(*fileSink).flushDaemon"),
		goleak.IgnoreTopFunction("github.com/golang/glog.(*loggingT).flushDaemon"),
		goleak.IgnoreAnyFunction("github.com/openconfig/gnmi/testing/fake/gnmi.(*Client).Run"))
}

type pubRec struct {
	mu   sync.Mutex
	msgs map[string][]byte
}

func (p *pubRec) Publish(_ context.Context, topic string, _ byte, payload []byte) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.msgs[topic] = payload
	return nil
}

type trigRec struct {
	mu    sync.Mutex
	calls []string
}

func (t *trigRec) Submit(task string, input []byte, source string) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.calls = append(t.calls, task+" "+source+" "+string(input))
	return nil
}

func notifications(n, per int) []*gpb.SubscribeResponse {
	var out []*gpb.SubscribeResponse
	ts := time.Now().UnixNano()
	for i := 0; i < n; i++ {
		no := &gpb.Notification{Timestamp: ts + int64(i), Prefix: &gpb.Path{Elem: []*gpb.PathElem{{Name: "interfaces"}, {Name: "interface", Key: map[string]string{"name": fmt.Sprintf("eth%d", i)}}}}}
		for j := 0; j < per; j++ {
			no.Update = append(no.Update, &gpb.Update{
				Path: &gpb.Path{Elem: []*gpb.PathElem{{Name: "state"}, {Name: "counters"}, {Name: fmt.Sprintf("c%d", j)}}},
				Val:  &gpb.TypedValue{Value: &gpb.TypedValue_UintVal{UintVal: uint64(i*per + j)}},
			})
		}
		out = append(out, &gpb.SubscribeResponse{Response: &gpb.SubscribeResponse_Update{Update: no}})
	}
	return out
}

func startAgent(tb testing.TB, resp []*gpb.SubscribeResponse) string {
	tb.Helper()
	srv := grpc.NewServer()
	a, err := fake.NewFromServer(srv, &fpb.Config{Target: "dev1", ClientType: fpb.Config_GRPC_GNMI,
		Generator: &fpb.Config_Fixed{Fixed: &fpb.FixedGenerator{Responses: resp}}})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { a.Close(); srv.Stop() })
	return a.Address()
}

func getJSON(t *testing.T, h http.Handler, url string, v any) int {
	t.Helper()
	rr := httptest.NewRecorder()
	h.ServeHTTP(rr, httptest.NewRequest("GET", url, nil))
	if err := json.Unmarshal(rr.Body.Bytes(), v); err != nil {
		t.Fatalf("%s: %v %s", url, err, rr.Body.String())
	}
	return rr.Code
}

// End to end: the fake gNMI agent → hub → store, gNMI server, MQTT and a
// trigger; the admin API answers; Stop leaves nothing running.
func TestServiceEndToEnd(t *testing.T) {
	addr := startAgent(t, notifications(3, 2))
	cfg := Config{
		GNMI: gnmi.Config{Targets: []gnmi.Target{{Name: "sw1", Address: addr, BackoffMin: confval.Duration(50 * time.Millisecond),
			Subscriptions: []gnmi.Subscription{{Paths: []string{"/interfaces"}}}}}},
		GNMIServer: gnmiserver.Config{Listen: "127.0.0.1:0"},
		MQTT:       []PublishRule{{Paths: []string{"/interfaces/interface[name=eth1]/..."}, MinInterval: confval.Duration(time.Hour)}},
		Triggers:   []TriggerRule{{Task: "alarm", Target: "sw*", Path: "/interfaces/interface/state/counters/c1", Condition: "> 4"}},
		Store:      tsdb.Config{FlushInterval: confval.Duration(50 * time.Millisecond)},
	}
	pub, trg := &pubRec{msgs: map[string][]byte{}}, &trigRec{}
	reg := prometheus.NewRegistry()
	s := New(cfg, t.TempDir(), nil, reg, Sinks{Publisher: pub, Trigger: trg})
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer s.Stop(context.Background())
	deadline := time.Now().Add(10 * time.Second)
	for {
		st := s.Status()
		if len(st) == 1 && st[0].Updates >= 6 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no data: %+v", st)
		}
		time.Sleep(20 * time.Millisecond)
	}
	h := s.Handler()
	var lat struct{ Points []map[string]any }
	if code := getJSON(t, h, "/v1/telemetry/latest?target=sw1&path=/interfaces/interface[name=eth2]/...", &lat); code != 200 || len(lat.Points) != 2 {
		t.Fatalf("latest %d %+v", code, lat)
	}
	var q struct {
		Series []struct {
			Target, Path string
			Points       []map[string]any
		}
	}
	if code := getJSON(t, h, "/v1/telemetry/query?target=sw1&path=/interfaces/...&since=1h", &q); code != 200 || len(q.Series) != 6 {
		t.Fatalf("query %d %+v", code, q)
	}
	if code := getJSON(t, h, "/v1/telemetry/query?since=yesterday", &q); code != 400 {
		t.Errorf("bad since: %d", code)
	}
	var tg struct{ Targets []model.TargetStatus }
	if getJSON(t, h, "/v1/telemetry/targets", &tg); len(tg.Targets) != 1 || tg.Targets[0].Name != "sw1" {
		t.Errorf("targets %+v", tg)
	}
	// gNMI server has the data.
	if s.GNMIAddr() == "" {
		t.Fatal("gnmi server not listening")
	}
	gc, err := gnmi.New(Config{GNMI: gnmi.Config{Targets: []gnmi.Target{{Name: "sw1", Address: s.GNMIAddr()}}}}.WithDefaults().GNMI, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	us, err := gc.Get(context.Background(), "sw1", []string{"/interfaces/interface[name=eth0]"})
	gcClose(gc)
	if err != nil || len(us) != 2 {
		t.Fatalf("get from own gnmi server: %v %+v", err, us)
	}
	pub.mu.Lock()
	if len(pub.msgs) != 2 || pub.msgs["telemetry/sw1/interfaces/interface/name=eth1/state/counters/c0"] == nil {
		t.Errorf("mqtt %v", keys(pub.msgs))
	}
	pub.mu.Unlock()
	trg.mu.Lock()
	if len(trg.calls) == 0 || !strings.HasPrefix(trg.calls[0], "alarm telemetry {") || !strings.Contains(trg.calls[0], "eth2") {
		t.Errorf("triggers %v", trg.calls)
	}
	trg.mu.Unlock()
	mfs, _ := reg.Gather()
	names := map[string]bool{}
	for _, mf := range mfs {
		names[mf.GetName()] = true
	}
	for _, n := range []string{"outpost_telemetry_target_up", "outpost_telemetry_updates_total", "outpost_telemetry_store_points_total"} {
		if !names[n] {
			t.Errorf("metric %s missing", n)
		}
	}
	if err := s.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func gcClose(c *gnmi.Client) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	c.Run(ctx)
}

func keys(m map[string][]byte) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

func TestDisabledByDefault(t *testing.T) {
	s := New(Config{}, t.TempDir(), nil, nil, Sinks{})
	if s.Enabled() {
		t.Fatal("enabled with an empty config")
	}
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Latest("", ""); err != ErrDisabled {
		t.Errorf("latest: %v", err)
	}
	if err := s.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func TestStopAfterFailedStart(t *testing.T) {
	cfg := Config{GNMIServer: gnmiserver.Config{Listen: "127.0.0.1:1"}} // privileged port: refused as nobody, or in use
	s := New(cfg, t.TempDir(), nil, nil, Sinks{})
	s.cfg.GNMIServer.Listen = "256.0.0.1:0"
	if err := s.Start(context.Background()); err == nil {
		t.Fatal("start with a bad listen address succeeded")
	}
	if err := s.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
}

type discard struct{ n atomic.Int64 }

// benchGNMI measures updates per second from the fake gNMI agent through
// the gNMI client into sink (ONCE subscriptions repeated back to back; each
// round is 200 notifications of 100 updates).
func benchGNMI(b *testing.B, sink func([]model.Update), count func() int64) {
	addr := startAgent(b, notifications(200, 100))
	cfg := Config{GNMI: gnmi.Config{Targets: []gnmi.Target{{Name: "dev1", Address: addr,
		Subscriptions: []gnmi.Subscription{{Mode: "once", Interval: confval.Duration(time.Microsecond), Paths: []string{"/"}}}}}}}.WithDefaults()
	c, err := gnmi.New(cfg.GNMI, sink, nil)
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	b.ResetTimer()
	start := time.Now()
	go func() { c.Run(ctx); close(done) }()
	for count() < int64(b.N) {
		time.Sleep(time.Millisecond)
	}
	el := time.Since(start)
	b.StopTimer()
	cancel()
	<-done
	b.ReportMetric(float64(count())/el.Seconds(), "updates/s")
}

func BenchmarkGNMIToDiscard(b *testing.B) {
	var d discard
	benchGNMI(b, func(us []model.Update) { d.n.Add(int64(len(us))) }, d.n.Load)
}

func BenchmarkGNMIToStore(b *testing.B) {
	db, err := tsdb.Open(tsdb.Options{Dir: b.TempDir(), Cfg: Config{}.WithDefaults().Store})
	if err != nil {
		b.Fatal(err)
	}
	db.Start()
	defer db.Close()
	var n atomic.Int64
	benchGNMI(b, func(us []model.Update) { db.Append(us); n.Add(int64(len(us))) }, n.Load)
}

// BenchmarkGNMIRawStream is the baseline: a bare gRPC client that receives
// the same ONCE subscriptions and decodes every update the way a careful
// hand-written collector would (prefix and path joined into one string,
// the value through the gnmi module's value.ToScalar, target and timestamp
// kept), into a slice reused per notification.
func BenchmarkGNMIRawStream(b *testing.B) {
	addr := startAgent(b, notifications(200, 100))
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	c := gpb.NewGNMIClient(conn)
	req := &gpb.SubscribeRequest{Request: &gpb.SubscribeRequest_Subscribe{Subscribe: &gpb.SubscriptionList{Mode: gpb.SubscriptionList_ONCE,
		Subscription: []*gpb.Subscription{{Path: &gpb.Path{}}}}}}
	type decoded struct {
		target, path string
		time         int64
		value        any
	}
	var batch []decoded
	var sb strings.Builder
	writePath := func(p *gpb.Path) {
		for _, e := range p.GetElem() {
			sb.WriteByte('/')
			sb.WriteString(e.GetName())
			for k, v := range e.GetKey() {
				sb.WriteString("[" + k + "=" + v + "]")
			}
		}
	}
	n := 0
	b.ResetTimer()
	start := time.Now()
	for n < b.N {
		st, err := c.Subscribe(context.Background())
		if err != nil {
			b.Fatal(err)
		}
		st.Send(req)
		for {
			r, err := st.Recv()
			if err != nil || r.GetSyncResponse() {
				break
			}
			notif := r.GetUpdate()
			batch = batch[:0]
			for _, u := range notif.GetUpdate() {
				sb.Reset()
				writePath(notif.GetPrefix())
				writePath(u.GetPath())
				v, err := value.ToScalar(u.GetVal())
				if err != nil {
					b.Fatal(err)
				}
				batch = append(batch, decoded{target: notif.GetPrefix().GetTarget(), path: sb.String(), time: notif.GetTimestamp(), value: v})
			}
			n += len(batch)
		}
		st.CloseSend()
	}
	b.ReportMetric(float64(n)/time.Since(start).Seconds(), "updates/s")
}

// BenchmarkPipelineToStore is Outpost's side alone, without the fake agent
// and gRPC: notifications converted to updates (gnmi.Updates), through the
// hub into the store, gNMI server cache off.
func BenchmarkPipelineToStore(b *testing.B) {
	benchPipeline(b, true)
}

// BenchmarkPipelineToDiscard is the same conversion into a discarding hub.
func BenchmarkPipelineToDiscard(b *testing.B) {
	benchPipeline(b, false)
}

func benchPipeline(b *testing.B, store bool) {
	var db *tsdb.DB
	if store {
		var err error
		db, err = tsdb.Open(tsdb.Options{Dir: b.TempDir(), Cfg: Config{}.WithDefaults().Store})
		if err != nil {
			b.Fatal(err)
		}
		db.Start()
		defer db.Close()
	}
	h, err := newHub(Config{}, db, nil, Sinks{}, nil, nil)
	if err != nil {
		b.Fatal(err)
	}
	resp := notifications(200, 100)
	buf := make([]model.Update, 0, 128)
	b.ResetTimer()
	n := 0
	start := time.Now()
	for n < b.N {
		for _, r := range resp {
			buf = gnmi.Updates(buf[:0], "dev1", r.GetUpdate())
			h.publish(buf)
			n += len(buf)
		}
	}
	if db != nil {
		db.Flush()
	}
	b.ReportMetric(float64(n)/time.Since(start).Seconds(), "updates/s")
}

// BenchmarkGNMIMemoryPerTarget (one measurement per call) subscribes 100 targets (all served by one
// fake agent) in STREAM mode and reports the live heap per target once
// every stream has delivered, beside the heap before (the baseline).
func BenchmarkGNMIMemoryPerTarget(b *testing.B) {
	const n = 100
	addr := startAgent(b, notifications(10, 10))
	var ts []gnmi.Target
	for i := 0; i < n; i++ {
		ts = append(ts, gnmi.Target{Name: fmt.Sprintf("dev%03d", i), Address: addr,
			Subscriptions: []gnmi.Subscription{{Paths: []string{"/interfaces"}}}})
	}
	cfg := Config{GNMI: gnmi.Config{Targets: ts}}.WithDefaults()
	// One measurement whatever b.N is (the other benchmarks here run with a fixed -benchtime Nx).
	for range 1 {
		before := heap()
		c, err := gnmi.New(cfg.GNMI, func([]model.Update) {}, nil)
		if err != nil {
			b.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { c.Run(ctx); close(done) }()
		for {
			all := true
			for _, st := range c.Status() {
				if st.Updates == 0 {
					all = false
				}
			}
			if all {
				break
			}
			time.Sleep(5 * time.Millisecond)
		}
		after := heap()
		cancel()
		<-done
		b.ReportMetric(float64(after-before)/n, "B/target")
	}
}

func heap() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}
