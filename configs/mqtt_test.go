package configs

import "testing"

// A broker limit below the per-device default brings the device limit
// down with it when the file leaves the device limit out; one written
// above the broker's is refused.
func TestDeviceLimitFollowsBrokerLimit(t *testing.T) {
	c, err := Parse([]byte("mqtt: {broker: {max_message_size: 1KiB}}\n"), "x.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if got := c.MQTT.Broker.Limits.MaxMessageSize; got != 1<<10 {
		t.Errorf("device limit %d, want the broker's 1024", got)
	}
	if _, err := Parse([]byte("mqtt: {broker: {max_message_size: 1KiB, limits: {max_message_size: 2KiB}}}\n"), "x.yaml"); err == nil {
		t.Error("a device limit above the broker's was accepted")
	}
}
