//go:build wasip1

// Command echo is an Outpost reactor task written in Go (ABI v0, see
// docs/abi.md) without any SDK: it exports outpost_alloc and outpost_handle
// with //go:wasmexport and returns its input unchanged.
//
// Build (scripts/build-examples.sh does this):
//
//	GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -o echo.wasm ./examples/tasks/go/echo
//
// -buildmode=c-shared makes a WASI reactor: the module exports _initialize
// (which the host calls once, to start the Go runtime) instead of _start.
package main

import "unsafe"

// in is the input buffer handed to the host by outpost_alloc. It is a global,
// so the garbage collector keeps it (Go's collector does not move objects);
// it is reused across calls and only grows.
var in []byte

// out holds the last output; it must stay valid until the next call.
var out []byte

//go:wasmexport outpost_alloc
func outpostAlloc(size uint32) uint32 {
	if uint32(cap(in)) < size || cap(in) == 0 {
		in = make([]byte, max(size, 256))
	}
	in = in[:size]
	return uint32(uintptr(unsafe.Pointer(unsafe.SliceData(in[:cap(in)]))))
}

//go:wasmexport outpost_handle
func outpostHandle(ptr unsafe.Pointer, size uint32) uint64 {
	input := unsafe.Slice((*byte)(ptr), size)
	out = append(out[:0], input...)
	return packResult(out)
}

// packResult encodes an output slice as (ptr << 32) | len.
func packResult(b []byte) uint64 {
	if len(b) == 0 {
		return 0
	}
	return uint64(uintptr(unsafe.Pointer(unsafe.SliceData(b))))<<32 | uint64(len(b))
}

func main() {}
