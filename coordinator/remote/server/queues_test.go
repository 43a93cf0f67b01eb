package server

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/coordinator/remote"
	"github.com/outpost-edge/outpost/internal/pgtest"
)

// poller polls one node as a node would, through the servers in turn,
// acknowledging every response in the next poll.
type poller struct {
	t      testing.TB
	hss    []*httptest.Server
	node   string
	ack    uint64
	req    remote.PollRequest
	polled int
}

// poll returns the calls one poll hands out.
func (p *poller) poll(capacity int) []remote.WireCall {
	p.t.Helper()
	r := p.req
	r.BootID, r.AckThrough, r.Capacity = "b", p.ack, capacity
	var resp remote.PollResponse
	code := call(http.DefaultClient, "POST", p.hss[p.polled%len(p.hss)].URL+"/edge/v1/nodes/"+p.node+"/poll", r, &resp)
	p.polled++
	if code != http.StatusOK && code != http.StatusNoContent {
		p.t.Fatalf("poll: %d", code)
	}
	if len(resp.Calls) > 0 {
		p.ack = resp.Calls[len(resp.Calls)-1].Seq
	}
	return resp.Calls
}

// flood enqueues n calls in queue q for node.
func flood(t testing.TB, s *Server, node, q string, n int) {
	t.Helper()
	cs := make([]Call, n)
	for i := range cs {
		cs[i] = Call{ID: fmt.Sprintf("%s-%s-%d", node, q, i), Node: node, Task: "t", Queue: q}
	}
	if _, err := s.Enqueue(cs); err != nil {
		t.Fatal(err)
	}
}

// queueServers serves the engine's state: on PostgreSQL two replicas, so
// that a poller alternating between them shows the queues' credits are
// shared.
func queueServers(e *engine) (*Server, []*httptest.Server) {
	s, hs := e.serve(Options{})
	hss := []*httptest.Server{hs}
	if e.name == "postgres" {
		_, hs2 := e.serve(Options{})
		hss = append(hss, hs2)
	}
	return s, hss
}

// The server hands calls out in the order the node advertises: control
// first, then the weighted queues in proportion to their weights (smooth
// weighted round robin). A node that advertises nothing gets them in one
// order (control, priority, enqueue order), so a flood enqueued first
// holds back the queues behind it.
func TestQueuesWeighted(t *testing.T) { forEngines(t, testQueuesWeighted) }

func testQueuesWeighted(t *testing.T, e *engine) {
	s, hss := queueServers(e)
	for _, tc := range []struct {
		name    string
		weights map[string]int
		want    map[string]int // of the first 44 calls after the control call
	}{
		{"advertised", map[string]int{"high": 8, "mid": 2, "low": 1}, map[string]int{"high": 32, "mid": 8, "low": 4}},
		{"not advertised", nil, map[string]int{"high": 44}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			node := "n-" + tc.name[:3]
			flood(t, s, node, "high", 200)
			flood(t, s, node, "mid", 20)
			flood(t, s, node, "low", 20)
			flood(t, s, node, "control", 1)
			p := &poller{t: t, hss: hss, node: node, req: remote.PollRequest{QueueWeights: tc.weights}}
			first := p.poll(1)
			if len(first) != 1 || first[0].Queue != "control" {
				t.Fatalf("first call %+v, want the control queue's", first)
			}
			got := map[string]int{}
			for got["high"]+got["mid"]+got["low"] < 44 {
				for _, c := range p.poll(4) {
					got[c.Queue]++
				}
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Errorf("first 44 calls by queue %v, want %v", got, tc.want)
			}
		})
	}
}

// A queue that is never empty cannot starve the others past the aging
// bound the node advertises, whatever the weights.
func TestQueuesAging(t *testing.T) { forEngines(t, testQueuesAging) }

func testQueuesAging(t *testing.T, e *engine) {
	s, hss := queueServers(e)
	const aging = 100 * time.Millisecond
	flood(t, s, "n", "high", 5000)
	enqueued := time.Now() // before the server stamps the low calls: what it measures from is later
	flood(t, s, "n", "low", 5)
	p := &poller{t: t, hss: hss, node: "n", req: remote.PollRequest{QueueWeights: map[string]int{"high": 1000, "low": 1}, AgingMS: aging.Milliseconds()}}
	high := 0
	for {
		cs := p.poll(2)
		if len(cs) == 0 {
			t.Fatal("no calls")
		}
		for _, c := range cs {
			if c.Queue == "low" {
				waited := time.Since(enqueued)
				if waited < aging || waited > aging+5*time.Second || high > 4000 {
					t.Fatalf("first low call after %s and %d high calls; want it past the %s aging bound, well before the flood ends", waited, high, aging)
				}
				return
			}
			high++
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// BenchmarkQueuesUnderFlood: three queues (weights 8, 2, 1, aging 50 ms)
// under a flood in the highest, polled 8 calls at a time, on each engine:
// how many polls until the lowest queue's first call, with the queues
// advertised against the one order of a node that advertises nothing
// (baseline), and the share of the highest queue in the first 88 calls.
func BenchmarkQueuesUnderFlood(b *testing.B) {
	for _, engine := range []string{"badger", "postgres"} {
		for _, mode := range []struct {
			name    string
			weights map[string]int
			aging   time.Duration
		}{
			{"advertised", map[string]int{"high": 8, "mid": 2, "low": 1}, 50 * time.Millisecond},
			{"baseline", nil, 0},
		} {
			b.Run(engine+"/"+mode.name, func(b *testing.B) {
				o := Options{Dir: b.TempDir()}
				if engine == "postgres" {
					o.Store = pgtest.Shared(b).NewDatabase()
				}
				s, err := Open(o)
				if err != nil {
					b.Fatal(err)
				}
				hs := httptest.NewServer(s.Handler())
				defer func() { hs.Close(); _ = s.Close() }()
				var polls, highShare float64
				for i := range b.N {
					node := fmt.Sprintf("n%d", i)
					flood(b, s, node, "high", 1000)
					flood(b, s, node, "mid", 20)
					flood(b, s, node, "low", 20)
					p := &poller{t: b, hss: []*httptest.Server{hs}, node: node, req: remote.PollRequest{QueueWeights: mode.weights, AgingMS: mode.aging.Milliseconds()}}
					seen, high, lowAt := 0, 0, 0
					for lowAt == 0 || seen < 88 {
						for _, c := range p.poll(8) {
							seen++
							if c.Queue == "high" && seen <= 88 {
								high++
							}
							if c.Queue == "low" && lowAt == 0 {
								lowAt = p.polled
							}
						}
					}
					polls += float64(lowAt)
					highShare += float64(high) / 88
				}
				b.ReportMetric(polls/float64(b.N), "polls-to-low")
				b.ReportMetric(highShare/float64(b.N), "high-share")
			})
		}
	}
}
