// Package config owns Outpost's configuration: the one plain struct that
// describes a daemon, its defaults (all in Defaults), strict YAML decoding
// (unknown keys are errors) and validation that reports every problem at
// once with file:line and key path. A loaded Config is never mutated.
package config

import (
	"path/filepath"
	"time"
)

// Config is the whole configuration of one Outpost daemon.
type Config struct {
	Node      Node      `yaml:"node"`
	DataDir   string    `yaml:"data_dir"`
	Log       Log       `yaml:"log"`
	Admin     Admin     `yaml:"admin"`
	Storage   Storage   `yaml:"storage"`
	MQTT      MQTT      `yaml:"mqtt"`
	Scheduler Scheduler `yaml:"scheduler"`
	Tasks     []Task    `yaml:"tasks"`
	Routes    []Route   `yaml:"routes"`
	Telemetry Telemetry `yaml:"telemetry"`
	Cloud     Cloud     `yaml:"cloud"`

	// Source is the file the config was read from ("" for built-in defaults).
	Source string `yaml:"-"`
}

// Node identifies this daemon.
type Node struct {
	// ID names the node to the cloud and in the MQTT client id; default: the host name.
	ID string `yaml:"id"`
}

// Log configures the structured log written to stderr.
type Log struct {
	Level  string `yaml:"level"`  // debug, info, warn, error
	Format string `yaml:"format"` // text or json
}

// Admin configures the local HTTP API used by the CLI and by Prometheus.
type Admin struct {
	Listen string `yaml:"listen"`
	// TokenFile holds the bearer token the API asks for (an operator's,
	// mode 0600). Empty: admin.token in data_dir, created at first start.
	TokenFile string `yaml:"token_file"`
	// TLS makes the API speak HTTPS; required beyond loopback.
	TLS AdminTLS `yaml:"tls"`
}

// AdminTLS is the admin API's server certificate and, for mTLS, the CA
// that signs its clients' certificates.
type AdminTLS struct {
	CertFile     string `yaml:"cert_file"`
	KeyFile      string `yaml:"key_file"`
	ClientCAFile string `yaml:"client_ca_file"`
}

// TokenPath is the file the admin token is kept in: token_file, else
// admin.token in dataDir.
func (a Admin) TokenPath(dataDir string) string {
	if a.TokenFile != "" {
		return a.TokenFile
	}
	return filepath.Join(dataDir, "admin.token")
}

// Storage sizes the badger state store under DataDir/state.
type Storage struct {
	MemtableSize     ByteSize `yaml:"memtable_size"`
	NumMemtables     int      `yaml:"num_memtables"`
	BlockCacheSize   ByteSize `yaml:"block_cache_size"`
	ValueLogFileSize ByteSize `yaml:"value_log_file_size"`
	NumCompactors    int      `yaml:"num_compactors"`
	GCInterval       Duration `yaml:"gc_interval"`
}

// MQTT configures the broker the devices talk to and the daemon's client of it.
type MQTT struct {
	// Broker is the embedded broker; it runs unless URL names an external one.
	Broker Broker `yaml:"broker"`
	// URL of an external broker (tcp://host:1883 or ssl://host:8883). Empty: use the embedded broker.
	URL            string   `yaml:"url"`
	ClientID       string   `yaml:"client_id"` // default: outpost-<node id>
	Username       string   `yaml:"username"`
	PasswordFile   string   `yaml:"password_file"`
	TLS            TLS      `yaml:"tls"`
	KeepAlive      Duration `yaml:"keepalive"`
	ConnectTimeout Duration `yaml:"connect_timeout"`
	MaxReconnect   Duration `yaml:"max_reconnect_interval"`
	PublishTimeout Duration `yaml:"publish_timeout"`
	// MaxMessageSize is the largest MQTT packet the external broker
	// accepts (its limit: set it to the broker's). With the embedded broker
	// it is not used: Broker.MaxMessageSize is the limit.
	MaxMessageSize ByteSize `yaml:"max_message_size"`
}

// External reports whether the daemon uses an external broker.
func (m MQTT) External() bool { return m.URL != "" }

// MessageLimit is the largest MQTT packet the daemon's client may send:
// the embedded broker's max_message_size, or the external broker's limit
// as configured. The client refuses a larger message before it is sent
// (the broker would drop the connection), and a task's publish is held to
// it (docs/abi.md).
func (m MQTT) MessageLimit() int {
	if m.External() {
		return int(m.MaxMessageSize)
	}
	return int(m.Broker.MaxMessageSize)
}

