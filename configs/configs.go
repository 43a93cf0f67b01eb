// Package configs holds the documented example configuration, which is also
// the configuration `outpost run` uses when given none, and the systemd unit.
package configs

import _ "embed"

// Default is configs/outpost.yaml: every option at its default, plus the demo
// echo task and its route.
//
//go:embed outpost.yaml
var Default []byte
