package tsdb

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
	dto "github.com/prometheus/client_model/go"
	"go.uber.org/goleak"

	"github.com/outpost-edge/outpost/internal/confval"
	"github.com/outpost-edge/outpost/internal/format"
	"github.com/outpost-edge/outpost/internal/store"
	"github.com/outpost-edge/outpost/telemetry/model"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func open(t testing.TB, dir string) *DB {
	t.Helper()
	cfg := Config{}.WithDefaults()
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
		// A list element named without its keys matches every entry.
		if lat := d.Latest("sw1", model.MustPattern("/interfaces/interface/state/counters/in-octets")); len(lat) != 2 || lat[0].Value != model.Uint(11900) {
			t.Fatalf("latest without the list key: %+v", lat)
		}
		res, err := d.Query(context.Background(), Query{Target: "sw1", Path: model.MustPattern("/interfaces/interface[name=eth0]/..."), Since: base.Add(10 * time.Minute), Until: base.Add(69 * time.Minute)})
		if err != nil {
			t.Fatal(err)
		}
		if len(res) != 1 || len(res[0].Points) != 60 {
			t.Fatalf("range: %d series, %+v", len(res), res)
		}
		if p := res[0].Points[0]; !p.Time.Equal(base.Add(10*time.Minute)) || p.Value != model.Uint(1000) {
			t.Errorf("first point %+v", p)
		}
		res, err = d.Query(context.Background(), Query{Target: "sw*", Path: model.MustPattern(""), Since: base, Until: base.Add(2 * time.Hour), Bucket: 30 * time.Minute})
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
	var backup bytes.Buffer
	if err := d.Backup(&backup); err != nil {
		t.Fatal(err)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	d = open(t, dir)
	t.Run("reopened", func(t *testing.T) { check(t, d) })
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	// A backup loaded into an empty badger DB, as a restore does, opens
	// as the same store: points, series, latest values.
	restored := t.TempDir()
	bdb, err := badger.Open(store.Options(restored, store.Defaults(), slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	if err := bdb.Load(&backup, 16); err != nil {
		t.Fatal(err)
	}
	if err := bdb.Close(); err != nil {
		t.Fatal(err)
	}
	d = open(t, restored)
	defer d.Close()
	t.Run("restored", func(t *testing.T) { check(t, d) })
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
	res, err := d.Query(context.Background(), Query{Target: "a", Path: model.MustPattern("/x"), Since: time.Unix(0, ts-1)})
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
		res, err := d.Query(context.Background(), Query{Target: "sw1", Path: pat, Since: start})
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
		res, err := d.Query(context.Background(), Query{Target: "sw1", Path: pat, Since: start, Bucket: time.Minute})
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
		res, err := d.Query(context.Background(), Query{Target: "a", Path: model.MustPattern("/x"), Since: now.Add(-4 * time.Hour)})
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
	res, err := d.Query(context.Background(), Query{Path: model.MustPattern("")})
	if err != nil || len(res) != 0 {
		t.Fatal(err, res)
	}
	if time.Since(start) > time.Second {
		t.Error("query of an empty store walked every hour since 1970")
	}
}

func (d *DB) seriesCount() int {
	d.mu.RLock()
	defer d.mu.RUnlock()
	return len(d.byKey)
}

// With a 1 s retention: the latest value of a series with no new data is
// hidden once its data expired, the series then leaves the index (memory and
// disk), a series that keeps getting data stays, and one that comes back
// starts over.
func TestRetentionExpiresLatestAndPrunesIndex(t *testing.T) {
	dir := t.TempDir()
	cfg := Config{Retention: confval.Duration(time.Second), FlushInterval: confval.Duration(50 * time.Millisecond)}.WithDefaults()
	openShort := func() *DB {
		d, err := Open(Options{Dir: dir, Cfg: cfg})
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	all, _ := model.ParsePattern("")
	paths := func(us []model.Update) []string {
		var out []string
		for _, u := range us {
			out = append(out, u.Target+u.Path)
		}
		return out
	}
	d := openShort()
	t0 := time.Now()
	d.Append([]model.Update{
		{Target: "sw1", Path: "/a", Time: t0.UnixNano(), Value: model.Int(1)},
		{Target: "sw1", Path: "/b", Time: t0.UnixNano(), Value: model.Int(1)},
	})
	if err := d.Flush(); err != nil {
		t.Fatal(err)
	}
	if got := paths(d.Latest("", all)); len(got) != 2 {
		t.Fatalf("latest before expiry: %v", got)
	}
	time.Sleep(1200 * time.Millisecond) // /a's data expired
	d.Append([]model.Update{{Target: "sw1", Path: "/b", Time: time.Now().UnixNano(), Value: model.Int(2)}})
	if err := d.Flush(); err != nil {
		t.Fatal(err)
	}
	if got := paths(d.Latest("", all)); len(got) != 1 || got[0] != "sw1/b" {
		t.Errorf("latest after /a expired: %v, want sw1/b only", got)
	}
	if got, _ := d.Query(context.Background(), Query{Target: "sw1", Path: all}); len(got) != 1 || got[0].Path != "/b" {
		t.Errorf("query after /a expired: %+v", got)
	}
	// Within the grace period nothing is pruned; past it /a is, /b is not.
	if n := d.prune(time.Now()); n != 0 {
		t.Errorf("pruned %d series within the grace period", n)
	}
	if n := d.prune(time.Now().Add(d.pruneGrace() + 400*time.Millisecond)); n != 1 || d.seriesCount() != 1 {
		t.Errorf("pruned %d, %d series left; want 1 and 1", n, d.seriesCount())
	}
	d.Close()

	// The pruned series is gone from the index on disk too.
	d = openShort()
	if d.seriesCount() != 1 {
		t.Errorf("after reopen: %d series, want 1", d.seriesCount())
	}
	// A series that comes back starts over with a new id.
	d.Append([]model.Update{{Target: "sw1", Path: "/a", Time: time.Now().UnixNano(), Value: model.Int(3)}})
	if got := d.Latest("sw1", mustPattern(t, "/a")); len(got) != 1 || got[0].Value != model.Int(3) {
		t.Errorf("latest of a returning series: %+v", got)
	}
	d.Close()

	// Reopened after everything expired: nothing is listed, and the index is pruned.
	time.Sleep(1100 * time.Millisecond)
	d = openShort()
	defer d.Close()
	if got := d.Latest("", all); len(got) != 0 {
		t.Errorf("latest after everything expired: %v", paths(got))
	}
	if n := d.prune(time.Now().Add(d.pruneGrace())); n != 2 || d.seriesCount() != 0 {
		t.Errorf("pruned %d, %d series left; want 2 and 0", n, d.seriesCount())
	}
}

func mustPattern(t *testing.T, s string) model.Pattern {
	t.Helper()
	p, err := model.ParsePattern(s)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestFormat: the store records format version 1 and refuses a newer one.
func TestFormat(t *testing.T) {
	dir := t.TempDir()
	d := open(t, dir)
	if err := d.db.Update(func(txn *badger.Txn) error { return txn.Set(formatKey, []byte("9")) }); err != nil {
		t.Fatal(err)
	}
	d.Close()
	_, err := Open(Options{Dir: dir, Cfg: Config{}.WithDefaults()})
	if !errors.Is(err, format.ErrNewer) || !strings.Contains(err.Error(), "telemetry store has format version 9") {
		t.Fatalf("err %v", err)
	}
}

// Answer gives updates read elsewhere the shape Query gives stored ones.
func TestAnswerEqualsQuery(t *testing.T) {
	d := open(t, t.TempDir())
	defer d.Close()
	t0 := time.Now().Add(-time.Hour).Truncate(time.Minute)
	var us []model.Update
	for i := range 50 {
		at := t0.Add(time.Duration(i) * 7 * time.Second).UnixNano()
		us = append(us,
			model.Update{Target: "sw1", Path: "/a", Time: at, Value: model.Uint(uint64(i))},
			model.Update{Target: "sw1", Path: "/b", Time: at, Value: model.String("x")},
			model.Update{Target: "sw2", Path: "/a", Time: at, Value: model.Uint(uint64(i))})
	}
	if err := d.Append(us); err != nil {
		t.Fatal(err)
	}
	for _, q := range []Query{
		{Target: "sw1", Path: model.MustPattern("/..."), Since: t0.Add(time.Minute), Until: t0.Add(4 * time.Minute)},
		{Target: "sw*", Path: model.MustPattern("/a"), Since: t0, Until: t0.Add(time.Hour), Limit: 5},
		{Target: "", Path: model.MustPattern("/..."), Since: t0, Until: t0.Add(time.Hour), Bucket: time.Minute},
	} {
		want, err := d.Query(context.Background(), q)
		if err != nil || len(want) == 0 {
			t.Fatalf("%+v: %v %v", q, err, want)
		}
		if got := q.Answer(us); !reflect.DeepEqual(got, want) {
			t.Errorf("%+v:\n got %+v\nwant %+v", q, got, want)
		}
	}
}

// A query needs the points appended before it written, not more: when a
// flush it waited for (another query's, the flusher's) wrote them, it
// writes nothing, even with newer points pending. Many queries at once (a
// holder answering every replica's stream) then cost a write or two, not
// one write each behind one another.
func TestQueryFlushesOnlyWhatItNeeds(t *testing.T) {
	d := open(t, t.TempDir())
	defer d.Close()
	writes := func() uint64 {
		var m dto.Metric
		if err := d.mFlush.Write(&m); err != nil {
			t.Fatal(err)
		}
		return m.GetHistogram().GetSampleCount()
	}
	p := func(i int64) []model.Update {
		return []model.Update{{Target: "sw1", Path: "/a", Time: i, Value: model.Int(i)}}
	}
	if err := d.Append(p(1)); err != nil {
		t.Fatal(err)
	}
	d.mu.RLock()
	want := d.appended // what a query arriving now needs
	d.mu.RUnlock()
	if err := d.Flush(); err != nil { // the flush it waits for
		t.Fatal(err)
	}
	if err := d.Append(p(2)); err != nil { // newer than the query
		t.Fatal(err)
	}
	before := writes()
	if err := d.flush(want); err != nil {
		t.Fatal(err)
	}
	if n := writes() - before; n != 0 {
		t.Errorf("the query wrote %d batches after its points were written", n)
	}
	// A query writes what was appended before it and finds it.
	ss, err := d.Query(context.Background(), Query{Target: "sw1", Path: model.MustPattern("/a")})
	if err != nil || len(ss) != 1 || len(ss[0].Points) != 2 {
		t.Fatalf("query after an append: %v %+v", err, ss)
	}
	if n := writes() - before; n != 1 {
		t.Errorf("the query wrote %d batches, want 1", n)
	}
}
