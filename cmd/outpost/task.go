package main

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"gopkg.in/yaml.v3"

	"github.com/outpost-edge/outpost/cmd/internal/cli"
	"github.com/outpost-edge/outpost/configs"
	"github.com/outpost-edge/outpost/coordinator/admin"
	"github.com/outpost-edge/outpost/internal/confval"
)

func newTaskCmd() *cobra.Command {
	cmd := cli.Group(&cobra.Command{
		Use:   "task",
		Short: "Deploy, list, inspect, remove or roll back tasks",
	})
	af := addAdminFlags(cmd, true)
	ls := &cobra.Command{Use: "ls", Short: "List tasks (from the config and deployed)", Args: cli.NoArgs}
	listTasks(ls, af)
	cmd.AddCommand(newDeployCmd(af), ls, newInspectCmd(af), newRemoveCmd(af), newRollbackCmd(af))
	return cmd
}

func newDeployCmd(af *adminFlags) *cobra.Command {
	var manifest string
	cmd := &cobra.Command{
		Use:   "deploy NAME [MODULE]",
		Short: "Deploy a task, or a new version of it",
		Long: `Deploy a task, or a new version of it, to the running daemon.

MODULE is a .wasm file; it may be left out when the manifest's module key
names it, or for a process-only task (its artifacts are its only code). The
manifest (--manifest FILE, YAML) takes the keys of a config task besides
name and module: abi, limits, permissions, module, libraries, files,
artifacts (native executables for the process environment), placement.
Local files it names are uploaded with the module. The daemon compiles the
task and warms its instances before it answers; calls in flight finish on
the old version. Progress goes to standard error: a bar on a terminal, one
line per phase elsewhere.`,
		Example: `  outpost task deploy visits examples/tasks/build/go-visits.wasm --manifest visits.yaml
  outpost task deploy report --manifest report.yaml`,
		Args: cli.RangeArgs(1, 2),
	}
	out := cli.AddOutput(cmd)
	cmd.Flags().StringVar(&manifest, "manifest", "", "a YAML manifest (abi, limits, permissions, module, libraries, files, artifacts, placement)")
	cmd.ValidArgsFunction = func(cmd *cobra.Command, args []string, s string) ([]string, cobra.ShellCompDirective) {
		if len(args) == 0 {
			return af.completeTasks(cmd, args, s)
		}
		return []string{"wasm"}, cobra.ShellCompDirectiveFilterFileExt
	}
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		if len(args) == 1 && manifest == "" {
			return cli.Usagef("no MODULE: give a .wasm file, or a --manifest whose module key names one or whose artifacts are the task's only code")
		}
		if b, err := os.ReadFile(manifest); manifest != "" && err == nil { // a read error is openUpload's to report
			m, err := configs.ParseManifest(b, manifest)
			if err == nil && len(args) == 1 {
				err = m.CheckNative(args[0])
			}
			if err != nil {
				return configError(cmd, err) // checked as the daemon will, before anything is uploaded
			}
		}
		c, err := af.client()
		if err != nil {
			return configError(cmd, err)
		}
		up, err := openUpload(args, manifest)
		if err != nil {
			return err
		}
		defer up.close()
		p := cli.NewProgress(cmd.ErrOrStderr(), up.label, up.size())
		d, err := c.Deploy(cmd.Context(), args[0], up.module, up.manifest, up.objects, &admin.DeployProgress{
			Sent:  func(sent, _ int64) { p.Sent(sent) },
			Phase: func(name string) { p.Phase(name + " and warming " + args[0]) },
		})
		if err != nil {
			return err
		}
		fmt.Fprintf(cmd.ErrOrStderr(), "deployed %s version %d (%s) in %s\n", d.Name, len(d.Versions), cmp.Or(fmt.Sprintf("%.12s", d.Digest), processOnly), p.Elapsed().Round(time.Millisecond))
		return out.Print(cmd.OutOrStdout(), d, func(w io.Writer) { printDetail(w, out, d) })
	}
	return cmd
}

// processOnly stands for the module of a task without one.
const processOnly = "none: process only"

// upload is what a deploy sends: the module, the manifest, and the local
// files the manifest names.
type upload struct {
	label    string
	module   *admin.UploadPart
	manifest []byte
	objects  []admin.UploadPart
	files    []*os.File
}

