package confval

import (
	"fmt"
	"maps"
	"strings"
	"testing"
)

func TestParseLabels(t *testing.T) {
	many := make([]string, MaxLabels+1)
	for i := range many {
		many[i] = fmt.Sprintf("k%d=v", i)
	}
	for _, tc := range []struct {
		name string
		in   []string
		want map[string]string
		err  string
	}{
		{"none", nil, nil, ""},
		{"values, empty and with '='", []string{"tier=batch", "gpu=", "expr=a=b", "site/zone=north 1"}, map[string]string{"tier": "batch", "gpu": "", "expr": "a=b", "site/zone": "north 1"}, ""},
		{"a later key wins", []string{"tier=a", "tier=b"}, map[string]string{"tier": "b"}, ""},
		{"no '='", []string{"tier"}, nil, `label "tier": want KEY=VALUE`},
		{"empty key", []string{"=v"}, nil, `labels: key "": want 1 to 63 letters`},
		{"bad key", []string{"a b=v"}, nil, `labels: key "a b": want 1 to 63 letters`},
		{"long key", []string{strings.Repeat("k", 64) + "=v"}, nil, "want 1 to 63 letters"},
		{"long value", []string{"k=" + strings.Repeat("v", 254)}, nil, "labels: k: value of 254 bytes, at most 253"},
		{"too many", many, nil, fmt.Sprintf("labels: %d labels, at most %d", MaxLabels+1, MaxLabels)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseLabels(tc.in)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil || !maps.Equal(got, tc.want) || (tc.want == nil) != (got == nil) {
				t.Fatalf("= %v, %v; want %v", got, err, tc.want)
			}
		})
	}
}

// One rule for every label written (a task's, a call's, a node's), at
// its bounds; a reader names any key of label characters, of any length.
func TestCheckLabel(t *testing.T) {
	for _, tc := range []struct {
		name, k, v, err string
	}{
		{"short key, empty value", "a", "", ""},
		{"key of 63", strings.Repeat("k", 63), "v", ""},
		{"key of 64", strings.Repeat("k", 64), "v", `key "` + strings.Repeat("k", 64) + `": want 1 to 63 letters, digits, '-', '_', '.' or '/'`},
		{"every key character, at the ends too", "-a.B_9/", "x", ""},
		{"empty key", "", "v", `key "": want 1 to 63`},
		{"space in key", "a b", "v", `key "a b": want 1 to 63`},
		{"value of 253, any bytes", "k", strings.Repeat("v, (=!)\n", 31) + "vvvvv", ""},
		{"value of 254", "k", strings.Repeat("v", 254), "k: value of 254 bytes, at most 253"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := CheckLabel(tc.k, tc.v)
			if tc.err == "" && err != nil || tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)) {
				t.Fatalf("CheckLabel(%q, %d bytes) = %v, want %q", tc.k, len(tc.v), err, tc.err)
			}
		})
	}
	for _, k := range []string{"a", strings.Repeat("k", 128), "-x_/."} {
		if err := CheckLabelKeyRef(k); err != nil {
			t.Errorf("CheckLabelKeyRef(%q) = %v, want nil", k, err)
		}
	}
	for _, k := range []string{"", "a b", "k>3", "!k"} {
		if err := CheckLabelKeyRef(k); err == nil || !strings.Contains(err.Error(), fmt.Sprintf("key %q: want letters", k)) {
			t.Errorf("CheckLabelKeyRef(%q) = %v, want an error naming it", k, err)
		}
	}
}
