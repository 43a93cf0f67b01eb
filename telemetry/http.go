package telemetry

import (
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/outpost-edge/outpost/telemetry/model"
)

// Handler serves the admin API under /v1/telemetry/:
//
//	GET /v1/telemetry/targets                               status of every target
//	GET /v1/telemetry/latest?target=GLOB&path=PATTERN         latest value per series
//	GET /v1/telemetry/query?target=&path=&since=&until=&bucket=&limit=
//
// since and until are durations back from now (1h) or RFC 3339 times;
// bucket (a duration) downsamples to min/max/avg/count/last per bucket.
func (s *Service) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/telemetry/targets", func(w http.ResponseWriter, r *http.Request) {
		st := s.Status()
		if st == nil {
			st = []model.TargetStatus{}
		}
		writeJSON(w, http.StatusOK, map[string]any{"enabled": s.Enabled(), "targets": st})
	})
	mux.HandleFunc("GET /v1/telemetry/latest", func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		pts, err := s.Latest(q.Get("target"), q.Get("path"))
		if err != nil {
			writeErr(w, err)
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"points": pts})
	})
	mux.HandleFunc("GET /v1/telemetry/query", func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		now := time.Now()
		req := QueryRequest{Target: q.Get("target"), Path: q.Get("path")}
		var err error
		if req.Since, err = parseWhen(q.Get("since"), now, now.Add(-time.Hour)); err != nil {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": "since: " + err.Error()})
			return
		}
		if req.Until, err = parseWhen(q.Get("until"), now, now); err != nil {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": "until: " + err.Error()})
			return
		}
		if b := q.Get("bucket"); b != "" {
			if req.Bucket, err = time.ParseDuration(b); err != nil || req.Bucket <= 0 {
				writeJSON(w, http.StatusBadRequest, map[string]string{"error": "bucket: want a positive duration such as 1m"})
				return
			}
		}
		if l := q.Get("limit"); l != "" {
			if req.Limit, err = strconv.Atoi(l); err != nil || req.Limit < 0 {
				writeJSON(w, http.StatusBadRequest, map[string]string{"error": "limit: want a positive number"})
				return
			}
		}
		res, err := s.Query(req)
		if err != nil {
			writeErr(w, err)
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"since": req.Since.UTC(), "until": req.Until.UTC(), "series": res})
	})
	return mux
}

// parseWhen reads "1h" (ago), an RFC 3339 time, or "" (def).
func parseWhen(s string, now, def time.Time) (time.Time, error) {
	if s == "" {
		return def, nil
	}
	if d, err := time.ParseDuration(s); err == nil {
		return now.Add(-d), nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, errors.New("want a duration back from now (1h) or an RFC 3339 time")
	}
	return t, nil
}

func writeErr(w http.ResponseWriter, err error) {
	code := http.StatusBadRequest
	if errors.Is(err, ErrDisabled) {
		code = http.StatusServiceUnavailable
	}
	writeJSON(w, code, map[string]string{"error": err.Error()})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}
