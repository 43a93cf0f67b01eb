package routes

import (
	"reflect"
	"testing"

	"github.com/outpost-edge/outpost/devices/topic"
)

func TestMatch(t *testing.T) {
	tests := []struct {
		filter, topic string
		ok            bool
		wild          []string
	}{
		{"devices/+/in", "devices/d1/in", true, []string{"d1"}},
		{"devices/+/in", "devices/d1/out", false, nil},
		{"devices/+/in", "devices/d1/in/x", false, nil},
		{"devices/+/in", "devices//in", true, []string{""}},
		{"devices/#", "devices/a/b/c", true, []string{"a/b/c"}},
		{"devices/#", "devices", true, []string{""}},
		{"devices/#", "other/a", false, nil},
		{"#", "a/b", true, []string{"a/b"}},
		{"#", "$SYS/x", false, nil},
		{"+/x", "$SYS/x", false, nil},
		{"$SYS/#", "$SYS/x", true, []string{"x"}},
		{"a/+/+/#", "a/1/2", true, []string{"1", "2", ""}},
		{"a/b", "a/b", true, nil},
		{"a/b", "a", false, nil},
	}
	for _, tt := range tests {
		t.Run(tt.filter+"~"+tt.topic, func(t *testing.T) {
			tab := New([]Rule{{Topic: tt.filter, Task: "t"}})
			ms := tab.Match(tt.topic)
			if (len(ms) == 1) != tt.ok {
				t.Fatalf("matched %d routes, want ok=%v", len(ms), tt.ok)
			}
			if tt.ok && !reflect.DeepEqual(ms[0].Wild, tt.wild) {
				t.Errorf("wild = %q, want %q", ms[0].Wild, tt.wild)
			}
		})
	}
}

func TestReply(t *testing.T) {
	tests := []struct{ filter, reply, topic, want string }{
		{"devices/+/in", "devices/{1}/out", "devices/d1/in", "devices/d1/out"},
		{"site/+/+/in", "out/{2}/{1}", "site/s1/d9/in", "out/d9/s1"},
		{"a/#", "r/{1}", "a/x/y", "r/x/y"},
		{"a/+", "echo/{topic}", "a/b", "echo/a/b"},
		{"a/+", "fixed/topic", "a/b", "fixed/topic"},
		{"a/+", "", "a/b", ""},
	}
	for _, tt := range tests {
		tab := New([]Rule{{Topic: tt.filter, Task: "t", Reply: tt.reply}})
		ms := tab.Match(tt.topic)
		if len(ms) != 1 {
			t.Fatalf("%s did not match %s", tt.filter, tt.topic)
		}
		if got := ms[0].ReplyTopic(tt.topic); got != tt.want {
			t.Errorf("%s with %s on %s = %q, want %q", tt.filter, tt.reply, tt.topic, got, tt.want)
		}
	}
}

func TestSubscriptions(t *testing.T) {
	tab := New([]Rule{
		{Topic: "a/+", Task: "x", QoS: 0},
		{Topic: "a/+", Task: "y", QoS: 1},
		{Topic: "b/#", Task: "x"},
	})
	if got := tab.Subscriptions(); !reflect.DeepEqual(got, map[string]byte{"a/+": 1, "b/#": 0}) {
		t.Errorf("subscriptions %v", got)
	}
	if n := len(tab.Match("a/1")); n != 2 {
		t.Errorf("a/1 matched %d routes, want both", n)
	}
}

func FuzzMatch(f *testing.F) {
	f.Add("devices/+/in", "devices/d1/in", "r/{1}")
	f.Add("#", "$SYS/a", "{topic}")
	f.Add("a/+/#", "a/b/c/d", "{2}/{1}")
	f.Fuzz(func(t *testing.T, filter, name, reply string) {
		if topic.CheckFilter(filter) != nil || CheckReply(reply, filter) != nil {
			return
		}
		tab := New([]Rule{{Topic: filter, Task: "t", Reply: reply}})
		for _, m := range tab.Match(name) {
			if len(m.Wild) != topic.Wildcards(filter) {
				t.Fatalf("%q on %q: %d wildcard values for %d wildcards", filter, name, len(m.Wild), topic.Wildcards(filter))
			}
			_ = m.ReplyTopic(name)
		}
	})
}
