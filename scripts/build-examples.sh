#!/usr/bin/env bash
# Builds every example task under examples/tasks into examples/tasks/build/:
# wat/NAME.wat -> NAME.wasm, go/NAME/ -> go-NAME.wasm, c/NAME/ -> c-NAME.wasm
# (gitignored): WAT modules with wat2wasm (Debian package wabt), Go modules with
# the Go toolchain for GOOS=wasip1 GOARCH=wasm, C modules with clang-14 for
# wasm32-wasi (Debian packages clang-14 lld-14 wasi-libc
# libclang-rt-14-dev-wasm32; CLANG=... picks another clang). Go reactors
# (directories with //go:wasmexport outpost_handle) are built with
# -buildmode=c-shared, Go commands as plain WASI programs; C tasks are reactors
# (-mexec-model=reactor) built from the .c files of their directory with
# examples/tasks/c/outpost.h. Rust (rust/NAME/lib.rs -> rust-NAME.wasm) and
# AssemblyScript (assemblyscript/NAME/NAME.ts -> as-NAME.wasm): Rust with a
# rustc that has the wasm32-unknown-unknown standard library (Debian packages
# rustc libstd-rust-dev-wasm32; RUSTC=... picks the rustc), AssemblyScript
# with asc (npm install -g assemblyscript).
#
# Each language is built when its tools are there; a language whose tools
# are missing is skipped with the reason and the packages to install, listed
# again at the end. With --strict (scripts/test.sh) a skip is an error.
#
# Usage: scripts/build-examples.sh [--strict] [output-dir]
set -euo pipefail

strict=false
if [ "${1:-}" = "--strict" ]; then
	strict=true
	shift
fi
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
src="$root/examples/tasks"
out="${1:-$src/build}"
mkdir -p "$out"

skipped=()
skip() { # LANGUAGE REASON
	echo "build-examples: skipping the $1 examples: $2" >&2
	skipped+=("$1 ($2)")
}

# WAT: wat2wasm (Debian wabt).
if command -v wat2wasm >/dev/null; then
	for wat in "$src"/wat/*.wat; do
		name="$(basename "$wat" .wat)"
		wat2wasm "$wat" -o "$out/$name.wasm"
		echo "built $out/$name.wasm"
	done
else
	skip WAT "wat2wasm not found; apt-get install wabt"
fi

# Go: the Go toolchain (GOOS=wasip1 GOARCH=wasm).
cd "$root"
if command -v go >/dev/null; then
	for dir in "$src"/go/*/; do
		name="$(basename "$dir")"
		mode=()
		if grep -q -e '^//go:wasmexport outpost_handle' -e '"github.com/outpost-edge/outpost/runtime/sdk"' "$dir"*.go; then
			mode=(-buildmode=c-shared) # reactor: exports _initialize, not _start
		fi
		GOOS=wasip1 GOARCH=wasm go build "${mode[@]}" -trimpath -o "$out/go-$name.wasm" "./${dir#"$root"/}"
		echo "built $out/go-$name.wasm"
	done
else
	skip Go "go not found"
fi

# C: clang with the wasm32 target, wasm-ld, wasi-libc and the wasm32
# compiler-rt builtins, each checked here so that a missing one is named rather
# than reported as a confusing compile or link error. (clang -print-file-name
# prints the bare name when it does not find the file; clang -print-prog-name
# prints the path of the linker it would run, or the bare name to look up in
# PATH.)
clang="${CLANG:-clang-14}"
c_packages="apt-get install clang-14 lld-14 wasi-libc libclang-rt-14-dev-wasm32"
c_missing() {
	if ! command -v "$clang" >/dev/null; then
		echo "$clang not found"
	elif ! "$clang" --print-targets 2>/dev/null | grep -qw wasm32; then
		echo "$clang has no wasm32 target"
	elif ! command -v "$("$clang" -print-prog-name=wasm-ld)" >/dev/null; then
		echo "wasm-ld not found for $clang (Debian lld-14)"
	elif [ ! -f "$("$clang" --target=wasm32-wasi -print-file-name=crt1-reactor.o)" ]; then
		echo "wasi-libc not found for $clang (no crt1-reactor.o in its wasm32-wasi sysroot)"
	elif [ ! -f "$("$clang" --target=wasm32-wasi -rtlib=compiler-rt -print-libgcc-file-name)" ]; then
		echo "the wasm32 compiler-rt builtins are missing"
	fi
}
why=$(c_missing)
if [ -z "$why" ]; then
	for dir in "$src"/c/*/; do
		name="$(basename "$dir")"
		# -mexec-model=reactor: exports _initialize (C constructors), not _start.
		# --strip-debug drops wasi-libc's DWARF (three quarters of the module).
		"$clang" --target=wasm32-wasi -mexec-model=reactor -O2 -Wall -Wextra -Werror \
			-I "$src/c" -Wl,--strip-debug -o "$out/c-$name.wasm" "$dir"*.c
		echo "built $out/c-$name.wasm"
	done
else
	skip C "$why; $c_packages"
fi

# Rust: the first rustc (RUSTC, then rustc on PATH, then Debian's) whose
# sysroot has the wasm32-unknown-unknown standard library.
rustc=""
for r in ${RUSTC:-} rustc /usr/bin/rustc; do
	if command -v "$r" >/dev/null && [ -d "$("$r" --print sysroot)/lib/rustlib/wasm32-unknown-unknown/lib" ]; then
		rustc="$r"
		break
	fi
done
if [ -z "$rustc" ]; then
	skip Rust "no rustc with the wasm32-unknown-unknown standard library; apt-get install rustc libstd-rust-dev-wasm32"
else
	for dir in "$src"/rust/*/; do
		name="$(basename "$dir")"
		"$rustc" --edition 2021 --crate-type cdylib --target wasm32-unknown-unknown -C opt-level=s -C strip=symbols \
			-o "$out/rust-$name.wasm" "$dir/lib.rs"
		echo "built $out/rust-$name.wasm"
	done
fi

# AssemblyScript: --use abort= drops the env.abort import (the host refuses
# it; a failed check traps instead); --exportStart _initialize runs the top
# level when an instance is made (docs/abi.md "Other languages").
if ! command -v asc >/dev/null; then
	skip AssemblyScript "asc not found; npm install -g assemblyscript"
else
	for dir in "$src"/assemblyscript/*/; do
		name="$(basename "$dir")"
		asc "$dir/$name.ts" -o "$out/as-$name.wasm" -O --runtime stub --use abort= --exportStart _initialize
		echo "built $out/as-$name.wasm"
	done
fi

if [ ${#skipped[@]} -gt 0 ]; then
	echo "build-examples: skipped ${#skipped[@]} language(s):" >&2
	printf '  %s\n' "${skipped[@]}" >&2
	if $strict; then
		exit 1
	fi
fi
