package gnmi

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	gpb "github.com/openconfig/gnmi/proto/gnmi"
	fake "github.com/openconfig/gnmi/testing/fake/gnmi"
	fpb "github.com/openconfig/gnmi/testing/fake/proto"
	"go.uber.org/goleak"
	"google.golang.org/grpc"

	"github.com/outpost-edge/outpost/internal/confval"
	"github.com/outpost-edge/outpost/telemetry/model"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("github.com/golang/glog.(*fileSink).flushDaemon"),
		goleak.IgnoreTopFunction("github.com/golang/glog.(*loggingT).flushDaemon"),
		// The fake agent's per-client sender can outlive Close (POLL waits for a poll forever).
		goleak.IgnoreAnyFunction("github.com/openconfig/gnmi/testing/fake/gnmi.(*Client).Run"))
}

// agent is the openconfig fake gNMI agent in process on a random port,
// with the subscribe requests it received recorded.
type agent struct {
	*fake.Agent
	mu   sync.Mutex
	reqs []*gpb.SubscribeRequest
}

func (a *agent) requests() []*gpb.SubscribeRequest {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]*gpb.SubscribeRequest(nil), a.reqs...)
}

type recvStream struct {
	grpc.ServerStream
	a *agent
}

func (s recvStream) RecvMsg(m any) error {
	err := s.ServerStream.RecvMsg(m)
	if r, ok := m.(*gpb.SubscribeRequest); ok && err == nil {
		s.a.mu.Lock()
		s.a.reqs = append(s.a.reqs, r)
		s.a.mu.Unlock()
	}
	return err
}

// notifications builds n notifications of per updates each (current path encoding).
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

func startAgent(t testing.TB, cfg *fpb.Config) *agent {
	t.Helper()
	a := &agent{}
	srv := grpc.NewServer(grpc.StreamInterceptor(func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
		return h(srv, recvStream{ss, a})
	}))
	cfg.Port = 0
	ag, err := fake.NewFromServer(srv, cfg)
	if err != nil {
		t.Fatal(err)
	}
	a.Agent = ag
	t.Cleanup(func() { ag.Close(); srv.Stop() })
	return a
}

type rec struct {
	mu sync.Mutex
	us []model.Update
}

func (r *rec) sink(us []model.Update) {
	r.mu.Lock()
	r.us = append(r.us, us...)
	r.mu.Unlock()
}

func (r *rec) n() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.us)
}

