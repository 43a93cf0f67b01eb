package server

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/rs/xid"

	"github.com/outpost-edge/outpost/coordinator/remote"
)

// pgStore is the PostgreSQL engine: every call, node session and lease is
// a row, so any number of replicas (outpost-cloud serve processes naming
// one database) serve the same nodes. Each state change is one
// transaction; a node's row is locked (FOR UPDATE) while its poll starts
// and while calls are taken, which orders delivery seqs, and pending calls
// are taken with FOR UPDATE SKIP LOCKED. Long polls are woken across
// replicas by NOTIFY on commit (channels outpost_node, payload the node
// id, and outpost_changed), heard by one LISTEN connection per replica.
// Leases and start-by times are measured on the database's clock (now()),
// one clock for every replica, so a replica's restart changes no lease.
// A replica marks itself alive in the replicas table; the polls it held
// stop counting as live when it has not done so for ReplicaTimeout (a
// replica killed with -9).
type pgStore struct {
	pool       *pgxpool.Pool
	log        *slog.Logger
	replica    string
	lease      time.Duration
	liveWindow time.Duration
	timeout    time.Duration // ReplicaTimeout

	stop context.CancelFunc
	done sync.WaitGroup

	mu        sync.Mutex
	wakes     map[string]chan struct{} // by node; closed by a notice
	changedCh chan struct{}
}

var _ store = (*pgStore)(nil)

// defaultPoolConns is each replica's pool size unless the URL's
// pool_max_conns says otherwise.
const defaultPoolConns = 16

// pgTimeout bounds statements that run outside a request (ending a poll,
// the heartbeat).
const pgTimeout = 10 * time.Second

func openPostgres(ctx context.Context, opts Options) (*pgStore, error) {
	cfg, err := pgxpool.ParseConfig(opts.Store)
	if err != nil {
		return nil, fmt.Errorf("postgres store: %w", err)
	}
	if !strings.Contains(opts.Store, "pool_max_conns") {
		// pgx's default (the larger of 4 and the CPU count) queues a fleet's
		// polls behind a few connections.
		cfg.MaxConns = defaultPoolConns
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("postgres store: %w", err)
	}
	if err := migrate(ctx, pool, opts.Log); err != nil {
		pool.Close()
		return nil, err
	}
	lctx, stop := context.WithCancel(context.Background())
	s := &pgStore{pool: pool, log: opts.Log, replica: xid.New().String(), lease: opts.Lease, liveWindow: opts.LiveWindow,
		timeout: opts.ReplicaTimeout, stop: stop, wakes: map[string]chan struct{}{}, changedCh: make(chan struct{})}
	if err := s.heartbeat(ctx); err != nil {
		stop()
		pool.Close()
		return nil, err
	}
	listening := make(chan error, 1)
	s.done.Add(2)
	go s.listen(lctx, listening)
	go s.beat(lctx)
	if err := <-listening; err != nil {
		_ = s.close()
		return nil, err
	}
	s.log.Info("postgres store open", "replica", s.replica, "host", cfg.ConnConfig.Host, "database", cfg.ConnConfig.Database)
	return s, nil
}

func (s *pgStore) close() error {
	s.stop()
	s.done.Wait()
	ctx, cancel := context.WithTimeout(context.Background(), pgTimeout)
	defer cancel()
	// A replica that stops cleanly takes its polls with it at once.
	_, err := s.pool.Exec(ctx, `DELETE FROM node_polls WHERE replica = $1`, s.replica)
	if err == nil {
		_, err = s.pool.Exec(ctx, `DELETE FROM replicas WHERE id = $1`, s.replica)
	}
	s.pool.Close()
	if err != nil {
		return fmt.Errorf("postgres store: leave: %w", err)
	}
	return nil
}

// heartbeat marks this replica alive and forgets replicas dead for ten
// timeouts, with the polls they held.
func (s *pgStore) heartbeat(ctx context.Context) error {
	_, err := s.pool.Exec(ctx, `INSERT INTO replicas (id, seen) VALUES ($1, now()) ON CONFLICT (id) DO UPDATE SET seen = now()`, s.replica)
	if err != nil {
		return fmt.Errorf("postgres store: heartbeat: %w", err)
	}
	_, err = s.pool.Exec(ctx, `WITH dead AS (DELETE FROM replicas WHERE seen < now() - $1 * interval '1 millisecond' RETURNING id)
		DELETE FROM node_polls WHERE replica IN (SELECT id FROM dead)`, ms(10*s.timeout))
	if err != nil {
		return fmt.Errorf("postgres store: forget dead replicas: %w", err)
	}
	return nil
}

func (s *pgStore) beat(ctx context.Context) {
	defer s.done.Done()
	t := time.NewTicker(s.timeout / 5)
	defer t.Stop()
	var swept time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		hctx, cancel := context.WithTimeout(ctx, s.timeout)
		if err := s.heartbeat(hctx); err != nil && ctx.Err() == nil {
			s.log.Warn("postgres store: heartbeat failed", "err", err)
		}
		cancel()
		if time.Since(swept) >= messageSweepEvery {
			swept = time.Now()
			sctx, cancel := context.WithTimeout(ctx, pgTimeout)
			if _, err := s.sweepMessageIDs(sctx); err != nil && ctx.Err() == nil {
				s.log.Warn("postgres store: forgetting expired message ids failed", "err", err)
			}
			cancel()
		}
	}
}

// messageSweepEvery is how often a replica deletes the message ids whose
// memory expired (message_ids); until then an expired row only waits to be
// replaced.
const messageSweepEvery = 10 * time.Minute

