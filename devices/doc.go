// Package devices owns the MQTT side of the edge: the embedded broker, the
// daemon's client of whichever broker is in use, and (in later issues) the
// device registry, credentials, ACLs, shadows and presence.
//
// The embedded broker is mochi-mqtt (MQTT 3.1.1 and 5 on one TCP listener);
// the daemon's client is paho (MQTT 3.1.1) and talks to the embedded broker
// over loopback exactly as it talks to an external one, so both modes share
// one code path.
//
// Both the broker and the client follow the component lifecycle: a
// constructor without side effects, Start, Stop (safe after a failed Start
// and when called twice).
package devices
