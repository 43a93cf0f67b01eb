package snmp

import (
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/outpost-edge/outpost/internal/confval"
	"github.com/outpost-edge/outpost/telemetry/model"
)

// Config configures the SNMP poller and trap receiver (config key
// telemetry.snmp).
type Config struct {
	// MaxConcurrent bounds polls running at once, so a slow device only holds one slot.
	MaxConcurrent int      `yaml:"max_concurrent"`
	Targets       []Target `yaml:"targets"`
	Traps         Traps    `yaml:"traps"`
}

// Target is one SNMP agent.
type Target struct {
	Name      string `yaml:"name"`
	Address   string `yaml:"address"` // host or host:port (161)
	Version   string `yaml:"version"` // 2c or 3
	Community string `yaml:"community"`
	V3        V3     `yaml:"v3"`
	// Timeout per request and Retries per request; PollTimeout bounds the whole poll.
	Timeout        confval.Duration `yaml:"timeout"`
	Retries        int              `yaml:"retries"`
	Interval       confval.Duration `yaml:"interval"`
	PollTimeout    confval.Duration `yaml:"poll_timeout"`
	MaxRepetitions int              `yaml:"max_repetitions"`
	OIDs           []OID            `yaml:"oids"`
	Tables         []Table          `yaml:"tables"`
}

// V3 holds USM parameters.
type V3 struct {
	Username         string `yaml:"username"`
	SecurityLevel    string `yaml:"security_level"` // noAuthNoPriv, authNoPriv, authPriv
	AuthProtocol     string `yaml:"auth_protocol"`  // MD5, SHA, SHA224, SHA256, SHA384, SHA512
	AuthPasswordFile string `yaml:"auth_password_file"`
	PrivProtocol     string `yaml:"priv_protocol"` // DES, AES, AES192, AES256, AES192C, AES256C
	PrivPasswordFile string `yaml:"priv_password_file"`
	ContextName      string `yaml:"context_name"`
}

// OID is a scalar (Get) or a subtree (BulkWalk, when Walk is set) mapped to a path.
type OID struct {
	OID  string `yaml:"oid"`
	Name string `yaml:"name"` // gNMI path; default /snmp/<numeric oid>
	Walk bool   `yaml:"walk"`
	Rate bool   `yaml:"rate"` // also emit <name>-rate (per second) for counters
}

// Table is a table walked with BulkWalk whose rows become path-keyed values:
// <name>[<index_key>=<index>]/<column name>.
type Table struct {
	OID      string `yaml:"oid"`       // the table entry OID (for example ifEntry 1.3.6.1.2.1.2.2.1)
	Name     string `yaml:"name"`      // path prefix, for example /interfaces/interface
	IndexKey string `yaml:"index_key"` // key name, default "index"
	// IndexFrom names a column whose value becomes the key (for example ifDescr: 2); 0 uses the OID index.
	IndexFrom int      `yaml:"index_from"`
	Columns   []Column `yaml:"columns"` // empty: every column, named by number
}

// Column names one table column.
type Column struct {
	Column int    `yaml:"column"`
	Name   string `yaml:"name"`
	Rate   bool   `yaml:"rate"`
}

// TrapName names the event path a trap OID is recorded under.
type TrapName struct {
	OID  string `yaml:"oid"`  // the trap's snmpTrapOID, numeric
	Name string `yaml:"name"` // path; default /snmp/<numeric oid>
}

// Traps configures the trap and inform receiver (v2c and v3).
type Traps struct {
	Listen      string     `yaml:"listen"` // empty: off; for example 127.0.0.1:9162
	Communities []string   `yaml:"communities"`
	Users       []V3       `yaml:"users"`
	Target      string     `yaml:"target"` // name of the target traps are recorded under; default "traps"
	Names       []TrapName `yaml:"names"`  // trap OID → event path
	// EngineID is the receiver's local snmpEngineID in hex (5 to 32 bytes),
	// the authoritative engine of v3 informs: senders discover it and
	// localize their keys with it. Empty: derived from node.id when the
	// receiver is on (EngineIDFor), so it stays the same across restarts.
	EngineID string `yaml:"engine_id"`
}

