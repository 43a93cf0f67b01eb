package server

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/outpost-edge/outpost/coordinator/remote"
)

// Provisioning a node with a task's code objects (remote.Plan): the node
// names the objects the task needs and those it holds; the server groups
// the rest into packages by the cost model, with the rate and round trip
// the node measured, and serves each package in one response. An object
// is shared once provisioning requests of two different roots (manifest
// objects, that is tasks) named it; the count is kept in memory and
// learned again after a restart.

// maxProvisionObjects bounds the objects of one request.
const maxProvisionObjects = 4096

// sharedLocked records that root needed digest and reports whether
// another root did too. o.mu is held.
func (o *objects) sharedLocked(digest, root string) bool {
	rs := o.roots[digest]
	if rs == nil {
		rs = map[string]bool{}
		o.roots[digest] = rs
	}
	rs[root] = true
	return len(rs) > 1
}

func (s *Server) handleProvision(w http.ResponseWriter, r *http.Request) {
	var req remote.ProvisionRequest
	if err := readBody(r, &req); err != nil {
		httpError(w, http.StatusBadRequest, err.Error())
		return
	}
	if !remote.ValidDigest(req.Root) || len(req.Objects) > maxProvisionObjects {
		httpError(w, http.StatusBadRequest, fmt.Sprintf("provision: want a sha256:HEX root and at most %d objects", maxProvisionObjects))
		return
	}
	have := make(map[string]bool, len(req.Have))
	for _, d := range req.Have {
		have[d] = true
	}
	objs := make([]remote.PackedObject, 0, len(req.Objects))
	for _, d := range req.Objects {
		size, ok, err := s.objs.size(r.Context(), d)
		if err != nil {
			s.storeError(w, "provision", err)
			return
		}
		if !ok {
			httpError(w, http.StatusNotFound, "no object "+d)
			return
		}
		s.objs.mu.Lock()
		objs = append(objs, remote.PackedObject{Digest: d, Size: size, Shared: s.objs.sharedLocked(d, req.Root)})
		s.objs.mu.Unlock()
	}
	link := remote.DefaultLink
	if req.RateBPS > 0 {
		link = remote.Link{BytesPerSec: req.RateBPS, RTT: time.Duration(req.RTTMS * float64(time.Millisecond))}
	}
	pkgs := remote.Plan(objs, have, link)
	s.log.Info("provisioning planned", "node", r.PathValue("node"), "root", req.Root, "objects", len(req.Objects), "held", len(req.Have),
		"packages", len(pkgs), "expected", link.Cost(pkgs).Round(time.Millisecond))
	writeJSON(w, r, http.StatusOK, remote.ProvisionResponse{Packages: pkgs})
}

// handlePackage streams the objects named by ?objects=D1,D2… as one
// package (remote.WritePackage).
func (s *Server) handlePackage(w http.ResponseWriter, r *http.Request) {
	ds := strings.Split(r.URL.Query().Get("objects"), ",")
	p := remote.Package{}
	for _, d := range ds {
		size, ok, err := s.objs.size(r.Context(), d)
		if err != nil {
			s.storeError(w, "package", err)
			return
		}
		if !ok || len(p.Objects) >= maxProvisionObjects {
			httpError(w, http.StatusNotFound, "no object "+d)
			return
		}
		p.Objects = append(p.Objects, remote.PackedObject{Digest: d, Size: size})
		p.Bytes += size
	}
	s.objs.mu.Lock()
	for _, o := range p.Objects {
		s.objs.fetches[o.Digest]++
	}
	s.objs.mu.Unlock()
	w.Header().Set("Content-Type", "application/octet-stream")
	w.WriteHeader(http.StatusOK)
	err := remote.WritePackage(w, p, func(d string) (io.ReadCloser, error) { return s.objs.open(r.Context(), d) })
	if err != nil {
		s.log.Warn("package cut", "node", r.PathValue("node"), "err", err) // the node fetches it again
	}
}
