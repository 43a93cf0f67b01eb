package remote_test

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/coordinator/remote"
	"github.com/outpost-edge/outpost/coordinator/remote/server"
)

// throttled is a link of rate bytes/s with delay added to every request,
// counting the bytes it carries to the node.
type throttled struct {
	h     http.Handler
	rate  float64
	delay time.Duration
	sent  atomic.Int64
}

func (t *throttled) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	time.Sleep(t.delay)
	t.h.ServeHTTP(&throttledWriter{ResponseWriter: w, t: t}, r)
}

type throttledWriter struct {
	http.ResponseWriter
	t *throttled
}

func (w *throttledWriter) Write(p []byte) (int, error) {
	n := 0
	for len(p) > 0 {
		chunk := p[:min(len(p), 8<<10)]
		time.Sleep(time.Duration(float64(len(chunk)) / w.t.rate * float64(time.Second)))
		m, err := w.ResponseWriter.Write(chunk)
		n += m
		w.t.sent.Add(int64(m))
		if err != nil {
			return n, err
		}
		p = p[len(chunk):]
	}
	return n, nil
}

// BenchmarkProvision: a task of a 200 KiB module, three 100 KiB libraries
// shared with another task and a 500 KiB data file, provisioned over a
// 10 Mbit/s link with 20 ms, then 150 ms, added to each request, on a
// cold receiver (holds nothing), a partly warm one (holds the libraries)
// and a warm one (holds everything): packaged by the control plane
// against one object at a time (a GET of each object the receiver
// lacks). Reports the time until every object is stored (digest checked)
// and the bytes sent.
func BenchmarkProvision(b *testing.B) {
	for _, delay := range []time.Duration{20 * time.Millisecond, 150 * time.Millisecond} {
		b.Run(fmt.Sprintf("rtt-%s", delay), func(b *testing.B) { benchProvision(b, delay) })
	}
}

func benchProvision(b *testing.B, delay time.Duration) {
	srv, err := server.Open(server.Options{Dir: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	defer srv.Close()
	link := &throttled{h: srv.Handler(), rate: 10e6 / 8, delay: delay}
	hs := httptest.NewServer(link)
	defer hs.Close()
	put := func(n int) string {
		buf := make([]byte, n)
		_, _ = rand.Read(buf)
		info, err := srv.PutObject(strings.NewReader(string(buf)))
		if err != nil {
			b.Fatal(err)
		}
		return info.Digest
	}
	module, data := put(200<<10), put(500<<10)
	libs := []string{put(100 << 10), put(100 << 10), put(100 << 10)}
	all := append([]string{module, data}, libs...)
	c := remote.New(remote.Config{URL: hs.URL, NodeID: "n"}, nil, quiet, nil)
	ctx := context.Background()
	// Another task needs the libraries too: they are shared.
	if _, err := c.Provision(ctx, put(10), libs, nil); err != nil {
		b.Fatal(err)
	}
	// A first package measures the link for the cost model.
	if err := fetch(ctx, c, "sha256:"+strings.Repeat("0", 64), []string{libs[0]}, nil, true); err != nil {
		b.Fatal(err)
	}
	for _, warmth := range []struct {
		name string
		have []string
	}{{"cold", nil}, {"partly-warm", libs}, {"warm", all}} {
		for _, packaged := range []bool{true, false} {
			mode := "one-at-a-time"
			if packaged {
				mode = "packaged"
			}
			b.Run(warmth.name+"/"+mode, func(b *testing.B) {
				link.sent.Store(0)
				start := time.Now()
				for range b.N {
					if err := fetch(ctx, c, "sha256:"+strings.Repeat("1", 64), all, warmth.have, packaged); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(time.Since(start).Milliseconds())/float64(b.N), "ms-to-provisioned")
				b.ReportMetric(float64(link.sent.Load())/float64(b.N), "bytes-sent")
			})
		}
	}
}

// fetch provisions objects on a receiver holding have, as the node does
// (coordinator/provision.go: nothing is asked when it holds everything):
// in packages, or one GET per object; every object's digest is checked.
func fetch(ctx context.Context, c *remote.Client, root string, objects, have []string, packaged bool) error {
	store := func(digest string, r io.Reader) error {
		h := sha256.New()
		if _, err := io.Copy(h, r); err != nil {
			return err
		}
		if got := "sha256:" + hex.EncodeToString(h.Sum(nil)); got != digest {
			return fmt.Errorf("got %s, want %s", got, digest)
		}
		return nil
	}
	held := map[string]bool{}
	for _, d := range have {
		held[d] = true
	}
	if packaged && len(held) < len(objects) {
		pkgs, err := c.Provision(ctx, root, objects, have)
		if err != nil {
			return err
		}
		for _, p := range pkgs {
			if err := c.FetchPackage(ctx, p, store); err != nil {
				return err
			}
		}
		return nil
	}
	for _, d := range objects {
		if packaged || held[d] {
			continue
		}
		body, _, err := c.OpenObject(ctx, d)
		if err != nil {
			return err
		}
		err = store(d, body)
		body.Close()
		if err != nil {
			return err
		}
	}
	return nil
}
