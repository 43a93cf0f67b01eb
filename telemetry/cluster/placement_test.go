package cluster

import (
	"fmt"
	"testing"
)

func targetNames(n int) []string {
	ts := make([]string, n)
	for i := range ts {
		ts[i] = fmt.Sprintf("sw%03d", i)
	}
	return ts
}

func moved(a, b map[string][]string) map[string][2]string {
	where := func(m map[string][]string) map[string]string {
		out := map[string]string{}
		for n, ts := range m {
			for _, t := range ts {
				out[t] = n
			}
		}
		return out
	}
	wa, wb := where(a), where(b)
	out := map[string][2]string{}
	for t, n := range wa {
		if wb[t] != n {
			out[t] = [2]string{n, wb[t]}
		}
	}
	return out
}

func TestPlaceSpreadsByCapacity(t *testing.T) {
	ts := targetNames(3000)
	got := Assign(ts, []Member{{Name: "a", Capacity: 100}, {Name: "b", Capacity: 100}, {Name: "c", Capacity: 200}})
	want := map[string]int{"a": 750, "b": 750, "c": 1500}
	for n, w := range want {
		if c := len(got[n]); c < w*85/100 || c > w*115/100 {
			t.Errorf("%s has %d targets, want about %d", n, c, w)
		}
	}
}

func TestPlaceMovesOnlyWhatItMust(t *testing.T) {
	ts := targetNames(600)
	three := []Member{{Name: "a", Capacity: 100}, {Name: "b", Capacity: 100}, {Name: "c", Capacity: 100}}
	before := Assign(ts, three)
	cases := []struct {
		name    string
		members []Member
		check   func(from, to string) bool // allowed move
		about   int
	}{
		{"join", append(three[:3:3], Member{Name: "d", Capacity: 100}), func(_, to string) bool { return to == "d" }, 150},
		{"leave", three[:2], func(from, _ string) bool { return from == "c" }, 200},
		{"drain", []Member{three[0], three[1], {Name: "c", Capacity: 100, Drained: true}}, func(from, _ string) bool { return from == "c" }, 200},
		{"capacity 0", []Member{three[0], three[1], {Name: "c"}}, func(from, _ string) bool { return from == "c" }, 200},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			mv := moved(before, Assign(ts, c.members))
			for tg, ft := range mv {
				if !c.check(ft[0], ft[1]) {
					t.Errorf("%s moved from %s to %s", tg, ft[0], ft[1])
				}
			}
			if len(mv) < c.about*75/100 || len(mv) > c.about*125/100 {
				t.Errorf("%d targets moved, want about %d", len(mv), c.about)
			}
		})
	}
}

func TestPlaceWithoutMembers(t *testing.T) {
	if n, ok := Place("sw1", []Member{{Name: "a", Capacity: 100, Drained: true}}); ok {
		t.Fatalf("placed on %s with every member drained", n)
	}
}
