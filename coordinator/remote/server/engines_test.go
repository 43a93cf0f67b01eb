package server

import (
	"net/http/httptest"
	"os"
	"testing"

	"github.com/outpost-edge/outpost/internal/pgtest"
)

func TestMain(m *testing.M) {
	if cfg := os.Getenv(serveEnv); cfg != "" {
		os.Exit(serveForTest(cfg)) // a server process of a test (procs_test.go)
	}
	code := m.Run()
	pgtest.StopShared()
	os.Exit(code)
}

// engine is one state on one of the two engines; the cloud-link suite runs
// on each (forEngines).
type engine struct {
	t     *testing.T
	name  string
	dir   string // badger state and objects
	store string // Options.Store: "" or a fresh PostgreSQL database
}

// forEngines runs f once on badger and once on PostgreSQL (a database of
// its own on the package's shared test cluster; not under -short).
func forEngines(t *testing.T, f func(t *testing.T, e *engine)) {
	for _, name := range []string{"badger", "postgres"} {
		t.Run(name, func(t *testing.T) {
			e := &engine{t: t, name: name, dir: t.TempDir()}
			if name == "postgres" {
				if testing.Short() {
					t.Skip("PostgreSQL (initdb, a server): runs without -short")
				}
				e.store = pgtest.Shared(t).NewDatabase()
			}
			f(t, e)
		})
	}
}

// open opens a Server on the engine's state; the caller closes it.
func (e *engine) open(o Options) *Server {
	e.t.Helper()
	if o.Dir == "" {
		o.Dir = e.dir
	}
	o.Store = e.store
	s, err := Open(o)
	if err != nil {
		e.t.Fatal(err)
	}
	return s
}

// serve opens a Server (another replica, on PostgreSQL) and serves its
// API on a loopback port until the test ends.
func (e *engine) serve(o Options) (*Server, *httptest.Server) {
	e.t.Helper()
	s := e.open(o)
	hs := httptest.NewServer(s.Handler())
	e.t.Cleanup(func() { hs.Close(); _ = s.Close() })
	return s, hs
}
