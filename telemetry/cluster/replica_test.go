package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"sync"
	"testing"
	"time"

	gpb "github.com/openconfig/gnmi/proto/gnmi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/outpost-edge/outpost/telemetry/gnmiserver"
	"github.com/outpost-edge/outpost/telemetry/model"
	"github.com/outpost-edge/outpost/telemetry/tsdb"
)

// oneSeries is a store holding one point of sw1.
type oneSeries struct{ at time.Time }

func (o oneSeries) Query(context.Context, tsdb.Query) ([]tsdb.Series, error) {
	u := model.Update{Target: "sw1", Path: "/system/name", Time: o.at.UnixNano(), Value: model.String("sw1")}
	return []tsdb.Series{{Target: u.Target, Path: u.Path, Points: []model.Point{u.Point()}}}, nil
}

// A replica follows a target only at the instance that collects it under
// the epoch it follows: the stored points, then the live ones, until that
// instance lets go of the target.
func TestFollowStreamChecksTheHoldersEpoch(t *testing.T) {
	at := time.Now().Add(-time.Minute)
	srv, err := gnmiserver.New(gnmiserver.Config{Listen: "127.0.0.1:0"}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	srv.SetHistory(oneSeries{at})
	srv.SetEpochs(func(target string) int64 {
		if target == "sw1" {
			return 7
		}
		return 0
	})
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	defer srv.Stop(context.Background())
	conn, err := grpc.NewClient(srv.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	gc := gpb.NewGNMIClient(conn)
	from := at.Add(-time.Second).UnixNano()
	for _, c := range []struct {
		name   string
		target string
		epoch  int64
	}{
		{"an older epoch", "sw1", 5},
		{"not held there", "sw2", 7},
	} {
		t.Run(c.name, func(t *testing.T) {
			err := readStream(context.Background(), gc, c.target, c.epoch, from, math.MaxInt64, func([]model.Update, bool) { t.Error("got points") })
			if !errors.Is(err, errNotHolder) {
				t.Fatalf("got %v, want %v", err, errNotHolder)
			}
		})
	}
	t.Run("the holder's epoch", func(t *testing.T) {
		type got struct {
			value string
			live  bool
		}
		var gots []got
		err := readStream(context.Background(), gc, "sw1", 7, from, math.MaxInt64, func(us []model.Update, live bool) {
			for _, u := range us {
				gots = append(gots, got{u.Value.String(), live})
			}
			if live && len(gots) == 1 { // at the sync: the stored point came; now a live one, then the release
				srv.Update([]model.Update{{Target: "sw1", Path: "/system/name", Time: time.Now().UnixNano(), Value: model.String("live")}})
				srv.Released("sw1")
			}
		})
		if want := []got{{"sw1", false}, {"live", true}}; err != nil || !slices.Equal(gots, want) {
			t.Fatalf("got %v %v, want %v and the end of the stream", gots, err, want)
		}
	})
}

// A Get is answered here by the holder, or by a replica whose stream is
// live; a replica that lost its stream passes it to the holder.
func TestDivert(t *testing.T) {
	cfg := Config{Etcd: []string{"http://127.0.0.1:1"}, Name: "b"}.WithDefaults("")
	n := New(Options{Cfg: cfg, Targets: []string{"sw1", "sw2", "sw3"}})
	n.holders = map[string]Holder{"sw1": {Member: "b", Epoch: 4}, "sw2": {Member: "a", GNMI: "10.0.0.1:9339", Epoch: 5},
		"sw3": {Member: "a", GNMI: "10.0.0.1:9339", Epoch: 6}}
	n.epochs["sw1"] = 4
	n.following["sw2"] = &follow{holder: n.holders["sw2"], live: true}
	n.following["sw3"] = &follow{holder: n.holders["sw3"], down: time.Now().Add(-time.Second)}
	cases := []struct{ target, to, from string }{
		{"sw1", "", RoleHolder},
		{"sw2", "", RoleReplica},
		{"sw3", "10.0.0.1:9339", "proxy a"},
		{"sw4", "", RoleReplica}, // no holder known: whatever is here
	}
	for _, c := range cases {
		if to, from := n.Divert(c.target); to != c.to || from != c.from {
			t.Errorf("%s: (%q, %q), want (%q, %q)", c.target, to, from, c.to, c.from)
		}
	}
}

// slowHistory is a holder's store whose reads take a while; it counts the
// reads in progress at once.
type slowHistory struct {
	mu        sync.Mutex
	now, most int
}

func (h *slowHistory) Query(_ context.Context, q tsdb.Query) ([]tsdb.Series, error) {
	h.mu.Lock()
	h.now++
	h.most = max(h.most, h.now)
	h.mu.Unlock()
	time.Sleep(20 * time.Millisecond)
	h.mu.Lock()
	h.now--
	h.mu.Unlock()
	u := model.Update{Target: q.Target, Path: "/system/name", Time: time.Now().Add(-time.Minute).UnixNano(), Value: model.String(q.Target)}
	return []tsdb.Series{{Target: u.Target, Path: u.Path, Points: []model.Point{u.Point()}}}, nil
}

// nullLocal is a replica's store that keeps nothing.
type nullLocal struct{}

func (nullLocal) Newest(string) map[string]int64                    { return nil }
func (nullLocal) Times(string, string, int64, int64) map[int64]bool { return nil }
func (nullLocal) Replicate([]model.Update)                          {}

// An instance that starts following many targets at once (it starts, or a
// holder died) reads at most startSlots of their stored parts at a time;
// every stream then goes live.
func TestFollowsStartAFewAtATime(t *testing.T) {
	h := &slowHistory{}
	srv, err := gnmiserver.New(gnmiserver.Config{Listen: "127.0.0.1:0"}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	srv.SetHistory(h)
	srv.SetEpochs(func(string) int64 { return 7 })
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	defer srv.Stop(context.Background())
	n := New(Options{Cfg: Config{Name: "b"}.WithDefaults(""), Local: nullLocal{}})
	var fs []*follow
	n.mu.Lock()
	for i := range 5 * startSlots {
		fs = append(fs, n.startFollow(fmt.Sprintf("t%02d", i), Holder{Member: "a", GNMI: srv.Addr(), Epoch: 7}))
	}
	n.mu.Unlock()
	deadline := time.Now().Add(30 * time.Second)
	for _, f := range fs {
		for {
			if _, live, _, _ := f.lag(); live {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("a follow did not go live")
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	for _, f := range fs {
		f.cancel()
		<-f.done
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.most > startSlots {
		t.Errorf("%d stored parts read at once, at most %d wanted", h.most, startSlots)
	}
}
