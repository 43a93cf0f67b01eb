// Package tsdb owns Outpost's local time-series store: a second badger DB
// (under <data_dir>/telemetry) holding every collected update in compact
// per-series chunks, with retention by age (badger TTL) and by size
// (dropping the oldest hour), an in-memory latest value per series, and
// queries by target glob and path pattern over a time range with optional
// downsampling (min, max, avg per bucket).
//
// Lock order: flushMu before mu.
package tsdb

import (
	"bytes"
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/outpost-edge/outpost/internal/format"
	"github.com/outpost-edge/outpost/internal/store"
	"github.com/outpost-edge/outpost/telemetry/model"
)

// ErrClosed is returned after Close.
var ErrClosed = errors.New("telemetry store closed")

// Options configure a DB.
type Options struct {
	Dir string
	Cfg Config // defaults applied by the caller
	Log *slog.Logger
	Reg prometheus.Registerer // may be nil
	// MaxPending is the number of buffered points past which Append writes
	// inline (back-pressure on the source). Default 200k.
	MaxPending int
}

type seriesKey struct{ target, path string }

type series struct {
	id     uint32
	target string
	path   string // parsed when a pattern query scans: not kept (memory per series)
	latest point
	has    bool
	// expires (Unix ns) is when the last data written for the series
	// expires (badger TTL from the write): after it the latest value is
	// hidden and, past a grace period, the series leaves the index.
	expires int64
}

// DB is the time-series store.
type DB struct {
	db   *badger.DB
	log  *slog.Logger
	cfg  Config
	ttl  time.Duration
	maxP int

	flushMu sync.Mutex // serialises flushes
	seq     uint32     // flush sequence, under flushMu: keeps chunk keys unique
	flushed uint64     // under flushMu: the points appended before it are written

	mu       sync.RWMutex
	byKey    map[seriesKey]*series
	byID     []*series // index = id
	nextID   uint32
	newSer   []*series // created since the last flush
	pending  []pend
	appended uint64 // points ever appended (pending or written)
	closed   bool

	stop   chan struct{}
	done   sync.WaitGroup
	sizeFn func() (lsm, vlog int64) // badger's Size; replaced in tests

	mPoints  prometheus.Counter
	mFlush   prometheus.Histogram
	mSeries  prometheus.GaugeFunc
	mDropped prometheus.Counter
	mErrors  prometheus.Counter
}

type pend struct {
	sid uint32
	point
}

// tsdbFormat is the telemetry store's format: the key layout and chunk
// encoding of encoding.go (docs/architecture.md, "Format versions").
var tsdbFormat = format.New("telemetry store", 1)

// Open opens (creating) the store and loads its series index.
func Open(o Options) (*DB, error) {
	if err := os.MkdirAll(o.Dir, 0o750); err != nil {
		return nil, fmt.Errorf("create telemetry store dir: %w", err)
	}
	st := store.Config{
		MemtableSize:     o.Cfg.MemtableSize,
		NumMemtables:     2,
		BlockCacheSize:   o.Cfg.BlockCacheSize,
		ValueLogFileSize: 64 << 20,
		NumCompactors:    2,
	}
	if st.MemtableSize == 0 {
		st.MemtableSize = 4 << 20
	}
	if st.BlockCacheSize == 0 {
		st.BlockCacheSize = 8 << 20
	}
	log := o.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	// Time-series pattern: many small writes in batches, no transactions
	// conflicting, chunks kept in the LSM tree (value threshold 1 MiB or
	// memtable/8), no sync per write (a crash loses at most one flush).
	bo := store.Options(o.Dir, st, log).
		WithDetectConflicts(false).
		WithNumVersionsToKeep(1)
	bdb, err := badger.Open(bo)
	if err != nil {
		if strings.Contains(err.Error(), "Another process is using this Badger database") {
			return nil, fmt.Errorf("open telemetry store %s: %w (is another outpost running with the same data_dir?)", o.Dir, store.ErrLocked)
		}
		return nil, fmt.Errorf("open telemetry store %s: %w", o.Dir, err)
	}
	if err := tsdbFormat.OpenBadger(bdb, formatKey, nil, log); err != nil {
		bdb.Close()
		return nil, fmt.Errorf("open telemetry store %s: %w", o.Dir, err)
	}
	ttl := o.Cfg.Retention.Std()
	if ttl <= 0 {
		ttl = 7 * 24 * time.Hour
	}
	d := &DB{
		db: bdb, log: log, cfg: o.Cfg, ttl: ttl, maxP: o.MaxPending,
		byKey: map[seriesKey]*series{}, byID: []*series{nil}, nextID: 1,
		stop: make(chan struct{}),
	}
	d.seq = uint32(time.Now().UnixMilli())
	d.sizeFn = bdb.Size
	if d.maxP <= 0 {
		d.maxP = 200_000
	}
	if err := d.load(); err != nil {
		bdb.Close()
		return nil, err
	}
	d.metrics(o.Reg)
	return d, nil
}

