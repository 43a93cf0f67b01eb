//go:build wasip1

// Command visits is an Outpost reactor task written with the Go SDK
// (runtime/sdk): it counts visits per name in the task's kv namespace,
// publishes the new count to visits/NAME, asks the task "echo" to echo a
// greeting, logs, and answers
// {"name":"ada","count":3,"greeting":"hello ada","call":"<call id>"}.
//
// Permissions it needs (config or manifest):
//
//	permissions: {publish: ["visits/+"], call: [echo], kv_quota: 64KiB}
//
// Build (scripts/build-examples.sh does this):
//
//	GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -o visits.wasm ./examples/tasks/go/visits
package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"

	"github.com/outpost-edge/outpost/runtime/sdk"
)

type answer struct {
	Name     string `json:"name"`
	Count    int    `json:"count"`
	Greeting string `json:"greeting"`
	Call     string `json:"call"`
}

func visit(in []byte) ([]byte, error) {
	name := string(in)
	if name == "" {
		return nil, errors.New("input: a name, please")
	}
	count := 0
	v, err := sdk.KVGet(in)
	switch {
	case err == nil:
		count, _ = strconv.Atoi(string(v))
	case !errors.Is(err, sdk.ErrNotFound):
		return nil, fmt.Errorf("read count: %w", err)
	}
	count++
	if err := sdk.KVPut(in, []byte(strconv.Itoa(count))); err != nil {
		return nil, fmt.Errorf("store count: %w", err)
	}
	if err := sdk.Publish("visits/"+name, []byte(strconv.Itoa(count)), 0); err != nil {
		sdk.Logf(sdk.Warn, "publish: %v", err)
	}
	greeting, err := sdk.Call("echo", []byte("hello "+name))
	if err != nil {
		return nil, fmt.Errorf("call echo: %w", err)
	}
	meta := sdk.Meta()
	sdk.Logf(sdk.Info, "visit %d of %s", count, name)
	return json.Marshal(answer{Name: name, Count: count, Greeting: string(greeting), Call: meta.ID})
}

func init() { sdk.Handle(visit) }

func main() {}
