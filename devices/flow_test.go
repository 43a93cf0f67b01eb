package devices

import (
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"runtime"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/outpost-edge/outpost/internal/confval"
)

// flowBroker starts a broker whose devices d1 (the subscriber) and d2 (the
// publisher) share the group fleet (fleet/# both ways), with d1's
// in-flight limit window and backpressure_wait wait.
func flowBroker(t *testing.T, window int, wait time.Duration, edits ...func(*BrokerConfig)) (*Broker, *prometheus.Registry, map[string]string) {
	t.Helper()
	reg, _ := openRegistry(t)
	secrets := map[string]string{}
	for _, id := range []string{"d1", "d2"} {
		_, s, err := reg.Add(id, []string{"fleet"})
		if err != nil {
			t.Fatal(err)
		}
		secrets[id] = s
	}
	cfg := brokerConfig()
	cfg.Groups = map[string][]Rule{"fleet": {{Publish: []string{"fleet/#"}, Subscribe: []string{"fleet/#"}}}}
	cfg.Limits.MaxInflight, cfg.Limits.MessagesPerSecond, cfg.Limits.Burst = window, 1e6, 1e6
	cfg.BackpressureWait = confval.Duration(wait)
	for _, edit := range edits {
		edit(&cfg)
	}
	preg := prometheus.NewRegistry()
	b := NewBroker(cfg, testLogger(t), preg)
	b.SetRegistry(reg)
	if err := b.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Stop(context.Background()) })
	return b, preg, secrets
}

// manualAcker is a paho subscriber that acknowledges a message only when
// told (ack), or after delay when delay > 0; it records how many messages
// it held unacknowledged at most.
type manualAcker struct {
	delay time.Duration

	mu          sync.Mutex
	held        []paho.Message
	got, maxOut int
}

func (m *manualAcker) handle(_ paho.Client, msg paho.Message) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.got++
	m.held = append(m.held, msg)
	m.maxOut = max(m.maxOut, len(m.held))
	if m.delay > 0 {
		go func() {
			time.Sleep(m.delay)
			m.ackOne()
		}()
	}
}

func (m *manualAcker) ackOne() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.held[0].Ack()
	m.held = m.held[1:]
}

func (m *manualAcker) ackAll() {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, msg := range m.held {
		msg.Ack()
	}
	m.held = nil
}

func (m *manualAcker) counts() (got, outstanding, maxOut int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.got, len(m.held), m.maxOut
}

// subscribeManual connects device id with acknowledgements left to m and
// subscribes it to fleet/# at QoS 1.
func subscribeManual(t *testing.T, url, id, secret string, m *manualAcker) {
	t.Helper()
	o := paho.NewClientOptions().AddBroker(url).SetClientID(id + "-sub").SetUsername(id).SetPassword(secret).
		SetAutoReconnect(false).SetAutoAckDisabled(true).SetOrderMatters(false).SetDefaultPublishHandler(m.handle)
	c := paho.NewClient(o)
	if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("connect %s: %v", id, tok.Error())
	}
	t.Cleanup(func() { c.Disconnect(100) })
	if code := subscribeCode(t, c, "fleet/#"); code != 0 {
		t.Fatalf("subscribe: %#x", code)
	}
	// subscribeCode subscribes at QoS 0: again at QoS 1.
	if tok := c.Subscribe("fleet/#", 1, nil); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe qos 1: %v", tok.Error())
	}
}

