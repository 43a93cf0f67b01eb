package devices

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"sync"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/outpost-edge/outpost/internal/store"
)

// Device is a registered device as the admin API shows it: never its
// secret or the secret's hash.
type Device struct {
	ID       string    `json:"id"`
	Disabled bool      `json:"disabled"`
	Groups   []string  `json:"groups"`
	Created  time.Time `json:"created"`
	LastSeen time.Time `json:"last_seen,omitzero"`
	Address  string    `json:"address,omitempty"` // remote address of the last connection
	// Connected: at least one connection now (not kept across restarts).
	Connected bool `json:"connected"`
	// DisconnectReason is why the last connection ended (presence.go):
	// clean, will, timeout or kicked.
	DisconnectReason string `json:"disconnect_reason,omitempty"`
}

// State is "enabled" or "disabled".
func (d Device) State() string {
	if d.Disabled {
		return "disabled"
	}
	return "enabled"
}

// record is a device as stored in the state store (bucket "devices", key
// the device id).
type record struct {
	Device
	Hash []byte `json:"hash"` // bcrypt of the secret
	// Mosquitto is the secret's hash in Mosquitto's password file format
	// (mosquitto.go), for export-mosquitto; "" for a device registered
	// before it was kept.
	Mosquitto string `json:"mosquitto,omitempty"`
}

// entry is a device held in memory. verified is the sha256 of the secret
// that last passed bcrypt, so that a reconnect does not pay for bcrypt
// again.
type entry struct {
	rec      record
	verified [sha256.Size]byte
	ok       bool  // verified is set
	conns    int   // connections now
	events   int64 // presence events so far (their versionNumber)
}

// Registry holds the registered devices: kept in the state store, read
// once at Open and served from memory. Last seen and address are written
// back in batches (flushEvery), not once per connection.
//
// Lock order: mu only.
type Registry struct {
	log *slog.Logger

	mu      sync.Mutex // guards the fields below
	bucket  store.Bucket
	open    bool
	devices map[string]*entry
	dirty   map[string]bool // last seen changed, not yet written
	online  int             // devices with conns > 0
	stop    chan struct{}
	done    chan struct{}
}

// flushEvery is how often last seen and addresses are written.
const flushEvery = 10 * time.Second

// secretBytes is the size of a generated secret before encoding.
const secretBytes = 24

// secretCost is the bcrypt cost of a stored secret. Tests lower it: under
// the race detector one hash at the default cost takes a second of CPU.
var secretCost = bcrypt.DefaultCost

// NewRegistry returns an empty registry; Open loads it.
func NewRegistry(log *slog.Logger) *Registry {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Registry{log: log.With("component", "devices"), devices: map[string]*entry{}, dirty: map[string]bool{}}
}

// Open reads the devices of bucket and starts writing last seen back.
func (r *Registry) Open(ctx context.Context, bucket store.Bucket) error {
	devs := map[string]*entry{}
	err := bucket.Scan(ctx, nil, func(k, v []byte) error {
		var rec record
		if err := json.Unmarshal(v, &rec); err != nil {
			return fmt.Errorf("device %q: %w", k, err)
		}
		rec.Connected = false // connections did not outlive the process
		devs[rec.ID] = &entry{rec: rec}
		return nil
	})
	if err != nil {
		return fmt.Errorf("load devices: %w", err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.bucket, r.devices, r.open = bucket, devs, true
	r.stop, r.done = make(chan struct{}), make(chan struct{})
	go r.flushLoop(r.stop, r.done)
	r.log.Info("device registry loaded", "devices", len(devs))
	return nil
}

// Close writes last seen back and stops. It is safe without Open and twice.
func (r *Registry) Close(context.Context) error {
	r.mu.Lock()
	if !r.open {
		r.mu.Unlock()
		return nil
	}
	r.open = false
	close(r.stop)
	done := r.done
	r.mu.Unlock()
	<-done
	return r.flush()
}

func (r *Registry) flushLoop(stop, done chan struct{}) {
	defer close(done)
	t := time.NewTicker(flushEvery)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
			if err := r.flush(); err != nil {
				r.log.Warn("write device last seen", "err", err)
			}
		}
	}
}

// flush writes the records whose last seen changed.
func (r *Registry) flush() error {
	r.mu.Lock()
	var recs []record
	for id := range r.dirty {
		if e, ok := r.devices[id]; ok {
			recs = append(recs, e.rec)
		}
	}
	clear(r.dirty)
	r.mu.Unlock()
	// One write batch: the store syncs every write, once for a batch.
	return r.bucket.Write(func(w *store.Batch) error {
		for _, rec := range recs {
			v, err := json.Marshal(rec)
			if err != nil {
				return err
			}
			if err := w.Put(r.bucket, []byte(rec.ID), v); err != nil {
				return fmt.Errorf("store device %q: %w", rec.ID, err)
			}
		}
		return nil
	})
}

func (r *Registry) put(rec record) error {
	v, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	if err := r.bucket.Put([]byte(rec.ID), v); err != nil {
		return fmt.Errorf("store device %q: %w", rec.ID, err)
	}
	return nil
}

