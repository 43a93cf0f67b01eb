package coordinator

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"strconv"

	"github.com/outpost-edge/outpost/coordinator/calls"
	"github.com/outpost-edge/outpost/coordinator/config"
	"github.com/outpost-edge/outpost/coordinator/remote"
)

// cloudPart owns the call journal and the cloud link. The journal runs
// whether or not cloud.url is set (it is what `outpost calls` reads); the
// link runs only with a url.
//
// Stop order (see New): the link stops polling first, so no call is taken
// that the drain would cut; the scheduler drains, and each drained call's
// FINISHED lands in the journal; then the link flushes the outbox while it
// is still up (for the rest of the stop deadline; what is left goes after
// the next start); the journal closes after the last writer.
type cloudPart struct {
	c       *Coordinator
	journal *calls.Journal
	durable *calls.Durable
	link    *remote.Client
}

func (p *cloudPart) start(ctx context.Context) error {
	c := p.c
	cfg := c.cfg.Load()
	log := c.log.With("part", "journal")
	p.journal = calls.OpenJournal(c.db, calls.JournalOptions{Retention: cfg.Cloud.DedupeRetention.Std()}, log, c.reg)
	if cfg.Cloud.Enabled() {
		tlsCfg, err := cloudTLS(cfg.Cloud.TLS)
		if err != nil {
			return err
		}
		p.link = remote.New(remote.Config{
			URL: cfg.Cloud.URL, NodeID: cfg.Node.ID, TokenFile: cfg.Cloud.TokenFile, TLS: tlsCfg,
			PollWait: cfg.Cloud.PollWait.Std(), BackoffBase: cfg.Cloud.BackoffBase.Std(), BackoffMax: cfg.Cloud.BackoffMax.Std(),
			BatchSize: cfg.Cloud.BatchSize, MaxInflight: cfg.Cloud.MaxInflight, OutboxMaxBytes: int64(cfg.Cloud.OutboxMaxBytes),
		}, nil, c.log.With("part", "cloud"), c.reg)
	}
	link := p.link
	p.durable = calls.NewDurable(p.journal, c.sched, log, func(r *calls.Record) {
		if link != nil && r.Source.Kind == remote.SourceKind {
			link.Notify()
		}
	})
	if link != nil {
		link.SetNode(remote.NewNode(p.durable))
	}
	if err := p.durable.Recover(ctx); err != nil {
		return fmt.Errorf("recover journal: %w", err)
	}
	c.admin.Handle("GET /v1/calls", http.HandlerFunc(p.listCalls))
	c.admin.Handle("GET /v1/calls/{id}", http.HandlerFunc(p.showCall))
	if link != nil {
		return link.Start(ctx)
	}
	return nil
}

// stopPolling is the first step of the stop order.
func (p *cloudPart) stopPolling(context.Context) error {
	if p.link != nil {
		p.link.StopPolling()
	}
	return nil
}

// stop flushes the outbox while the link is up, within ctx.
func (p *cloudPart) stop(ctx context.Context) error {
	if p.link == nil {
		return nil
	}
	if err := p.link.Stop(ctx); err != nil {
		p.c.log.Warn("cloud link stopped with results still in the outbox (sent after restart)", "err", err)
	}
	return nil
}

func (p *cloudPart) closeJournal(context.Context) error {
	if p.journal == nil {
		return nil
	}
	return p.journal.Close()
}

func cloudTLS(t config.TLS) (*tls.Config, error) {
	if t.CAFile == "" && t.CertFile == "" {
		return nil, nil
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if t.CAFile != "" {
		pem, err := os.ReadFile(t.CAFile)
		if err != nil {
			return nil, fmt.Errorf("cloud tls: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("cloud tls: %s holds no PEM certificate", t.CAFile)
		}
		cfg.RootCAs = pool
	}
	if t.CertFile != "" {
		// Loaded on every handshake, so a rotated certificate is picked up
		// by the next connection without a restart.
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
			if err != nil {
				return nil, fmt.Errorf("cloud tls client certificate: %w", err)
			}
			return &cert, nil
		}
	}
	return cfg, nil
}

// CallInfo is one journaled call as `outpost calls` shows it.
type CallInfo = calls.Record

func (p *cloudPart) listCalls(w http.ResponseWriter, r *http.Request) {
	limit, _ := strconv.Atoi(r.URL.Query().Get("limit"))
	recs, err := p.journal.List(r.Context(), limit)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	for _, rec := range recs {
		rec.Input = nil
	}
	writeCallsJSON(w, http.StatusOK, map[string]any{"calls": recs})
}

func (p *cloudPart) showCall(w http.ResponseWriter, r *http.Request) {
	rec, err := p.journal.Get(r.PathValue("id"))
	switch {
	case err != nil:
		http.Error(w, err.Error(), http.StatusInternalServerError)
	case rec == nil:
		writeCallsJSON(w, http.StatusNotFound, map[string]string{"error": "no call " + r.PathValue("id") + " in the journal"})
	default:
		writeCallsJSON(w, http.StatusOK, rec)
	}
}

func writeCallsJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v) // a client gone mid-answer is not the daemon's problem
}

func cloudQueues(cl config.Cloud) []calls.QueueSpec {
	out := make([]calls.QueueSpec, len(cl.Queues))
	for i, q := range cl.Queues {
		out[i] = calls.QueueSpec{Name: q.Name, Weight: q.Weight}
	}
	return out
}
