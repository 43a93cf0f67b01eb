// Package coordinator owns the Outpost daemon as a whole: it builds every
// part from the config (state store, wasm runtime, call scheduler, MQTT
// broker and client, admin API), runs them as a supervised group with a
// written stop order, answers SIGHUP with a validated reload and SIGTERM
// with a drain, and tells systemd about each.
package coordinator

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/outpost-edge/outpost/configs"
	"github.com/outpost-edge/outpost/coordinator/admin"
	"github.com/outpost-edge/outpost/coordinator/calls"
	"github.com/outpost-edge/outpost/coordinator/console"
	"github.com/outpost-edge/outpost/coordinator/routes"
	"github.com/outpost-edge/outpost/coordinator/tasks"
	"github.com/outpost-edge/outpost/devices"
	"github.com/outpost-edge/outpost/internal/ratelog"
	"github.com/outpost-edge/outpost/internal/store"
	outpostrt "github.com/outpost-edge/outpost/runtime"
	"github.com/outpost-edge/outpost/telemetry"
)

// Coordinator is one running Outpost daemon.
type Coordinator struct {
	log     *slog.Logger
	version string
	reg     *prometheus.Registry
	m       *metrics
	boot    time.Time

	cfg atomic.Pointer[configs.Config]
	// configTasks indexes the running config's tasks by name
	// (storeConfig).
	configTasks atomic.Pointer[map[string]*tasks.Task]
	routes      atomic.Pointer[routes.Table]

	db     *store.DB
	engine *outpostrt.Engine
	// deployed is the registry of tasks deployed at run time (registry.go).
	deployed atomic.Pointer[map[string]*deployment]
	sched    *calls.Scheduler
	broker   *devices.Broker // nil with an external broker
	devices  *devices.Registry
	shadows  *devices.Shadows // shadows.go
	client   bus
	admin    *admin.Server
	tele     *telemetry.Service // telemetry.go
	cloud    *cloudPart         // call journal and cloud link (cloud.go)
	kv       kvSpaces           // sizes of the tasks' kv namespaces (kv.go)
	kvCommit *store.Committer   // writes of the tasks' kv namespaces (kv.go)
	envs     *environments      // where calls run (environments.go)
	group    group

	// Lock order: reloadMu, then blobMu.
	reloadMu sync.Mutex // one reload at a time
	// blobMu guards the blob directory's holds and deletions (blobgc.go),
	// backups, the backups being written (GC waits for them, and so does
	// the stop before telemetry and the store close: backupsIdle), and
	// noBackups, set once the stop has begun.
	blobMu      sync.Mutex
	holds       blobHolds
	backups     int
	backupsIdle *sync.Cond
	noBackups   bool
	ready       chan struct{}
}

