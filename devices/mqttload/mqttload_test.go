package mqttload

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/devices/mqtttest"
)

// A fleet against Mosquitto and the plain echo client: every message comes
// back, at both QoS, with persistent sessions too, and a second run on the
// same fleet measures afresh.
func TestFleetAgainstEcho(t *testing.T) {
	for _, tc := range []struct {
		name       string
		qos        byte
		persistent bool
	}{{"qos0", 0, false}, {"qos1", 1, false}, {"qos1 persistent", 1, true}} {
		t.Run(tc.name, func(t *testing.T) {
			url := mqtttest.StartMosquitto(t)
			stop, err := Echo(url, "t", tc.qos, tc.persistent)
			if err != nil {
				t.Fatal(err)
			}
			defer stop()
			f, err := Connect(Options{URL: url, Prefix: "t", Devices: 5, Window: 2, QoS: tc.qos, Persistent: tc.persistent})
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			for _, n := range []int{100, 3} { // 3 messages for 5 devices: one each
				r, err := f.Run(context.Background(), n)
				if err != nil {
					t.Fatal(err)
				}
				want := max(n, 5)
				if r.Messages != want || r.P50 <= 0 || r.P99 < r.P50 || r.PerSecond() <= 0 {
					t.Errorf("run of %d: %+v, want %d messages and p50 <= p99", n, r, want)
				}
				if r.P99 > 10*time.Second {
					t.Errorf("p99 %s: latency measured from the wrong clock", r.P99)
				}
			}
		})
	}
}

// Without an echo service the run ends with ErrStalled instead of waiting
// forever.
func TestFleetStalls(t *testing.T) {
	url := mqtttest.StartMosquitto(t)
	f, err := Connect(Options{URL: url, Devices: 2, Stall: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Run(context.Background(), 10); !errors.Is(err, ErrStalled) {
		t.Fatalf("err = %v, want ErrStalled", err)
	}
}
