package devices

import (
	"context"
	"log/slog"
	"testing"
	"time"
)

// BenchmarkBrokerEcho measures publish → embedded broker → subscriber at
// QoS 0 with two paho clients over loopback; it reports msgs/s (messages
// that made the round trip) for comparison with later changes and with
// Mosquitto.
func BenchmarkBrokerEcho(b *testing.B) {
	quiet := slog.New(slog.DiscardHandler)
	cfg := MQTTDefaults().Broker
	cfg.Listen = "127.0.0.1:0"
	br := NewBroker(cfg, quiet, nil)
	if err := br.Start(context.Background()); err != nil {
		b.Fatal(err)
	}
	defer br.Stop(context.Background())
	url := "tcp://" + br.Addr()

	got := make(chan struct{}, 1<<20)
	sub := NewClient(clientConfig("bench-sub"), url, func(Message) {
		select {
		case got <- struct{}{}:
		default:
		}
	}, quiet, nil)
	sub.SetSubscriptions([]Subscription{{Filter: "bench/echo", QoS: 0}})
	pub := NewClient(clientConfig("bench-pub"), url, nil, quiet, nil)
	for _, c := range []*Client{sub, pub} {
		if err := c.Start(context.Background()); err != nil {
			b.Fatal(err)
		}
		defer c.Stop(context.Background())
	}
	// Wait until the subscription is active.
	ctx := context.Background()
	deadline := time.Now().Add(5 * time.Second)
	for ready := false; !ready; {
		if time.Now().After(deadline) {
			b.Fatal("subscription not active")
		}
		_ = pub.Publish(ctx, "bench/echo", 0, []byte("warmup"))
		select {
		case <-got:
			ready = true
		case <-time.After(50 * time.Millisecond):
		}
	}
	for len(got) > 0 {
		<-got
	}

	payload := make([]byte, 64)
	const window = 1024 // outstanding messages, so QoS 0 is not dropped by the client's buffers
	b.ResetTimer()
	start := time.Now()
	received := 0
	for i := 0; i < b.N; i++ {
		if err := pub.Publish(ctx, "bench/echo", 0, payload); err != nil {
			b.Fatal(err)
		}
		for i+1-received > window {
			select {
			case <-got:
				received++
			case <-time.After(5 * time.Second):
				b.Fatalf("stalled: %d of %d received", received, i+1)
			}
		}
	}
	timeout := time.After(10 * time.Second)
	for received < b.N {
		select {
		case <-got:
			received++
		case <-timeout:
			b.Fatalf("received %d of %d", received, b.N)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(received)/time.Since(start).Seconds(), "msgs/s")
}
