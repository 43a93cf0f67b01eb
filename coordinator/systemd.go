package coordinator

import (
	"context"
	"log/slog"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
)

// notify sends a state to systemd; outside systemd (no NOTIFY_SOCKET) it
// does nothing.
func notify(log *slog.Logger, state string) {
	if ok, err := daemon.SdNotify(false, state); err != nil {
		log.Warn("systemd notify failed", "state", state, "err", err)
	} else if ok {
		log.Debug("systemd notified", "state", state)
	}
}

// watchdog pings systemd at half the WatchdogSec interval while alive()
// holds, until ctx ends. Without a watchdog it returns at once.
func watchdog(ctx context.Context, log *slog.Logger, alive func() bool) {
	every, err := daemon.SdWatchdogEnabled(false)
	if err != nil || every <= 0 {
		return
	}
	t := time.NewTicker(every / 2)
	defer t.Stop()
	log.Info("systemd watchdog on", "interval", every)
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if alive() {
				notify(log, daemon.SdNotifyWatchdog)
			}
		}
	}
}