// Start runs the flusher and the retention loop until Close.
func (d *DB) Start() {
	every := d.cfg.FlushInterval.Std()
	if every <= 0 {
		every = time.Second
	}
	d.done.Add(1)
	go func() {
		defer d.done.Done()
		t := time.NewTicker(every)
		defer t.Stop()
		r := time.NewTicker(time.Minute)
		defer r.Stop()
		for {
			select {
			case <-d.stop:
				return
			case <-t.C:
				if err := d.Flush(); err != nil && !errors.Is(err, ErrClosed) {
					d.log.Warn("telemetry store flush", "err", err)
				}
			case <-r.C:
				d.enforceSize()
				d.prune(time.Now())
				for d.db.RunValueLogGC(0.5) == nil {
				}
			}
		}
	}()
}

func (d *DB) metrics(reg prometheus.Registerer) {
	d.mPoints = prometheus.NewCounter(prometheus.CounterOpts{Name: "outpost_telemetry_store_points_total", Help: "Points written to the telemetry store."})
	d.mFlush = prometheus.NewHistogram(prometheus.HistogramOpts{Name: "outpost_telemetry_store_flush_seconds", Help: "Time to write one batch.", Buckets: prometheus.ExponentialBuckets(0.0005, 4, 8)})
	d.mDropped = prometheus.NewCounter(prometheus.CounterOpts{Name: "outpost_telemetry_store_dropped_hours_total", Help: "Hours of data dropped to stay under telemetry.store.max_size."})
	d.mErrors = prometheus.NewCounter(prometheus.CounterOpts{Name: "outpost_telemetry_store_errors_total", Help: "Failed batch writes (their points are lost)."})
	d.mSeries = prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "outpost_telemetry_store_series", Help: "Series known to the telemetry store."}, func() float64 {
		return float64(d.Series())
	})
	if reg != nil {
		for _, c := range []prometheus.Collector{d.mPoints, d.mFlush, d.mDropped, d.mErrors, d.mSeries} {
			if err := reg.Register(c); err != nil {
				d.log.Warn("register metric", "err", err)
			}
		}
	}
}

func (d *DB) load() error {
	return d.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{pfxIndex}, PrefetchValues: true, PrefetchSize: 256})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			k := it.Item().Key()[1:]
			i := bytes.IndexByte(k, 0)
			v, err := it.Item().ValueCopy(nil)
			if err != nil || i < 0 || len(v) != 4 {
				return fmt.Errorf("load telemetry series index: corrupt entry %q", k)
			}
			s := &series{id: binary.BigEndian.Uint32(v), target: string(k[:i]), path: string(k[i+1:])}
			d.byKey[seriesKey{s.target, s.path}] = s
			for int(s.id) >= len(d.byID) {
				d.byID = append(d.byID, nil)
			}
			d.byID[s.id] = s
			if s.id >= d.nextID {
				d.nextID = s.id + 1
			}
		}
		it.Close()
		lit := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{pfxLatest}, PrefetchValues: true, PrefetchSize: 256})
		defer lit.Close()
		for lit.Rewind(); lit.Valid(); lit.Next() {
			sid := binary.BigEndian.Uint32(lit.Item().Key()[1:])
			if int(sid) >= len(d.byID) || d.byID[sid] == nil {
				continue
			}
			s := d.byID[sid]
			_ = lit.Item().Value(func(v []byte) error {
				p, err := decodeLatest(v)
				if err == nil {
					s.latest, s.has = p, true
				}
				return nil
			})
			// The latest entry is rewritten with every flush holding points of
			// the series, so it expires last.
			if e := lit.Item().ExpiresAt(); e > 0 {
				s.expires = int64(e) * 1e9
			}
		}
		return nil
	})
}

