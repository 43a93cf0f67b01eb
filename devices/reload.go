package devices

import (
	"fmt"
	"reflect"
)

// PrepareReload reads what reloading the running broker to cfg needs (the
// certificate of the TLS and wss:// listeners, key and client CAs, read again even when
// their names did not change) and returns the function that applies it:
// the access rules (groups, anonymous rules), the per-device limits and
// the TLS material, without dropping a connected client. A client whose
// grants a new rule removed loses them at once; the next TLS handshake
// uses the new certificate. The other settings it lists in restart: they
// take effect at the next start. On an error nothing changes.
func (b *Broker) PrepareReload(cfg BrokerConfig) (apply func(), restart []string, err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.access == nil || b.stopped {
		return nil, nil, fmt.Errorf("reload broker: %w", ErrNotRunning)
	}
	var m *tlsMaterial
	if b.tlsCur.Load() != nil && (cfg.TLS.Enabled() || cfg.WebSocket.TLS) {
		if m, err = loadTLS(cfg.TLS); err != nil {
			return nil, nil, fmt.Errorf("reload broker: %w", err)
		}
	}
	restart = restartOnly(b.cfg, cfg)
	h, l := b.access, b.limits
	apply = func() {
		if m != nil {
			b.tlsCur.Store(m)
		}
		l.cfg.Store(&cfg.Limits)
		h.reload(newRules(cfg.Anonymous, cfg.Groups))
		b.log.Info("broker reloaded: access rules, device limits and tls certificates", "groups", len(cfg.Groups))
	}
	return apply, restart, nil
}

// restartOnly lists the keys of mqtt.broker that differ between the
// running settings and cfg and that a reload does not apply.
func restartOnly(running, cfg BrokerConfig) []string {
	var keys []string
	rt, rv, cv := reflect.TypeFor[BrokerConfig](), reflect.ValueOf(running), reflect.ValueOf(cfg)
	for i := range rt.NumField() {
		f := rt.Field(i)
		switch f.Name {
		case "Anonymous", "Groups", "Limits":
			continue
		case "TLS":
			a, c := running.TLS, cfg.TLS
			if a.Listen != c.Listen || a.Identity != c.Identity {
				keys = append(keys, "mqtt.broker.tls")
			}
			continue
		}
		if !reflect.DeepEqual(rv.Field(i).Interface(), cv.Field(i).Interface()) {
			keys = append(keys, "mqtt.broker."+f.Tag.Get("yaml"))
		}
	}
	return keys
}
