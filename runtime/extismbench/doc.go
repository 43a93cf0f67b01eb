// Package extismbench compares Outpost with Extism's Go SDK (a plugin system
// on wazero that a Go user might pick instead): BenchmarkNoopThroughput runs a
// no-op call on every core through each, in the same run.
//
// It is a module of its own so that Extism and its dependencies stay out of
// Outpost's go.mod; `go test ./...` of the main module skips it and
// scripts/bench.sh runs it (suite "extism"):
//
//	cd runtime/extismbench && go test -run '^$' -bench . -cpu 2
package extismbench