func TestBrokerDeviceInflightLimit(t *testing.T) {
	const window = 5
	b, preg, secrets := flowBroker(t, window, time.Second)
	url := "tcp://" + b.Addr()
	sub := &manualAcker{}
	subscribeManual(t, url, "d1", secrets["d1"], sub)
	pub, err := pahoConnect(t, url, "d2", secrets["d2"], nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	limited0 := metricValue(t, preg, "outpost_devices_limited_total", "device", "d1", "reason", "inflight")
	held0 := metricValue(t, preg, "outpost_broker_publishers_held_total")
	publish := func(n int) {
		t.Helper()
		for i := range n {
			if tok := pub.Publish("fleet/cmd", 1, false, fmt.Sprint(i)); !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
				t.Fatalf("publish %d: %v", i, tok.Error())
			}
		}
	}

	// The device acknowledges nothing: it gets its window, and the rest is
	// dropped for it (counted) once the publisher was held for
	// backpressure_wait.
	start := time.Now()
	publish(20)
	waitFor(t, "the window to arrive", 10*time.Second, func() bool { got, _, _ := sub.counts(); return got == window })
	time.Sleep(300 * time.Millisecond)
	if got, _, _ := sub.counts(); got != window {
		t.Fatalf("the device got %d messages unacknowledged, want its limit %d", got, window)
	}
	if held := time.Since(start); held < 900*time.Millisecond {
		t.Fatalf("the publisher was not held (20 publishes in %s)", held)
	}
	limited := func() float64 {
		return metricValue(t, preg, "outpost_devices_limited_total", "device", "d1", "reason", "inflight") - limited0
	}
	waitFor(t, "the refusals to be counted", 10*time.Second, func() bool { return limited() >= 20-window })
	if n := limited(); n != 20-window {
		t.Fatalf("limited{d1,inflight} grew by %v, want %d", n, 20-window)
	}
	if n := metricValue(t, preg, "outpost_broker_publishers_held_total") - held0; n < 1 {
		t.Fatalf("publishers_held_total grew by %v", n)
	}

	// Acknowledged, it receives again.
	sub.ackAll()
	waitFor(t, "the broker to take the acknowledgements", 10*time.Second, func() bool {
		cl, ok := b.server().Client("d1-sub")
		return ok && cl.InflightLen() == 0
	})
	publish(3)
	waitFor(t, "messages after the acknowledgements", 10*time.Second, func() bool { got, _, _ := sub.counts(); return got >= window+3 })
	if got, _, _ := sub.counts(); got != window+3 {
		t.Fatalf("the device got %d messages, want %d", got, window+3)
	}
}

// A client that is not a registered device has the window max_inflight:
// its publishers are held there, and what it still cannot take is dropped
// by the broker and counted.
func TestBrokerInflightWindowOfOtherClients(t *testing.T) {
	const window = 8
	b, preg, secrets := flowBroker(t, 4, time.Second, func(c *BrokerConfig) { c.MaxInflight = window })
	url := "tcp://" + b.Addr()
	sub := &manualAcker{}
	subscribeManual(t, url, "", "", sub) // anonymous, on loopback
	pub, err := pahoConnect(t, url, "d2", secrets["d2"], nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	held0 := metricValue(t, preg, "outpost_broker_publishers_held_total")
	dropped0 := metricValue(t, preg, "outpost_broker_dropped_total", "reason", "inflight")
	start := time.Now()
	for i := range 20 {
		if tok := pub.Publish("fleet/cmd", 1, false, fmt.Sprint(i)); !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
			t.Fatalf("publish %d: %v", i, tok.Error())
		}
	}
	waitFor(t, "the window to arrive", 10*time.Second, func() bool { got, _, _ := sub.counts(); return got == window })
	if held := time.Since(start); held < 900*time.Millisecond {
		t.Fatalf("the publisher was not held (20 publishes in %s)", held)
	}
	if n := metricValue(t, preg, "outpost_broker_publishers_held_total") - held0; n < 1 {
		t.Fatalf("publishers_held_total grew by %v", n)
	}
	// The broker acknowledges a message before it delivers it: the last
	// drop may be counted after the publisher heard its PUBACK.
	dropped := func() float64 {
		return metricValue(t, preg, "outpost_broker_dropped_total", "reason", "inflight") - dropped0
	}
	waitFor(t, "the drops to be counted", 10*time.Second, func() bool { return dropped() >= 20-window })
	if n := dropped(); n != 20-window {
		t.Fatalf("dropped{inflight} grew by %v, want %d", n, 20-window)
	}
	if got, _, _ := sub.counts(); got != window {
		t.Fatalf("the subscriber got %d messages unacknowledged, want its window %d", got, window)
	}
}