// Append buffers updates for the next flush and updates the latest values.
// Past MaxPending buffered points it flushes inline, so a slow disk slows
// the sources instead of growing memory. Updates with a bad path are
// stored under the path as given.
func (d *DB) Append(us []model.Update) error {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return ErrClosed
	}
	exp := time.Now().Add(d.ttl).UnixNano() // written at the next flush, so not earlier
	for i := range us {
		u := &us[i]
		s := d.byKey[seriesKey{u.Target, u.Path}]
		if s == nil && u.Value.Kind == model.KindDeleted {
			continue // nothing to delete
		}
		if s == nil {
			s = &series{id: d.nextID, target: u.Target, path: u.Path}
			d.nextID++
			d.byKey[seriesKey{u.Target, u.Path}] = s
			d.byID = append(d.byID, s)
			d.newSer = append(d.newSer, s)
		}
		if !s.has || u.Time >= s.latest.ts {
			s.latest, s.has = point{u.Time, u.Value}, true
		}
		s.expires = max(s.expires, exp)
		d.pending = append(d.pending, pend{s.id, point{u.Time, u.Value}})
		d.appended++
	}
	full := len(d.pending) >= d.maxP
	d.mu.Unlock()
	if full {
		return d.Flush()
	}
	return nil
}

// Backup flushes the buffered points and writes a snapshot of the store,
// read at one timestamp, to w in badger's backup format (store.Snapshot).
func (d *DB) Backup(w io.Writer) error {
	if err := d.Flush(); err != nil {
		return err
	}
	return store.Snapshot(d.db, w)
}

// Flush writes the buffered points in one batch.
func (d *DB) Flush() error { return d.flush(math.MaxUint64) }

// flushAppended makes sure the points appended before it was called are
// written: a reader that waited for a flush that wrote them does not
// write again. Many readers at once (the replicas' streams, each reading
// the store first) then cost one write, not one each behind one another.
func (d *DB) flushAppended() error {
	d.mu.RLock()
	want := d.appended
	d.mu.RUnlock()
	return d.flush(want)
}

// flush writes the buffered points unless the first want appended ones
// are written already.
func (d *DB) flush(want uint64) error {
	d.flushMu.Lock()
	defer d.flushMu.Unlock()
	if d.flushed >= want {
		return nil
	}
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return ErrClosed
	}
	upto := d.appended
	batch, newSer := d.pending, d.newSer
	d.pending, d.newSer = make([]pend, 0, max(1024, len(batch))), nil
	latest := map[uint32]point{}
	for _, p := range batch {
		if s := d.byID[p.sid]; s != nil { // never pruned while points are pending
			latest[p.sid] = s.latest
		}
	}
	d.mu.Unlock()
	if len(batch) == 0 && len(newSer) == 0 {
		d.flushed = upto
		return nil
	}
	start := time.Now()
	d.seq++
	err := d.write(batch, newSer, latest, d.seq)
	d.mFlush.Observe(time.Since(start).Seconds())
	if err != nil {
		d.mErrors.Inc()
		return fmt.Errorf("write %d telemetry points: %w", len(batch), err)
	}
	d.flushed = upto
	d.mPoints.Add(float64(len(batch)))
	return nil
}