// openUpload opens the module (args[1], if given) and the files the
// manifest at path names.
func openUpload(args []string, path string) (*upload, error) {
	up := &upload{label: "objects"}
	open := func(name, ref string) (*admin.UploadPart, error) {
		f, err := os.Open(name)
		if err != nil {
			return nil, err
		}
		up.files = append(up.files, f)
		st, err := f.Stat()
		if err != nil {
			return nil, err
		}
		return &admin.UploadPart{Ref: ref, R: f, Size: st.Size()}, nil
	}
	var err error
	if len(args) == 2 {
		if up.module, err = open(args[1], ""); err != nil {
			up.close()
			return nil, err
		}
		up.label = args[1]
	}
	if path == "" {
		return up, nil
	}
	if up.manifest, err = os.ReadFile(path); err != nil {
		up.close()
		return nil, err
	}
	refs, err := localRefs(up.manifest, up.module == nil)
	if err != nil {
		up.close()
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	for _, ref := range refs {
		p := ref
		if !filepath.IsAbs(p) {
			p = filepath.Join(filepath.Dir(path), p)
		}
		part, err := open(p, ref)
		if err != nil {
			up.close()
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		up.objects = append(up.objects, *part)
	}
	switch {
	case len(up.objects) > 0:
		up.label = fmt.Sprintf("%s and %d objects", up.label, len(up.objects))
	case up.module == nil:
		up.label = "manifest"
	}
	return up, nil
}

func (up *upload) size() int64 {
	var n int64
	if up.module != nil {
		n += up.module.Size
	}
	for _, o := range up.objects {
		n += o.Size
	}
	return n
}

func (up *upload) close() {
	for _, f := range up.files {
		_ = f.Close()
	}
}

func newInspectCmd(af *adminFlags) *cobra.Command {
	return taskDetailCmd(af, "inspect NAME", "Show a task and its kept versions", (*admin.Client).Inspect, nil)
}

// taskDetailCmd is a command that takes a task name, asks the admin API with
// do and prints the task's detail; announce, when set, first says on stderr
// what changed.
func taskDetailCmd(af *adminFlags, use, short string, do func(*admin.Client, context.Context, string) (admin.TaskDetail, error), announce func(io.Writer, admin.TaskDetail)) *cobra.Command {
	cmd := &cobra.Command{Use: use, Short: short, Args: cli.ExactArgs(1, "")}
	out := cli.AddOutput(cmd)
	cmd.ValidArgsFunction = af.completeTasks
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		c, err := af.client()
		if err != nil {
			return configError(cmd, err)
		}
		d, err := do(c, cmd.Context(), args[0])
		if err != nil {
			return err
		}
		if announce != nil {
			announce(cmd.ErrOrStderr(), d)
		}
		return out.Print(cmd.OutOrStdout(), d, func(w io.Writer) { printDetail(w, out, d) })
	}
	return cmd
}

func newRemoveCmd(af *adminFlags) *cobra.Command {
	cmd := &cobra.Command{Use: "rm NAME", Short: "Remove a deployed task", Args: cli.ExactArgs(1, "")}
	cmd.ValidArgsFunction = af.completeTasks
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		c, err := af.client()
		if err != nil {
			return configError(cmd, err)
		}
		if err := c.Remove(cmd.Context(), args[0]); err != nil {
			return err
		}
		fmt.Fprintf(cmd.ErrOrStderr(), "removed %s\n", args[0])
		return nil
	}
	return cmd
}

func newRollbackCmd(af *adminFlags) *cobra.Command {
	return taskDetailCmd(af, "rollback NAME", "Run the previous version of a deployed task again (the newer one is dropped)", (*admin.Client).Rollback,
		func(w io.Writer, d admin.TaskDetail) {
			fmt.Fprintf(w, "%s rolled back to version %d (%.12s)\n", d.Name, len(d.Versions), d.Digest)
		})
}

