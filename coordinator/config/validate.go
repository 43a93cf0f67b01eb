package config

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	goruntime "runtime"
	"strconv"
	"strings"

	"github.com/outpost-edge/outpost/devices/topic"
	"github.com/outpost-edge/outpost/internal/loopback"
	"github.com/outpost-edge/outpost/internal/secretfile"
)

// resolve fills values derived from the environment and makes file paths
// relative to the config file's directory absolute.
func (c *Config) resolve(dir string) {
	if c.Node.ID == "" {
		if h, err := os.Hostname(); err == nil {
			c.Node.ID = h
		} else {
			c.Node.ID = "outpost"
		}
	}
	if c.Scheduler.Workers == 0 {
		c.Scheduler.Workers = max(4, 2*goruntime.NumCPU())
	}
	if c.Scheduler.MaxParked == 0 {
		c.Scheduler.MaxParked = max(16*c.Scheduler.Workers, 64)
	}
	if c.MQTT.ClientID == "" {
		c.MQTT.ClientID = "outpost-" + c.Node.ID
	}
	rel := func(p *string) {
		if *p != "" && !strings.HasPrefix(*p, "builtin:") && !filepath.IsAbs(*p) && dir != "" {
			*p = filepath.Join(dir, *p)
		}
	}
	for i := range c.Tasks {
		rel(&c.Tasks[i].Module)
		for j := range c.Tasks[i].Libraries {
			rel(&c.Tasks[i].Libraries[j].Module)
		}
		for j := range c.Tasks[i].Files {
			rel(&c.Tasks[i].Files[j].Source)
		}
	}
	rel(&c.Admin.TokenFile)
	rel(&c.Admin.TLS.CertFile)
	rel(&c.Admin.TLS.KeyFile)
	rel(&c.Admin.TLS.ClientCAFile)
	rel(&c.MQTT.PasswordFile)
	rel(&c.MQTT.TLS.CAFile)
	rel(&c.MQTT.TLS.CertFile)
	rel(&c.MQTT.TLS.KeyFile)
	for i := range c.MQTT.Broker.Users {
		rel(&c.MQTT.Broker.Users[i].PasswordFile)
	}
}

var taskNameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9_.-]{0,62}$`)

// validate records every semantic problem of c in d.
func (c *Config) validate(d *doc) {
	if c.DataDir == "" {
		d.errorf("data_dir", "must not be empty")
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		d.errorf("log.level", "%q is not a level (debug, info, warn, error)", c.Log.Level)
	}
	switch c.Log.Format {
	case "text", "json":
	default:
		d.errorf("log.format", "%q is not a format (text, json)", c.Log.Format)
	}
	c.validateAdmin(d)
	if c.Storage.MemtableSize < 1<<20 {
		d.errorf("storage.memtable_size", "must be at least 1MiB")
	}
	if c.Storage.NumMemtables < 1 {
		d.errorf("storage.num_memtables", "must be at least 1")
	}
	if c.Storage.ValueLogFileSize < 1<<20 || c.Storage.ValueLogFileSize >= 2<<30 {
		d.errorf("storage.value_log_file_size", "must be between 1MiB and 2GiB")
	}
	if c.Storage.NumCompactors < 2 {
		d.errorf("storage.num_compactors", "must be at least 2 (badger needs two)")
	}
	if c.Storage.GCInterval <= 0 {
		d.errorf("storage.gc_interval", "must be positive")
	}
	c.validateMQTT(d)
	if c.Scheduler.Workers < 1 {
		d.errorf("scheduler.workers", "must be at least 1")
	}
	if c.Scheduler.QueueSize < 1 {
		d.errorf("scheduler.queue_size", "must be at least 1")
	}
	if c.Scheduler.DrainTimeout < 0 {
		d.errorf("scheduler.drain_timeout", "must not be negative")
	}
	if c.Scheduler.MaxParked < 0 {
		d.errorf("scheduler.max_parked", "must not be negative (0: max(16 × workers, 64))")
	}
	tasks := c.validateTasks(d)
	c.validateRoutes(d, tasks)
	c.validateTelemetry(d)
	c.validateCloud(d)
}

func (c *Config) validateAdmin(d *doc) {
	a := c.Admin
	checkHostPort(d, "admin.listen", a.Listen)
	checkSecretFile(d, "admin.token_file", a.TokenFile, false)
	if err := secretfile.Check(a.TokenPath(c.DataDir)); a.TokenFile == "" && errors.Is(err, secretfile.ErrExposed) {
		d.errorf("data_dir", "%v", err) // the token made at first start
	}
	if (a.TLS.CertFile == "") != (a.TLS.KeyFile == "") {
		d.errorf("admin.tls", "cert_file and key_file go together")
	}
	checkFile(d, "admin.tls.cert_file", a.TLS.CertFile, false)
	checkSecretFile(d, "admin.tls.key_file", a.TLS.KeyFile, false)
	checkFile(d, "admin.tls.client_ca_file", a.TLS.ClientCAFile, false)
	if a.TLS.ClientCAFile != "" && a.TLS.CertFile == "" {
		d.errorf("admin.tls.client_ca_file", "needs cert_file and key_file (mTLS is TLS)")
	}
	if _, _, err := net.SplitHostPort(a.Listen); err == nil && !loopback.HostPort(a.Listen) && a.TLS.CertFile == "" {
		d.errorf("admin.listen", "%q is beyond loopback: the admin API listens there only with tls (admin.tls.cert_file, key_file); its token is required on every request", a.Listen)
	}
}

func (c *Config) validateMQTT(d *doc) {
	m := c.MQTT
	if m.External() {
		u, err := url.Parse(m.URL)
		switch {
		case err != nil:
			d.errorf("mqtt.url", "%v", err)
		case u.Scheme != "tcp" && u.Scheme != "ssl" && u.Scheme != "mqtt" && u.Scheme != "mqtts":
			d.errorf("mqtt.url", "scheme %q is not supported (tcp://, ssl://)", u.Scheme)
		case u.Port() == "":
			d.errorf("mqtt.url", "must include a port, such as tcp://broker:1883")
		}
		if m.MaxMessageSize < 1<<10 || m.MaxMessageSize > 256<<20 {
			d.errorf("mqtt.max_message_size", "must be between 1KiB and 256MiB")
		}
	} else {
		if _, set := d.lines["mqtt.max_message_size"]; set {
			d.errorf("mqtt.max_message_size", "is the limit of an external broker (mqtt.url); the embedded broker's is mqtt.broker.max_message_size")
		}
		b := m.Broker
		checkHostPort(d, "mqtt.broker.listen", b.Listen)
		if b.AllowAnonymous && !loopback.HostPort(b.Listen) {
			p := "mqtt.broker.allow_anonymous"
			if _, set := d.lines[p]; !set {
				p = "mqtt.broker.listen"
			}
			d.errorf(p, "anonymous clients are only allowed on a loopback listener; add users and set allow_anonymous: false, or listen on 127.0.0.1")
		}
		seen := map[string]bool{}
		for i, u := range b.Users {
			p := fmt.Sprintf("mqtt.broker.users[%d]", i)
			if u.Username == "" {
				d.errorf(p+".username", "must not be empty")
			} else if seen[u.Username] {
				d.errorf(p+".username", "duplicate user %q", u.Username)
			}
			seen[u.Username] = true
			checkSecretFile(d, p+".password_file", u.PasswordFile, true)
		}
		if b.MaxClientWritesPending < 1 {
			d.errorf("mqtt.broker.max_client_writes_pending", "must be at least 1")
		}
		if b.MaxInflight < 1 || b.MaxInflight > 65535 {
			d.errorf("mqtt.broker.max_inflight", "must be between 1 and 65535")
		}
		if b.MaxMessageSize < 1<<10 || b.MaxMessageSize > 256<<20 {
			d.errorf("mqtt.broker.max_message_size", "must be between 1KiB and 256MiB")
		}
	}
	checkSecretFile(d, "mqtt.password_file", m.PasswordFile, false)
	checkFile(d, "mqtt.tls.ca_file", m.TLS.CAFile, false)
	checkFile(d, "mqtt.tls.cert_file", m.TLS.CertFile, false)
	checkSecretFile(d, "mqtt.tls.key_file", m.TLS.KeyFile, false)
	if (m.TLS.CertFile == "") != (m.TLS.KeyFile == "") {
		d.errorf("mqtt.tls", "cert_file and key_file go together")
	}
	for _, f := range []struct {
		path string
		v    Duration
	}{{"mqtt.keepalive", m.KeepAlive}, {"mqtt.connect_timeout", m.ConnectTimeout}, {"mqtt.max_reconnect_interval", m.MaxReconnect}, {"mqtt.publish_timeout", m.PublishTimeout}} {
		if f.v <= 0 {
			d.errorf(f.path, "must be positive")
		}
	}
}

func (c *Config) validateTasks(d *doc) map[string]bool {
	names := map[string]bool{}
	for i, t := range c.Tasks {
		p := fmt.Sprintf("tasks[%d]", i)
		switch {
		case t.Name == "":
			d.errorf(p+".name", "must not be empty")
		case !taskNameRE.MatchString(t.Name):
			d.errorf(p+".name", "%q is not a task name (lower case letters, digits, '_', '.', '-'; at most 63)", t.Name)
		case names[t.Name]:
			d.errorf(p+".name", "duplicate task %q", t.Name)
		}
		names[t.Name] = true
		if t.Module == "" {
			d.errorf(p+".module", "must name a .wasm file or builtin:NAME")
		} else if !strings.HasPrefix(t.Module, "builtin:") {
			checkFile(d, p+".module", t.Module, false)
		}
		for j, l := range t.Libraries {
			lp := fmt.Sprintf("%s.libraries[%d]", p, j)
			if l.Name == "" {
				d.errorf(lp+".name", "must name the import module")
			}
			if l.Module == "" {
				d.errorf(lp+".module", "must name a .wasm file")
			} else {
				checkFile(d, lp+".module", l.Module, false)
			}
		}
		for j, f := range t.Files {
			fp := fmt.Sprintf("%s.files[%d]", p, j)
			if !strings.HasPrefix(f.Path, "/") {
				d.errorf(fp+".path", "must be an absolute guest path")
			}
			if f.Source == "" {
				d.errorf(fp+".source", "must name a host file")
			} else {
				checkFile(d, fp+".source", f.Source, false)
			}
		}
		switch t.ABI {
		case "auto", "reactor", "command":
		default:
			d.errorf(p+".abi", "%q is not an ABI (auto, reactor, command)", t.ABI)
		}
		if t.Limits.Memory < 64<<10 || t.Limits.Memory > 4<<30 {
			d.errorf(p+".limits.memory", "must be between 64KiB (one wasm page) and 4GiB")
		}
		if t.Limits.Timeout <= 0 {
			d.errorf(p+".limits.timeout", "must be positive")
		}
		if t.Limits.Concurrency < 1 {
			d.errorf(p+".limits.concurrency", "must be at least 1")
		}
		if t.Limits.MaxInput > MaxCallBytes {
			d.errorf(p+".limits.max_input", "must be at most %s (a call's input is held in memory whole)", MaxCallBytes)
		}
		if t.Limits.MaxOutput > MaxCallBytes {
			d.errorf(p+".limits.max_output", "must be at most %s (a call's output is held in memory, journaled and uploaded whole)", MaxCallBytes)
		}
		if t.Limits.LogRate < 1 {
			d.errorf(p+".limits.log_rate", "must be at least 1 (lines a second)")
		}
		if t.Limits.LogBurst < 1 {
			d.errorf(p+".limits.log_burst", "must be at least 1 (lines)")
		}
		// Host API permissions (issue 3).
		for j, f := range t.Permissions.Publish {
			if err := topic.CheckFilter(f); err != nil {
				d.errorf(fmt.Sprintf("%s.permissions.publish[%d]", p, j), "%v", err)
			}
		}
		for j, n := range t.Permissions.Call {
			if n != "*" && !taskNameRE.MatchString(n) {
				d.errorf(fmt.Sprintf("%s.permissions.call[%d]", p, j), "%q is not a task name or *", n)
			}
		}
	}
	return names
}

func (c *Config) validateRoutes(d *doc, tasks map[string]bool) {
	for i, r := range c.Routes {
		p := fmt.Sprintf("routes[%d]", i)
		if err := topic.CheckFilter(r.Topic); err != nil {
			d.errorf(p+".topic", "%v", err)
		}
		if r.Task == "" {
			d.errorf(p+".task", "must name a task")
		} else if !tasks[r.Task] {
			d.errorf(p+".task", "no task named %q", r.Task)
		}
		if r.QoS > 1 {
			d.errorf(p+".qos", "must be 0 or 1")
		}
		if err := CheckReply(r.Reply, r.Topic); err != nil {
			d.errorf(p+".reply", "%v", err)
		} else if j, ok := feedsBack(r.Reply, c.Routes); ok {
			d.errorf(p+".reply", "every reply on %q would match routes[%d] (%q) and start another call: a loop", r.Reply, j, c.Routes[j].Topic)
		}
	}
}

// feedsBack reports whether replies rendered from tmpl match a route's
// filter whatever the source topic was: placeholders are filled with a
// level no filter names, so only wildcards can match them.
func feedsBack(tmpl string, rs []Route) (int, bool) {
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

func checkHostPort(d *doc, path, addr string) {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		d.errorf(path, "%q is not host:port", addr)
		return
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		d.errorf(path, "%q: port must be a number from 0 to 65535", addr)
	}
}

func checkFile(d *doc, path, file string, required bool) {
	if file == "" {
		if required {
			d.errorf(path, "must name a file")
		}
		return
	}
	st, err := os.Stat(file)
	switch {
	case err != nil:
		d.errorf(path, "cannot read %s: %v", file, unwrapPathErr(err))
	case st.IsDir():
		d.errorf(path, "%s is a directory, not a file", file)
	}
}

// checkSecretFile is checkFile for a file holding a secret, which group and
// others must not be able to read.
func checkSecretFile(d *doc, path, file string, required bool) {
	checkFile(d, path, file, required)
	if err := secretfile.Check(file); file != "" && errors.Is(err, secretfile.ErrExposed) {
		d.errorf(path, "%v", err)
	}
}

func unwrapPathErr(err error) error {
	if pe, ok := err.(*os.PathError); ok {
		return pe.Err
	}
	return err
}
