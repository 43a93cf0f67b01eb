package devices

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestViolationsRing(t *testing.T) {
	topics := func(vs []Violation) []string {
		out := []string{}
		for _, v := range vs {
			out = append(out, v.Topic)
		}
		return out
	}
	for _, tc := range []struct {
		name  string
		added int
		want  []string // topics, newest first
	}{
		{"empty", 0, []string{}},
		{"some", 3, []string{"t2", "t1", "t0"}},
		{"full", maxViolations, nil},
		{"wrapped", 2*maxViolations + 7, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var r violations
			for i := range tc.added {
				r.add(Violation{Topic: fmt.Sprintf("t%d", i)})
			}
			want := tc.want
			if want == nil { // the last maxViolations, newest first
				for i := tc.added - 1; i >= tc.added-maxViolations; i-- {
					want = append(want, fmt.Sprintf("t%d", i))
				}
			}
			if got := topics(r.list()); !slices.Equal(got, want) {
				t.Errorf("after %d: %v, want %v", tc.added, got, want)
			}
		})
	}
	t.Run("long topic cut", func(t *testing.T) {
		var r violations
		r.add(Violation{Topic: strings.Repeat("é", maxViolationTopic)}) // 2 bytes a rune: cut in the middle of none
		if got := r.list()[0].Topic; got != strings.Repeat("é", maxViolationTopic/2)+"…" {
			t.Errorf("topic kept: %d bytes %q", len(got), got)
		}
		r.add(Violation{Topic: "x" + strings.Repeat("é", maxViolationTopic)}) // cut in the middle of a rune
		if got := r.list()[0].Topic; got != "x"+strings.Repeat("é", maxViolationTopic/2-1)+"…" {
			t.Errorf("topic kept: %d bytes %q", len(got), got)
		}
	})
}

// The broker records what its access rules and limits refuse, where the
// counters count it.
func TestBrokerViolations(t *testing.T) {
	reg, _ := openRegistry(t)
	_, s1, err := reg.Add("d1", nil)
	if err != nil {
		t.Fatal(err)
	}
	cfg := brokerConfig()
	cfg.Limits = DeviceLimits{MessagesPerSecond: 100, Burst: 100, MaxMessageSize: 64}
	b := NewBroker(cfg, testLogger(t), nil)
	b.SetRegistry(reg)
	if err := b.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Stop(context.Background()) })
	if got := b.Violations(); len(got) != 0 {
		t.Fatalf("violations at start: %+v", got)
	}
	d1, err := pahoClient(t, b.Addr(), "d1", s1, nil)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if tok := d1.Publish("devices/d2/in", 0, false, "not mine"); !tok.WaitTimeout(5 * time.Second) {
		t.Fatal("publish not sent")
	}
	if tok := d1.Publish("devices/d1/in", 0, false, strings.Repeat("x", 65)); !tok.WaitTimeout(5 * time.Second) {
		t.Fatal("publish not sent")
	}
	if code := subscribeCode(t, d1, "devices/d2/#"); code != 0x80 {
		t.Fatalf("subscription to another device's topics: code %#x", code)
	}
	waitFor(t, "three violations", 5*time.Second, func() bool { return len(b.Violations()) == 3 })
	got := b.Violations()
	want := []Violation{
		{Device: "d1", Topic: "devices/d2/#", Action: "subscribe", Reason: "acl"},
		{Device: "d1", Topic: "devices/d1/in", Action: "publish", Reason: "size"},
		{Device: "d1", Topic: "devices/d2/in", Action: "publish", Reason: "acl"},
	}
	for i, v := range got {
		if v.Time.Before(start) || v.Time.After(time.Now()) || v.Client == "" {
			t.Errorf("violation %d: time %v (test started %v), client %q", i, v.Time, start, v.Client)
		}
		v.Time, v.Client = time.Time{}, ""
		if v != want[i] {
			t.Errorf("violation %d: %+v, want %+v", i, v, want[i])
		}
	}
}
