package snmp

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gosnmp/gosnmp"

	"github.com/outpost-edge/outpost/internal/confval"
	"github.com/outpost-edge/outpost/internal/snmptest"
	"github.com/outpost-edge/outpost/telemetry/model"
)

// simRecN is one device's data: the system group and an ifTable of n
// interfaces with 10 columns, in snmpsim's OID|tag|value form.
func simRecN(dev, n int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "1.3.6.1.2.1.1.1.0|4|Simulated switch %d\n", dev)
	fmt.Fprintf(&b, "1.3.6.1.2.1.1.2.0|6|1.3.6.1.4.1.99999.1\n")
	fmt.Fprintf(&b, "1.3.6.1.2.1.1.3.0|67|%d\n", 1000+dev)
	fmt.Fprintf(&b, "1.3.6.1.2.1.1.5.0|4|sim-%03d\n", dev)
	cols := []struct {
		col int
		tag string
		val func(i int) string
	}{
		{1, "2", func(i int) string { return fmt.Sprint(i) }},
		{2, "4", func(i int) string { return fmt.Sprintf("Ethernet1/%d", i) }},
		{3, "2", func(int) string { return "6" }},
		{4, "2", func(int) string { return "9216" }},
		{5, "66", func(int) string { return "1000000000" }},
		{7, "2", func(int) string { return "1" }},
		{8, "2", func(i int) string { return fmt.Sprint(1 + i%2) }},
		{10, "65", func(i int) string { return fmt.Sprint(4294967000 + i) }},
		{16, "65", func(i int) string { return fmt.Sprint(1000 * i) }},
		{14, "65", func(int) string { return "0" }},
	}
	// snmprec lines must be sorted by OID.
	for _, c := range []int{1, 2, 3, 4, 5, 7, 8, 10, 14, 16} {
		for _, cc := range cols {
			if cc.col != c {
				continue
			}
			for i := 1; i <= n; i++ {
				fmt.Fprintf(&b, "1.3.6.1.2.1.2.2.1.%d.%d|%s|%s\n", c, i, cc.tag, cc.val(i))
			}
		}
	}
	return b.String()
}

// startSnmpsim runs snmpsim with n devices, communities dev001…; it
// returns the address.
func startSnmpsim(t testing.TB, n int) string { return startSnmpsimN(t, n, 24) }

// startSnmpsimN is startSnmpsim with ifaces interfaces per device.
func startSnmpsimN(t testing.TB, n, ifaces int) string {
	t.Helper()
	devs := map[string]string{}
	for i := 1; i <= n; i++ {
		devs[fmt.Sprintf("dev%03d", i)] = simRecN(i, ifaces)
	}
	return simPeer(t, devs).addr
}

// The v3 user every simulated agent has (authPriv, SHA and AES).
const (
	simUser     = "simuser"
	simAuthPass = "simauth123"
	simPrivPass = "simpriv123"
)

// simPeer runs snmpsim with one data file per device (name → snmprec
// text): v2c communities and v3 contexts are the device names, the v3 user
// is simUser. snmpsim picks a new engine id at each start.
func simPeer(t testing.TB, devs map[string]string) *peer {
	t.Helper()
	need(t, "snmpsimd")
	dir := worldDir(t)
	data := filepath.Join(dir, "data")
	os.Mkdir(data, 0o755)
	first := ""
	for name, rec := range devs {
		os.WriteFile(filepath.Join(data, name+".snmprec"), []byte(rec), 0o644)
		if first == "" || name < first {
			first = name
		}
	}
	addr := fmt.Sprintf("127.0.0.1:%d", snmptest.FreeUDP(t))
	args := []string{"snmpsimd", "--data-dir=" + data, "--cache-dir=" + filepath.Join(dir, "cache"), "--agent-udpv4-endpoint=" + addr,
		"--logging-method=file:" + filepath.Join(dir, "log"),
		"--v3-user=" + simUser, "--v3-auth-key=" + simAuthPass, "--v3-auth-proto=SHA", "--v3-priv-key=" + simPrivPass, "--v3-priv-proto=AES"}
	if os.Geteuid() == 0 { // snmpsimd drops privileges itself
		args = append(args, "--process-user=nobody", "--process-group=nogroup")
	}
	p := &peer{t: t, addr: addr, dir: dir, community: first, args: args}
	t.Cleanup(p.stop)
	p.start()
	return p
}

