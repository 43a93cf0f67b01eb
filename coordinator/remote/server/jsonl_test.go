package server

import (
	"errors"
	"strings"
	"testing"
)

// ReadJSONLines skips blank lines, numbers lines from 1, names the first
// line that is not JSON and passes f's error through unchanged.
func TestReadJSONLines(t *testing.T) {
	var got []string
	err := ReadJSONLines(strings.NewReader("{\"a\":1}\n\n  2  \n\"x\"\n"), func(line int, b []byte) error {
		got = append(got, strings.Repeat("#", line)+string(b))
		return nil
	})
	if err != nil || strings.Join(got, " ") != `#{"a":1} ###2 ####"x"` {
		t.Fatalf("%q %v", got, err)
	}
	if err := ReadJSONLines(strings.NewReader("1\n{oops\n"), func(int, []byte) error { return nil }); err == nil || err.Error() != ":2: not a JSON value" {
		t.Fatalf("a bad line: %v", err)
	}
	stop := errors.New("stop")
	if err := ReadJSONLines(strings.NewReader("1\n2\n"), func(int, []byte) error { return stop }); err != stop {
		t.Fatalf("f's error: %v", err)
	}
}