// New builds a coordinator for a validated configs. It has no side effects:
// nothing listens or opens files until Run.
func New(cfg *configs.Config, log *slog.Logger, version string) *Coordinator {
	c := &Coordinator{log: log, version: version, reg: prometheus.NewRegistry(), ready: make(chan struct{})}
	c.backupsIdle = sync.NewCond(&c.blobMu)
	c.storeConfig(cfg)
	c.routes.Store(routes.New(cfg.Routes))
	c.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	c.m = newMetrics(c.reg, version)

	c.engine = outpostrt.New(outpostrt.Options{
		CacheDir:   filepath.Join(cfg.DataDir, "cache", "wasm"),
		Logger:     log.With("part", "runtime"),
		Registerer: c.reg,
		Host:       host{c}, // host functions of ABI v1 (host.go)
		// All instances' linear memory together (scheduler.memory_budget).
		MemoryBudget: uint64(cfg.Scheduler.MemoryBudget),
		// A task's publish is held to the broker's limit.
		MaxPublish: cfg.MQTT.MessageLimit(),
	})
	c.envs = newEnvironments(c)
	c.sched = calls.NewScheduler(newObjectExecutor(c), calls.Options{Workers: cfg.Scheduler.Workers, QueueSize: cfg.Scheduler.QueueSize,
		Queues: cloudQueues(cfg.Cloud), AgingAfter: cfg.Cloud.AgingAfter.Std(), MaxParked: cfg.Scheduler.MaxParked}, log.With("part", "calls"), c.reg) // queues: cloud.go
	c.devices = devices.NewRegistry(log.With("part", "devices"))
	c.shadows = devices.NewShadows(log.With("part", "shadows"), c.reg)
	if !cfg.MQTT.External() {
		c.broker = devices.NewBroker(cfg.MQTT.Broker, log.With("part", "broker"), c.reg)
		c.broker.SetRegistry(c.devices)              // device logins and access rules (devices.go)
		c.broker.SetDurablePublish(c.journalPublish) // QoS 1 routes: journaled before the PUBACK (intake.go)
	}
	c.admin = admin.NewServer(admin.Options{
		Listen:    cfg.Admin.Listen,
		TokenFile: cfg.Admin.TokenPath(cfg.DataDir), CreateToken: cfg.Admin.TokenFile == "",
		TLSCertFile: cfg.Admin.TLS.CertFile, TLSKeyFile: cfg.Admin.TLS.KeyFile, TLSClientCAFile: cfg.Admin.TLS.ClientCAFile,
	}, c, c.reg, c.reg, log.With("part", "admin"))
	c.tele = c.newTelemetry() // telemetry.go
	c.admin.Handle("/v1/telemetry/", c.tele.Handler())
	admin.MountRegistry(c.admin, c)             // deploy/rm/rollback/inspect (registry.go)
	admin.MountBackup(c.admin, c)               // backup.go
	admin.MountDevices(c.admin, deviceAdmin{c}) // device add/ls/disable/rm (devices.go)
	admin.MountShadows(c.admin, shadowAdmin{c}) // device shadows (shadows.go)
	admin.MountPeer(c.admin, c)                 // calls of other nodes (peers.go)
	console.Mount(c.admin, c.tele)              // the web console under /ui/

	g := &c.group
	g.log = log
	g.add("store", c.openStore, func(context.Context) error {
		c.kvCommit.Close()
		return c.db.Close()
	})
	g.add("devices", func(ctx context.Context) error { return c.devices.Open(ctx, c.db.Bucket("devices")) }, c.devices.Close)
	g.add("runtime", c.startRuntime, c.engine.Close)
	g.add("scheduler", func(context.Context) error { return nil }, c.drain)
	if c.broker != nil {
		g.add("broker", c.broker.Start, c.broker.Stop)
	}
	g.add("mqtt", c.startClient, func(ctx context.Context) error { return c.client.Stop(ctx) })
	// Shadows answer through the MQTT client: they open after it and
	// close before it (what is queued is answered first).
	g.add("shadows", func(ctx context.Context) error {
		return c.shadows.Open(ctx, c.db, c.db.Bucket("shadows"), c.client)
	}, c.shadows.Close)
	// Cloud link and call journal (cloud.go): journal recovery needs the
	// runtime's tasks and the scheduler, and the calls it runs again may
	// publish through the MQTT client, so it starts after both; the stop
	// order is explained in cloud.go.
	c.cloud = &cloudPart{c: c, refusals: ratelog.Limiter{Every: refusalWarnEvery}}
	g.add("journal", c.cloud.start, c.cloud.closeJournal)
	g.add("cloud-poll", func(context.Context) error { return nil }, c.cloud.stopPolling)
	g.add("cloud-outbox", func(context.Context) error { return nil }, c.cloud.stop)
	g.add("telemetry", c.tele.Start, c.tele.Stop)
	g.add("admin", c.admin.Start, c.stopAdmin) // backup.go
	g.add("peers", c.envs.peers.start, c.envs.peers.close)
	// The stop order: drain calls first (their replies still need the MQTT
	// client; the admin API keeps answering health and sync calls while
	// they finish), then stop taking requests, then telemetry (its hub
	// publishes through the MQTT client), then the MQTT client and the
	// broker, and the runtime, the device registry (it writes last seen
	// back) and the store last.
	// Cloud: stop polling before the drain, flush the outbox after it while
	// the link is up, close the journal after the last writer (cloud.go).
	g.stopOrder = []string{"cloud-poll", "scheduler", "cloud-outbox", "admin", "telemetry", "shadows", "mqtt", "broker", "journal", "peers", "runtime", "devices", "store"}
	return c
}

// Registry is the daemon's metrics registry.
func (c *Coordinator) Registry() *prometheus.Registry { return c.reg }

// Ready is closed once every part has started.
func (c *Coordinator) Ready() <-chan struct{} { return c.ready }

// AdminAddr is the admin API's address once the daemon runs.
func (c *Coordinator) AdminAddr() string { return c.admin.Addr() }

func (c *Coordinator) openStore(context.Context) error {
	db, err := store.Open(filepath.Join(c.cfg.Load().DataDir, "state"), c.cfg.Load().Storage, c.log.With("part", "store"))
	if err != nil {
		return err
	}
	if err := blobFormat.OpenDir(c.blobDir(), c.log.With("part", "blobs")); err != nil {
		_ = db.Close()
		return err
	}
	c.db = db
	c.kvCommit = store.NewCommitter(db)
	c.kvCommit.Start()
	return nil
}

