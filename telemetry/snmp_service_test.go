package telemetry

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/outpost-edge/outpost/internal/confval"
	"github.com/outpost-edge/outpost/internal/snmptest"
	"github.com/outpost-edge/outpost/telemetry/snmp"
	"github.com/outpost-edge/outpost/telemetry/tsdb"
)

// The service wires the SNMP poller and the trap receiver into the store.
func TestServiceSNMPAndTraps(t *testing.T) {
	agent := snmptest.Start(t)
	trapAddr := fmt.Sprintf("127.0.0.1:%d", snmptest.FreeUDP(t))
	cfg := Config{
		SNMP: snmp.Config{
			Targets: []snmp.Target{{Name: "sw2", Address: agent, Community: "testcomm", Interval: confval.Duration(time.Second),
				OIDs: []snmp.OID{{OID: "1.3.6.1.2.1.1.5.0", Name: "/system/name"}}}},
			Traps: snmp.Traps{Listen: trapAddr, Communities: []string{"public"}},
		},
		Store: tsdb.Config{FlushInterval: confval.Duration(50 * time.Millisecond)},
	}
	reg := prometheus.NewRegistry()
	s := New(cfg, t.TempDir(), nil, reg, Sinks{})
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer s.Stop(context.Background())
	cmd := exec.Command("snmptrap", "-v2c", "-c", "public", trapAddr, "", "1.3.6.1.6.3.1.1.5.4", "1.3.6.1.2.1.2.2.1.1.1", "i", "1")
	cmd.Env = append(os.Environ(), "MIBS=")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("snmptrap: %v %s", err, out)
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		name, _ := s.Latest("sw2", "/system/name")
		trap, _ := s.Latest("traps", "/snmp/traps/...")
		if len(name) == 1 && len(trap) == 1 {
			if name[0].Value.Text() != "snmp-peer-1" || !strings.Contains(trap[0].Value.Text(), `"trap_oid":"1.3.6.1.6.3.1.1.5.4"`) {
				t.Errorf("name %+v trap %+v", name, trap)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no data: name %+v trap %+v status %+v", name, trap, s.Status())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if st := s.Status(); len(st) != 1 || st[0].Source != "snmp" || !st[0].Connected {
		t.Errorf("status %+v", st)
	}
	// The round figures of SNMP targets are exported once a round ended.
	for deadline := time.Now().Add(10 * time.Second); labelled(t, reg, "outpost_telemetry_target_round_seconds", "target")["sw2"] <= 0; {
		if time.Now().After(deadline) {
			t.Fatalf("no round duration for sw2: %v", labelled(t, reg, "outpost_telemetry_target_round_seconds", "target"))
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, m := range []string{"outpost_telemetry_target_overruns_total", "outpost_telemetry_target_missing_objects"} {
		if v, ok := labelled(t, reg, m, "target")["sw2"]; !ok || v != 0 {
			t.Errorf("%s{target=sw2} = %v (exported %v), want 0", m, v, ok)
		}
	}
}
