package freeport

import (
	"net"
	"testing"
)

// Ports are never handed out twice, and each can be listened on.
func TestPortsHandedOutOnce(t *testing.T) {
	seen := map[string]bool{}
	for range 200 {
		a := Addr(t)
		if seen[a] {
			t.Fatalf("%s handed out twice", a)
		}
		seen[a] = true
	}
	l, err := net.Listen("tcp", Addr(t))
	if err != nil {
		t.Fatal(err)
	}
	l.Close()
}
