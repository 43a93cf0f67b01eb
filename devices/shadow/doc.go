// Package shadow is the document model of device shadows, compatible with
// AWS IoT device shadows: the request and reply topics
// ($aws/things/{thing}/shadow/... and .../shadow/name/{name}/...), the
// parsing and checks of update requests (ParseUpdate, with AWS's error
// codes and limits), and the state machine of one shadow (Doc.Update,
// Doc.Delete): desired and reported sections merged field by field (null
// deletes), per-field metadata timestamps, the computed delta, and a
// version for optimistic concurrency. It is pure: no I/O, no clock (the
// caller passes the time), so it is unit-tested and fuzzed on its own.
// devices.Shadows serves it on the broker and keeps it in the state store.
package shadow
