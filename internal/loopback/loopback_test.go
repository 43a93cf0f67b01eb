package loopback

import "testing"

func TestHostPort(t *testing.T) {
	for addr, want := range map[string]bool{
		"127.0.0.1:7700": true, "127.0.0.2:1": true, "[::1]:7700": true, "localhost:7700": true,
		"0.0.0.0:7700": false, ":7700": false, "[::]:7700": false, "10.0.0.1:7700": false,
		"edge.example:7700": false, "127.0.0.1": false, "[::ffff:127.0.0.1]:1": true,
	} {
		if got := HostPort(addr); got != want {
			t.Errorf("HostPort(%q) = %t, want %t", addr, got, want)
		}
	}
}
