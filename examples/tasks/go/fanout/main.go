//go:build wasip1

// Command fanout is a task that fans out and suspends (docs/abi.md,
// "Suspending a call"), with the Go SDK: it upper-cases each word of its
// input with a call of the task "upper" (examples/tasks/wat/upper.wat),
// all submitted at once, suspends until they are done, and joins the
// results: "hello big world" -> "HELLO BIG WORLD". A call that cannot
// suspend (not journaled) gets the same output by awaiting.
package main

import (
	"bytes"
	"fmt"

	"github.com/outpost-edge/outpost/runtime/sdk"
)

// progress is the state kept while suspended.
type progress struct {
	Words int `json:"words"`
}

func init() {
	sdk.Handle(func(in []byte) ([]byte, error) {
		words := bytes.Fields(in)
		if len(words) == 0 || len(words) > 64 {
			return nil, fmt.Errorf("want 1 to 64 words, got %d", len(words))
		}
		handles := make([]sdk.Pending, len(words))
		for i, w := range words {
			h, err := sdk.CallAsync("upper", w)
			if err != nil {
				return nil, fmt.Errorf("call upper: %w", err)
			}
			handles[i] = h
		}
		return sdk.SuspendJSON(progress{Words: len(words)}, handles...)
	})
	sdk.OnResumeJSON(func(p progress, results []sdk.Result) ([]byte, error) {
		if len(results) != p.Words {
			return nil, fmt.Errorf("%d results for %d words", len(results), p.Words)
		}
		out := make([][]byte, len(results))
		for i, r := range results {
			if r.Err != nil {
				return nil, fmt.Errorf("upper of word %d: %w", i+1, r.Err)
			}
			out[i] = r.Output
		}
		return bytes.Join(out, []byte(" ")), nil
	})
}

func main() {}
