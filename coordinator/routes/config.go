package routes

import (
	"fmt"
	"maps"
	"regexp"
	"strconv"
	"strings"

	"github.com/outpost-edge/outpost/devices/topic"
	"github.com/outpost-edge/outpost/internal/confval"
)

// Rule is one entry of the config key routes: messages matching an MQTT
// topic filter go to a task, or up to the cloud (the control plane of the
// cloud link), one target a rule.
type Rule struct {
	Topic string `yaml:"topic"` // MQTT filter, + and # wildcards
	Task  string `yaml:"task"`
	// Cloud sends the messages to the control plane: kept in the node's
	// on-disk message spool first, uploaded over the cloud link.
	Cloud bool `yaml:"cloud"`
	// Reply is the topic the result goes to; {1}, {2}… stand for the wildcard
	// segments of the source topic, {topic} for the whole topic. Empty: no reply.
	Reply string `yaml:"reply"`
	QoS   byte   `yaml:"qos"` // for the subscription and the reply
	// Labels label every call the route makes (placement rules see them
	// as call.labels).
	Labels map[string]string `yaml:"labels"`
}

// Equal says whether r and o are the same route (no labels and empty
// labels are the same).
func (r Rule) Equal(o Rule) bool {
	return r.Topic == o.Topic && r.Task == o.Task && r.Cloud == o.Cloud && r.Reply == o.Reply && r.QoS == o.QoS && maps.Equal(r.Labels, o.Labels)
}

// Validate reports every problem of the rules, listed under c (the routes
// key); hasTask says whether a task of that name is configured, cloud
// whether the cloud link is (cloud.url).
func Validate(c *confval.Checker, rules []Rule, hasTask func(string) bool, cloud bool) {
	for i, r := range rules {
		rc := c.Index("", i)
		if err := topic.CheckFilter(r.Topic); err != nil {
			rc.Errorf("topic", "%v", err)
		}
		switch {
		case r.Cloud && r.Task != "":
			rc.Errorf("cloud", "a route has one target: task %q or the cloud (write two routes for both)", r.Task)
		case r.Cloud && !cloud:
			rc.Errorf("cloud", "the cloud target needs the cloud link (cloud.url)")
		case r.Cloud && r.Reply != "":
			rc.Errorf("reply", "a route to the cloud has no reply")
		case r.Cloud:
		case r.Task == "":
			rc.Errorf("task", "must name a task (or cloud: true)")
		case !hasTask(r.Task):
			rc.Errorf("task", "no task named %q", r.Task)
		}
		if r.QoS > 1 {
			rc.Errorf("qos", "must be 0 or 1")
		}
		if r.Cloud && len(r.Labels) > 0 {
			rc.Errorf("labels", "a route to the cloud makes no call to label")
		}
		rc.Labels("labels", r.Labels)
		if err := CheckReply(r.Reply, r.Topic); err != nil {
			rc.Errorf("reply", "%v", err)
		} else if j, ok := feedsBack(r.Reply, rules); ok {
			rc.Errorf("reply", "every reply on %q would match %s (%q) and start another call: a loop", r.Reply, c.Index("", j).Path(""), rules[j].Topic)
		}
	}
}

// feedsBack reports whether replies rendered from tmpl match a rule's
// filter whatever the source topic was: placeholders are filled with a
// level no filter names, so only wildcards can match them.
func feedsBack(tmpl string, rs []Rule) (int, bool) {
	if tmpl == "" {
		return 0, false
	}
	sample := placeholderRE.ReplaceAllString(tmpl, "\x00")
	for j, r := range rs {
		if topic.CheckFilter(r.Topic) != nil {
			continue
		}
		if _, ok := topic.Compile(r.Topic).Match(sample); ok {
			return j, true
		}
	}
	return 0, false
}

var placeholderRE = regexp.MustCompile(`\{([^}]*)\}`)

// CheckReply reports whether tmpl is a valid reply topic for a route on filter.
func CheckReply(tmpl, filter string) error {
	if tmpl == "" {
		return nil
	}
	if strings.ContainsAny(placeholderRE.ReplaceAllString(tmpl, "x"), "+#") {
		return fmt.Errorf("%q: a reply topic cannot contain wildcards", tmpl)
	}
	n := topic.Wildcards(filter)
	for _, m := range placeholderRE.FindAllStringSubmatch(tmpl, -1) {
		if m[1] == "topic" {
			continue
		}
		k, err := strconv.Atoi(m[1])
		if err != nil || k < 1 || k > n {
			return fmt.Errorf("%q: {%s} must be {topic} or {1}..{%d}, the wildcard segments of %q", tmpl, m[1], n, filter)
		}
	}
	return nil
}
