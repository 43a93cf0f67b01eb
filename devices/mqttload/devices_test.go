package mqttload

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/devices/mqtttest"
)

// A device fleet against Mosquitto and DeviceEcho: every device connects
// holding a shadow, its updates are all answered, and every route message
// comes back once.
func TestDeviceFleetAgainstEcho(t *testing.T) {
	m := mqtttest.NewMosquitto(t)
	m.Start()
	stop, err := DeviceEcho(m.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	ctx := context.Background()
	f, err := ConnectDevices(ctx, m.Addr(), 20)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	ups, err := f.ShadowUpdates(ctx, 200, 4)
	if err != nil || ups <= 0 {
		t.Fatalf("shadow updates: %v/s, %v", ups, err)
	}
	r, lost, err := f.Route(ctx, 2*time.Second)
	if err != nil || lost != 0 || r.Messages != 40 || r.P50 <= 0 || r.P99 < r.P50 || r.P99 > 10*time.Second {
		t.Fatalf("route: %+v, %d unanswered, %v; want 40 answers, 0 < p50 <= p99", r, lost, err)
	}
}

// A broker that refuses the fleet's connections fails ConnectDevices with
// the device that was refused.
func TestDeviceFleetRefused(t *testing.T) {
	m := mqtttest.NewMosquitto(t, mqtttest.WithUser("u", "p")) // anonymous clients refused
	m.Start()
	if _, err := ConnectDevices(context.Background(), m.Addr(), 3); err == nil || !strings.Contains(err.Error(), "device ") {
		t.Fatalf("connect to a broker refusing them: %v", err)
	}
}
