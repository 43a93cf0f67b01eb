package coordinator

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/tetratelabs/wazero"

	"github.com/outpost-edge/outpost/configs"
	"github.com/outpost-edge/outpost/coordinator/calls"
	"github.com/outpost-edge/outpost/devices"
	"github.com/outpost-edge/outpost/devices/mqtttest"
	outpostrt "github.com/outpost-edge/outpost/runtime"
	"github.com/outpost-edge/outpost/runtime/builtin"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// testConfig is a valid config on free ports with the echo task routed from
// bench/in to bench/out.
func testConfig(tb testing.TB) *configs.Config {
	tb.Helper()
	yaml := "data_dir: " + tb.TempDir() + `
admin: {listen: "` + mqtttest.FreeAddr(tb) + `"}
mqtt: {broker: {listen: "` + mqtttest.FreeAddr(tb) + `"}}
tasks: [{name: echo, module: builtin:echo, limits: {concurrency: 2}}]
routes: [{topic: "bench/in", task: echo, reply: "bench/out"}]
`
	cfg, err := configs.Parse([]byte(yaml), "test.yaml")
	if err != nil {
		tb.Fatal(err)
	}
	return cfg
}

// startCoordinator runs a coordinator in process until the test ends.
func startCoordinator(tb testing.TB, cfg *configs.Config) *Coordinator {
	tb.Helper()
	return startCoordinatorLog(tb, cfg, quiet)
}

// startCoordinatorLog is startCoordinator logging to log.
func startCoordinatorLog(tb testing.TB, cfg *configs.Config, log *slog.Logger) *Coordinator {
	tb.Helper()
	c, _ := runCoordinator(tb, log, cfg)
	return c
}

// runCoordinator runs a coordinator on cfg until stop is called (or the
// test ends); stop waits for it to end.
func runCoordinator(tb testing.TB, log *slog.Logger, cfg *configs.Config) (c *Coordinator, stop func()) {
	tb.Helper()
	c = New(cfg, log, "test")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx, nil) }()
	select {
	case <-c.Ready():
	case err := <-done:
		tb.Fatalf("coordinator failed to start: %v", err)
	case <-time.After(90 * time.Second): // loose: a Go-built module compiles for tens of seconds under -race on a loaded host
		tb.Fatal("coordinator not ready after 90s")
	}
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				tb.Errorf("coordinator stop: %v", err)
			}
		})
	}
	tb.Cleanup(stop)
	return c, stop
}

func TestCallThroughScheduler(t *testing.T) {
	c := startCoordinator(t, testConfig(t))
	r, err := c.Call(context.Background(), calls.New("echo", []byte("hi"), calls.Source{Kind: "test"}))
	if err != nil || !r.OK() || string(r.Output) != "hi" {
		t.Fatalf("call: %+v %v", r, err)
	}
	if h := c.Health(); h.Status != "ok" || !h.MQTT.Connected || h.Tasks != 1 {
		t.Errorf("health %+v", h)
	}
}

// A start that fails half way stops what it started and says what failed.
func TestPartialStart(t *testing.T) {
	cfg := testConfig(t)
	// Hold the admin port so the last part fails.
	bad := *cfg
	bad.Admin.Listen = cfg.MQTT.Broker.Listen
	c := New(&bad, quiet, "test")
	err := c.Run(context.Background(), nil)
	if err == nil || err.Error() == "" {
		t.Fatal("start on a taken port succeeded")
	}
	// Everything started before the failure was stopped: the data dir and
	// the broker port are free again.
	startCoordinator(t, cfg)
}

// rig is one MQTT echo path to measure: a device publishes on bench/in and
// waits for bench/out.
type rig struct {
	url string
}

