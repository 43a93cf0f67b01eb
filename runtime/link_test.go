package runtime

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func lib(t *testing.T, name, fx string) Library {
	return Library{Name: name, Module: fixture(t, fx)}
}

func TestLinkCallsLibrary(t *testing.T) {
	e := newEngine(t,
		Spec{Name: "t1", Module: fixture(t, "linked1"), Concurrency: 2, Libraries: []Library{lib(t, "math", "lib_math")}},
		Spec{Name: "t2", Module: fixture(t, "linked2"), Libraries: []Library{lib(t, "math", "lib_math")}},
		Spec{Name: "geo", Module: fixture(t, "linkgeo"), Libraries: []Library{lib(t, "geo", "lib_geo"), lib(t, "math", "lib_math")}},
	)
	ctx := context.Background()
	// The library's state lives in the task instance's own library instance.
	for i, want := range []string{"51", "52"} {
		out, err := e.Call(ctx, "t1", nil)
		if err != nil || string(out) != want {
			t.Fatalf("call %d: %q, %v; want %q", i, out, err, want)
		}
	}
	if out, err := e.Call(ctx, "t2", nil); err != nil || string(out) != "51" {
		t.Fatalf("t2: %q, %v; want 51 (its own library instance)", out, err)
	}
	if out, err := e.Call(ctx, "geo", nil); err != nil || string(out) != "6" {
		t.Fatalf("geo: %q, %v; want 6", out, err)
	}
	// math (shared by three tasks) and geo: two compiles.
	if n := e.LibraryCompiles(); n != 2 {
		t.Fatalf("library compiles = %d, want 2 (math compiled once)", n)
	}
	// A reload keeps the compiled library.
	set, err := e.Load(ctx, []Spec{{Name: "t1", Module: fixture(t, "linked1"), Libraries: []Library{lib(t, "math", "lib_math")}}})
	if err != nil {
		t.Fatal(err)
	}
	e.Activate(set)
	if n := e.LibraryCompiles(); n != 2 {
		t.Fatalf("library compiles after reload = %d, want 2", n)
	}
}

func TestLinkRefused(t *testing.T) {
	m2 := lib(t, "math", "lib_math2")
	cases := []struct {
		name string
		spec Spec
		want []string
	}{
		{"missing", Spec{Name: "t", Module: fixture(t, "linked1"), Libraries: []Library{lib(t, "geo", "lib_geo")}},
			[]string{`task "t": imports module "math" which no library provides`}},
		{"missing nested", Spec{Name: "t", Module: fixture(t, "linkgeo"), Libraries: []Library{lib(t, "geo", "lib_geo")}},
			[]string{`task "t": imports module "math" which no library provides (t -> geo -> math)`}},
		{"cycle", Spec{Name: "t", Module: fixture(t, "linkcyc"), Libraries: []Library{lib(t, "a", "lib_cyc_a"), lib(t, "b", "lib_cyc_b")}},
			[]string{`task "t": import cycle: t -> a -> b -> a`}},
		{"conflict", Spec{Name: "t", Module: fixture(t, "linkgeo"), Libraries: []Library{lib(t, "geo", "lib_geo"), lib(t, "math", "lib_math"), m2}},
			[]string{`task "t": version conflict: library "math" is given as sha256:`, `(libraries[1], module `, `(libraries[2], module `, `required by t -> geo -> math`}},
		{"digest", Spec{Name: "t", Module: fixture(t, "linked1"), Libraries: []Library{{Name: "math", Module: m2.Module, Digest: strings.Repeat("0", 64)}}},
			[]string{`task "t": library "math": module `, `has digest `}},
		{"signature", Spec{Name: "t", Module: fixture(t, "linkcyc"), Libraries: []Library{lib(t, "a", "lib_math")}},
			[]string{`task "t": module imports unknown function a.f`}},
		{"reserved", Spec{Name: "t", Module: fixture(t, "linked1"), Libraries: []Library{lib(t, "outpost", "lib_math")}},
			[]string{`task "t": library "outpost": the name is reserved`}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := Check(context.Background(), []Spec{c.spec})
			if err == nil {
				t.Fatal("loaded")
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Fatalf("error %q\ndoes not contain %q", err, w)
				}
			}
		})
	}
}

func TestLinkDigestChecked(t *testing.T) {
	b, err := os.ReadFile(fixture(t, "lib_math"))
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(b)
	l := lib(t, "math", "lib_math")
	l.Digest = "sha256:" + hex.EncodeToString(sum[:])
	if err := Check(context.Background(), []Spec{{Name: "t", Module: fixture(t, "linked1"), Libraries: []Library{l}}}); err != nil {
		t.Fatal(err)
	}
}

func TestFilesMountedReadOnly(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "x.txt")
	if err := os.WriteFile(src, []byte("hello file"), 0o644); err != nil {
		t.Fatal(err)
	}
	e := newEngine(t,
		Spec{Name: "files", Module: fixture(t, "readfile"), Files: []File{{Path: "/data/x.txt", Source: src}}},
		Spec{Name: "nofs", Module: fixture(t, "readfile")},
	)
	out, err := e.Call(context.Background(), "files", nil)
	if err != nil || string(out) != "hello file" {
		t.Fatalf("files: %q, %v", out, err)
	}
	if b, _ := os.ReadFile(src); string(b) != "hello file" {
		t.Fatalf("the source changed: %q", b)
	}
	_, err = e.Call(context.Background(), "nofs", nil)
	if err == nil || !strings.Contains(err.Error(), "exited with code 10") {
		t.Fatalf("task without files: %v, want exit 10", err)
	}
}

func TestFilesRefused(t *testing.T) {
	src := filepath.Join(t.TempDir(), "x")
	if err := os.WriteFile(src, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		files []File
		want  string
	}{
		{[]File{{Path: "data/x", Source: src}}, "must be absolute"},
		{[]File{{Path: "/x", Source: src}, {Path: "/x", Source: src}}, "mounted twice"},
		{[]File{{Path: "/x", Source: src}, {Path: "/x/y", Source: src}}, "is a mounted file"},
		{[]File{{Path: "/x", Source: src + "-missing"}}, "no such file"},
		{[]File{{Path: "/", Source: src}}, "not a file path"},
	} {
		err := Check(context.Background(), []Spec{{Name: "t", Module: fixture(t, "readfile"), Files: c.files}})
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: %v, want %q", c.files, err, c.want)
		}
	}
}
