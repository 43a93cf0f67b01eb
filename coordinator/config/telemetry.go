package config

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/outpost-edge/outpost/internal/loopback"
)

// Telemetry configures collection from network gear (gNMI, SNMP), the local
// time-series store and the gNMI server. It is off by default: no targets,
// no trap receiver, no gNMI server until telemetry.gnmi_server.listen is set.
//
// Zero values mean "default": applyDefaults (or WithDefaults) fills them, so a
// Telemetry built in code or decoded from a file behaves the same.
type Telemetry struct {
	Store      TelemetryStore     `yaml:"store"`
	GNMI       GNMICollect        `yaml:"gnmi"`
	SNMP       SNMPCollect        `yaml:"snmp"`
	GNMIServer GNMIServer         `yaml:"gnmi_server"`
	MQTT       []TelemetryPublish `yaml:"mqtt"`
	Triggers   []TelemetryTrigger `yaml:"triggers"`
}

// TelemetryStore sizes the time-series DB under DataDir/telemetry.
type TelemetryStore struct {
	// Retention drops points older than this (badger TTL).
	Retention Duration `yaml:"retention"`
	// MaxSize drops the oldest hours once the DB is larger than this.
	MaxSize ByteSize `yaml:"max_size"`
	// FlushInterval is how long updates are batched before they are written.
	FlushInterval Duration `yaml:"flush_interval"`
	// MemtableSize and BlockCacheSize size badger for the time-series pattern.
	MemtableSize   ByteSize `yaml:"memtable_size"`
	BlockCacheSize ByteSize `yaml:"block_cache_size"`
}

// GNMICollect lists the gNMI targets to subscribe to.
type GNMICollect struct {
	Targets []GNMITarget `yaml:"targets"`
}

// GNMITarget is one gNMI device.
type GNMITarget struct {
	Name         string       `yaml:"name"`
	Address      string       `yaml:"address"` // host:port
	TLS          TelemetryTLS `yaml:"tls"`
	Username     string       `yaml:"username"`
	PasswordFile string       `yaml:"password_file"`
	// Timeout bounds connecting and each Get.
	Timeout Duration `yaml:"timeout"`
	// BackoffMin and BackoffMax bound the reconnect delay (doubled, with jitter).
	BackoffMin    Duration           `yaml:"backoff_min"`
	BackoffMax    Duration           `yaml:"backoff_max"`
	Subscriptions []GNMISubscription `yaml:"subscriptions"`
}

// GNMISubscription is one subscription (one stream) on a target.
type GNMISubscription struct {
	Name string `yaml:"name"`
	// Mode is stream, poll or once.
	Mode string `yaml:"mode"`
	// StreamMode is sample, on_change or target_defined (mode stream only).
	StreamMode        string   `yaml:"stream_mode"`
	Prefix            string   `yaml:"prefix"`
	Paths             []string `yaml:"paths"`
	SampleInterval    Duration `yaml:"sample_interval"`
	HeartbeatInterval Duration `yaml:"heartbeat_interval"`
	SuppressRedundant bool     `yaml:"suppress_redundant"`
	// Interval is how often poll and once subscriptions are repeated.
	Interval Duration `yaml:"interval"`
	// Encoding is json_ietf, json or proto.
	Encoding string `yaml:"encoding"`
}

// TelemetryTLS is client or server TLS material. A client uses TLS when
// Enabled is set; skip-verify only when asked.
type TelemetryTLS struct {
	Enabled            bool   `yaml:"enabled"`
	CAFile             string `yaml:"ca_file"`
	CertFile           string `yaml:"cert_file"`
	KeyFile            string `yaml:"key_file"`
	ServerName         string `yaml:"server_name"`
	InsecureSkipVerify bool   `yaml:"insecure_skip_verify"`
}

// SNMPCollect configures the SNMP poller and trap receiver.
type SNMPCollect struct {
	// MaxConcurrent bounds polls running at once, so a slow device only holds one slot.
	MaxConcurrent int          `yaml:"max_concurrent"`
	Targets       []SNMPTarget `yaml:"targets"`
	Traps         SNMPTraps    `yaml:"traps"`
}

