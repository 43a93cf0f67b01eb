package model

import (
	"errors"
	"testing"
)

func TestParsePath(t *testing.T) {
	tests := []struct {
		name, in, want string
		err            bool
	}{
		{"root", "/", "/", false},
		{"empty", "", "/", false},
		{"simple", "/a/b/c", "/a/b/c", false},
		{"no leading slash", "a/b", "/a/b", false},
		{"trailing slash", "/a/b/", "/a/b", false},
		{"keys sorted", "/if[z=1][a=2]/x", "/if[a=2][z=1]/x", false},
		{"slash in key", "/interfaces/interface[name=Ethernet1/1]/state", "/interfaces/interface[name=Ethernet1/1]/state", false},
		{"escaped bracket", `/a[k=x\]y]/b`, `/a[k=x\]y]/b`, false},
		{"empty value", "/a[k=]", "/a[k=]", false},
		{"double slash", "/a//b", "", true},
		{"unclosed", "/a[k=v", "", true},
		{"no equals", "/a[k]", "", true},
		{"stray bracket", "/a]b", "", true},
		{"dup key", "/a[k=1][k=2]", "", true},
		{"junk after key", "/a[k=1]x", "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := ParsePath(tt.in)
			if tt.err {
				if !errors.Is(err, ErrPath) {
					t.Fatalf("ParsePath(%q) = %v, %v; want ErrPath", tt.in, p, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := p.String(); got != tt.want {
				t.Errorf("got %q want %q", got, tt.want)
			}
			g := FromGNMI(nil, p.ToGNMI())
			if g.String() != tt.want {
				t.Errorf("gNMI round trip: got %q want %q", g.String(), tt.want)
			}
		})
	}
}

func TestPattern(t *testing.T) {
	tests := []struct {
		pat, path string
		want      bool
	}{
		{"/...", "/a/b", true},
		{"", "/a", true},
		{"/a/*", "/a/b", true},
		{"/a/*", "/a/b/c", false},
		{"/a/...", "/a", true},
		{"/a/.../d", "/a/b/c/d", true},
		{"/a/.../d", "/a/b/c/e", false},
		{"/interfaces/interface[name=*]/state", "/interfaces/interface[name=eth0]/state", true},
		{"/interfaces/interface/state", "/interfaces/interface[name=eth0]/state", true},
		{"/interfaces/interface[name=eth1]/state", "/interfaces/interface[name=eth0]/state", false},
		{"/interfaces/interface[name=eth0]/state", "/interfaces/interface/state", false},
	}
	for _, tt := range tests {
		t.Run(tt.pat+"~"+tt.path, func(t *testing.T) {
			m, err := ParsePattern(tt.pat)
			if err != nil {
				t.Fatal(err)
			}
			if got := m.MatchString(tt.path); got != tt.want {
				t.Errorf("got %v want %v", got, tt.want)
			}
		})
	}
}

func TestGlob(t *testing.T) {
	for _, tt := range []struct {
		g, s string
		want bool
	}{{"", "x", true}, {"sw*", "sw1", true}, {"sw?", "sw12", false}, {"*-core", "dc1-core", true}, {"a*b*c", "axxbyyc", true}, {"a*b", "ac", false}} {
		if got := Glob(tt.g, tt.s); got != tt.want {
			t.Errorf("Glob(%q,%q)=%v", tt.g, tt.s, got)
		}
	}
}

// FuzzParsePath checks that the canonical form is a fixed point: parsing
// it again gives the same string, and the gNMI conversion keeps it.
func FuzzParsePath(f *testing.F) {
	for _, s := range []string{"/", "/a/b", "/if[name=Eth1/1]/x", `/a[k=x\]y]`, "/a[b=1][c=2]/d[e=*]/..."} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := ParsePath(s)
		if err != nil {
			return
		}
		c := p.String()
		q, err := ParsePath(c)
		if err != nil {
			t.Fatalf("canonical %q of %q does not parse: %v", c, s, err)
		}
		if q.String() != c {
			t.Fatalf("canonical not stable: %q -> %q", c, q.String())
		}
		if g := FromGNMI(nil, p.ToGNMI()).String(); g != c {
			t.Fatalf("gNMI round trip %q -> %q", c, g)
		}
		if g := string(AppendGNMI(nil, p.ToGNMI())); g != c && !(g == "" && c == "/") {
			t.Fatalf("AppendGNMI %q, canonical %q", g, c)
		}
		m, err := ParsePattern(c)
		if err != nil {
			t.Fatal(err)
		}
		m.MatchString(c)
	})
}

func TestAppendGNMIMatchesString(t *testing.T) {
	for _, s := range []string{"/", "/a/b", "/if[z=1][a=2]/x", `/a[k=x\]y]/b`, "/interfaces/interface[name=Ethernet1/1]/state"} {
		p, _ := ParsePath(s)
		got := string(AppendGNMI(nil, p.ToGNMI()))
		if got == "" {
			got = "/"
		}
		if got != p.String() {
			t.Errorf("AppendGNMI %q, String %q", got, p.String())
		}
	}
}
