package runtime

import (
	"bytes"
	"context"
	"testing"
	"unsafe"
)

func TestMemPoolScrubsOnReuse(t *testing.T) {
	for _, tc := range []struct {
		name string
		used uint64
	}{
		{"small (cleared in place)", 64 << 10},
		{"large (released to the kernel)", 1 << 20},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := newMemPool()
			defer p.close(false)
			m := p.Allocate(64<<10, 2<<20)
			buf := m.Reallocate(tc.used)
			if uint64(len(buf)) != tc.used {
				t.Fatalf("len %d, want %d", len(buf), tc.used)
			}
			for i := range buf {
				buf[i] = 0xa5
			}
			first := unsafe.SliceData(buf)
			m.Free()
			m2 := p.Allocate(64<<10, 2<<20)
			buf2 := m2.Reallocate(tc.used)
			if _, mapped := m2.(*mappedMem); mapped && unsafe.SliceData(buf2) != first {
				t.Errorf("a freed memory of the same size was not reused")
			}
			if i := bytes.IndexFunc(buf2, func(r rune) bool { return r != 0 }); i >= 0 {
				t.Fatalf("reused memory not scrubbed: byte %d is %#x", i, buf2[i])
			}
			if m2.Reallocate(4<<20) != nil {
				t.Errorf("grew past the maximum")
			}
			m2.Free()
		})
	}
}

func TestFreshInstance(t *testing.T) {
	e := newEngine(t,
		Spec{Name: "fresh", Module: fixture(t, "counter"), FreshInstance: true, Concurrency: 1},
		Spec{Name: "dirty", Module: fixture(t, "dirty"), FreshInstance: true, Concurrency: 2},
	)
	ctx := context.Background()
	for range 3 {
		out, err := e.Call(ctx, "fresh", nil)
		if err != nil {
			t.Fatal(err)
		}
		if got := counterValue(t, out); got != 101 {
			t.Fatalf("counter = %d, want 101 (a fresh instance runs _initialize, then one call)", got)
		}
	}
	for i := range 6 {
		in := []byte(nil)
		if i%2 == 1 {
			in = []byte{1} // grow to 8 pages: the large scrub path
		}
		out, err := e.Call(ctx, "dirty", in)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(out, make([]byte, 16)) {
			t.Fatalf("call %d saw a previous instance's memory: %x", i, out)
		}
	}
	for _, ti := range e.Tasks() {
		if !ti.FreshInstance {
			t.Errorf("task %s: FreshInstance false", ti.Name)
		}
	}
	if e.mem.stats() == 0 {
		t.Errorf("no memory kept for reuse")
	}
}
