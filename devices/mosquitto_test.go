package devices

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/outpost-edge/outpost/devices/mqtttest"
)

// The hash is the one mosquitto_passwd 2.0.11 wrote for the password
// "secret" (mosquitto_passwd -b FILE u secret).
func TestMosquittoHashMatchesMosquittoPasswd(t *testing.T) {
	const want = "$7$101$TbvcC1W2h83iiUV6$mKZ5B+Eggq09vRhUkXcf2sOKSh6EUhASxFDDQJ27Y4ywg5d4h0JpQWp3qvuQcvaBbJuNimE22O5nv7ULfbqVjw=="
	salt, err := base64.StdEncoding.DecodeString("TbvcC1W2h83iiUV6")
	if err != nil {
		t.Fatal(err)
	}
	got, err := mosquittoHash("secret", salt)
	if err != nil {
		t.Fatal(err)
	}
	if got != want {
		t.Fatalf("hash %s, want %s", got, want)
	}
}

// Mosquitto 2.0 run with the exported files lets a device in with its
// secret only, and enforces its own topics, its shadow and its group's
// grants, and nothing of another device's.
func TestExportMosquittoEnforcedByMosquitto(t *testing.T) {
	reg, bucket := openRegistry(t)
	_, s1, err := reg.Add("d1", []string{"sensors"})
	if err != nil {
		t.Fatal(err)
	}
	_, s2, err := reg.Add("d2", nil)
	if err != nil {
		t.Fatal(err)
	}
	_, s3, err := reg.Add("d3", nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := reg.SetDisabled("d3", true); err != nil {
		t.Fatal(err)
	}
	// A device registered before the Mosquitto hash was kept.
	_, sOld, err := reg.Add("old", nil)
	if err != nil {
		t.Fatal(err)
	}
	reg.mu.Lock()
	legacy := reg.devices["old"].rec
	reg.mu.Unlock()
	legacy.Mosquitto = ""
	v, err := json.Marshal(legacy)
	if err != nil {
		t.Fatal(err)
	}
	if err := bucket.Put([]byte("old"), v); err != nil {
		t.Fatal(err)
	}
	if err := reg.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	reg = NewRegistry(testLogger(t))
	if err := reg.Open(context.Background(), bucket); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = reg.Close(context.Background()) })

	groups := map[string][]Rule{"sensors": {{Publish: []string{"telemetry/{id}/#"}, Subscribe: []string{"fleet/+/cmd"}}}}
	files := reg.ExportMosquitto(groups)
	if !slices.Equal(files.Devices, []string{"d1", "d2"}) || !slices.Equal(files.Disabled, []string{"d3"}) || !slices.Equal(files.NoHash, []string{"old"}) {
		t.Fatalf("exported %v, disabled %v, without hash %v", files.Devices, files.Disabled, files.NoHash)
	}
	// The operator's own user (Outpost's daemon connects as one) is
	// appended, as docs/devices.md says.
	adminHash, err := newMosquittoHash("adminpw")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	pwFile, aclFile := filepath.Join(dir, "passwd"), filepath.Join(dir, "acl")
	if err := os.WriteFile(pwFile, []byte(files.PasswordFile+"admin:"+adminHash+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(aclFile, []byte(files.ACLFile+"\nuser admin\ntopic readwrite #\ntopic readwrite $aws/#\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	m := mqtttest.NewMosquitto(t, mqtttest.WithConfig("allow_anonymous false", "password_file "+pwFile, "acl_file "+aclFile))
	m.Start()

	t.Run("authentication", func(t *testing.T) {
		for _, tc := range []struct {
			name, user, secret string
			ok                 bool
		}{
			{"right secret", "d1", s1, true},
			{"wrong secret", "d1", s2, false},
			{"disabled device", "d3", s3, false},
			{"device without a mosquitto hash", "old", sOld, false},
			{"no password", "d1", "", false},
		} {
			t.Run(tc.name, func(t *testing.T) {
				_, err := pahoClient(t, m.Addr(), tc.user, tc.secret, nil)
				if (err == nil) != tc.ok {
					t.Fatalf("connect: %v, want ok=%v", err, tc.ok)
				}
			})
		}
	})

	admin := make(chan string, 100)
	ac, err := pahoClient(t, m.Addr(), "admin", "adminpw", func(_ paho.Client, msg paho.Message) { admin <- msg.Topic() + " " + string(msg.Payload()) })
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"devices/#", "telemetry/#", "$aws/things/d2/shadow/#"} {
		if code := subscribeCode(t, ac, f); code != 0 {
			t.Fatalf("admin subscribe %s: SUBACK %#x", f, code)
		}
	}
	got1 := make(chan string, 100)
	d1, err := pahoClient(t, m.Addr(), "d1", s1, func(_ paho.Client, msg paho.Message) { got1 <- msg.Topic() + " " + string(msg.Payload()) })
	if err != nil {
		t.Fatal(err)
	}
	// Mosquitto's acl_file accepts every subscription and holds back, one
	// by one, the messages the rules do not let the client read (Outpost's
	// broker refuses such a subscription in its SUBACK): d1 subscribes
	// wide, and only what it may read is delivered.
	for _, f := range []string{"devices/d1/#", "$aws/things/d1/shadow/#", "fleet/+/cmd", "devices/d2/#", "$aws/things/d2/shadow/#", "fleet/#", "telemetry/#"} {
		if code := subscribeCode(t, d1, f); code != 0 {
			t.Fatalf("d1 subscribe %s: SUBACK %#x", f, code)
		}
	}
	publish := func(c paho.Client, topic, payload string) {
		t.Helper()
		if tok := c.Publish(topic, 1, false, payload); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			t.Fatalf("publish %s: %v", topic, tok.Error())
		}
	}
	// expect waits for want; anything else delivered before it, but for a
	// copy of a message expected before (overlapping subscriptions may
	// deliver one twice), fails the test.
	expected := map[string]bool{}
	expect := func(ch chan string, want string) {
		t.Helper()
		for {
			select {
			case got := <-ch:
				if got == want {
					expected[got] = true
					return
				}
				if expected[got] {
					continue
				}
				t.Fatalf("got %q, want %q", got, want)
			case <-time.After(10 * time.Second):
				t.Fatalf("%q not delivered", want)
			}
		}
	}
	// Its own namespace and shadow, both ways; its group's grants.
	publish(d1, "devices/d1/out", "own")
	expect(got1, "devices/d1/out own")
	expect(admin, "devices/d1/out own")
	publish(d1, "$aws/things/d1/shadow/update", "{}")
	expect(got1, "$aws/things/d1/shadow/update {}")
	publish(d1, "telemetry/d1/temp", "21")
	expect(admin, "telemetry/d1/temp 21")
	publish(ac, "fleet/a/cmd", "go")
	expect(got1, "fleet/a/cmd go")

	// Another device's topics and shadow, and a group grant's {id} for
	// another device: nothing reaches anyone. d2's own message, published
	// after, is the first the operator gets.
	for _, topic := range []string{"devices/d2/in", "$aws/things/d2/shadow/update", "telemetry/d2/temp"} {
		publish(d1, topic, "forged")
	}
	d2, err := pahoClient(t, m.Addr(), "d2", s2, nil)
	if err != nil {
		t.Fatal(err)
	}
	// d2 has no group: the sensors grants are not its.
	publish(d2, "telemetry/d2/temp", "forged")
	publish(d2, "devices/d2/out", "real")
	expect(admin, "devices/d2/out real")
	// What d1 may not read is not delivered to it: d2's topics and shadow,
	// the group's publish-only topics, outside the group's filter.
	for _, topic := range []string{"devices/d2/in", "$aws/things/d2/shadow/update/accepted", "telemetry/d1/temp", "fleet/a/b/cmd"} {
		publish(ac, topic, "not for d1")
	}
	publish(ac, "devices/d1/in", "for d1")
	expect(got1, "devices/d1/in for d1")
}
