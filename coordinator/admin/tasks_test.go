package admin

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// memRegistry stores blobs in memory and records the last upload.
type memRegistry struct {
	mu       sync.Mutex
	blobs    map[string]string
	last     Upload
	released []Upload
}

var _ Registry = (*memRegistry)(nil)

func (m *memRegistry) StoreBlob(_ context.Context, r io.Reader) (string, int64, error) {
	b, err := io.ReadAll(r)
	if err != nil {
		return "", 0, err
	}
	sum := sha256.Sum256(b)
	d := hex.EncodeToString(sum[:])
	m.mu.Lock()
	defer m.mu.Unlock()
	m.blobs[d] = string(b)
	return d, int64(len(b)), nil
}

func (m *memRegistry) Deploy(_ context.Context, name string, up Upload) (TaskDetail, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.last = up
	up.ReportPhase(PhaseCompiling)
	if strings.Contains(string(up.Manifest), "cycle") {
		return TaskDetail{}, fmt.Errorf("%w: task %q: import cycle: %s -> a -> b -> a", ErrInvalid, name, name)
	}
	return TaskDetail{Task: Task{Name: name, Digest: up.Module}}, nil
}

func (m *memRegistry) Remove(context.Context, string) error { return nil }
func (m *memRegistry) Rollback(context.Context, string) (TaskDetail, error) {
	return TaskDetail{}, nil
}
func (m *memRegistry) Inspect(string) (TaskDetail, bool) { return TaskDetail{}, false }
func (m *memRegistry) Release(up Upload) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.released = append(m.released, up)
}

// A deploy's module and objects arrive as blobs, keyed by their manifest
// reference; progress covers the whole upload; refusals carry the message.
func TestDeployObjects(t *testing.T) {
	reg := &memRegistry{blobs: map[string]string{}}
	s := newServer(t, &node{}, prometheus.NewRegistry())
	MountRegistry(s, reg)
	c := run(t, s)
	ctx := context.Background()

	var last, total int64
	objs := []UploadPart{
		{Ref: "lib/math.wasm", R: strings.NewReader("math"), Size: 4},
		{Ref: "data/table.csv", R: strings.NewReader("a,b\n"), Size: 4},
	}
	_, err := c.Deploy(ctx, "t", &UploadPart{R: strings.NewReader("module"), Size: 6}, []byte("libraries: []"), objs, &DeployProgress{Sent: func(sent, tot int64) {
		last, total = sent, tot
	}})
	if err != nil {
		t.Fatal(err)
	}
	if last != 14 || total != 14 {
		t.Fatalf("progress ended at %d of %d, want 14 of 14", last, total)
	}
	up := reg.last
	if reg.blobs[up.Module] != "module" || up.Size != 6 || string(up.Manifest) != "libraries: []" ||
		reg.blobs[up.Objects["lib/math.wasm"]] != "math" || reg.blobs[up.Objects["data/table.csv"]] != "a,b\n" {
		t.Fatalf("upload %+v", up)
	}

	// No module part: the manifest names it.
	if _, err := c.Deploy(ctx, "t", nil, []byte("module: x.wasm"), nil, nil); err != nil || reg.last.Module != "" {
		t.Fatalf("deploy without a module part: %+v %v", reg.last, err)
	}
	if _, err := c.Deploy(ctx, "t", nil, []byte("cycle"), nil, nil); err == nil || !strings.Contains(err.Error(), "import cycle: t -> a -> b -> a") {
		t.Fatalf("refused deploy: %v", err)
	}
}

// A client that follows phases hears the daemon compile before the outcome,
// success or refusal alike.
func TestDeployStreamsPhases(t *testing.T) {
	reg := &memRegistry{blobs: map[string]string{}}
	s := newServer(t, &node{}, prometheus.NewRegistry())
	MountRegistry(s, reg)
	c := run(t, s)
	var phases []string
	p := &DeployProgress{Phase: func(name string) { phases = append(phases, name) }}
	d, err := c.Deploy(context.Background(), "t", &UploadPart{R: strings.NewReader("module"), Size: 6}, nil, nil, p)
	if err != nil || d.Name != "t" || reg.blobs[d.Digest] != "module" {
		t.Fatalf("deploy: %+v %v", d, err)
	}
	if strings.Join(phases, ",") != PhaseCompiling {
		t.Fatalf("phases %q, want [%s]", phases, PhaseCompiling)
	}
	phases = nil
	if _, err := c.Deploy(context.Background(), "t", nil, []byte("cycle"), nil, p); err == nil || !strings.Contains(err.Error(), "import cycle") {
		t.Fatalf("refused deploy: %v", err)
	}
	if len(phases) != 1 {
		t.Fatalf("phases of a refused deploy: %q", phases)
	}
}

// A deploy request that fails after some parts were stored releases them
// (they are held against blob GC) and never reaches Deploy; a deployed one
// is not released by the handler (Deploy drops its holds).
func TestDeployReleasesFailedUploads(t *testing.T) {
	reg := &memRegistry{blobs: map[string]string{}}
	s := newServer(t, &node{}, prometheus.NewRegistry())
	MountRegistry(s, reg)
	c := run(t, s)
	ctx := context.Background()
	if _, err := c.Deploy(ctx, "t", &UploadPart{R: strings.NewReader("module"), Size: 6}, nil, nil, nil); err != nil || len(reg.released) != 0 {
		t.Fatalf("deploy: %v, released %+v", err, reg.released)
	}
	// The same object twice: refused, both parts stored so far released.
	objs := []UploadPart{{Ref: "x.wasm", R: strings.NewReader("one"), Size: 3}, {Ref: "x.wasm", R: strings.NewReader("two"), Size: 3}}
	reg.last = Upload{}
	_, err := c.Deploy(ctx, "t", &UploadPart{R: strings.NewReader("module"), Size: 6}, nil, objs, nil)
	if err == nil || !strings.Contains(err.Error(), `part "object:x.wasm" sent twice`) {
		t.Fatalf("duplicate part: %v", err)
	}
	if reg.last.Module != "" || len(reg.released) != 1 {
		t.Fatalf("Deploy reached (%+v) or released %d times", reg.last, len(reg.released))
	}
	rel := reg.released[0]
	if reg.blobs[rel.Module] != "module" || reg.blobs[rel.Objects["x.wasm"]] != "one" {
		t.Fatalf("released %+v, want the module and the first object", rel)
	}
}

// An upload whose Content-Length is over MaxModule is refused with 413
// before any of it is read or stored.
func TestDeployTooLargeRefusedUpFront(t *testing.T) {
	reg := &memRegistry{blobs: map[string]string{}}
	s := newServer(t, &node{}, prometheus.NewRegistry())
	MountRegistry(s, reg)
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Stop(context.Background()) })
	read := &countingReader{r: io.LimitReader(zeroReader{}, 1<<30)}
	req, _ := http.NewRequest("POST", "http://"+s.Addr()+"/v1/tasks/big", read)
	req.ContentLength = 1 << 30
	tok, err := ReadToken(s.opts.TokenFile)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+string(tok))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Errorf("status %s, want 413", resp.Status)
	}
	if len(reg.blobs) != 0 {
		t.Errorf("%d blobs stored", len(reg.blobs))
	}
	if n := read.n.Load(); n > 8<<20 {
		t.Errorf("the client sent %d bytes before the refusal", n)
	}
}

type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) { clear(p); return len(p), nil }

type countingReader struct {
	r io.Reader
	n atomic.Int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n.Add(int64(n))
	return n, err
}