// SNMPTarget is one SNMP agent.
type SNMPTarget struct {
	Name      string `yaml:"name"`
	Address   string `yaml:"address"` // host or host:port (161)
	Version   string `yaml:"version"` // 2c or 3
	Community string `yaml:"community"`
	V3        SNMPv3 `yaml:"v3"`
	// Timeout per request and Retries per request; PollTimeout bounds the whole poll.
	Timeout        Duration    `yaml:"timeout"`
	Retries        int         `yaml:"retries"`
	Interval       Duration    `yaml:"interval"`
	PollTimeout    Duration    `yaml:"poll_timeout"`
	MaxRepetitions int         `yaml:"max_repetitions"`
	OIDs           []SNMPOID   `yaml:"oids"`
	Tables         []SNMPTable `yaml:"tables"`
}

// SNMPv3 holds USM parameters.
type SNMPv3 struct {
	Username         string `yaml:"username"`
	SecurityLevel    string `yaml:"security_level"` // noAuthNoPriv, authNoPriv, authPriv
	AuthProtocol     string `yaml:"auth_protocol"`  // MD5, SHA, SHA224, SHA256, SHA384, SHA512
	AuthPasswordFile string `yaml:"auth_password_file"`
	PrivProtocol     string `yaml:"priv_protocol"` // DES, AES, AES192, AES256, AES192C, AES256C
	PrivPasswordFile string `yaml:"priv_password_file"`
	ContextName      string `yaml:"context_name"`
}

// SNMPOID is a scalar (Get) or a subtree (BulkWalk, when Walk is set) mapped to a path.
type SNMPOID struct {
	OID  string `yaml:"oid"`
	Name string `yaml:"name"` // gNMI path; default /snmp/<numeric oid>
	Walk bool   `yaml:"walk"`
	Rate bool   `yaml:"rate"` // also emit <name>-rate (per second) for counters
}

// SNMPTable is a table walked with BulkWalk whose rows become path-keyed values:
// <name>[<index_key>=<index>]/<column name>.
type SNMPTable struct {
	OID      string `yaml:"oid"`       // the table entry OID (for example ifEntry 1.3.6.1.2.1.2.2.1)
	Name     string `yaml:"name"`      // path prefix, for example /interfaces/interface
	IndexKey string `yaml:"index_key"` // key name, default "index"
	// IndexFrom names a column whose value becomes the key (for example ifDescr: 2); 0 uses the OID index.
	IndexFrom int          `yaml:"index_from"`
	Columns   []SNMPColumn `yaml:"columns"` // empty: every column, named by number
}

// SNMPColumn names one table column.
type SNMPColumn struct {
	Column int    `yaml:"column"`
	Name   string `yaml:"name"`
	Rate   bool   `yaml:"rate"`
}

// SNMPTraps configures the trap and inform receiver (v2c and v3).
type SNMPTraps struct {
	Listen      string    `yaml:"listen"` // empty: off; for example 127.0.0.1:9162
	Communities []string  `yaml:"communities"`
	Users       []SNMPv3  `yaml:"users"`
	Target      string    `yaml:"target"` // name of the target traps are recorded under; default "traps"
	Names       []SNMPOID `yaml:"names"`  // trap OID → event path
	// EngineID is the receiver's local snmpEngineID in hex (5 to 32 bytes),
	// the authoritative engine of v3 informs: senders discover it and
	// localize their keys with it. Empty: derived from node.id when the
	// receiver is on (SNMPEngineID), so it stays the same across restarts.
	EngineID string `yaml:"engine_id"`
}

// SNMPEngineID derives a stable snmpEngineID (RFC 3411 format 5, octets)
// from a name: 0x80001f88 (net-snmp's enterprise number with the high bit),
// 0x05, then the first 8 bytes of the name's SHA-256. It returns hex.
func SNMPEngineID(name string) string {
	h := sha256.Sum256([]byte(name))
	return "80001f8805" + hex.EncodeToString(h[:8])
}

// ParseEngineID decodes a hex engine id ("0x" prefix and ':' separators
// allowed) and checks its length (RFC 3411: 5 to 32 bytes).
func ParseEngineID(s string) ([]byte, error) {
	s = strings.ReplaceAll(strings.TrimPrefix(strings.TrimPrefix(s, "0x"), "0X"), ":", "")
	b, err := hex.DecodeString(s)
	if err != nil {
		return nil, fmt.Errorf("engine id %q is not hex", s)
	}
	if len(b) < 5 || len(b) > 32 {
		return nil, fmt.Errorf("engine id must be 5 to 32 bytes, is %d", len(b))
	}
	return b, nil
}