func (c *Coordinator) startRuntime(ctx context.Context) error {
	if err := c.engine.Start(ctx); err != nil {
		return err
	}
	c.envs.start(ctx)
	// Config tasks and deployed tasks (registry.go) form one set. A
	// deployed task that no longer loads must not keep the daemon down:
	// fall back to the config's tasks and say why.
	if err := c.loadDeployments(ctx); err != nil {
		return err
	}
	c.collectBlobs("start", true) // before the admin API takes uploads (blobgc.go)
	set, err := c.engine.Load(ctx, c.allSpecs(c.cfg.Load().Tasks, c.deployments()))
	if err != nil && len(c.deployments()) > 0 {
		c.log.Error("deployed tasks failed to load; running the config's tasks only", "err", err)
		set, err = c.engine.Load(ctx, taskSpecs(c.cfg.Load().Tasks))
	}
	if err != nil {
		return err
	}
	c.engine.Activate(set)
	return nil
}

func (c *Coordinator) startClient(ctx context.Context) error {
	cfg := c.cfg.Load()
	log := c.log.With("part", "mqtt")
	if c.broker != nil {
		// The embedded broker: in process, no TCP hop.
		cl := devices.NewInlineClient(c.broker, cfg.MQTT, c.onMessage, log, c.reg)
		cl.SetManualAck(true) // QoS 1 routes: journaled by the broker (intake.go)
		c.client = cl
	} else {
		cl := devices.NewClient(cfg.MQTT, cfg.MQTT.URL, c.onMessage, log, c.reg)
		cl.SetManualAck(true) // QoS 1 routes: acknowledged once journaled (intake.go)
		c.client = cl
	}
	c.client.SetSubscriptions(subscriptions(c.routes.Load()))
	return c.client.Start(ctx)
}

// bus is the daemon's MQTT client: devices.InlineClient on the embedded
// broker, devices.Client (paho) on an external one.
type bus interface {
	SetSubscriptions([]devices.Subscription)
	Start(context.Context) error
	Stop(context.Context) error
	Publish(ctx context.Context, topic string, qos byte, payload []byte) error
	Connected() bool
}

var (
	_ bus = (*devices.Client)(nil)
	_ bus = (*devices.InlineClient)(nil)
)

func (c *Coordinator) drain(ctx context.Context) error {
	d := c.cfg.Load().Scheduler.DrainTimeout.Std()
	if st := c.sched.Stats(); st.Queued+st.Running > 0 {
		c.log.Info("draining calls", "queued", st.Queued, "running", st.Running, "deadline", d)
	}
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	if err := c.sched.Drain(ctx); err != nil {
		// Cutting calls short at the deadline is what the operator asked
		// for with drain_timeout, not a failure to stop.
		c.log.Warn("drain incomplete", "err", err)
	}
	return nil
}

// Run starts the daemon and serves until ctx ends or SIGTERM/SIGINT comes,
// then drains and stops it. SIGHUP reloads tasks and routes from load().
func (c *Coordinator) Run(ctx context.Context, load func() (*configs.Config, error)) error {
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	defer signal.Stop(sigs)

	c.boot = time.Now()
	if err := c.group.start(ctx); err != nil {
		return err
	}
	cfg := c.cfg.Load()
	logWarnings(c.log, cfg)
	c.log.Info("outpost ready", "node", cfg.Node.ID, "version", c.version, "admin", c.admin.Addr(),
		"mqtt", c.mqttAddr(), "tasks", len(c.engine.Tasks()), "routes", len(cfg.Routes))
	notify(c.log, daemon.SdNotifyReady)
	close(c.ready)

	wctx, stopWatchdog := context.WithCancel(ctx)
	defer stopWatchdog()
	go watchdog(wctx, c.log, func() bool { c.sched.Stats(); return true })

loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case s := <-sigs:
			if s == syscall.SIGHUP {
				c.reloadFrom(ctx, load)
				continue
			}
			c.log.Info("stopping", "signal", s.String())
			break loop
		}
	}
	notify(c.log, daemon.SdNotifyStopping)
	stopCtx, cancel := context.WithTimeout(context.Background(), cfg.Scheduler.DrainTimeout.Std()+30*time.Second)
	defer cancel()
	err := c.group.stop(stopCtx)
	c.log.Info("outpost stopped")
	return err
}

