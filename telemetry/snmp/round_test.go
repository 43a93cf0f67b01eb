package snmp

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/internal/confval"
	"github.com/outpost-edge/outpost/internal/syncbuf"
)

// Each target reports how long its last round took; a target whose rounds
// take its interval (here a silent device and a 1 s deadline on a 1 s
// interval) is polled back to back: counted per round and warned about
// once, while a prompt target on the same agent is not.
func TestRoundDurationAndOverruns(t *testing.T) {
	addr := startSnmpd(t)
	logs := &syncbuf.Buffer{}
	iv := confval.Duration(time.Second)
	cfg := snmpCollect(
		Target{Name: "prompt", Address: addr, Community: "testcomm", Interval: iv, OIDs: []OID{{OID: "1.3.6.1.2.1.1.5.0"}}},
		Target{Name: "silent", Address: addr, Community: "wrong", Interval: iv, Timeout: confval.Duration(2 * time.Second), OIDs: []OID{{OID: "1.3.6.1.2.1.1.5.0"}}},
	)
	p, err := NewPoller(cfg, nil, slog.New(slog.NewTextHandler(logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { p.Run(ctx); close(done) }()
	waitFor(t, "three overrunning rounds", func() bool { return p.Status()[1].Overruns >= 3 })
	cancel()
	<-done
	prompt, silent := p.Status()[0], p.Status()[1]
	if prompt.Overruns != 0 || prompt.RoundSeconds <= 0 || prompt.RoundSeconds >= 1 {
		t.Errorf("prompt target: %d overruns, last round %.3fs", prompt.Overruns, prompt.RoundSeconds)
	}
	if silent.RoundSeconds < 1 {
		t.Errorf("silent target: last round %.3fs, want at least the 1s interval", silent.RoundSeconds)
	}
	out := logs.String()
	if n := strings.Count(out, `msg="snmp polls run back to back: a round took longer than the interval" target=silent`); n != 1 {
		t.Errorf("%d back-to-back warnings for the silent target, want 1:\n%s", n, out)
	}
	if strings.Contains(out, "back to back: a round took longer than the interval\" target=prompt") {
		t.Errorf("the prompt target was warned about:\n%s", out)
	}
}
