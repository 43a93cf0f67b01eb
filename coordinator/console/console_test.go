package console

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/outpost-edge/outpost/coordinator/admin"
	"github.com/outpost-edge/outpost/telemetry/model"
)

// fakeTelemetry is a store whose series gain a point on each Tick.
type fakeTelemetry struct {
	mu      sync.Mutex
	enabled bool
	n       int
	err     error
}

func (f *fakeTelemetry) Enabled() bool { return f.enabled }

func (f *fakeTelemetry) Tick() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.n++
}

func (f *fakeTelemetry) Latest(target, path string) ([]model.Point, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return nil, f.err
	}
	at := time.Unix(1_700_000_000+int64(f.n), 0).UTC()
	var out []model.Point
	for _, tg := range []string{"sw1", "sw2"} {
		if model.Glob(target, tg) {
			out = append(out, model.Point{Target: tg, Path: path, Time: at, Kind: "int", Value: model.Int(int64(f.n))})
		}
	}
	return out, nil
}

// serve starts an admin server with the console mounted and returns its
// stop (once), base URL and token.
func serve(t *testing.T, tele Telemetry) (func() error, string, string) {
	t.Helper()
	tokenFile := filepath.Join(t.TempDir(), admin.TokenFileName)
	s := admin.NewServer(admin.Options{Listen: "127.0.0.1:0", TokenFile: tokenFile, CreateToken: true}, nil,
		prometheus.NewRegistry(), prometheus.NewRegistry(), slog.New(slog.NewTextHandler(io.Discard, nil)))
	Mount(s, tele)
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	stop := sync.OnceValue(func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return s.Stop(ctx)
	})
	t.Cleanup(func() { _ = stop() })
	tok, err := admin.ReadToken(tokenFile)
	if err != nil {
		t.Fatal(err)
	}
	return stop, "http://" + s.Addr(), string(tok)
}

func get(t *testing.T, url string, headers map[string]string) *http.Response {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	resp, err := (&http.Transport{DisableCompression: true}).RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

// The assets need no credential, carry a CSP that allows only the
// console's own origin, go gzip-compressed to a browser that takes it and
// answer 304 to a known ETag.
func TestAssets(t *testing.T) {
	_, base, _ := serve(t, &fakeTelemetry{})
	index, err := assets.ReadFile("assets/index.html")
	if err != nil {
		t.Fatal(err)
	}
	resp := get(t, base+Prefix, map[string]string{"Accept-Encoding": "gzip, br"})
	zr, err := gzip.NewReader(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(zr)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !bytes.Equal(body, index) || resp.Header.Get("Content-Encoding") != "gzip" {
		t.Fatalf("GET %s: %d, encoding %q, %d bytes", Prefix, resp.StatusCode, resp.Header.Get("Content-Encoding"), len(body))
	}
	if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'none'") || !strings.Contains(csp, "connect-src 'self'") || strings.Contains(csp, "http") {
		t.Errorf("CSP %q", csp)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/html") {
		t.Errorf("index content type %q", ct)
	}
	resp = get(t, base+Prefix+"app.js", nil)
	js, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Encoding") != "" || !strings.Contains(resp.Header.Get("Content-Type"), "javascript") || len(js) == 0 {
		t.Errorf("app.js without gzip: %d %q %q", resp.StatusCode, resp.Header.Get("Content-Encoding"), resp.Header.Get("Content-Type"))
	}
	resp = get(t, base+Prefix+"app.js", map[string]string{"If-None-Match": resp.Header.Get("ETag")})
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotModified {
		t.Errorf("app.js with its ETag: %d, want 304", resp.StatusCode)
	}
	for _, p := range []string{"nothing.js", "vendor/", "assets/index.html"} {
		resp = get(t, base+Prefix+p, nil)
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound {
			t.Errorf("%s: %d, want 404", p, resp.StatusCode)
		}
	}
	// The API beside it still needs a credential.
	resp = get(t, base+StreamPath+"?path=/x", nil)
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("stream without a credential: %d, want 401", resp.StatusCode)
	}
}

// weight is the console's total size as served to a browser that takes
// gzip: every embedded asset, compressed.
func weight() (int, error) {
	files, err := load()
	if err != nil {
		return 0, err
	}
	n := 0
	for _, a := range files {
		n += len(a.gz())
	}
	return n, nil
}

// The whole console, compressed as served, stays under 300 KB.
func TestWeight(t *testing.T) {
	n, err := weight()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("console weight: %d bytes compressed", n)
	if n > 300<<10 {
		t.Errorf("console weighs %d bytes compressed, over 300 KB", n)
	}
}

// No asset asks for another host: the console's own files name no URL, and
// the vendored library only in its license comment.
func TestNoOutsideHosts(t *testing.T) {
	url := regexp.MustCompile(`(?i)\b(?:https?:)?//[a-z0-9.-]+\.[a-z]{2,}`)
	for _, name := range []string{"index.html", "app.js", "app.css", "vendor/uPlot.min.css", "vendor/uPlot.iife.min.js"} {
		b, err := assets.ReadFile("assets/" + name)
		if err != nil {
			t.Fatal(err)
		}
		if name == "vendor/uPlot.iife.min.js" {
			b = bytes.Replace(b, []byte("/*! https://github.com/leeoniya/uPlot"), nil, 1)
		}
		if m := url.Find(b); m != nil {
			t.Errorf("%s names an outside host: %s", name, m)
		}
	}
}

