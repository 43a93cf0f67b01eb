package devices

import (
	"strings"
	"testing"

	"github.com/outpost-edge/outpost/devices/topic"
)

func TestCovers(t *testing.T) {
	tests := []struct {
		grant, filter string
		want          bool
	}{
		{"devices/d1/#", "devices/d1/in", true},
		{"devices/d1/#", "devices/d1", true},
		{"devices/d1/#", "devices/d1/#", true},
		{"devices/d1/#", "devices/d1/+/x", true},
		{"devices/d1/#", "devices/d2/in", false},
		{"devices/d1/#", "devices/#", false},
		{"devices/d1/#", "devices/+/in", false},
		{"devices/d1/#", "#", false},
		{"fleet/+/cmd", "fleet/a/cmd", true},
		{"fleet/+/cmd", "fleet/+/cmd", true},
		{"fleet/+/cmd", "fleet/#", false},
		{"fleet/+/cmd", "fleet/a/cmd/x", false},
		{"#", "$aws/things/d1/shadow/get", false},
		{"+/things/d1", "$aws/things/d1", false},
		{"$aws/things/d1/shadow/#", "$aws/things/d1/shadow/update", true},
		{"$aws/things/d1/shadow/#", "$aws/things/d2/shadow/update", false},
		{"devices/d1/#", "$share/g/devices/d1/in", true},
		{"devices/d1/#", "$share/g/devices/#", false},
	}
	for _, tc := range tests {
		t.Run(tc.grant+" "+tc.filter, func(t *testing.T) {
			g := grants{sub: [][]string{strings.Split(tc.grant, "/")}}
			if got := g.allowSubscribe(tc.filter, "d1"); got != tc.want {
				t.Errorf("covers = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestGrantID(t *testing.T) {
	g := compileGrants([]Rule{{Publish: []string{"devices/{id}/#", "free/#", "x/pre-{id}-{id}/y"}}})
	tests := []struct {
		id, topic string
		want      bool
	}{
		{"d1", "devices/d1/in", true},
		{"d1", "devices/d2/in", false},
		{"d1", "devices/d1x/in", false},
		{"d1", "x/pre-d1-d1/y", true},
		{"d1", "x/pre-d1-d2/y", false},
		{"d1", "x/pre-d1-/y", false},
		{"d1", "x/pre-{id}-{id}/y", false},
		{"d1", "free/x", true},
		{"a/#", "devices/x/in", false}, // a client id with wildcards widens no grant
		{"a/#", "devices/a/#/in", false},
		{"a/#", "devices//in", false},
		{"a/#", "free/x", true},
	}
	for _, tc := range tests {
		t.Run(tc.id+" "+tc.topic, func(t *testing.T) {
			if got := g.allowPublish(tc.topic, grantID(tc.id)); got != tc.want {
				t.Errorf("allowPublish = %v, want %v", got, tc.want)
			}
		})
	}
}

// FuzzRules checks the rule matcher against MQTT matching: when a grant
// covers a filter, every topic the filter matches is matched by the grant;
// a topic name is granted exactly when the grant's filter matches it.
func FuzzRules(f *testing.F) {
	f.Add("devices/d1/#", "devices/d1/+/x", "devices/d1/a/x")
	f.Add("fleet/+/cmd", "fleet/a/cmd", "fleet/a/cmd")
	f.Add("#", "+/x", "$SYS/x")
	f.Add("a/#", "a", "a")
	f.Fuzz(func(t *testing.T, grant, filter, name string) {
		if topic.CheckFilter(grant) != nil || topic.CheckFilter(filter) != nil || topic.CheckName(name) != nil ||
			strings.Contains(grant, "{id}") { // a placeholder, not a topic level: TestGrantID
			return
		}
		g := grants{pub: [][]string{strings.Split(grant, "/")}, sub: [][]string{strings.Split(grant, "/")}}
		_, gm := topic.Compile(grant).Match(name)
		if g.allowPublish(name, "") != gm {
			t.Fatalf("grant %q, publish %q: allowed %v, MQTT match %v", grant, name, !gm, gm)
		}
		if _, fm := topic.Compile(filter).Match(name); fm && g.allowSubscribe(filter, "") && !gm {
			t.Fatalf("grant %q covers %q, which matches %q, which the grant does not", grant, filter, name)
		}
	})
}
