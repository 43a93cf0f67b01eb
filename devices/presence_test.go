package devices

import (
	"errors"
	"fmt"
	"io"
	"os"
	"testing"

	"github.com/mochi-mqtt/server/v2/packets"
)

func TestDisconnectReason(t *testing.T) {
	timeout := fmt.Errorf("read: %w", os.ErrDeadlineExceeded)
	tests := []struct {
		name         string
		cause, read  error
		want, wantAW string
	}{
		{"DISCONNECT", packets.CodeDisconnect, io.EOF, ReasonClean, "CLIENT_INITIATED_DISCONNECT"},
		{"MQTT 5 DISCONNECT with will", nil, packets.CodeDisconnectWillMessage, ReasonWill, "CONNECTION_LOST"},
		{"disabled (3.1.1)", packets.ErrNotAuthorized, io.EOF, ReasonKicked, "SERVER_INITIATED_DISCONNECT"},
		{"taken over", packets.ErrSessionTakenOver, nil, ReasonKicked, "SERVER_INITIATED_DISCONNECT"},
		{"shutting down", packets.ErrServerShuttingDown, nil, ReasonKicked, "SERVER_INITIATED_DISCONNECT"},
		{"keepalive", timeout, timeout, ReasonTimeout, "MQTT_KEEP_ALIVE_TIMEOUT"},
		{"reset", nil, errors.New("read tcp: connection reset by peer"), ReasonWill, "CONNECTION_LOST"},
		{"EOF", io.EOF, io.EOF, ReasonWill, "CONNECTION_LOST"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := disconnectReason(tt.cause, tt.read)
			if got != tt.want || awsReasons[got] != tt.wantAW {
				t.Errorf("%v / %v: %s (%s), want %s (%s)", tt.cause, tt.read, got, awsReasons[got], tt.want, tt.wantAW)
			}
		})
	}
}
