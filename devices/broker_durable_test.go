package devices

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/devices/mqtttest"
)

// The DurablePublish runs before the broker acknowledges a QoS 1 message
// and before any subscriber gets it; QoS 0 messages do not reach it; a
// message it fails is neither acknowledged nor delivered, and its client
// is disconnected.
func TestBrokerDurablePublish(t *testing.T) {
	var (
		mu   sync.Mutex
		seen []string
	)
	b := NewBroker(brokerConfig(), testLogger(t), nil)
	b.SetDurablePublish(func(ctx context.Context, topic string, payload []byte, qos byte) (bool, error) {
		if ctx.Err() != nil {
			t.Error("DurablePublish called with a canceled context")
		}
		mu.Lock()
		defer mu.Unlock()
		seen = append(seen, topic+" "+string(payload))
		if string(payload) == "bad" {
			return false, errors.New("journal full")
		}
		return true, nil
	})
	if err := b.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Stop(context.Background()) })
	url := "tcp://" + b.Addr()
	sub := mqtttest.Sub(t, url, "d/#", 0)

	mqtttest.Pub(t, url, "d/a", "one", 1)
	mqtttest.Pub(t, url, "d/b", "zero", 0)
	if err := mqtttest.PubErr(t, url, "d/c", "bad", 1); err == nil {
		t.Error("mosquitto_pub of a message the DurablePublish failed: exit 0")
	}
	mqtttest.Pub(t, url, "d/d", "two", 1)
	got := sub.Wait(3, 10*time.Second)
	if strings.Join(got, ",") != "d/a one,d/b zero,d/d two" {
		t.Errorf("subscriber got %q", got)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(seen) < 3 || seen[0] != "d/a one" || seen[1] != "d/c bad" || seen[len(seen)-1] != "d/d two" {
		t.Errorf("DurablePublish saw %q, want d/a one, d/c bad (maybe again), d/d two", seen)
	}
}
