package gnmiserver

import (
	"context"
	"fmt"

	gpb "github.com/openconfig/gnmi/proto/gnmi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
)

// In a telemetry cluster, a Get for one target at an instance that does not
// collect it is answered from the local replica while that is fresh, and
// otherwise passed to the instance that collects it. The answer's header
// ServedFromHeader says which: "holder", "replica" or "proxy <member>".

// ServedFromHeader is the response header that says where a Get for one
// target was answered (when SetDivert was called).
const ServedFromHeader = "outpost-served-from"

// divertedHeader marks a Get passed on by another instance: it is never
// passed on again, whatever this instance thinks of the target.
const divertedHeader = "outpost-diverted"

// Divert tells, for a target, where a Get is answered: proxyTo is the gNMI
// address of the instance to pass it to ("" to answer here), servedFrom
// what the answer's ServedFromHeader says.
type Divert func(target string) (proxyTo, servedFrom string)

// SetDivert makes Get answers for one target say where they come from and
// pass the request on when divert says so; it must be called before Start.
func (s *Server) SetDivert(d Divert) { s.divert = d }

// diverted answers req at another instance when s.divert says so (ok
// true), after setting the answer's ServedFromHeader.
func (s *Server) diverted(ctx context.Context, target string, req *gpb.GetRequest) (resp *gpb.GetResponse, ok bool, err error) {
	if s.divert == nil || target == "" || target == "*" {
		return nil, false, nil
	}
	to, from := s.divert(target)
	if md, _ := metadata.FromIncomingContext(ctx); len(md.Get(divertedHeader)) > 0 && to != "" {
		to, from = "", "replica" // passed on once already: answer here
	}
	if err := grpc.SetHeader(ctx, metadata.Pairs(ServedFromHeader, from)); err != nil {
		return nil, false, err
	}
	if to == "" {
		return nil, false, nil
	}
	conn, err := grpc.NewClient(to, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, true, fmt.Errorf("pass the get on to %s: %w", to, err)
	}
	defer conn.Close()
	resp, err = gpb.NewGNMIClient(conn).Get(metadata.AppendToOutgoingContext(ctx, divertedHeader, "1"), req)
	return resp, true, err
}
