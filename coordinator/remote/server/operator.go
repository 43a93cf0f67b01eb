package server

import (
	"crypto/subtle"
	"fmt"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/outpost-edge/outpost/internal/secretfile"
)

// ErrNoOperatorToken: the operator token file is empty.
var ErrNoOperatorToken = secretfile.ErrEmpty

// operatorToken is the operator API's bearer token, read from a file. The
// file is stat'ed on each request and read again only when its size or
// modification time changed, so a rotated token takes effect on the next
// request without a restart.
type operatorToken struct {
	path string

	mu    sync.Mutex
	size  int64
	mod   time.Time
	token []byte
}

// load reads the token if the file changed since the last read.
func (o *operatorToken) load() ([]byte, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	fi, err := os.Stat(o.path)
	if err != nil {
		return nil, fmt.Errorf("operator token: %w", err)
	}
	if o.token != nil && fi.Size() == o.size && fi.ModTime().Equal(o.mod) {
		return o.token, nil
	}
	tok, err := secretfile.ReadToken(o.path)
	if err != nil {
		return nil, fmt.Errorf("operator token: %w", err)
	}
	o.token, o.size, o.mod = tok, fi.Size(), fi.ModTime()
	return tok, nil
}

// operatorAuth guards the operator API (every path under /api/) with the
// operator token; the node endpoints (/edge/) have their own credentials.
// Without Options.OperatorTokenFile the operator API is open.
func (s *Server) operatorAuth(next http.Handler) http.Handler {
	if s.operator == nil {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasPrefix(r.URL.Path, "/api/") {
			next.ServeHTTP(w, r)
			return
		}
		want, err := s.operator.load()
		if err != nil {
			// Fail closed: a token file that cannot be read lets no one in.
			s.log.Error("operator API refused: cannot read the operator token", "err", err)
			httpError(w, http.StatusServiceUnavailable, "operator API unavailable: the server cannot read its operator token file")
			return
		}
		got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || subtle.ConstantTimeCompare([]byte(strings.TrimSpace(got)), want) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="outpost-cloud operator API"`)
			msg := "operator API: missing bearer token (outpost-cloud --token-file or $OUTPOST_CLOUD_TOKEN_FILE)"
			if ok {
				msg = "operator API: wrong bearer token"
			}
			httpError(w, http.StatusUnauthorized, msg)
			return
		}
		next.ServeHTTP(w, r)
	})
}