// localRefs lists the distinct references of a manifest to local files
// (not a pinned URL, not "sha256:HEX"): the library modules, the file
// sources, the artifacts' executables and, with withModule, the module. The daemon decodes the manifest
// strictly; here only these keys are read.
func localRefs(manifest []byte, withModule bool) ([]string, error) {
	var m struct {
		Module    string `yaml:"module"`
		Libraries []struct {
			Module string `yaml:"module"`
		} `yaml:"libraries"`
		Files []struct {
			Source string `yaml:"source"`
		} `yaml:"files"`
		Artifacts []struct {
			Executable string `yaml:"executable"`
		} `yaml:"artifacts"`
	}
	if err := yaml.Unmarshal(manifest, &m); err != nil {
		return nil, err
	}
	var refs []string
	seen := map[string]bool{}
	add := func(ref string) {
		if ref == "" || seen[ref] || strings.Contains(ref, "://") || strings.HasPrefix(ref, "sha256:") {
			return
		}
		seen[ref] = true
		refs = append(refs, ref)
	}
	if withModule {
		add(m.Module)
	}
	for _, l := range m.Libraries {
		add(l.Module)
	}
	for _, f := range m.Files {
		add(f.Source)
	}
	for _, a := range m.Artifacts {
		add(a.Executable)
	}
	return refs, nil
}

func printDetail(out io.Writer, o *cli.Output, d admin.TaskDetail) {
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "name:\t%s\nabi:\t%s\ndigest:\t%s\nsize:\t%s\nmemory:\t%s\ntimeout:\t%s\nconcurrency:\t%d\n",
		d.Name, cmp.Or(d.ABI, "-"), cmp.Or(d.Digest, processOnly), cli.Size(int64(d.Size)), confval.ByteSize(d.MemoryLimit),
		seconds(d.Timeout), d.Concurrency)
	fmt.Fprintf(tw, "max input:\t%s\nmax output:\t%s\nfresh instance:\t%s\n",
		confval.ByteSize(d.MaxInput), confval.ByteSize(d.MaxOutput), yesNo(d.FreshInstance))
	p := d.Permissions
	kv := "none (no kv access)"
	if p.KVQuota > 0 {
		kv = confval.ByteSize(p.KVQuota).String()
	}
	fmt.Fprintf(tw, "publish:\t%s\ncall:\t%s\nkv quota:\t%s\ntelemetry:\t%s\nnetwork:\t%s\nshadows:\t%s\n",
		listOrNone(p.Publish), listOrNone(p.Call), kv, yesNo(p.Telemetry), yesNo(p.Network), listOrNone(p.Shadows))
	if d.FreshInstance {
		fmt.Fprintf(tw, "pool:\ta fresh instance per call, %d in use\n", d.Pool.InUse)
	} else {
		fmt.Fprintf(tw, "pool:\t%d warm, %d in use\n", d.Pool.Warm, d.Pool.InUse)
	}
	_ = tw.Flush()
	if len(d.Artifacts) > 0 {
		fmt.Fprintln(out, "artifacts:")
		tw = tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "  ENV\tPLATFORM\tDIGEST\tSIZE\tLOCATION")
		for _, a := range d.Artifacts {
			platform := "wasm"
			if a.OS != "" {
				platform = a.OS + "/" + a.Arch
			}
			fmt.Fprintf(tw, "  %s\t%s\t%.12s\t%s\t%s\n", a.Env, platform, a.Digest, cli.Size(a.Size), a.Location)
		}
		_ = tw.Flush()
	}
	for _, r := range d.Placement {
		when := r.When
		if when == "" {
			when = "always"
		}
		fmt.Fprintf(out, "placement rule %s: %s -> %s\n", r.Name, when, strings.Join(r.Run, ", "))
	}
	if len(d.Versions) == 0 {
		return
	}
	fmt.Fprintln(out, "versions (the last one runs):")
	tw = tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  VERSION\tDIGEST\tSIZE\tDEPLOYED")
	for _, v := range d.Versions {
		from := ""
		if v.From != "" {
			from = " (from " + v.From + ")"
		}
		fmt.Fprintf(tw, "  %d\t%.12s\t%s\t%s%s\n", v.Version, v.Digest, cli.Size(int64(v.Size)), o.Time(v.Deployed), from)
	}
	_ = tw.Flush()
	cur := d.Versions[len(d.Versions)-1]
	for _, l := range cur.Libraries {
		fmt.Fprintf(out, "library %s: sha256:%.12s\n", l.Name, l.Digest)
	}
	for _, f := range cur.Files {
		fmt.Fprintf(out, "file %s: sha256:%.12s\n", f.Name, f.Digest)
	}
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func listOrNone(l []string) string {
	if len(l) == 0 {
		return "none"
	}
	return strings.Join(l, ", ")
}