func bareBrokerRig(b *testing.B) rig {
	cfg := configs.Defaults().MQTT
	cfg.Broker.Listen = mqtttest.FreeAddr(b)
	br := devices.NewBroker(cfg.Broker, quiet, nil)
	if err := br.Start(context.Background()); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = br.Stop(context.Background()) })
	url := "tcp://" + br.Addr()
	// The baseline echo: a plain client that republishes what it gets.
	var echo paho.Client
	echo = connect(b, url, "echo", func(m paho.Message) { echo.Publish("bench/out", 0, false, m.Payload()) })
	if tok := echo.Subscribe("bench/in", 0, nil); tok.Wait() && tok.Error() != nil {
		b.Fatal(tok.Error())
	}
	return rig{url: url}
}

func outpostRig(b *testing.B) rig {
	c := startCoordinator(b, testConfig(b))
	return rig{url: "tcp://" + c.broker.Addr()}
}

func connect(tb testing.TB, url, id string, h func(paho.Message)) paho.Client {
	opts := paho.NewClientOptions().AddBroker(url).SetClientID(id + "-" + time.Now().Format("150405.000000")).
		SetDefaultPublishHandler(func(_ paho.Client, m paho.Message) { h(m) })
	cl := paho.NewClient(opts)
	if tok := cl.Connect(); tok.Wait() && tok.Error() != nil {
		tb.Fatal(tok.Error())
	}
	tb.Cleanup(func() { cl.Disconnect(50) })
	return cl
}

// device connects a device client that reports each reply on a channel.
func (r rig) device(b *testing.B) (paho.Client, chan struct{}) {
	replies := make(chan struct{}, 1<<16)
	cl := connect(b, r.url, "device", func(paho.Message) { replies <- struct{}{} })
	if tok := cl.Subscribe("bench/out", 0, nil); tok.Wait() && tok.Error() != nil {
		b.Fatal(tok.Error())
	}
	return cl, replies
}

// BenchmarkMQTTRoundTrip compares device → broker → echo task → device with
// the bare broker and a plain echo client, at QoS 0. "throughput" keeps up
// to 256 messages in flight; "latency" sends one at a time and reports the
// median and 99th percentile.
func BenchmarkMQTTRoundTrip(b *testing.B) {
	for _, r := range []struct {
		name string
		rig  func(*testing.B) rig
	}{{"bare-broker", bareBrokerRig}, {"outpost", outpostRig}} {
		b.Run("throughput/"+r.name, func(b *testing.B) {
			dev, replies := r.rig(b).device(b)
			payload := []byte(`{"t":21.5}`)
			const window = 256
			b.ResetTimer()
			start := time.Now()
			sent, got := 0, 0
			timeout := time.After(60 * time.Second)
			for got < b.N {
				for sent < b.N && sent-got < window {
					dev.Publish("bench/in", 0, false, payload)
					sent++
				}
				select {
				case <-replies:
					got++
				case <-timeout:
					b.Fatalf("lost replies: %d of %d", got, b.N)
				}
			}
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msgs/s")
		})
	}
	for _, r := range []struct {
		name string
		rig  func(*testing.B) rig
	}{{"bare-broker", bareBrokerRig}, {"outpost", outpostRig}} {
		b.Run("latency/"+r.name, func(b *testing.B) {
			dev, replies := r.rig(b).device(b)
			payload := []byte(`{"t":21.5}`)
			lat := make([]time.Duration, 0, b.N)
			b.ResetTimer()
			for range b.N {
				t0 := time.Now()
				dev.Publish("bench/in", 0, false, payload)
				select {
				case <-replies:
				case <-time.After(10 * time.Second):
					b.Fatal("reply lost")
				}
				lat = append(lat, time.Since(t0))
			}
			sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
			b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
			b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
		})
	}
}