// Add registers a device with groups and returns its generated secret,
// which is not kept (only its bcrypt hash and its Mosquitto hash are).
func (r *Registry) Add(id string, groups []string) (Device, string, error) {
	if !ValidDeviceID(id) {
		return Device{}, "", fmt.Errorf("%w: device id %q: letters, digits, '.', '_' and '-', at most 128, starting with a letter or digit", ErrInvalidDevice, id)
	}
	b := make([]byte, secretBytes)
	_, _ = rand.Read(b) // never fails (crypto/rand)
	secret := base64.RawURLEncoding.EncodeToString(b)
	hash, err := bcrypt.GenerateFromPassword([]byte(secret), secretCost)
	if err != nil {
		return Device{}, "", fmt.Errorf("hash device secret: %w", err)
	}
	mosq, err := newMosquittoHash(secret)
	if err != nil {
		return Device{}, "", err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.open {
		return Device{}, "", fmt.Errorf("add device %q: %w", id, ErrStopped)
	}
	if _, ok := r.devices[id]; ok {
		return Device{}, "", fmt.Errorf("%w: device %q", ErrDeviceExists, id)
	}
	rec := record{Device: Device{ID: id, Groups: slices.Clone(groups), Created: time.Now().UTC()}, Hash: hash, Mosquitto: mosq}
	if rec.Groups == nil {
		rec.Groups = []string{}
	}
	if err := r.put(rec); err != nil {
		return Device{}, "", err
	}
	r.devices[id] = &entry{rec: rec}
	r.log.Info("device added", "device", id, "groups", groups)
	return rec.Device, secret, nil
}

// List returns the devices by id.
func (r *Registry) List() []Device {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]Device, 0, len(r.devices))
	for _, e := range r.devices {
		out = append(out, e.rec.Device)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// Get returns one device.
func (r *Registry) Get(id string) (Device, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	e, ok := r.devices[id]
	if !ok {
		return Device{}, fmt.Errorf("%w: device %q", ErrUnknownDevice, id)
	}
	return e.rec.Device, nil
}

// SetDisabled disables or enables a device. A disabled device is refused
// at its next connection (the broker disconnects it at once: Broker.Kick).
func (r *Registry) SetDisabled(id string, disabled bool) (Device, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	e, ok := r.devices[id]
	if !ok {
		return Device{}, fmt.Errorf("%w: device %q", ErrUnknownDevice, id)
	}
	rec := e.rec
	rec.Disabled = disabled
	if err := r.put(rec); err != nil {
		return Device{}, err
	}
	e.rec = rec
	r.log.Info("device "+rec.State(), "device", id)
	return rec.Device, nil
}

// Remove forgets a device.
func (r *Registry) Remove(id string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.devices[id]; !ok {
		return fmt.Errorf("%w: device %q", ErrUnknownDevice, id)
	}
	if err := r.bucket.Delete([]byte(id)); err != nil {
		return fmt.Errorf("remove device %q: %w", id, err)
	}
	if r.devices[id].conns > 0 {
		r.online--
	}
	delete(r.devices, id)
	delete(r.dirty, id)
	r.log.Info("device removed", "device", id)
	return nil
}

// Known reports whether id is a registered device (enabled or not).
func (r *Registry) Known(id string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	_, ok := r.devices[id]
	return ok
}

// Authenticate checks a device's secret; it returns the device's groups
// when the device exists, is enabled and the secret is right. bcrypt runs
// outside the lock, and once per new secret: a reconnect with the secret
// that passed last time is checked against its sha256.
func (r *Registry) Authenticate(id string, secret []byte) ([]string, bool) {
	sum := sha256.Sum256(secret)
	r.mu.Lock()
	e, ok := r.devices[id]
	if !ok || e.rec.Disabled {
		r.mu.Unlock()
		return nil, false
	}
	groups, hash := e.rec.Groups, e.rec.Hash
	if e.ok && subtle.ConstantTimeCompare(e.verified[:], sum[:]) == 1 {
		r.mu.Unlock()
		return groups, true
	}
	r.mu.Unlock()
	if bcrypt.CompareHashAndPassword(hash, secret) != nil {
		return nil, false
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if e2, ok := r.devices[id]; ok && e2 == e && !e.rec.Disabled {
		e.verified, e.ok = sum, true
		return groups, true
	}
	return nil, false // removed or disabled meanwhile
}

// Enabled returns the groups of device id when it is registered and
// enabled: a device that proved its identity otherwise (a client
// certificate) logs in without its secret.
func (r *Registry) Enabled(id string) ([]string, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	e, ok := r.devices[id]
	if !ok || e.rec.Disabled {
		return nil, false
	}
	return e.rec.Groups, true
}

// Connected records a connection of device id from address; it is
// written back within flushEvery. It returns the number of the device's
// presence event (0 for an unknown device).
func (r *Registry) Connected(id, address string, at time.Time) (event int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	e, ok := r.devices[id]
	if !ok {
		return 0
	}
	e.rec.LastSeen, e.rec.Address, e.rec.Connected = at.UTC(), address, true
	r.dirty[id] = true
	e.conns++
	e.events++
	if e.conns == 1 {
		r.online++
	}
	return e.events
}

// Disconnected records the end of a connection of device id, and why. It
// returns the number of the device's presence event (0 for an unknown
// device).
func (r *Registry) Disconnected(id, address, reason string, at time.Time) (event int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	e, ok := r.devices[id]
	if !ok || e.conns == 0 {
		return 0
	}
	e.conns--
	e.events++
	e.rec.LastSeen, e.rec.Address, e.rec.DisconnectReason = at.UTC(), address, reason
	e.rec.Connected = e.conns > 0
	r.dirty[id] = true
	if e.conns == 0 {
		r.online--
	}
	return e.events
}

// Online is the number of devices connected now.
func (r *Registry) Online() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.online
}
