// Package mqttload is a load generator for MQTT echo services: a fleet of
// devices, each a paho client of its own, publishing on its own topic and
// waiting for the echo on its reply topic, with a bounded number of messages
// in flight per device. It measures messages per second and the round-trip
// latency of every message (p50, p99).
//
// It drives any broker with any echo behind it: Outpost with its embedded
// broker and an echo route (PREFIX/+/in to PREFIX/{1}/out), or a bare broker
// with the plain echo client of this package (Echo) doing the same work.
package mqttload

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
)

// Options describe one load run.
type Options struct {
	URL     string // the broker, tcp://HOST:PORT
	Prefix  string // devices publish on PREFIX/devNNN/in and wait on PREFIX/devNNN/out
	Devices int    // connected devices (default 50)
	Window  int    // messages in flight per device (default 4)
	QoS     byte   // of the publishes and of the reply subscriptions
	Payload int    // bytes per message, at least 8 (default 16)
	// Persistent gives each device a persistent session (CleanSession
	// false), as devices that need QoS 1 delivery across reconnects have.
	Persistent bool
	// Stall fails the run when no reply arrives for this long (default 30 s).
	Stall time.Duration
}

// Result is what a run measured.
type Result struct {
	Messages int           // echoes received
	Elapsed  time.Duration // from the first publish to the last echo
	P50, P99 time.Duration // round trip: publish to echo
}

// PerSecond is the throughput of the run.
func (r Result) PerSecond() float64 { return float64(r.Messages) / r.Elapsed.Seconds() }

// InTopic and OutTopic are device dev's topics.
func InTopic(prefix string, dev int) string  { return fmt.Sprintf("%s/dev%03d/in", prefix, dev) }
func OutTopic(prefix string, dev int) string { return fmt.Sprintf("%s/dev%03d/out", prefix, dev) }

// ErrStalled is returned when echoes stop arriving.
var ErrStalled = errors.New("mqttload: echoes stopped arriving")

func (o Options) withDefaults() Options {
	if o.Devices <= 0 {
		o.Devices = 50
	}
	if o.Window <= 0 {
		o.Window = 4
	}
	if o.Payload < 8 {
		o.Payload = 16
	}
	if o.Stall <= 0 {
		o.Stall = 30 * time.Second
	}
	if o.Prefix == "" {
		o.Prefix = "load"
	}
	return o
}

// device is one connected device with its window and its latencies.
type device struct {
	cl     paho.Client
	window chan struct{}
	lat    []time.Duration // written by the client's handler goroutine only
}

// Fleet is a set of connected devices; Run can be called on it more than
// once (a benchmark runs it for every b.N).
type Fleet struct {
	opts    Options
	devs    []*device
	base    time.Time
	replies atomic.Int64
}

// Connect connects the devices and subscribes each to its reply topic.
func Connect(opts Options) (*Fleet, error) {
	opts = opts.withDefaults()
	f := &Fleet{opts: opts, base: time.Now()}
	run := time.Now().UnixNano()
	for i := range opts.Devices {
		d := &device{window: make(chan struct{}, opts.Window)}
		po := paho.NewClientOptions().AddBroker(opts.URL).
			SetClientID(fmt.Sprintf("%s-dev%03d-%d", strings.ReplaceAll(opts.Prefix, "/", "-"), i, run)).
			SetCleanSession(!opts.Persistent).SetAutoReconnect(false).SetWriteTimeout(10 * time.Second).
			SetDefaultPublishHandler(func(_ paho.Client, m paho.Message) { f.echo(d, m.Payload()) })
		d.cl = paho.NewClient(po)
		f.devs = append(f.devs, d)
		if tok := d.cl.Connect(); tok.Wait() && tok.Error() != nil {
			f.Close()
			return nil, fmt.Errorf("connect device %d: %w", i, tok.Error())
		}
		if tok := d.cl.Subscribe(OutTopic(opts.Prefix, i), opts.QoS, nil); tok.Wait() && tok.Error() != nil {
			f.Close()
			return nil, fmt.Errorf("subscribe device %d: %w", i, tok.Error())
		}
	}
	return f, nil
}

