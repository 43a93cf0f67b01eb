package cluster

import (
	"cmp"
	"strings"
	"time"

	"github.com/outpost-edge/outpost/internal/confval"
)

// Config configures the telemetry cluster (config key telemetry.cluster).
// It is off (a single instance, no etcd) while Etcd is empty.
type Config struct {
	// Etcd lists the etcd client URLs (http://host:port).
	Etcd []string `yaml:"etcd"`
	// Name names this instance in the cluster; default the node id.
	Name string `yaml:"name"`
	// Advertise is the gNMI address the other instances reach this one at;
	// default telemetry.gnmi_server.listen.
	Advertise string `yaml:"advertise"`
	// AdvertiseAdmin is the URL of this instance's admin API that the
	// other instances reach it at as a peer (the peer environment,
	// placement.peers.cluster); empty: it is not offered as a peer.
	AdvertiseAdmin string `yaml:"advertise_admin"`
	// Capacity weighs this instance in placement: an instance of capacity
	// 200 gets about twice the targets of one of capacity 100.
	Capacity int `yaml:"capacity"`
	// LeaseTTL is the lease under which the instance is a member and holds
	// its targets' locks: a dead holder's targets move after it.
	LeaseTTL confval.Duration `yaml:"lease_ttl"`
	// Prefix is the etcd key prefix of this cluster.
	Prefix string `yaml:"prefix"`
	// ReplicaInterval is how long a replica waits before it opens a new
	// stream to the holder after one ended.
	ReplicaInterval confval.Duration `yaml:"replica_interval"`
	// CAFile is the CA (PEM) the other instances' gNMI server certificates
	// are checked against when the gNMI server uses TLS (the instances
	// replicate and divert over TLS then); empty: the system's roots.
	CAFile string `yaml:"ca_file"`
}

// Defaults of Config.
const (
	DefaultCapacity        = 100
	DefaultLeaseTTL        = 5 * time.Second
	DefaultPrefix          = "/outpost/telemetry"
	DefaultReplicaInterval = time.Second
)

// Enabled reports whether the cluster is configured.
func (c Config) Enabled() bool { return len(c.Etcd) > 0 }

// WithDefaults fills zero values; advertise comes from the gNMI server's
// listen address (the name from the node id, set by the telemetry config's
// Resolve).
func (c Config) WithDefaults(gnmiListen string) Config {
	if c.Advertise == "" {
		c.Advertise = gnmiListen
	}
	c.Capacity = cmp.Or(c.Capacity, DefaultCapacity)
	c.LeaseTTL.SetDefault(DefaultLeaseTTL)
	c.ReplicaInterval.SetDefault(DefaultReplicaInterval)
	if c.Prefix == "" {
		c.Prefix = DefaultPrefix
	}
	c.Prefix = strings.TrimRight(c.Prefix, "/")
	c.Etcd = append([]string(nil), c.Etcd...)
	return c
}

// Validate reports the problems of a cluster that is on. gnmiListen is the
// gNMI server's listen address (the cluster replicates through it);
// gnmiTLS says whether that server uses TLS.
func (c Config) Validate(ch *confval.Checker, gnmiListen string, gnmiTLS bool) {
	if !c.Enabled() {
		return
	}
	for i, e := range c.Etcd {
		if !strings.HasPrefix(e, "http://") && !strings.HasPrefix(e, "https://") {
			ch.Index("etcd", i).Errorf("", "%q: an etcd client URL starts with http:// or https://", e)
		}
	}
	if gnmiListen == "" {
		ch.Errorf("etcd", "a cluster needs telemetry.gnmi_server.listen: instances replicate and divert through it")
	}
	if c.CAFile != "" && !gnmiTLS {
		ch.Errorf("ca_file", "instances connect over TLS only when telemetry.gnmi_server.tls is set")
	}
	ch.File("ca_file", c.CAFile, false)
	if c.Name == "" {
		ch.Errorf("name", "must name this instance (default: the node id)")
	} else if strings.Contains(c.Name, "/") {
		ch.Errorf("name", "%q: must not contain '/'", c.Name)
	}
	if c.Advertise != "" {
		ch.HostPort("advertise", c.Advertise)
	}
	if a := c.AdvertiseAdmin; a != "" && !strings.HasPrefix(a, "http://") && !strings.HasPrefix(a, "https://") {
		ch.Errorf("advertise_admin", "%q: the admin API's URL starts with http:// or https://", a)
	}
	if c.Capacity < 0 {
		ch.Errorf("capacity", "must not be negative")
	}
	if ttl := c.LeaseTTL.Std(); ttl != 0 && (ttl < 2*time.Second || ttl%time.Second != 0) {
		ch.Errorf("lease_ttl", "%s: must be whole seconds, at least 2s", ttl)
	}
	if r := c.ReplicaInterval.Std(); r != 0 && r < 100*time.Millisecond {
		ch.Errorf("replica_interval", "%s: must be at least 100ms", r)
	}
}
