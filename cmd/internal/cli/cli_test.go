package cli

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/cobra"
)

func TestSize(t *testing.T) {
	for n, want := range map[int64]string{0: "0 B", 198: "198 B", 1024: "1.0 KiB", 32 << 10: "32.0 KiB", 3122896: "3.0 MiB", 5 << 30: "5.0 GiB"} {
		if got := Size(n); got != want {
			t.Errorf("Size(%d) = %q, want %q", n, got, want)
		}
	}
}

func TestBytes(t *testing.T) {
	for in, want := range map[string]string{
		"ABC":            "ABC",
		"line\nnext\n":   "line\nnext\n",
		"h\u00e9llo":     "h\u00e9llo",
		"\x00\x01\x02":   "(3 bytes, not text; base64) AAEC",
		"bad \xff utf-8": "(11 bytes, not text; base64) YmFkIP8gdXRmLTg=",
	} {
		if got := Bytes([]byte(in)); got != want {
			t.Errorf("Bytes(%q) = %q, want %q", in, got, want)
		}
	}
}

// YAML output keeps the JSON names and their order, in block style, and
// quotes only what needs it.
func TestWriteYAML(t *testing.T) {
	v := struct {
		Name    string   `json:"name"`
		Version string   `json:"version"`
		Tags    []string `json:"tags"`
		Output  []byte   `json:"output"`
	}{"echo", "1.0", []string{"a"}, []byte("ABC")}
	var b bytes.Buffer
	if err := WriteYAML(&b, v); err != nil {
		t.Fatal(err)
	}
	want := "name: echo\nversion: \"1.0\"\ntags:\n  - a\noutput: QUJD\n"
	if b.String() != want {
		t.Errorf("got:\n%s\nwant:\n%s", b.String(), want)
	}
}

func TestReadInput(t *testing.T) {
	dir := t.TempDir()
	f := filepath.Join(dir, "in")
	if err := os.WriteFile(f, []byte("from a file"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name  string
		data  string
		given bool
		in    string
		want  string
	}{
		{"literal", "x", true, "ignored", "x"},
		{"empty literal", "", true, "ignored", ""},
		{"file", "@" + f, true, "ignored", "from a file"},
		{"stdin by flag", "-", true, "piped", "piped"},
		{"stdin when not a terminal", "", false, "piped", "piped"},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := ReadInput(c.data, c.given, strings.NewReader(c.in))
			if err != nil || string(got) != c.want {
				t.Errorf("got %q %v, want %q", got, err, c.want)
			}
		})
	}
	if _, err := ReadInput("@"+filepath.Join(dir, "missing"), true, nil); err == nil || !strings.HasPrefix(err.Error(), "--data: ") {
		t.Errorf("missing file: %v", err)
	}
}

// Exit codes and what is said: usage errors 2 with a pointer to --help,
// failures 1, `help` as the argument prints help without running.
func TestExecute(t *testing.T) {
	ran := false
	newRoot := func() *cobra.Command {
		root := &cobra.Command{Use: "prog"}
		group := Group(&cobra.Command{Use: "things", Short: "things"})
		get := &cobra.Command{Use: "get NAME", Args: ExactArgs(1, "name the thing"), RunE: func(*cobra.Command, []string) error {
			ran = true
			return errors.New("no such thing")
		}}
		get.Flags().String("must", "", "")
		_ = get.MarkFlagRequired("must")
		group.AddCommand(get)
		root.AddCommand(group)
		return root
	}
	for _, c := range []struct {
		args []string
		code int
		want string
		ran  bool
	}{
		{[]string{"things", "get", "x", "--must", "y"}, 1, "prog things get: no such thing\n", true},
		{[]string{"things", "get"}, 2, `want 1 argument(s) (get NAME), got 0; name the thing`, false},
		{[]string{"things", "get", "help"}, 0, "Usage:\n  prog things get NAME", false},
		{[]string{"things", "get", "--must", "y", "--", "help"}, 1, "no such thing", true},
		{[]string{"things", "gte"}, 2, `unknown command "gte" for "prog things"; did you mean get?`, false},
		{[]string{"things", "get", "x", "--bogus"}, 2, "unknown flag: --bogus\nRun 'prog things get --help' for usage.", false},
		{[]string{"things", "help"}, 0, "Available Commands:", false},
	} {
		ran = false
		var out, errOut bytes.Buffer
		code := Execute(context.Background(), newRoot(), c.args, IO{In: strings.NewReader(""), Out: &out, ErrOut: &errOut})
		if code != c.code || !strings.Contains(out.String()+errOut.String(), c.want) || ran != c.ran {
			t.Errorf("%q: exit %d ran %v, want %d %v and %q:\n%s%s", c.args, code, ran, c.code, c.ran, c.want, out.String(), errOut.String())
		}
	}
}

// Off a terminal, progress is one line per phase, never redrawn.
func TestProgressOffTerminal(t *testing.T) {
	var b bytes.Buffer
	p := NewProgress(&b, "m.wasm", 3<<20)
	for sent := int64(0); sent <= 3<<20; sent += 64 << 10 {
		p.Sent(sent)
	}
	p.Phase("compiling")
	p.Phase("compiling")
	want := "uploading m.wasm (3.0 MiB)\ncompiling...\n"
	if b.String() != want {
		t.Errorf("got %q, want %q", b.String(), want)
	}
}

// A stream off a terminal prints one line per phase and nothing else.
func TestStreamProgressOffTerminal(t *testing.T) {
	var b bytes.Buffer
	p := NewStreamProgress(&b, "backup")
	_, _ = p.Write(make([]byte, 2048))
	p.Phase("blobs", 2, 2048)
	p.Stop()
	if got := b.String(); got != "backup: blobs: 2 items, 2.0 KiB\n" {
		t.Fatalf("%q", got)
	}
}
