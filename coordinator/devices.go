package coordinator

import (
	"errors"
	"fmt"

	"github.com/outpost-edge/outpost/coordinator/admin"
	"github.com/outpost-edge/outpost/devices"
)

// deviceAdmin serves the device registry on the admin API: it maps the
// registry's errors to the API's, and disconnects a device the operator
// disabled or removed.
type deviceAdmin struct{ c *Coordinator }

var _ admin.DeviceRegistry = deviceAdmin{}

func (d deviceAdmin) AddDevice(id string, groups []string) (devices.Device, string, error) {
	dev, secret, err := d.c.devices.Add(id, groups)
	return dev, secret, adminError(err)
}

func (d deviceAdmin) Devices() []devices.Device { return d.c.devices.List() }

func (d deviceAdmin) Device(id string) (devices.Device, error) {
	dev, err := d.c.devices.Get(id)
	return dev, adminError(err)
}

func (d deviceAdmin) SetDeviceDisabled(id string, disabled bool) (devices.Device, error) {
	dev, err := d.c.devices.SetDisabled(id, disabled)
	if err == nil && disabled && d.c.broker != nil {
		d.c.broker.Kick(id)
	}
	return dev, adminError(err)
}

func (d deviceAdmin) RemoveDevice(id string) error {
	err := d.c.devices.Remove(id)
	if err == nil && d.c.broker != nil {
		d.c.broker.Forget(id)
	}
	if err == nil {
		if ferr := d.c.shadows.Forget(id); ferr != nil {
			d.c.log.Warn("shadows of a removed device not deleted", "device", id, "err", ferr)
		}
	}
	return adminError(err)
}

// adminError wraps a registry error in the admin API's error kind.
func adminError(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, devices.ErrUnknownDevice):
		return fmt.Errorf("%w: %w", admin.ErrNotFound, err)
	case errors.Is(err, devices.ErrDeviceExists):
		return fmt.Errorf("%w: %w", admin.ErrConflict, err)
	case errors.Is(err, devices.ErrInvalidDevice):
		return fmt.Errorf("%w: %w", admin.ErrInvalid, err)
	}
	return fmt.Errorf("%w: %w", admin.ErrInternal, err)
}

// ExportMosquitto exports the registry under the configured groups' rules.
// Violations are the embedded broker's; an external broker's refusals are
// not seen: none.
func (d deviceAdmin) Violations() []devices.Violation {
	if d.c.broker == nil {
		return []devices.Violation{}
	}
	return d.c.broker.Violations()
}

func (d deviceAdmin) ExportMosquitto() devices.MosquittoFiles {
	return d.c.devices.ExportMosquitto(d.c.cfg.Load().MQTT.Broker.Groups)
}