func collect(addr string, subs ...Subscription) Config {
	return Config{Targets: []Target{{
		Name: "dev1", Address: addr, BackoffMin: confval.Duration(20 * time.Millisecond), BackoffMax: confval.Duration(100 * time.Millisecond),
		Subscriptions: subs,
	}}}.WithDefaults()
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func run(t *testing.T, c *Client) func() {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { c.Run(ctx); close(done) }()
	return func() { cancel(); <-done }
}

func TestSubscriptionModes(t *testing.T) {
	tests := []struct {
		name     string
		sub      Subscription
		mode     gpb.SubscriptionList_Mode
		subMode  gpb.SubscriptionMode
		interval uint64
	}{
		{"stream sample", Subscription{Mode: "stream", StreamMode: "sample", SampleInterval: confval.Duration(time.Second), Paths: []string{"/interfaces"}}, gpb.SubscriptionList_STREAM, gpb.SubscriptionMode_SAMPLE, uint64(time.Second)},
		{"stream on_change", Subscription{Mode: "stream", StreamMode: "on_change", HeartbeatInterval: confval.Duration(time.Second), Paths: []string{"/interfaces"}}, gpb.SubscriptionList_STREAM, gpb.SubscriptionMode_ON_CHANGE, 0},
		{"stream target_defined", Subscription{Mode: "stream", StreamMode: "target_defined", Paths: []string{"/interfaces"}, SuppressRedundant: true}, gpb.SubscriptionList_STREAM, gpb.SubscriptionMode_TARGET_DEFINED, 0},
		{"poll", Subscription{Mode: "poll", Interval: confval.Duration(50 * time.Millisecond), Paths: []string{"/interfaces"}}, gpb.SubscriptionList_POLL, gpb.SubscriptionMode_SAMPLE, 0},
		{"once", Subscription{Mode: "once", Interval: confval.Duration(50 * time.Millisecond), Paths: []string{"/interfaces"}}, gpb.SubscriptionList_ONCE, gpb.SubscriptionMode_SAMPLE, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := startAgent(t, &fpb.Config{Target: "dev1", ClientType: fpb.Config_GRPC_GNMI,
				Generator: &fpb.Config_Fixed{Fixed: &fpb.FixedGenerator{Responses: notifications(3, 4)}}})
			r := &rec{}
			c, err := New(collect(a.Address(), tt.sub), r.sink, slog.New(slog.DiscardHandler))
			if err != nil {
				t.Fatal(err)
			}
			stop := run(t, c)
			// The fake sends its 12 updates and then ends the stream (or, for
			// POLL, waits for a poll): a second round proves reconnect or poll.
			waitFor(t, "two rounds of updates", func() bool { return r.n() >= 24 })
			stop()
			reqs := a.requests()
			if len(reqs) == 0 {
				t.Fatal("agent saw no request")
			}
			l := reqs[0].GetSubscribe()
			if l.GetMode() != tt.mode || l.Subscription[0].GetMode() != tt.subMode || l.Subscription[0].SampleInterval != tt.interval {
				t.Errorf("request %v", reqs[0])
			}
			if tt.sub.SuppressRedundant != l.Subscription[0].SuppressRedundant {
				t.Errorf("suppress_redundant not sent")
			}
			if tt.mode == gpb.SubscriptionList_POLL {
				polls := 0
				for _, q := range reqs {
					if q.GetPoll() != nil {
						polls++
					}
				}
				if polls == 0 {
					t.Errorf("no poll sent: %v", reqs)
				}
			}
			r.mu.Lock()
			u := r.us[0]
			r.mu.Unlock()
			if u.Target != "dev1" || !strings.HasPrefix(u.Path, "/interfaces/interface[name=eth0]/state/counters/c") || u.Value.Kind != model.KindUint {
				t.Errorf("update %+v", u)
			}
			st := c.Status()[0]
			if st.Updates < 24 || st.LastUpdate.IsZero() {
				t.Errorf("status %+v", st)
			}
			if tt.mode == gpb.SubscriptionList_STREAM && st.Reconnects == 0 {
				t.Errorf("stream drop not counted as reconnect: %+v", st)
			}
		})
	}
}

// A stream that stays open without data is declared dead and reconnected.
func TestDeadStreamDetected(t *testing.T) {
	a := startAgent(t, &fpb.Config{Target: "dev1", ClientType: fpb.Config_GRPC_GNMI, DisableEof: true,
		Generator: &fpb.Config_Fixed{Fixed: &fpb.FixedGenerator{Responses: notifications(1, 1)}}})
	r := &rec{}
	c, err := New(collect(a.Address(), Subscription{Mode: "stream", StreamMode: "sample", SampleInterval: confval.Duration(100 * time.Millisecond), Paths: []string{"/"}}), r.sink, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	stop := run(t, c)
	defer stop()
	waitFor(t, "a stale stream to be replaced", func() bool { return len(a.requests()) >= 2 })
	st := c.Status()[0]
	if !strings.Contains(st.LastError, ErrStale.Error()) {
		t.Errorf("status %+v", st)
	}
}

func TestUnreachableTargetBacksOff(t *testing.T) {
	c, err := New(collect("127.0.0.1:1", Subscription{Paths: []string{"/"}}), nil, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	stop := run(t, c)
	time.Sleep(300 * time.Millisecond)
	stop()
	st := c.Status()[0]
	if st.Connected || st.Errors == 0 || st.Errors > 12 || st.LastError == "" {
		t.Errorf("status %+v", st)
	}
}

func TestDuplicateTargetRefused(t *testing.T) {
	cfg := collect("127.0.0.1:1", Subscription{Paths: []string{"/"}})
	cfg.Targets = append(cfg.Targets, cfg.Targets[0])
	if _, err := New(cfg, nil, slog.New(slog.DiscardHandler)); err == nil {
		t.Fatal("same target accepted twice")
	}
	_ = errors.New
}