// logWarnings logs the config's warnings (settings that may not do what
// was meant) at WARN.
func logWarnings(log *slog.Logger, cfg *configs.Config) {
	for _, w := range cfg.Warnings {
		log.Warn("config warning", "warning", w.String())
	}
}

func (c *Coordinator) reloadFrom(ctx context.Context, load func() (*configs.Config, error)) {
	notify(c.log, daemon.SdNotifyReloading)
	defer notify(c.log, daemon.SdNotifyReady)
	if load == nil {
		c.log.Warn("reload ignored: the daemon runs on built-in defaults (start it with --config to reload)")
		return
	}
	c.log.Info("reload started")
	cfg, err := load()
	if err == nil {
		logWarnings(c.log, cfg)
		err = c.Reload(ctx, cfg)
	}
	if err != nil {
		c.m.reloads.WithLabelValues("rejected").Inc()
		var ps configs.Problems
		if errors.As(err, &ps) {
			for _, p := range ps {
				c.log.Error("reload rejected: config problem", "problem", p.String())
			}
		} else {
			c.log.Error("reload rejected; keeping the running config", "err", err)
		}
		return
	}
	c.m.reloads.WithLabelValues("ok").Inc()
}

// Reload swaps in the tasks and routes of a validated configs and reloads
// the admin API's token and TLS files. Every module is compiled and
// checked first: if any fails, nothing changes. Calls in
// flight finish on the tasks they started with.
func (c *Coordinator) Reload(ctx context.Context, cfg *configs.Config) error {
	c.reloadMu.Lock()
	defer c.reloadMu.Unlock()
	specs := c.allSpecs(cfg.Tasks, c.deployments()) // config + deployed tasks
	// Compiling a Go-built module takes seconds: say so before it starts.
	c.log.Info("compiling task modules", "tasks", len(specs))
	set, err := c.engine.Load(ctx, specs)
	if err != nil {
		return fmt.Errorf("load tasks: %w", err)
	}
	old := c.cfg.Load()
	// The broker's access rules, device limits and TLS certificates.
	applyBroker, brokerRestart := func() {}, []string(nil)
	if c.broker != nil && !cfg.MQTT.External() {
		if applyBroker, brokerRestart, err = c.broker.PrepareReload(cfg.MQTT.Broker); err != nil {
			return err
		}
	}
	// The admin token and TLS files are read again (to rotate them); the
	// last step that can fail, so a refused reload changes nothing.
	if err := c.admin.ReloadCredentials(); err != nil {
		return err
	}
	c.engine.Activate(set)
	applyBroker()
	table := routes.New(cfg.Routes)
	c.routes.Store(table)
	c.client.SetSubscriptions(subscriptions(table))
	for _, key := range append(restartOnly(old, cfg), brokerRestart...) {
		c.log.Warn("config change needs a restart to take effect", "key", key)
	}
	// The running config keeps every setting a reload cannot apply, so what
	// it says is what runs.
	next := *old
	next.Tasks, next.Routes, next.Source = cfg.Tasks, cfg.Routes, cfg.Source
	if c.broker != nil && !cfg.MQTT.External() {
		b := &next.MQTT.Broker
		b.Anonymous, b.Groups, b.Limits = cfg.MQTT.Broker.Anonymous, cfg.MQTT.Broker.Groups, cfg.MQTT.Broker.Limits
		b.TLS.CertFile, b.TLS.KeyFile, b.TLS.ClientCAFile = cfg.MQTT.Broker.TLS.CertFile, cfg.MQTT.Broker.TLS.KeyFile, cfg.MQTT.Broker.TLS.ClientCAFile
		b.TLS.RequireClientCert = cfg.MQTT.Broker.TLS.RequireClientCert
	}
	c.storeConfig(&next)
	c.log.Info("config reloaded", "tasks", len(c.engine.Tasks()), "routes", len(cfg.Routes))
	return nil
}

// storeConfig makes cfg the running config, its tasks indexed by name
// for the lookups of every call (configTask). A lookup between the two
// stores finds a task of either config, as one just before or just after
// the swap would.
func (c *Coordinator) storeConfig(cfg *configs.Config) {
	idx := make(map[string]*tasks.Task, len(cfg.Tasks))
	for i := range cfg.Tasks {
		idx[cfg.Tasks[i].Name] = &cfg.Tasks[i]
	}
	c.configTasks.Store(&idx)
	c.cfg.Store(cfg)
}