func (d *DB) write(batch []pend, newSer []*series, latest map[uint32]point, seq uint32) error {
	wb := d.db.NewWriteBatch()
	defer wb.Cancel()
	for _, s := range newSer {
		if err := wb.Set(indexKey(s.target, s.path), binary.BigEndian.AppendUint32(nil, s.id)); err != nil {
			return err
		}
	}
	if len(newSer) > 0 {
		if err := wb.Set([]byte{pfxMeta, 's', 'i', 'd'}, binary.BigEndian.AppendUint32(nil, newSer[len(newSer)-1].id+1)); err != nil {
			return err
		}
	}
	slices.SortStableFunc(batch, func(a, b pend) int {
		if a.sid != b.sid {
			return cmp.Compare(a.sid, b.sid)
		}
		switch {
		case a.ts < b.ts:
			return -1
		case a.ts > b.ts:
			return 1
		}
		return 0
	})
	var buf []byte
	pts := make([]point, 0, 64)
	for i := 0; i < len(batch); {
		sid, hour := batch[i].sid, hourOf(batch[i].ts)
		pts = pts[:0]
		j := i
		for ; j < len(batch) && batch[j].sid == sid && hourOf(batch[j].ts) == hour; j++ {
			pts = append(pts, batch[j].point)
		}
		first := pts[0].ts
		buf = encodeChunk(buf[:0], first, pts)
		e := badger.NewEntry(dataKey(hour, sid, first, seq), slices.Clone(buf)).WithTTL(d.ttl)
		if err := wb.SetEntry(e); err != nil {
			return err
		}
		i = j
	}
	for sid, p := range latest {
		if err := wb.SetEntry(badger.NewEntry(latestKey(sid), encodeLatest(p.ts, p.v)).WithTTL(d.ttl)); err != nil {
			return err
		}
	}
	return wb.Flush()
}

// enforceSize drops the oldest hour when the DB is over MaxSize, never the
// current hour. badger measures its size in the background, so one hour is
// dropped per round (every minute) until the size is under the limit.
func (d *DB) enforceSize() {
	if d.cfg.MaxSize == 0 {
		return
	}
	lsm, vlog := d.sizeFn()
	if uint64(lsm+vlog) <= uint64(d.cfg.MaxSize) {
		return
	}
	oldest, ok := d.oldestHour()
	if !ok || oldest >= hourOf(time.Now().UnixNano()) {
		return
	}
	if err := d.db.DropPrefix([]byte{pfxData, byte(oldest >> 24), byte(oldest >> 16), byte(oldest >> 8), byte(oldest)}); err != nil {
		d.log.Warn("telemetry store: drop oldest hour", "err", err)
		return
	}
	d.mDropped.Inc()
	d.log.Info("telemetry store over max_size: dropped the oldest hour", "hour", time.Unix(int64(oldest)*3600, 0).UTC(), "lsm", lsm, "vlog", vlog)
}

func (d *DB) oldestHour() (uint32, bool) {
	var h uint32
	var ok bool
	_ = d.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{pfxData}})
		defer it.Close()
		it.Rewind()
		if it.Valid() {
			h, ok = binary.BigEndian.Uint32(it.Item().Key()[1:]), true
		}
		return nil
	})
	return h, ok
}

// pruneGrace is how long after its data expired a series stays indexed:
// points are buffered up to a flush interval before they are written (and
// their TTL starts), and badger counts TTLs in whole seconds.
func (d *DB) pruneGrace() time.Duration {
	return d.cfg.FlushInterval.Std() + 2*time.Second
}

// prune drops from the index (memory and disk) every series whose data has
// expired: no point of it is left, so it is no longer listed by Latest,
// Query or the series count. A series that comes back gets a new id. It
// returns the number of series dropped.
func (d *DB) prune(now time.Time) int {
	d.flushMu.Lock()
	defer d.flushMu.Unlock()
	cut := now.Add(-d.pruneGrace()).UnixNano()
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return 0
	}
	var gone []*series
	for k, s := range d.byKey {
		if s.expires < cut {
			gone = append(gone, s)
			delete(d.byKey, k)
			d.byID[s.id] = nil
		}
	}
	d.mu.Unlock()
	if len(gone) == 0 {
		return 0
	}
	wb := d.db.NewWriteBatch()
	defer wb.Cancel()
	for _, s := range gone {
		if err := wb.Delete(indexKey(s.target, s.path)); err != nil {
			d.log.Warn("telemetry store: prune series index", "err", err)
			return len(gone)
		}
		if err := wb.Delete(latestKey(s.id)); err != nil {
			d.log.Warn("telemetry store: prune series index", "err", err)
			return len(gone)
		}
	}
	if err := wb.Flush(); err != nil {
		// The entries come back at the next open and are pruned again.
		d.log.Warn("telemetry store: prune series index", "err", err)
	}
	d.log.Debug("telemetry store: expired series dropped from the index", "series", len(gone))
	return len(gone)
}

