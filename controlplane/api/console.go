package api

// The web console: static assets embedded from web/ and a cookie session for browsers.
//
// A browser cannot keep a bearer token safely (anything JavaScript can read, an injected script
// can read too), so the operator pastes a token once into the login page; POST /api/v1/session
// verifies it exactly as the bearer middleware does and answers with an HttpOnly session cookie.
// The session id is random and maps, in memory, to what the middleware established about the
// token (principal, role). Mutating calls made with the cookie must echo the per-session CSRF
// token, which the browser gets in a readable (non-HttpOnly) cookie, in an X-CSRF-Token header:
// another site can make the browser send the cookies but cannot read them to forge the header.
// Bearer requests are exempt: browsers never attach an Authorization header on their own.

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"mime"
	"net/http"
	"net/url"
	"path"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/edgefleet/edgefleet/controlplane/audit"
	"github.com/edgefleet/edgefleet/controlplane/auth"
	"github.com/edgefleet/edgefleet/web"
)

// Cookie and header names of the console session.
const (
	SessionCookie = "ef_session"
	CSRFCookie    = "ef_csrf"
	CSRFHeader    = "X-CSRF-Token"
	// SessionTTL is how long a console session lasts after login (no sliding renewal: a stolen
	// cookie is good for a bounded time).
	SessionTTL = 12 * time.Hour
	// maxSessions bounds the in-memory table; the oldest session is dropped beyond it.
	maxSessions = 10000
)

type session struct {
	csrf      string
	principal auth.Principal // who logged in; checked against the token store on every request
	expires   time.Time
	created   time.Time
}

// sessionStore maps session ids to sessions. Sessions live in memory: a restarted control plane
// asks operators to log in again, which is acceptable for a console and keeps no secret on disk.
type sessionStore struct {
	mu sync.Mutex
	m  map[string]*session
}

func newSessionStore() *sessionStore { return &sessionStore{m: map[string]*session{}} }

func randomToken() string {
	b := make([]byte, 32)
	rand.Read(b) // never fails (crypto/rand panics rather than return short)
	return hex.EncodeToString(b)
}

// sessionKey is what the table is keyed by: a hash of the id, so a timing side channel in the map
// lookup says nothing about valid ids.
func sessionKey(id string) string {
	s := sha256.Sum256([]byte(id))
	return hex.EncodeToString(s[:])
}

func (s *sessionStore) create(p auth.Principal) (id string, sess *session) {
	now := time.Now()
	id = randomToken()
	sess = &session{csrf: randomToken(), principal: p, created: now, expires: now.Add(SessionTTL)}
	s.mu.Lock()
	defer s.mu.Unlock()
	var oldestKey string
	var oldest time.Time
	for k, v := range s.m {
		if now.After(v.expires) {
			delete(s.m, k)
		} else if oldestKey == "" || v.created.Before(oldest) {
			oldestKey, oldest = k, v.created
		}
	}
	if len(s.m) >= maxSessions {
		delete(s.m, oldestKey)
	}
	s.m[sessionKey(id)] = sess
	return id, sess
}

func (s *sessionStore) get(id string) *session {
	s.mu.Lock()
	defer s.mu.Unlock()
	k := sessionKey(id)
	sess := s.m[k]
	if sess != nil && time.Now().After(sess.expires) {
		delete(s.m, k)
		return nil
	}
	return sess
}

func (s *sessionStore) remove(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.m, sessionKey(id))
}