// EngineIDFor derives a stable snmpEngineID (RFC 3411 format 5, octets)
// from a name: 0x80001f88 (net-snmp's enterprise number with the high bit),
// 0x05, then the first 8 bytes of the name's SHA-256. It returns hex.
func EngineIDFor(name string) string {
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

// WithDefaults returns c with every zero value replaced by its default; c's
// lists are not modified.
func (c Config) WithDefaults() Config {
	c.MaxConcurrent = cmp.Or(c.MaxConcurrent, 32)
	c.Targets = append([]Target(nil), c.Targets...)
	for i := range c.Targets {
		s := &c.Targets[i]
		if s.Version == "" {
			s.Version = "2c"
		}
		s.Timeout.SetDefault(2 * time.Second)
		s.Interval.SetDefault(time.Minute)
		s.PollTimeout = cmp.Or(s.PollTimeout, s.Interval)
		s.Retries = cmp.Or(s.Retries, 1)
		s.MaxRepetitions = cmp.Or(s.MaxRepetitions, 10)
		if s.Version == "3" && s.V3.SecurityLevel == "" {
			s.V3.SecurityLevel = "authPriv"
		}
		tabs := append([]Table(nil), s.Tables...)
		for j := range tabs {
			if tabs[j].IndexKey == "" {
				tabs[j].IndexKey = "index"
			}
		}
		s.Tables = tabs
	}
	if c.Traps.Target == "" {
		c.Traps.Target = "traps"
	}
	return c
}

// Resolve makes the password files absolute against dir and, when the trap
// receiver is on without an engine id, derives one from nodeID.
func (c *Config) Resolve(dir, nodeID string) {
	for i := range c.Targets {
		c.Targets[i].V3.resolve(dir)
	}
	for i := range c.Traps.Users {
		c.Traps.Users[i].resolve(dir)
	}
	if c.Traps.Listen != "" && c.Traps.EngineID == "" {
		c.Traps.EngineID = EngineIDFor(nodeID)
	}
}

func (v *V3) resolve(dir string) {
	confval.Rel(dir, &v.AuthPasswordFile)
	confval.Rel(dir, &v.PrivPasswordFile)
}

// Interval is the longest poll interval of c's targets.
func (c Config) Interval() time.Duration {
	var d time.Duration
	for _, s := range c.Targets {
		d = max(d, s.Interval.Std())
	}
	return d
}

var (
	numericOIDRE = regexp.MustCompile(`^\.?[0-9]+(\.[0-9]+)+$`)
	keyNameRE    = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_-]*$`)
)

// Validate reports the problems of the poller's and the trap receiver's
// settings; the targets' own checks are Target.Validate. c has its defaults
// applied.
func (c Config) Validate(ch *confval.Checker) {
	if c.MaxConcurrent < 1 {
		ch.Errorf("max_concurrent", "must be at least 1")
	}
	tr := c.Traps
	tc := ch.At("traps")
	if tr.Listen != "" {
		tc.HostPort("listen", tr.Listen)
		if len(tr.Communities) == 0 && len(tr.Users) == 0 {
			tc.Errorf("", "list communities or users that may send traps")
		}
	}
	if tr.EngineID != "" {
		if _, err := ParseEngineID(tr.EngineID); err != nil {
			tc.Errorf("engine_id", "%v", err)
		}
	}
	for j, u := range tr.Users {
		u.validate(tc.Index("users", j))
	}
	for j, n := range tr.Names {
		checkOIDName(tc.Index("names", j), n.OID, n.Name, "1.3.6.1.6.3.1.1.5.3")
	}
}

// checkOIDName checks a numeric OID and the path it is recorded under.
func checkOIDName(c *confval.Checker, oid, name, example string) {
	if !numericOIDRE.MatchString(oid) {
		c.Errorf("oid", "%q is not a numeric OID such as %s", oid, example)
	}
	if name != "" {
		if err := model.CheckPath(name); err != nil {
			c.Errorf("name", "%v", err)
		}
	}
}

// Validate reports the problems of one target besides its name and address
// (which the telemetry section checks across gNMI and SNMP); s has its
// defaults applied.
func (s Target) Validate(c *confval.Checker) {
	switch s.Version {
	case "2c":
		if s.Community == "" {
			c.Errorf("community", "must not be empty for version 2c")
		}
	case "3":
		s.V3.validate(c.At("v3"))
	default:
		c.Errorf("version", "%q is not a version (2c, 3)", s.Version)
	}
	if s.Timeout <= 0 {
		c.Errorf("timeout", "must be positive")
	}
	if s.Retries < 0 || s.Retries > 10 {
		c.Errorf("retries", "must be between 0 and 10")
	}
	if s.Interval.Std() < time.Second {
		c.Errorf("interval", "must be at least 1s")
	}
	if s.PollTimeout <= 0 || s.PollTimeout > s.Interval {
		c.Errorf("poll_timeout", "must be positive and at most the interval")
	}
	if s.MaxRepetitions < 1 || s.MaxRepetitions > 255 {
		c.Errorf("max_repetitions", "must be between 1 and 255")
	}
	if len(s.OIDs) == 0 && len(s.Tables) == 0 {
		c.Errorf("", "must list oids or tables to poll")
	}
	for j, o := range s.OIDs {
		checkOIDName(c.Index("oids", j), o.OID, o.Name, "1.3.6.1.2.1.1.3.0")
	}
	for j, tb := range s.Tables {
		tb.validate(c.Index("tables", j))
	}
}

func (tb Table) validate(c *confval.Checker) {
	checkOIDName(c, tb.OID, tb.Name, "1.3.6.1.2.1.2.2.1")
	if !keyNameRE.MatchString(tb.IndexKey) {
		c.Errorf("index_key", "%q is not a key name", tb.IndexKey)
	}
	if tb.IndexFrom < 0 {
		c.Errorf("index_from", "must be a column number")
	}
	for k, col := range tb.Columns {
		cc := c.Index("columns", k)
		if col.Column < 1 {
			cc.Errorf("column", "must be a column number (1 or more)")
		}
		if strings.ContainsAny(col.Name, "/[]") {
			cc.Errorf("name", "%q must be one path element", col.Name)
		}
	}
}

func (v V3) validate(c *confval.Checker) {
	if v.Username == "" {
		c.Errorf("username", "must not be empty")
	}
	lvl := v.SecurityLevel
	if lvl == "" {
		lvl = "authPriv"
	}
	switch lvl {
	case "noAuthNoPriv", "authNoPriv", "authPriv":
	default:
		c.Errorf("security_level", "%q is not a level (noAuthNoPriv, authNoPriv, authPriv)", v.SecurityLevel)
		return
	}
	if lvl != "noAuthNoPriv" {
		switch v.AuthProtocol {
		case "MD5", "SHA", "SHA224", "SHA256", "SHA384", "SHA512":
		default:
			c.Errorf("auth_protocol", "%q is not an auth protocol (MD5, SHA, SHA224, SHA256, SHA384, SHA512)", v.AuthProtocol)
		}
		c.SecretFile("auth_password_file", v.AuthPasswordFile, true)
	}
	if lvl == "authPriv" {
		switch v.PrivProtocol {
		case "DES", "AES", "AES192", "AES256", "AES192C", "AES256C":
		default:
			c.Errorf("priv_protocol", "%q is not a privacy protocol (DES, AES, AES192, AES256, AES192C, AES256C)", v.PrivProtocol)
		}
		c.SecretFile("priv_password_file", v.PrivPasswordFile, true)
	}
}