func simTargets(addr string, n int) []Target {
	var ts []Target
	for i := 1; i <= n; i++ {
		ts = append(ts, Target{Name: fmt.Sprintf("sim%03d", i), Address: addr, Community: fmt.Sprintf("dev%03d", i),
			Timeout: confval.Duration(3 * time.Second), MaxRepetitions: 25, Interval: confval.Duration(time.Hour),
			OIDs: []OID{{OID: "1.3.6.1.2.1.1.5.0", Name: "/system/name"}},
			Tables: []Table{{OID: "1.3.6.1.2.1.2.2.1", Name: "/interfaces/interface", IndexKey: "name", IndexFrom: 2,
				Columns: []Column{{Column: 10, Name: "in-octets", Rate: true}, {Column: 16, Name: "out-octets"}, {Column: 8, Name: "oper-status"}, {Column: 4, Name: "mtu"}}}}})
	}
	return ts
}

// Many simulated devices on one snmpsim, polled concurrently: every one
// answers with its own data.
func TestManySimulatedDevices(t *testing.T) {
	const n = 40
	addr := startSnmpsim(t, n)
	rec := &recorder{}
	// One device that never answers (wrong community) holds one slot only.
	slow := Target{Name: "silent", Address: addr, Community: "nobody-home", Timeout: confval.Duration(2 * time.Second), Retries: 2,
		OIDs: []OID{{OID: "1.3.6.1.2.1.1.5.0"}}}
	cfg := snmpCollect(append([]Target{slow}, simTargets(addr, n)...)...)
	cfg.MaxConcurrent = 8
	// One poll each within the test (the interval is past its deadline),
	// so the counts below are those of one poll even on a slow host.
	for i := range cfg.Targets {
		cfg.Targets[i].Interval = confval.Duration(time.Hour)
		cfg.Targets[i].PollTimeout = confval.Duration(30 * time.Second)
	}
	p, err := NewPoller(cfg, rec.sink, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { p.Run(ctx); close(done) }()
	start := time.Now()
	deadline := start.Add(60 * time.Second)
	for {
		ok := 0
		for _, st := range p.Status() {
			if st.Connected {
				ok++
			}
		}
		if ok == n {
			// A loose bound (snmpsim is one Python process on a shared
			// host): all 40 within three of the silent device's 6 s
			// budgets, not one device after another behind it.
			if d := time.Since(start); d > 18*time.Second {
				t.Errorf("polling %d devices took %v with one silent device", n, d)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d devices polled: %+v", ok, n, p.Status())
		}
		time.Sleep(50 * time.Millisecond)
	}
	cancel()
	<-done
	if st := p.Status()[0]; st.Name != "silent" || st.Connected {
		t.Errorf("silent device status %+v", st)
	}
	names := map[string]string{}
	perTarget := map[string]int{}
	for _, u := range rec.all() {
		perTarget[u.Target]++
		if u.Path == "/system/name" {
			names[u.Target] = u.Value.Text()
		}
		if u.Target == "sim007" && u.Path == "/interfaces/interface[name=Ethernet1/3]/in-octets" && u.Value != model.Uint(4294967003) {
			t.Errorf("sim007 in-octets %v", u.Value)
		}
	}
	for i := 1; i <= n; i++ {
		tn := fmt.Sprintf("sim%03d", i)
		if names[tn] != fmt.Sprintf("sim-%03d", i) || perTarget[tn] != 1+24*4 {
			t.Errorf("%s: name %q, %d values", tn, names[tn], perTarget[tn])
		}
	}
}

// Site scale: 200 simulated devices of 40 interfaces, each polled for its
// name and 8 ifTable columns, two of them with rates: 401 series a device,
// about 80,000 in all, 16 polls in flight.
const (
	siteDevices     = 200
	siteInterfaces  = 40
	siteConcurrency = 16
)

// siteTargets are the site-scale targets (see siteDevices).
func siteTargets(addr string) []Target {
	ts := simTargets(addr, siteDevices)
	for i := range ts {
		ts[i].Tables[0].Columns = []Column{
			{Column: 3, Name: "type"}, {Column: 4, Name: "mtu"}, {Column: 5, Name: "speed"}, {Column: 7, Name: "admin-status"},
			{Column: 8, Name: "oper-status"}, {Column: 10, Name: "in-octets", Rate: true}, {Column: 14, Name: "in-errors"},
			{Column: 16, Name: "out-octets", Rate: true}}
	}
	return ts
}

// siteRound runs one round: every target polled once, at most
// siteConcurrency at a time, poll(i) polling target i.
func siteRound(n int, poll func(i int) error) error {
	sem := make(chan struct{}, siteConcurrency)
	errs := make(chan error, n)
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if err := poll(i); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	return <-errs
}

// BenchmarkPollSimulatedDevices polls the site-scale devices with the
// poller into a discarding sink and reports the round time (round-s). Its
// baseline runs in the same iterations, alternating with it so both see
// the same load: a round of the same requests with bare gosnmp clients at
// the same concurrency (rawSite, raw-round-s); round-ratio is poller over
// raw. One iteration is two rounds of about 80,000 values (-benchtime 1x
// or 3x).
func BenchmarkPollSimulatedDevices(b *testing.B) {
	addr := startSnmpsimN(b, siteDevices, siteInterfaces)
	var values atomic.Int64
	p, err := NewPoller(snmpCollect(siteTargets(addr)...), func(us []model.Update) { values.Add(int64(len(us))) }, slog.New(slog.DiscardHandler))
	if err != nil {
		b.Fatal(err)
	}
	raw := newRawSite(b, addr)
	var polled, bare time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		start := time.Now()
		if _, err := raw.round(); err != nil {
			b.Fatal(err)
		}
		bare += time.Since(start)
		start = time.Now()
		if err := siteRound(len(p.targets), func(i int) error { return p.poll(context.Background(), p.targets[i]) }); err != nil {
			b.Fatal(err)
		}
		polled += time.Since(start)
	}
	b.ReportMetric(polled.Seconds()/float64(b.N), "round-s")
	b.ReportMetric(bare.Seconds()/float64(b.N), "raw-round-s")
	b.ReportMetric(polled.Seconds()/bare.Seconds(), "round-ratio")
	b.ReportMetric(float64(values.Load())/polled.Seconds(), "values/s")
}

// BenchmarkRawBulkWalkSim is rawSite alone: the site-scale round with bare
// gosnmp clients.
func BenchmarkRawBulkWalkSim(b *testing.B) {
	raw := newRawSite(b, startSnmpsimN(b, siteDevices, siteInterfaces))
	var values int64
	b.ResetTimer()
	start := time.Now()
	for i := 0; i < b.N; i++ {
		n, err := raw.round()
		if err != nil {
			b.Fatal(err)
		}
		values += n
	}
	el := time.Since(start)
	b.ReportMetric(el.Seconds()/float64(b.N), "round-s")
	b.ReportMetric(float64(values)/el.Seconds(), "values/s")
}

// rawSite is the poller's baseline: per site-scale device one gosnmp
// client doing what the poller does (Get of the name, BulkWalk of the
// index column and of each polled column), siteConcurrency devices at a
// time, counting values.
type rawSite struct {
	gs   []*gosnmp.GoSNMP
	cols []int
}

func newRawSite(b *testing.B, addr string) *rawSite {
	targets := siteTargets(addr)
	r := &rawSite{cols: []int{2}}
	for _, tc := range targets {
		g, err := newClient(snmpCollect(tc).Targets[0])
		if err != nil {
			b.Fatal(err)
		}
		if err := g.Connect(); err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { g.Close() })
		r.gs = append(r.gs, g)
	}
	for _, c := range targets[0].Tables[0].Columns {
		r.cols = append(r.cols, c.Column)
	}
	sort.Ints(r.cols)
	return r
}

