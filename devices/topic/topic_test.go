package topic

import "testing"

func TestCheckName(t *testing.T) {
	for name, ok := range map[string]bool{
		"a/b": true, "devices/d1/out": true, "/": true,
		"": false, "a/+": false, "a/#": false, "counter/temp+": false, "x#y": false, "a\x00b": false,
	} {
		if err := CheckName(name); (err == nil) != ok {
			t.Errorf("CheckName(%q) = %v, want ok=%v", name, err, ok)
		}
	}
}

func TestCheckFilter(t *testing.T) {
	for f, ok := range map[string]bool{
		"a/+/b": true, "#": true, "a/#": true, "+": true,
		"": false, "a/#/b": false, "a/b+": false, "a#": false,
	} {
		if err := CheckFilter(f); (err == nil) != ok {
			t.Errorf("CheckFilter(%q) = %v, want ok=%v", f, err, ok)
		}
	}
}
