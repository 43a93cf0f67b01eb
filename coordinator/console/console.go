// Package console serves the daemon's web console on the admin listener
// under /ui/: hand-written HTML, CSS and JavaScript embedded in the
// binary, with uPlot for charts, that log in with the admin token (a
// session of coordinator/admin) and call the admin API's own routes. Its
// one route of its own is the telemetry event stream (stream.go). Nothing
// it serves asks for another host.
package console

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"fmt"
	"io/fs"
	"mime"
	"net/http"
	"path"
	"strings"
	"sync"

	"github.com/outpost-edge/outpost/coordinator/admin"
)

//go:embed assets
var assets embed.FS

// Prefix is the path the console is served under.
const Prefix = "/ui/"

// csp allows the console's own scripts, styles and API, and nothing from
// another origin; no inline script, no framing.
const csp = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; " +
	"font-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"

// asset is one embedded file with its gzip form, made at its first
// request: a compressor at the best level allocates about a megabyte, which
// a daemon whose console is never opened should not hold in its idle RSS.
type asset struct {
	body        []byte
	gz          func() []byte
	contentType string
	etag        string
}

// Mount serves the console's assets on s under Prefix (no credential: they
// hold no data) and the telemetry event stream (behind the admin access
// model like every API route).
func Mount(s *admin.Server, tele Telemetry) {
	files, err := load()
	if err != nil {
		panic(err) // the embedded files are part of the binary: only a broken build fails here
	}
	s.HandlePublic(Prefix, http.StripPrefix(Prefix, serveAssets(files)))
	s.Handle("GET "+StreamPath, streamHandler(s, tele))
}

// load reads the embedded assets and compresses each once.
func load() (map[string]*asset, error) {
	files := map[string]*asset{}
	err := fs.WalkDir(assets, "assets", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		body, err := assets.ReadFile(p)
		if err != nil {
			return err
		}
		files[strings.TrimPrefix(p, "assets/")] = newAsset(p, body)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("console assets: %w", err)
	}
	return files, nil
}

// newAsset is the file name holding body, compressed at its first use.
func newAsset(name string, body []byte) *asset {
	gz := sync.OnceValue(func() []byte {
		var gz bytes.Buffer
		zw, _ := gzip.NewWriterLevel(&gz, gzip.BestCompression) // a valid level: no error
		_, _ = zw.Write(body)                                   // into memory: no error
		_ = zw.Close()
		return gz.Bytes()
	})
	sum := sha256.Sum256(body)
	ct := mime.TypeByExtension(path.Ext(name))
	if ct == "" {
		ct = "application/octet-stream"
	}
	return &asset{body: body, gz: gz, contentType: ct, etag: `"` + hex.EncodeToString(sum[:8]) + `"`}
}

// serveAssets answers with the embedded file of the path ("" is
// index.html), gzip-compressed when the browser takes it.
func serveAssets(files map[string]*asset) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		name := r.URL.Path
		if name == "" {
			name = "index.html"
		}
		a := files[name]
		if a == nil {
			http.NotFound(w, r)
			return
		}
		h := w.Header()
		h.Set("Content-Security-Policy", csp)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Cache-Control", "no-cache") // revalidated by the ETag: a new daemon serves its own console
		h.Set("ETag", a.etag)
		h.Set("Vary", "Accept-Encoding")
		h.Set("Content-Type", a.contentType)
		if r.Header.Get("If-None-Match") == a.etag {
			w.WriteHeader(http.StatusNotModified)
			return
		}
		body := a.body
		if acceptsGzip(r) {
			h.Set("Content-Encoding", "gzip")
			body = a.gz()
		}
		h.Set("Content-Length", fmt.Sprint(len(body)))
		_, _ = w.Write(body)
	})
}

func acceptsGzip(r *http.Request) bool {
	for _, e := range strings.Split(r.Header.Get("Accept-Encoding"), ",") {
		if strings.TrimSpace(strings.SplitN(e, ";", 2)[0]) == "gzip" {
			return true
		}
	}
	return false
}
