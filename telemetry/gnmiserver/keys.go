package gnmiserver

import (
	"strings"

	gpb "github.com/openconfig/gnmi/proto/gnmi"

	"github.com/outpost-edge/outpost/telemetry/model"
)

// Keyed lists without their keys. The cache keeps key values as path
// levels (interface[name=eth0] is "interface", "eth0"), so a request path
// that leaves a list's keys out would not reach the keyed data. gNMI
// clients expect an element without keys to mean every entry (gNMI path
// conventions; gnmic and openconfig's own subscribe tests do so), so the
// server learns from the collected paths which elements are keyed lists
// and with which key names, and fills the keys a request leaves out with
// "*" before querying.
//
// A list is known from the first update that carries its keys; the key
// names of the first such update are kept. A request for a list no update
// has shown yet is served as given.

// appendListKey appends "/name" per name: the names of the elements from
// the root to a list element so joined are the key of Server.lists.
func appendListKey(b []byte, names ...string) []byte {
	for _, n := range names {
		b = append(b, '/')
		b = append(b, n...)
	}
	return b
}

// learnListsLocked records the keyed elements of p; s.mu is held.
func (s *Server) learnListsLocked(p model.Path) {
	var buf [128]byte
	b := buf[:0]
	for _, e := range p {
		b = appendListKey(b, e.Name)
		if len(e.Keys) == 0 {
			continue
		}
		if _, known := s.lists[string(b)]; known { // no allocation
			continue
		}
		names := make([]string, len(e.Keys))
		for i, k := range e.Keys {
			names[i] = k.Name
		}
		s.lists[string(b)] = names
	}
}

// withKeys returns a copy of prefix without its elements and the full
// path (prefix elements, then p's), each known list element given "*" for
// the keys it leaves out. Paths in the deprecated string form are left as
// they are.
func (s *Server) withKeys(prefix, p *gpb.Path) (*gpb.Path, *gpb.Path) {
	np := &gpb.Path{Target: prefix.GetTarget(), Origin: prefix.GetOrigin()}
	//lint:ignore SA1019 deprecated field, still sent by old clients
	if len(prefix.GetElem()) == 0 && len(prefix.GetElement()) > 0 || len(p.GetElem()) == 0 && len(p.GetElement()) > 0 {
		return prefix, p // old-style strings: served as before
	}
	all := append(append([]*gpb.PathElem(nil), prefix.GetElem()...), p.GetElem()...)
	out := &gpb.Path{Origin: p.GetOrigin(), Target: p.GetTarget(), Elem: make([]*gpb.PathElem, len(all))}
	var b []byte
	s.mu.RLock()
	defer s.mu.RUnlock()
	for i, e := range all {
		out.Elem[i] = e
		b = appendListKey(b, e.GetName())
		names := s.lists[string(b)]
		if len(names) == 0 || strings.HasPrefix(e.GetName(), "*") || e.GetName() == "..." {
			continue
		}
		var keys map[string]string
		for _, n := range names {
			if _, ok := e.GetKey()[n]; ok {
				continue
			}
			if keys == nil {
				keys = make(map[string]string, len(names))
				for k, v := range e.GetKey() {
					keys[k] = v
				}
			}
			keys[n] = "*"
		}
		if keys != nil {
			out.Elem[i] = &gpb.PathElem{Name: e.GetName(), Key: keys}
		}
	}
	return np, out
}
