// Package keystonetest is a fake Keystone identity v3 service for tests: version
// discovery, password and application-credential authentication, token validation
// (nocatalog, allow_expired, the service-or-self rule), revocation, a clock, request
// recording and failure injection. It is an httptest server on loopback.
//
// It is not Keystone: the integration tests of keystone-auth run against the real one
// (internal/servicetest); this fake makes the error paths and timing cheap to test.
package keystonetest

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// User is an account of the fake Keystone, with a project-, domain- or system-scoped
// role assignment.
type User struct {
	ID, Name, Password           string
	DomainID, DomainName         string // the user's domain (default "default"/"Default")
	ProjectID, ProjectName       string // project scope
	ScopeDomainID, ScopeDomainNm string // domain scope (when ProjectID is empty)
	System                       bool   // system scope (when ProjectID and ScopeDomainID are empty)
	Roles                        []string
	IsAdminProject               *bool
}

// AppCred is an application credential of a user.
type AppCred struct {
	ID, Name, Secret, UserID string
	Roles                    []string     // subset of the user's roles (default: all)
	ExpiresAt                time.Time    // zero: never
	AccessRules              []AccessRule // nil: unrestricted
}

// AccessRule is an application-credential access rule.
type AccessRule struct {
	Path, Method, Service string
}

// Request is a request the fake received.
type Request struct {
	Method, Path, RawQuery  string
	AuthToken, SubjectToken string
	AccessRulesHeader       string
}

type token struct {
	user      *User
	appCred   *AppCred
	roles     []string
	issuedAt  time.Time
	expiresAt time.Time
	revoked   bool
	bind      map[string]any
}

// Server is the fake Keystone.
type Server struct {
	*httptest.Server
	// URL is the identity v3 endpoint, http://127.0.0.1:PORT/v3.
	URL string

	mu       sync.Mutex
	now      func() time.Time
	users    map[string]*User // by name
	appCreds map[string]*AppCred
	tokens   map[string]*token
	requests []Request
	fail     func(r *http.Request) int
	lifetime time.Duration
}

// New starts a fake Keystone, stopped by t.Cleanup.
func New(t testing.TB) *Server {
	t.Helper()
	s := &Server{
		now:      time.Now,
		users:    map[string]*User{},
		appCreds: map[string]*AppCred{},
		tokens:   map[string]*token{},
		lifetime: time.Hour,
	}
	s.Server = httptest.NewServer(http.HandlerFunc(s.serve))
	s.URL = s.Server.URL + "/v3"
	t.Cleanup(s.Close)
	return s
}

// SetClock replaces the clock used for token issue and expiry.
func (s *Server) SetClock(now func() time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.now = now
}

// SetTokenLifetime sets the lifetime of tokens issued from now on (default 1 h).
func (s *Server) SetTokenLifetime(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lifetime = d
}

// SetFailure installs a hook that answers a request with the returned status instead of
// serving it (0: serve normally); nil removes it.
func (s *Server) SetFailure(f func(r *http.Request) int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fail = f
}

// AddUser adds a user, filling in IDs and the default domain.
func (s *Server) AddUser(u User) *User {
	s.mu.Lock()
	defer s.mu.Unlock()
	if u.ID == "" {
		u.ID = u.Name + "-id"
	}
	if u.DomainID == "" {
		u.DomainID, u.DomainName = "default", "Default"
	}
	if u.ProjectName != "" && u.ProjectID == "" {
		u.ProjectID = u.ProjectName + "-id"
	}
	s.users[u.Name] = &u
	return &u
}

// AddAppCred adds an application credential for a user.
func (s *Server) AddAppCred(ac AppCred) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if ac.ID == "" {
		ac.ID = ac.Name + "-id"
	}
	s.appCreds[ac.ID] = &ac
}

// Issue issues a token for a user directly (as if the user authenticated).
func (s *Server) Issue(userName string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	u := s.users[userName]
	if u == nil {
		panic("keystonetest: no user " + userName)
	}
	return s.issueLocked(u, nil)
}

// IssueBound issues a token carrying bind information.
func (s *Server) IssueBound(userName string, bind map[string]any) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	id := s.issueLocked(s.users[userName], nil)
	s.tokens[id].bind = bind
	return id
}

// IssueAppCred issues a token as an application credential would get.
func (s *Server) IssueAppCred(appCredID string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	ac := s.appCreds[appCredID]
	for _, u := range s.users {
		if u.ID == ac.UserID {
			return s.issueLocked(u, ac)
		}
	}
	panic("keystonetest: no user for application credential " + appCredID)
}

