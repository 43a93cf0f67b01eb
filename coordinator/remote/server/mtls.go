package server

import "net/http"

// certNode is the node a request's verified client certificate names (its
// subject common name), and whether the request came with one. Only
// certificates the TLS layer verified against its client CAs count.
func certNode(r *http.Request) (string, bool) {
	if r.TLS == nil || len(r.TLS.VerifiedChains) == 0 || len(r.TLS.PeerCertificates) == 0 {
		return "", false
	}
	return r.TLS.PeerCertificates[0].Subject.CommonName, true
}
