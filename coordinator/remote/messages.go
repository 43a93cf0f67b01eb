package remote

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"time"
)

// MessagesRequest is the body of POST /edge/v1/nodes/{node}/messages:batch:
// device messages routed to the cloud, oldest first.
type MessagesRequest struct {
	Messages []Message `json:"messages"`
}

// MessagesResponse answers a messages batch that the control plane
// stored (synced): how many were new, and how many it had already (by
// id) and dropped.
type MessagesResponse struct {
	Stored     int `json:"stored"`
	Duplicates int `json:"duplicates"`
}

// Limits of a messages batch: at most messageBatch messages and about
// maxBatchResults bytes of payloads (a message alone always goes).
const messageBatch = 500

// SetSpool makes the link upload the device messages of sp (routes to the
// cloud) beside results and polls; call before Start.
func (c *Client) SetSpool(sp *Spool) {
	c.spool = sp
	sp.SetNotify(func() {
		select {
		case c.msgWake <- struct{}{}:
		default:
		}
	})
}

// messageLoop uploads the spool's messages, oldest first, one batch at a
// time; a message leaves the spool once the control plane stored it.
func (c *Client) messageLoop() {
	c.drain("cloud message upload failed", "device messages left in the spool at stop: sent after restart", c.msgWake,
		func(b *backoff) (int, time.Duration, error) {
			batch, err := c.spool.peek(messageBatch, maxBatchResults)
			if err != nil {
				return 0, b.next(), err
			}
			if len(batch) == 0 {
				return 0, 0, nil
			}
			wait, err := c.uploadMessages(batch, b)
			return len(batch), wait, err
		})
}

func (c *Client) uploadMessages(batch []spooled, b *backoff) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(context.Background(), c.cfg.ReadTimeout)
	defer cancel()
	req := MessagesRequest{Messages: make([]Message, len(batch))}
	for i, m := range batch {
		req.Messages[i] = m.Message
	}
	r, err := c.do(ctx, http.MethodPost, c.endpoint("messages:batch"), req)
	if err != nil {
		return b.next(), err
	}
	if r.status != http.StatusOK {
		c.uploadRefused(r.status)
		return retryWait(r, b), fmt.Errorf("messages upload: status %d: %s", r.status, trim(r.body))
	}
	var resp MessagesResponse
	if err := json.Unmarshal(r.body, &resp); err != nil || resp.Stored+resp.Duplicates != len(batch) {
		return b.next(), fmt.Errorf("%w: messages batch answer %q for %d messages", ErrProtocol, trim(r.body), len(batch))
	}
	return 0, c.spool.remove(batch)
}