// BenchmarkCall compares a raw wazero call of the echo module's export with
// the same call through the runtime engine and through the scheduler, one
// call at a time; and calls submitted without waiting (scheduler-async, 4
// workers) with raw calls at the same concurrency (raw-wazero-4: 4
// goroutines, an instance each).
func BenchmarkCall(b *testing.B) {
	input := []byte("0123456789abcdef")
	b.Run("raw-wazero", func(b *testing.B) {
		call := rawEcho(b)
		b.ResetTimer()
		for range b.N {
			if err := call(input); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("raw-wazero-4", func(b *testing.B) {
		const workers = 4
		fns := make([]func([]byte) error, workers)
		for i := range fns {
			fns[i] = rawEcho(b)
		}
		var next atomic.Int64
		var wg sync.WaitGroup
		b.ResetTimer()
		for _, call := range fns {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for next.Add(1) <= int64(b.N) {
					if err := call(input); err != nil {
						b.Error(err)
						return
					}
				}
			}()
		}
		wg.Wait()
	})
	engine := func(b *testing.B) *outpostrt.Engine {
		e := outpostrt.New(outpostrt.Options{})
		ctx := context.Background()
		if err := e.Start(ctx); err != nil {
			b.Fatal(err)
		}
		set, err := e.Load(ctx, []outpostrt.Spec{{Name: "echo", Module: "builtin:echo", Concurrency: 4}})
		if err != nil {
			b.Fatal(err)
		}
		e.Activate(set)
		b.Cleanup(func() { _ = e.Close(ctx) })
		return e
	}
	b.Run("engine", func(b *testing.B) {
		e := engine(b)
		ctx := context.Background()
		b.ResetTimer()
		for range b.N {
			if _, err := e.Call(ctx, "echo", input); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("scheduler", func(b *testing.B) {
		s := calls.NewScheduler(executor{engine(b)}, calls.Options{Workers: 4, QueueSize: 1024}, quiet, nil)
		defer s.Drain(context.Background())
		ctx := context.Background()
		b.ResetTimer()
		for range b.N {
			r, err := s.Do(ctx, calls.New("echo", input, calls.Source{Kind: "bench"}))
			if err != nil || !r.OK() {
				b.Fatal(r, err)
			}
		}
	})
	b.Run("scheduler-async", func(b *testing.B) {
		s := calls.NewScheduler(executor{engine(b)}, calls.Options{Workers: 4, QueueSize: 1 << 20}, quiet, nil)
		defer s.Drain(context.Background())
		var wg sync.WaitGroup
		b.ResetTimer()
		for range b.N {
			wg.Add(1)
			c := calls.New("echo", input, calls.Source{Kind: "bench"})
			c.Done = func(*calls.Call) { wg.Done() }
			for s.Submit(c) != nil {
				time.Sleep(time.Microsecond)
			}
		}
		wg.Wait()
	})
}

// rawEcho instantiates builtin:echo on a wazero runtime of its own and
// returns a call of its export made the way a careful host would:
// CloseOnContextDone, a deadline per call, the input buffer asked once (as
// the engine does), the output copied out.
func rawEcho(b *testing.B) func(input []byte) error {
	ctx := context.Background()
	rt := wazero.NewRuntimeWithConfig(ctx, wazero.NewRuntimeConfigCompiler().WithCloseOnContextDone(true))
	b.Cleanup(func() { _ = rt.Close(ctx) })
	bin, _ := builtin.Lookup("echo")
	mod, err := rt.InstantiateWithConfig(ctx, bin, wazero.NewModuleConfig().WithName(""))
	if err != nil {
		b.Fatal(err)
	}
	handle, mem := mod.ExportedFunction("outpost_handle"), mod.Memory()
	stack := []uint64{1 << 16, 0}
	if err := mod.ExportedFunction("outpost_input_buffer").CallWithStack(ctx, stack); err != nil {
		b.Fatal(err)
	}
	ptr := uint32(stack[0] >> 32)
	return func(input []byte) error {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		mem.Write(ptr, input)
		stack[0], stack[1] = uint64(ptr), uint64(len(input))
		if err := handle.CallWithStack(cctx, stack); err != nil {
			return err
		}
		out, _ := mem.Read(uint32(stack[0]>>32), uint32(stack[0]))
		if len(append([]byte(nil), out...)) != len(input) {
			return errors.New("short output")
		}
		return nil
	}
}
