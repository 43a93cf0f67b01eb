package console

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/outpost-edge/outpost/coordinator/admin"
	"github.com/outpost-edge/outpost/telemetry/model"
)

// StreamPath is the telemetry event stream:
//
//	GET /v1/telemetry/stream?target=GLOB&path=PATTERN[&path=PATTERN…][&interval=1s]
//
// a Server-Sent Events stream that reads the latest value of each matching
// series from the telemetry store every interval and sends, as one
// "points" event, the points newer than those it sent before (JSON: an
// array of points as GET /v1/telemetry/latest shows them). The first event
// holds the latest point of every series.
const StreamPath = "/v1/telemetry/stream"

// Bounds of a stream's interval and of the patterns it follows.
const (
	minInterval     = 200 * time.Millisecond
	maxInterval     = time.Minute
	defaultInterval = time.Second
	maxPaths        = 16
)

// Telemetry is the store the stream reads.
type Telemetry interface {
	Enabled() bool
	// Latest returns the latest point of each series matching a target
	// glob and a path pattern.
	Latest(target, path string) ([]model.Point, error)
}

// streamRequest is a parsed stream query.
type streamRequest struct {
	target   string
	paths    []string
	interval time.Duration
}

// parseStream reads the stream's query; the error names the parameter.
func parseStream(q map[string][]string) (streamRequest, error) {
	req := streamRequest{interval: defaultInterval, paths: q["path"]}
	if t := q["target"]; len(t) > 1 {
		return req, errors.New("target: give one glob")
	} else if len(t) == 1 {
		req.target = t[0]
	}
	if len(req.paths) == 0 || len(req.paths) > maxPaths {
		return req, fmt.Errorf("path: give 1 to %d path patterns", maxPaths)
	}
	if iv := q["interval"]; len(iv) > 0 {
		d, err := time.ParseDuration(iv[0])
		if err != nil || d < minInterval || d > maxInterval || len(iv) > 1 {
			return req, fmt.Errorf("interval: want one duration from %v to %v", minInterval, maxInterval)
		}
		req.interval = d
	}
	return req, nil
}

// newPoints returns the points of pts newer than sent has for their
// series, and records them in sent.
func newPoints(pts []model.Point, sent map[string]time.Time) []model.Point {
	var out []model.Point
	for _, p := range pts {
		k := p.Target + "\x00" + p.Path
		if last, ok := sent[k]; ok && !p.Time.After(last) {
			continue
		}
		sent[k] = p.Time
		out = append(out, p)
	}
	return out
}

// streamHandler serves StreamPath; the admin server cuts its streams when
// it stops.
func streamHandler(s *admin.Server, tele Telemetry) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		req, err := parseStream(r.URL.Query())
		if err != nil {
			writeError(w, http.StatusBadRequest, err.Error())
			return
		}
		if !tele.Enabled() {
			writeError(w, http.StatusServiceUnavailable, "telemetry is not configured on this daemon")
			return
		}
		done, ok := s.Streaming(w)
		if !ok {
			writeError(w, http.StatusServiceUnavailable, "the daemon is stopping")
			return
		}
		defer done()
		w.Header().Set("Content-Type", "text/event-stream")
		w.Header().Set("Cache-Control", "no-store")
		w.Header().Set("X-Accel-Buffering", "no")
		w.WriteHeader(http.StatusOK)
		rc := http.NewResponseController(w)
		sent := map[string]time.Time{}
		tick := time.NewTicker(req.interval)
		defer tick.Stop()
		for {
			var pts []model.Point
			for _, p := range req.paths {
				got, err := tele.Latest(req.target, p)
				if err != nil {
					_, _ = fmt.Fprintf(w, "event: problem\ndata: %q\n\n", err.Error())
					continue
				}
				pts = append(pts, newPoints(got, sent)...)
			}
			if len(pts) > 0 {
				b, _ := json.Marshal(pts)
				_, _ = fmt.Fprintf(w, "event: points\ndata: %s\n\n", b)
			} else {
				_, _ = fmt.Fprint(w, ": idle\n\n") // keeps proxies and the browser's timers content
			}
			if err := rc.Flush(); err != nil {
				return // the client left, or the server is stopping
			}
			select {
			case <-r.Context().Done():
				return
			case <-tick.C:
			}
		}
	})
}

func writeError(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": msg})
}
