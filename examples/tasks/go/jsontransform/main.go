//go:build wasip1

// Command jsontransform is an Outpost reactor task written in Go (ABI v0, see
// docs/abi.md): it turns a JSON document of temperature readings into a
// summary, and reports bad input with the outpost.fail host function.
//
//	in:  {"device":"d1","celsius":[20.5,21]}
//	out: {"device":"d1","fahrenheit":[68.9,69.8],"max_c":21,"avg_c":20.75}
//
// Build (scripts/build-examples.sh does this):
//
//	GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -o jsontransform.wasm ./examples/tasks/go/jsontransform
package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"unsafe"
)

type reading struct {
	Device  string    `json:"device"`
	Celsius []float64 `json:"celsius"`
}

type summary struct {
	Device     string    `json:"device"`
	Fahrenheit []float64 `json:"fahrenheit"`
	MaxC       float64   `json:"max_c"`
	AvgC       float64   `json:"avg_c"`
}

// transform is the task's logic, free of ABI details.
func transform(input []byte) ([]byte, error) {
	var r reading
	if err := json.Unmarshal(input, &r); err != nil {
		return nil, fmt.Errorf("bad input: %w", err)
	}
	if r.Device == "" {
		return nil, errors.New("bad input: no device")
	}
	if len(r.Celsius) == 0 {
		return nil, errors.New("bad input: no celsius readings")
	}
	s := summary{Device: r.Device, Fahrenheit: make([]float64, len(r.Celsius)), MaxC: math.Inf(-1)}
	sum := 0.0
	for i, c := range r.Celsius {
		s.Fahrenheit[i] = round2(c*9/5 + 32)
		s.MaxC = max(s.MaxC, c)
		sum += c
	}
	s.AvgC = round2(sum / float64(len(r.Celsius)))
	return json.Marshal(s)
}

func round2(f float64) float64 { return math.Round(f*100) / 100 }

// ABI v0 glue: see docs/abi.md.

var in, out []byte

//go:wasmimport outpost fail
func outpostFail(ptr unsafe.Pointer, size uint32)

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
	res, err := transform(input)
	if err != nil {
		msg := err.Error()
		outpostFail(unsafe.Pointer(unsafe.StringData(msg)), uint32(len(msg)))
		return 0 // ignored by the host after outpost.fail
	}
	out = res
	return uint64(uintptr(unsafe.Pointer(unsafe.SliceData(out))))<<32 | uint64(len(out))
}

func main() {}
