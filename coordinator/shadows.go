package coordinator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/outpost-edge/outpost/coordinator/admin"
	"github.com/outpost-edge/outpost/devices"
	"github.com/outpost-edge/outpost/devices/shadow"
	outpostrt "github.com/outpost-edge/outpost/runtime"
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

// Shadows serves the shadow host functions through the shadow service, as
// the admin API's changes are: an accepted update or delete is published
// on the shadow's MQTT topics (delta and documents included) once it is on
// disk; a get or a rejection is answered to the task only.
func (h host) Shadows() outpostrt.Shadows { return hostShadows{h.c.shadows} }

type hostShadows struct{ s *devices.Shadows }

var _ outpostrt.Shadows = hostShadows{}

func (t hostShadows) Get(ctx context.Context, thing, name string) ([]byte, error) {
	return t.change(ctx, thing, name, shadow.OpGet, nil)
}

func (t hostShadows) Update(ctx context.Context, thing, name string, req []byte) ([]byte, error) {
	return t.change(ctx, thing, name, shadow.OpUpdate, req)
}

func (t hostShadows) Delete(ctx context.Context, thing, name string, req []byte) ([]byte, error) {
	return t.change(ctx, thing, name, shadow.OpDelete, req)
}

// change runs one request and turns a rejection into a
// *runtime.ShadowError carrying the document a device would get on
// .../rejected (the request's clientToken echoed).
func (t hostShadows) change(ctx context.Context, thing, name string, op shadow.Op, req []byte) ([]byte, error) {
	b, err := t.s.Change(ctx, shadow.Ref{Thing: thing, Name: name}, op, req)
	var se *shadow.Error
	switch {
	case errors.As(err, &se):
		var r struct {
			ClientToken string `json:"clientToken"`
		}
		_ = json.Unmarshal(req, &r) // a request that is not JSON has no token to echo
		return nil, &outpostrt.ShadowError{Code: se.Code, Document: shadow.Rejected(se, r.ClientToken, time.Now().Unix())}
	case errors.Is(err, devices.ErrShadowsNotReady):
		return nil, fmt.Errorf("%w: %w", outpostrt.ErrUnavailable, err)
	}
	return b, err
}
