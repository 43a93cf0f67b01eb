package coordinator

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/configs"
	"github.com/outpost-edge/outpost/coordinator/calls"
	"github.com/outpost-edge/outpost/devices/mqtttest"
	"github.com/outpost-edge/outpost/internal/wasmtest"
)

// BenchmarkPeerCall runs the echo module (examples/tasks/wat/echo.wat,
// 16-byte input) one call at a time through the scheduler: here (local)
// and placed on a peer, another coordinator in this process reached over
// loopback HTTP with its admin token (peer; the task is sent once, before
// the timer starts). The difference is the node-to-node round trip.
func BenchmarkPeerCall(b *testing.B) {
	mod := wasmtest.WAT(b, "../examples/tasks/wat/echo.wat", "")
	node := func(extra string) *Coordinator {
		cfg, err := configs.Parse([]byte("data_dir: "+b.TempDir()+`
log: {level: warn}
admin: {listen: "`+mqtttest.FreeAddr(b)+`"}
mqtt: {broker: {listen: "`+mqtttest.FreeAddr(b)+`"}}
`+extra), "bench.yaml")
		if err != nil {
			b.Fatal(err)
		}
		return startCoordinator(b, cfg)
	}
	peer := node("")
	pcfg := peer.cfg.Load()
	c := node(fmt.Sprintf(`tasks:
  - {name: here, module: %[1]s}
  - {name: there, module: %[1]s, placement: [{name: on-peer, run: [peer]}]}
placement:
  peers: {refresh: 200ms, list: [{name: b, url: "http://%[2]s", token_file: %[3]q}]}
`, mod, peer.AdminAddr(), pcfg.Admin.TokenPath(pcfg.DataDir)))
	deadline := time.Now().Add(20 * time.Second)
	for c.envs.peers.pick("peer:b") == nil {
		if time.Now().After(deadline) {
			b.Fatal("peer b never up")
		}
		time.Sleep(20 * time.Millisecond)
	}
	input := []byte("0123456789abcdef")
	for _, task := range []string{"here", "there"} {
		name := map[string]string{"here": "local", "there": "peer"}[task]
		b.Run(name, func(b *testing.B) {
			run := func() {
				r, err := c.Call(context.Background(), calls.New(task, input, calls.Source{Kind: "bench"}))
				if err != nil || !r.OK() {
					b.Fatalf("%s: %+v %v", task, r, err)
				}
			}
			run() // the peer gets the task
			b.ResetTimer()
			for range b.N {
				run()
			}
		})
	}
}
