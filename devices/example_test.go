package devices_test

import (
	"context"
	"fmt"
	"time"

	"github.com/outpost-edge/outpost/devices"
)

// The daemon in embedded mode: start the broker, then connect its client to
// the broker's address and subscribe. The handler only hands messages off.
func Example() {
	ctx := context.Background()
	cfg := devices.MQTTDefaults()
	cfg.Broker.Listen = "127.0.0.1:0" // a free port
	cfg.ClientID = "outpost-example"

	broker := devices.NewBroker(cfg.Broker, nil, nil)
	if err := broker.Start(ctx); err != nil {
		fmt.Println(err)
		return
	}
	defer broker.Stop(ctx)

	queue := make(chan devices.Message, 16) // bounded; the handler never blocks
	client := devices.NewClient(cfg, "tcp://"+broker.Addr(), func(m devices.Message) {
		select {
		case queue <- m:
		default: // full: the real coordinator counts the refusal
		}
	}, nil, nil)
	client.SetSubscriptions([]devices.Subscription{{Filter: "sensors/+/temp", QoS: 1}})
	if err := client.Start(ctx); err != nil {
		fmt.Println(err)
		return
	}
	defer client.Stop(ctx)

	// Subscriptions are made on connect, asynchronously: retry until one arrives.
	for {
		if err := client.Publish(ctx, "sensors/kitchen/temp", 1, []byte("21.5")); err != nil {
			fmt.Println(err)
			return
		}
		select {
		case m := <-queue:
			fmt.Printf("%s %s\n", m.Topic, m.Payload)
			return
		case <-time.After(100 * time.Millisecond):
		}
	}
	// Output: sensors/kitchen/temp 21.5
}
