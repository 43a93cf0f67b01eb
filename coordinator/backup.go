package coordinator

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/outpost-edge/outpost/coordinator/admin"
	"github.com/outpost-edge/outpost/coordinator/backup"
)

var _ admin.Backuper = (*Coordinator)(nil)

// Backup writes the node's backup (package backup) to w while it runs:
// the state store at one read timestamp (tasks, kv, results and the call
// journal together), the telemetry store when asked, the blobs and the
// data dir's top-level files. Blob GC waits until the backup is written,
// so every blob the snapshot's tasks name is in it.
func (c *Coordinator) Backup(w io.Writer, telemetry bool) error {
	cfg := c.cfg.Load()
	src := backup.Source{
		Manifest: backup.Manifest{Node: cfg.Node.ID, Version: c.version, Created: time.Now().UTC()},
		State:    c.db.Snapshot,
		DataDir:  cfg.DataDir,
	}
	if telemetry {
		if !c.tele.Enabled() {
			return fmt.Errorf("%w: telemetry is not enabled on this node", admin.ErrConflict)
		}
		src.Telemetry = c.tele.Backup
	}
	c.blobMu.Lock()
	if c.noBackups {
		c.blobMu.Unlock()
		return fmt.Errorf("%w: the daemon is stopping", admin.ErrConflict)
	}
	c.backups++
	c.blobMu.Unlock()
	defer func() {
		c.blobMu.Lock()
		if c.backups--; c.backups == 0 {
			c.backupsIdle.Broadcast()
		}
		c.blobMu.Unlock()
	}()
	// Snapshots of suspended calls stay until the backup has copied them,
	// so each one its journal names is in it.
	if snaps := c.cloud.snaps; snaps != nil {
		defer snaps.Hold()()
	}
	start := time.Now()
	err := backup.Write(w, src, func(p backup.Phase) { c.log.Info("backup", "phase", p.Name, "items", p.Items, "bytes", p.Bytes) })
	if err != nil {
		return err
	}
	c.log.Info("backup written", "took", time.Since(start).Round(time.Millisecond))
	return nil
}

// stopAdmin stops the admin API, then waits for the backups still being
// written: once the API has closed their connections their writes fail
// and they end, before the telemetry store and the state store close
// under them. No backup starts after.
func (c *Coordinator) stopAdmin(ctx context.Context) error {
	err := c.admin.Stop(ctx)
	c.blobMu.Lock()
	c.noBackups = true
	for c.backups > 0 {
		c.backupsIdle.Wait()
	}
	c.blobMu.Unlock()
	return err
}
