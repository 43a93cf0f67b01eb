#!/usr/bin/env bash
# Builds every example task under examples/tasks into examples/tasks/build/:
# wat/NAME.wat -> NAME.wasm, go/NAME/ -> go-NAME.wasm
# (gitignored): WAT modules with wat2wasm (Debian package wabt), Go modules with
# the Go toolchain for GOOS=wasip1 GOARCH=wasm. Go reactors (directories with
# //go:wasmexport outpost_handle) are built with -buildmode=c-shared, Go
# commands as plain WASI programs.
#
# Usage: scripts/build-examples.sh [output-dir]
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
src="$root/examples/tasks"
out="${1:-$src/build}"
mkdir -p "$out"

command -v wat2wasm >/dev/null || { echo "build-examples: wat2wasm not found (apt-get install wabt)" >&2; exit 1; }
command -v go >/dev/null || { echo "build-examples: go not found" >&2; exit 1; }

for wat in "$src"/wat/*.wat; do
	name="$(basename "$wat" .wat)"
	wat2wasm "$wat" -o "$out/$name.wasm"
	echo "built $out/$name.wasm"
done

cd "$root"
for dir in "$src"/go/*/; do
	name="$(basename "$dir")"
	mode=()
	if grep -q -e '^//go:wasmexport outpost_handle' -e '"github.com/outpost-edge/outpost/runtime/sdk"' "$dir"*.go; then
		mode=(-buildmode=c-shared) # reactor: exports _initialize, not _start
	fi
	GOOS=wasip1 GOARCH=wasm go build "${mode[@]}" -trimpath -o "$out/go-$name.wasm" "./${dir#"$root"/}"
	echo "built $out/go-$name.wasm"
done
