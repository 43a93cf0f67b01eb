package snmp

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/outpost-edge/outpost/telemetry/model"
)

// shrinkRec is a device with a scalar and an ifTable of rows interfaces.
func shrinkRec(rows int, scalar bool) string {
	var b strings.Builder
	b.WriteString("1.3.6.1.2.1.1.5.0|4|shrinking\n")
	for _, col := range []int{2, 10} {
		for i := 1; i <= rows; i++ {
			if col == 2 {
				fmt.Fprintf(&b, "1.3.6.1.2.1.2.2.1.2.%d|4|eth%d\n", i, i)
			} else {
				fmt.Fprintf(&b, "1.3.6.1.2.1.2.2.1.10.%d|65|%d\n", i, 1000*i)
			}
		}
	}
	if scalar {
		b.WriteString("1.3.6.1.4.1.99999.3.0|2|42\n")
	}
	return b.String()
}

// Objects an agent stops returning are deleted, not left looking current:
// a scalar that now answers noSuchObject and the rows of a table that
// shrank (with their rates) get a delete (model.Deleted), and the target
// counts them as missing until they come back.
func TestVanishedObjectsDeleted(t *testing.T) {
	sim := simPeer(t, map[string]string{"dev001": shrinkRec(4, true)})
	rec := &recorder{}
	cfg := Target{Name: "d1", Address: sim.addr, Community: "dev001",
		OIDs: []OID{{OID: "1.3.6.1.2.1.1.5.0", Name: "/system/name"}, {OID: "1.3.6.1.4.1.99999.3.0", Name: "/system/extra"}},
		Tables: []Table{{OID: "1.3.6.1.2.1.2.2.1", Name: "/interfaces/interface", IndexKey: "name", IndexFrom: 2,
			Columns: []Column{{Column: 10, Name: "in-octets", Rate: true}}}}}
	p, err := NewPoller(snmpCollect(cfg), rec.sink, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	poll := func() (values, deleted []string) {
		t.Helper()
		n := len(rec.all())
		if err := p.PollOnce(context.Background(), "d1"); err != nil {
			t.Fatal(err)
		}
		for _, u := range rec.all()[n:] {
			if u.Value.Kind == model.KindDeleted {
				deleted = append(deleted, u.Path)
			} else {
				values = append(values, u.Path)
			}
		}
		slices.Sort(deleted)
		return values, deleted
	}
	poll()
	if values, deleted := poll(); len(values) != 2+4*2 || len(deleted) != 0 || p.Status()[0].Missing != 0 {
		t.Fatalf("second poll: %d values %v, deleted %v, missing %d", len(values), values, deleted, p.Status()[0].Missing)
	}

	// The agent now has two interfaces and no longer the scalar.
	os.WriteFile(filepath.Join(sim.dir, "data", "dev001.snmprec"), []byte(shrinkRec(2, false)), 0o644)
	os.RemoveAll(filepath.Join(sim.dir, "cache"))
	sim.restart()
	values, deleted := poll()
	want := []string{
		"/interfaces/interface[name=eth3]/in-octets", "/interfaces/interface[name=eth3]/in-octets-rate",
		"/interfaces/interface[name=eth4]/in-octets", "/interfaces/interface[name=eth4]/in-octets-rate",
		"/system/extra",
	}
	if !slices.Equal(deleted, want) || len(values) != 1+2*2 {
		t.Fatalf("after the shrink: deleted %v, want %v; values %v", deleted, want, values)
	}
	if st := p.Status()[0]; st.Missing != 3 || !st.Connected {
		t.Errorf("status %+v, want 3 missing objects (the scalar and two rows)", st)
	}
	// Deleted once: the next poll deletes nothing more; still missing.
	if _, deleted := poll(); len(deleted) != 0 || p.Status()[0].Missing != 3 {
		t.Errorf("next poll deleted %v, missing %d", deleted, p.Status()[0].Missing)
	}

	// The rows and the scalar come back.
	os.WriteFile(filepath.Join(sim.dir, "data", "dev001.snmprec"), []byte(shrinkRec(4, true)), 0o644)
	os.RemoveAll(filepath.Join(sim.dir, "cache"))
	sim.restart()
	// eth3 and eth4 start their rates again.
	if values, deleted := poll(); len(values) != 2+4+2 || len(deleted) != 0 || p.Status()[0].Missing != 0 {
		t.Errorf("after the return: values %v, deleted %v, missing %d", values, deleted, p.Status()[0].Missing)
	}
}
