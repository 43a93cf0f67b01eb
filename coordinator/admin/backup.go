package admin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/outpost-edge/outpost/coordinator/backup"
)

// Backuper is a node that writes its backup (package backup) while it runs.
type Backuper interface {
	// Backup writes a backup to w, with the telemetry store when asked.
	// It returns ErrConflict, before writing, when telemetry is asked for
	// and not running.
	Backup(w io.Writer, telemetry bool) error
}

// MountBackup adds GET /v1/backup[?telemetry=true]: the backup as a tar
// stream, under the admin token like every request but health and
// metrics. A backup that fails once streaming has started is cut off, so
// the client sees it incomplete (backup.ErrIncomplete).
func MountBackup(s *Server, b Backuper) {
	s.mux.HandleFunc("GET /v1/backup", func(w http.ResponseWriter, r *http.Request) {
		tele, err := strconv.ParseBool(r.URL.Query().Get("telemetry"))
		if r.URL.Query().Get("telemetry") == "" {
			tele, err = false, nil
		}
		if err != nil {
			registryError(w, fmt.Errorf("%w: telemetry=%q: want true or false", ErrInvalid, r.URL.Query().Get("telemetry")))
			return
		}
		done, ok := s.Streaming(w)
		if !ok {
			registryError(w, fmt.Errorf("%w: the daemon is stopping", ErrConflict))
			return
		}
		defer done()
		sw := &startedWriter{w: w}
		err = b.Backup(sw, tele)
		if err == nil {
			return
		}
		if !sw.started {
			registryError(w, err)
			return
		}
		s.log.Error("backup failed while streaming", "err", err)
		panic(http.ErrAbortHandler) // cut the stream: the client must not take it as complete
	})
}

// streams are the responses in flight that may last long (backups). Stop
// cuts them first, setting their write deadline to now, so that a client
// reading slowly holds neither the stop nor the stores behind it.
type streams struct {
	mu      sync.Mutex
	cutting bool
	rcs     map[*http.ResponseController]bool
}

// add registers rc; false once Stop has begun.
func (s *streams) add(rc *http.ResponseController) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cutting {
		return false
	}
	if s.rcs == nil {
		s.rcs = map[*http.ResponseController]bool{}
	}
	s.rcs[rc] = true
	return true
}

func (s *streams) remove(rc *http.ResponseController) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.rcs, rc)
}

// cut fails the pending and future writes of every stream.
func (s *streams) cut() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cutting = true
	for rc := range s.rcs {
		_ = rc.SetWriteDeadline(time.Now())
	}
}

// startedWriter sends the tar content type with the first byte.
type startedWriter struct {
	w       http.ResponseWriter
	started bool
}

func (s *startedWriter) Write(b []byte) (int, error) {
	if !s.started {
		s.started = true
		s.w.Header().Set("Content-Type", "application/x-tar")
	}
	return s.w.Write(b)
}

// Backup saves the daemon's backup to w through backup.Copy, which checks
// the stream and reports its phases to progress as they pass.
func (c *Client) Backup(ctx context.Context, w io.Writer, telemetry bool, progress func(backup.Phase)) (backup.Manifest, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+"/v1/backup?telemetry="+strconv.FormatBool(telemetry), nil)
	if err != nil {
		return backup.Manifest{}, err
	}
	resp, err := c.send(req)
	if err != nil {
		return backup.Manifest{}, err
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusOK:
	case http.StatusUnauthorized:
		return backup.Manifest{}, c.unauthorized(req)
	default:
		var e errorAnswer
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
		if json.Unmarshal(body, &e) == nil && e.Error.Message != "" {
			return backup.Manifest{}, fmt.Errorf("backup: %s", e.Error.Message)
		}
		return backup.Manifest{}, fmt.Errorf("backup: %s: %s", resp.Status, body)
	}
	m, err := backup.Copy(w, resp.Body, progress)
	if errors.Is(err, io.ErrUnexpectedEOF) {
		err = backup.ErrIncomplete
	}
	return m, err
}