// GNMIServer serves the collected data over gNMI.
type GNMIServer struct {
	Listen       string       `yaml:"listen"` // empty: off
	TLS          TelemetryTLS `yaml:"tls"`    // cert_file and key_file enable TLS
	Username     string       `yaml:"username"`
	PasswordFile string       `yaml:"password_file"`
	// ExpireAfter drops a path from the served cache when no update for it
	// arrived for this long (STREAM subscribers get a gNMI delete), and a
	// target once all its paths are gone. 0: derived from the targets, see
	// Telemetry.GNMIServerExpiry.
	ExpireAfter Duration `yaml:"expire_after"`
}

// GNMIServerExpiry is gnmi_server.expire_after, or when that is 0, 10m or
// three times the longest collection interval of the configured targets,
// whichever is longer.
func (t Telemetry) GNMIServerExpiry() time.Duration {
	if d := t.GNMIServer.ExpireAfter.Std(); d > 0 {
		return d
	}
	return max(10*time.Minute, 3*t.collectionInterval())
}

// collectionInterval is the longest interval at which a configured target
// sends (SNMP poll interval, gNMI sample or poll interval).
func (t *Telemetry) collectionInterval() time.Duration {
	var d time.Duration
	for _, g := range t.GNMI.Targets {
		for _, s := range g.Subscriptions {
			d = max(d, s.SampleInterval.Std(), s.Interval.Std())
		}
	}
	for _, s := range t.SNMP.Targets {
		d = max(d, s.Interval.Std())
	}
	return d
}

// TelemetryPublish sends matching updates to MQTT.
type TelemetryPublish struct {
	Target string   `yaml:"target"` // glob on the target name; empty: all
	Paths  []string `yaml:"paths"`  // path patterns (* one element, ... any rest)
	// Topic may use {target} and {path}; default telemetry/{target}{path}.
	Topic string `yaml:"topic"`
	QoS   byte   `yaml:"qos"`
	// MinInterval rate-limits each series: at most one message per interval.
	MinInterval Duration `yaml:"min_interval"`
}

// TelemetryTrigger runs a task when a matching update meets a condition.
type TelemetryTrigger struct {
	Task   string `yaml:"task"`
	Target string `yaml:"target"` // glob on the target name; empty: all
	Path   string `yaml:"path"`   // path pattern
	// Condition compares the value: "> 100", "<= 0.5", "== up", "!= 0", "changed"; empty: every update.
	Condition   string   `yaml:"condition"`
	MinInterval Duration `yaml:"min_interval"`
}

// Telemetry defaults (also documented in configs/outpost.yaml).
const (
	DefaultGNMIServerListen = "127.0.0.1:9339"
)

// WithDefaults returns t with every zero value replaced by its default.
func (t Telemetry) WithDefaults() Telemetry {
	t.GNMI.Targets = append([]GNMITarget(nil), t.GNMI.Targets...)
	t.SNMP.Targets = append([]SNMPTarget(nil), t.SNMP.Targets...)
	t.applyDefaults()
	return t
}

func setDur(d *Duration, v time.Duration) {
	if *d == 0 {
		*d = Duration(v)
	}
}

