package runtime

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// wasmImport is one entry of a module's import section.
type wasmImport struct {
	module, name, kind string
}

var errTruncated = errors.New("truncated wasm binary")

// parseImports reads the import section of a wasm binary. wazero's API
// exposes imported functions and memories only; this covers tables and
// globals too. It expects a binary that wazero already compiled.
func parseImports(b []byte) ([]wasmImport, error) {
	if len(b) < 8 || string(b[:4]) != "\x00asm" {
		return nil, errors.New("not a wasm binary")
	}
	r := &reader{b: b[8:]}
	for r.more() {
		id := r.byte()
		size := r.u32()
		if r.err != nil {
			return nil, r.err
		}
		if uint64(size) > uint64(len(r.b)) {
			return nil, errTruncated
		}
		body := r.b[:size]
		r.b = r.b[size:]
		if id != 2 { // import section
			continue
		}
		s := &reader{b: body}
		count := s.u32()
		var out []wasmImport
		for i := uint32(0); i < count && s.err == nil; i++ {
			imp := wasmImport{module: s.name(), name: s.name()}
			switch s.byte() {
			case 0x00: // function: type index
				imp.kind = "function"
				s.u32()
			case 0x01: // table: reftype, limits
				imp.kind = "table"
				s.byte()
				s.limits()
			case 0x02: // memory: limits
				imp.kind = "memory"
				s.limits()
			case 0x03: // global: valtype, mutability
				imp.kind = "global"
				s.byte()
				s.byte()
			case 0x04: // tag: attribute, type index
				imp.kind = "tag"
				s.byte()
				s.u32()
			default:
				return nil, fmt.Errorf("import %s.%s: unknown import kind", imp.module, imp.name)
			}
			out = append(out, imp)
		}
		if s.err != nil {
			return nil, s.err
		}
		return out, nil
	}
	return nil, r.err
}

type reader struct {
	b   []byte
	err error
}

func (r *reader) more() bool { return r.err == nil && len(r.b) > 0 }

func (r *reader) byte() byte {
	if r.err != nil {
		return 0
	}
	if len(r.b) == 0 {
		r.err = errTruncated
		return 0
	}
	c := r.b[0]
	r.b = r.b[1:]
	return c
}

func (r *reader) u32() uint32 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.b)
	if n <= 0 || v > 1<<32-1 {
		r.err = errTruncated
		return 0
	}
	r.b = r.b[n:]
	return uint32(v)
}

func (r *reader) u64() {
	if r.err != nil {
		return
	}
	_, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.err = errTruncated
		return
	}
	r.b = r.b[n:]
}

func (r *reader) name() string {
	n := r.u32()
	if r.err != nil {
		return ""
	}
	if uint64(n) > uint64(len(r.b)) {
		r.err = errTruncated
		return ""
	}
	s := string(r.b[:n])
	r.b = r.b[n:]
	return s
}

func (r *reader) limits() {
	flags := r.byte()
	r.u64() // min
	if flags&1 != 0 {
		r.u64() // max
	}
}
