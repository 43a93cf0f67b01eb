package telemetry

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/outpost-edge/outpost/telemetry/cluster"
	"github.com/outpost-edge/outpost/telemetry/model"
)

// Handler serves the admin API under /v1/telemetry/:
//
//	GET /v1/telemetry/targets                               status of every target
//	GET /v1/telemetry/latest?target=GLOB&path=PATTERN         latest value per series
//	GET /v1/telemetry/query?target=&path=&since=&until=&bucket=&limit=
//	GET /v1/telemetry/cluster, POST .../cluster/drain, .../cluster/undrain (see clusterRoutes)
//
// On a clustered instance, latest and query answers add "served_from" (see
// withServedFrom).
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
		pts, proxiedTo, err := s.latest(q.Get("target"), q.Get("path"))
		if err != nil {
			writeErr(w, err)
			return
		}
		writeJSON(w, http.StatusOK, s.withServedFrom(q.Get("target"), proxiedTo, map[string]any{"points": pts}))
	})
	mux.HandleFunc("GET /v1/telemetry/query", func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		limit := 0
		if l := q.Get("limit"); l != "" {
			var err error
			if limit, err = strconv.Atoi(l); err != nil {
				writeJSON(w, http.StatusBadRequest, map[string]string{"error": errBadLimit.Error()})
				return
			}
		}
		req, err := ParseQuery(q.Get("target"), q.Get("path"), q.Get("since"), q.Get("until"), q.Get("bucket"), limit, time.Now())
		if err != nil {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
			return
		}
		res, proxiedTo, err := s.query(r.Context(), req)
		if err != nil {
			writeErr(w, err)
			return
		}
		writeJSON(w, http.StatusOK, s.withServedFrom(req.Target, proxiedTo, map[string]any{"since": req.Since.UTC(), "until": req.Until.UTC(), "series": res}))
	})
	s.clusterRoutes(mux)
	return mux
}

var errBadLimit = errors.New("limit: want a positive number")

// ParseQuery builds a QueryRequest from the text fields of a query, as the
// admin API (GET /v1/telemetry/query) and the task host API
// (outpost.telemetry_query, docs/abi.md) take them: since and until are
// durations back from now ("1h") or RFC 3339 times, by default an hour
// before now and now; bucket is "" (raw points) or a positive duration;
// limit is 0 (the store's default) or more. The error names the field.
func ParseQuery(target, path, since, until, bucket string, limit int, now time.Time) (QueryRequest, error) {
	req := QueryRequest{Target: target, Path: path, Limit: limit}
	var err error
	if req.Since, err = parseWhen(since, now, now.Add(-time.Hour)); err != nil {
		return QueryRequest{}, fmt.Errorf("since: %w", err)
	}
	if req.Until, err = parseWhen(until, now, now); err != nil {
		return QueryRequest{}, fmt.Errorf("until: %w", err)
	}
	if bucket != "" {
		if req.Bucket, err = time.ParseDuration(bucket); err != nil || req.Bucket <= 0 {
			return QueryRequest{}, errors.New("bucket: want a positive duration such as 1m")
		}
	}
	if limit < 0 {
		return QueryRequest{}, errBadLimit
	}
	return req, nil
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

// clusterRoutes serves the cluster view under /v1/telemetry/cluster:
//
//	GET  /v1/telemetry/cluster          members, and each target's holder, epoch, role here and replica lag
//	POST /v1/telemetry/cluster/drain    move this instance's targets to the others
//	POST /v1/telemetry/cluster/undrain  take targets again
//
// It answers 503 when this instance is not clustered.
func (s *Service) clusterRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET /v1/telemetry/cluster", func(w http.ResponseWriter, r *http.Request) {
		n := s.Cluster()
		if n == nil {
			writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": errNotClustered.Error()})
			return
		}
		writeJSON(w, http.StatusOK, n.Status())
	})
	for path, drained := range map[string]bool{"drain": true, "undrain": false} {
		mux.HandleFunc("POST /v1/telemetry/cluster/"+path, func(w http.ResponseWriter, r *http.Request) {
			n := s.Cluster()
			if n == nil {
				writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": errNotClustered.Error()})
				return
			}
			if err := n.SetDrained(r.Context(), drained); err != nil {
				writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": err.Error()})
				return
			}
			writeJSON(w, http.StatusOK, n.Status())
		})
	}
}

var errNotClustered = errors.New("this instance is not in a telemetry cluster (telemetry.cluster.etcd is empty)")

// withServedFrom adds, on a clustered instance, "served_from": for each
// target the glob matches, whether this instance collects it (holder),
// answers from its replica (with the replica's lag), or passed the read to
// the holder (proxy, proxiedTo: the replica here was stale), and who holds
// it.
func (s *Service) withServedFrom(glob, proxiedTo string, answer map[string]any) map[string]any {
	n := s.Cluster()
	if n == nil {
		return answer
	}
	from := map[string]cluster.TargetState{}
	for _, ts := range n.Status().Targets {
		if model.Glob(glob, ts.Target) {
			if proxiedTo != "" {
				ts.Role, ts.Holder = cluster.RoleProxy, proxiedTo
			}
			from[ts.Target] = ts
		}
	}
	answer["served_from"] = from
	return answer
}
