package devices

import "errors"

var (
	// ErrNotConnected is returned by Publish while the client has no connection.
	ErrNotConnected = errors.New("mqtt client not connected")
	// ErrAlreadyStarted is returned by a second Start.
	ErrAlreadyStarted = errors.New("already started")
	// ErrTooLarge is returned by Publish for a message larger than the
	// broker's limit (MQTTConfig.MessageLimit); nothing is sent.
	ErrTooLarge = errors.New("message too large for the broker")
	// ErrNotRunning is returned by a reload of a broker not started or stopped.
	ErrNotRunning = errors.New("not running")
	// ErrStopped is returned by Start after Stop.
	ErrStopped = errors.New("stopped")
	// ErrUnknownDevice: no device has that id.
	ErrUnknownDevice = errors.New("no such device")
	// ErrDeviceExists: Add of a registered id.
	ErrDeviceExists = errors.New("device already registered")
	// ErrInvalidDevice: a device id that cannot be used.
	ErrInvalidDevice = errors.New("invalid device")
)
