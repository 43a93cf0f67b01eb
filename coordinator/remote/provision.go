package remote

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Provisioning (docs/placement.md "Packaging"): a node that must fetch a
// task's code objects (its module, libraries, files and artifacts, named
// by a manifest object) tells the control plane which of them it holds
// and the rate and round trip it measured on the link; the control plane
// groups the others into packages by the expected time to provision, and
// the node fetches each package in one request.

// ProvisionRequest is the body of POST /edge/v1/nodes/{node}/provision.
type ProvisionRequest struct {
	Root    string   `json:"root"`           // the manifest object the call names
	Objects []string `json:"objects"`        // every object the task needs
	Have    []string `json:"have,omitempty"` // of those, the ones the node holds
	RateBPS float64  `json:"rate_bps,omitempty"`
	RTTMS   float64  `json:"rtt_ms,omitempty"`
}

// ProvisionResponse is its answer: the packages to fetch, in order.
type ProvisionResponse struct {
	Packages []Package `json:"packages"`
}

// Package is objects fetched in one request
// (GET /edge/v1/nodes/{node}/package?objects=D1,D2…).
type Package struct {
	Objects []PackedObject `json:"objects"`
	Bytes   int64          `json:"bytes"`
}

// PackedObject is one object of a package. Shared: used by more than one
// task the control plane knows, so it travels alone and stays cached.
type PackedObject struct {
	Digest string `json:"digest"`
	Size   int64  `json:"size"`
	Shared bool   `json:"shared,omitempty"`
}

// Link is what the cost model knows of a link.
type Link struct {
	BytesPerSec float64
	RTT         time.Duration
}

// DefaultLink is assumed before a node has measured its link.
var DefaultLink = Link{BytesPerSec: 1 << 20, RTT: 50 * time.Millisecond}

// transfer is the expected time to send n bytes.
func (l Link) transfer(n int64) time.Duration {
	return time.Duration(float64(n) / l.BytesPerSec * float64(time.Second))
}

// Cost is the expected time to provision pkgs one after the other: a round
// trip and the transfer of its bytes each.
func (l Link) Cost(pkgs []Package) time.Duration {
	var d time.Duration
	for _, p := range pkgs {
		d += l.RTT + l.transfer(p.Bytes)
	}
	return d
}

// Plan groups the objects the receiver does not hold into packages: a
// shared object whose own transfer takes at least a round trip travels
// alone (a package of its own is cached under its own name, so the next
// task that needs it finds it; the extra round trip costs at most what it
// carries); the others, small shared ones included, travel together in
// one round trip. An object the receiver holds is not sent.
func Plan(objs []PackedObject, have map[string]bool, link Link) []Package {
	var pkgs []Package
	var rest Package
	seen := map[string]bool{}
	for _, o := range objs {
		if have[o.Digest] || seen[o.Digest] {
			continue
		}
		seen[o.Digest] = true
		if o.Shared && link.transfer(o.Size) >= link.RTT {
			pkgs = append(pkgs, Package{Objects: []PackedObject{o}, Bytes: o.Size})
			continue
		}
		rest.Objects = append(rest.Objects, o)
		rest.Bytes += o.Size
	}
	if len(rest.Objects) > 0 {
		pkgs = append(pkgs, rest)
	}
	return pkgs
}

// WritePackage writes one frame per object: "sha256:HEX SIZE\n" then the
// bytes; open gives an object's bytes.
func WritePackage(w io.Writer, p Package, open func(digest string) (io.ReadCloser, error)) error {
	for _, o := range p.Objects {
		r, err := open(o.Digest)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(w, "%s %d\n", o.Digest, o.Size)
		if err == nil {
			_, err = io.CopyN(w, r, o.Size)
		}
		r.Close()
		if err != nil {
			return fmt.Errorf("package %s: %w", o.Digest, err)
		}
	}
	return nil
}

