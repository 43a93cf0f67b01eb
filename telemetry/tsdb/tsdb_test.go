package tsdb

import (
	"fmt"
	"math"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/outpost-edge/outpost/coordinator/config"
	"github.com/outpost-edge/outpost/telemetry/model"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func open(t testing.TB, dir string) *DB {
	t.Helper()
	cfg := config.Telemetry{}.WithDefaults().Store
	d, err := Open(Options{Dir: dir, Cfg: cfg})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func TestChunkRoundTrip(t *testing.T) {
	pts := []point{
		{100, model.Int(-5)}, {110, model.Uint(math.MaxUint64)}, {90, model.Float(3.25)},
		{200, model.Bool(true)}, {300, model.String("up")}, {301, model.Bytes([]byte{0, 1})}, {302, model.JSON([]byte(`{"a":1}`))},
	}
	b := encodeChunk(nil, 100, pts)
	var got []point
	if err := decodeChunk(b, 100, func(p point) bool { got = append(got, p); return true }); err != nil {
		t.Fatal(err)
	}
	if len(got) != len(pts) {
		t.Fatalf("got %d points", len(got))
	}
	for i := range pts {
		if got[i] != pts[i] {
			t.Errorf("point %d: got %+v want %+v", i, got[i], pts[i])
		}
	}
	if n := len(b); n > 60 {
		t.Errorf("chunk of 7 points is %d bytes", n)
	}
}

func TestAppendLatestQueryReopen(t *testing.T) {
	dir := t.TempDir()
	d := open(t, dir)
	base := time.Now().Add(-2 * time.Hour).Truncate(time.Hour).Add(30 * time.Minute)
	var us []model.Update
	for i := 0; i < 120; i++ { // one point a minute for two hours, crossing an hour
		ts := base.Add(time.Duration(i) * time.Minute).UnixNano()
		us = append(us,
			model.Update{Target: "sw1", Path: "/interfaces/interface[name=eth0]/state/counters/in-octets", Time: ts, Value: model.Uint(uint64(i * 100))},
			model.Update{Target: "sw1", Path: "/interfaces/interface[name=eth1]/state/counters/in-octets", Time: ts, Value: model.Uint(uint64(i))},
			model.Update{Target: "sw2", Path: "/system/state/hostname", Time: ts, Value: model.String("sw2")},
		)
	}
	if err := d.Append(us[:200]); err != nil {
		t.Fatal(err)
	}
	if err := d.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := d.Append(us[200:]); err != nil {
		t.Fatal(err)
	}
	check := func(t *testing.T, d *DB) {
		lat := d.Latest("sw1", model.MustPattern("/interfaces/interface[name=*]/state/counters/in-octets"))
		if len(lat) != 2 || lat[0].Value != model.Uint(11900) || lat[1].Value != model.Uint(119) {
			t.Fatalf("latest: %+v", lat)
		}
		if lat := d.Latest("", model.MustPattern("/system/...")); len(lat) != 1 || lat[0].Value.Text() != "sw2" {
			t.Fatalf("latest sw2: %+v", lat)
		}
		res, err := d.Query(Query{Target: "sw1", Path: model.MustPattern("/interfaces/interface[name=eth0]/..."), Since: base.Add(10 * time.Minute), Until: base.Add(69 * time.Minute)})
		if err != nil {
			t.Fatal(err)
		}
		if len(res) != 1 || len(res[0].Points) != 60 {
			t.Fatalf("range: %d series, %+v", len(res), res)
		}
		if p := res[0].Points[0]; !p.Time.Equal(base.Add(10*time.Minute)) || p.Value != model.Uint(1000) {
			t.Errorf("first point %+v", p)
		}
		res, err = d.Query(Query{Target: "sw*", Path: model.MustPattern(""), Since: base, Until: base.Add(2 * time.Hour), Bucket: 30 * time.Minute})
		if err != nil {
			t.Fatal(err)
		}
		if len(res) != 3 {
			t.Fatalf("buckets: %d series", len(res))
		}
		b := res[0].Buckets // eth0
		if len(b) != 4 || b[0].Count != 30 || *b[0].Min != 0 || *b[0].Max != 2900 || *b[0].Avg != 1450 {
			t.Fatalf("bucket 0: %+v", b)
		}
		if sb := res[2].Buckets; sb[0].Min != nil || sb[0].Last.Text() != "sw2" || sb[0].Count != 30 {
			t.Errorf("string bucket: %+v", sb[0])
		}
	}
	t.Run("open", func(t *testing.T) { check(t, d) })
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	d = open(t, dir)
	defer d.Close()
	t.Run("reopened", func(t *testing.T) { check(t, d) })
}

// The same timestamps written twice (an agent resending after a reconnect)
// must not overwrite each other's chunks.
func TestDuplicateFirstTimestamp(t *testing.T) {
	d := open(t, t.TempDir())
	defer d.Close()
	ts := time.Now().UnixNano()
	for i := 0; i < 3; i++ {
		d.Append([]model.Update{{Target: "a", Path: "/x", Time: ts, Value: model.Int(int64(i))}, {Target: "a", Path: "/x", Time: ts + int64(i) + 1, Value: model.Int(int64(i))}})
		if err := d.Flush(); err != nil {
			t.Fatal(err)
		}
	}
	res, err := d.Query(Query{Target: "a", Path: model.MustPattern("/x"), Since: time.Unix(0, ts-1)})
	if err != nil || len(res) != 1 || len(res[0].Points) != 6 {
		t.Fatalf("%v %+v", err, res)
	}
}

func TestReopenLocked(t *testing.T) {
	dir := t.TempDir()
	d := open(t, dir)
	defer d.Close()
	if _, err := Open(Options{Dir: dir, Cfg: d.cfg}); err == nil {
		t.Fatal("second open of the same dir succeeded")
	}
}

func benchUpdates(nSeries, n int) []model.Update {
	us := make([]model.Update, n)
	ts := time.Now().UnixNano()
	paths := make([]string, nSeries)
	for i := range paths {
		paths[i] = fmt.Sprintf("/interfaces/interface[name=eth%d]/state/counters/in-octets", i)
	}
	for i := range us {
		us[i] = model.Update{Target: "sw1", Path: paths[i%nSeries], Time: ts + int64(i/nSeries)*int64(time.Second), Value: model.Uint(uint64(i))}
	}
	return us
}

// BenchmarkAppend writes updates in batches of 1000 and flushes every 100k.
func BenchmarkAppend(b *testing.B) {
	d := open(b, b.TempDir())
	defer d.Close()
	us := benchUpdates(1000, 100_000)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		off := (i * 1000) % len(us)
		_ = d.Append(us[off : off+1000])
		if off+1000 == len(us) {
			d.Flush()
		}
	}
	d.Flush()
	b.ReportMetric(float64(b.N*1000)/b.Elapsed().Seconds(), "updates/s")
}

func seedHour(b *testing.B) (*DB, time.Time) {
	d := open(b, b.TempDir())
	// 100 series, one point every 10 s for 1 hour: 36,000 points.
	start := time.Now().Add(-time.Hour)
	var us []model.Update
	for s := 0; s < 100; s++ {
		for i := 0; i < 360; i++ {
			us = append(us, model.Update{Target: "sw1", Path: fmt.Sprintf("/if[name=eth%d]/in", s), Time: start.Add(time.Duration(i) * 10 * time.Second).UnixNano(), Value: model.Uint(uint64(i))})
		}
	}
	d.Append(us)
	d.Flush()
	return d, start
}

func BenchmarkQueryLatest(b *testing.B) {
	d, _ := seedHour(b)
	defer d.Close()
	pat := model.MustPattern("/if[name=eth42]/in")
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if len(d.Latest("sw1", pat)) != 1 {
			b.Fatal("no latest")
		}
	}
}

