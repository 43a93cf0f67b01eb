package snmp

import (
	"context"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gosnmp/gosnmp"

	"github.com/outpost-edge/outpost/telemetry/model"
)

// BenchmarkPollSimulatedDevices polls 200 simulated devices (97 values
// each: sysName and 4 columns of a 24-row ifTable, rows named by ifDescr)
// with 16 polls in flight, against raw-gosnmp: the same requests (a Get of
// sysName, a bulk walk of each of the 5 columns, max-repetitions 25) to the
// same devices at the same concurrency, one gosnmp client per device,
// values only counted. Both report device polls per second.
func BenchmarkPollSimulatedDevices(b *testing.B) {
	const n, inFlight = 200, 16
	addr := startSnmpsim(b, n)
	targets := simTargets(addr, n)
	// each runs poll(i) for every device, inFlight at a time, and returns
	// the polls per second.
	each := func(b *testing.B, poll func(i int) error) float64 {
		sem := make(chan struct{}, inFlight)
		start := time.Now()
		for range b.N {
			var wg sync.WaitGroup
			for i := range targets {
				wg.Add(1)
				sem <- struct{}{}
				go func() {
					defer wg.Done()
					defer func() { <-sem }()
					if err := poll(i); err != nil {
						b.Error(err)
					}
				}()
			}
			wg.Wait()
		}
		return float64(b.N*n) / time.Since(start).Seconds()
	}

	b.Run("raw-gosnmp", func(b *testing.B) {
		host, port, _ := net.SplitHostPort(addr)
		pn, _ := strconv.Atoi(port)
		clients := make([]*gosnmp.GoSNMP, n)
		for i, t := range targets {
			g := &gosnmp.GoSNMP{Target: host, Port: uint16(pn), Community: t.Community, Version: gosnmp.Version2c,
				Timeout: 3 * time.Second, Retries: 1, MaxRepetitions: 25, Logger: gosnmp.NewLogger(nil)}
			if err := g.Connect(); err != nil {
				b.Fatal(err)
			}
			defer g.Close()
			clients[i] = g
		}
		var values atomic.Int64
		b.ResetTimer()
		rate := each(b, func(i int) error {
			g := clients[i]
			pkt, err := g.Get([]string{".1.3.6.1.2.1.1.5.0"})
			if err != nil {
				return err
			}
			got := int64(len(pkt.Variables))
			for _, col := range []string{"2", "4", "8", "10", "16"} {
				if err := g.BulkWalk(".1.3.6.1.2.1.2.2.1."+col, func(gosnmp.SnmpPDU) error {
					if col != "2" { // ifDescr names the rows
						got++
					}
					return nil
				}); err != nil {
					return err
				}
			}
			values.Add(got)
			return nil
		})
		b.ReportMetric(rate, "polls/s")
		b.ReportMetric(rate*float64(values.Load())/float64(b.N*n), "values/s")
	})

	b.Run("poller", func(b *testing.B) {
		var values atomic.Int64
		p, err := NewPoller(snmpCollect(targets...), func(us []model.Update) { values.Add(int64(len(us))) }, slog.New(slog.DiscardHandler))
		if err != nil {
			b.Fatal(err)
		}
		defer func() {
			for _, t := range p.targets {
				t.snmp.Close()
			}
		}()
		b.ResetTimer()
		rate := each(b, func(i int) error { return p.poll(context.Background(), p.targets[i]) })
		b.ReportMetric(rate, "polls/s")
		b.ReportMetric(rate*float64(values.Load())/float64(b.N*n), "values/s")
		var ms runtimeMem
		b.ReportMetric(ms.perTarget(n), "B/target")
	})
}