// Provision asks the control plane how to fetch the task's objects and
// returns the packages; the link's measured rate and round trip go with
// the request.
func (c *Client) Provision(ctx context.Context, root string, objects, have []string) ([]Package, error) {
	l := c.Link()
	body, _ := json.Marshal(ProvisionRequest{Root: root, Objects: objects, Have: have,
		RateBPS: l.BytesPerSec, RTTMS: float64(l.RTT) / float64(time.Millisecond)})
	req, err := c.objectRequest(ctx, http.MethodPost, c.endpoint("provision"), bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("provision %s: %w", root, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, MaxResponseBody))
	if err != nil {
		return nil, fmt.Errorf("provision %s: %w", root, err)
	}
	if resp.StatusCode != http.StatusOK {
		c.uploadRefused(resp.StatusCode)
		return nil, fmt.Errorf("provision %s: status %d: %s", root, resp.StatusCode, trim(b))
	}
	var pr ProvisionResponse
	if err := json.Unmarshal(b, &pr); err != nil {
		return nil, fmt.Errorf("provision %s: %w", root, err)
	}
	return pr.Packages, nil
}

// FetchPackage fetches one package and hands each object to store with
// its digest and a reader of exactly its bytes (store checks the digest).
// The transfer's rate and time to the first byte update the link's
// measurements.
func (c *Client) FetchPackage(ctx context.Context, p Package, store func(digest string, r io.Reader) error) error {
	ds := make([]string, len(p.Objects))
	for i, o := range p.Objects {
		ds[i] = o.Digest
	}
	u := c.endpoint("package") + "?objects=" + url.QueryEscape(strings.Join(ds, ","))
	req, err := c.objectRequest(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	start := time.Now()
	resp, err := c.hc.Do(req)
	if err != nil {
		return fmt.Errorf("fetch package: %w", err)
	}
	defer resp.Body.Close()
	rtt := time.Since(start)
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		c.uploadRefused(resp.StatusCode)
		return fmt.Errorf("fetch package: status %d: %s", resp.StatusCode, trim(b))
	}
	br := bufio.NewReader(resp.Body)
	for _, o := range p.Objects {
		line, err := br.ReadString('\n')
		if err != nil {
			return fmt.Errorf("fetch package: %w", err)
		}
		d, n, _ := strings.Cut(strings.TrimSpace(line), " ")
		size, err := strconv.ParseInt(n, 10, 64)
		if err != nil || d != o.Digest || size != o.Size {
			return fmt.Errorf("fetch package: frame %q, want %s %d", strings.TrimSpace(line), o.Digest, o.Size)
		}
		if err := store(d, io.LimitReader(br, size)); err != nil {
			return err
		}
	}
	c.stats.Measure(p.Bytes, rtt, time.Since(start))
	return nil
}

// objectRequest is a request of the object API with the link's token.
func (c *Client) objectRequest(ctx context.Context, method, u string, body io.Reader) (*http.Request, error) {
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return nil, err
	}
	req.Header.Set(HeaderProtocol, Protocol)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if t := c.token.Load(); t != nil {
		req.Header.Set("Authorization", "Bearer "+*t)
	}
	return req, nil
}

// LinkMeter keeps a link's measured rate and round trip (moving
// averages): the cloud link's, from the packages a node fetches; a peer's,
// from its status reads and the objects sent to it.
type LinkMeter struct {
	mu   sync.Mutex
	link Link
	set  bool
}

// Measure folds one exchange into the measurements: n bytes (0: none, a
// round trip only) of which the first byte came after rtt and the last
// after total.
func (m *LinkMeter) Measure(n int64, rtt, total time.Duration) {
	m.mu.Lock()
	defer m.mu.Unlock()
	rate := m.link.BytesPerSec
	if body := total - rtt; n > 0 && body > 0 {
		rate = float64(n) / body.Seconds()
	}
	if !m.set {
		m.link, m.set = Link{BytesPerSec: rate, RTT: rtt}, true
		if rate == 0 {
			m.link.BytesPerSec = DefaultLink.BytesPerSec
		}
		return
	}
	m.link.BytesPerSec = 0.7*m.link.BytesPerSec + 0.3*rate
	m.link.RTT = time.Duration(0.7*float64(m.link.RTT) + 0.3*float64(rtt))
}

// Link returns the measured rate and round trip (DefaultLink before the
// first measurement).
func (m *LinkMeter) Link() Link {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.set {
		return DefaultLink
	}
	return m.link
}

// Link returns the link's measured rate and round trip (DefaultLink until
// a package was fetched).
func (c *Client) Link() Link { return c.stats.Link() }