func BenchmarkQueryRange1h(b *testing.B) {
	d, start := seedHour(b)
	defer d.Close()
	pat := model.MustPattern("/if[name=eth42]/in")
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		res, err := d.Query(Query{Target: "sw1", Path: pat, Since: start})
		if err != nil || len(res) != 1 || len(res[0].Points) != 360 {
			b.Fatal(err, len(res))
		}
	}
}

func BenchmarkQueryRange1hDownsampled(b *testing.B) {
	d, start := seedHour(b)
	defer d.Close()
	pat := model.MustPattern("/if[name=eth42]/in")
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		res, err := d.Query(Query{Target: "sw1", Path: pat, Since: start, Bucket: time.Minute})
		if err != nil || len(res) != 1 {
			b.Fatal(err)
		}
	}
}

// Over max_size the oldest hour goes first, and never the current hour.
func TestSizeRetentionDropsOldestHour(t *testing.T) {
	d := open(t, t.TempDir())
	defer d.Close()
	now := time.Now()
	for _, ago := range []time.Duration{3 * time.Hour, 2 * time.Hour, 0} {
		d.Append([]model.Update{{Target: "a", Path: "/x", Time: now.Add(-ago).UnixNano(), Value: model.Int(int64(ago / time.Hour))}})
	}
	d.Flush()
	count := func() int {
		res, err := d.Query(Query{Target: "a", Path: model.MustPattern("/x"), Since: now.Add(-4 * time.Hour)})
		if err != nil || len(res) != 1 {
			t.Fatal(err, res)
		}
		return len(res[0].Points)
	}
	d.cfg.MaxSize = 1000
	d.sizeFn = func() (int64, int64) { return 10_000, 0 }
	d.enforceSize()
	if n := count(); n != 2 {
		t.Fatalf("after one round %d points, want 2", n)
	}
	d.enforceSize()
	d.enforceSize() // only the current hour is left: kept
	if n := count(); n != 1 {
		t.Fatalf("after three rounds %d points, want 1", n)
	}
	d.sizeFn = func() (int64, int64) { return 10, 0 }
	d.enforceSize()
	if n := count(); n != 1 {
		t.Fatal("dropped under the limit")
	}
}

func TestQueryEmptyStore(t *testing.T) {
	d := open(t, t.TempDir())
	defer d.Close()
	start := time.Now()
	res, err := d.Query(Query{Path: model.MustPattern("")})
	if err != nil || len(res) != 0 {
		t.Fatal(err, res)
	}
	if time.Since(start) > time.Second {
		t.Error("query of an empty store walked every hour since 1970")
	}
}
