package gnmi

import (
	"context"
	"testing"

	gpb "github.com/openconfig/gnmi/proto/gnmi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/resolver/manual"
	"google.golang.org/grpc/status"

	"github.com/outpost-edge/outpost/internal/gnmitest"
)

// A device's gRPC service config, as name resolution may bring it (the DNS
// resolver looks up a TXT record for it), is ignored: the lookup is not
// made, so a connection to a device named by host name does not wait for
// a TXT query the name server may drop. Here a service config that would
// time every call out at once comes with the address; the call reaches the
// device (the fake agent answers Capabilities with Unimplemented).
func TestDialIgnoresServiceConfigFromResolution(t *testing.T) {
	a := gnmitest.StartAgent(t)
	r := manual.NewBuilderWithScheme("svcconfig")
	built := make(chan resolver.ClientConn, 1)
	r.BuildCallback = func(_ resolver.Target, cc resolver.ClientConn, _ resolver.BuildOptions) { built <- cc }
	opts, err := DialOptions(Target{Address: a.Addr})
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient("svcconfig:///device", append(opts, grpc.WithResolvers(r))...)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.Connect()
	cc := <-built
	r.UpdateState(resolver.State{Addresses: []resolver.Address{{Addr: a.Addr}},
		ServiceConfig: cc.ParseServiceConfig(`{"methodConfig": [{"name": [{}], "timeout": "0.000000001s"}]}`)})
	_, err = gpb.NewGNMIClient(conn).Capabilities(context.Background(), &gpb.CapabilityRequest{})
	if status.Code(err) != codes.Unimplemented {
		t.Fatalf("Capabilities: %v, want the agent's Unimplemented", err)
	}
}