// TLS holds client TLS material for an ssl:// broker.
type TLS struct {
	CAFile             string `yaml:"ca_file"`
	CertFile           string `yaml:"cert_file"`
	KeyFile            string `yaml:"key_file"`
	InsecureSkipVerify bool   `yaml:"insecure_skip_verify"`
}

// Broker configures the embedded MQTT broker (MQTT 3.1.1 and 5).
type Broker struct {
	Listen         string `yaml:"listen"`
	AllowAnonymous bool   `yaml:"allow_anonymous"`
	// Users that may connect with a password (read from PasswordFile).
	Users []BrokerUser `yaml:"users"`
	// MaxClientWritesPending bounds a client's queued outbound packets; past it the broker drops (counted).
	MaxClientWritesPending int `yaml:"max_client_writes_pending"`
	// MaxInflight bounds unacknowledged QoS 1/2 messages per client; past it the broker drops (counted).
	MaxInflight    int      `yaml:"max_inflight"`
	MaxMessageSize ByteSize `yaml:"max_message_size"`
}

// BrokerUser is one password credential of the embedded broker.
type BrokerUser struct {
	Username     string `yaml:"username"`
	PasswordFile string `yaml:"password_file"`
}

// Scheduler bounds how calls run.
type Scheduler struct {
	// Workers is the global cap on calls running at once.
	Workers int `yaml:"workers"`
	// QueueSize bounds calls waiting to run; a full queue refuses new calls (counted).
	QueueSize int `yaml:"queue_size"`
	// DrainTimeout is how long shutdown waits for queued and running calls.
	DrainTimeout Duration `yaml:"drain_timeout"`
	// MemoryBudget bounds the wasm linear memory of all task instances
	// together, each counted at its memory limit; 0: no budget.
	MemoryBudget ByteSize `yaml:"memory_budget"`
	// MaxParked bounds the calls that wait for a call they made with their
	// worker slot given back (each still holds its instance); 0 resolves to
	// max(16 × Workers, 64).
	MaxParked int `yaml:"max_parked"`
}

// Task declares a wasm task.
type Task struct {
	Name   string `yaml:"name"`
	Module string `yaml:"module"` // path (relative to the config file) or builtin:NAME
	ABI    string `yaml:"abi"`    // auto, reactor or command
	Limits Limits `yaml:"limits"`
	// Permissions grant the task host API access (docs/abi.md); none by default.
	Permissions Permissions `yaml:"permissions"`
	// FreshInstance gives every call of a reactor a new instance (no state
	// kept between calls); commands always run fresh.
	FreshInstance bool `yaml:"fresh_instance"`
	// Libraries are modules the task imports by module name; Files are
	// host files mounted read-only for the task (docs/abi.md "Dependencies").
	Libraries []TaskLibrary `yaml:"libraries"`
	Files     []TaskFile    `yaml:"files"`
}

// TaskLibrary is a library of a task: the import module name and its .wasm.
type TaskLibrary struct {
	Name   string `yaml:"name" json:"name"`
	Module string `yaml:"module" json:"module"`
}

// TaskFile is a host file (source) mounted read-only at a guest path.
type TaskFile struct {
	Path   string `yaml:"path" json:"path"`
	Source string `yaml:"source" json:"source"`
}

// Permissions say what a task may do through the host API (issue 3).
type Permissions struct {
	Publish []string `yaml:"publish"`  // MQTT topic filters the task may publish to
	Call    []string `yaml:"call"`     // tasks it may call; "*" for any
	KVQuota ByteSize `yaml:"kv_quota"` // bytes of keys+values in its kv namespace; 0: no kv
	// Telemetry lets the task read collected telemetry (telemetry_latest,
	// telemetry_query); false: those return denied.
	Telemetry bool `yaml:"telemetry"`
}

// Limits bound one task.
type Limits struct {
	Memory      ByteSize `yaml:"memory"`
	Timeout     Duration `yaml:"timeout"`
	Concurrency int      `yaml:"concurrency"`
	MaxInput    ByteSize `yaml:"max_input"`  // largest call input; larger calls are refused
	MaxOutput   ByteSize `yaml:"max_output"` // largest call output; larger fails the call
	// LogRate and LogBurst bound the task's lines in the daemon's log: a
	// burst of LogBurst, then LogRate lines a second; more are dropped
	// (counted, and one line says how many).
	LogRate  int `yaml:"log_rate"`
	LogBurst int `yaml:"log_burst"`
}

