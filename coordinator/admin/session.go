package admin

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"
)

// Browser sessions: the web console logs in once with the admin token
// (POST /v1/session) and then calls the admin API with a session cookie
// instead of the bearer token. A session lasts SessionTTL and ends when the
// token changes (ReloadCredentials). A request with the cookie that changes
// something (any method but GET and HEAD) must carry the session's CSRF
// token in HeaderCSRF and, when the browser sends an Origin, come from the
// admin listener's own origin.

// sessionPath is the session route: POST logs in, GET shows the
// session, DELETE logs out.
const sessionPath = "/v1/session"

// SessionCookie is the name of the session cookie.
const SessionCookie = "outpost_session"

// HeaderCSRF carries a session's CSRF token on requests that change
// something.
const HeaderCSRF = "X-Outpost-CSRF"

// SessionTTL is how long a session lasts after the login.
const SessionTTL = 8 * time.Hour

// maxSessions bounds the sessions kept: a new login past it ends the
// oldest.
const maxSessions = 64

// Reasons a request with a session cookie is refused (labels of
// outpost_admin_auth_failures_total, beside missing and invalid).
const (
	reasonSession = "session" // a cookie of no live session: 401
	reasonCSRF    = "csrf"    // a change without the CSRF token or from another origin: 403
)

// Login is the body of POST /v1/session.
type Login struct {
	Token string `json:"token"`
}

// SessionInfo answers a login and GET /v1/session: the CSRF token the
// console sends on changes, and when the session ends.
type SessionInfo struct {
	CSRF    string    `json:"csrf"`
	Expires time.Time `json:"expires"`
}

// session is one logged-in browser.
type session struct {
	csrf     string
	tokenSum [sha256.Size]byte // of the token it logged in with
	created  time.Time
	expires  time.Time
}

// sessionStore holds the live sessions by the sha256 of their cookie (a
// cookie read from memory is not enough to forge one).
type sessionStore struct {
	mu   sync.Mutex
	byID map[[sha256.Size]byte]*session
}

// add makes a session for tokenSum and returns its cookie value.
func (st *sessionStore) add(tokenSum [sha256.Size]byte, now time.Time) (string, *session) {
	id, csrf := randomHex(), randomHex()
	s := &session{csrf: csrf, tokenSum: tokenSum, created: now, expires: now.Add(SessionTTL)}
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.byID == nil {
		st.byID = map[[sha256.Size]byte]*session{}
	}
	st.sweepLocked(tokenSum, now)
	for len(st.byID) >= maxSessions {
		var oldest [sha256.Size]byte
		var at time.Time
		for k, v := range st.byID {
			if at.IsZero() || v.created.Before(at) {
				oldest, at = k, v.created
			}
		}
		delete(st.byID, oldest)
	}
	st.byID[sha256.Sum256([]byte(id))] = s
	return id, s
}

// get returns the live session of a cookie, nil for none (an expired one,
// or one made with a token that is no longer the daemon's, is dropped).
func (st *sessionStore) get(id string, tokenSum [sha256.Size]byte, now time.Time) *session {
	key := sha256.Sum256([]byte(id))
	st.mu.Lock()
	defer st.mu.Unlock()
	s := st.byID[key]
	if s == nil {
		return nil
	}
	if !now.Before(s.expires) || s.tokenSum != tokenSum {
		delete(st.byID, key)
		return nil
	}
	return s
}

// remove ends the session of a cookie.
func (st *sessionStore) remove(id string) {
	st.mu.Lock()
	defer st.mu.Unlock()
	delete(st.byID, sha256.Sum256([]byte(id)))
}

// sweep drops the sessions that ended or were made with another token.
func (st *sessionStore) sweep(tokenSum [sha256.Size]byte, now time.Time) {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.sweepLocked(tokenSum, now)
}

func (st *sessionStore) sweepLocked(tokenSum [sha256.Size]byte, now time.Time) {
	for k, s := range st.byID {
		if !now.Before(s.expires) || s.tokenSum != tokenSum {
			delete(st.byID, k)
		}
	}
}

