package gnmiserver

import (
	"errors"
	"io"

	gpb "github.com/openconfig/gnmi/proto/gnmi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// ONCE and POLL. ONCE sends every selected leaf, then the sync response,
// and ends the RPC. POLL sends the same at the start and again for each
// Poll request, each round ending with a sync response, until the client
// closes its side; any other request on a POLL stream is refused with
// InvalidArgument. With updates_only the first round is the sync response
// alone (gNMI specification 3.5.1.2); later polls send the data. The
// per-subscription stream options (mode, intervals, suppress_redundant)
// do not apply to either and are not looked at.

// serveSnapshots serves a ONCE or POLL subscription list.
func (s *Server) serveSnapshots(stream gpb.GNMI_SubscribeServer, list *gpb.SubscriptionList, sels []selection, v view, target string) error {
	round := func(data bool) error {
		for i := 0; data && i < len(sels); i++ {
			xs, err := s.leaves(target, sels[i])
			if err != nil {
				return err
			}
			for _, x := range xs {
				if err := stream.Send(&gpb.SubscribeResponse{Response: &gpb.SubscribeResponse_Update{Update: v.out(x.n)}}); err != nil {
					return err
				}
			}
		}
		return stream.Send(&gpb.SubscribeResponse{Response: &gpb.SubscribeResponse_SyncResponse{SyncResponse: true}})
	}
	if err := round(!list.GetUpdatesOnly()); err != nil || list.GetMode() == gpb.SubscriptionList_ONCE {
		return err
	}
	for {
		req, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if req.GetPoll() == nil {
			return status.Error(codes.InvalidArgument, "a POLL subscription takes only poll requests after its subscription list")
		}
		if err := round(true); err != nil {
			return err
		}
	}
}
