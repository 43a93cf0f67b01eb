package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/outpost-edge/outpost/configs"
	"github.com/outpost-edge/outpost/coordinator/admin"
	"github.com/outpost-edge/outpost/internal/confval"
)

// cmdTask manages the running daemon's deployed tasks:
// outpost task deploy NAME MODULE.wasm [--manifest FILE] | ls | inspect NAME | rm NAME | rollback NAME.
func cmdTask(ctx context.Context, args []string, in io.Reader, out, errOut io.Writer) int {
	usage := func() {
		fmt.Fprintln(errOut, `Usage:
  outpost task deploy NAME [MODULE.wasm] [--manifest FILE] deploy a task, or a new version of it
                                                           (with the libraries and files the manifest names)
  outpost task ls                                          list tasks (config and deployed)
  outpost task inspect NAME                                show a task and its kept versions
  outpost task rm NAME                                     remove a deployed task
  outpost task rollback NAME                               go back to the previous version
Flags of every subcommand: --admin ADDR, --config FILE, --token-file FILE (and --ca-file, --cert-file, --key-file for HTTPS).`)
	}
	if len(args) == 0 {
		usage()
		return 2
	}
	sub, args := args[0], args[1:]
	fs := newFlags("task "+sub, errOut)
	af := addAdminFlags(fs)
	manifest := fs.String("manifest", "", "deploy: a YAML manifest (abi, limits, permissions, module, libraries, files)")
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
	if len(pos) != n && !(sub == "deploy" && len(pos) == 1 && *manifest != "") {
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
		var module *admin.UploadPart
		label := "objects"
		if len(pos) == 2 {
			f, err := os.Open(pos[1])
			if err != nil {
				return fail(err)
			}
			defer f.Close()
			st, err := f.Stat()
			if err != nil {
				return fail(err)
			}
			module, label = &admin.UploadPart{R: f, Size: st.Size()}, pos[1]
		}
		var man []byte
		var objects []admin.UploadPart
		if *manifest != "" {
			var err error
			if man, err = os.ReadFile(*manifest); err != nil {
				return fail(err)
			}
			if _, err := configs.ParseManifest(man, *manifest); err != nil {
				printProblems(errOut, err) // checked as the daemon will, before anything is uploaded
				return 1
			}
			refs, err := localRefs(man, module == nil)
			if err != nil {
				return fail(fmt.Errorf("%s: %w", *manifest, err))
			}
			for _, ref := range refs {
				p := ref
				if !filepath.IsAbs(p) {
					p = filepath.Join(filepath.Dir(*manifest), p)
				}
				f, err := os.Open(p)
				if err != nil {
					return fail(fmt.Errorf("%s: %w", *manifest, err))
				}
				defer f.Close()
				st, err := f.Stat()
				if err != nil {
					return fail(err)
				}
				objects = append(objects, admin.UploadPart{Ref: ref, R: f, Size: st.Size()})
			}
			if len(objects) > 0 {
				label = fmt.Sprintf("%s and %d objects", label, len(objects))
			}
		}
		if module == nil && len(objects) == 0 {
			label = "manifest"
		}
		start := time.Now()
		d, err := c.Deploy(ctx, pos[0], module, man, objects, func(sent, total int64) {
			fmt.Fprintf(errOut, "\ruploading %s: %3d%% (%s of %s)", label, percent(sent, total), confval.ByteSize(sent), confval.ByteSize(total))
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

// localRefs lists the distinct references of a manifest to local files
// (not a pinned URL, not "sha256:HEX"): the library modules, the file
// sources and, with withModule, the module. The daemon decodes the manifest
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
	return refs, nil
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
		d.Name, d.ABI, d.Digest, confval.ByteSize(d.Size), confval.ByteSize(d.MemoryLimit),
		time.Duration(d.Timeout*float64(time.Second)), d.Concurrency)
	fmt.Fprintf(tw, "max input:\t%s\nmax output:\t%s\nfresh instance:\t%s\n",
		confval.ByteSize(d.MaxInput), confval.ByteSize(d.MaxOutput), yesNo(d.FreshInstance))
	p := d.Permissions
	kv := "none (no kv access)"
	if p.KVQuota > 0 {
		kv = confval.ByteSize(p.KVQuota).String()
	}
	fmt.Fprintf(tw, "publish:\t%s\ncall:\t%s\nkv quota:\t%s\ntelemetry:\t%s\n",
		listOrNone(p.Publish), listOrNone(p.Call), kv, yesNo(p.Telemetry))
	if d.FreshInstance {
		fmt.Fprintf(tw, "pool:\ta fresh instance per call, %d in use\n", d.Pool.InUse)
	} else {
		fmt.Fprintf(tw, "pool:\t%d warm, %d in use\n", d.Pool.Warm, d.Pool.InUse)
	}
	_ = tw.Flush()
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
		fmt.Fprintf(tw, "  %d\t%.12s\t%s\t%s%s\n", v.Version, v.Digest, confval.ByteSize(v.Size), v.Deployed.Format(time.RFC3339), from)
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