// round polls every device once and returns the values received.
func (r *rawSite) round() (int64, error) {
	var values atomic.Int64
	err := siteRound(len(r.gs), func(i int) error {
		g := r.gs[i]
		pkt, err := g.Get([]string{".1.3.6.1.2.1.1.5.0"})
		if err != nil {
			return err
		}
		n := int64(len(pkt.Variables))
		for _, c := range r.cols {
			if err := g.BulkWalk(".1.3.6.1.2.1.2.2.1."+strconv.Itoa(c), func(gosnmp.SnmpPDU) error { n++; return nil }); err != nil {
				return err
			}
		}
		values.Add(n)
		return nil
	})
	return values.Load(), err
}

func BenchmarkRawBulkWalkSnmpd(b *testing.B) {
	addr := startSnmpd(b)
	benchRawWalk(b, addr, "testcomm", ".1.3.6.1.2.1")
}

func BenchmarkPollerWalkSnmpd(b *testing.B) {
	addr := startSnmpd(b)
	var values atomic.Int64
	p, err := NewPoller(snmpCollect(Target{Name: "d", Address: addr, Community: "testcomm", MaxRepetitions: 25,
		OIDs: []OID{{OID: "1.3.6.1.2.1", Walk: true}}}), func(us []model.Update) { values.Add(int64(len(us))) }, slog.New(slog.DiscardHandler))
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	start := time.Now()
	for i := 0; i < b.N; i++ {
		if err := p.PollOnce(context.Background(), "d"); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(values.Load())/time.Since(start).Seconds(), "values/s")
}

