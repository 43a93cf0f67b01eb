// Package devices owns the MQTT side of the edge: the embedded broker, the
// daemon's client of whichever broker is in use, the device registry (ids
// and bcrypt secrets in the state store), the broker's access rules
// (default deny: a device's own namespace, its groups' grants), presence
// events (AWS IoT lifecycle events, presence.go) and the local shadow
// service (AWS IoT device shadows, shadows.go; the documents in
// devices/shadow).
//
// The embedded broker's server is devices/mqttd (MQTT 3.1.1 and 5, on TCP,
// TLS and WebSocket listeners owned here); this package gives it its hooks.
// The daemon's client of an external broker is paho (MQTT 3.1.1, Client);
// its client of the embedded broker is the server's inline client
// (InlineClient: in process, no TCP hop). Both offer the same operations
// to the daemon.
//
// Both the broker and the client follow the component lifecycle: a
// constructor without side effects, Start, Stop (safe after a failed Start
// and when called twice).
package devices
