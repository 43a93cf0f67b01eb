// Package loopback tells whether an address stays on this host: a
// loopback IP (127.0.0.0/8, ::1) or the name localhost. Listeners and
// clients use it to decide what needs TLS and a credential.
package loopback

import "net"

// Host reports whether host (a name or an IP, without a port) is on
// loopback.
func Host(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// HostPort reports whether a host:port address is on loopback. An empty
// host (every interface) is not; neither is anything that is not host:port.
func HostPort(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	return err == nil && Host(host)
}
