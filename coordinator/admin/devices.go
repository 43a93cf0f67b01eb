package admin

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"

	"github.com/outpost-edge/outpost/devices"
)

// DeviceRegistry manages the registered devices (GET/POST /v1/devices,
// GET/DELETE /v1/devices/{id}, POST /v1/devices/{id}/disable|enable, GET
// /v1/device-export/mosquitto) and shows what the broker refused them (GET
// /v1/device-violations). Errors wrap ErrInvalid, ErrConflict or
// ErrNotFound.
type DeviceRegistry interface {
	AddDevice(id string, groups []string) (devices.Device, string, error)
	Devices() []devices.Device
	Device(id string) (devices.Device, error)
	SetDeviceDisabled(id string, disabled bool) (devices.Device, error)
	RemoveDevice(id string) error
	// ExportMosquitto returns the enabled devices and their access rules
	// as Mosquitto password and ACL files.
	ExportMosquitto() devices.MosquittoFiles
	// Violations are the embedded broker's last refusals by the access
	// rules and the per-device limits, newest first.
	Violations() []devices.Violation
}

// NewDevice is the body of POST /v1/devices.
type NewDevice struct {
	ID     string   `json:"id"`
	Groups []string `json:"groups,omitempty"`
}

// AddedDevice is the answer to POST /v1/devices: the device and its
// secret, shown this once.
type AddedDevice struct {
	Device devices.Device `json:"device"`
	Secret string         `json:"secret"`
}

// MountDevices adds the device registry routes to s.
func MountDevices(s *Server, r DeviceRegistry) {
	s.mux.HandleFunc("GET /v1/devices", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, r.Devices())
	})
	s.mux.HandleFunc("POST /v1/devices", func(w http.ResponseWriter, req *http.Request) {
		var nd NewDevice
		if err := json.NewDecoder(http.MaxBytesReader(w, req.Body, 64<<10)).Decode(&nd); err != nil {
			registryError(w, fmt.Errorf("%w: device: %v", ErrInvalid, err))
			return
		}
		d, secret, err := r.AddDevice(nd.ID, nd.Groups)
		if err != nil {
			registryError(w, err)
			return
		}
		writeJSON(w, http.StatusCreated, AddedDevice{Device: d, Secret: secret})
	})
	s.mux.HandleFunc("GET /v1/devices/{id}", func(w http.ResponseWriter, req *http.Request) {
		answerDevice(w)(r.Device(req.PathValue("id")))
	})
	s.mux.HandleFunc("POST /v1/devices/{id}/disable", func(w http.ResponseWriter, req *http.Request) {
		answerDevice(w)(r.SetDeviceDisabled(req.PathValue("id"), true))
	})
	s.mux.HandleFunc("POST /v1/devices/{id}/enable", func(w http.ResponseWriter, req *http.Request) {
		answerDevice(w)(r.SetDeviceDisabled(req.PathValue("id"), false))
	})
	s.mux.HandleFunc("GET /v1/device-export/mosquitto", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, r.ExportMosquitto())
	})
	s.mux.HandleFunc("GET /v1/device-violations", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, r.Violations())
	})
	s.mux.HandleFunc("DELETE /v1/devices/{id}", func(w http.ResponseWriter, req *http.Request) {
		if err := r.RemoveDevice(req.PathValue("id")); err != nil {
			registryError(w, err)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
}

func answerDevice(w http.ResponseWriter) func(devices.Device, error) {
	return func(d devices.Device, err error) {
		if err != nil {
			registryError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, d)
	}
}

// AddDevice registers a device and returns its secret (shown once).
func (c *Client) AddDevice(ctx context.Context, id string, groups []string) (AddedDevice, error) {
	body, err := json.Marshal(NewDevice{ID: id, Groups: groups})
	if err != nil {
		return AddedDevice{}, err
	}
	var a AddedDevice
	return a, c.deviceDo(ctx, http.MethodPost, "/v1/devices", body, &a)
}

// Devices lists the registered devices.
func (c *Client) Devices(ctx context.Context) ([]devices.Device, error) {
	var ds []devices.Device
	return ds, c.deviceDo(ctx, http.MethodGet, "/v1/devices", nil, &ds)
}

// Device shows one device.
func (c *Client) Device(ctx context.Context, id string) (devices.Device, error) {
	var d devices.Device
	return d, c.deviceDo(ctx, http.MethodGet, "/v1/devices/"+url.PathEscape(id), nil, &d)
}

// SetDeviceDisabled disables (or enables) a device; a disabled device is
// disconnected and refused.
func (c *Client) SetDeviceDisabled(ctx context.Context, id string, disabled bool) (devices.Device, error) {
	op := "/enable"
	if disabled {
		op = "/disable"
	}
	var d devices.Device
	return d, c.deviceDo(ctx, http.MethodPost, "/v1/devices/"+url.PathEscape(id)+op, nil, &d)
}

// RemoveDevice forgets a device and disconnects it.
func (c *Client) RemoveDevice(ctx context.Context, id string) error {
	return c.deviceDo(ctx, http.MethodDelete, "/v1/devices/"+url.PathEscape(id), nil, nil)
}

// ExportMosquitto returns Mosquitto password and ACL files enforcing the
// devices' identities and access rules.
func (c *Client) ExportMosquitto(ctx context.Context) (devices.MosquittoFiles, error) {
	var f devices.MosquittoFiles
	return f, c.deviceDo(ctx, http.MethodGet, "/v1/device-export/mosquitto", nil, &f)
}

func (c *Client) deviceDo(ctx context.Context, method, path string, body []byte, v any) error {
	var r io.Reader
	if body != nil {
		r = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, r)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	return c.registryDo(req, v)
}
