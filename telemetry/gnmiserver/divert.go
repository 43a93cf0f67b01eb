package gnmiserver

import (
	"context"
	"errors"
	"fmt"
	"io"

	gpb "github.com/openconfig/gnmi/proto/gnmi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
)

// In a telemetry cluster, a Get or a Subscribe for one target at an
// instance that does not collect it is answered from the local replica
// while that is fresh, and otherwise passed to the instance that collects
// it (a Subscribe as a whole: every request and response relayed). The
// answer's header ServedFromHeader says which: "holder", "replica" or
// "proxy <member>". A Subscribe with the history extension is always
// answered from the local store: replicas read their holder with it.

// ServedFromHeader is the response header that says where a Get or
// Subscribe for one target was answered (when SetDivert was called).
const ServedFromHeader = "outpost-served-from"

// DivertedHeader marks a request passed on by another instance: it is
// never passed on again, whatever this instance thinks of the target.
const DivertedHeader = "outpost-diverted"

// Divert tells, for a target, where a request is answered: proxyTo is the
// gNMI address of the instance to pass it to ("" to answer here),
// servedFrom what the answer's ServedFromHeader says.
type Divert func(target string) (proxyTo, servedFrom string)

// SetDivert makes Get and Subscribe answers for one target say where they
// come from and pass the request on when divert says so, dialing with
// opts; it must be called before Start.
func (s *Server) SetDivert(d Divert, opts ...grpc.DialOption) {
	s.divert, s.peerOpts = d, opts
}

// route sets the ServedFromHeader of a request for target (through
// setHeader) and returns the address to pass it to ("": answer here).
func (s *Server) route(ctx context.Context, target string, setHeader func(metadata.MD) error) (string, error) {
	if s.divert == nil || target == "" || target == "*" {
		return "", nil
	}
	to, from := s.divert(target)
	if md, _ := metadata.FromIncomingContext(ctx); len(md.Get(DivertedHeader)) > 0 && to != "" {
		to, from = "", "replica" // passed on once already: answer here
	}
	return to, setHeader(metadata.Pairs(ServedFromHeader, from))
}

// peer connects to another instance's gNMI server.
func (s *Server) peer(to string) (*grpc.ClientConn, error) {
	conn, err := grpc.NewClient(to, s.peerOpts...)
	if err != nil {
		return nil, fmt.Errorf("pass the request on to %s: %w", to, err)
	}
	return conn, nil
}

// diverted answers req at another instance when s.divert says so (ok
// true), after setting the answer's ServedFromHeader.
func (s *Server) diverted(ctx context.Context, target string, req *gpb.GetRequest) (resp *gpb.GetResponse, ok bool, err error) {
	to, err := s.route(ctx, target, func(md metadata.MD) error { return grpc.SetHeader(ctx, md) })
	if err != nil || to == "" {
		return nil, false, err
	}
	conn, err := s.peer(to)
	if err != nil {
		return nil, true, err
	}
	defer conn.Close()
	resp, err = gpb.NewGNMIClient(conn).Get(metadata.AppendToOutgoingContext(ctx, DivertedHeader, "1"), req)
	return resp, true, err
}

// relaySubscribe passes a subscription (first, then whatever the client
// sends) to the instance at to and its responses back, until either side
// ends it.
func (s *Server) relaySubscribe(stream gpb.GNMI_SubscribeServer, first *gpb.SubscribeRequest, to string) error {
	conn, err := s.peer(to)
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx, cancel := context.WithCancel(metadata.AppendToOutgoingContext(stream.Context(), DivertedHeader, "1"))
	defer cancel()
	up, err := gpb.NewGNMIClient(conn).Subscribe(ctx)
	if err != nil {
		return fmt.Errorf("pass the subscription on to %s: %w", to, err)
	}
	if err := up.Send(first); err != nil {
		return fmt.Errorf("pass the subscription on to %s: %w", to, err)
	}
	go func() { // the client's polls; ends with the RPC
		for {
			r, err := stream.Recv()
			if err != nil {
				_ = up.CloseSend()
				return
			}
			if up.Send(r) != nil {
				return
			}
		}
	}()
	for {
		r, err := up.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err // the holder's status, as it gave it
		}
		if err := stream.Send(r); err != nil {
			return err
		}
	}
}
