package shadow

import "testing"

func TestThingPattern(t *testing.T) {
	for _, bad := range []string{"", "a/b", "[x", "sensor-[", `x\`} {
		if err := CheckThingPattern(bad); err == nil {
			t.Errorf("CheckThingPattern(%q) accepted", bad)
		}
	}
	for _, c := range []struct {
		pat, thing string
		want       bool
	}{
		{"*", "d1", true},
		{"d1", "d1", true},
		{"d1", "d10", false},
		{"sensor-*", "sensor-7", true},
		{"sensor-*", "pump-7", false},
		{"d?", "d2", true},
		{"d?", "d22", false},
		{"[a-c]1", "b1", true},
	} {
		if err := CheckThingPattern(c.pat); err != nil {
			t.Fatalf("CheckThingPattern(%q): %v", c.pat, err)
		}
		if got := MatchThing(c.pat, c.thing); got != c.want {
			t.Errorf("MatchThing(%q, %q) = %v", c.pat, c.thing, got)
		}
	}
}
