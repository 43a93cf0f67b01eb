package telemetry

import (
	"fmt"
	"net"
	"regexp"
	"strings"
	"time"

	"github.com/outpost-edge/outpost/internal/confval"
	"github.com/outpost-edge/outpost/telemetry/cluster"
	"github.com/outpost-edge/outpost/telemetry/gnmi"
	"github.com/outpost-edge/outpost/telemetry/gnmiserver"
	"github.com/outpost-edge/outpost/telemetry/model"
	"github.com/outpost-edge/outpost/telemetry/snmp"
	"github.com/outpost-edge/outpost/telemetry/tsdb"
)

// Config configures collection from network gear (gNMI, SNMP), the local
// time-series store and the gNMI server (config key telemetry). It is off by
// default: no targets, no trap receiver, no gNMI server until
// telemetry.gnmi_server.listen is set.
//
// Zero values mean "default": WithDefaults fills them, so a Config built in
// code or decoded from a file behaves the same.
type Config struct {
	Store      tsdb.Config       `yaml:"store"`
	GNMI       gnmi.Config       `yaml:"gnmi"`
	SNMP       snmp.Config       `yaml:"snmp"`
	GNMIServer gnmiserver.Config `yaml:"gnmi_server"`
	MQTT       []PublishRule     `yaml:"mqtt"`
	Triggers   []TriggerRule     `yaml:"triggers"`
	Cluster    cluster.Config    `yaml:"cluster"`
}

// PublishRule sends matching updates to MQTT.
type PublishRule struct {
	Target string   `yaml:"target"` // glob on the target name; empty: all
	Paths  []string `yaml:"paths"`  // path patterns (* one element, ... any rest)
	// Topic may use {target} and {path}; default telemetry/{target}{path}.
	Topic string `yaml:"topic"`
	QoS   byte   `yaml:"qos"`
	// MinInterval rate-limits each series: at most one message per interval.
	MinInterval confval.Duration `yaml:"min_interval"`
}

// TriggerRule runs a task when a matching update meets a condition.
type TriggerRule struct {
	Task   string `yaml:"task"`
	Target string `yaml:"target"` // glob on the target name; empty: all
	Path   string `yaml:"path"`   // path pattern
	// Condition compares the value: "> 100", "<= 0.5", "== up", "!= 0", "changed"; empty: every update.
	Condition   string           `yaml:"condition"`
	MinInterval confval.Duration `yaml:"min_interval"`
}

// WithDefaults returns t with every zero value replaced by its default; t's
// lists are not modified.
func (t Config) WithDefaults() Config {
	t.Store = t.Store.WithDefaults()
	t.GNMI = t.GNMI.WithDefaults()
	t.SNMP = t.SNMP.WithDefaults()
	t.Cluster = t.Cluster.WithDefaults(t.GNMIServer.Listen)
	t.MQTT = append([]PublishRule(nil), t.MQTT...)
	for i := range t.MQTT {
		if t.MQTT[i].Topic == "" {
			t.MQTT[i].Topic = "telemetry/{target}{path}"
		}
		t.MQTT[i].MinInterval.SetDefault(time.Second)
	}
	return t
}

// Resolve makes the credential and TLS files absolute against dir, the
// config file's directory, and derives what comes from the node's id.
func (t *Config) Resolve(dir, nodeID string) {
	t.GNMI.Resolve(dir)
	t.SNMP.Resolve(dir, nodeID)
	t.GNMIServer.Resolve(dir)
	if t.Cluster.Name == "" {
		t.Cluster.Name = nodeID
	}
	confval.Rel(dir, &t.Cluster.CAFile)
}

// peerTarget is how this instance reaches the others' gNMI servers: as its
// own server is reached (TLS, checked against cluster.ca_file, and the
// username and password, which the instances of a cluster share).
func (t Config) peerTarget() gnmi.Target {
	g := t.GNMIServer
	return gnmi.Target{TLS: gnmi.TLS{Enabled: g.TLS.CertFile != "", CAFile: t.Cluster.CAFile}, Username: g.Username, PasswordFile: g.PasswordFile}
}

// GNMIServerExpiry is the gNMI server's expire_after for these targets (see
// gnmiserver.Config.Expiry).
func (t Config) GNMIServerExpiry() time.Duration {
	return t.GNMIServer.Expiry(t.collectionInterval())
}

