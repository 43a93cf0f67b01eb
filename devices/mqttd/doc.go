// Package mqttd is the embedded MQTT server (3.1.1 and 5): connections,
// sessions (kept across connections, with an expiry), QoS 0, 1 and 2 both
// ways, retained messages, wills, shared subscriptions, and in-process
// publishers and subscribers (the daemon's own client). Who may connect,
// what a client may publish, subscribe to and receive, and what happens to
// a message before it is acknowledged are decided by hooks: the devices
// package installs its identities, access rules, limits and journal there.
//
// It is built for many idle devices on a small host (docs/devices.md,
// "Limits per client, and memory"). A connection holds one goroutine,
// parked on a one-byte read with a shallow stack, which the garbage
// collector shrinks to its 2 KiB minimum; no read buffer between packets
// (a burst borrows one from a pool); and no writer goroutine unless
// something is being written to it. Packets are encoded and decoded with
// mochi-mqtt's packets package.
package mqttd