// cookieAuth authenticates a request that carries the console's session cookie and no
// Authorization header. handled is false when there is no such cookie (the bearer check decides);
// otherwise ok says whether the session holds, and a refusal has been answered.
func (h *handlers) cookieAuth(c *gin.Context) (p auth.Principal, handled, ok bool) {
	if h.sess == nil || c.GetHeader("Authorization") != "" {
		return auth.Principal{}, false, false
	}
	id, err := c.Cookie(SessionCookie)
	if err != nil || id == "" {
		return auth.Principal{}, false, false
	}
	sess := h.sess.get(id)
	if sess == nil {
		h.deny(c, http.StatusUnauthorized, "session_expired", "your console session has expired or was ended: log in again")
		return auth.Principal{}, true, false
	}
	switch c.Request.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions:
	default:
		got := c.GetHeader(CSRFHeader)
		if got == "" || subtle.ConstantTimeCompare([]byte(got), []byte(sess.csrf)) != 1 {
			h.deny(c, http.StatusForbidden, "csrf", "missing or wrong "+CSRFHeader+" header: a request made with the session cookie must echo the "+CSRFCookie+" cookie")
			return auth.Principal{}, true, false
		}
	}
	// A session lives no longer than its token: revoking the token ends it at once.
	if !h.tokens.Active(c.Request.Context(), sess.principal) {
		h.sess.remove(id)
		h.deny(c, http.StatusUnauthorized, "session_expired", "the token this console session was opened with has been revoked: log in again")
		return auth.Principal{}, true, false
	}
	c.Set("session", true)
	return sess.principal, true, true
}

// consoleRoutes serves the console and its session endpoints.
func (h *handlers) consoleRoutes(r *gin.Engine) {
	static, err := fs.Sub(web.Static, "static")
	if err != nil {
		panic(err) // the embed pattern guarantees the folder
	}
	files := loadAssets(static)
	serve := func(c *gin.Context, name string) {
		a, ok := files[name]
		if !ok {
			fail(c, http.StatusNotFound, "not_found", "no console asset "+name)
			return
		}
		securityHeaders(c)
		c.Header("ETag", a.etag)
		// Revalidate every time: the assets change with the binary, and a 304 is cheap.
		c.Header("Cache-Control", "no-cache")
		if c.GetHeader("If-None-Match") == a.etag {
			c.Status(http.StatusNotModified)
			return
		}
		c.Data(http.StatusOK, a.ctype, a.body)
	}
	r.GET("/", func(c *gin.Context) { serve(c, "index.html") })
	r.GET("/static/*file", func(c *gin.Context) { serve(c, strings.TrimPrefix(path.Clean(c.Param("file")), "/")) })
	r.GET("/favicon.ico", func(c *gin.Context) { serve(c, "favicon.svg") })

	r.POST("/api/v1/session", h.login)
	r.GET("/api/v1/session", h.auth, h.whoami)
	r.POST("/api/v1/session/logout", h.logout)
}

type asset struct {
	body  []byte
	ctype string
	etag  string
}

func loadAssets(static fs.FS) map[string]asset {
	out := map[string]asset{}
	fs.WalkDir(static, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := fs.ReadFile(static, p)
		if err != nil {
			return err
		}
		ct := mime.TypeByExtension(path.Ext(p))
		if ct == "" {
			ct = "application/octet-stream"
		}
		sum := sha256.Sum256(b)
		out[p] = asset{body: b, ctype: ct, etag: `"` + hex.EncodeToString(sum[:8]) + `"`}
		return nil
	})
	return out
}

// securityHeaders: the console loads only its own scripts and styles (no inline code), so an
// injected string in device-reported data cannot run.
func securityHeaders(c *gin.Context) {
	c.Header("Content-Security-Policy", "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'")
	c.Header("X-Content-Type-Options", "nosniff")
	c.Header("Referrer-Policy", "no-referrer")
	c.Header("X-Frame-Options", "DENY")
}

// sameOrigin refuses a cross-site login (login CSRF: logging the victim into the attacker's
// account): browsers send Origin on POST, and it must name this host.
func sameOrigin(c *gin.Context) bool {
	o := c.GetHeader("Origin")
	if o == "" {
		return true // not a browser: the JSON content type still keeps HTML forms out
	}
	u, err := url.Parse(o)
	return err == nil && u.Host == c.Request.Host
}