// collectionInterval is the longest interval at which a configured target
// sends (SNMP poll interval, gNMI sample or poll interval).
func (t Config) collectionInterval() time.Duration {
	return max(t.GNMI.Interval(), t.SNMP.Interval())
}

var (
	targetNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$`)
	conditionRE  = regexp.MustCompile(`^(changed|(>|>=|<|<=|==|!=)\s*\S.*)$`)
)

// Validate reports every problem of the telemetry settings, with defaults
// applied as the daemon applies them. hasTask says whether a task of that
// name is configured (triggers name tasks).
func (t Config) Validate(c *confval.Checker, hasTask func(string) bool) {
	t = t.WithDefaults()
	t.Store.Validate(c.At("store"))

	// A target is collected once: names and addresses are unique across
	// gNMI and SNMP.
	// A target is its address and, for SNMP, the community or v3 user and
	// context it polls with: one agent may serve several devices (snmpsim,
	// proxies, chassis with a context per module) and v2c beside v3.
	names := map[string]string{} // target name → key path of its first use
	addrs := map[string]string{}
	target := func(tc *confval.Checker, name, addr, defPort, who string) {
		switch {
		case name == "":
			tc.Errorf("name", "must not be empty")
		case !targetNameRE.MatchString(name):
			tc.Errorf("name", "%q is not a target name (letters, digits, '_', '.', ':', '-'; at most 128)", name)
		case names[name] != "":
			tc.Errorf("name", "duplicate target %q (first at %s): a target is collected once", name, names[name])
		default:
			names[name] = tc.Path("")
		}
		if addr == "" {
			tc.Errorf("address", "must not be empty")
			return
		}
		if defPort != "" {
			if _, _, err := net.SplitHostPort(addr); err != nil {
				addr = net.JoinHostPort(addr, defPort)
			}
		}
		tc.HostPort("address", addr)
		if prev := addrs[addr+who]; prev != "" {
			tc.Errorf("address", "%s%s is already collected by %s", addr, who, prev)
		} else {
			addrs[addr+who] = tc.Path("")
		}
	}
	for i, g := range t.GNMI.Targets {
		tc := c.At("gnmi").Index("targets", i)
		target(tc, g.Name, g.Address, "", "")
		g.Validate(tc)
	}
	t.SNMP.Validate(c.At("snmp"))
	for i, s := range t.SNMP.Targets {
		tc := c.At("snmp").Index("targets", i)
		who := fmt.Sprintf(" with community %q", s.Community)
		if s.Version == "3" {
			who = fmt.Sprintf(" as v3 user %q in context %q", s.V3.Username, s.V3.ContextName)
		}
		target(tc, s.Name, s.Address, "161", who)
		s.Validate(tc)
	}
	t.GNMIServer.Validate(c.At("gnmi_server"), t.collectionInterval())
	g := t.GNMIServer
	t.Cluster.Validate(c.At("cluster"), g.Listen, g.TLS.CertFile != "")

	for i, m := range t.MQTT {
		mc := c.Index("mqtt", i)
		if len(m.Paths) == 0 {
			mc.Errorf("paths", "must list at least one path pattern")
		}
		for k, path := range m.Paths {
			if err := model.CheckPath(path); err != nil {
				mc.Index("paths", k).Errorf("", "%v", err)
			}
		}
		if m.QoS > 1 {
			mc.Errorf("qos", "must be 0 or 1")
		}
		if strings.ContainsAny(strings.NewReplacer("{target}", "", "{path}", "").Replace(m.Topic), "+#{}") {
			mc.Errorf("topic", "%q: only {target} and {path} may be substituted; no wildcards", m.Topic)
		}
	}
	for i, tg := range t.Triggers {
		tc := c.Index("triggers", i)
		if tg.Task == "" {
			tc.Errorf("task", "must name a task")
		} else if !hasTask(tg.Task) {
			tc.Errorf("task", "no task named %q", tg.Task)
		}
		if err := model.CheckPath(tg.Path); err != nil || tg.Path == "" {
			tc.Errorf("path", "must be a path pattern such as /interfaces/interface[name=*]/state/oper-status")
		}
		if tg.Condition != "" && !conditionRE.MatchString(strings.TrimSpace(tg.Condition)) {
			tc.Errorf("condition", "%q is not a condition (> N, >= N, < N, <= N, == V, != V, changed)", tg.Condition)
		}
	}
}
