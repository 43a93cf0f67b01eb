// Package sdk is the Go SDK for Outpost task authors: it implements the
// reactor side of the task ABI (docs/abi.md) and wraps the host API of
// module "outpost" in plain Go functions.
//
// A task registers its handler in init (a reactor built with
// -buildmode=c-shared runs package initialization in _initialize, never
// main):
//
//	//go:build wasip1
//
//	package main
//
//	import "github.com/outpost-edge/outpost/runtime/sdk"
//
//	func init() {
//		sdk.Handle(func(in []byte) ([]byte, error) {
//			sdk.Log(sdk.Info, "called")
//			return in, nil
//		})
//	}
//
//	func main() {}
//
// Build it with:
//
//	GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -o task.wasm .
//
// Every file except this one is built only for GOOS=wasip1, so host builds
// (go build ./..., go vet ./...) skip the package.
//
// State: globals persist between calls served by the same pooled instance
// (see docs/abi.md, "Pooling and state"); use them for caches only.
package sdk
