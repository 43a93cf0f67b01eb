package main

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/outpost-edge/outpost/cmd/internal/cli"
	"github.com/outpost-edge/outpost/configs"
	"github.com/outpost-edge/outpost/coordinator"
)

// builtinName is how the embedded default config is named in messages.
const builtinName = "built-in config (configs/outpost.yaml)"

// loader returns a function that reads the config (the file, or the
// built-in one) with command-line overrides applied.
func loader(path, dataDir string) func() (*configs.Config, error) {
	return func() (*configs.Config, error) {
		var (
			cfg *configs.Config
			err error
		)
		if path == "" {
			cfg, err = configs.Parse(configs.Default, builtinName)
		} else {
			cfg, err = configs.Load(path)
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

func newLogger(l configs.Log, w io.Writer) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(l.Level))
	opts := &slog.HandlerOptions{Level: level}
	if l.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

func newRunCmd() *cobra.Command {
	var path, dataDir, pidFile string
	cmd := &cobra.Command{
		Use:   "run",
		Short: "Run the daemon (SIGHUP reloads a --config file, SIGTERM drains and stops)",
		Args:  cli.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			errOut := cmd.ErrOrStderr()
			load := loader(path, dataDir)
			cfg, err := load()
			if err != nil {
				return configError(cmd, err)
			}
			if pidFile != "" {
				if err := writePIDFile(pidFile); err != nil {
					return err
				}
				defer os.Remove(pidFile)
			}
			log := newLogger(cfg.Log, errOut)
			log.Debug("go memory limit", "bytes", coordinator.ApplyMemoryLimit(cmd.Context(), os.Getenv))
			reload := load
			if path == "" {
				reload = nil
			}
			c := coordinator.New(cfg, log, cli.BuildVersion().String())
			if err := c.Run(cmd.Context(), reload); err != nil {
				log.Error("outpost failed", "err", err)
				return cli.ErrSilent
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&path, "config", "", "config file (default: the built-in config, see configs/outpost.yaml)")
	cmd.Flags().StringVar(&dataDir, "data-dir", "", "override data_dir from the config")
	cmd.Flags().StringVar(&pidFile, "pid-file", "", "write the daemon's process id to this file (removed on exit), for kill -HUP \"$(cat FILE)\"")
	return cmd
}

// writePIDFile writes the process id to path, atomically.
func writePIDFile(path string) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".pid-*")
	if err != nil {
		return fmt.Errorf("--pid-file: %w", err)
	}
	_, err = tmp.WriteString(strconv.Itoa(os.Getpid()) + "\n")
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		_ = os.Remove(tmp.Name())
		return fmt.Errorf("--pid-file: %w", err)
	}
	return nil
}

func newCheckCmd() *cobra.Command {
	var path string
	cmd := &cobra.Command{
		Use:   "check",
		Short: "Validate a config file and compile its task modules",
		Args:  cli.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := loader(path, "")()
			if err == nil {
				err = coordinator.CheckTasks(cmd.Context(), cfg)
			}
			if err != nil {
				return configError(cmd, err)
			}
			for _, w := range cfg.Warnings {
				fmt.Fprintln(cmd.ErrOrStderr(), w)
			}
			name := path
			if name == "" {
				name = builtinName
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s: ok (%s, %s)\n", name, plural(len(cfg.Tasks), "task"), plural(len(cfg.Routes), "route"))
			return nil
		},
	}
	cmd.Flags().StringVar(&path, "config", "", "config file to check (default: the built-in config)")
	return cmd
}

func newConfigCmd() *cobra.Command {
	cmd := cli.Group(&cobra.Command{
		Use:   "config",
		Short: "Show the effective config",
	})
	var path string
	show := &cobra.Command{
		Use:   "show",
		Short: "Print the effective config (the file, or the built-in one, with every default) as YAML",
		Args:  cli.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := loader(path, "")()
			if err != nil {
				return configError(cmd, err)
			}
			b, err := cfg.YAML()
			if err != nil {
				return err
			}
			_, err = cmd.OutOrStdout().Write(b)
			return err
		},
	}
	show.Flags().StringVar(&path, "config", "", "config file (default: the built-in config)")
	cmd.AddCommand(show)
	return cmd
}

func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return strconv.Itoa(n) + " " + noun + "s"
}

// configError prints every problem of a config or module check on its
// own line and fails the command without repeating them.
func configError(cmd *cobra.Command, err error) error {
	printProblems(cmd.ErrOrStderr(), err)
	return cli.ErrSilent
}

func printProblems(w io.Writer, err error) {
	var ps configs.Problems
	if errors.As(err, &ps) {
		for _, p := range ps {
			fmt.Fprintln(w, p.String())
		}
		fmt.Fprintf(w, "%s\n", plural(len(ps), "problem"))
		return
	}
	lines := strings.Split(strings.TrimSpace(err.Error()), "\n")
	for _, l := range lines {
		fmt.Fprintln(w, l)
	}
	fmt.Fprintf(w, "%s\n", plural(len(lines), "problem"))
}
