package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/coordinator/remote/server"
	"github.com/outpost-edge/outpost/devices/mqtttest"
	"github.com/outpost-edge/outpost/internal/pgtest"
)

// cloudMessages lists what outpost-cloud holds for edge-1, with its CLI.
func (c *cloudProc) messages(args ...string) []server.StoredMessage {
	c.t.Helper()
	out, err := exec.Command(buildCloud(c.t), append([]string{"messages", "--server", c.url, "--node", "edge-1", "-o", "json"}, args...)...).Output()
	if err != nil {
		c.t.Fatalf("outpost-cloud messages: %v\n%s", err, out)
	}
	var ms []server.StoredMessage
	if err := json.Unmarshal(out, &ms); err != nil {
		c.t.Fatalf("outpost-cloud messages: %v\n%s", err, out)
	}
	return ms
}

// waitMessages waits until outpost-cloud holds n messages for edge-1 and
// checks that each payload in want is there exactly once.
func (c *cloudProc) waitMessages(want []string, timeout time.Duration) []server.StoredMessage {
	c.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ms := c.messages("--limit", "10000")
		if len(ms) >= len(want) || time.Now().After(deadline) {
			count := map[string]int{}
			for _, m := range ms {
				count[string(m.Payload)]++
			}
			for _, w := range want {
				if count[w] != 1 {
					c.t.Errorf("%s stored %d times", w, count[w])
				}
			}
			if len(ms) != len(want) {
				c.t.Errorf("outpost-cloud holds %d messages, want %d", len(ms), len(want))
			}
			return ms
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func payloads(from, to int) []string {
	var out []string
	for i := from; i < to; i++ {
		out = append(out, fmt.Sprintf("m-%03d", i))
	}
	return out
}

// Device messages routed to the cloud reach outpost-cloud exactly once
// through a link outage, a kill -9 of the daemon while they wait in the
// spool, and answers lost after the server stored a batch; an operator
// reads and consumes them with `outpost-cloud messages`. On either of
// outpost-cloud's engines.
func TestCloudRouteDelivery(t *testing.T) {
	t.Run("badger", func(t *testing.T) { testCloudRouteDelivery(t, startCloudProc(t)) })
	t.Run("postgres", func(t *testing.T) {
		storeFile := filepath.Join(t.TempDir(), "store.url")
		if err := os.WriteFile(storeFile, []byte(pgtest.Start(t).NewDatabase()), 0o600); err != nil {
			t.Fatal(err)
		}
		testCloudRouteDelivery(t, startCloudProcArgs(t, "--store-file", storeFile, "--data", filepath.Join(t.TempDir(), "cloud")))
	})
}

func testCloudRouteDelivery(t *testing.T, c *cloudProc) {
	d := cloudDaemon(t, c, `routes: [{topic: "devices/+/up", cloud: true, qos: 1}]`)
	s1 := addDevice(t, d, "d1")
	dev := deviceURL(d, "d1", s1)
	pub := func(ps []string) {
		for _, p := range ps {
			mqtttest.Pub(t, dev, "devices/d1/up", p, 1) // returns after the PUBACK
		}
	}
	pub(payloads(0, 10))
	ms := c.waitMessages(payloads(0, 10), 20*time.Second)
	if ms[0].Topic != "devices/d1/up" || ms[0].QoS != 1 || ms[0].Seq != 1 || string(ms[9].Payload) != "m-009" {
		t.Errorf("first messages: %+v", ms[:1])
	}

	// The link is down: messages are acknowledged from the spool, then the
	// daemon is killed with them still there.
	c.setFault(func(w http.ResponseWriter, r *http.Request) bool {
		if strings.HasSuffix(r.URL.Path, "/messages:batch") {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return true
		}
		return false
	})
	pub(payloads(10, 30))
	if got := d.metric("outpost_cloud_messages_spooled"); got != 20 {
		t.Errorf("spooled while the link is down: %v, want 20", got)
	}
	d.kill9()
	c.setFault(nil)
	d.start()
	c.waitMessages(payloads(0, 30), 20*time.Second)

	// Answers lost after the server stored the batch: the node sends it
	// again and the server drops the repeats by id.
	lost := 0
	c.setFault(func(w http.ResponseWriter, r *http.Request) bool {
		if !strings.HasSuffix(r.URL.Path, "/messages:batch") || lost >= 3 {
			return false
		}
		lost++
		rec := httptest.NewRecorder()
		rp := c.reverse()
		rp.ServeHTTP(rec, r) // stored
		if hj, ok := w.(http.Hijacker); ok {
			conn, _, _ := hj.Hijack()
			conn.Close() // the answer never arrives
		}
		return true
	})
	pub(payloads(30, 40))
	c.waitMessages(payloads(0, 40), 30*time.Second)
	c.setFault(nil)
	if lost == 0 {
		t.Error("no answer was lost: the fault never ran")
	}

	// The operator consumes them: printed, then gone.
	got := c.messages("--consume")
	if len(got) != 40 {
		t.Errorf("consume listed %d", len(got))
	}
	if left := c.messages(); len(left) != 0 {
		t.Errorf("%d messages left after --consume", len(left))
	}
	// The node removes a batch once it hears the server stored it: after
	// a lost answer, only once its retry is answered.
	deadline := time.Now().Add(20 * time.Second)
	for d.metric("outpost_cloud_messages_spooled") != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("spool after delivery: %v messages", d.metric("outpost_cloud_messages_spooled"))
		}
		time.Sleep(50 * time.Millisecond)
	}
	if got := c.messages(); len(got) != 0 {
		t.Errorf("the retries after lost answers stored %d messages again", len(got))
	}
}