// The vendored chart library is the version package-lock.json pins, and,
// where scripts/build-console.sh has installed it, byte for byte its dist
// files.
func TestVendoredAssetsCurrent(t *testing.T) {
	var lock struct {
		Packages map[string]struct {
			Version string `json:"version"`
		} `json:"packages"`
	}
	b, err := os.ReadFile("package-lock.json")
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &lock); err != nil {
		t.Fatal(err)
	}
	var pkg struct {
		Dependencies map[string]string `json:"dependencies"`
	}
	b, err = os.ReadFile("package.json")
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &pkg); err != nil {
		t.Fatal(err)
	}
	locked := lock.Packages["node_modules/uplot"].Version
	if locked == "" || pkg.Dependencies["uplot"] != locked {
		t.Fatalf("package.json pins uplot %q, package-lock.json %q: run scripts/build-console.sh", pkg.Dependencies["uplot"], locked)
	}
	js, err := assets.ReadFile("assets/vendor/uPlot.iife.min.js")
	if err != nil {
		t.Fatal(err)
	}
	if first, _, _ := bytes.Cut(js, []byte("\n")); !bytes.Contains(first, []byte("(v"+locked+")")) {
		t.Errorf("assets/vendor/uPlot.iife.min.js is %q, not the locked v%s: run scripts/build-console.sh", first, locked)
	}
	for _, f := range []string{"uPlot.iife.min.js", "uPlot.min.css"} {
		built, err := os.ReadFile(filepath.Join("node_modules", "uplot", "dist", f))
		if os.IsNotExist(err) {
			t.Logf("node_modules not installed: %s checked by its version only", f)
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		embedded, _ := assets.ReadFile("assets/vendor/" + f)
		if !bytes.Equal(built, embedded) {
			t.Errorf("assets/vendor/%s differs from node_modules/uplot/dist/%s: run scripts/build-console.sh", f, f)
		}
	}
}

// event is one Server-Sent Event.
type event struct{ name, data string }

// readEvents reads events (comments skipped) from an event stream.
func readEvents(r io.Reader, out chan<- event) {
	defer close(out)
	sc := bufio.NewScanner(r)
	var ev event
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "":
			if ev.name != "" || ev.data != "" {
				out <- ev
			}
			ev = event{}
		case strings.HasPrefix(line, "event: "):
			ev.name = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: "):
			ev.data = strings.TrimPrefix(line, "data: ")
		}
	}
}

func nextEvent(t *testing.T, evs <-chan event) event {
	t.Helper()
	select {
	case ev, ok := <-evs:
		if !ok {
			t.Fatal("the stream ended")
		}
		return ev
	case <-time.After(10 * time.Second):
		t.Fatal("no event in 10s")
	}
	return event{}
}

// The stream sends the latest point of each matching series first, then
// only the points newer than those sent, and ends when the server stops.
func TestStream(t *testing.T) {
	tele := &fakeTelemetry{enabled: true}
	stop, base, tok := serve(t, tele)
	resp := get(t, base+StreamPath+"?target=sw*&path=/a&path=/b&interval=200ms", map[string]string{"Authorization": "Bearer " + tok})
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("stream: %d %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	evs := make(chan event, 16)
	go readEvents(resp.Body, evs)
	type point struct {
		Target, Path string
		Value        json.RawMessage
	}
	points := func(ev event) []point {
		t.Helper()
		if ev.name != "points" {
			t.Fatalf("event %q: %s", ev.name, ev.data)
		}
		var pts []point
		if err := json.Unmarshal([]byte(ev.data), &pts); err != nil {
			t.Fatal(err)
		}
		return pts
	}
	if pts := points(nextEvent(t, evs)); len(pts) != 4 {
		t.Fatalf("first event: %d points, want the latest of 4 series: %+v", len(pts), pts)
	}
	tele.Tick()
	pts := points(nextEvent(t, evs))
	if len(pts) != 4 || string(pts[0].Value) != "1" {
		t.Fatalf("after a tick: %+v, want 4 new points of value 1", pts)
	}
	// Nothing new: no points event, only comments, until the next tick.
	time.Sleep(500 * time.Millisecond)
	tele.Tick()
	if pts := points(nextEvent(t, evs)); len(pts) != 4 || string(pts[0].Value) != "2" {
		t.Fatalf("after the second tick: %+v", pts)
	}
	tele.mu.Lock()
	tele.err = errors.New("store closed")
	tele.mu.Unlock()
	if ev := nextEvent(t, evs); ev.name != "problem" || !strings.Contains(ev.data, "store closed") {
		t.Fatalf("a store error: %+v, want a problem event", ev)
	}
	start := time.Now()
	if err := stop(); err != nil {
		t.Errorf("stop with a stream open: %v", err)
	}
	if el := time.Since(start); el > 3*time.Second {
		t.Errorf("stop took %v with a stream open", el)
	}
	for range evs { // the stream ends
	}
}

// Bad queries are refused with the parameter named, and a daemon without
// telemetry answers 503.
func TestStreamRefusals(t *testing.T) {
	_, base, tok := serve(t, &fakeTelemetry{})
	auth := map[string]string{"Authorization": "Bearer " + tok}
	for q, want := range map[string]int{
		"":                           http.StatusBadRequest,
		"?path=/a&interval=1ms":      http.StatusBadRequest,
		"?path=/a&interval=x":        http.StatusBadRequest,
		"?path=/a&target=a&target=b": http.StatusBadRequest,
		"?" + strings.Repeat("path=/a&", maxPaths+1): http.StatusBadRequest,
		"?path=/a": http.StatusServiceUnavailable,
	} {
		resp := get(t, base+StreamPath+q, auth)
		var e map[string]string
		_ = json.NewDecoder(resp.Body).Decode(&e)
		resp.Body.Close()
		if resp.StatusCode != want || e["error"] == "" {
			t.Errorf("%q: %d %v, want %d with an error", q, resp.StatusCode, e, want)
		}
	}
}