func benchRawWalk(b *testing.B, addr, community, root string) {
	host, port := addr[:strings.LastIndex(addr, ":")], addr[strings.LastIndex(addr, ":")+1:]
	var pn int
	fmt.Sscan(port, &pn)
	g := &gosnmp.GoSNMP{Target: host, Port: uint16(pn), Community: community, Version: gosnmp.Version2c, Timeout: 3 * time.Second, Retries: 1, MaxRepetitions: 25, Logger: gosnmp.NewLogger(nil)}
	if err := g.Connect(); err != nil {
		b.Fatal(err)
	}
	defer g.Close()
	n := 0
	b.ResetTimer()
	start := time.Now()
	for i := 0; i < b.N; i++ {
		if err := g.BulkWalk(root, func(gosnmp.SnmpPDU) error { n++; return nil }); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(n)/time.Since(start).Seconds(), "values/s")
}

// Several devices behind one address: snmpsim serves each device under its
// community (v2c) and its context (v3) on one port, snmpd answers v2c and
// v3 on one port; every target gets its own device's values.
func TestDevicesBehindOneAddress(t *testing.T) {
	const n = 6
	devs := map[string]string{}
	for i := 1; i <= n; i++ {
		devs[fmt.Sprintf("dev%03d", i)] = fmt.Sprintf("1.3.6.1.2.1.1.5.0|4|sim-%03d\n", i)
	}
	sim := simPeer(t, devs)
	snmpd := startSnmpd(t)
	simV3 := V3{Username: simUser, SecurityLevel: "authPriv", AuthProtocol: "SHA", AuthPasswordFile: secret(t, simAuthPass),
		PrivProtocol: "AES", PrivPasswordFile: secret(t, simPrivPass)}
	name := []OID{{OID: "1.3.6.1.2.1.1.5.0", Name: "/system/name"}}
	want := map[string]string{}
	var targets []Target
	for i := 1; i <= n; i++ {
		dev := fmt.Sprintf("dev%03d", i)
		targets = append(targets, Target{Name: "v2c-" + dev, Address: sim.addr, Community: dev, OIDs: name})
		v3 := simV3
		v3.ContextName = dev
		targets = append(targets, Target{Name: "v3-" + dev, Address: sim.addr, Version: "3", V3: v3, OIDs: name})
		want["v2c-"+dev], want["v3-"+dev] = fmt.Sprintf("sim-%03d", i), fmt.Sprintf("sim-%03d", i)
	}
	targets = append(targets,
		Target{Name: "snmpd-v2c", Address: snmpd, Community: "testcomm", OIDs: name},
		Target{Name: "snmpd-v3", Address: snmpd, Version: "3", OIDs: name, V3: V3{Username: "testv3user", SecurityLevel: "authPriv",
			AuthProtocol: "SHA", AuthPasswordFile: secret(t, "authpass123"), PrivProtocol: "AES", PrivPasswordFile: secret(t, "privpass123")}})
	want["snmpd-v2c"], want["snmpd-v3"] = "snmp-peer-1", "snmp-peer-1"
	rec := &recorder{}
	p, err := NewPoller(snmpCollect(targets...), rec.sink, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for _, tc := range targets {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := p.PollOnce(context.Background(), tc.Name); err != nil {
				t.Errorf("%s: %v", tc.Name, err)
			}
		}()
	}
	wg.Wait()
	got := map[string]string{}
	for _, u := range rec.all() {
		got[u.Target] = u.Value.Text()
	}
	for tn, w := range want {
		if got[tn] != w {
			t.Errorf("%s: system name %q, want %q", tn, got[tn], w)
		}
	}
}
