package mqttload

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// DeviceFleet is a fleet of many devices, each a raw MQTT 3.1.1 connection
// of its own (one reading goroutine, no client library), as AWS IoT
// devices use a broker: device devN (client id devN) subscribes at QoS 0
// to its reply topic devices/devN/out and to its shadow's
// $aws/things/devN/shadow/update/accepted, holds a shadow (one update at
// connect), publishes shadow updates at QoS 1 on
// $aws/things/devN/shadow/update and route messages at QoS 0 on
// devices/devN/in.
//
// Behind the broker, Outpost answers with its shadow service and an echo
// route (devices/+/in to devices/{1}/out); a bare broker with DeviceEcho
// doing the same publish and subscribe round trips.
type DeviceFleet struct {
	addr  string
	devs  []*rawDevice
	base  time.Time
	route struct {
		mu  sync.Mutex
		lat []time.Duration
	}
}

// rawDevice is one connection.
type rawDevice struct {
	id       string
	conn     net.Conn
	wmu      sync.Mutex    // guards writes and nextID
	nextID   uint16        // of QoS 1 publishes
	accepted chan struct{} // one per shadow update accepted
	done     chan struct{} // closed when the reader ends
}

// DeviceID is the id of device i of a DeviceFleet.
func DeviceID(i int) string { return "dev" + strconv.Itoa(i) }

// ConnectDevices connects n devices to addr (host:port), every one
// subscribed and holding a shadow, at most 64 connecting at once.
func ConnectDevices(ctx context.Context, addr string, n int) (*DeviceFleet, error) {
	f := &DeviceFleet{addr: addr, devs: make([]*rawDevice, n), base: time.Now()}
	errs := make(chan error, n)
	sem := make(chan struct{}, 64)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			d, err := f.connect(ctx, DeviceID(i))
			if err != nil {
				errs <- fmt.Errorf("device %d: %w", i, err)
				return
			}
			f.devs[i] = d
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

func (f *DeviceFleet) connect(ctx context.Context, id string) (*rawDevice, error) {
	var dialer net.Dialer
	conn, err := dialer.DialContext(ctx, "tcp", f.addr)
	if err != nil {
		return nil, err
	}
	d := &rawDevice{id: id, conn: conn, accepted: make(chan struct{}, 64), done: make(chan struct{})}
	connect := append([]byte{0, 4, 'M', 'Q', 'T', 'T', 4, 0x02, 0, 120}, mqttString(id)...)
	sub := []byte{0, 1}
	for _, filter := range []string{"devices/" + id + "/out", "$aws/things/" + id + "/shadow/update/accepted"} {
		sub = append(append(sub, mqttString(filter)...), 0)
	}
	_ = conn.SetDeadline(time.Now().Add(60 * time.Second))
	br := bufio.NewReaderSize(conn, 512)
	if _, err := conn.Write(append(packet(0x10, connect), packet(0x82, sub)...)); err != nil {
		conn.Close()
		return nil, err
	}
	for _, want := range []byte{0x20, 0x90} { // CONNACK, SUBACK
		typ, body, err := readPacket(br)
		if err != nil || typ != want || (typ == 0x20 && body[1] != 0) || (typ == 0x90 && slices.Contains(body[2:], 0x80)) {
			conn.Close()
			return nil, fmt.Errorf("connect: packet %#x %x: %v", typ, body, err)
		}
	}
	_ = conn.SetDeadline(time.Time{})
	go f.read(d, br)
	if err := d.updateShadow(0); err != nil {
		conn.Close()
		return nil, err
	}
	select {
	case <-d.accepted:
		return d, nil
	case <-d.done:
		conn.Close()
		return nil, errors.New("connection closed before its shadow was accepted")
	case <-time.After(60 * time.Second):
		conn.Close()
		return nil, errors.New("shadow update not accepted in 60s")
	}
}

// read takes the device's incoming packets until its connection closes.
func (f *DeviceFleet) read(d *rawDevice, br *bufio.Reader) {
	defer close(d.done)
	out := "devices/" + d.id + "/out"
	for {
		typ, body, err := readPacket(br)
		if err != nil {
			return
		}
		if typ&0xf0 != 0x30 || len(body) < 2 {
			continue // PUBACK of an update, PINGRESP
		}
		n := int(binary.BigEndian.Uint16(body))
		if len(body) < 2+n {
			return
		}
		topic, payload := string(body[2:2+n]), body[2+n:] // QoS 0: no packet id
		switch {
		case topic == out && len(payload) >= 8:
			sent := time.Duration(binary.BigEndian.Uint64(payload))
			f.route.mu.Lock()
			f.route.lat = append(f.route.lat, time.Since(f.base)-sent)
			f.route.mu.Unlock()
		case strings.HasSuffix(topic, "/update/accepted"):
			select {
			case d.accepted <- struct{}{}:
			default:
			}
		}
	}
}

// updateShadow publishes a shadow update reporting v at QoS 1.
func (d *rawDevice) updateShadow(v int) error {
	d.wmu.Lock()
	defer d.wmu.Unlock()
	d.nextID = max(1, d.nextID+1)
	body := append(mqttString("$aws/things/"+d.id+"/shadow/update"), byte(d.nextID>>8), byte(d.nextID))
	body = fmt.Appendf(body, `{"state":{"reported":{"v":%d}}}`, v)
	_, err := d.conn.Write(packet(0x32, body))
	return err
}

// publish sends payload on topic at QoS 0.
func (d *rawDevice) publish(topic string, payload []byte) error {
	d.wmu.Lock()
	defer d.wmu.Unlock()
	_, err := d.conn.Write(packet(0x30, append(mqttString(topic), payload...)))
	return err
}

// ShadowUpdates has every device send shadow updates, window at a time
// (each waiting for its /update/accepted), total in all, and returns the
// updates accepted per second.
func (f *DeviceFleet) ShadowUpdates(ctx context.Context, total, window int) (float64, error) {
	per := max(1, total/len(f.devs))
	start := time.Now()
	errs := make(chan error, len(f.devs))
	var wg sync.WaitGroup
	for _, d := range f.devs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			inflight := 0
			for sent, got := 0, 0; got < per; {
				if sent < per && inflight < window {
					if err := d.updateShadow(sent + 1); err != nil {
						errs <- err
						return
					}
					sent++
					inflight++
					continue
				}
				select {
				case <-d.accepted:
					got++
					inflight--
				case <-d.done:
					errs <- fmt.Errorf("%s: connection closed", d.id)
					return
				case <-ctx.Done():
					errs <- ctx.Err()
					return
				case <-time.After(60 * time.Second):
					errs <- fmt.Errorf("%s: no update accepted in 60s", d.id)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return 0, err
	}
	return float64(per*len(f.devs)) / time.Since(start).Seconds(), nil
}

// Route has every device publish one message a second on its
// devices/devN/in for d (the devices spread evenly over each second) and
// returns the round trips to devices/devN/out and how many messages had
// no answer a few seconds after the last.
func (f *DeviceFleet) Route(ctx context.Context, d time.Duration) (Result, int, error) {
	f.route.mu.Lock()
	f.route.lat = f.route.lat[:0]
	f.route.mu.Unlock()
	seconds := int(d / time.Second)
	var sent atomic.Int64
	errs := make(chan error, len(f.devs))
	var wg sync.WaitGroup
	start := time.Now()
	for i, dev := range f.devs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			topic := "devices/" + dev.id + "/in"
			offset := time.Duration(i) * time.Second / time.Duration(len(f.devs))
			for s := range seconds {
				select {
				case <-time.After(time.Until(start.Add(time.Duration(s)*time.Second + offset))):
				case <-ctx.Done():
					return
				}
				p := make([]byte, 16)
				binary.BigEndian.PutUint64(p, uint64(time.Since(f.base)))
				if err := dev.publish(topic, p); err != nil {
					errs <- err
					return
				}
				sent.Add(1)
			}
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return Result{}, 0, err
	}
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		f.route.mu.Lock()
		got := len(f.route.lat)
		f.route.mu.Unlock()
		if int64(got) >= sent.Load() {
			break
		}
	}
	f.route.mu.Lock()
	lat := slices.Clone(f.route.lat)
	f.route.mu.Unlock()
	if len(lat) == 0 {
		return Result{}, int(sent.Load()), errors.New("no route answer")
	}
	slices.Sort(lat)
	return Result{Messages: len(lat), Elapsed: time.Since(start), P50: lat[len(lat)/2], P99: lat[len(lat)*99/100]},
		int(sent.Load()) - len(lat), nil
}

