package devices

import "errors"

var (
	// ErrNotConnected is returned by Publish while the client has no connection.
	ErrNotConnected = errors.New("mqtt client not connected")
	// ErrAlreadyStarted is returned by a second Start.
	ErrAlreadyStarted = errors.New("already started")
	// ErrStopped is returned by Start after Stop.
	ErrStopped = errors.New("stopped")
)
