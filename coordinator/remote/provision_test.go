package remote

import (
	"fmt"
	"testing"
	"time"
)

// Packages follow the cost model: what the receiver holds is not sent; a
// shared object worth a round trip of its own travels alone (so it is
// cached under its own name); the rest, small shared objects included,
// travel together in one round trip.
func TestPlan(t *testing.T) {
	link := Link{BytesPerSec: 1 << 20, RTT: 50 * time.Millisecond} // 50 ms carries 52,428 bytes
	objs := []PackedObject{
		{Digest: "module", Size: 200 << 10},
		{Digest: "big-shared-lib", Size: 300 << 10, Shared: true},
		{Digest: "tiny-shared-lib", Size: 2 << 10, Shared: true},
		{Digest: "held-shared-lib", Size: 300 << 10, Shared: true},
		{Digest: "data", Size: 500 << 10},
		{Digest: "module", Size: 200 << 10}, // named twice: sent once
	}
	have := map[string]bool{"held-shared-lib": true}
	got := Plan(objs, have, link)
	want := "[{[{big-shared-lib 307200 true}] 307200} {[{module 204800 false} {tiny-shared-lib 2048 true} {data 512000 false}] 718848}]"
	if s := fmt.Sprint(got); s != want {
		t.Fatalf("Plan = %s\nwant   %s", s, want)
	}
	// Against one object at a time: one round trip fewer per object but
	// the shared one.
	var single []Package
	for _, o := range []PackedObject{objs[0], objs[1], objs[2], objs[4]} {
		single = append(single, Package{Objects: []PackedObject{o}, Bytes: o.Size})
	}
	if d := link.Cost(single) - link.Cost(got); d != 2*link.RTT {
		t.Errorf("packages save %s against one object at a time, want two round trips", d)
	}
	// Everything held: nothing to send.
	all := map[string]bool{}
	for _, o := range objs {
		all[o.Digest] = true
	}
	if p := Plan(objs, all, link); len(p) != 0 {
		t.Errorf("a warm receiver gets %v", p)
	}
	// On a slow link a small shared object is worth its own round trip.
	slow := Link{BytesPerSec: 1 << 10, RTT: 50 * time.Millisecond}
	if p := Plan(objs[2:3], nil, slow); len(p) != 1 || len(p[0].Objects) != 1 {
		t.Errorf("slow link: %v", p)
	}
}
