//go:build wasip1

// Command thermostat is an Outpost reactor task written with the Go SDK
// (runtime/sdk) that drives a device through its shadow: given
// {"device":"d1","setpoint":21.5} it reads the device's classic shadow,
// and when the desired setpoint differs it updates desired.setpoint,
// naming the version it read (optimistic concurrency: on a conflict it
// reads again and retries). The device gets the change on
// $aws/things/d1/shadow/update/delta. It answers
// {"device":"d1","version":4,"changed":true}.
//
// Permissions it needs (config or manifest):
//
//	permissions: {shadows: ["*"]}
//
// Build (scripts/build-examples.sh does this):
//
//	GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -o thermostat.wasm ./examples/tasks/go/thermostat
package main

import (
	"encoding/json"
	"errors"
	"fmt"

	"github.com/outpost-edge/outpost/runtime/sdk"
)

type request struct {
	Device   string   `json:"device"`
	Setpoint *float64 `json:"setpoint"`
}

type answer struct {
	Device  string `json:"device"`
	Version int64  `json:"version"`
	Changed bool   `json:"changed"`
}

// document is the part of a shadow document the task reads.
type document struct {
	State struct {
		Desired struct {
			Setpoint *float64 `json:"setpoint"`
		} `json:"desired"`
	} `json:"state"`
	Version int64 `json:"version"`
}

// attempts bounds the retries after a version conflict.
const attempts = 3

func set(in []byte) ([]byte, error) {
	var req request
	if err := json.Unmarshal(in, &req); err != nil || req.Device == "" || req.Setpoint == nil {
		return nil, errors.New(`input: {"device":"d1","setpoint":21.5}, please`)
	}
	for range attempts {
		var cur document
		b, err := sdk.ShadowGet(req.Device, "")
		switch {
		case err == nil:
			if err := json.Unmarshal(b, &cur); err != nil {
				return nil, fmt.Errorf("shadow document: %w", err)
			}
		case !errors.Is(err, sdk.ErrNotFound):
			return nil, fmt.Errorf("read shadow: %w", err)
		}
		if d := cur.State.Desired.Setpoint; d != nil && *d == *req.Setpoint {
			return json.Marshal(answer{Device: req.Device, Version: cur.Version})
		}
		update := map[string]any{"state": map[string]any{"desired": map[string]any{"setpoint": *req.Setpoint}}}
		if cur.Version > 0 {
			update["version"] = cur.Version
		}
		body, _ := json.Marshal(update)
		b, err = sdk.ShadowUpdate(req.Device, "", body)
		if errors.Is(err, sdk.ErrConflict) {
			sdk.Logf(sdk.Info, "shadow of %s changed since version %d: reading it again", req.Device, cur.Version)
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("update shadow: %w", err)
		}
		var acc document
		if err := json.Unmarshal(b, &acc); err != nil {
			return nil, fmt.Errorf("update/accepted: %w", err)
		}
		return json.Marshal(answer{Device: req.Device, Version: acc.Version, Changed: true})
	}
	return nil, fmt.Errorf("shadow of %s: still changing after %d attempts", req.Device, attempts)
}

func init() { sdk.Handle(set) }

func main() {}