// count is the number of sessions kept.
func (st *sessionStore) count() int {
	st.mu.Lock()
	defer st.mu.Unlock()
	return len(st.byID)
}

func randomHex() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b) // never fails (crypto/rand)
	return hex.EncodeToString(b)
}

// login answers POST /v1/session: the token in the body for a session
// cookie. It needs no credential; a wrong token counts as an invalid one.
func (s *Server) login(w http.ResponseWriter, r *http.Request) {
	if !s.sameOrigin(r) {
		s.refuse(w, r, reasonCSRF)
		return
	}
	var l Login
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 4<<10)).Decode(&l); err != nil || l.Token == "" {
		writeJSON(w, http.StatusBadRequest, errorAnswer{ErrorText{Code: "invalid", Message: `want {"token": "..."}: the admin token from ` + TokenFileName + ` in the daemon's data dir`}})
		return
	}
	if reason := s.checkToken("Bearer " + l.Token); reason != "" {
		s.refuse(w, r, reason)
		return
	}
	creds := s.creds.Load()
	id, sess := s.sessions.add(creds.tokenSum, time.Now())
	http.SetCookie(w, &http.Cookie{
		Name: SessionCookie, Value: id, Path: "/", Expires: sess.expires,
		HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: creds.tls != nil,
	})
	writeJSON(w, http.StatusOK, SessionInfo{CSRF: sess.csrf, Expires: sess.expires})
}

// sessionInfo answers GET /v1/session: the console, loaded again, finds
// its CSRF token there.
func (s *Server) sessionInfo(w http.ResponseWriter, r *http.Request) {
	sess := s.sessionOf(r)
	if sess == nil { // a bearer token: no session to show
		writeJSON(w, http.StatusNotFound, errorAnswer{ErrorText{Code: "not_found", Message: "this request has no session (it used a bearer token)"}})
		return
	}
	writeJSON(w, http.StatusOK, SessionInfo{CSRF: sess.csrf, Expires: sess.expires})
}

// logout answers DELETE /v1/session.
func (s *Server) logout(w http.ResponseWriter, r *http.Request) {
	if c, err := r.Cookie(SessionCookie); err == nil {
		s.sessions.remove(c.Value)
	}
	http.SetCookie(w, &http.Cookie{Name: SessionCookie, Value: "", Path: "/", MaxAge: -1, HttpOnly: true,
		SameSite: http.SameSiteStrictMode, Secure: s.creds.Load().tls != nil})
	w.WriteHeader(http.StatusNoContent)
}

// sessionOf is the live session of r's cookie, nil for none.
func (s *Server) sessionOf(r *http.Request) *session {
	c, err := r.Cookie(SessionCookie)
	if err != nil || c.Value == "" {
		return nil
	}
	return s.sessions.get(c.Value, s.creds.Load().tokenSum, time.Now())
}

// checkSession returns "" when r may go on with its session cookie, else
// why it is refused.
func (s *Server) checkSession(r *http.Request) string {
	sess := s.sessionOf(r)
	if sess == nil {
		return reasonSession
	}
	if r.Method == http.MethodGet || r.Method == http.MethodHead {
		return ""
	}
	got := r.Header.Get(HeaderCSRF)
	if subtle.ConstantTimeCompare([]byte(got), []byte(sess.csrf)) != 1 || !s.sameOrigin(r) {
		return reasonCSRF
	}
	return ""
}

// sameOrigin: r carries no Origin (not a browser's cross-site request) or
// the admin listener's own, and no Sec-Fetch-Site of another site.
func (s *Server) sameOrigin(r *http.Request) bool {
	if site := r.Header.Get("Sec-Fetch-Site"); site != "" && site != "same-origin" && site != "none" {
		return false
	}
	origin := r.Header.Get("Origin")
	if origin == "" {
		return true
	}
	u, err := url.Parse(origin)
	if err != nil {
		return false
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	return u.Scheme == scheme && strings.EqualFold(u.Host, r.Host)
}
