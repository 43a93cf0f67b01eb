package devices

import (
	"context"
	"net"
	goruntime "runtime"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/outpost-edge/outpost/devices/mqtttest"
	"github.com/outpost-edge/outpost/internal/confval"
)

func TestBrokerMosquittoClients(t *testing.T) {
	reg := prometheus.NewRegistry()
	b := startBroker(t, brokerConfig(), reg)
	if b.Addr() == "" || strings.HasSuffix(b.Addr(), ":0") {
		t.Fatalf("Addr() = %q, want the actual port", b.Addr())
	}
	url := "tcp://" + b.Addr()

	sub := mqtttest.Sub(t, url, "sensors/+/temp", 2)
	mqtttest.Pub(t, url, "sensors/a/temp", "21.5", 0)
	mqtttest.Pub(t, url, "sensors/other", "skip", 0)
	mqtttest.Pub(t, url, "sensors/b/temp", "22", 1)
	got := sub.Wait(2, 10*time.Second)
	want := []string{"sensors/a/temp 21.5", "sensors/b/temp 22"}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("got %q, want %q", got, want)
		}
	}
	if v := metricValue(t, reg, "outpost_broker_messages_received_total"); v < 3 {
		t.Errorf("outpost_broker_messages_received_total = %v, want >= 3", v)
	}
}

func TestBrokerAddressInUse(t *testing.T) {
	b := startBroker(t, brokerConfig(), nil)
	cfg := brokerConfig()
	cfg.Listen = b.Addr()
	b2 := NewBroker(cfg, testLogger(t), prometheus.NewRegistry())
	err := b2.Start(context.Background())
	if err == nil {
		t.Fatal("second broker on the same address started")
	}
	if !strings.Contains(err.Error(), b.Addr()) {
		t.Errorf("error %q does not name the address %s", err, b.Addr())
	}
	// Stop after a failed Start, twice.
	for range 2 {
		if err := b2.Stop(context.Background()); err != nil {
			t.Errorf("stop after failed start: %v", err)
		}
	}
}

func TestBrokerStopBeforeStart(t *testing.T) {
	b := NewBroker(brokerConfig(), nil, nil)
	if err := b.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := b.Start(context.Background()); err == nil {
		t.Fatal("start after stop succeeded")
	}
}

