package snmp

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/internal/confval"
	"github.com/outpost-edge/outpost/telemetry/model"
)

// A v3 target recovers by itself after its agent restarts: snmpsim comes
// back with a new engine id, net-snmp's snmpd with the same engine id and
// its boots incremented. The poller rediscovers the engine (id, boots,
// time) as net-snmp's tools do, within the first poll after the restart.
func TestV3RecoversAfterAgentRestart(t *testing.T) {
	for _, tc := range []struct {
		name    string
		agent   func(t *testing.T) *peer
		v3      func(t *testing.T) V3
		sysName string
	}{
		{"snmpsim new engine id", func(t *testing.T) *peer {
			return simPeer(t, map[string]string{"dev001": "1.3.6.1.2.1.1.5.0|4|sim-one\n"})
		}, func(t *testing.T) V3 {
			return V3{Username: simUser, SecurityLevel: "authPriv", AuthProtocol: "SHA", AuthPasswordFile: secret(t, simAuthPass),
				PrivProtocol: "AES", PrivPasswordFile: secret(t, simPrivPass), ContextName: "dev001"}
		}, "sim-one"},
		{"snmpd boots incremented", snmpdPeerT, func(t *testing.T) V3 {
			return V3{Username: "testv3user", SecurityLevel: "authPriv", AuthProtocol: "SHA", AuthPasswordFile: secret(t, "authpass123"),
				PrivProtocol: "AES", PrivPasswordFile: secret(t, "privpass123")}
		}, "snmp-peer-1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			agent := tc.agent(t)
			rec := &recorder{}
			cfg := Target{Name: "d1", Address: agent.addr, Version: "3", V3: tc.v3(t), Timeout: confval.Duration(500 * time.Millisecond), Retries: 1,
				OIDs: []OID{{OID: "1.3.6.1.2.1.1.5.0", Name: "/system/name"}}}
			p, err := NewPoller(snmpCollect(cfg), rec.sink, slog.New(slog.DiscardHandler))
			if err != nil {
				t.Fatal(err)
			}
			ctx := context.Background()
			if err := p.PollOnce(ctx, "d1"); err != nil {
				t.Fatal(err)
			}
			for restart := 1; restart <= 2; restart++ {
				agent.restart()
				n := len(rec.all())
				err := p.PollOnce(ctx, "d1")
				us := rec.all()
				if err != nil || len(us) != n+1 || us[n].Value != model.String(tc.sysName) {
					t.Fatalf("restart %d: the first poll after the agent restarted got %d values: %v", restart, len(us)-n, err)
				}
			}
			if st := p.Status()[0]; !st.Connected {
				t.Errorf("status %+v", st)
			}
		})
	}
}

func snmpdPeerT(t *testing.T) *peer { return snmpdPeer(t) }
