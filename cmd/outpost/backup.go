package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/outpost-edge/outpost/cmd/internal/cli"
	"github.com/outpost-edge/outpost/configs"
	"github.com/outpost-edge/outpost/coordinator/backup"
)

// fileArg takes FILE from the front of args, so that flags may follow it
// (the flag package stops at the first positional argument).
func fileArg(args []string) (string, []string) {
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		return args[0], args[1:]
	}
	return "", args
}

// printer shows progress on errOut: one line per phase, and a live byte
// count when errOut is a terminal.
func printer(errOut io.Writer, verb string) *backup.Printer {
	f, ok := errOut.(*os.File)
	return backup.NewPrinter(errOut, verb, ok && backup.IsTerminal(f), 200*time.Millisecond)
}

func cmdBackup(ctx context.Context, args []string, _ io.Reader, out, errOut io.Writer) int {
	fs := cli.NewFlags("outpost", "backup", errOut)
	tele := fs.Bool("telemetry", false, "include the telemetry store")
	af := addAdminFlags(fs)
	file, args := fileArg(args)
	c, code, ok := af.parse(fs, args)
	if !ok {
		return code
	}
	if file == "" {
		fmt.Fprintln(errOut, "usage: outpost backup FILE [--telemetry] [admin flags]")
		return 2
	}
	f, err := os.OpenFile(file, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		fmt.Fprintf(errOut, "outpost backup: %v\n", err)
		return 1
	}
	p := printer(errOut, "backup")
	m, err := c.Backup(ctx, io.MultiWriter(f, p), *tele, p.Phase)
	p.Stop()
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		_ = os.Remove(file)
		fmt.Fprintf(errOut, "outpost backup: %v\n", err)
		return 1
	}
	fmt.Fprintf(out, "backup of node %s (outpost %s) written to %s\n", m.Node, m.Version, file)
	return 0
}

func cmdRestore(_ context.Context, args []string, _ io.Reader, out, errOut io.Writer) int {
	fs := cli.NewFlags("outpost", "restore", errOut)
	dataDir := fs.String("data-dir", "", "the empty (or new) data dir to restore into (default: data_dir of --config)")
	config := fs.String("config", "", "the node's config file: its data_dir and storage settings")
	file, args := fileArg(args)
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	cfg := configs.Defaults()
	if *config != "" {
		c, err := configs.Load(*config)
		if err != nil {
			printProblems(errOut, err)
			return 1
		}
		cfg = *c
	}
	if *dataDir != "" {
		cfg.DataDir = *dataDir
	}
	if file == "" || (*dataDir == "" && *config == "") {
		fmt.Fprintln(errOut, "usage: outpost restore FILE --data-dir DIR [--config FILE]")
		return 2
	}
	f, err := os.Open(file)
	if err != nil {
		fmt.Fprintf(errOut, "outpost restore: %v\n", err)
		return 1
	}
	defer f.Close()
	log := slog.New(slog.NewTextHandler(errOut, &slog.HandlerOptions{Level: slog.LevelWarn}))
	p := printer(errOut, "restore")
	m, err := backup.Restore(io.TeeReader(f, p), cfg.DataDir, cfg.Storage, log, p.Phase)
	p.Stop()
	if err != nil {
		fmt.Fprintf(errOut, "outpost restore: %v\n", err)
		return 1
	}
	fmt.Fprintf(out, "restored node %s (backup of %s by outpost %s) into %s: start it with the node's config and data_dir %s\n",
		m.Node, m.Created.Format("2006-01-02T15:04:05Z"), m.Version, cfg.DataDir, cfg.DataDir)
	return 0
}
