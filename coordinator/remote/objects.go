package remote

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
)

// Code objects (docs/cloud-link.md "Code objects"): a call may name its
// task's module by digest; a node that does not have the task fetches the
// object from the control plane with GET objects/{digest}, authenticated
// like the poll, over the link's own transport.

// DigestPrefix starts every object digest on the wire.
const DigestPrefix = "sha256:"

// ErrObjectNotFound: the control plane has no object of that digest (404).
var ErrObjectNotFound = errors.New("code object not found on the control plane")

// ValidDigest reports whether d is "sha256:" and 64 lower-case hex digits.
func ValidDigest(d string) bool {
	h, ok := strings.CutPrefix(d, DigestPrefix)
	if !ok || len(h) != 64 {
		return false
	}
	for _, c := range h {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// OpenObject starts fetching the code object digest ("sha256:HEX") and
// returns its body and its announced length (-1 when unknown). The request
// uses the link's client: its TLS, token and timeouts (Config.ReadTimeout
// bounds the whole transfer, body included). The caller verifies the
// bytes against the digest while reading and closes the body. A 404 is
// ErrObjectNotFound; a 401 makes the next request re-read the token.
func (c *Client) OpenObject(ctx context.Context, digest string) (io.ReadCloser, int64, error) {
	if !ValidDigest(digest) {
		return nil, 0, fmt.Errorf("fetch object %q: not a sha256:HEX digest", digest)
	}
	req, err := c.objectRequest(ctx, http.MethodGet, c.endpoint("objects", digest), nil)
	if err != nil {
		return nil, 0, fmt.Errorf("fetch object %s: %w", digest, err)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, 0, fmt.Errorf("fetch object %s: %w", digest, err)
	}
	if resp.StatusCode == http.StatusOK {
		return resp.Body, resp.ContentLength, nil
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	c.uploadRefused(resp.StatusCode)
	if resp.StatusCode == http.StatusNotFound {
		return nil, 0, fmt.Errorf("fetch object %s: %w", digest, ErrObjectNotFound)
	}
	return nil, 0, fmt.Errorf("fetch object %s: status %d: %s", digest, resp.StatusCode, trim(b))
}