// applyDefaults fills zero values with defaults. It is idempotent.
func (t *Telemetry) applyDefaults() {
	s := &t.Store
	setDur(&s.Retention, 7*24*time.Hour)
	setDur(&s.FlushInterval, time.Second)
	if s.MaxSize == 0 {
		s.MaxSize = 1 << 30
	}
	if s.MemtableSize == 0 {
		s.MemtableSize = 4 << 20
	}
	if s.BlockCacheSize == 0 {
		s.BlockCacheSize = 8 << 20
	}
	for i := range t.GNMI.Targets {
		g := &t.GNMI.Targets[i]
		setDur(&g.Timeout, 10*time.Second)
		setDur(&g.BackoffMin, time.Second)
		setDur(&g.BackoffMax, time.Minute)
		subs := append([]GNMISubscription(nil), g.Subscriptions...)
		for j := range subs {
			s := &subs[j]
			if s.Name == "" {
				s.Name = "sub" + strconv.Itoa(j)
			}
			if s.Mode == "" {
				s.Mode = "stream"
			}
			if s.Mode == "stream" && s.StreamMode == "" {
				s.StreamMode = "sample"
			}
			if s.StreamMode == "sample" {
				setDur(&s.SampleInterval, 10*time.Second)
			}
			if s.Mode != "stream" {
				setDur(&s.Interval, 10*time.Second)
			}
			if s.Encoding == "" {
				s.Encoding = "json_ietf"
			}
		}
		g.Subscriptions = subs
	}
	if t.SNMP.MaxConcurrent == 0 {
		t.SNMP.MaxConcurrent = 32
	}
	for i := range t.SNMP.Targets {
		s := &t.SNMP.Targets[i]
		if s.Version == "" {
			s.Version = "2c"
		}
		setDur(&s.Timeout, 2*time.Second)
		setDur(&s.Interval, time.Minute)
		if s.PollTimeout == 0 {
			s.PollTimeout = s.Interval
		}
		if s.Retries == 0 {
			s.Retries = 1
		}
		if s.MaxRepetitions == 0 {
			s.MaxRepetitions = 10
		}
		if s.Version == "3" && s.V3.SecurityLevel == "" {
			s.V3.SecurityLevel = "authPriv"
		}
		tabs := append([]SNMPTable(nil), s.Tables...)
		for j := range tabs {
			if tabs[j].IndexKey == "" {
				tabs[j].IndexKey = "index"
			}
		}
		s.Tables = tabs
	}
	if t.SNMP.Traps.Target == "" {
		t.SNMP.Traps.Target = "traps"
	}
	pubs := append([]TelemetryPublish(nil), t.MQTT...)
	for i := range pubs {
		if pubs[i].Topic == "" {
			pubs[i].Topic = "telemetry/{target}{path}"
		}
		setDur(&pubs[i].MinInterval, time.Second)
	}
	t.MQTT = pubs
}