func (s *Server) issueLocked(u *User, ac *AppCred) string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	id := "gAAAA" + hex.EncodeToString(b)
	now := s.now()
	t := &token{user: u, appCred: ac, roles: u.Roles, issuedAt: now, expiresAt: now.Add(s.lifetime)}
	if ac != nil {
		if ac.Roles != nil {
			t.roles = ac.Roles
		}
		if !ac.ExpiresAt.IsZero() && ac.ExpiresAt.Before(t.expiresAt) {
			t.expiresAt = ac.ExpiresAt
		}
	}
	s.tokens[id] = t
	return id
}

// Revoke revokes a token.
func (s *Server) Revoke(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if t := s.tokens[id]; t != nil {
		t.revoked = true
	}
}

// Requests returns the requests received so far.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.requests)
}

// Validations counts GET /v3/auth/tokens requests received so far.
func (s *Server) Validations() int {
	n := 0
	for _, r := range s.Requests() {
		if r.Method == http.MethodGet && r.Path == "/v3/auth/tokens" {
			n++
		}
	}
	return n
}

func writeJSON(w http.ResponseWriter, code int, v any, hdr map[string]string) {
	w.Header().Set("Content-Type", "application/json")
	for k, val := range hdr {
		w.Header().Set(k, val)
	}
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func errBody(code int, title, msg string) map[string]any {
	return map[string]any{"error": map[string]any{"code": code, "title": title, "message": msg}}
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.requests = append(s.requests, Request{Method: r.Method, Path: r.URL.Path, RawQuery: r.URL.RawQuery,
		AuthToken: r.Header.Get("X-Auth-Token"), SubjectToken: r.Header.Get("X-Subject-Token"),
		AccessRulesHeader: r.Header.Get("OpenStack-Identity-Access-Rules")})
	fail := s.fail
	s.mu.Unlock()
	if fail != nil {
		if code := fail(r); code != 0 {
			writeJSON(w, code, errBody(code, http.StatusText(code), "injected failure"), nil)
			return
		}
	}
	switch {
	case r.URL.Path == "/v3" || r.URL.Path == "/v3/":
		writeJSON(w, http.StatusOK, map[string]any{"version": map[string]any{
			"id": "v3.14", "status": "stable", "updated": "2020-04-07T00:00:00Z",
			"links":       []any{map[string]any{"rel": "self", "href": s.URL + "/"}},
			"media-types": []any{map[string]any{"base": "application/json", "type": "application/vnd.openstack.identity-v3+json"}},
		}}, nil)
	case r.URL.Path == "/v3/auth/tokens" && r.Method == http.MethodPost:
		s.authenticate(w, r)
	case r.URL.Path == "/v3/auth/tokens" && (r.Method == http.MethodGet || r.Method == http.MethodHead):
		s.validate(w, r)
	default:
		writeJSON(w, http.StatusNotFound, errBody(404, "Not Found", "no such path"), nil)
	}
}

func (s *Server) authenticate(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Auth struct {
			Identity struct {
				Methods  []string `json:"methods"`
				Password struct {
					User struct {
						ID, Name, Password string
						Domain             struct{ ID, Name string }
					} `json:"user"`
				} `json:"password"`
				AppCred struct {
					ID, Name, Secret string
				} `json:"application_credential"`
			} `json:"identity"`
		} `json:"auth"`
	}
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
		writeJSON(w, http.StatusBadRequest, errBody(400, "Bad Request", err.Error()), nil)
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	id := body.Auth.Identity
	var tok string
	switch {
	case slices.Contains(id.Methods, "password"):
		pu := id.Password.User
		var u *User
		for _, c := range s.users {
			if (pu.ID != "" && c.ID == pu.ID) || (pu.Name != "" && c.Name == pu.Name &&
				(pu.Domain.ID == c.DomainID || strings.EqualFold(pu.Domain.Name, c.DomainName))) {
				u = c
			}
		}
		if u == nil || u.Password != pu.Password {
			writeJSON(w, http.StatusUnauthorized, errBody(401, "Unauthorized", "The request you have made requires authentication."), nil)
			return
		}
		tok = s.issueLocked(u, nil)
	case slices.Contains(id.Methods, "application_credential"):
		ac := s.appCreds[id.AppCred.ID]
		if ac == nil {
			for _, c := range s.appCreds {
				if c.Name == id.AppCred.Name && id.AppCred.Name != "" {
					ac = c
				}
			}
		}
		if ac == nil || ac.Secret != id.AppCred.Secret || (!ac.ExpiresAt.IsZero() && !s.now().Before(ac.ExpiresAt)) {
			writeJSON(w, http.StatusUnauthorized, errBody(401, "Unauthorized", "The request you have made requires authentication."), nil)
			return
		}
		for _, u := range s.users {
			if u.ID == ac.UserID {
				tok = s.issueLocked(u, ac)
			}
		}
	default:
		writeJSON(w, http.StatusUnauthorized, errBody(401, "Unauthorized", "unsupported method"), nil)
		return
	}
	writeJSON(w, http.StatusCreated, s.bodyLocked(s.tokens[tok], true), map[string]string{"X-Subject-Token": tok})
}

