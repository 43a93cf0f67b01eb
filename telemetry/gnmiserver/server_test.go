package gnmiserver

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	gpb "github.com/openconfig/gnmi/proto/gnmi"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	"github.com/outpost-edge/outpost/internal/confval"
	"github.com/outpost-edge/outpost/internal/gnmitest"
	"github.com/outpost-edge/outpost/telemetry/model"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("github.com/golang/glog.(*fileSink).flushDaemon"),
		goleak.IgnoreTopFunction("github.com/golang/glog.(*loggingT).flushDaemon"))
}

func start(t *testing.T, cfg Config) *Server {
	t.Helper()
	cfg.Listen = "127.0.0.1:0"
	s, err := New(cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Stop(context.Background()) })
	return s
}

func sample(ts int64) []model.Update {
	return []model.Update{
		{Target: "sw1", Path: "/interfaces/interface[name=eth0]/state/counters/in-octets", Time: ts, Value: model.Uint(1234)},
		{Target: "sw1", Path: "/interfaces/interface[name=eth0]/state/oper-status", Time: ts, Value: model.String("UP")},
		{Target: "sw1", Path: "/system/state/hostname", Time: ts, Value: model.String("sw1")},
	}
}

// gnmi_cli subscribes (ONCE) to Outpost's server and prints what was collected.
func TestGnmiCLIOnce(t *testing.T) {
	cli := gnmitest.CLI(t)
	s := start(t, Config{})
	s.Update(sample(time.Now().UnixNano()))
	out, err := exec.Command(cli, "-address", s.Addr(), "-insecure", "-client_types", "gnmi", "-target", "sw1", "-query", "/", "-query_type", "once", "-display_type", "single", "-timeout", "10s").CombinedOutput()
	if err != nil {
		t.Fatalf("gnmi_cli: %v\n%s", err, out)
	}
	o := string(out)
	for _, want := range []string{"in-octets", "1234", "oper-status", "UP", "hostname"} {
		if !strings.Contains(o, want) {
			t.Errorf("gnmi_cli output lacks %q:\n%s", want, o)
		}
	}
	if strings.Contains(o, "meta") { // the cache's /meta/connected and /meta/sync are not served
		t.Errorf("gnmi_cli output has /meta leaves:\n%s", o)
	}
}

func dial(t *testing.T, addr string) gpb.GNMIClient {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return gpb.NewGNMIClient(conn)
}

// STREAM delivers the cached values, sync, then later updates; POLL answers each poll.
func TestStreamPollAndGet(t *testing.T) {
	s := start(t, Config{})
	ts := time.Now().UnixNano()
	s.Update(sample(ts))
	c := dial(t, s.Addr())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	st, err := c.Subscribe(ctx)
	if err != nil {
		t.Fatal(err)
	}
	req := &gpb.SubscribeRequest{Request: &gpb.SubscribeRequest_Subscribe{Subscribe: &gpb.SubscriptionList{
		Prefix: &gpb.Path{Target: "sw1"}, Mode: gpb.SubscriptionList_STREAM, Encoding: gpb.Encoding_PROTO,
		Subscription: []*gpb.Subscription{{Path: &gpb.Path{Elem: []*gpb.PathElem{{Name: "interfaces"}}}}},
	}}}
	if err := st.Send(req); err != nil {
		t.Fatal(err)
	}
	n, synced := 0, false
	for !synced {
		r, err := st.Recv()
		if err != nil {
			t.Fatal(err)
		}
		n += len(r.GetUpdate().GetUpdate())
		synced = r.GetSyncResponse()
	}
	if n != 2 {
		t.Errorf("initial updates %d, want 2", n)
	}
	s.Update([]model.Update{{Target: "sw1", Path: "/interfaces/interface[name=eth0]/state/counters/in-octets", Time: ts + 1, Value: model.Uint(1300)}})
	r, err := st.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if u := r.GetUpdate().GetUpdate(); len(u) != 1 || u[0].GetVal().GetUintVal() != 1300 {
		t.Errorf("streamed %v", r)
	}

	// POLL
	ps, err := c.Subscribe(ctx)
	if err != nil {
		t.Fatal(err)
	}
	preq := &gpb.SubscribeRequest{Request: &gpb.SubscribeRequest_Subscribe{Subscribe: &gpb.SubscriptionList{Prefix: &gpb.Path{Target: "sw1"}, Mode: gpb.SubscriptionList_POLL,
		Subscription: []*gpb.Subscription{{Path: &gpb.Path{Elem: []*gpb.PathElem{{Name: "system"}}}}}}}}
	ps.Send(preq)
	for round := 0; round < 2; round++ {
		if round > 0 {
			ps.Send(&gpb.SubscribeRequest{Request: &gpb.SubscribeRequest_Poll{Poll: &gpb.Poll{}}})
		}
		got := 0
		for {
			r, err := ps.Recv()
			if err != nil {
				t.Fatal(err)
			}
			got += len(r.GetUpdate().GetUpdate())
			if r.GetSyncResponse() {
				break
			}
		}
		if got != 1 {
			t.Errorf("poll round %d: %d updates", round, got)
		}
	}

	g, err := c.Get(ctx, &gpb.GetRequest{Prefix: &gpb.Path{Target: "sw1"}, Path: []*gpb.Path{{Elem: []*gpb.PathElem{{Name: "system"}}}}, Encoding: gpb.Encoding_PROTO})
	if err != nil {
		t.Fatal(err)
	}
	if len(g.Notification) != 1 || g.Notification[0].Update[0].Val.GetStringVal() != "sw1" {
		t.Errorf("get %v", g)
	}
}

