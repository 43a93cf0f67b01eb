package main

import (
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/outpost-edge/outpost/devices/mqtttest"
)

// A device registered with the CLI logs in over the daemon's WebSocket
// listener (paho over ws://), its message runs the echo route, and the
// reply comes back over the WebSocket; another device's topics stay
// closed to it.
func TestDeviceWebSocket(t *testing.T) {
	wsAddr := mqtttest.FreeAddr(t)
	d := startDaemon(t, `
admin: {listen: "{{admin}}"}
mqtt:
  broker:
    listen: "{{broker}}"
    websocket: {listen: "`+wsAddr+`"}
tasks: [{name: echo, module: builtin:echo}]
routes: [{topic: "devices/+/in", task: echo, reply: "devices/{1}/out"}]
`)
	secret := addDevice(t, d, "d1")
	addDevice(t, d, "d2")
	got := make(chan string, 10)
	o := paho.NewClientOptions().AddBroker("ws://" + wsAddr + "/mqtt").SetClientID("d1-ws").
		SetUsername("d1").SetPassword(secret).SetAutoReconnect(false).
		SetDefaultPublishHandler(func(_ paho.Client, m paho.Message) { got <- m.Topic() + " " + string(m.Payload()) })
	c := paho.NewClient(o)
	if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("connect over ws: %v", tok.Error())
	}
	defer c.Disconnect(100)
	for filter, want := range map[string]byte{"devices/d1/out": 0, "devices/d2/#": 0x80} {
		tok := c.Subscribe(filter, 0, nil)
		if !tok.WaitTimeout(10*time.Second) || tok.(*paho.SubscribeToken).Result()[filter] != want {
			t.Fatalf("subscribe %s: %v, want %#x", filter, tok.(*paho.SubscribeToken).Result(), want)
		}
	}
	if tok := c.Publish("devices/d1/in", 1, false, "over ws"); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("publish over ws: %v", tok.Error())
	}
	select {
	case m := <-got:
		if m != "devices/d1/out over ws" {
			t.Fatalf("got %q", m)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("no echo over the websocket in 30s")
	}
}