func (s *Server) validate(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	caller := s.tokens[r.Header.Get("X-Auth-Token")]
	if caller == nil || caller.revoked || !now.Before(caller.expiresAt) {
		writeJSON(w, http.StatusUnauthorized, errBody(401, "Unauthorized", "The request you have made requires authentication."), nil)
		return
	}
	subjectID := r.Header.Get("X-Subject-Token")
	if !slices.Contains(caller.roles, "service") && !slices.Contains(caller.roles, "admin") && subjectID != r.Header.Get("X-Auth-Token") {
		writeJSON(w, http.StatusForbidden, errBody(403, "Forbidden", "You are not authorized to perform the requested action: identity:validate_token."), nil)
		return
	}
	subject := s.tokens[subjectID]
	allowExpired := r.URL.Query().Get("allow_expired") == "1" || r.URL.Query().Get("allow_expired") == "true"
	if subject == nil || subject.revoked || (!now.Before(subject.expiresAt) && !allowExpired) {
		writeJSON(w, http.StatusNotFound, errBody(404, "Not Found", "Could not find token."), nil)
		return
	}
	_, nocatalog := r.URL.Query()["nocatalog"]
	if r.Method == http.MethodHead {
		w.Header().Set("X-Subject-Token", subjectID)
		w.WriteHeader(http.StatusOK)
		return
	}
	writeJSON(w, http.StatusOK, s.bodyLocked(subject, !nocatalog), map[string]string{"X-Subject-Token": subjectID})
}

func isoTime(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05.000000Z") }

func (s *Server) bodyLocked(t *token, catalog bool) map[string]any {
	u := t.user
	method := "password"
	if t.appCred != nil {
		method = "application_credential"
	}
	roles := []any{}
	for _, r := range t.roles {
		roles = append(roles, map[string]any{"id": r + "-rid", "name": r})
	}
	tb := map[string]any{
		"methods":    []string{method},
		"user":       map[string]any{"id": u.ID, "name": u.Name, "domain": map[string]any{"id": u.DomainID, "name": u.DomainName}, "password_expires_at": nil},
		"audit_ids":  []string{"aud1tAud1tAud1tAud1tAA"},
		"expires_at": isoTime(t.expiresAt),
		"issued_at":  isoTime(t.issuedAt),
		"roles":      roles,
	}
	switch {
	case u.ProjectID != "":
		tb["project"] = map[string]any{"id": u.ProjectID, "name": u.ProjectName, "domain": map[string]any{"id": "default", "name": "Default"}}
		tb["is_domain"] = false
	case u.ScopeDomainID != "":
		tb["domain"] = map[string]any{"id": u.ScopeDomainID, "name": u.ScopeDomainNm}
	case u.System:
		tb["system"] = map[string]any{"all": true}
	}
	if u.IsAdminProject != nil {
		tb["is_admin_project"] = *u.IsAdminProject
	}
	if t.appCred != nil {
		ac := map[string]any{"id": t.appCred.ID, "name": t.appCred.Name, "restricted": true}
		if t.appCred.AccessRules != nil {
			rules := []any{}
			for _, r := range t.appCred.AccessRules {
				rules = append(rules, map[string]any{"id": "rule-id", "path": r.Path, "method": r.Method, "service": r.Service})
			}
			ac["access_rules"] = rules
		}
		tb["application_credential"] = ac
	}
	if t.bind != nil {
		tb["bind"] = t.bind
	}
	if catalog {
		tb["catalog"] = []any{
			map[string]any{"type": "identity", "name": "keystone", "id": "svc-identity", "endpoints": []any{
				map[string]any{"id": "ep1", "interface": "public", "region": "RegionOne", "region_id": "RegionOne", "url": s.URL + "/"},
				map[string]any{"id": "ep2", "interface": "internal", "region": "RegionOne", "region_id": "RegionOne", "url": s.URL + "/"},
				map[string]any{"id": "ep3", "interface": "admin", "region": "RegionOne", "region_id": "RegionOne", "url": s.URL + "/"},
			}},
			map[string]any{"type": "attestation", "name": "trustpool", "id": "svc-tp", "endpoints": []any{
				map[string]any{"id": "ep4", "interface": "public", "region": "RegionOne", "region_id": "RegionOne", "url": "http://127.0.0.1:1/attestation"},
			}},
		}
	}
	return map[string]any{"token": tb}
}

// String describes the server.
func (s *Server) String() string { return fmt.Sprintf("fake keystone at %s", s.URL) }