// listen holds the LISTEN connection and turns notices into closed wake
// channels. After a reconnect every waiter is woken: notices sent while
// the connection was down are lost.
func (s *pgStore) listen(ctx context.Context, ready chan<- error) {
	defer s.done.Done()
	first := true
	for backoff := 100 * time.Millisecond; ; backoff = min(2*backoff, 5*time.Second) {
		err := s.listenOnce(ctx, func() {
			if first {
				first = false
				ready <- nil
			}
			backoff = 100 * time.Millisecond
		})
		if ctx.Err() != nil {
			if first {
				ready <- fmt.Errorf("postgres store: listen: %w", ctx.Err())
			}
			return
		}
		if first {
			ready <- fmt.Errorf("postgres store: listen: %w", err)
			return
		}
		s.log.Warn("postgres store: notice connection lost, reconnecting", "err", err, "backoff", backoff)
		s.wakeAll()
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
	}
}

func (s *pgStore) listenOnce(ctx context.Context, up func()) error {
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return err
	}
	// The connection is taken out of the pool for good: it carries LISTEN.
	c := conn.Hijack()
	defer c.Close(context.Background())
	if _, err := c.Exec(ctx, `LISTEN outpost_node; LISTEN outpost_changed`); err != nil {
		return err
	}
	up()
	s.wakeAll()
	for {
		n, err := c.WaitForNotification(ctx)
		if err != nil {
			return err
		}
		s.mu.Lock()
		if n.Channel == "outpost_node" {
			if ch := s.wakes[n.Payload]; ch != nil {
				close(ch)
				delete(s.wakes, n.Payload)
			}
		}
		close(s.changedCh)
		s.changedCh = make(chan struct{})
		s.mu.Unlock()
	}
}

func (s *pgStore) wakeAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for id, ch := range s.wakes {
		close(ch)
		delete(s.wakes, id)
	}
	close(s.changedCh)
	s.changedCh = make(chan struct{})
}

func (s *pgStore) nodeWake(node string) <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	ch := s.wakes[node]
	if ch == nil {
		ch = make(chan struct{})
		s.wakes[node] = ch
	}
	return ch
}

func (s *pgStore) replicaID() string { return s.replica }

func (s *pgStore) changed() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.changedCh
}

// tx runs f in a transaction, again when PostgreSQL aborted it for a
// deadlock or a serialization failure (concurrent replicas locking the
// same rows in another order).
func (s *pgStore) tx(ctx context.Context, f func(pgx.Tx) error) error {
	for attempt := 1; ; attempt++ {
		err := pgx.BeginFunc(ctx, s.pool, f)
		var pe *pgconn.PgError
		if attempt < 5 && errors.As(err, &pe) && (pe.Code == "40P01" || pe.Code == "40001") {
			continue
		}
		return err
	}
}

// queueSQL is a call's queue as the poll order names it (queueName).
const queueSQL = `coalesce(nullif(queue, ''), 'default')`

// leaseMSSQL is a call's lease in milliseconds (%s: the default's
// parameter), leaseSQL the same as an interval.
const (
	leaseMSSQL = `(CASE WHEN lease_ms > 0 THEN lease_ms ELSE %s END)`
	leaseSQL   = leaseMSSQL + ` * interval '1 millisecond'`
)

// ms is d in milliseconds, for SQL of the form `$n * interval '1 millisecond'`.
func ms(d time.Duration) int64 { return d.Milliseconds() }

func (s *pgStore) enqueue(ctx context.Context, in []Call) ([]EnqueueItem, error) {
	n := len(in)
	ids, nodes, tasks, queues, effects, keys, digests := make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n)
	inputs := make([][]byte, n)
	prios := make([]int32, n)
	labels := make([]string, n)
	ttls, leases, maxRuns := make([]int64, n), make([]int64, n), make([]int64, n)
	for i, c := range in {
		ids[i], nodes[i], tasks[i], queues[i], effects[i], keys[i], digests[i] = c.ID, c.Node, c.Task, c.Queue, c.Effect, c.Key, c.Digest
		inputs[i], prios[i], ttls[i], leases[i], maxRuns[i] = c.Input, int32(c.Priority), c.TTLMS, c.LeaseMS, c.MaxRunMS
		labels[i] = "{}"
		if len(c.Labels) > 0 {
			b, _ := json.Marshal(c.Labels) // a map of strings always encodes
			labels[i] = string(b)
		}
	}
	items := make([]EnqueueItem, n)
	err := s.tx(ctx, func(tx pgx.Tx) error {
		created := map[string]bool{}
		rows, err := tx.Query(ctx, `INSERT INTO calls (id, node, task, input, queue, priority, effect, idem_key, ttl_ms, lease_ms, max_run_ms, digest, labels, state, enqueued, start_by)
			SELECT u.id, u.node, u.task, u.input, u.queue, u.priority, u.effect, u.idem_key, u.ttl_ms, u.lease_ms, u.max_run_ms, u.digest, u.labels::jsonb, 'pending', now(),
				CASE WHEN u.ttl_ms > 0 THEN now() + u.ttl_ms * interval '1 millisecond' END
			FROM unnest($1::text[], $2::text[], $3::text[], $4::bytea[], $5::text[], $6::int[], $7::text[], $8::text[], $9::bigint[], $10::bigint[], $11::bigint[], $12::text[], $13::text[])
				WITH ORDINALITY AS u(id, node, task, input, queue, priority, effect, idem_key, ttl_ms, lease_ms, max_run_ms, digest, labels, i)
			ORDER BY u.i
			ON CONFLICT (id) DO NOTHING RETURNING id`,
			ids, nodes, tasks, inputs, queues, prios, effects, keys, ttls, leases, maxRuns, digests, labels)
		if err != nil {
			return err
		}
		for rows.Next() {
			var id string
			if err := rows.Scan(&id); err != nil {
				return err
			}
			created[id] = true
		}
		if err := rows.Err(); err != nil {
			return err
		}
		states := map[string]string{}
		rows, err = tx.Query(ctx, `SELECT id, state FROM calls WHERE id = ANY($1)`, ids)
		if err != nil {
			return err
		}
		for rows.Next() {
			var id, st string
			if err := rows.Scan(&id, &st); err != nil {
				return err
			}
			states[id] = st
		}
		if err := rows.Err(); err != nil {
			return err
		}
		touched := map[string]bool{}
		for i, c := range in {
			items[i] = EnqueueItem{ID: c.ID, Created: created[c.ID], State: states[c.ID]}
			if created[c.ID] {
				delete(created, c.ID) // the same id again in this request was not created
				touched[c.Node] = true
			}
		}
		if len(touched) == 0 {
			return nil
		}
		if _, err := tx.Exec(ctx, `INSERT INTO nodes (id) SELECT unnest($1::text[]) ON CONFLICT (id) DO NOTHING`, slices.Collect(maps.Keys(touched))); err != nil {
			return err
		}
		_, err = tx.Exec(ctx, `SELECT pg_notify('outpost_node', n) FROM unnest($1::text[]) AS n`, slices.Collect(maps.Keys(touched)))
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("postgres store: enqueue: %w", err)
	}
	return items, nil
}