func TestAuth(t *testing.T) {
	pf := filepath.Join(t.TempDir(), "pass")
	os.WriteFile(pf, []byte("s3cret\n"), 0o600)
	s := start(t, Config{Username: "ops", PasswordFile: pf})
	s.Update(sample(time.Now().UnixNano()))
	c := dial(t, s.Addr())
	req := &gpb.GetRequest{Prefix: &gpb.Path{Target: "sw1"}}
	if _, err := c.Get(context.Background(), req); err == nil || !strings.Contains(err.Error(), "Unauthenticated") {
		t.Fatalf("no credentials: %v", err)
	}
	ctx := metadata.AppendToOutgoingContext(context.Background(), "username", "ops", "password", "wrong")
	if _, err := c.Get(ctx, req); err == nil {
		t.Fatal("wrong password accepted")
	}
	ctx = metadata.AppendToOutgoingContext(context.Background(), "username", "ops", "password", "s3cret")
	if _, err := c.Get(ctx, req); err != nil {
		t.Fatal(err)
	}
}

// gnmi_cli streams from Outpost's server and sees values collected after it subscribed.
func TestGnmiCLIStream(t *testing.T) {
	cli := gnmitest.CLI(t)
	s := start(t, Config{})
	ts := time.Now().UnixNano()
	s.Update(sample(ts))
	cmd := exec.Command(cli, "-address", s.Addr(), "-insecure", "-client_types", "gnmi", "-target", "sw1", "-query", "/interfaces", "-query_type", "streaming",
		"-streaming_duration", "2s", "-display_type", "single", "-timeout", "10s")
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(700 * time.Millisecond)
	s.Update([]model.Update{{Target: "sw1", Path: "/interfaces/interface[name=eth0]/state/counters/in-octets", Time: ts + 1, Value: model.Uint(987654)}})
	// gnmi_cli ends a stream at -streaming_duration with DeadlineExceeded and exit status 1.
	if err := cmd.Wait(); err != nil && !strings.Contains(out.String(), "DeadlineExceeded") {
		t.Fatalf("gnmi_cli: %v\n%s", err, out.String())
	}
	if o := out.String(); !strings.Contains(o, "1234") || !strings.Contains(o, "987654") {
		t.Errorf("gnmi_cli stream output lacks the initial or the later value:\n%s", o)
	}
}

// BenchmarkUpdate is the cost of one update into the served cache (path
// parsing, list keys learnt, expiry bookkeeping, cache insert) over 1000
// series of one target.
func BenchmarkUpdate(b *testing.B) {
	s, err := New(Config{ExpireAfter: confval.Duration(time.Hour)}, slog.New(slog.DiscardHandler))
	if err != nil {
		b.Fatal(err)
	}
	us := make([]model.Update, 1000)
	for i := range us {
		us[i] = model.Update{Target: "sw1", Path: fmt.Sprintf("/interfaces/interface[name=eth%d]/state/counters/in-octets", i), Value: model.Uint(uint64(i))}
	}
	b.ResetTimer()
	for n := 0; n < b.N; n += len(us) {
		ts := time.Now().UnixNano()
		for i := range us {
			us[i].Time = ts
		}
		s.Update(us)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "updates/s")
}

// gnmi_cli (a client this project did not write) asks for capabilities and
// for Get in each encoding: the advertised ones are answered in their own
// value fields, BYTES is refused with Unimplemented.
func TestGnmiCLICapabilitiesAndGetEncodings(t *testing.T) {
	cli := gnmitest.CLI(t)
	s := start(t, Config{})
	s.Update(sample(time.Now().UnixNano()))
	run := func(args ...string) (string, error) {
		out, err := exec.Command(cli, append([]string{"-address", s.Addr(), "-insecure", "-timeout", "10s"}, args...)...).CombinedOutput()
		return string(out), err
	}
	out, err := run("-capabilities")
	if err != nil {
		t.Fatalf("gnmi_cli -capabilities: %v\n%s", err, out)
	}
	for _, want := range []string{"JSON", "JSON_IETF", "PROTO"} {
		if !strings.Contains(out, "supported_encodings: "+want+"\n") {
			t.Errorf("capabilities lack %s:\n%s", want, out)
		}
	}
	if strings.Contains(out, "BYTES") || strings.Contains(out, "ASCII") {
		t.Errorf("capabilities list an encoding that is refused:\n%s", out)
	}
	const req = `prefix: <target: "sw1"> path: <elem: <name: "interfaces">> encoding: `
	for enc, want := range map[string][]string{
		"JSON":      {`json_val: "1234"`, `json_val: "\"UP\""`},
		"JSON_IETF": {`json_ietf_val: "\"1234\""`, `json_ietf_val: "\"UP\""`},
		"PROTO":     {`uint_val: 1234`, `string_val: "UP"`},
	} {
		out, err := run("-get", "-proto", req+enc)
		if err != nil {
			t.Fatalf("gnmi_cli -get %s: %v\n%s", enc, err, out)
		}
		for _, w := range want {
			if !strings.Contains(out, w) {
				t.Errorf("get %s lacks %s:\n%s", enc, w, out)
			}
		}
	}
	if out, err := run("-get", "-proto", req+"BYTES"); err == nil || !strings.Contains(out, "Unimplemented") {
		t.Errorf("get BYTES: %v, want Unimplemented:\n%s", err, out)
	}
}