// A publisher faster than its subscriber is slowed to the subscriber's
// pace: nothing is dropped, and the subscriber never has more than its
// window unacknowledged.
func TestBrokerBackpressureSlowSubscriber(t *testing.T) {
	const window, messages = 4, 200
	b, preg, secrets := flowBroker(t, window, 5*time.Second)
	url := "tcp://" + b.Addr()
	sub := &manualAcker{delay: 10 * time.Millisecond}
	subscribeManual(t, url, "d1", secrets["d1"], sub)
	pub, err := pahoConnect(t, url, "d2", secrets["d2"], nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	// The counters are the package's: other tests of the process add to them.
	limited0 := metricValue(t, preg, "outpost_devices_limited_total", "reason", "inflight")
	held0 := metricValue(t, preg, "outpost_broker_publishers_held_total")
	start := time.Now()
	var toks []paho.Token
	for i := range messages {
		toks = append(toks, pub.Publish("fleet/cmd", 1, false, fmt.Sprint(i)))
	}
	for i, tok := range toks {
		if !tok.WaitTimeout(60*time.Second) || tok.Error() != nil {
			t.Fatalf("publish %d: %v", i, tok.Error())
		}
	}
	waitFor(t, "every message at the subscriber", 30*time.Second, func() bool { got, _, _ := sub.counts(); return got == messages })
	elapsed := time.Since(start)
	_, _, maxOut := sub.counts()
	if maxOut > window {
		t.Fatalf("the subscriber held %d unacknowledged, over its window %d", maxOut, window)
	}
	if n := metricValue(t, preg, "outpost_devices_limited_total", "reason", "inflight") - limited0; n != 0 {
		t.Fatalf("%v messages dropped for a slow but live subscriber", n)
	}
	if n := metricValue(t, preg, "outpost_broker_publishers_held_total") - held0; n < 1 {
		t.Fatalf("publishers_held_total grew by %v: the publisher was not held", n)
	}
	// At most window messages per 10 ms acknowledgement delay.
	if floor := time.Duration(messages/window) * 10 * time.Millisecond; elapsed < floor {
		t.Fatalf("%d messages through in %s, faster than the subscriber's pace (%s)", messages, elapsed, floor)
	}
}

// A subscriber that stops reading its socket costs the broker no more
// than its window, whatever its publisher sends: the heap does not grow
// with the messages sent.
func TestBrokerStalledSubscriberMemoryBounded(t *testing.T) {
	const messages, size = 20000, 4 << 10 // 80 MB if it were all kept
	b, preg, secrets := flowBroker(t, 32, 500*time.Millisecond)
	stalled := rawDevice(t, b.Addr(), "d1", secrets["d1"], "fleet/#")
	defer stalled.Close()
	pub, err := pahoConnect(t, "tcp://"+b.Addr(), "d2", secrets["d2"], nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	heap := func() uint64 {
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapInuse
	}
	limited0 := metricValue(t, preg, "outpost_devices_limited_total", "reason", "inflight")
	before := heap()
	payload := make([]byte, size)
	var toks []paho.Token
	for i := range messages {
		toks = append(toks, pub.Publish("fleet/cmd", byte(i%2), false, payload))
		if len(toks) == 256 { // the publisher's own window (pitfalls: paho keeps what is outstanding)
			for _, tok := range toks {
				if !tok.WaitTimeout(60*time.Second) || tok.Error() != nil {
					t.Fatalf("publish %d: %v", i, tok.Error())
				}
			}
			toks = toks[:0]
		}
	}
	grown := int64(heap()) - int64(before)
	t.Logf("heap grew %d KB for %d messages of %d bytes to a stalled subscriber", grown>>10, messages, size)
	if grown > 16<<20 {
		t.Fatalf("heap grew %d MB: what the stalled subscriber cannot take is kept", grown>>20)
	}
	cl, ok := b.server().Client("d1-raw")
	if !ok {
		t.Fatal("the stalled subscriber is gone")
	}
	if n := cl.InflightLen(); n > 32 {
		t.Fatalf("%d messages in flight to the stalled subscriber, over its window", n)
	}
	limited := metricValue(t, preg, "outpost_devices_limited_total", "reason", "inflight") - limited0
	dropped := metricValue(t, preg, "outpost_broker_dropped_total")
	if limited+dropped < messages/2 {
		t.Fatalf("limited %v + dropped %v: the messages the subscriber could not take were not counted", limited, dropped)
	}
}

// rawDevice connects device id with a raw MQTT 3.1.1 client subscribed to
// filter at QoS 1 that then never reads its socket.
func rawDevice(t *testing.T, addr, id, secret, filter string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	str := func(s string) []byte { return binary.BigEndian.AppendUint16(nil, uint16(len(s))) }
	cid := id + "-raw"
	body := append([]byte{0, 4, 'M', 'Q', 'T', 'T', 4, 0xc2, 0, 120}, append(str(cid), cid...)...)
	body = append(body, append(str(id), id...)...)
	body = append(body, append(str(secret), secret...)...)
	sub := append([]byte{0, 1}, append(str(filter), filter...)...)
	sub = append(sub, 1)
	for _, pk := range [][]byte{append([]byte{0x10, byte(len(body))}, body...), append([]byte{0x82, byte(len(sub))}, sub...)} {
		if _, err := c.Write(pk); err != nil {
			t.Fatal(err)
		}
	}
	ack := make([]byte, 4+5)
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := readFull(c, ack); err != nil || ack[0] != 0x20 || ack[3] != 0 || ack[4] != 0x90 || ack[8] != 1 {
		t.Fatalf("connack and suback %x: %v", ack, err)
	}
	return c
}

// A device's kept session (clean session false) gets the QoS 1 messages
// published while the device was away, at most its in-flight window: the
// rest are refused and counted, not kept.
func TestBrokerKeptSessionQueueBounded(t *testing.T) {
	const window = 5
	b, preg, secrets := flowBroker(t, window, time.Second)
	url := "tcp://" + b.Addr()
	got := make(chan string, 20)
	connect := func() paho.Client {
		t.Helper()
		o := paho.NewClientOptions().AddBroker(url).SetClientID("d1-kept").SetUsername("d1").SetPassword(secrets["d1"]).
			SetCleanSession(false).SetAutoReconnect(false).
			SetDefaultPublishHandler(func(_ paho.Client, m paho.Message) { got <- string(m.Payload()) })
		c := paho.NewClient(o)
		if tok := c.Connect(); !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
			t.Fatalf("connect d1: %v", tok.Error())
		}
		return c
	}
	c := connect()
	if tok := c.Subscribe("fleet/#", 1, nil); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	c.Disconnect(100)
	pub, err := pahoConnect(t, url, "d2", secrets["d2"], nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	limited0 := metricValue(t, preg, "outpost_devices_limited_total", "device", "d1", "reason", "inflight")
	denied0 := metricValue(t, preg, "outpost_devices_acl_denied_total")
	for i := range window + 3 {
		if tok := pub.Publish("fleet/cmd", 1, false, fmt.Sprint(i)); !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
			t.Fatalf("publish %d: %v", i, tok.Error())
		}
	}
	limited := func() float64 {
		return metricValue(t, preg, "outpost_devices_limited_total", "device", "d1", "reason", "inflight") - limited0
	}
	waitFor(t, "the refusals past the window", 10*time.Second, func() bool { return limited() >= 3 })
	c = connect()
	defer c.Disconnect(100)
	var msgs []string
	for len(msgs) < window {
		select {
		case m := <-got:
			msgs = append(msgs, m)
		case <-time.After(10 * time.Second):
			t.Fatalf("got %q of the messages queued while away, want %d", msgs, window)
		}
	}
	select {
	case m := <-got:
		t.Fatalf("got %q past the window", m)
	case <-time.After(300 * time.Millisecond):
	}
	if n := limited(); n != 3 {
		t.Fatalf("limited{d1,inflight} grew by %v, want 3", n)
	}
	if n := metricValue(t, preg, "outpost_devices_acl_denied_total") - denied0; n != 0 {
		t.Fatalf("%v deliveries to the kept session counted as denied", n)
	}
}
