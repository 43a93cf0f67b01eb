package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/outpost-edge/outpost/cmd/internal/cli"
	"github.com/outpost-edge/outpost/configs"
	"github.com/outpost-edge/outpost/coordinator/admin"
	"github.com/outpost-edge/outpost/internal/confval"
)

// adminFlags are the flags that locate the daemon's admin API and its token.
type adminFlags struct {
	addr, config, dataDir, tokenFile, caFile, certFile, keyFile *string
}

func addAdminFlags(fs *flag.FlagSet) adminFlags {
	return adminFlags{
		addr:      fs.String("admin", "", "admin API address (default: $OUTPOST_ADMIN, else admin.listen of --config, else 127.0.0.1:7700; https://HOST:PORT for a TLS listener)"),
		config:    fs.String("config", "", "the daemon's config file: its admin address and token file (admin.token_file, else admin.token in data_dir)"),
		dataDir:   fs.String("data-dir", "", "the daemon's data dir, as given to `outpost run --data-dir` (its admin.token is the token)"),
		tokenFile: fs.String("token-file", "", "file holding the admin token (default: $"+admin.TokenEnv+", else the daemon's token file, else ./data/admin.token)"),
		caFile:    fs.String("ca-file", "", "CA certificate that signed an https admin API's certificate (default: the system roots)"),
		certFile:  fs.String("cert-file", "", "client certificate for an admin API that requires mTLS"),
		keyFile:   fs.String("key-file", "", "key of --cert-file"),
	}
}

func (a adminFlags) client() (*admin.Client, error) {
	cfg := configs.Defaults()
	if *a.config != "" {
		c, err := configs.Load(*a.config)
		if err != nil {
			return nil, err
		}
		cfg = *c
	}
	if *a.dataDir != "" {
		cfg.DataDir = *a.dataDir
	}
	addr := *a.addr
	switch {
	case addr != "":
	case os.Getenv("OUTPOST_ADMIN") != "":
		addr = os.Getenv("OUTPOST_ADMIN")
	case cfg.Admin.TLS.CertFile != "":
		addr = "https://" + cfg.Admin.Listen
	default:
		addr = cfg.Admin.Listen
	}
	return admin.Dial(admin.ClientOptions{
		Addr: addr, TokenFile: *a.tokenFile, DaemonTokenFile: cfg.Admin.TokenPath(cfg.DataDir),
		CAFile: *a.caFile, CertFile: *a.certFile, KeyFile: *a.keyFile,
	})
}

// parse parses a command's flags and returns the admin client, or the exit
// code to stop with.
func (a adminFlags) parse(fs *flag.FlagSet, args []string) (*admin.Client, int, bool) {
	if code, ok := parseFlags(fs, args); !ok {
		return nil, code, false
	}
	c, err := a.client()
	if err != nil {
		printProblems(fs.Output(), err)
		return nil, 1, false
	}
	return c, 0, true
}

func cmdCall(ctx context.Context, args []string, in io.Reader, out, errOut io.Writer) int {
	fs := newFlags("call", errOut)
	af := addAdminFlags(fs)
	data := fs.String("data", "", "input: a literal, @FILE to read a file, or - for standard input (default: empty)")
	timeout := fs.Duration("timeout", 0, "deadline for the call (default: the task's timeout)")
	async := fs.Bool("async", false, "journal the call and print its id once it is on disk; read the result with `outpost calls show ID --wait`")
	fs.Usage = func() {
		fmt.Fprintln(errOut, "Usage: outpost call TASK [--data INPUT] [--timeout 5s | --async] [--admin ADDR]")
		fs.PrintDefaults()
	}
	// Accept the task name before or after the flags.
	var task string
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		task, args = args[0], args[1:]
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if task == "" && fs.NArg() > 0 {
		task = fs.Arg(0)
	} else if fs.NArg() > 0 {
		fmt.Fprintf(errOut, "outpost call: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	if task == "" {
		fs.Usage()
		return 2
	}
	input, err := cli.ReadInput(*data, in)
	if err != nil {
		fmt.Fprintf(errOut, "outpost call: %v\n", err)
		return 2
	}
	c, err := af.client()
	if err != nil {
		printProblems(errOut, err)
		return 1
	}
	if *async {
		if *timeout > 0 {
			fmt.Fprintln(errOut, "outpost call: --timeout does not apply to --async (the task's own timeout does)")
			return 2
		}
		id, err := c.CallAsync(ctx, task, input)
		if err != nil {
			fmt.Fprintf(errOut, "outpost call: %v\n", err)
			return 1
		}
		fmt.Fprintln(out, id)
		return 0
	}
	output, err := c.Call(ctx, task, input, *timeout)
	if err != nil {
		fmt.Fprintf(errOut, "outpost call: %v\n", err)
		return 1
	}
	_, _ = out.Write(output)
	if len(output) > 0 && output[len(output)-1] != '\n' {
		fmt.Fprintln(out)
	}
	return 0
}

func cmdTasks(ctx context.Context, args []string, _ io.Reader, out, errOut io.Writer) int {
	fs := newFlags("tasks", errOut)
	af := addAdminFlags(fs)
	asJSON := fs.Bool("json", false, "print JSON")
	c, code, ok := af.parse(fs, args)
	if !ok {
		return code
	}
	tasks, err := c.Tasks(ctx)
	if err != nil {
		fmt.Fprintf(errOut, "outpost tasks: %v\n", err)
		return 1
	}
	if *asJSON {
		return printJSON(out, tasks)
	}
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tABI\tMEMORY\tTIMEOUT\tCONCURRENCY\tDIGEST\tMODULE")
	for _, t := range tasks {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%.12s\t%s\n", t.Name, t.ABI, confval.ByteSize(t.MemoryLimit), time.Duration(t.Timeout*float64(time.Second)), t.Concurrency, t.Digest, t.Module)
	}
	_ = tw.Flush()
	return 0
}

func cmdHealth(ctx context.Context, args []string, _ io.Reader, out, errOut io.Writer) int {
	fs := newFlags("health", errOut)
	c, code, ok := addAdminFlags(fs).parse(fs, args)
	if !ok {
		return code
	}
	h, err := c.Health(ctx)
	if err != nil {
		fmt.Fprintf(errOut, "outpost health: %v\n", err)
		return 1
	}
	printJSON(out, h)
	if h.Status != "ok" {
		return 1
	}
	return 0
}

func printJSON(out io.Writer, v any) int {
	enc := json.NewEncoder(out)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		return 1
	}
	return 0
}
