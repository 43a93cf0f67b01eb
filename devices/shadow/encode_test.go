package shadow

import (
	"encoding/json"
	"testing"
)

// The hand-written encoder writes what json.Marshal writes.
func TestAppendValueAsMarshal(t *testing.T) {
	tests := []struct {
		name string
		v    any
	}{
		{"null", nil},
		{"bools", []any{true, false}},
		{"numbers", []any{json.Number("1"), json.Number("-1.50e+3"), json.Number("12345678901234567890123"), json.Number("")}},
		{"plain string", "hello world"},
		{"quotes and backslashes", `a"b\c`},
		{"control characters", "\x00\x01\b\f\n\r\t\x1f\x7f"},
		{"html", "<a href=\"x\">&amp;</a>"},
		{"line separators", "a\u2028b\u2029c"},
		{"unicode", "héllo, 世界 🌍"},
		{"invalid utf-8", "a\xffb\xc3"},
		{"empty object", map[string]any{}},
		{"nil object", map[string]any(nil)},
		{"nested", map[string]any{"z": 1.5, "a": map[string]any{"<k>": []any{"x", nil, map[string]any{}}}, "m": json.Number("3")}},
		{"other types through json.Marshal", map[string]any{"f": 1.25, "i": 7, "s": []string{"a"}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			want, err := json.Marshal(tc.v)
			if err != nil {
				t.Fatal(err)
			}
			if got := appendValue(nil, tc.v); string(got) != string(want) {
				t.Errorf("got  %s\nwant %s", got, want)
			}
		})
	}
}
