package console

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/outpost-edge/outpost/coordinator/admin"
	"github.com/outpost-edge/outpost/coordinator/calls"
	"github.com/outpost-edge/outpost/internal/browsertest"
)

// benchNode is a healthy node with no tasks, enough for the overview.
type benchNode struct{ start time.Time }

func (n benchNode) Health() admin.Health {
	return admin.Health{Status: "ok", Node: "bench", Version: "bench", Uptime: time.Since(n.start).Seconds(),
		MQTT: admin.MQTTHealth{Broker: "embedded", Connected: true}, Scheduler: admin.SchedulerStats{Workers: 2}}
}
func (benchNode) Tasks() []admin.Task { return []admin.Task{} }
func (benchNode) Call(context.Context, *calls.Call) (calls.Result, error) {
	return calls.Result{}, errors.New("no tasks")
}

// emptyPage is the baseline: a static page with nothing in it, served the
// way the console's assets are.
const emptyPage = `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>empty</title></head><body><p id="ready">empty</p></body></html>`

// renderProbe records in window.__rendered the time (from the navigation's
// start) of the first animation frame in which a first view is visible:
// the empty page's paragraph, the console's login form or a view.
const renderProbe = `(() => {
  const tick = () => {
    const el = document.querySelector("#ready, #login-token, section[data-view]");
    if (el && el.offsetParent !== null) { window.__rendered = performance.now(); return; }
    requestAnimationFrame(tick);
  };
  requestAnimationFrame(tick);
})();`

// renderedAt waits for the probe's note (it may come a frame after the
// driver saw the view).
const renderedAt = `new Promise((resolve) => {
  const wait = () => (window.__rendered !== undefined ? resolve(window.__rendered) : requestAnimationFrame(wait));
  wait();
})`

// BenchmarkConsoleFirstRender times, in headless chromium with its cache
// off, a navigation until the first view shows (render-ms: the page's own
// clock): an empty static page (the
// baseline), the console's login form, and the console's overview with a
// session (its data read from the API). The console-login line also
// reports the console's weight, every asset gzip-compressed.
func BenchmarkConsoleFirstRender(b *testing.B) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	tokenFile := filepath.Join(b.TempDir(), admin.TokenFileName)
	s := admin.NewServer(admin.Options{Listen: "127.0.0.1:0", TokenFile: tokenFile, CreateToken: true}, benchNode{time.Now()},
		prometheus.NewRegistry(), reg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	Mount(s, &fakeTelemetry{})
	s.HandlePublic("/empty/", http.StripPrefix("/empty/", serveAssets(map[string]*asset{"index.html": newAsset("index.html", []byte(emptyPage))})))
	if err := s.Start(context.Background()); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = s.Stop(context.Background()) })
	tok, err := admin.ReadToken(tokenFile)
	if err != nil {
		b.Fatal(err)
	}
	size, err := weight()
	if err != nil {
		b.Fatal(err)
	}
	ctx := browsertest.Start(b, 1100, 760)
	if _, err := chromedp.Call(ctx, network.Enable, network.EnableParams{}); err != nil {
		b.Fatal(err)
	}
	if _, err := chromedp.Call(ctx, network.SetCacheDisabled, network.SetCacheDisabledParams{CacheDisabled: true}); err != nil {
		b.Fatal(err)
	}
	base := "http://" + s.Addr()
	do := func(actions ...chromedp.Action[chromedp.Void]) {
		b.Helper()
		if err := chromedp.Do(ctx, actions...); err != nil {
			b.Fatal(err)
		}
	}
	// Every page the tab loads notes, from the first animation frame on,
	// when its first view is visible: the frame it is painted in.
	if _, err := chromedp.Call(ctx, page.AddScriptToEvaluateOnNewDocument, page.AddScriptToEvaluateOnNewDocumentParams{Source: renderProbe}); err != nil {
		b.Fatal(err)
	}
	// render navigates to url b.N times and reports, beside the wall time
	// the driver saw, the page's own time from the navigation's start to
	// the frame that showed sel, after one load that is not counted.
	render := func(b *testing.B, url, sel string) {
		do(chromedp.Navigate(url), chromedp.WaitVisible(chromedp.CSS(sel))) // the browser's first load of a page is slower
		b.ResetTimer()
		var inPage float64
		for range b.N {
			do(chromedp.Navigate(url), chromedp.WaitVisible(chromedp.CSS(sel)))
			ms, err := chromedp.Run(ctx, chromedp.Evaluate[float64](renderedAt, chromedp.EvalAwaitPromise))
			if err != nil {
				b.Fatal(err)
			}
			inPage += ms
		}
		b.ReportMetric(inPage/float64(b.N), "render-ms")
	}
	b.Run("empty-page", func(b *testing.B) { render(b, base+"/empty/", "#ready") })
	b.Run("console-login", func(b *testing.B) {
		render(b, base+Prefix, "#login-token")
		b.ReportMetric(float64(size), "gzip-bytes")
	})
	loggedIn := false // the framework calls the function again with a larger b.N
	b.Run("console-overview", func(b *testing.B) {
		if !loggedIn {
			loggedIn = true
			do(chromedp.Navigate(base+Prefix), chromedp.WaitVisible(chromedp.CSS("#login-token")),
				chromedp.SetValue(chromedp.CSS("#login-token"), string(tok)), chromedp.Click(chromedp.CSS("#login-submit")),
				chromedp.WaitVisible(chromedp.CSS(`section[data-view="overview"]`)))
		}
		render(b, base+Prefix, `section[data-view="overview"]`)
	})
}
