// Package wasmtest helps tests make wasm modules.
package wasmtest

import "bytes"

// Variant returns module (a wasm binary) with a custom section named tag
// appended: a module that behaves the same with other bytes, so another
// digest and another compiled code object. tag is at most 120 bytes.
func Variant(module []byte, tag string) []byte {
	if len(tag) > 120 {
		panic("wasmtest: tag longer than 120 bytes")
	}
	// id 0 (custom), size, name length, name, one byte of content (wazero
	// refuses an empty custom section).
	sec := append([]byte{0, byte(len(tag) + 2), byte(len(tag))}, tag...)
	return append(append(bytes.Clone(module), sec...), 1)
}