// echo records the round trip of an echoed message and frees its slot.
func (f *Fleet) echo(d *device, payload []byte) {
	if len(payload) < 8 {
		return
	}
	sent := time.Duration(binary.BigEndian.Uint64(payload))
	d.lat = append(d.lat, time.Since(f.base)-sent)
	f.replies.Add(1)
	select {
	case <-d.window:
	default:
	}
}

// Run sends about messages messages, shared out evenly between the devices
// (at least one each), and waits for every echo.
func (f *Fleet) Run(ctx context.Context, messages int) (Result, error) {
	per := max(1, messages/len(f.devs))
	total := per * len(f.devs)
	for _, d := range f.devs {
		d.lat = d.lat[:0]
	}
	f.replies.Store(0)
	start := time.Now()
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for i, d := range f.devs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			topic := InTopic(f.opts.Prefix, i)
			for range per {
				select {
				case d.window <- struct{}{}:
				case <-stop:
					return
				}
				p := make([]byte, f.opts.Payload)
				binary.BigEndian.PutUint64(p, uint64(time.Since(f.base)))
				d.cl.Publish(topic, f.opts.QoS, false, p)
			}
		}()
	}
	var err error
	last, lastChange := int64(0), time.Now()
	for {
		got := f.replies.Load()
		if got >= int64(total) {
			break
		}
		if got != last {
			last, lastChange = got, time.Now()
		}
		if time.Since(lastChange) > f.opts.Stall {
			err = fmt.Errorf("%w: %d of %d after %s", ErrStalled, got, total, f.opts.Stall)
			break
		}
		if ctx.Err() != nil {
			err = ctx.Err()
			break
		}
		time.Sleep(200 * time.Microsecond)
	}
	elapsed := time.Since(start)
	close(stop)
	wg.Wait()
	if err != nil {
		return Result{}, err
	}
	// Every echo is in: the handlers have appended their last latency
	// before counting it.
	var lat []time.Duration
	for _, d := range f.devs {
		lat = append(lat, d.lat...)
		for len(d.window) > 0 { // held by a message whose echo was counted twice (a QoS 1 redelivery)
			<-d.window
		}
	}
	slices.Sort(lat)
	return Result{Messages: total, Elapsed: elapsed, P50: lat[len(lat)/2], P99: lat[len(lat)*99/100]}, nil
}

// Close disconnects the devices.
func (f *Fleet) Close() {
	for _, d := range f.devs {
		d.cl.Disconnect(50)
	}
}

// Echo connects a plain echo service to the broker at url: one paho client
// subscribed to PREFIX/+/in that republishes every message unchanged on
// PREFIX/{device}/out at qos, without waiting for acknowledgements (a
// handler must not block). persistent gives it a persistent session. Stop
// it with the returned function.
func Echo(url, prefix string, qos byte, persistent bool) (stop func(), err error) {
	return echo(url, prefix+"/+/in", qos, persistent, func(topic string) string {
		return strings.TrimSuffix(topic, "/in") + "/out"
	})
}

// echo connects a paho client subscribed to filter that republishes every
// message unchanged on reply(its topic) at qos.
func echo(url, filter string, qos byte, persistent bool, reply func(string) string) (stop func(), err error) {
	var cl paho.Client
	po := paho.NewClientOptions().AddBroker(url).
		SetClientID(fmt.Sprintf("echo-%d", time.Now().UnixNano())).
		SetCleanSession(!persistent).SetAutoReconnect(false).SetWriteTimeout(10 * time.Second).
		SetDefaultPublishHandler(func(_ paho.Client, m paho.Message) {
			cl.Publish(reply(m.Topic()), qos, false, m.Payload())
		})
	cl = paho.NewClient(po)
	if tok := cl.Connect(); tok.Wait() && tok.Error() != nil {
		return nil, fmt.Errorf("connect echo: %w", tok.Error())
	}
	if tok := cl.Subscribe(filter, qos, nil); tok.Wait() && tok.Error() != nil {
		cl.Disconnect(50)
		return nil, fmt.Errorf("subscribe echo: %w", tok.Error())
	}
	return func() { cl.Disconnect(50) }, nil
}
