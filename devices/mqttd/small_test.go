package mqttd

import (
	"fmt"
	"maps"
	"testing"
)

// small behaves as a map below, at and past the entries it keeps in a
// slice, and back.
func TestSmall(t *testing.T) {
	var s small[string, int]
	want := map[string]int{}
	check := func(step string) {
		t.Helper()
		if s.len() != len(want) {
			t.Fatalf("%s: len %d, want %d", step, s.len(), len(want))
		}
		if got := maps.Collect(s.all()); !maps.Equal(got, want) {
			t.Fatalf("%s: %v, want %v", step, got, want)
		}
		for k, v := range want {
			if got, ok := s.get(k); !ok || got != v {
				t.Fatalf("%s: get %s = %d %v, want %d", step, k, got, ok, v)
			}
		}
		if _, ok := s.get("absent"); ok {
			t.Fatalf("%s: got an absent key", step)
		}
	}
	for i := range 2 * smallMax {
		k := fmt.Sprint("k", i)
		if !s.set(k, i) {
			t.Fatalf("set %s: not new", k)
		}
		want[k] = i
		check("set " + k)
	}
	if s.set("k3", 33) {
		t.Fatal("set k3 again: new")
	}
	want["k3"] = 33
	for i := range 2 * smallMax {
		k := fmt.Sprint("k", i)
		if !s.del(k) || s.del(k) {
			t.Fatalf("del %s twice: want true then false", k)
		}
		delete(want, k)
		check("del " + k)
	}
	var few small[string, int]
	for i := range smallMax {
		few.set(fmt.Sprint(i), i)
	}
	for i := range smallMax {
		few.del(fmt.Sprint(i))
	}
	if few.list != nil || few.m != nil {
		t.Fatalf("emptied: %+v, want nothing held", few)
	}
}
