package pgtest

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5"
)

// A database made by NewDatabase takes writes, and keeps them across a
// kill -9 of the server and a restart on the same port.
func TestStartKillRestart(t *testing.T) {
	s := Start(t)
	url := s.NewDatabase()
	ctx := context.Background()
	query := func(setup, sql string) int {
		t.Helper()
		conn, err := pgx.Connect(ctx, url)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(ctx)
		if setup != "" {
			if _, err := conn.Exec(ctx, setup); err != nil {
				t.Fatal(err)
			}
		}
		var n int
		if err := conn.QueryRow(ctx, sql).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	if n := query(`CREATE TABLE t AS SELECT 42 AS n`, `SELECT n FROM t`); n != 42 {
		t.Fatalf("read %d", n)
	}
	s.Kill()
	s.Restart()
	if n := query("", `SELECT n FROM t`); n != 42 {
		t.Fatalf("after restart read %d", n)
	}
}