// Close flushes, stops the background loop and closes the DB. Safe twice.
func (d *DB) Close() error {
	select {
	case <-d.stop:
		return nil
	default:
	}
	close(d.stop)
	d.done.Wait()
	ferr := d.Flush()
	d.mu.Lock()
	d.closed = true
	d.mu.Unlock()
	cerr := d.db.Close()
	if ferr != nil && !errors.Is(ferr, ErrClosed) {
		return ferr
	}
	return cerr
}

// Series returns the number of series in the index.
func (d *DB) Series() int {
	d.mu.RLock()
	defer d.mu.RUnlock()
	return len(d.byKey)
}

// Size returns the on-disk size (LSM and value log) as badger last measured it.
func (d *DB) Size() int64 {
	l, v := d.db.Size()
	return l + v
}

// selectSeries returns the series matching a target glob and a path pattern, sorted.
func (d *DB) selectSeries(target string, pat model.Pattern) []*series {
	d.mu.RLock()
	defer d.mu.RUnlock()
	var out []*series
	exact := pat.Exact() && target != "" && !strings.ContainsAny(target, "*?")
	if exact {
		if s := d.byKey[seriesKey{target, pat.String()}]; s != nil {
			return append(out, s)
		}
		// No series of that very path: an element the pattern names without
		// keys matches every key value (/interfaces/interface/in-octets), so
		// look for those.
	}
	for _, s := range d.byID[1:] {
		if s == nil || !model.Glob(target, s.target) {
			continue
		}
		if !pat.MatchString(s.path) {
			continue
		}
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].target != out[j].target {
			return out[i].target < out[j].target
		}
		return out[i].path < out[j].path
	})
	return out
}

// Latest returns the latest value of every series matching target (a glob,
// "" for all) and pat.
func (d *DB) Latest(target string, pat model.Pattern) []model.Update {
	ss := d.selectSeries(target, pat)
	d.mu.RLock()
	defer d.mu.RUnlock()
	out := make([]model.Update, 0, len(ss))
	now := time.Now().UnixNano()
	for _, s := range ss {
		if s.has && now <= s.expires && s.latest.v.Kind != model.KindDeleted {
			out = append(out, model.Update{Target: s.target, Path: s.path, Time: s.latest.ts, Value: s.latest.v})
		}
	}
	return out
}

// Query selects points.
type Query struct {
	Target string        // glob; "" for all
	Path   model.Pattern // zero value matches nothing: use ParsePattern("")
	Since  time.Time
	Until  time.Time     // zero: now
	Bucket time.Duration // > 0: downsample into buckets of this width
	Limit  int           // max points per series (raw) ; 0: 100000
}

// Series is the result for one series.
type Series struct {
	Target  string        `json:"target"`
	Path    string        `json:"path"`
	Points  []model.Point `json:"points,omitempty"`
	Buckets []Bucket      `json:"buckets,omitempty"`
}

// Bucket is one downsampled interval: numeric values give min, max and
// avg; every value gives count and last.
type Bucket struct {
	Start time.Time   `json:"start"`
	Count int         `json:"count"`
	Min   *float64    `json:"min,omitempty"`
	Max   *float64    `json:"max,omitempty"`
	Avg   *float64    `json:"avg,omitempty"`
	Last  model.Value `json:"last"`
	sum   float64
	nums  int
}

// Query returns the points (or buckets) of each matching series in
// [Since, Until]. It stops when ctx ends (checked before each hour of each
// series), returning an error wrapping ctx's cause.
func (d *DB) Query(ctx context.Context, q Query) ([]Series, error) {
	if err := d.flushAppended(); err != nil {
		return nil, err
	}
	to, limit := q.bounds()
	from := q.Since.UnixNano()
	oldest, stored := d.oldestHour()
	if !stored {
		return nil, nil
	}
	if q.Since.IsZero() {
		from = int64(oldest) * nsPerHour
	}
	firstHour := max(hourOf(from), oldest) // never walk hours before the oldest stored one
	ss := d.selectSeries(q.Target, q.Path)
	out := make([]Series, 0, len(ss))
	err := d.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{PrefetchValues: false})
		defer it.Close()
		for _, s := range ss {
			b := &builder{res: Series{Target: s.target, Path: s.path}, from: from, to: to, bucket: q.Bucket, limit: limit}
			visit := b.add
			for h := firstHour; h <= hourOf(to) && b.more(); h++ {
				if err := ctx.Err(); err != nil {
					return fmt.Errorf("telemetry query stopped after %d of %d series: %w", len(out), len(ss), context.Cause(ctx))
				}
				pfx := dataPrefix(h, s.id)
				for it.Seek(pfx); it.ValidForPrefix(pfx); it.Next() {
					item := it.Item()
					first := int64(binary.BigEndian.Uint64(item.Key()[9:]))
					if first > to {
						break
					}
					var derr error
					if err := item.Value(func(v []byte) error {
						derr = decodeChunk(v, first, visit)
						return nil
					}); err != nil {
						return err
					}
					if derr != nil {
						d.log.Warn("telemetry store: skipping corrupt chunk", "target", s.target, "path", s.path, "err", derr)
					}
					if !b.more() {
						break
					}
				}
			}
			if res, ok := b.done(); ok {
				out = append(out, res)
			}
		}
		return nil
	})
	return out, err
}