// configTask returns the running config's task name.
func (c *Coordinator) configTask(name string) (tasks.Task, bool) {
	if t := (*c.configTasks.Load())[name]; t != nil {
		return *t, true
	}
	return tasks.Task{}, false
}

// restartOnly lists changed settings that a reload cannot apply.
func restartOnly(a, b *configs.Config) []string {
	var keys []string
	check := func(key string, changed bool) {
		if changed {
			keys = append(keys, key)
		}
	}
	check("data_dir", a.DataDir != b.DataDir)
	check("node.id", a.Node.ID != b.Node.ID)
	check("log", a.Log != b.Log)
	check("admin", a.Admin != b.Admin)
	check("storage", a.Storage != b.Storage)
	check("scheduler", a.Scheduler != b.Scheduler)
	// The embedded broker's settings are the broker's to judge (PrepareReload).
	am, bm := a.MQTT, b.MQTT
	if !am.External() && !bm.External() {
		am.Broker, bm.Broker = devices.BrokerConfig{}, devices.BrokerConfig{}
	}
	check("mqtt", fmt.Sprint(am) != fmt.Sprint(bm))
	check("telemetry", fmt.Sprint(a.Telemetry) != fmt.Sprint(b.Telemetry))
	check("cloud", fmt.Sprint(a.Cloud) != fmt.Sprint(b.Cloud))
	return keys
}

func (c *Coordinator) mqttAddr() string {
	if c.broker != nil {
		return c.broker.Addr()
	}
	return c.cfg.Load().MQTT.URL
}

// Health implements admin.Node.
func (c *Coordinator) Health() admin.Health {
	cfg := c.cfg.Load()
	st := c.sched.Stats()
	h := admin.Health{
		Status:    "ok",
		Node:      cfg.Node.ID,
		Version:   c.version,
		Uptime:    time.Since(c.boot).Seconds(),
		MQTT:      admin.MQTTHealth{Broker: "embedded", Addr: c.mqttAddr()},
		Scheduler: admin.SchedulerStats{Queued: st.Queued, Running: st.Running, Workers: st.Workers, Draining: st.Draining},
		Tasks:     len(c.engine.Tasks()) + len(c.processOnlyTasks()),
	}
	if cfg.MQTT.External() {
		h.MQTT.Broker = "external"
	}
	h.MQTT.Connected = c.client != nil && c.client.Connected()
	if !h.MQTT.Connected {
		h.Status = "degraded"
		h.Problems = append(h.Problems, "not connected to the MQTT broker at "+c.mqttAddr())
	}
	// A cloud link that is down does not make the node unhealthy: local
	// work goes on and results wait in the outbox. Its state is shown.
	if c.cloud != nil && c.cloud.link != nil {
		h.Cloud = &admin.CloudHealth{URL: cfg.Cloud.URL, State: c.cloud.link.State()}
	}
	if st.Draining {
		h.Status = "draining"
	}
	return h
}

// Tasks implements admin.Node.
func (c *Coordinator) Tasks() []admin.Task {
	infos := c.engine.Tasks()
	out := make([]admin.Task, len(infos))
	for i, t := range infos {
		out[i] = adminTask(t)
	}
	for _, t := range c.processOnlyTasks() {
		out = append(out, nativeAdminTask(t))
	}
	slices.SortFunc(out, func(a, b admin.Task) int { return strings.Compare(a.Name, b.Name) })
	return out
}

func adminTask(t outpostrt.TaskInfo) admin.Task {
	return admin.Task{
		Name: t.Name, ABI: t.ABI, Module: t.Module, Digest: t.Digest, Size: t.Size,
		MemoryLimit: t.Limits.MemoryLimit, Timeout: t.Limits.Timeout.Seconds(), Concurrency: t.Limits.Concurrency,
	}
}

// MaxInput implements admin.InputLimiter: the task's limits.max_input.
func (c *Coordinator) MaxInput(task string) (int64, bool) {
	if t, ok := c.processOnly(task); ok {
		return int64(t.Limits.MaxInput), true
	}
	l, ok := c.engine.Limits(task)
	return int64(l.MaxInput), ok
}

var _ admin.InputLimiter = (*Coordinator)(nil)

// Call implements admin.Node: a synchronous call through the scheduler.
func (c *Coordinator) Call(ctx context.Context, call *calls.Call) (calls.Result, error) {
	return c.sched.Do(ctx, call)
}

// CheckTasks compiles and validates every task module of cfg without
// running anything, for `outpost check`.
func CheckTasks(ctx context.Context, cfg *configs.Config) error {
	return outpostrt.Check(ctx, taskSpecs(cfg.Tasks))
}