var (
	targetNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$`)
	numericOIDRE = regexp.MustCompile(`^\.?[0-9]+(\.[0-9]+)+$`)
	conditionRE  = regexp.MustCompile(`^(changed|(>|>=|<|<=|==|!=)\s*\S.*)$`)
)

func (c *Config) validateTelemetry(d *doc) {
	// Relative credential and TLS files are relative to the config file.
	dir := filepath.Dir(d.name)
	rel := func(p *string) {
		if *p != "" && !filepath.IsAbs(*p) && d.name != "" {
			*p = filepath.Join(dir, *p)
		}
	}
	tt := &c.Telemetry
	relTLS := func(t *TelemetryTLS) { rel(&t.CAFile); rel(&t.CertFile); rel(&t.KeyFile) }
	for i := range tt.GNMI.Targets {
		rel(&tt.GNMI.Targets[i].PasswordFile)
		relTLS(&tt.GNMI.Targets[i].TLS)
	}
	for i := range tt.SNMP.Targets {
		rel(&tt.SNMP.Targets[i].V3.AuthPasswordFile)
		rel(&tt.SNMP.Targets[i].V3.PrivPasswordFile)
	}
	for i := range tt.SNMP.Traps.Users {
		rel(&tt.SNMP.Traps.Users[i].AuthPasswordFile)
		rel(&tt.SNMP.Traps.Users[i].PrivPasswordFile)
	}
	rel(&tt.GNMIServer.PasswordFile)
	relTLS(&tt.GNMIServer.TLS)

	// Validate with defaults applied (the daemon applies them the same way).
	t := tt.WithDefaults()
	const p0 = "telemetry"
	if t.Store.Retention.Std() < time.Minute {
		d.errorf(p0+".store.retention", "must be at least 1m")
	}
	if t.Store.MaxSize < 16<<20 {
		d.errorf(p0+".store.max_size", "must be at least 16MiB")
	}
	if t.Store.FlushInterval <= 0 || t.Store.FlushInterval.Std() > time.Minute {
		d.errorf(p0+".store.flush_interval", "must be between 1ns and 1m")
	}
	if t.Store.MemtableSize < 1<<20 {
		d.errorf(p0+".store.memtable_size", "must be at least 1MiB")
	}

	names := map[string]string{} // target name → key path of its first use
	addrs := map[string]string{}
	checkName := func(p, name string) {
		switch {
		case name == "":
			d.errorf(p+".name", "must not be empty")
		case !targetNameRE.MatchString(name):
			d.errorf(p+".name", "%q is not a target name (letters, digits, '_', '.', ':', '-'; at most 128)", name)
		case names[name] != "":
			d.errorf(p+".name", "duplicate target %q (first at %s): a target is collected once", name, names[name])
		default:
			names[name] = p
		}
	}
	// A target is its address and, for SNMP, the community or v3 user and
	// context it polls with: one agent may serve several devices (snmpsim,
	// proxies, chassis with a context per module) and v2c beside v3.
	checkAddr := func(p, addr string, defPort bool, who string) {
		if addr == "" {
			d.errorf(p+".address", "must not be empty")
			return
		}
		a := addr
		if defPort {
			if _, _, err := net.SplitHostPort(addr); err != nil {
				a = net.JoinHostPort(addr, "161")
			}
		}
		checkHostPort(d, p+".address", a)
		if prev := addrs[a+who]; prev != "" {
			d.errorf(p+".address", "%s%s is already collected by %s", a, who, prev)
		} else {
			addrs[a+who] = p
		}
	}
	checkTLS := func(p string, t TelemetryTLS, server bool) {
		if (t.CertFile == "") != (t.KeyFile == "") {
			d.errorf(p, "cert_file and key_file go together")
		}
		checkFile(d, p+".ca_file", t.CAFile, false)
		checkFile(d, p+".cert_file", t.CertFile, false)
		checkSecretFile(d, p+".key_file", t.KeyFile, false)
		if server && t.InsecureSkipVerify {
			d.errorf(p+".insecure_skip_verify", "applies to clients only")
		}
	}

	for i, g := range t.GNMI.Targets {
		p := fmt.Sprintf("%s.gnmi.targets[%d]", p0, i)
		checkName(p, g.Name)
		checkAddr(p, g.Address, false, "")
		checkTLS(p+".tls", g.TLS, false)
		if (g.Username == "") != (g.PasswordFile == "") {
			d.errorf(p+".username", "username and password_file go together")
		}
		checkSecretFile(d, p+".password_file", g.PasswordFile, false)
		if g.BackoffMin > g.BackoffMax {
			d.errorf(p+".backoff_min", "must not exceed backoff_max")
		}
		if len(g.Subscriptions) == 0 {
			d.errorf(p+".subscriptions", "must list at least one subscription")
		}
		subNames := map[string]bool{}
		for j, s := range g.Subscriptions {
			sp := fmt.Sprintf("%s.subscriptions[%d]", p, j)
			if subNames[s.Name] {
				d.errorf(sp+".name", "duplicate subscription %q", s.Name)
			}
			subNames[s.Name] = true
			switch s.Mode {
			case "stream":
				switch s.StreamMode {
				case "sample", "on_change", "target_defined":
				default:
					d.errorf(sp+".stream_mode", "%q is not a stream mode (sample, on_change, target_defined)", s.StreamMode)
				}
			case "poll", "once":
				if s.StreamMode != "" {
					d.errorf(sp+".stream_mode", "applies to mode stream only")
				}
			default:
				d.errorf(sp+".mode", "%q is not a mode (stream, poll, once)", s.Mode)
			}
			switch s.Encoding {
			case "json_ietf", "json", "proto":
			default:
				d.errorf(sp+".encoding", "%q is not an encoding (json_ietf, json, proto)", s.Encoding)
			}
			if len(s.Paths) == 0 {
				d.errorf(sp+".paths", "must list at least one path")
			}
			for k, path := range s.Paths {
				if err := checkGNMIPath(path); err != nil {
					d.errorf(fmt.Sprintf("%s.paths[%d]", sp, k), "%v", err)
				}
			}
			if s.Prefix != "" {
				if err := checkGNMIPath(s.Prefix); err != nil {
					d.errorf(sp+".prefix", "%v", err)
				}
			}
			if s.SampleInterval < 0 || s.HeartbeatInterval < 0 || s.Interval < 0 {
				d.errorf(sp, "intervals must not be negative")
			}
		}
	}

	if t.SNMP.MaxConcurrent < 1 {
		d.errorf(p0+".snmp.max_concurrent", "must be at least 1")
	}
	for i, s := range t.SNMP.Targets {
		p := fmt.Sprintf("%s.snmp.targets[%d]", p0, i)
		checkName(p, s.Name)
		who := fmt.Sprintf(" with community %q", s.Community)
		if s.Version == "3" {
			who = fmt.Sprintf(" as v3 user %q in context %q", s.V3.Username, s.V3.ContextName)
		}
		checkAddr(p, s.Address, true, who)
		switch s.Version {
		case "2c":
			if s.Community == "" {
				d.errorf(p+".community", "must not be empty for version 2c")
			}
		case "3":
			checkV3(d, p+".v3", s.V3)
		default:
			d.errorf(p+".version", "%q is not a version (2c, 3)", s.Version)
		}
		if s.Timeout <= 0 {
			d.errorf(p+".timeout", "must be positive")
		}
		if s.Retries < 0 || s.Retries > 10 {
			d.errorf(p+".retries", "must be between 0 and 10")
		}
		if s.Interval.Std() < time.Second {
			d.errorf(p+".interval", "must be at least 1s")
		}
		if s.PollTimeout <= 0 || s.PollTimeout > s.Interval {
			d.errorf(p+".poll_timeout", "must be positive and at most the interval")
		}
		if s.MaxRepetitions < 1 || s.MaxRepetitions > 255 {
			d.errorf(p+".max_repetitions", "must be between 1 and 255")
		}
		if len(s.OIDs) == 0 && len(s.Tables) == 0 {
			d.errorf(p, "must list oids or tables to poll")
		}
		for j, o := range s.OIDs {
			op := fmt.Sprintf("%s.oids[%d]", p, j)
			if !numericOIDRE.MatchString(o.OID) {
				d.errorf(op+".oid", "%q is not a numeric OID such as 1.3.6.1.2.1.1.3.0", o.OID)
			}
			if o.Name != "" {
				if err := checkGNMIPath(o.Name); err != nil {
					d.errorf(op+".name", "%v", err)
				}
			}
		}
		for j, tb := range s.Tables {
			tp := fmt.Sprintf("%s.tables[%d]", p, j)
			if !numericOIDRE.MatchString(tb.OID) {
				d.errorf(tp+".oid", "%q is not a numeric OID such as 1.3.6.1.2.1.2.2.1", tb.OID)
			}
			if tb.Name != "" {
				if err := checkGNMIPath(tb.Name); err != nil {
					d.errorf(tp+".name", "%v", err)
				}
			}
			if !regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_-]*$`).MatchString(tb.IndexKey) {
				d.errorf(tp+".index_key", "%q is not a key name", tb.IndexKey)
			}
			if tb.IndexFrom < 0 {
				d.errorf(tp+".index_from", "must be a column number")
			}
			for k, col := range tb.Columns {
				if col.Column < 1 {
					d.errorf(fmt.Sprintf("%s.columns[%d].column", tp, k), "must be a column number (1 or more)")
				}
				if strings.ContainsAny(col.Name, "/[]") {
					d.errorf(fmt.Sprintf("%s.columns[%d].name", tp, k), "%q must be one path element", col.Name)
				}
			}
		}
	}
	tr := t.SNMP.Traps
	if tr.Listen != "" {
		checkHostPort(d, p0+".snmp.traps.listen", tr.Listen)
		if len(tr.Communities) == 0 && len(tr.Users) == 0 {
			d.errorf(p0+".snmp.traps", "list communities or users that may send traps")
		}
		if tr.EngineID == "" {
			tt.SNMP.Traps.EngineID = SNMPEngineID(c.Node.ID)
		}
	}
	if tr.EngineID != "" {
		if _, err := ParseEngineID(tr.EngineID); err != nil {
			d.errorf(p0+".snmp.traps.engine_id", "%v", err)
		}
	}
	for j, u := range tr.Users {
		checkV3(d, fmt.Sprintf("%s.snmp.traps.users[%d]", p0, j), u)
	}

	if srv := t.GNMIServer; srv.Listen != "" {
		checkHostPort(d, p0+".gnmi_server.listen", srv.Listen)
		checkTLS(p0+".gnmi_server.tls", srv.TLS, true)
		if (srv.Username == "") != (srv.PasswordFile == "") {
			d.errorf(p0+".gnmi_server.username", "username and password_file go together")
		}
		checkSecretFile(d, p0+".gnmi_server.password_file", srv.PasswordFile, false)
		if !loopback.HostPort(srv.Listen) && (srv.TLS.CertFile == "" || srv.Username == "") {
			d.errorf(p0+".gnmi_server.listen", "a listener beyond loopback needs tls (cert_file, key_file) and a username with password_file")
		}
		if e, iv := srv.ExpireAfter.Std(), t.collectionInterval(); e != 0 && (e < time.Second || e < 2*iv) {
			d.errorf(p0+".gnmi_server.expire_after", "%s: must be 0 (derived) or at least 1s and twice the longest collection interval (%s)", e, iv)
		}
	}

	for i, m := range t.MQTT {
		p := fmt.Sprintf("%s.mqtt[%d]", p0, i)
		if len(m.Paths) == 0 {
			d.errorf(p+".paths", "must list at least one path pattern")
		}
		for k, path := range m.Paths {
			if err := checkGNMIPath(path); err != nil {
				d.errorf(fmt.Sprintf("%s.paths[%d]", p, k), "%v", err)
			}
		}
		if m.QoS > 1 {
			d.errorf(p+".qos", "must be 0 or 1")
		}
		if strings.ContainsAny(strings.NewReplacer("{target}", "", "{path}", "").Replace(m.Topic), "+#{}") {
			d.errorf(p+".topic", "%q: only {target} and {path} may be substituted; no wildcards", m.Topic)
		}
	}
	for i, tg := range t.Triggers {
		p := fmt.Sprintf("%s.triggers[%d]", p0, i)
		if tg.Task == "" {
			d.errorf(p+".task", "must name a task")
		} else if !c.hasTask(tg.Task) {
			d.errorf(p+".task", "no task named %q", tg.Task)
		}
		if err := checkGNMIPath(tg.Path); err != nil || tg.Path == "" {
			d.errorf(p+".path", "must be a path pattern such as /interfaces/interface[name=*]/state/oper-status")
		}
		if tg.Condition != "" && !conditionRE.MatchString(strings.TrimSpace(tg.Condition)) {
			d.errorf(p+".condition", "%q is not a condition (> N, >= N, < N, <= N, == V, != V, changed)", tg.Condition)
		}
	}
}