// bounds are q's end (ns) and points per series, defaults applied.
func (q Query) bounds() (to int64, limit int) {
	until := q.Until
	if until.IsZero() {
		until = time.Now()
	}
	limit = q.Limit
	if limit <= 0 {
		limit = 100_000
	}
	return until.UnixNano(), limit
}

// builder makes one series of a query's answer from its points.
type builder struct {
	res      Series
	from, to int64
	bucket   time.Duration
	limit    int
	cur      *Bucket
	n        int
}

// add takes a point (of any time) and reports whether more are wanted.
func (b *builder) add(p point) bool {
	if p.ts < b.from || p.ts > b.to {
		return true
	}
	if b.bucket > 0 {
		start := p.ts - (p.ts-b.from)%int64(b.bucket)
		if b.cur == nil || b.cur.Start.UnixNano() != start {
			b.res.Buckets = append(b.res.Buckets, Bucket{Start: time.Unix(0, start).UTC()})
			b.cur = &b.res.Buckets[len(b.res.Buckets)-1]
		}
		b.cur.add(p.v)
		return true
	}
	b.res.Points = append(b.res.Points, model.Update{Target: b.res.Target, Path: b.res.Path, Time: p.ts, Value: p.v}.Point())
	b.n++
	return b.n < b.limit
}

func (b *builder) more() bool { return b.bucket > 0 || b.n < b.limit }

// done finishes the series; ok is false when it has nothing.
func (b *builder) done() (Series, bool) {
	for i := range b.res.Buckets {
		b.res.Buckets[i].finish()
	}
	sort.SliceStable(b.res.Points, func(i, j int) bool { return b.res.Points[i].Time.Before(b.res.Points[j].Time) })
	return b.res, len(b.res.Points) > 0 || len(b.res.Buckets) > 0
}

// Answer applies q (target, path, time range, buckets, limit) to updates
// read elsewhere, in time order, as Query does to the stored ones: one
// series per target and path, ordered by target and path.
func (q Query) Answer(us []model.Update) []Series {
	to, limit := q.bounds()
	bs := map[seriesKey]*builder{}
	for _, u := range us {
		if !model.Glob(q.Target, u.Target) || !q.Path.MatchString(u.Path) {
			continue
		}
		k := seriesKey{u.Target, u.Path}
		b := bs[k]
		if b == nil {
			b = &builder{res: Series{Target: u.Target, Path: u.Path}, from: q.Since.UnixNano(), to: to, bucket: q.Bucket, limit: limit}
			bs[k] = b
		}
		if b.more() {
			b.add(point{u.Time, u.Value})
		}
	}
	out := make([]Series, 0, len(bs))
	for _, b := range bs {
		if res, ok := b.done(); ok {
			out = append(out, res)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Target != out[j].Target {
			return out[i].Target < out[j].Target
		}
		return out[i].Path < out[j].Path
	})
	return out
}

func (b *Bucket) add(v model.Value) {
	b.Count++
	b.Last = v
	f, ok := v.Number()
	if !ok {
		return
	}
	if b.nums == 0 || f < *b.Min {
		b.Min = &f
	}
	if b.nums == 0 || f > *b.Max {
		f2 := f
		b.Max = &f2
	}
	b.sum += f
	b.nums++
}

func (b *Bucket) finish() {
	if b.nums > 0 {
		avg := b.sum / float64(b.nums)
		b.Avg = &avg
	}
}
