package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

	"github.com/outpost-edge/outpost/cmd/internal/cli"
	"github.com/outpost-edge/outpost/configs"
	"github.com/outpost-edge/outpost/coordinator"
	"github.com/outpost-edge/outpost/coordinator/config"
)

// builtinName is how the embedded default config is named in messages.
const builtinName = "built-in config (configs/outpost.yaml)"

func newFlags(name string, errOut io.Writer) *flag.FlagSet {
	return cli.NewFlags("outpost", name, errOut)
}

// parseFlags parses args and reports whether the command should go on,
// with the exit code to use if not.
func parseFlags(fs *flag.FlagSet, args []string) (int, bool) {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0, false
		}
		return 2, false
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(fs.Output(), "%s: unexpected argument %q\n", fs.Name(), fs.Arg(0))
		return 2, false
	}
	return 0, true
}

// loader returns a function that reads the config (the file, or the
// built-in one) with command-line overrides applied.
func loader(path, dataDir string) func() (*config.Config, error) {
	return func() (*config.Config, error) {
		var (
			cfg *config.Config
			err error
		)
		if path == "" {
			cfg, err = config.Parse(configs.Default, builtinName)
		} else {
			cfg, err = config.Load(path)
		}
		if err != nil {
			return nil, err
		}
		if dataDir != "" {
			c := *cfg
			c.DataDir = dataDir
			cfg = &c
		}
		return cfg, nil
	}
}

func newLogger(l config.Log, w io.Writer) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(l.Level))
	opts := &slog.HandlerOptions{Level: level}
	if l.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

func cmdRun(ctx context.Context, args []string, _ io.Reader, _, errOut io.Writer) int {
	fs := newFlags("run", errOut)
	path := fs.String("config", "", "config file (default: the built-in config, see configs/outpost.yaml)")
	dataDir := fs.String("data-dir", "", "override data_dir from the config")
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	load := loader(*path, *dataDir)
	cfg, err := load()
	if err != nil {
		printProblems(errOut, err)
		return 1
	}
	log := newLogger(cfg.Log, errOut)
	log.Debug("go memory limit", "bytes", coordinator.ApplyMemoryLimit(os.Getenv))
	reload := load
	if *path == "" {
		reload = nil
	}
	c := coordinator.New(cfg, log, versionString())
	if err := c.Run(ctx, reload); err != nil {
		log.Error("outpost failed", "err", err)
		return 1
	}
	return 0
}

func cmdCheck(ctx context.Context, args []string, _ io.Reader, out, errOut io.Writer) int {
	fs := newFlags("check", errOut)
	path := fs.String("config", "", "config file to check (default: the built-in config)")
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	cfg, err := loader(*path, "")()
	if err == nil {
		err = coordinator.CheckTasks(ctx, cfg)
	}
	if err != nil {
		printProblems(errOut, err)
		return 1
	}
	name := *path
	if name == "" {
		name = builtinName
	}
	fmt.Fprintf(out, "%s: ok (%d tasks, %d routes)\n", name, len(cfg.Tasks), len(cfg.Routes))
	return 0
}

// printProblems prints every problem of a config or module check on its own line.
func printProblems(w io.Writer, err error) {
	var ps config.Problems
	if errors.As(err, &ps) {
		for _, p := range ps {
			fmt.Fprintln(w, p.String())
		}
		fmt.Fprintf(w, "%d problem(s)\n", len(ps))
		return
	}
	lines := strings.Split(strings.TrimSpace(err.Error()), "\n")
	for _, l := range lines {
		fmt.Fprintln(w, l)
	}
	fmt.Fprintf(w, "%d problem(s)\n", len(lines))
}
