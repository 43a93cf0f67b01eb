package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/outpost-edge/outpost/internal/buildinfo"
	"github.com/outpost-edge/outpost/internal/format"
)

// The PostgreSQL schema is versioned in the table schema_version (one row).
// migrations[i] takes the schema from version i to i+1; a replica applies
// the missing ones at start, all in one transaction under an advisory lock
// (replicas starting together migrate once), and refuses a database whose
// version is newer than it knows (format.ErrNewer). A migration is only
// ever appended, never edited: released databases ran the old text.
var migrations = []string{
	// 1: calls, node sessions, live polls, replicas.
	`CREATE TABLE calls (
		id text PRIMARY KEY,
		node text NOT NULL,
		task text NOT NULL,
		input bytea,
		queue text NOT NULL DEFAULT '',
		priority int NOT NULL DEFAULT 0,
		effect text NOT NULL DEFAULT '',
		idem_key text NOT NULL DEFAULT '',
		ttl_ms bigint NOT NULL DEFAULT 0,
		lease_ms bigint NOT NULL DEFAULT 0,
		max_run_ms bigint NOT NULL DEFAULT 0,
		digest text NOT NULL DEFAULT '',
		state text NOT NULL,
		attempt int NOT NULL DEFAULT 1,
		deliveries int NOT NULL DEFAULT 0,
		ord bigserial NOT NULL,
		enqueued timestamptz NOT NULL,
		start_by timestamptz,
		seq bigint NOT NULL DEFAULT 0,
		acked boolean NOT NULL DEFAULT false,
		lease_until timestamptz,
		cancel_pending boolean NOT NULL DEFAULT false,
		r_attempt int,
		r_status text,
		r_output bytea,
		r_error text,
		r_hash text,
		result_at timestamptz,
		replays int NOT NULL DEFAULT 0,
		conflicts int NOT NULL DEFAULT 0
	);
	CREATE INDEX calls_pending ON calls (node, (queue = 'control') DESC, priority DESC, ord) WHERE state = 'pending';
	CREATE INDEX calls_held ON calls (node, seq) WHERE state = 'leased';
	CREATE INDEX calls_cancel ON calls (node) WHERE cancel_pending;
	CREATE INDEX calls_node_state ON calls (node, state, ord);
	CREATE TABLE nodes (
		id text PRIMARY KEY,
		boot text NOT NULL DEFAULT '',
		next_seq bigint NOT NULL DEFAULT 0,
		last_seen timestamptz,
		last_end timestamptz
	);
	CREATE TABLE replicas (
		id text PRIMARY KEY,
		seen timestamptz NOT NULL
	);
	CREATE TABLE node_polls (
		id bigserial PRIMARY KEY,
		node text NOT NULL,
		replica text NOT NULL
	);
	CREATE INDEX node_polls_node ON node_polls (node);
	CREATE INDEX node_polls_replica ON node_polls (replica);`,
	// 2: data-set jobs.
	`CREATE TABLE jobs (
		id text PRIMARY KEY,
		body jsonb NOT NULL
	);`,
	// 3: the poll order the node advertises: each queue's round-robin
	// credit and last-served time per node, and pending calls indexed by
	// queue ('' is 'default') for the heads of each queue (calls_pending,
	// which replicas of version 2 still use while they are replaced, can go
	// a release later); where a call ran (a result's env and rule).
	`CREATE TABLE node_queues (
		node text NOT NULL,
		queue text NOT NULL,
		cur bigint NOT NULL DEFAULT 0,
		served timestamptz NOT NULL,
		PRIMARY KEY (node, queue)
	);
	CREATE INDEX calls_pending_queue ON calls (node, (coalesce(nullif(queue, ''), 'default')), priority DESC, ord) WHERE state = 'pending';
	ALTER TABLE calls ADD COLUMN r_env text NOT NULL DEFAULT '', ADD COLUMN r_rule text NOT NULL DEFAULT '';`,
	// 4: device messages, the last seq given per node, and the ids
	// remembered to drop repeats (byte order on node: listed by node).
	`CREATE TABLE message_seqs (
		node text COLLATE "C" PRIMARY KEY,
		last_seq bigint NOT NULL
	);
	CREATE TABLE messages (
		node text COLLATE "C" NOT NULL,
		seq bigint NOT NULL,
		id text NOT NULL,
		topic text NOT NULL,
		payload bytea NOT NULL,
		qos smallint NOT NULL,
		sent timestamptz NOT NULL,
		received timestamptz NOT NULL DEFAULT now(),
		PRIMARY KEY (node, seq)
	);
	CREATE TABLE message_ids (
		node text COLLATE "C" NOT NULL,
		id text NOT NULL,
		expires timestamptz NOT NULL,
		PRIMARY KEY (node, id)
	);
	CREATE INDEX message_ids_expires ON message_ids (expires);`,
	// 5: node labels; one driver per data-set job (a lease on the
	// database's clock); code objects in the database, in chunks, an
	// object's row written with its last chunk.
	`ALTER TABLE nodes ADD COLUMN labels jsonb NOT NULL DEFAULT '{}';
	CREATE TABLE job_leases (
		job text PRIMARY KEY,
		holder text NOT NULL,
		until timestamptz NOT NULL
	);
	CREATE TABLE objects (
		digest text PRIMARY KEY,
		size bigint NOT NULL,
		stored timestamptz NOT NULL DEFAULT now()
	);
	CREATE TABLE object_chunks (
		digest text NOT NULL,
		n int NOT NULL,
		data bytea NOT NULL,
		PRIMARY KEY (digest, n)
	);`,
	// 6: call labels, handed to the node with the call.
	`ALTER TABLE calls ADD COLUMN labels jsonb NOT NULL DEFAULT '{}';`,
}

// schemaLock is the advisory lock key replicas take while migrating.
const schemaLock = 0x6f7574706f7374 // "outpost"

// migrate brings the schema to len(migrations).
func migrate(ctx context.Context, pool *pgxpool.Pool, log *slog.Logger) error {
	err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, int64(schemaLock)); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS schema_version (version int NOT NULL)`); err != nil {
			return err
		}
		var found int
		err := tx.QueryRow(ctx, `SELECT version FROM schema_version`).Scan(&found)
		switch {
		case errors.Is(err, pgx.ErrNoRows):
			if _, err := tx.Exec(ctx, `INSERT INTO schema_version VALUES (0)`); err != nil {
				return err
			}
		case err != nil:
			return err
		}
		if found > len(migrations) {
			return fmt.Errorf("outpost-cloud postgres schema has version %d, this binary (outpost %s) knows up to version %d: %w; run the newer outpost-cloud",
				found, buildinfo.Version(), len(migrations), format.ErrNewer)
		}
		for v := found; v < len(migrations); v++ {
			start := time.Now()
			if _, err := tx.Exec(ctx, migrations[v]); err != nil {
				return fmt.Errorf("migrate schema %d to %d: %w", v, v+1, err)
			}
			log.Info("migrated postgres schema", "to", v+1, "took", time.Since(start).Round(time.Millisecond))
		}
		_, err = tx.Exec(ctx, `UPDATE schema_version SET version = $1`, len(migrations))
		return err
	})
	if err != nil {
		return fmt.Errorf("postgres store: schema: %w", err)
	}
	return nil
}
