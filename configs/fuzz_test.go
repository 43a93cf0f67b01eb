package configs

import (
	"testing"
)

// FuzzParse checks that no input makes Parse panic and that every failure
// is reported as Problems.
func FuzzParse(f *testing.F) {
	f.Add(Default)
	f.Add([]byte("tasks: [{name: a, module: builtin:echo}]\nroutes: [{topic: 'a/+', task: a, reply: 'b/{1}'}]\n"))
	f.Add([]byte("admin: {listen: x}\nmqtt: {url: 'tcp://h'}\n"))
	f.Add([]byte("[1, 2"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse(data, "f.yaml")
		if err == nil {
			if c == nil {
				t.Fatal("nil config without error")
			}
			return
		}
		if _, ok := err.(Problems); !ok {
			t.Fatalf("error is %T, not Problems: %v", err, err)
		}
	})
}
