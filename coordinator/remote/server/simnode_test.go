package server

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"sync"
	"time"

	"github.com/outpost-edge/outpost/coordinator/remote"
)

// fleetNode is a simulated node that lives through a server's death: it
// long-polls the servers in turn (skipping one that does not answer),
// keeps a journal of the calls it ran, so a call delivered again is never
// run again (its result is sent again instead), keeps results in an
// outbox until a server took them, and starts a new session (ack 0) on a
// 410. status, when set, says how a call ends ("" or "ok": output is its
// id).
type fleetNode struct {
	id       string
	urls     func() []string
	hc       *http.Client
	capacity int
	waitMS   int64
	status   func(remote.WireCall) string
	// ran is told of each first run, delivered of every delivery.
	ran       func(remote.WireCall)
	delivered func(remote.WireCall)
	// recorded is told how many results a batch stored (201).
	recorded func(int)

	mu      sync.Mutex
	journal map[string]remote.Result
}

// run polls until ctx ends.
func (n *fleetNode) run(ctx context.Context) {
	n.journal = map[string]remote.Result{}
	var ack uint64
	var outbox []remote.Result
	boot := "boot-" + n.id
	for i := 0; ctx.Err() == nil; i++ {
		urls := n.urls()
		base := urls[i%len(urls)] + "/edge/v1/nodes/" + n.id
		if len(outbox) > 0 {
			var br remote.BatchResponse
			if code := n.post(ctx, base+"/results:batch", remote.BatchRequest{Results: outbox}, &br); code == http.StatusOK {
				stored := 0
				for _, it := range br.Items {
					if it.Status == http.StatusCreated {
						stored++
					}
				}
				outbox = nil
				if n.recorded != nil {
					n.recorded(stored)
				}
			} else {
				n.pause(ctx)
				continue
			}
		}
		var resp remote.PollResponse
		code := n.post(ctx, base+"/poll", remote.PollRequest{BootID: boot, AckThrough: ack, Capacity: n.capacity, WaitMS: n.waitMS}, &resp)
		switch code {
		case http.StatusOK:
		case http.StatusNoContent:
			continue
		case http.StatusGone:
			ack = 0 // the server lost the session (a badger restart): start again
			continue
		default:
			n.pause(ctx)
			continue
		}
		for _, c := range resp.Calls {
			ack = max(ack, c.Seq)
			if n.delivered != nil {
				n.delivered(c)
			}
			n.mu.Lock()
			r, ok := n.journal[c.ID]
			if !ok {
				st, out := "ok", c.ID
				if n.status != nil {
					if st = n.status(c); st == "" {
						st = "ok"
					}
				}
				r = result(c.ID, st, out)
				r.Attempt = c.Attempt
				n.journal[c.ID] = r
			}
			n.mu.Unlock()
			if !ok && n.ran != nil {
				n.ran(c)
			}
			outbox = append(outbox, r)
		}
	}
}

func (n *fleetNode) pause(ctx context.Context) {
	select {
	case <-ctx.Done():
	case <-time.After(100 * time.Millisecond):
	}
}

// post sends a JSON request of the edge API and decodes a 200 answer; 0
// when the server did not answer.
func (n *fleetNode) post(ctx context.Context, url string, body, out any) int {
	b, _ := json.Marshal(body)
	req, _ := http.NewRequestWithContext(ctx, "POST", url, bytes.NewReader(b))
	req.Header.Set(remote.HeaderProtocol, remote.Protocol)
	resp, err := n.hc.Do(req)
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusOK {
		if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
			return 0
		}
	}
	return resp.StatusCode
}
