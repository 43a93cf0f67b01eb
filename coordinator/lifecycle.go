package coordinator

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"syscall"
)

// listenKeys names the config keys of the addresses a part listens on, for
// the error that says which key to change when a port is taken.
var listenKeys = map[string]string{
	"admin":     "admin.listen",
	"broker":    "mqtt.broker.listen",
	"telemetry": "telemetry.gnmi_server.listen or telemetry.snmp.traps.listen",
}

// part is one long-lived component: start opens its resources, stop
// releases them and works after a partial start.
type part struct {
	name    string
	start   func(context.Context) error
	stop    func(context.Context) error
	started bool
}

// group starts parts in order and stops the started ones in a written
// stop order, which is not simply the reverse: calls are drained while the
// MQTT client that carries their replies and the stores are still up.
type group struct {
	parts     []*part
	stopOrder []string
	log       *slog.Logger
}

func (g *group) add(name string, start, stop func(context.Context) error) {
	g.parts = append(g.parts, &part{name: name, start: start, stop: stop})
}

// start starts every part in order; on the first failure it stops the
// parts already started and returns the error.
func (g *group) start(ctx context.Context) error {
	for _, p := range g.parts {
		if err := p.start(ctx); err != nil {
			g.stop(context.Background())
			if errors.Is(err, syscall.EADDRINUSE) {
				return fmt.Errorf("start %s: %w; another process holds the port (`ss -ltnp` shows which): stop it or change %s in the config", p.name, err, listenKeys[p.name])
			}
			return fmt.Errorf("start %s: %w", p.name, err)
		}
		p.started = true
		g.log.Debug("started", "part", p.name)
	}
	return nil
}

// stop stops the started parts in stopOrder, going on past errors.
func (g *group) stop(ctx context.Context) error {
	var errs []error
	for _, name := range g.stopOrder {
		for _, p := range g.parts {
			if p.name != name || !p.started {
				continue
			}
			p.started = false
			if err := p.stop(ctx); err != nil {
				g.log.Warn("stop failed", "part", p.name, "err", err)
				errs = append(errs, fmt.Errorf("stop %s: %w", p.name, err))
			} else {
				g.log.Debug("stopped", "part", p.name)
			}
		}
	}
	return errors.Join(errs...)
}