func (s *pgStore) beginPoll(ctx context.Context, node string, req *remote.PollRequest) (*pollTicket, remote.PollResponse, error) {
	var resp remote.PollResponse
	t := &pollTicket{node: node, req: req}
	err := s.tx(ctx, func(tx pgx.Tx) error {
		resp = remote.PollResponse{}
		// One round trip: the node's row, locked, and its live polls.
		var boot string
		var nextSeq int64
		var recent bool
		var inflight int
		b := &pgx.Batch{}
		b.Queue(`INSERT INTO nodes (id) VALUES ($1) ON CONFLICT (id) DO NOTHING`, node)
		b.Queue(`SELECT boot, next_seq, coalesce(last_end > now() - $2 * interval '1 millisecond', false) FROM nodes WHERE id = $1 FOR UPDATE`,
			node, ms(s.liveWindow)).QueryRow(func(r pgx.Row) error { return r.Scan(&boot, &nextSeq, &recent) })
		b.Queue(`SELECT count(*) FROM node_polls p JOIN replicas r ON r.id = p.replica
			WHERE p.node = $1 AND r.seen > now() - $2 * interval '1 millisecond'`, node, ms(s.timeout)).QueryRow(func(r pgx.Row) error { return r.Scan(&inflight) })
		if err := tx.SendBatch(ctx, b).Close(); err != nil {
			return err
		}
		if boot != "" && boot != req.BootID && (inflight > 0 || recent) {
			return &pollRefusal{code: http.StatusConflict, msg: "another poller (boot " + boot + ") serves node " + node, retryAfter: int(s.liveWindow/time.Second) + 1}
		}
		if req.AckThrough > uint64(nextSeq) {
			return &pollRefusal{code: http.StatusGone, msg: fmt.Sprintf("ack_through %d is past the last seq %d: the session is gone, reconcile", req.AckThrough, nextSeq)}
		}
		// One round trip for the rest.
		b = &pgx.Batch{}
		b.Queue(`UPDATE nodes SET boot = $2, last_seen = now() WHERE id = $1`, node, req.BootID)
		b.Queue(`INSERT INTO node_polls (node, replica) VALUES ($1, $2) RETURNING id`, node, s.replica).QueryRow(func(r pgx.Row) error { return r.Scan(&t.id) })
		// Leases that ran out first: a renewal arriving after its lease
		// expired does not revive it; the call goes out again as a new attempt.
		b.Queue(`UPDATE calls SET state = 'pending', acked = false, attempt = attempt + 1
			WHERE node = $1 AND state = 'leased' AND acked AND lease_until < now() RETURNING id, attempt`, node).Query(func(rows pgx.Rows) error {
			for rows.Next() {
				var id string
				var attempt int
				if err := rows.Scan(&id, &attempt); err != nil {
					return err
				}
				s.log.Info("lease expired: redelivering", "node", node, "call", id, "attempt", attempt)
			}
			return rows.Err()
		})
		// Acks, and deliveries the node never acknowledged (a lost
		// response): those are handed out again.
		b.Queue(`UPDATE calls SET acked = (seq <= $2), state = CASE WHEN seq <= $2 THEN 'leased' ELSE 'pending' END
			WHERE node = $1 AND state = 'leased' AND NOT acked`, node, int64(req.AckThrough))
		b.Queue(`UPDATE calls SET cancel_pending = false WHERE node = $1 AND cancel_pending RETURNING id`, node).Query(func(rows pgx.Rows) error {
			var err error
			resp.Cancel, err = pgx.CollectRows(rows, pgx.RowTo[string])
			return err
		})
		renewed := map[string]bool{}
		states := map[string]string{}
		if len(req.Renew) > 0 {
			b.Queue(fmt.Sprintf(`UPDATE calls SET lease_until = now() + `+leaseSQL+`
				WHERE node = $1 AND state = 'leased' AND id = ANY($2) RETURNING id`, "$3"), node, req.Renew, s.lease.Milliseconds()).Query(func(rows pgx.Rows) error {
				for rows.Next() {
					var id string
					if err := rows.Scan(&id); err != nil {
						return err
					}
					renewed[id] = true
				}
				return rows.Err()
			})
			b.Queue(`SELECT id, state FROM calls WHERE id = ANY($1)`, req.Renew).Query(func(rows pgx.Rows) error {
				for rows.Next() {
					var id, st string
					if err := rows.Scan(&id, &st); err != nil {
						return err
					}
					states[id] = st
				}
				return rows.Err()
			})
		}
		if err := tx.SendBatch(ctx, b).Close(); err != nil {
			return err
		}
		for _, id := range req.Renew {
			switch {
			case renewed[id] || slices.Contains(resp.Cancel, id):
			case states[id] == "cancelled":
				resp.Cancel = append(resp.Cancel, id)
			case states[id] == "done":
			default:
				resp.Lost = append(resp.Lost, id)
			}
		}
		return nil
	})
	if err != nil {
		if ref, ok := errors.AsType[*pollRefusal](err); ok {
			return nil, resp, ref
		}
		return nil, resp, fmt.Errorf("postgres store: begin poll: %w", err)
	}
	return t, resp, nil
}

