package coordinator

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/outpost-edge/outpost/coordinator/calls"
	"github.com/outpost-edge/outpost/coordinator/routes"
	"github.com/outpost-edge/outpost/devices"
	"github.com/outpost-edge/outpost/devices/shadow"
)

// onMessage turns an MQTT message into one call per matching route. It
// runs on the MQTT client's goroutine, so it never blocks: Submit only
// queues, and a refused call is counted and dropped.
//
// A message that came with QoS 1 or 2 on a route with qos 1 expects
// delivery: its calls are journaled (group commit, without waiting here)
// and the message is acknowledged to the broker only once they are on
// disk (cloud.go, acceptMQTT). Such calls run at least once: recovery
// runs them again after a crash, and their replies are published from the
// journal (mqttReplier). Other messages are acknowledged at once and their
// calls are held in memory, as before.
//
// With the embedded broker those calls are not made here: the broker
// journaled them before it acknowledged the message to the device
// (journalPublish), so they are skipped, and only the other routes run.
func (c *Coordinator) onMessage(m devices.Message) {
	if c.serveShadow(m) {
		return
	}
	ms := c.routes.Load().Match(m.Topic)
	var durable []*calls.Call
	for _, match := range ms {
		if match.Cloud {
			continue // cloudroute.go
		}
		if m.QoS >= 1 && match.QoS >= 1 && m.Ack != nil {
			if c.broker != nil {
				continue // journaled by the embedded broker (journalPublish)
			}
			durable = append(durable, durableCall(match, m.Topic, m.Payload))
			continue
		}
		call := calls.New(match.Task, m.Payload, calls.Source{Kind: mqttSource, Ref: m.Topic})
		call.Labels = match.Labels
		reply := match.ReplyTopic(m.Topic)
		if reply != "" {
			qos := match.QoS
			call.Done = func(call *calls.Call) { c.reply(reply, qos, call) }
		}
		if err := c.sched.Submit(call); err != nil {
			c.dropped(m.Topic, match.Task, dropReason(err))
		}
	}
	accept := func() {
		switch {
		case len(durable) > 0:
			c.cloud.acceptMQTT(m, durable)
		case m.Ack != nil:
			m.Ack()
		}
	}
	switch cloud, held := toCloud(ms, m.QoS); {
	case cloud && held && m.Ack != nil && c.broker != nil:
		// Spooled by the embedded broker before its PUBACK (journalPublish).
	case cloud && held && m.Ack != nil:
		// Acknowledged once in the spool and, for task routes, journaled.
		c.spoolMessage(m.Topic, m.Payload, m.QoS, func(err error) {
			if err == nil {
				accept()
			}
		})
		return
	case cloud:
		c.spoolMessage(m.Topic, m.Payload, m.QoS, nil)
	}
	accept()
}

// durableCall is the call of a QoS 1 message on a qos 1 route: journaled,
// run at least once, its reply published from the journal.
func durableCall(match routes.Match, topic string, payload []byte) *calls.Call {
	call := calls.New(match.Task, payload, calls.Source{Kind: mqttSource, Ref: topic})
	call.Effect = calls.Idempotent // at least once: see docs/architecture.md, Durability
	call.ReplyTo = match.ReplyTopic(topic)
	call.Labels = match.Labels
	return call
}

// journalPublish is the embedded broker's DurablePublish (installed in
// New): a QoS 1 or 2 message from a device, before the broker acknowledges
// it. The calls of its qos 1 routes are journaled (Durable.AcceptAsync,
// synced) and queued; only then (done) does the broker send the PUBACK, so
// a kill -9 cannot lose a message the device was told is delivered. The
// device's connection is not held meanwhile (its messages in flight share
// one group commit), except while the journal is not open yet, for at most
// openWait. An error makes the broker disconnect the device without
// acknowledging the message: the device sends it again when it reconnects.
// The message still goes to the broker's subscribers, the daemon's client
// among them, which runs the message's other routes and skips these
// (onMessage).
func (c *Coordinator) journalPublish(ctx context.Context, topic string, payload []byte, qos byte, done func(error)) (bool, error) {
	if c.shadows.Request(topic, payload, done) {
		return true, nil // a shadow request: acknowledged once answered (shadows.go)
	}
	ms := c.routes.Load().Match(topic)
	var durable []*calls.Call
	for _, match := range ms {
		if !match.Cloud && qos >= 1 && match.QoS >= 1 {
			durable = append(durable, durableCall(match, topic, bytes.Clone(payload)))
		}
	}
	if _, held := toCloud(ms, qos); !held {
		if len(durable) == 0 {
			return false, nil
		}
		return true, c.cloud.acceptPublish(ctx, topic, durable, done)
	}
	// The cloud spool first: a full spool refuses the message before any
	// call of it is journaled (the device sends it again).
	if _, err := c.cloud.waitOpen(ctx); err != nil {
		return true, err
	}
	c.spoolMessage(topic, payload, qos, func(err error) {
		if err != nil || len(durable) == 0 {
			done(err)
			return
		}
		if err := c.cloud.acceptPublish(ctx, topic, durable, done); err != nil {
			done(err)
		}
	})
	return true, nil
}

// mqttSource is the source kind of calls made by MQTT routes.
const mqttSource = "mqtt"

func dropReason(err error) string {
	switch {
	case errors.Is(err, calls.ErrDraining):
		return "draining"
	case errors.Is(err, calls.ErrUnknownTask):
		return "unknown_task"
	}
	return "queue_full"
}

func (c *Coordinator) dropped(topic, task, reason string) {
	c.m.intakeDropped.WithLabelValues(reason).Inc()
	c.log.Debug("message dropped", "topic", topic, "task", task, "reason", reason)
}

