package devices

import (
	"net"
	"strings"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/devices/mqtttest"
	"github.com/outpost-edge/outpost/internal/testpki"
)

func TestClientTLS(t *testing.T) {
	pki := testpki.New(t, t.TempDir(), "mosquitto")
	cert, key := pki.Server(t, "server", net.ParseIP("127.0.0.1"))
	mosq := mqtttest.NewMosquitto(t, mqtttest.WithConfig("cafile "+pki.CAFile, "certfile "+cert, "keyfile "+key))
	mosq.Start()
	url := strings.Replace(mosq.URL(), "tcp://", "mqtts://", 1)

	t.Run("verified with the ca", func(t *testing.T) {
		cfg := clientConfig("outpost-tls")
		cfg.TLS.CAFile = pki.CAFile
		c := startClient(t, cfg, url, nil, nil)
		waitFor(t, "connected over tls", 5*time.Second, c.Connected)
	})
	t.Run("unknown ca not connected", func(t *testing.T) {
		cfg := clientConfig("outpost-tls-bad")
		c := startClient(t, cfg, url, nil, nil)
		time.Sleep(500 * time.Millisecond)
		if c.Connected() {
			t.Fatal("connected to a server whose certificate is not trusted")
		}
	})
}