// Route sends messages matching an MQTT topic filter to a task.
type Route struct {
	Topic string `yaml:"topic"` // MQTT filter, + and # wildcards
	Task  string `yaml:"task"`
	// Reply is the topic the result goes to; {1}, {2}… stand for the wildcard
	// segments of the source topic, {topic} for the whole topic. Empty: no reply.
	Reply string `yaml:"reply"`
	QoS   byte   `yaml:"qos"` // for the subscription and the reply
}

// Defaults returns the configuration used for every key a file leaves out.
// It is the one place defaults are written.
func Defaults() Config {
	c := Config{
		DataDir: "./data",
		Log:     Log{Level: "info", Format: "text"},
		Admin:   Admin{Listen: "127.0.0.1:7700"},
		Storage: Storage{
			MemtableSize:     4 << 20,
			NumMemtables:     2,
			BlockCacheSize:   8 << 20,
			ValueLogFileSize: 64 << 20,
			NumCompactors:    2,
			GCInterval:       Duration(10 * time.Minute),
		},
		MQTT: MQTT{
			Broker: Broker{
				Listen:                 "127.0.0.1:1883",
				AllowAnonymous:         true,
				MaxClientWritesPending: 65536,
				MaxInflight:            65535,
				MaxMessageSize:         256 << 10,
			},
			KeepAlive:      Duration(15 * time.Second),
			ConnectTimeout: Duration(10 * time.Second),
			MaxReconnect:   Duration(30 * time.Second),
			PublishTimeout: Duration(10 * time.Second),
			MaxMessageSize: 256 << 10,
		},
		Scheduler: Scheduler{
			Workers:      0, // resolved to max(4, 2*CPUs)
			QueueSize:    4096,
			DrainTimeout: Duration(15 * time.Second),
			MaxParked:    0, // resolved to max(16*workers, 64)
		},
	}
	c.Telemetry.applyDefaults()
	c.Cloud.applyDefaults()
	return c
}

// MaxCallBytes bounds limits.max_input and limits.max_output: what one
// call carries is held in memory whole (and an output is journaled and
// uploaded whole), and the admin API reads at most this much of a call.
const MaxCallBytes ByteSize = 32 << 20

// DefaultConcurrency is a task's default limits.concurrency: half the
// smallest default worker count (max(4, 2 × CPUs)), so that a task that
// loops leaves workers for the others.
const DefaultConcurrency = 2

// TaskDefaults are applied to every task's zero-valued fields.
var TaskDefaults = Task{
	ABI: "auto",
	Limits: Limits{Memory: 16 << 20, Timeout: Duration(5 * time.Second), Concurrency: DefaultConcurrency, MaxInput: 1 << 20, MaxOutput: 4 << 20,
		LogRate: 100, LogBurst: 1000},
}

func (c *Config) applyListDefaults() {
	c.Telemetry.applyDefaults() // these two fill the defaults of their list entries too
	c.Cloud.applyDefaults()
	for i := range c.Tasks {
		t := &c.Tasks[i]
		if t.ABI == "" {
			t.ABI = TaskDefaults.ABI
		}
		if t.Limits.Memory == 0 {
			t.Limits.Memory = TaskDefaults.Limits.Memory
		}
		if t.Limits.Timeout == 0 {
			t.Limits.Timeout = TaskDefaults.Limits.Timeout
		}
		if t.Limits.Concurrency == 0 {
			t.Limits.Concurrency = TaskDefaults.Limits.Concurrency
		}
		t.Limits.ApplyDefaults()
	}
}

// ApplyDefaults fills the zero size and log limits (max_input,
// max_output, log_rate, log_burst) with TaskDefaults'.
func (l *Limits) ApplyDefaults() {
	if l.LogRate == 0 {
		l.LogRate = TaskDefaults.Limits.LogRate
	}
	if l.LogBurst == 0 {
		l.LogBurst = TaskDefaults.Limits.LogBurst
	}
	if l.MaxInput == 0 {
		l.MaxInput = TaskDefaults.Limits.MaxInput
	}
	if l.MaxOutput == 0 {
		l.MaxOutput = TaskDefaults.Limits.MaxOutput
	}
}