// Close disconnects every device.
func (f *DeviceFleet) Close() {
	for _, d := range f.devs {
		if d != nil {
			d.conn.Close()
			<-d.done
		}
	}
}

// DeviceEcho connects the bare broker's stand-in for Outpost's shadow
// service and echo route to url: it republishes every
// $aws/things/{id}/shadow/update on .../update/accepted and every
// devices/{id}/in on devices/{id}/out, at QoS 0. Stop it with the returned
// function.
func DeviceEcho(url string) (stop func(), err error) {
	var stops []func()
	for _, r := range []struct{ prefix, filter, in, out string }{
		{"devices", "devices/+/in", "/in", "/out"},
		{"$aws/things", "$aws/things/+/shadow/update", "/shadow/update", "/shadow/update/accepted"},
	} {
		s, err := echo(url, r.filter, 0, false, func(topic string) string { return strings.TrimSuffix(topic, r.in) + r.out })
		if err != nil {
			for _, s := range stops {
				s()
			}
			return nil, err
		}
		stops = append(stops, s)
	}
	return func() {
		for _, s := range stops {
			s()
		}
	}, nil
}

// mqttString is s with its 2-byte length.
func mqttString(s string) []byte {
	return append(binary.BigEndian.AppendUint16(nil, uint16(len(s))), s...)
}

// packet is an MQTT packet of type (the first byte) with body.
func packet(typ byte, body []byte) []byte {
	p := []byte{typ}
	for n := len(body); ; {
		b := byte(n % 128)
		n /= 128
		if n > 0 {
			b |= 0x80
		}
		p = append(p, b)
		if n == 0 {
			break
		}
	}
	return append(p, body...)
}

// readPacket reads one MQTT packet: its first byte and its body.
func readPacket(br *bufio.Reader) (byte, []byte, error) {
	typ, err := br.ReadByte()
	if err != nil {
		return 0, nil, err
	}
	n, mul := 0, 1
	for range 4 {
		b, err := br.ReadByte()
		if err != nil {
			return 0, nil, err
		}
		n += int(b&0x7f) * mul
		if b&0x80 == 0 {
			break
		}
		mul *= 128
	}
	body := make([]byte, n)
	_, err = io.ReadFull(br, body)
	return typ, body, err
}
