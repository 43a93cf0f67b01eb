package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/outpost-edge/outpost/coordinator/admin"
	"github.com/outpost-edge/outpost/coordinator/config"
)

// cmdTask manages the running daemon's deployed tasks:
// outpost task deploy NAME MODULE.wasm [--manifest FILE] | ls | inspect NAME | rm NAME | rollback NAME.
func cmdTask(ctx context.Context, args []string, in io.Reader, out, errOut io.Writer) int {
	usage := func() {
		fmt.Fprintln(errOut, `Usage:
  outpost task deploy NAME MODULE.wasm [--manifest FILE]   deploy a task, or a new version of it
  outpost task ls                                          list tasks (config and deployed)
  outpost task inspect NAME                                show a task and its kept versions
  outpost task rm NAME                                     remove a deployed task
  outpost task rollback NAME                               go back to the previous version
Flags of every subcommand: --admin ADDR, --config FILE.`)
	}
	if len(args) == 0 {
		usage()
		return 2
	}
	sub, args := args[0], args[1:]
	fs := newFlags("task "+sub, errOut)
	af := addAdminFlags(fs)
	manifest := fs.String("manifest", "", "deploy: a YAML manifest (abi, limits, permissions)")
	asJSON := fs.Bool("json", false, "print JSON")
	// Positional arguments may come before the flags.
	var pos []string
	for len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		pos, args = append(pos, args[0]), args[1:]
	}
	c, code, ok := af.parse(fs, args)
	if !ok {
		return code
	}
	pos = append(pos, fs.Args()...)
	want := map[string]int{"deploy": 2, "ls": 0, "inspect": 1, "rm": 1, "rollback": 1}
	n, known := want[sub]
	if !known {
		fmt.Fprintf(errOut, "outpost task: unknown subcommand %q\n", sub)
		usage()
		return 2
	}
	if len(pos) != n {
		fmt.Fprintf(errOut, "outpost task %s: want %d arguments, got %d\n", sub, n, len(pos))
		usage()
		return 2
	}
	fail := func(err error) int {
		fmt.Fprintf(errOut, "outpost task %s: %v\n", sub, err)
		return 1
	}
	show := func(d admin.TaskDetail) int {
		if *asJSON {
			return printJSON(out, d)
		}
		printDetail(out, d)
		return 0
	}
	switch sub {
	case "deploy":
		f, err := os.Open(pos[1])
		if err != nil {
			return fail(err)
		}
		defer f.Close()
		st, err := f.Stat()
		if err != nil {
			return fail(err)
		}
		var man []byte
		if *manifest != "" {
			if man, err = os.ReadFile(*manifest); err != nil {
				return fail(err)
			}
		}
		start := time.Now()
		d, err := c.Deploy(ctx, pos[0], f, st.Size(), man, func(sent, total int64) {
			fmt.Fprintf(errOut, "\ruploading %s: %3d%% (%s of %s)", pos[1], percent(sent, total), config.ByteSize(sent), config.ByteSize(total))
		})
		fmt.Fprintln(errOut)
		if err != nil {
			return fail(err)
		}
		fmt.Fprintf(errOut, "deployed %s version %d (%.12s) in %s, compiled and warm\n", d.Name, len(d.Versions), d.Digest, time.Since(start).Round(time.Millisecond))
		return show(d)
	case "ls":
		return cmdTasks(ctx, args, in, out, errOut)
	case "inspect":
		d, err := c.Inspect(ctx, pos[0])
		if err != nil {
			return fail(err)
		}
		return show(d)
	case "rm":
		if err := c.Remove(ctx, pos[0]); err != nil {
			return fail(err)
		}
		fmt.Fprintf(errOut, "removed %s\n", pos[0])
		return 0
	case "rollback":
		d, err := c.Rollback(ctx, pos[0])
		if err != nil {
			return fail(err)
		}
		fmt.Fprintf(errOut, "%s rolled back to version %d (%.12s)\n", d.Name, len(d.Versions), d.Digest)
		return show(d)
	}
	return 2
}

func percent(sent, total int64) int64 {
	if total <= 0 {
		return 100
	}
	return sent * 100 / total
}

func printDetail(out io.Writer, d admin.TaskDetail) {
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "name:\t%s\nabi:\t%s\ndigest:\t%s\nsize:\t%s\nmemory:\t%s\ntimeout:\t%s\nconcurrency:\t%d\n",
		d.Name, d.ABI, d.Digest, config.ByteSize(d.Size), config.ByteSize(d.MemoryLimit),
		time.Duration(d.Timeout*float64(time.Second)), d.Concurrency)
	_ = tw.Flush()
	if len(d.Versions) == 0 {
		return
	}
	fmt.Fprintln(out, "versions (the last one runs):")
	tw = tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  VERSION\tDIGEST\tSIZE\tDEPLOYED")
	for _, v := range d.Versions {
		fmt.Fprintf(tw, "  %d\t%.12s\t%s\t%s\n", v.Version, v.Digest, config.ByteSize(v.Size), v.Deployed.Format(time.RFC3339))
	}
	_ = tw.Flush()
}