// A full spool refuses what does not fit, visibly (no PUBACK, a metric, a
// log), and never drops what it took: once the link is back, every
// acknowledged message reaches outpost-cloud and no refused one does.
func TestCloudRouteSpoolFull(t *testing.T) {
	c := startCloudProc(t)
	c.setFault(func(w http.ResponseWriter, r *http.Request) bool {
		if strings.HasSuffix(r.URL.Path, "/messages:batch") {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return true
		}
		return false
	})
	d := startDaemon(t, fmt.Sprintf(`
node: {id: edge-1}
admin: {listen: "{{admin}}"}
mqtt: {broker: {listen: "{{broker}}"}}
cloud: {url: %q, poll_wait: 500ms, backoff_base: 50ms, backoff_max: 500ms, messages_max_bytes: 4KiB}
routes: [{topic: "devices/+/up", cloud: true, qos: 1}]
`, c.proxy))
	s1 := addDevice(t, d, "d1")
	dev := deviceURL(d, "d1", s1)
	body := strings.Repeat("x", 900)
	var acked []string
	refused := 0
	for i := 0; i < 8; i++ {
		p := fmt.Sprintf("m-%03d %s", i, body)
		if err := mqtttest.PubErr(t, dev, "devices/d1/up", p, 1); err != nil {
			refused++
			continue
		}
		acked = append(acked, p)
	}
	if len(acked) == 0 || refused == 0 {
		t.Fatalf("%d acknowledged, %d refused: the 4KiB spool should take some and refuse the rest", len(acked), refused)
	}
	if got := d.metric("outpost_cloud_messages_refused_total"); got != float64(refused) {
		t.Errorf("outpost_cloud_messages_refused_total = %v, want %d", got, refused)
	}
	d.waitLog(`device message for the cloud refused: not acknowledged.*cloud message spool full`, 5*time.Second)
	c.setFault(nil)
	c.waitMessages(acked, 20*time.Second)
}

// reverse is a proxy straight to the server, for faults that let a
// request through.
func (c *cloudProc) reverse() *httputil.ReverseProxy {
	u, _ := url.Parse(c.url)
	return httputil.NewSingleHostReverseProxy(u)
}

// Through an external Mosquitto the daemon's client acknowledges a QoS 1
// message of a cloud route (and journals the calls of its task routes)
// only once it is in the spool: the message and the task's reply both
// arrive.
func TestCloudRouteExternalBroker(t *testing.T) {
	c := startCloudProc(t)
	url := mqtttest.StartMosquitto(t)
	startDaemon(t, fmt.Sprintf(`
node: {id: edge-1}
admin: {listen: "{{admin}}"}
mqtt: {url: %q}
cloud: {url: %q, poll_wait: 500ms, backoff_base: 50ms, backoff_max: 500ms}
tasks: [{name: echo, module: builtin:echo}]
routes:
  - {topic: "devices/+/up", cloud: true, qos: 1}
  - {topic: "devices/+/up", task: echo, reply: "devices/{1}/echo", qos: 1}
`, url, c.proxy))
	sub := mqtttest.Sub(t, url, "devices/+/echo", 0)
	for _, p := range payloads(0, 5) {
		mqtttest.Pub(t, url, "devices/d9/up", p, 1)
	}
	c.waitMessages(payloads(0, 5), 20*time.Second)
	got := sub.Wait(5, 20*time.Second)
	slices.Sort(got) // the calls run concurrently: replies come in any order
	if got[0] != "devices/d9/echo m-000" || got[4] != "devices/d9/echo m-004" {
		t.Errorf("echo replies %q", got)
	}
}
