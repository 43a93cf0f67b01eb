package admin

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"

	"github.com/outpost-edge/outpost/devices"
	"github.com/outpost-edge/outpost/devices/shadow"
)

// DeviceShadows reads and changes device shadows (GET /v1/devices/{id}/shadows;
// GET, POST (update) and DELETE /v1/devices/{id}/shadow, ?name= for a
// named shadow). Errors wrap ErrInvalid, ErrConflict (a version conflict)
// or ErrNotFound.
type DeviceShadows interface {
	Shadows(id string) []devices.ShadowInfo
	Shadow(id, name string) (shadow.Document, error)
	// ChangeShadow runs an update (body: the AWS update request) or a
	// delete and returns the accepted document once it is on disk.
	ChangeShadow(ctx context.Context, id, name string, op shadow.Op, body []byte) (json.RawMessage, error)
}

// MountShadows adds the shadow routes to s.
func MountShadows(s *Server, r DeviceShadows) {
	s.mux.HandleFunc("GET /v1/devices/{id}/shadows", func(w http.ResponseWriter, req *http.Request) {
		writeJSON(w, http.StatusOK, r.Shadows(req.PathValue("id")))
	})
	s.mux.HandleFunc("GET /v1/devices/{id}/shadow", func(w http.ResponseWriter, req *http.Request) {
		d, err := r.Shadow(req.PathValue("id"), req.URL.Query().Get("name"))
		if err != nil {
			registryError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, d)
	})
	change := func(op shadow.Op) http.HandlerFunc {
		return func(w http.ResponseWriter, req *http.Request) {
			body, err := io.ReadAll(http.MaxBytesReader(w, req.Body, shadow.MaxRequest))
			if err != nil {
				registryError(w, fmt.Errorf("%w: shadow request: %v", ErrInvalid, err))
				return
			}
			b, err := r.ChangeShadow(req.Context(), req.PathValue("id"), req.URL.Query().Get("name"), op, body)
			if err != nil {
				registryError(w, err)
				return
			}
			writeJSON(w, http.StatusOK, b)
		}
	}
	s.mux.HandleFunc("POST /v1/devices/{id}/shadow", change(shadow.OpUpdate))
	s.mux.HandleFunc("DELETE /v1/devices/{id}/shadow", change(shadow.OpDelete))
}

func shadowPath(id, name string) string {
	p := "/v1/devices/" + url.PathEscape(id) + "/shadow"
	if name != "" {
		p += "?name=" + url.QueryEscape(name)
	}
	return p
}

// Shadows lists a device's shadows.
func (c *Client) Shadows(ctx context.Context, id string) ([]devices.ShadowInfo, error) {
	var out []devices.ShadowInfo
	return out, c.deviceDo(ctx, http.MethodGet, "/v1/devices/"+url.PathEscape(id)+"/shadows", nil, &out)
}

// Shadow returns a device's shadow (name "": the classic one).
func (c *Client) Shadow(ctx context.Context, id, name string) (shadow.Document, error) {
	var d shadow.Document
	return d, c.deviceDo(ctx, http.MethodGet, shadowPath(id, name), nil, &d)
}

// UpdateShadow sends an AWS shadow update request (`{"state": {"desired":
// ...}}`) and returns the update/accepted document.
func (c *Client) UpdateShadow(ctx context.Context, id, name string, request []byte) (json.RawMessage, error) {
	var out json.RawMessage
	return out, c.deviceDo(ctx, http.MethodPost, shadowPath(id, name), request, &out)
}

// DeleteShadow deletes a device's shadow and returns the delete/accepted
// document.
func (c *Client) DeleteShadow(ctx context.Context, id, name string) (json.RawMessage, error) {
	var out json.RawMessage
	return out, c.deviceDo(ctx, http.MethodDelete, shadowPath(id, name), nil, &out)
}