// reply publishes a finished call's output, or its error document, to the
// route's reply topic.
func (c *Coordinator) reply(topic string, qos byte, call *calls.Call) {
	if err := c.publishResult(topic, qos, call.ID, call.Task, call.Source, call.Result); err != nil {
		c.log.Warn("reply not published", "topic", topic, "task", call.Task, "call", call.ID, "err", err)
	}
}

// publishResult publishes a call's output, or its error document.
func (c *Coordinator) publishResult(topic string, qos byte, id, task string, src calls.Source, res calls.Result) error {
	payload := res.Output
	if !res.OK() {
		payload, _ = json.Marshal(calls.ErrorDoc{Error: calls.ErrorBody{Code: res.Status, Message: res.Error}, Task: task, CallID: id})
	}
	ctx, cancel := context.WithTimeout(context.Background(), c.cfg.Load().MQTT.PublishTimeout.Std())
	defer cancel()
	err := c.client.Publish(ctx, topic, qos, payload)
	if res.OK() && errors.Is(err, devices.ErrTooLarge) {
		// The output does not fit the broker's limit: the device gets an
		// error document saying so rather than nothing.
		return c.publishResult(topic, qos, id, task, src, calls.Result{Status: calls.StatusTooLarge,
			Error: fmt.Sprintf("the output of %d bytes does not fit the broker's message size limit of %d bytes", len(payload), c.cfg.Load().MQTT.MessageLimit())})
	}
	return err
}

func subscriptions(t *routes.Table) []devices.Subscription {
	var subs []devices.Subscription
	for _, f := range shadow.RequestFilters() {
		subs = append(subs, devices.Subscription{Filter: f, QoS: 1}) // shadows.go
	}
	for f, q := range t.Subscriptions() {
		subs = append(subs, devices.Subscription{Filter: f, QoS: q})
	}
	return subs
}

// mqttReplier publishes the replies of journaled MQTT calls (QoS 1
// routes) from the journal's outbox, after their FINISHED record is on
// disk, and marks them reported once the broker has them. It is the MQTT
// counterpart of the cloud link's uploader: a reply survives a crash
// between the end of the call and its publication (it is published after
// the restart; a crash after the publication and before the REPORTED write
// lands publishes it again: at least once). A call without a reply topic
// is marked reported at once.
type mqttReplier struct {
	c   *Coordinator
	j   *calls.Journal
	log *slog.Logger

	wake chan struct{}
	quit chan struct{}
	done chan struct{}
	once sync.Once
}

// replyBatch is how many replies are taken from the outbox at once, and
// replyParallel how many are published at once.
const (
	replyBatch    = 256
	replyParallel = 16
)

func newMQTTReplier(c *Coordinator, j *calls.Journal, log *slog.Logger) *mqttReplier {
	return &mqttReplier{c: c, j: j, log: log, wake: make(chan struct{}, 1), quit: make(chan struct{}), done: make(chan struct{})}
}

func (r *mqttReplier) start() { go r.run() }

// notify says there may be replies to publish. It never blocks.
func (r *mqttReplier) notify() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

func (r *mqttReplier) run() {
	defer close(r.done)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-r.quit:
			cancel()
		case <-ctx.Done():
		}
	}()
	for {
		select {
		case <-r.wake:
		case <-r.quit:
			return
		}
		_ = r.flush(ctx)
	}
}

// stop ends the loop and publishes what is left, within ctx (the MQTT
// client is still up). What is not published stays in the journal.
func (r *mqttReplier) stop(ctx context.Context) error {
	r.once.Do(func() { close(r.quit) })
	<-r.done
	return r.flush(ctx)
}

// flush publishes the outbox's MQTT replies until none is left or ctx
// ends. While the client is not connected it waits and tries again.
func (r *mqttReplier) flush(ctx context.Context) error {
	for {
		recs, _, _ := r.j.Outbox(mqttSource, replyBatch)
		if len(recs) == 0 {
			return nil
		}
		// FINISHED was written without waiting; it is on disk before the
		// reply leaves (one fsync for the batch).
		if err := r.j.Flush(); err != nil {
			return err
		}
		var (
			mu        sync.Mutex
			reported  []string
			retry     bool
			wg        sync.WaitGroup
			semaphore = make(chan struct{}, replyParallel)
		)
		for _, rec := range recs {
			if rec.ReplyTo == "" || rec.Result == nil {
				reported = append(reported, rec.ID)
				continue
			}
			semaphore <- struct{}{}
			wg.Add(1)
			go func() {
				defer func() { <-semaphore; wg.Done() }()
				err := r.c.publishResult(rec.ReplyTo, 1, rec.ID, rec.Task, rec.Source, *rec.Result)
				mu.Lock()
				defer mu.Unlock()
				switch {
				case err == nil:
					reported = append(reported, rec.ID)
				case errors.Is(err, devices.ErrNotConnected) || errors.Is(err, context.DeadlineExceeded):
					retry = true // kept: published once the broker is back
				default:
					// As for a reply held in memory: logged, not retried.
					r.log.Warn("reply not published", "topic", rec.ReplyTo, "task", rec.Task, "call", rec.ID, "err", err)
					reported = append(reported, rec.ID)
				}
			}()
		}
		wg.Wait()
		if err := r.j.MarkReported(reported...); err != nil {
			return err
		}
		if retry {
			t := time.NewTimer(time.Second)
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
				return ctx.Err()
			}
		}
		if err := ctx.Err(); err != nil {
			return err
		}
	}
}
