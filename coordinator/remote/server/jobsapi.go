package server

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"
)

// The jobs API (operator token): POST /api/v1/jobs creates a job (201,
// 409 for an id that exists, 400 for a bad spec), GET /api/v1/jobs lists
// jobs, GET /api/v1/jobs/{id} shows one with its rate and estimated time
// left, and GET /api/v1/jobs/{id}/events follows it as Server-Sent Events:
// a "progress" event with the job at once and at each change (at most
// every 250 ms), then one "done" event with the finished (or failed) job,
// and the stream ends.
func (s *Server) jobRoutes(mux *http.ServeMux) {
	mux.HandleFunc("POST /api/v1/jobs", s.handleCreateJob)
	mux.HandleFunc("GET /api/v1/jobs", s.handleJobs)
	mux.HandleFunc("GET /api/v1/jobs/{id}", s.handleJob)
	mux.HandleFunc("GET /api/v1/jobs/{id}/events", s.handleJobEvents)
}

func (s *Server) handleCreateJob(w http.ResponseWriter, r *http.Request) {
	var spec JobSpec
	if err := readBody(r, &spec); err != nil {
		httpError(w, http.StatusBadRequest, err.Error())
		return
	}
	j, err := s.createJob(r.Context(), spec)
	switch {
	case errors.Is(err, errJobExists):
		httpError(w, http.StatusConflict, err.Error())
	case err != nil:
		httpError(w, http.StatusBadRequest, err.Error())
	default:
		writeJSON(w, r, http.StatusCreated, j)
	}
}

func (s *Server) handleJobs(w http.ResponseWriter, r *http.Request) {
	all, err := s.st.listJobs(r.Context())
	if err != nil {
		s.storeError(w, "jobs", err)
		return
	}
	writeJSON(w, r, http.StatusOK, map[string]any{"jobs": all})
}

func (s *Server) handleJob(w http.ResponseWriter, r *http.Request) {
	j, err := s.st.getJob(r.Context(), r.PathValue("id"))
	switch {
	case errors.Is(err, errNoJob):
		httpError(w, http.StatusNotFound, "no job "+r.PathValue("id"))
	case err != nil:
		s.storeError(w, "job", err)
	default:
		writeJSON(w, r, http.StatusOK, j)
	}
}

func (s *Server) handleJobEvents(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if _, err := s.st.getJob(r.Context(), id); errors.Is(err, errNoJob) {
		httpError(w, http.StatusNotFound, "no job "+id)
		return
	}
	fl, _ := w.(http.Flusher)
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	var last []byte
	for {
		ch := s.st.changed()
		j, err := s.st.getJob(r.Context(), id)
		if err != nil {
			return
		}
		event := "progress"
		if j.State != "running" {
			event = "done"
		}
		b, _ := json.Marshal(j)
		if string(b) != string(last) || event == "done" {
			fmt.Fprintf(w, "event: %s\ndata: %s\n\n", event, b)
			if fl != nil {
				fl.Flush()
			}
			last = b
		}
		if event == "done" {
			return
		}
		select {
		case <-r.Context().Done():
			return
		case <-ch:
		case <-time.After(15 * time.Second): // a comment keeps proxies from closing an idle stream
			fmt.Fprint(w, ": idle\n\n")
		}
		select {
		case <-r.Context().Done():
			return
		case <-time.After(250 * time.Millisecond):
		}
	}
}
