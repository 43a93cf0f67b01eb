package placement

import (
	"cmp"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/outpost-edge/outpost/internal/confval"
	"github.com/outpost-edge/outpost/internal/loopback"
)

// Config is the node's placement settings (config key placement).
type Config struct {
	// Rules apply to every task, after the task's own rules.
	Rules   []Rule        `yaml:"rules"`
	Process ProcessConfig `yaml:"process"`
	Peers   PeersConfig   `yaml:"peers"`
	Cloud   CloudConfig   `yaml:"cloud"`
}

// CloudConfig configures the cloud environment.
type CloudConfig struct {
	// Wait is how long, beyond the task's timeout, a call placed in the
	// cloud waits for its result (transfers, the control plane's
	// restarts) before it ends timeout.
	Wait confval.Duration `yaml:"wait"`
}

// DefaultCloudWait is placement.cloud.wait's default.
const DefaultCloudWait = confval.Duration(time.Minute)

// ProcessConfig configures the process environment.
type ProcessConfig struct {
	// Bwrap is the bubblewrap program; default bwrap on PATH.
	Bwrap string `yaml:"bwrap"`
	// MaxRunning bounds the sandboxed processes running at once; the
	// environment reports a load of running / max_running.
	MaxRunning int `yaml:"max_running"`
}

// PeersConfig configures the peer environment: other Outpost instances
// that run calls for this one, reached at their admin API with their
// admin token (docs/placement.md "The peer environment").
type PeersConfig struct {
	// List names peers one by one.
	List []PeerConfig `yaml:"list"`
	// Cluster, with a token file, makes the telemetry cluster's members
	// that advertise an admin URL (telemetry.cluster.advertise_admin)
	// peers too, all reached with that token (the cluster's members share
	// one admin token: admin.token_file).
	Cluster PeerCluster `yaml:"cluster"`
	// Refresh is how often each peer's health and capacity are read.
	Refresh confval.Duration `yaml:"refresh"`
}

// PeerConfig is one peer.
type PeerConfig struct {
	// Name names it in rules (peer:NAME) and logs.
	Name string `yaml:"name"`
	// URL is its admin API: https://host:port, or http:// on loopback.
	URL string `yaml:"url"`
	// TokenFile holds the peer's admin token (a file only the daemon's
	// user may read); CAFile is the CA its HTTPS certificate is checked
	// against (default: the system roots); CertFile and KeyFile are a
	// client certificate for a peer that asks for one
	// (admin.tls.client_ca_file).
	TokenFile string `yaml:"token_file"`
	CAFile    string `yaml:"ca_file"`
	CertFile  string `yaml:"cert_file"`
	KeyFile   string `yaml:"key_file"`
}

// PeerCluster is how the telemetry cluster's members are reached as peers.
type PeerCluster struct {
	TokenFile string `yaml:"token_file"`
	CAFile    string `yaml:"ca_file"`
	CertFile  string `yaml:"cert_file"`
	KeyFile   string `yaml:"key_file"`
}

// Enabled says whether the cluster's members are peers.
func (c PeerCluster) Enabled() bool { return c.TokenFile != "" }

// DefaultMaxRunning is placement.process.max_running's default.
const DefaultMaxRunning = 4

// DefaultPeerRefresh is placement.peers.refresh's default.
const DefaultPeerRefresh = 2 * time.Second

// ApplyDefaults fills the zero settings.
func (c *Config) ApplyDefaults() {
	c.Process.Bwrap = cmp.Or(c.Process.Bwrap, "bwrap")
	c.Process.MaxRunning = cmp.Or(c.Process.MaxRunning, DefaultMaxRunning)
	c.Cloud.Wait = cmp.Or(c.Cloud.Wait, DefaultCloudWait)
	c.Peers.Refresh = cmp.Or(c.Peers.Refresh, confval.Duration(DefaultPeerRefresh))
}

// Resolve makes the peers' file names absolute against dir, the config
// file's directory.
func (c *Config) Resolve(dir string) {
	for i := range c.Peers.List {
		p := &c.Peers.List[i]
		for _, f := range []*string{&p.TokenFile, &p.CAFile, &p.CertFile, &p.KeyFile} {
			confval.Rel(dir, f)
		}
	}
	pc := &c.Peers.Cluster
	for _, f := range []*string{&pc.TokenFile, &pc.CAFile, &pc.CertFile, &pc.KeyFile} {
		confval.Rel(dir, f)
	}
}

// Validate reports every problem of the placement settings.
func (c Config) Validate(ch *confval.Checker) {
	Validate(ch.At("rules"), c.Rules)
	if c.Process.MaxRunning < 1 {
		ch.Errorf("process.max_running", "must be at least 1")
	}
	if c.Cloud.Wait < 0 {
		ch.Errorf("cloud.wait", "must not be negative")
	}
	pc := ch.At("peers")
	if c.Peers.Refresh.Std() < 100*time.Millisecond {
		pc.Errorf("refresh", "must be at least 100ms")
	}
	names := map[string]bool{}
	for i, p := range c.Peers.List {
		ic := pc.Index("list", i)
		switch {
		case p.Name == "" || strings.ContainsAny(p.Name, ": "):
			ic.Errorf("name", "must name the peer (no ':' or spaces; rules name it peer:NAME)")
		case names[p.Name]:
			ic.Errorf("name", "duplicate peer %q", p.Name)
		}
		names[p.Name] = true
		u, err := url.Parse(p.URL)
		switch {
		case err != nil || u.Host == "" || u.Scheme != "https" && u.Scheme != "http":
			ic.Errorf("url", "%q is not an http(s)://host:port URL of the peer's admin API", p.URL)
		case u.Scheme == "http" && !loopback.Host(u.Hostname()):
			ic.Errorf("url", "%q: beyond loopback the peer's admin API is reached over https (its token travels with every request)", p.URL)
		}
		ic.SecretFile("token_file", p.TokenFile, true)
		checkTLSFiles(ic, p.CAFile, p.CertFile, p.KeyFile)
	}
	cc := pc.At("cluster")
	cc.SecretFile("token_file", c.Peers.Cluster.TokenFile, false)
	checkTLSFiles(cc, c.Peers.Cluster.CAFile, c.Peers.Cluster.CertFile, c.Peers.Cluster.KeyFile)
	if c.Peers.Cluster.Enabled() {
		return // peers are found in the cluster too: any name may come
	}
	for i, r := range c.Rules {
		for j, e := range r.Run {
			if name, ok := strings.CutPrefix(e, PeerPrefix); ok && name != "" && !names[name] {
				ch.Index("rules", i).Errorf(fmt.Sprintf("run[%d]", j), "%q: no peer %q in placement.peers.list (and no placement.peers.cluster)", e, name)
			}
		}
	}
}

// checkTLSFiles checks a peer's CA file and client certificate, which
// come as a pair.
func checkTLSFiles(ch *confval.Checker, ca, cert, key string) {
	ch.File("ca_file", ca, false)
	if (cert == "") != (key == "") {
		ch.Errorf("cert_file", "cert_file and key_file come together")
	}
	ch.File("cert_file", cert, false)
	ch.SecretFile("key_file", key, false)
}