func TestBrokerMetricsReregister(t *testing.T) {
	reg := prometheus.NewRegistry()
	for range 2 { // a rebuilt broker on the same registry must not panic or fail
		b := NewBroker(brokerConfig(), testLogger(t), reg)
		if err := b.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		if v := metricValue(t, reg, "outpost_broker_clients_connected"); v != 0 {
			t.Errorf("clients connected = %v", v)
		}
		if err := b.Stop(context.Background()); err != nil {
			t.Fatal(err)
		}
		if err := b.Stop(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
}

func TestBrokerAuth(t *testing.T) {
	cfg := brokerConfig()
	cfg.AllowAnonymous = false
	cfg.Users = []BrokerUser{{Username: "dev1", PasswordFile: writeFile(t, "dev1.pw", "s3cret\n")}}
	b := startBroker(t, cfg, nil)
	host := b.Addr()

	tests := []struct {
		name string
		url  string
		ok   bool
	}{
		{"anonymous refused", "tcp://" + host, false},
		{"right password", "tcp://dev1:s3cret@" + host, true},
		{"wrong password", "tcp://dev1:nope@" + host, false},
		{"unknown user", "tcp://ghost:s3cret@" + host, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := mqtttest.PubErr(t, tc.url, "auth/test", "x", 1)
			if tc.ok && err != nil {
				t.Fatalf("refused: %v", err)
			}
			if !tc.ok && err == nil {
				t.Fatal("accepted")
			}
		})
	}
}

func TestBrokerAuthMissingPasswordFile(t *testing.T) {
	cfg := brokerConfig()
	cfg.Users = []BrokerUser{{Username: "dev1", PasswordFile: "/nonexistent/pw"}}
	b := NewBroker(cfg, testLogger(t), nil)
	err := b.Start(context.Background())
	if err == nil || !strings.Contains(err.Error(), "dev1") {
		t.Fatalf("Start error = %v, want one naming the user", err)
	}
	if err := b.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// rawSubscriber connects with MQTT 3.1.1, subscribes to topic at QoS 0 and
// then never reads again, so the broker's writes to it pile up.
func rawSubscriber(t *testing.T, addr, topic string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetReadBuffer(4096)
	}
	id := "slow"
	connect := []byte{0x10, byte(10 + 2 + len(id)), 0, 4, 'M', 'Q', 'T', 'T', 4, 0x02, 0, 0, 0, byte(len(id))}
	connect = append(connect, id...)
	if _, err := c.Write(connect); err != nil {
		t.Fatal(err)
	}
	connack := make([]byte, 4)
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := readFull(c, connack); err != nil || connack[0] != 0x20 || connack[3] != 0 {
		t.Fatalf("connack %x: %v", connack, err)
	}
	sub := []byte{0x82, byte(2 + 2 + len(topic) + 1), 0, 1, 0, byte(len(topic))}
	sub = append(sub, topic...)
	sub = append(sub, 0)
	if _, err := c.Write(sub); err != nil {
		t.Fatal(err)
	}
	suback := make([]byte, 5)
	if _, err := readFull(c, suback); err != nil || suback[0] != 0x90 {
		t.Fatalf("suback %x: %v", suback, err)
	}
	return c
}

func readFull(c net.Conn, b []byte) (int, error) {
	n := 0
	for n < len(b) {
		m, err := c.Read(b[n:])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

func TestBrokerDropsCounted(t *testing.T) {
	reg := prometheus.NewRegistry()
	cfg := brokerConfig()
	cfg.MaxClientWritesPending = 2
	cfg.MaxMessageSize = 1 << 20
	b := startBroker(t, cfg, reg)
	rawSubscriber(t, b.Addr(), "flood")

	pub := startClient(t, clientConfig("flooder"), "tcp://"+b.Addr(), nil, nil)
	waitFor(t, "publisher connected", 5*time.Second, pub.Connected)
	payload := make([]byte, 32<<10)
	ctx := context.Background()
	deadline := time.Now().Add(20 * time.Second)
	for metricValue(t, reg, "outpost_broker_dropped_total", "reason", "pending_writes") == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no drop counted while flooding a subscriber that does not read")
		}
		for range 50 {
			if err := pub.Publish(ctx, "flood", 1, payload); err != nil {
				t.Fatalf("publish: %v", err)
			}
		}
	}
	t.Logf("dropped: %v", metricValue(t, reg, "outpost_broker_dropped_total"))
}

// An idle broker allocates next to nothing: no $SYS topics republished and
// retained every second (their figures are in /metrics), so none for a
// subscriber either.
func TestBrokerIdleNoSysTopics(t *testing.T) {
	cfg := brokerConfig()
	cfg.Anonymous = []Rule{{Subscribe: []string{"$SYS/#"}}}
	b := startBroker(t, cfg, nil)
	sub := mqtttest.Sub(t, "tcp://"+b.Addr(), "$SYS/#", 0)
	time.Sleep(time.Second) // past the first second, when a broker with $SYS topics republishes them
	var before, after goruntime.MemStats
	goruntime.ReadMemStats(&before)
	time.Sleep(3 * time.Second)
	goruntime.ReadMemStats(&after)
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 32<<10 {
		t.Errorf("an idle broker allocated %d KB in 3 s", alloc>>10)
	}
	select {
	case line, ok := <-sub.Lines():
		if ok {
			t.Errorf("a $SYS message: %s", line)
		}
	default:
	}
}

// The session of a client that asked to keep it (clean session false) is
// freed session_expiry after it disconnects, not kept forever.
func TestBrokerSessionExpiry(t *testing.T) {
	cfg := brokerConfig()
	cfg.SessionExpiry = confval.Duration(time.Second)
	b := startBroker(t, cfg, nil)
	o := paho.NewClientOptions().AddBroker("tcp://" + b.Addr()).SetClientID("persistent").SetCleanSession(false).SetAutoReconnect(false)
	c := paho.NewClient(o)
	if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("connect: %v", tok.Error())
	}
	if tok := c.Subscribe("kept/#", 1, nil); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}
	c.Disconnect(100)
	waitFor(t, "the client disconnected", 5*time.Second, func() bool { return b.server().Info.ClientsConnected.Load() == 0 })
	if _, ok := b.server().Client("persistent"); !ok {
		t.Fatal("the session was dropped at disconnect")
	}
	waitFor(t, "the session freed", 10*time.Second, func() bool {
		_, ok := b.server().Client("persistent")
		return !ok
	})
}
