package printable

import "testing"

func TestBytes(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want bool
	}{
		{"", true}, {"eth0 uplink\tport 1\r\n", true}, {"Grüße", true},
		{"\xde\xad\xbe\xef\x00", false}, {"a\x00b", false}, {"bell\x07", false}, {"del\x7f", false}, {"\xff", false},
	} {
		if got := Bytes([]byte(tc.in)); got != tc.want {
			t.Errorf("Bytes(%q) = %t, want %t", tc.in, got, tc.want)
		}
	}
}
