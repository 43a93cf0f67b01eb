package cluster

import (
	"context"
	"fmt"

	gpb "github.com/openconfig/gnmi/proto/gnmi"
	"google.golang.org/grpc/metadata"

	tgnmi "github.com/outpost-edge/outpost/telemetry/gnmi"
	"github.com/outpost-edge/outpost/telemetry/gnmiserver"
	"github.com/outpost-edge/outpost/telemetry/model"
)

// Reads of one target at its holder, for an admin or task query at an
// instance whose replica is stale (see Divert). Each request is marked as
// passed on, so the holder answers it from its own data.

// RemoteLatest returns target's latest values at the gNMI server at addr
// (its live cache).
func (n *Node) RemoteLatest(ctx context.Context, addr, target string) ([]model.Update, error) {
	conn, err := n.conns.get(addr)
	if err != nil {
		return nil, err
	}
	defer n.conns.put(addr)
	ctx = metadata.AppendToOutgoingContext(ctx, gnmiserver.DivertedHeader, "1")
	r, err := gpb.NewGNMIClient(conn).Get(ctx, &gpb.GetRequest{Prefix: &gpb.Path{Target: target}, Path: []*gpb.Path{{}}, Encoding: gpb.Encoding_PROTO})
	if err != nil {
		return nil, fmt.Errorf("latest of %s at its holder %s: %w", target, addr, err)
	}
	var us []model.Update
	for _, no := range r.GetNotification() {
		us = tgnmi.Updates(us, target, no)
	}
	return us, nil
}

// RemoteRange returns target's points stamped in [from, to] in the store
// of the instance whose gNMI server is at addr, in time order.
func (n *Node) RemoteRange(ctx context.Context, addr, target string, from, to int64) ([]model.Update, error) {
	conn, err := n.conns.get(addr)
	if err != nil {
		return nil, err
	}
	defer n.conns.put(addr)
	ctx = metadata.AppendToOutgoingContext(ctx, gnmiserver.DivertedHeader, "1")
	var us []model.Update
	err = readStream(ctx, gpb.NewGNMIClient(conn), target, 0, from, to+1, func(got []model.Update, _ bool) {
		us = append(us, got...)
	})
	if err != nil {
		return nil, fmt.Errorf("history of %s at its holder %s: %w", target, addr, err)
	}
	return us, nil
}