func (s *pgStore) take(ctx context.Context, t *pollTicket) ([]remote.WireCall, error) {
	if t.req.Capacity <= 0 {
		return nil, nil
	}
	// Most wakes of a parked poll find nothing for it: look without a
	// transaction or a lock first.
	var pending bool
	if err := s.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM calls WHERE node = $1 AND state = 'pending')`, t.node).Scan(&pending); err != nil {
		return nil, fmt.Errorf("postgres store: take calls: %w", err)
	}
	if !pending {
		return nil, nil
	}
	var out []remote.WireCall
	a := advertisedBy(t.req)
	err := s.tx(ctx, func(tx pgx.Tx) error {
		out = nil
		var nextSeq int64
		var unacked int
		var now time.Time
		type row struct {
			pgRow
			late             bool
			startBy, leaseMS int64
		}
		var set queueSet
		rowOf := map[*Call]*row{}
		// One round trip: the node's row (it orders seqs and guards the
		// queues' credits), the credits, and the heads of each queue up to
		// the capacity, skipping rows others hold. The queues are found by
		// a skip scan of calls_pending_queue.
		b := &pgx.Batch{}
		b.Queue(`SELECT next_seq, now(), (SELECT count(*) FROM calls WHERE node = $1 AND state = 'leased' AND NOT acked)
			FROM nodes WHERE id = $1 FOR UPDATE`, t.node).QueryRow(func(r pgx.Row) error { return r.Scan(&nextSeq, &now, &unacked) })
		b.Queue(`WITH RECURSIVE qs(q) AS (
				(SELECT `+queueSQL+` FROM calls WHERE node = $1 AND state = 'pending' ORDER BY 1 LIMIT 1)
				UNION ALL
				SELECT (SELECT `+queueSQL+` FROM calls WHERE node = $1 AND state = 'pending' AND `+queueSQL+` > qs.q ORDER BY 1 LIMIT 1)
				FROM qs WHERE qs.q IS NOT NULL)
			SELECT c.* FROM qs CROSS JOIN LATERAL (
				SELECT `+callColumns+`, input, coalesce(start_by < now(), false) AS late,
					coalesce(ceil(extract(epoch FROM start_by - now()) * 1000)::bigint, 0) AS start_by_ms, `+fmt.Sprintf(leaseMSSQL, "$3")+` AS lease_of
				FROM calls WHERE node = $1 AND state = 'pending' AND `+queueSQL+` = qs.q
				ORDER BY priority DESC, ord LIMIT $2
				FOR UPDATE SKIP LOCKED) c
			WHERE qs.q IS NOT NULL`, t.node, t.req.Capacity, s.lease.Milliseconds()).Query(func(rows pgx.Rows) error {
			for rows.Next() {
				r := new(row)
				if err := rows.Scan(append(r.targets(), &r.c.Input, &r.late, &r.startBy, &r.leaseMS)...); err != nil {
					return err
				}
				set.push(&r.c) // in order: each queue's slice is a heap
				rowOf[&r.c] = r
			}
			return rows.Err()
		})
		b.Queue(`SELECT queue, cur, served FROM node_queues WHERE node = $1`, t.node).Query(func(rows pgx.Rows) error {
			for rows.Next() {
				var name string
				var cur int64
				var served time.Time
				if err := rows.Scan(&name, &cur, &served); err != nil {
					return err
				}
				if q := set.queues[name]; q != nil {
					q.cur, q.served = cur, served
				}
			}
			return rows.Err()
		})
		if err := tx.SendBatch(ctx, b).Close(); err != nil {
			return err
		}
		var takeIDs, expired []string
		var seqs []int64
		size := 0
		set.drain(a, now, func(c *Call) verdict {
			r := rowOf[c]
			switch {
			case len(out) >= t.req.Capacity-unacked:
				return stop
			case r.late:
				expired = append(expired, c.ID)
				return drop
			case len(out) > 0 && size+wireSize(c) > pollCallBudget:
				return stop // the next poll takes it
			}
			nextSeq++
			var startBy int64
			if c.TTLMS > 0 {
				startBy = max(r.startBy, 1)
			}
			out = append(out, wireCall(c, uint64(nextSeq), time.Duration(r.leaseMS)*time.Millisecond, startBy))
			takeIDs, seqs = append(takeIDs, c.ID), append(seqs, nextSeq)
			size += wireSize(c)
			return deliver
		})
		// One round trip for the changes. Expired calls do not count
		// against the capacity: the next poll takes calls in their place.
		b = &pgx.Batch{}
		if len(expired) > 0 {
			r := expiredResult(&Call{})
			b.Queue(`UPDATE calls SET state = 'expired', r_attempt = attempt, r_status = $2, r_error = $3, r_hash = $4, result_at = now()
				WHERE id = ANY($1)`, expired, r.Status, r.Error, r.Hash)
			b.Queue(`SELECT pg_notify('outpost_changed', ''), pg_notify('outpost_node', $1)`, t.node)
		}
		if len(takeIDs) > 0 {
			b.Queue(fmt.Sprintf(`UPDATE calls c SET state = 'leased', acked = false, seq = u.seq, deliveries = c.deliveries + 1,
				lease_until = now() + `+leaseSQL+` FROM unnest($1::text[], $2::bigint[]) AS u(id, seq) WHERE c.id = u.id`, "$3"),
				takeIDs, seqs, s.lease.Milliseconds())
			b.Queue(`UPDATE nodes SET next_seq = $2 WHERE id = $1`, t.node, nextSeq)
			var names []string
			var curs []int64
			var served []time.Time
			for _, q := range set.queues {
				names, curs, served = append(names, q.name), append(curs, q.cur), append(served, q.served)
			}
			b.Queue(`INSERT INTO node_queues (node, queue, cur, served)
				SELECT $1, u.q, u.cur, u.served FROM unnest($2::text[], $3::bigint[], $4::timestamptz[]) AS u(q, cur, served)
				ON CONFLICT (node, queue) DO UPDATE SET cur = excluded.cur, served = excluded.served`, t.node, names, curs, served)
		}
		if b.Len() == 0 {
			return nil
		}
		return tx.SendBatch(ctx, b).Close()
	})
	if err != nil {
		return nil, fmt.Errorf("postgres store: take calls: %w", err)
	}
	return out, nil
}

func (s *pgStore) endPoll(t *pollTicket, gone bool) {
	ctx, cancel := context.WithTimeout(context.Background(), pgTimeout)
	defer cancel()
	_, err := s.pool.Exec(ctx, `WITH ended AS (DELETE FROM node_polls WHERE id = $1 RETURNING node)
		UPDATE nodes SET last_end = CASE WHEN $3 AND NOT EXISTS (SELECT 1 FROM node_polls p WHERE p.node = $2 AND p.id <> $1) THEN NULL ELSE now() END
		WHERE id = $2`, t.id, t.node, gone)
	if err != nil {
		s.log.Error("postgres store: end poll", "node", t.node, "err", err)
	}
}

func (s *pgStore) putResults(ctx context.Context, node string, rs []remote.Result) ([]int, error) {
	codes := make([]int, len(rs))
	if len(rs) == 0 {
		return codes, nil
	}
	ids := make([]string, len(rs))
	for i, r := range rs {
		ids[i] = r.CallID
	}
	err := s.tx(ctx, func(tx pgx.Tx) error {
		type row struct {
			node, state string
			hash        *string
		}
		// Rows are locked in id order, the same order in every replica.
		rows, err := tx.Query(ctx, `SELECT id, node, state, r_hash FROM calls WHERE id = ANY($1) ORDER BY id FOR UPDATE`, ids)
		if err != nil {
			return err
		}
		found := map[string]*row{}
		for rows.Next() {
			var id string
			r := new(row)
			if err := rows.Scan(&id, &r.node, &r.state, &r.hash); err != nil {
				return err
			}
			found[id] = r
		}
		if err := rows.Err(); err != nil {
			return err
		}
		b := &pgx.Batch{}
		stored := false
		for i, res := range rs {
			r := found[res.CallID]
			switch {
			case r == nil || r.node != node:
				codes[i] = http.StatusNotFound
			case r.state == "done" && r.hash != nil && *r.hash == res.Hash:
				codes[i] = http.StatusOK
				b.Queue(`UPDATE calls SET replays = replays + 1 WHERE id = $1`, res.CallID)
			case r.state == "done":
				codes[i] = http.StatusConflict
				s.log.Warn("result conflict: a different result for a call that has one (first wins)", "node", node, "call", res.CallID, "attempt", res.Attempt)
				b.Queue(`UPDATE calls SET conflicts = conflicts + 1 WHERE id = $1`, res.CallID)
			case r.state == "cancelled" || r.state == "expired":
				codes[i] = http.StatusGone
			default:
				codes[i] = http.StatusCreated
				h := res.Hash
				r.state, r.hash = "done", &h
				stored = true
				b.Queue(`UPDATE calls SET state = 'done', r_attempt = $2, r_status = $3, r_output = $4, r_error = $5, r_hash = $6, r_env = $7, r_rule = $8, result_at = now(),
					cancel_pending = false WHERE id = $1`, res.CallID, res.Attempt, res.Status, res.Output, res.Error, res.Hash, res.Env, res.Rule)
			}
		}
		if stored {
			b.Queue(`SELECT pg_notify('outpost_changed', '')`)
		}
		if b.Len() == 0 {
			return nil
		}
		return tx.SendBatch(ctx, b).Close()
	})
	if err != nil {
		return nil, fmt.Errorf("postgres store: results: %w", err)
	}
	return codes, nil
}

func (s *pgStore) nodeCalls(ctx context.Context, node string, want map[string]bool) ([]remote.CallState, error) {
	var states []string
	if len(want) > 0 {
		states = slices.Collect(maps.Keys(want))
	}
	rows, err := s.pool.Query(ctx, `SELECT id, state, attempt FROM calls WHERE node = $1 AND ($2::text[] IS NULL OR state = ANY($2)) ORDER BY ord`, node, states)
	if err != nil {
		return nil, fmt.Errorf("postgres store: node calls: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (remote.CallState, error) {
		var c remote.CallState
		err := r.Scan(&c.ID, &c.State, &c.Attempt)
		return c, err
	})
	if err != nil {
		return nil, fmt.Errorf("postgres store: node calls: %w", err)
	}
	return out, nil
}

// callColumns are the columns Call.scanTargets reads.
const callColumns = `id, node, task, queue, priority, labels, effect, idem_key, ttl_ms, lease_ms, max_run_ms, digest, state, attempt, deliveries, ord, enqueued,
	r_attempt, r_status, r_output, r_error, r_hash, r_env, r_rule, result_at, replays, conflicts`

// pgRow is a call as scanned from callColumns.
type pgRow struct {
	c                    Call
	rAttempt             *int
	rStatus, rErr, rHash *string
	rOutput              []byte
	rEnv, rRule          string
	rAt                  *time.Time
}

func (r *pgRow) targets() []any {
	c := &r.c
	return []any{&c.ID, &c.Node, &c.Task, &c.Queue, &c.Priority, &c.Labels, &c.Effect, &c.Key, &c.TTLMS, &c.LeaseMS, &c.MaxRunMS, &c.Digest,
		&c.State, &c.Attempt, &c.Deliveries, &c.Order, &c.Enqueued,
		&r.rAttempt, &r.rStatus, &r.rOutput, &r.rErr, &r.rHash, &r.rEnv, &r.rRule, &r.rAt, &c.Replays, &c.Conflicts}
}

// call is the scanned call with its result.
func (r *pgRow) call() Call {
	c := r.c
	if r.rHash != nil {
		c.Result = &remote.Result{CallID: c.ID, Attempt: *r.rAttempt, Status: *r.rStatus, Output: r.rOutput, Error: *r.rErr, Hash: *r.rHash, Env: r.rEnv, Rule: r.rRule}
	}
	if r.rAt != nil {
		c.ResultAt = *r.rAt
	}
	return c
}

func (s *pgStore) queryCalls(ctx context.Context, where string, args ...any) ([]Call, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+callColumns+` FROM calls WHERE `+where+` ORDER BY ord`, args...)
	if err != nil {
		return nil, fmt.Errorf("postgres store: read calls: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Call, error) {
		var row pgRow
		if err := r.Scan(row.targets()...); err != nil {
			return Call{}, err
		}
		return row.call(), nil
	})
	if err != nil {
		return nil, fmt.Errorf("postgres store: read calls: %w", err)
	}
	return out, nil
}

func (s *pgStore) get(ctx context.Context, ids []string) ([]Call, error) {
	cs, err := s.queryCalls(ctx, `id = ANY($1)`, ids)
	if err != nil {
		return nil, err
	}
	at := make(map[string]int, len(ids))
	for i, id := range ids {
		if _, ok := at[id]; !ok {
			at[id] = i
		}
	}
	slices.SortFunc(cs, func(a, b Call) int { return cmp.Compare(at[a.ID], at[b.ID]) })
	return cs, nil
}

func (s *pgStore) inputs(ctx context.Context, ids []string) (map[string][]byte, error) {
	rows, err := s.pool.Query(ctx, `SELECT id, input FROM calls WHERE id = ANY($1)`, ids)
	if err != nil {
		return nil, fmt.Errorf("postgres store: inputs: %w", err)
	}
	defer rows.Close()
	out := make(map[string][]byte, len(ids))
	for rows.Next() {
		var id string
		var in []byte
		if err := rows.Scan(&id, &in); err != nil {
			return nil, fmt.Errorf("postgres store: inputs: %w", err)
		}
		out[id] = in
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("postgres store: inputs: %w", err)
	}
	return out, nil
}

func (s *pgStore) list(ctx context.Context, f callFilter) ([]Call, error) {
	labels := "{}"
	if len(f.labels) > 0 {
		b, _ := json.Marshal(f.labels) // a map of strings always encodes
		labels = string(b)
	}
	cs, err := s.queryCalls(ctx, `($1 = '' OR node = $1) AND ($2 = '' OR state = $2) AND labels @> $3::jsonb`, f.node, f.state, labels)
	if cs == nil && err == nil {
		cs = []Call{}
	}
	return cs, err
}

func (s *pgStore) cancel(ctx context.Context, id string) error {
	err := s.tx(ctx, func(tx pgx.Tx) error {
		var state, node string
		err := tx.QueryRow(ctx, `SELECT state, node FROM calls WHERE id = $1 FOR UPDATE`, id).Scan(&state, &node)
		if errors.Is(err, pgx.ErrNoRows) {
			return errNoCall
		}
		if err != nil {
			return err
		}
		if state == "done" || state == "cancelled" || state == "expired" {
			return fmt.Errorf("call is already %s: %w", state, errFinal)
		}
		// A call the node holds is reported in its next poll's cancel list.
		if _, err := tx.Exec(ctx, `UPDATE calls SET state = 'cancelled', cancel_pending = (state = 'leased') WHERE id = $1`, id); err != nil {
			return err
		}
		_, err = tx.Exec(ctx, `SELECT pg_notify('outpost_node', $1), pg_notify('outpost_changed', '')`, node)
		return err
	})
	if err != nil && !errors.Is(err, errNoCall) && !errors.Is(err, errFinal) {
		return fmt.Errorf("postgres store: cancel: %w", err)
	}
	return err
}

func (s *pgStore) nodes(ctx context.Context) ([]NodeInfo, error) {
	rows, err := s.pool.Query(ctx, `SELECT n.id, n.boot, n.last_seen, n.labels, live.node IS NOT NULL,
			coalesce(n.last_seen > now() - $2 * interval '1 millisecond', false), coalesce(c.pending, 0), coalesce(c.held, 0)
		FROM nodes n
		LEFT JOIN (SELECT DISTINCT p.node FROM node_polls p JOIN replicas r ON r.id = p.replica
			WHERE r.seen > now() - $1 * interval '1 millisecond') live ON live.node = n.id
		LEFT JOIN (SELECT node, count(*) FILTER (WHERE state = 'pending') AS pending, count(*) FILTER (WHERE state = 'leased') AS held
			FROM calls WHERE state IN ('pending', 'leased') GROUP BY node) c ON c.node = n.id
		ORDER BY n.id`, ms(s.timeout), ms(onlineWindow))
	if err != nil {
		return nil, fmt.Errorf("postgres store: nodes: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (NodeInfo, error) {
		var n NodeInfo
		var seen *time.Time
		var recent bool
		err := r.Scan(&n.ID, &n.Boot, &seen, &n.Labels, &n.Polling, &recent, &n.Pending, &n.Held)
		if seen != nil {
			n.LastSeen = *seen
		}
		n.Online = n.Polling || recent
		return n, err
	})
	if err != nil {
		return nil, fmt.Errorf("postgres store: nodes: %w", err)
	}
	return out, nil
}

func (s *pgStore) setLabels(ctx context.Context, node string, set map[string]string, remove []string) (map[string]string, error) {
	if set == nil {
		set = map[string]string{}
	}
	if remove == nil {
		remove = []string{} // NULL would make the labels NULL
	}
	var labels map[string]string
	err := s.pool.QueryRow(ctx, `INSERT INTO nodes (id, labels) VALUES ($1, $2::jsonb - $3::text[])
		ON CONFLICT (id) DO UPDATE SET labels = (nodes.labels || $2::jsonb) - $3::text[]
		RETURNING labels`, node, set, remove).Scan(&labels)
	if err != nil {
		return nil, fmt.Errorf("postgres store: label node %s: %w", node, err)
	}
	return labels, nil
}

func (s *pgStore) leaseJob(ctx context.Context, job, holder string, ttl time.Duration, release bool) (bool, error) {
	if release {
		if _, err := s.pool.Exec(ctx, `DELETE FROM job_leases WHERE job = $1 AND holder = $2`, job, holder); err != nil {
			return false, fmt.Errorf("postgres store: release job %s: %w", job, err)
		}
		return false, nil
	}
	tag, err := s.pool.Exec(ctx, `INSERT INTO job_leases (job, holder, until) VALUES ($1, $2, now() + $3 * interval '1 millisecond')
		ON CONFLICT (job) DO UPDATE SET holder = excluded.holder, until = excluded.until
		WHERE job_leases.holder = excluded.holder OR job_leases.until < now()
			OR NOT EXISTS (SELECT 1 FROM replicas r WHERE r.id = job_leases.holder AND r.seen > now() - $4 * interval '1 millisecond')`,
		job, holder, ms(ttl), ms(s.timeout))
	if err != nil {
		return false, fmt.Errorf("postgres store: lease job %s: %w", job, err)
	}
	return tag.RowsAffected() == 1, nil
}

func (s *pgStore) createJob(ctx context.Context, j Job) (bool, error) {
	b, err := json.Marshal(j)
	if err != nil {
		return false, err
	}
	tag, err := s.pool.Exec(ctx, `WITH ins AS (INSERT INTO jobs (id, body) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING RETURNING id)
		SELECT pg_notify('outpost_changed', '') FROM ins`, j.ID, b)
	if err != nil {
		return false, fmt.Errorf("postgres store: create job: %w", err)
	}
	return tag.RowsAffected() == 1, nil
}

func (s *pgStore) getJob(ctx context.Context, id string) (Job, error) {
	var j Job
	err := s.pool.QueryRow(ctx, `SELECT body FROM jobs WHERE id = $1`, id).Scan(&j)
	if errors.Is(err, pgx.ErrNoRows) {
		return j, errNoJob
	}
	if err != nil {
		return j, fmt.Errorf("postgres store: job: %w", err)
	}
	return j, nil
}

func (s *pgStore) listJobs(ctx context.Context) ([]Job, error) {
	rows, err := s.pool.Query(ctx, `SELECT body FROM jobs ORDER BY id`)
	if err != nil {
		return nil, fmt.Errorf("postgres store: jobs: %w", err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowTo[Job])
	if err != nil {
		return nil, fmt.Errorf("postgres store: jobs: %w", err)
	}
	return out, nil
}

func (s *pgStore) updateJob(ctx context.Context, id string, f func(*Job) bool) (bool, error) {
	wrote := false
	err := s.tx(ctx, func(tx pgx.Tx) error {
		var j Job
		err := tx.QueryRow(ctx, `SELECT body FROM jobs WHERE id = $1 FOR UPDATE`, id).Scan(&j)
		if errors.Is(err, pgx.ErrNoRows) {
			return errNoJob
		}
		if err != nil || !f(&j) {
			return err
		}
		b, err := json.Marshal(j)
		if err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `UPDATE jobs SET body = $2 WHERE id = $1`, id, b); err != nil {
			return err
		}
		wrote = true
		_, err = tx.Exec(ctx, `SELECT pg_notify('outpost_changed', '')`)
		return err
	})
	if err != nil && !errors.Is(err, errNoJob) {
		return false, fmt.Errorf("postgres store: update job: %w", err)
	}
	return wrote, err
}

// Device messages: the rows of messages, numbered per node by the
// counter message_seqs.last_seq, which a batch reads and advances under the
// row's lock (INSERT ... ON CONFLICT DO UPDATE locks it until commit), so
// concurrent batches of a node on any replicas take consecutive seqs. The
// primary key of message_ids (node, id) drops repeats; a row whose expires
// passed counts as forgotten and is taken over by the next message with
// its id, and the replicas delete such rows now and then
// (sweepMessageIDs).
func (s *pgStore) storeMessages(ctx context.Context, node string, msgs []remote.Message) (remote.MessagesResponse, error) {
	// Repeats within the batch are dropped first: one INSERT ... ON
	// CONFLICT DO UPDATE may not meet a key twice.
	seen := make(map[string]bool, len(msgs))
	var ids []string
	var firsts []remote.Message
	for _, m := range msgs {
		if !seen[m.ID] {
			seen[m.ID] = true
			ids, firsts = append(ids, m.ID), append(firsts, m)
		}
	}
	stored := 0
	err := s.tx(ctx, func(tx pgx.Tx) error {
		var last int64
		err := tx.QueryRow(ctx, `INSERT INTO message_seqs (node, last_seq) VALUES ($1, 0)
			ON CONFLICT (node) DO UPDATE SET last_seq = message_seqs.last_seq RETURNING last_seq`, node).Scan(&last)
		if err != nil {
			return err
		}
		rows, err := tx.Query(ctx, `INSERT INTO message_ids (node, id, expires)
			SELECT $1, id, now() + $3 * interval '1 millisecond' FROM unnest($2::text[]) AS id
			ON CONFLICT (node, id) DO UPDATE SET expires = EXCLUDED.expires WHERE message_ids.expires <= now()
			RETURNING id`, node, ids, ms(messageIDTTL))
		if err != nil {
			return err
		}
		fresh, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			return err
		}
		isFresh := make(map[string]bool, len(fresh))
		for _, id := range fresh {
			isFresh[id] = true
		}
		var out [][]any
		for _, m := range firsts {
			if isFresh[m.ID] {
				last++
				payload := m.Payload
				if payload == nil {
					payload = []byte{} // NOT NULL
				}
				out = append(out, []any{node, last, m.ID, m.Topic, payload, int16(m.QoS), m.Time})
			}
		}
		stored = len(out)
		if stored == 0 {
			return nil
		}
		if _, err := tx.CopyFrom(ctx, pgx.Identifier{"messages"}, []string{"node", "seq", "id", "topic", "payload", "qos", "sent"}, pgx.CopyFromRows(out)); err != nil {
			return err
		}
		_, err = tx.Exec(ctx, `UPDATE message_seqs SET last_seq = $2 WHERE node = $1`, node, last)
		return err
	})
	if err != nil {
		return remote.MessagesResponse{}, fmt.Errorf("postgres store: store messages of %s: %w", node, err)
	}
	return remote.MessagesResponse{Stored: stored, Duplicates: len(msgs) - stored}, nil
}

func (s *pgStore) messages(ctx context.Context, node string, after uint64, limit int) ([]StoredMessage, error) {
	const cols = `SELECT seq, node, id, topic, payload, qos, sent, received FROM messages`
	var rows pgx.Rows
	var err error
	if node == "" {
		rows, err = s.pool.Query(ctx, cols+` ORDER BY node, seq LIMIT $1`, limit)
	} else {
		rows, err = s.pool.Query(ctx, cols+` WHERE node = $1 AND seq > $2 ORDER BY seq LIMIT $3`, node, clampSeq(after), limit)
	}
	if err != nil {
		return nil, fmt.Errorf("postgres store: messages: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (StoredMessage, error) {
		var m StoredMessage
		var seq int64
		var qos int16
		err := r.Scan(&seq, &m.Node, &m.ID, &m.Topic, &m.Payload, &qos, &m.Time, &m.Received)
		m.Seq, m.QoS, m.Time, m.Received = uint64(seq), byte(qos), m.Time.UTC(), m.Received.UTC()
		return m, err
	})
	if err != nil {
		return nil, fmt.Errorf("postgres store: messages: %w", err)
	}
	if out == nil {
		out = []StoredMessage{}
	}
	return out, nil
}

func (s *pgStore) consumeMessages(ctx context.Context, node string, through uint64) (int, error) {
	tag, err := s.pool.Exec(ctx, `DELETE FROM messages WHERE node = $1 AND seq <= $2`, node, clampSeq(through))
	if err != nil {
		return 0, fmt.Errorf("postgres store: consume messages of %s: %w", node, err)
	}
	return int(tag.RowsAffected()), nil
}

// sweepMessageIDs deletes the remembered message ids that expired.
func (s *pgStore) sweepMessageIDs(ctx context.Context) (int64, error) {
	tag, err := s.pool.Exec(ctx, `DELETE FROM message_ids WHERE expires <= now()`)
	if err != nil {
		return 0, fmt.Errorf("postgres store: sweep message ids: %w", err)
	}
	return tag.RowsAffected(), nil
}

// clampSeq is seq as a bigint: seqs beyond it are never given.
func clampSeq(seq uint64) int64 { return int64(min(seq, math.MaxInt64)) }

// Code objects in the database (objects.go): object_chunks holds an
// object's bytes in objectChunk pieces, and its objects row, inserted in
// the same transaction after the last chunk, says it is whole.
var _ objectDB = (*pgStore)(nil)

// objectChunk is the size of one row of object_chunks.
const objectChunk = 1 << 20

func (s *pgStore) putObject(ctx context.Context, digest string, size int64, r io.Reader) (bool, error) {
	created := false
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		// The object's row first: a second writer of the same object waits
		// on it and then finds it stored.
		tag, err := tx.Exec(ctx, `INSERT INTO objects (digest, size) VALUES ($1, $2) ON CONFLICT (digest) DO NOTHING`, digest, size)
		if err != nil || tag.RowsAffected() == 0 {
			return err
		}
		buf := make([]byte, objectChunk)
		for n := 0; ; n++ {
			k, err := io.ReadFull(r, buf)
			if k > 0 {
				if _, err := tx.Exec(ctx, `INSERT INTO object_chunks (digest, n, data) VALUES ($1, $2, $3)`, digest, n, buf[:k]); err != nil {
					return err
				}
			}
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				break
			}
			if err != nil {
				return err
			}
		}
		created = true
		return nil
	})
	if err != nil {
		return false, fmt.Errorf("postgres store: put object %s: %w", digest, err)
	}
	return created, nil
}

func (s *pgStore) objectSize(ctx context.Context, digest string) (int64, bool, error) {
	var size int64
	err := s.pool.QueryRow(ctx, `SELECT size FROM objects WHERE digest = $1`, digest).Scan(&size)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, fmt.Errorf("postgres store: object %s: %w", digest, err)
	}
	return size, true, nil
}

func (s *pgStore) readObject(ctx context.Context, digest string, w io.Writer) error {
	if _, ok, err := s.objectSize(ctx, digest); err != nil || !ok {
		return cmp.Or(err, errNoObject)
	}
	// One chunk at a time, so a large object is never whole in memory.
	for n := 0; ; n++ {
		var data []byte
		err := s.pool.QueryRow(ctx, `SELECT data FROM object_chunks WHERE digest = $1 AND n = $2`, digest, n).Scan(&data)
		if errors.Is(err, pgx.ErrNoRows) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("postgres store: read object %s: %w", digest, err)
		}
		if _, err := w.Write(data); err != nil {
			return err
		}
	}
}

func (s *pgStore) listObjects(ctx context.Context) ([]ObjectInfo, error) {
	rows, err := s.pool.Query(ctx, `SELECT digest, size FROM objects ORDER BY digest`)
	if err != nil {
		return nil, fmt.Errorf("postgres store: objects: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (ObjectInfo, error) {
		var o ObjectInfo
		err := r.Scan(&o.Digest, &o.Size)
		return o, err
	})
	if err != nil {
		return nil, fmt.Errorf("postgres store: objects: %w", err)
	}
	return out, nil
}