func (c *Config) hasTask(name string) bool {
	for _, t := range c.Tasks {
		if t.Name == name {
			return true
		}
	}
	return false
}

func checkV3(d *doc, p string, v SNMPv3) {
	if v.Username == "" {
		d.errorf(p+".username", "must not be empty")
	}
	lvl := v.SecurityLevel
	if lvl == "" {
		lvl = "authPriv"
	}
	switch lvl {
	case "noAuthNoPriv", "authNoPriv", "authPriv":
	default:
		d.errorf(p+".security_level", "%q is not a level (noAuthNoPriv, authNoPriv, authPriv)", v.SecurityLevel)
		return
	}
	if lvl != "noAuthNoPriv" {
		switch v.AuthProtocol {
		case "MD5", "SHA", "SHA224", "SHA256", "SHA384", "SHA512":
		default:
			d.errorf(p+".auth_protocol", "%q is not an auth protocol (MD5, SHA, SHA224, SHA256, SHA384, SHA512)", v.AuthProtocol)
		}
		checkSecretFile(d, p+".auth_password_file", v.AuthPasswordFile, true)
	}
	if lvl == "authPriv" {
		switch v.PrivProtocol {
		case "DES", "AES", "AES192", "AES256", "AES192C", "AES256C":
		default:
			d.errorf(p+".priv_protocol", "%q is not a privacy protocol (DES, AES, AES192, AES256, AES192C, AES256C)", v.PrivProtocol)
		}
		checkSecretFile(d, p+".priv_password_file", v.PrivPasswordFile, true)
	}
}

// checkGNMIPath is a light syntax check of a gNMI path string; the telemetry
// package parses paths fully.
func checkGNMIPath(s string) error {
	if s == "" {
		return fmt.Errorf("must not be empty")
	}
	if !strings.HasPrefix(s, "/") {
		return fmt.Errorf("%q must start with /", s)
	}
	depth := 0
	esc := false
	for _, r := range s {
		switch {
		case esc:
			esc = false
		case r == '\\':
			esc = true
		case r == '[':
			if depth > 0 {
				return fmt.Errorf("%q: nested '['", s)
			}
			depth++
		case r == ']':
			if depth == 0 {
				return fmt.Errorf("%q: ']' without '['", s)
			}
			depth--
		}
	}
	if depth != 0 {
		return fmt.Errorf("%q: '[' without ']'", s)
	}
	return nil
}
