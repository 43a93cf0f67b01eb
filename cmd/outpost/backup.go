package main

import (
	"fmt"
	"io"
	"log/slog"
	"os"

	"github.com/spf13/cobra"

	"github.com/outpost-edge/outpost/cmd/internal/cli"
	"github.com/outpost-edge/outpost/configs"
	"github.com/outpost-edge/outpost/coordinator/backup"
)

// printer shows the progress of a backup or restore on errOut.
type printer struct{ *cli.StreamProgress }

func newPrinter(errOut io.Writer, verb string) printer {
	return printer{cli.NewStreamProgress(errOut, verb)}
}

// phase prints a finished phase of the backup package.
func (p printer) phase(ph backup.Phase) { p.Phase(ph.Name, ph.Items, ph.Bytes) }

func newBackupCmd() *cobra.Command {
	var tele bool
	cmd := &cobra.Command{
		Use:   "backup FILE",
		Short: "Write a consistent backup of the running daemon (state, journal, blobs) to FILE",
		Args:  cli.ExactArgs(1, ""),
	}
	cmd.Flags().BoolVar(&tele, "telemetry", false, "include the telemetry store")
	af := addAdminFlags(cmd, false)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		c, err := af.client()
		if err != nil {
			return configError(cmd, err)
		}
		file := args[0]
		f, err := os.OpenFile(file, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return err
		}
		p := newPrinter(cmd.ErrOrStderr(), "backup")
		m, err := c.Backup(cmd.Context(), io.MultiWriter(f, p), tele, p.phase)
		p.Stop()
		if err == nil {
			err = f.Sync()
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			_ = os.Remove(file)
			return err
		}
		fmt.Fprintf(cmd.OutOrStdout(), "backup of node %s (outpost %s) written to %s\n", m.Node, m.Version, file)
		return nil
	}
	return cmd
}

func newRestoreCmd() *cobra.Command {
	var dataDir, config string
	cmd := &cobra.Command{
		Use:   "restore FILE",
		Short: "Restore a backup FILE into an empty data dir (--data-dir DIR or data_dir of --config)",
		Args:  cli.ExactArgs(1, ""),
	}
	cmd.Flags().StringVar(&dataDir, "data-dir", "", "the empty (or new) data dir to restore into (default: data_dir of --config)")
	cmd.Flags().StringVar(&config, "config", "", "the node's config file: its data_dir and storage settings")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		if dataDir == "" && config == "" {
			return cli.Usagef("give the data dir to restore into: --data-dir DIR or --config FILE")
		}
		cfg := configs.Defaults()
		if config != "" {
			c, err := configs.Load(config)
			if err != nil {
				return configError(cmd, err)
			}
			cfg = *c
		}
		if dataDir != "" {
			cfg.DataDir = dataDir
		}
		f, err := os.Open(args[0])
		if err != nil {
			return err
		}
		defer f.Close()
		errOut := cmd.ErrOrStderr()
		log := slog.New(slog.NewTextHandler(errOut, &slog.HandlerOptions{Level: slog.LevelWarn}))
		p := newPrinter(errOut, "restore")
		m, err := backup.Restore(io.TeeReader(f, p), cfg.DataDir, cfg.Storage, log, p.phase)
		p.Stop()
		if err != nil {
			return err
		}
		fmt.Fprintf(cmd.OutOrStdout(), "restored node %s (backup of %s by outpost %s) into %s: start it with the node's config and data_dir %s\n",
			m.Node, m.Created.Format("2006-01-02T15:04:05Z"), m.Version, cfg.DataDir, cfg.DataDir)
		return nil
	}
	return cmd
}