// login handles POST /api/v1/session {"token": "..."}: any API token; the session carries the
// token's principal and role, checked exactly as a bearer request is (package auth).
func (h *handlers) login(c *gin.Context) {
	record := func(who, outcome string) {
		if h.cfg.Audit == nil {
			return
		}
		e := audit.Entry{At: time.Now().UTC(), Who: who, Role: c.GetString("role"), Action: "POST /api/v1/session", Target: "console login",
			From: c.ClientIP(), Outcome: outcome}
		h.cfg.Audit.Record(context.WithoutCancel(c.Request.Context()), e)
	}
	if ct, _, _ := mime.ParseMediaType(c.GetHeader("Content-Type")); ct != "application/json" {
		fail(c, http.StatusUnsupportedMediaType, "bad_request", `send JSON {"token": "..."} with Content-Type: application/json`)
		return
	}
	if !sameOrigin(c) {
		fail(c, http.StatusForbidden, "cross_origin", "login from another site is refused")
		return
	}
	var body struct {
		Token string `json:"token"`
	}
	if err := json.NewDecoder(io.LimitReader(c.Request.Body, 64<<10)).Decode(&body); err != nil || strings.TrimSpace(body.Token) == "" {
		fail(c, http.StatusBadRequest, "bad_request", `body must be JSON {"token": "..."}: paste an API token (the admin token is in DATA/admin.token)`)
		return
	}
	p, err := h.tokens.Authenticate(c.Request.Context(), strings.TrimSpace(body.Token))
	if err != nil {
		if errors.Is(err, auth.ErrInvalid) {
			fail(c, http.StatusUnauthorized, "unauthorized", "invalid token")
		} else {
			fail(c, http.StatusServiceUnavailable, "unavailable", "could not check the token: "+err.Error())
		}
		record("unknown", strconv.Itoa(c.Writer.Status()))
		return
	}
	setPrincipal(c, p)
	id, sess := h.sess.create(p)
	secure := c.Request.TLS != nil
	http.SetCookie(c.Writer, &http.Cookie{Name: SessionCookie, Value: id, Path: "/", HttpOnly: true,
		Secure: secure, SameSite: http.SameSiteStrictMode, Expires: sess.expires})
	// Readable by the console's script on purpose: it echoes it in X-CSRF-Token.
	http.SetCookie(c.Writer, &http.Cookie{Name: CSRFCookie, Value: sess.csrf, Path: "/", HttpOnly: false,
		Secure: secure, SameSite: http.SameSiteStrictMode, Expires: sess.expires})
	c.Header("Cache-Control", "no-store")
	record(principal(c), "201")
	c.JSON(http.StatusCreated, gin.H{"principal": principal(c), "role": c.GetString("role"), "expires": sess.expires.UTC()})
}

// whoami answers GET /api/v1/session: who the cookie (or bearer token) stands for.
func (h *handlers) whoami(c *gin.Context) {
	c.JSON(http.StatusOK, gin.H{"principal": principal(c), "id": c.GetString("principal_id"), "role": c.GetString("role"), "session": c.GetBool("session")})
}

// logout ends the session (with the CSRF header, like any mutating call) and clears the cookies.
func (h *handlers) logout(c *gin.Context) {
	if id, err := c.Cookie(SessionCookie); err == nil && id != "" {
		if sess := h.sess.get(id); sess != nil {
			got := c.GetHeader(CSRFHeader)
			if subtle.ConstantTimeCompare([]byte(got), []byte(sess.csrf)) != 1 {
				fail(c, http.StatusForbidden, "csrf", "missing or wrong "+CSRFHeader+" header")
				return
			}
			h.sess.remove(id)
		}
	}
	secure := c.Request.TLS != nil
	for _, name := range []string{SessionCookie, CSRFCookie} {
		http.SetCookie(c.Writer, &http.Cookie{Name: name, Value: "", Path: "/", MaxAge: -1, HttpOnly: name == SessionCookie,
			Secure: secure, SameSite: http.SameSiteStrictMode})
	}
	c.Status(http.StatusNoContent)
}
