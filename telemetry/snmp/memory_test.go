package snmp

import (
	"bufio"
	"context"
	"log/slog"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"github.com/outpost-edge/outpost/telemetry/model"
	"github.com/outpost-edge/outpost/telemetry/tsdb"
)

// liveHeap is the heap in use after a full collection.
func liveHeap() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// procStatus reads a "Name: N kB" line of /proc/self/status in bytes.
func procStatus(name string) float64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), name+":"); ok {
			kb, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 64)
			return kb * 1024
		}
	}
	return 0
}

// BenchmarkMemoryPerSeries polls the site-scale devices (about 80,000
// series, see siteDevices) b.N rounds into the time-series store, as the
// daemon does, and reports the live heap per active series (the poller's
// and the store's state, beyond what both hold before the first poll), the
// process's RSS at the end (anonymous memory, and pages of the store's
// memory-mapped files) and at its peak, and the series count. Run it
// alone (-bench MemoryPerSeries) for an RSS of its own.
func BenchmarkMemoryPerSeries(b *testing.B) {
	addr := startSnmpsimN(b, siteDevices, siteInterfaces)
	db, err := tsdb.Open(tsdb.Options{Dir: b.TempDir(), Cfg: tsdb.Config{}.WithDefaults()})
	if err != nil {
		b.Fatal(err)
	}
	db.Start()
	defer db.Close()
	p, err := NewPoller(snmpCollect(siteTargets(addr)...), func(us []model.Update) {
		if err := db.Append(us); err != nil {
			b.Error(err)
		}
	}, slog.New(slog.DiscardHandler))
	if err != nil {
		b.Fatal(err)
	}
	before := liveHeap()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := siteRound(len(p.targets), func(i int) error { return p.poll(context.Background(), p.targets[i]) }); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	if err := db.Flush(); err != nil {
		b.Fatal(err)
	}
	series := db.Series()
	after := liveHeap()
	b.ReportMetric(float64(series), "series")
	b.ReportMetric((float64(after)-float64(before))/float64(series), "B/series")
	b.ReportMetric(float64(after)/(1<<20), "heap-MB")
	b.ReportMetric(procStatus("VmRSS")/(1<<20), "RSS-MB")
	b.ReportMetric(procStatus("RssAnon")/(1<<20), "anon-RSS-MB")
	b.ReportMetric(procStatus("RssFile")/(1<<20), "file-RSS-MB")
	b.ReportMetric(procStatus("VmHWM")/(1<<20), "peak-RSS-MB")
}
