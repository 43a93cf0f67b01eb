// Package configs is the whole config of an Outpost daemon: it composes the
// sections that each part declares beside its code (type, defaults,
// validation), decodes a file strictly and reports every problem with
// file:line and key path, for the daemon's file and deploy manifests alike.
// It also holds the documented example configuration, which is also
// the configuration `outpost run` uses when given none, and the systemd unit.
package configs

import _ "embed"

// Default is configs/outpost.yaml: every option at its default, plus the demo
// echo task and its route.
//
//go:embed outpost.yaml
var Default []byte
