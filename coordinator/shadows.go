package coordinator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/outpost-edge/outpost/coordinator/admin"
	"github.com/outpost-edge/outpost/devices"
	"github.com/outpost-edge/outpost/devices/shadow"
)

// shadowAdmin serves device shadows on the admin API (the same service,
// and the same replies on MQTT, as a device's own requests).
type shadowAdmin struct{ c *Coordinator }

var _ admin.DeviceShadows = shadowAdmin{}

func (s shadowAdmin) Shadows(id string) []devices.ShadowInfo { return s.c.shadows.List(id) }

func (s shadowAdmin) Shadow(id, name string) (shadow.Document, error) {
	d, err := s.c.shadows.Get(shadow.Ref{Thing: id, Name: name})
	return d, shadowError(err)
}

func (s shadowAdmin) ChangeShadow(ctx context.Context, id, name string, op shadow.Op, body []byte) (json.RawMessage, error) {
	b, err := s.c.shadows.Change(ctx, shadow.Ref{Thing: id, Name: name}, op, body)
	return b, shadowError(err)
}

// shadowError wraps a shadow refusal in the admin API's error kind: 400
// and 413 are invalid requests, 404 not found, 409 a conflict.
func shadowError(err error) error {
	var se *shadow.Error
	if !errors.As(err, &se) {
		return adminError(err)
	}
	switch se.Code {
	case 404:
		return fmt.Errorf("%w: %s", admin.ErrNotFound, se.Message)
	case 409:
		return fmt.Errorf("%w: %s", admin.ErrConflict, se.Message)
	case 400, 413:
		return fmt.Errorf("%w: %s", admin.ErrInvalid, se.Message)
	}
	return fmt.Errorf("%w: %s", admin.ErrInternal, se.Message)
}

// serveShadow hands a shadow request that came through the daemon's MQTT
// client to the shadow service and reports whether it was one. Such
// topics are served by the shadow service only, not by routes. On the
// embedded broker a QoS 1 or 2 request was served before its PUBACK
// (journalPublish), so it is skipped here; a QoS 1 request through an
// external broker is acknowledged once its answer is on disk.
func (c *Coordinator) serveShadow(m devices.Message) bool {
	if _, _, ok := shadow.ParseTopic(m.Topic); !ok {
		return false
	}
	if c.broker != nil && m.QoS >= 1 {
		return true
	}
	c.shadows.Request(m.Topic, m.Payload, func(err error) {
		if err == nil && m.Ack != nil {
			m.Ack()
		}
	})
	return true
}
