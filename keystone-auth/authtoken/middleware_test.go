package authtoken

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/trustpool/trustpool/keystone-auth/keystonetest"
)

// clock is a settable clock shared by the fake Keystone and the middleware.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

type env struct {
	ks    *keystonetest.Server
	clock *clock
	setup *Setup
	h     http.Handler
	seen  chan seenRequest
	errs  []error
	mu    sync.Mutex
}

type seenRequest struct {
	header http.Header
	auth   *Auth
}

// newEnv starts a fake Keystone shaped like the one of keystonemiddleware_observed.json
// (service user nova, user alice with member+reader on demo) and the middleware.
func newEnv(t *testing.T, mod func(*Options)) *env {
	t.Helper()
	e := &env{ks: keystonetest.New(t), clock: newClock(), seen: make(chan seenRequest, 100)}
	e.ks.SetClock(e.clock.Now)
	e.ks.AddUser(keystonetest.User{Name: "nova", Password: "secret", ProjectName: "service", ProjectID: "service-id", Roles: []string{"service", "admin"}})
	e.ks.AddUser(keystonetest.User{Name: "alice", Password: "pw", ProjectName: "demo", ProjectID: "demo-id", Roles: []string{"member", "reader"}})
	e.ks.AddUser(keystonetest.User{Name: "bob", Password: "pw", ProjectName: "demo", ProjectID: "demo-id", Roles: []string{"member"}})
	opts := DefaultOptions()
	opts.AuthURL = e.ks.URL
	opts.Username, opts.Password, opts.ProjectName = "nova", "secret", "service"
	opts.UserDomainName, opts.ProjectDomainName = "Default", "Default"
	opts.WWWAuthenticateURI = "https://keystone.example.com/v3"
	opts.ServiceTokenRolesRequired = true
	opts.IncludeServiceCatalog = false
	if mod != nil {
		mod(&opts)
	}
	s, err := Open(t.Context(), opts, OpenConfig{Now: e.clock.Now, RetryDelay: time.Millisecond, OnError: func(_ *http.Request, err error) {
		e.mu.Lock()
		e.errs = append(e.errs, err)
		e.mu.Unlock()
	}})
	if err != nil {
		t.Fatalf("Open() error = %v", err)
	}
	e.setup = s
	e.h = s.Middleware.Wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a, _ := FromContext(r.Context())
		e.seen <- seenRequest{header: r.Header.Clone(), auth: a}
		w.Header().Set("Content-Type", "text/plain")
		_, _ = io.WriteString(w, "ok")
	}))
	return e
}

type result struct {
	code   int
	header http.Header
	body   string
	seen   *seenRequest
	ks     []keystonetest.Request
}

func (e *env) do(t *testing.T, hdr map[string]string) result {
	t.Helper()
	before := len(e.ks.Requests())
	req := httptest.NewRequestWithContext(t.Context(), http.MethodGet, "/v2.1/servers", nil)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	rec := httptest.NewRecorder()
	e.h.ServeHTTP(rec, req)
	res := result{code: rec.Code, header: rec.Header(), body: rec.Body.String(), ks: e.ks.Requests()[before:]}
	select {
	case s := <-e.seen:
		res.seen = &s
	default:
	}
	return res
}

// appHeaders returns the headers the wrapped app saw, in the capture's form: a map of
// the X-* and OpenStack-* headers.
func appHeaders(h http.Header) map[string]string {
	out := map[string]string{}
	for k, v := range h {
		if strings.HasPrefix(k, "X-") || strings.HasPrefix(k, "Openstack-") {
			out[k] = v[0]
		}
	}
	return out
}

type captured struct {
	RequestHeaders  map[string]string  `json:"request_headers"`
	Status          string             `json:"status"`
	ResponseHeaders map[string]string  `json:"response_headers"`
	ResponseBody    string             `json:"response_body"`
	AppSaw          map[string]*string `json:"downstream_app_saw_headers"`
	KeystoneReqs    []struct {
		Method  string            `json:"method"`
		Path    string            `json:"path"`
		Headers map[string]string `json:"headers"`
	} `json:"keystone_requests"`
}

func loadCapture(t *testing.T) map[string]captured {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "keystonemiddleware_observed.json"))
	if err != nil {
		t.Fatal(err)
	}
	var c map[string]captured
	if err := json.Unmarshal(b, &c); err != nil {
		t.Fatal(err)
	}
	return c
}

// TestCapturedKeystonemiddlewareBehaviour replays keystonemiddleware_observed.json (the
// real auth_token middleware in front of a fake Keystone) and requires the same status,
// response headers and body, the same headers reaching the app, and the same validation
// requests to Keystone.
func TestCapturedKeystonemiddlewareBehaviour(t *testing.T) {
	capture := loadCapture(t)
	e := newEnv(t, nil)
	delayed := newEnv(t, func(o *Options) { o.DelayAuthDecision = true })
	tokens := map[string]string{
		"user-token-good":  e.ks.Issue("alice"),
		"svc-token-good":   e.ks.Issue("nova"),
		"svc-token-norole": e.ks.Issue("bob"),
		"user-token-bad":   "gAAAAAbogus",
	}
	order := []string{"valid_user_token", "valid_user_token_again_cached", "invalid_user_token", "no_token",
		"spoofed_identity_headers_are_stripped", "user_plus_service_token", "user_plus_service_token_without_service_role",
		"delay_auth_decision_invalid_token", "delay_auth_decision_no_token"}
	for _, name := range order {
		c, ok := capture[name]
		if !ok {
			t.Fatalf("capture has no %q", name)
		}
		t.Run(name, func(t *testing.T) {
			target := e
			if strings.HasPrefix(name, "delay_auth_decision") {
				target = delayed
			}
			hdr := map[string]string{}
			for k, v := range c.RequestHeaders {
				if tok, ok := tokens[v]; ok {
					v = tok
				}
				hdr[k] = v
			}
			res := target.do(t, hdr)
			if got := fmt.Sprintf("%d %s", res.code, http.StatusText(res.code)); got != c.Status {
				t.Errorf("status %d, keystonemiddleware %s", res.code, c.Status)
			}
			for k, v := range c.ResponseHeaders {
				if got := res.header.Get(k); got != v {
					t.Errorf("response header %s = %q, keystonemiddleware %q", k, got, v)
				}
			}
			if res.code != http.StatusOK && res.body != c.ResponseBody {
				t.Errorf("body %q, keystonemiddleware %q", res.body, c.ResponseBody)
			}
			if c.AppSaw == nil {
				if res.seen != nil {
					t.Errorf("the app was called; keystonemiddleware did not call it")
				}
			} else {
				if res.seen == nil {
					t.Fatalf("the app was not called")
				}
				want := map[string]string{}
				for k, v := range c.AppSaw {
					if v == nil {
						continue // None: absent
					}
					val := *v
					if tok, ok := tokens[val]; ok {
						val = tok
					}
					want[http.CanonicalHeaderKey(k)] = val
				}
				if diff := cmp.Diff(want, appHeaders(res.seen.header)); diff != "" {
					t.Errorf("headers reaching the app (-keystonemiddleware +ours):\n%s", diff)
				}
			}
			// Keystone traffic: our service user authenticated in Open, so compare only
			// the validation requests.
			var wantVal, gotVal []string
			for _, r := range c.KeystoneReqs {
				if r.Method == http.MethodGet && strings.HasPrefix(r.Path, "/v3/auth/tokens") {
					subj := r.Headers["X-Subject-Token"]
					if tok, ok := tokens[subj]; ok {
						subj = tok
					}
					wantVal = append(wantVal, r.Path+" subject="+subj+" rules="+r.Headers["OpenStack-Identity-Access-Rules"])
				}
			}
			for _, r := range res.ks {
				if r.Method == http.MethodGet && r.Path == "/v3/auth/tokens" {
					path := r.Path
					if r.RawQuery != "" {
						path += "?" + r.RawQuery
					}
					gotVal = append(gotVal, path+" subject="+r.SubjectToken+" rules="+r.AccessRulesHeader)
				}
			}
			if diff := cmp.Diff(wantVal, gotVal); diff != "" {
				t.Errorf("validation requests (-keystonemiddleware +ours):\n%s", diff)
			}
		})
	}
}

func TestContextIdentity(t *testing.T) {
	e := newEnv(t, nil)
	tok := e.ks.Issue("alice")
	svc := e.ks.Issue("nova")
	res := e.do(t, map[string]string{"X-Auth-Token": tok, "X-Service-Token": svc})
	if res.code != http.StatusOK || res.seen == nil || res.seen.auth == nil {
		t.Fatalf("status %d, auth %+v", res.code, res.seen)
	}
	a := res.seen.auth
	if !a.Confirmed || a.User == nil || a.Service == nil || !a.ServiceTokenPresented {
		t.Fatalf("auth = %+v", a)
	}
	want := map[string]any{
		"user_id": "alice-id", "user_domain_id": "default", "system_scope": nil, "domain_id": nil,
		"project_id": "demo-id", "project_domain_id": "default", "roles": []string{"member", "reader"},
		"is_admin_project": true, "service_user_id": "nova-id", "service_user_domain_id": "default",
		"service_project_id": "service-id", "service_project_domain_id": "default", "service_roles": []string{"service", "admin"},
	}
	if diff := cmp.Diff(want, a.PolicyCredentials()); diff != "" {
		t.Errorf("PolicyCredentials (-want +got):\n%s", diff)
	}
	if got, want := a.User.ExpiresAt, e.clock.Now().Add(time.Hour); !got.Equal(want) {
		t.Errorf("ExpiresAt = %v, want %v", got, want)
	}
}

func TestScopes(t *testing.T) {
	e := newEnv(t, nil)
	f := false
	e.ks.AddUser(keystonetest.User{Name: "sysadmin", Password: "pw", System: true, Roles: []string{"admin", "reader"}, IsAdminProject: &f})
	e.ks.AddUser(keystonetest.User{Name: "domadmin", Password: "pw", ScopeDomainID: "d1", ScopeDomainNm: "D1", Roles: []string{"admin"}})
	res := e.do(t, map[string]string{"X-Auth-Token": e.ks.Issue("sysadmin"), "OpenStack-System-Scope": "spoof"})
	if got := appHeaders(res.seen.header); got["Openstack-System-Scope"] != "all" || got["X-Is-Admin-Project"] != "False" || got["X-Project-Id"] != "" {
		t.Errorf("system-scoped token headers = %v", got)
	}
	if res.seen.auth.User.SystemScope != "all" {
		t.Errorf("SystemScope = %q", res.seen.auth.User.SystemScope)
	}
	res = e.do(t, map[string]string{"X-Auth-Token": e.ks.Issue("domadmin")})
	if got := appHeaders(res.seen.header); got["X-Domain-Id"] != "d1" || got["X-Domain-Name"] != "D1" || got["Openstack-System-Scope"] != "" {
		t.Errorf("domain-scoped token headers = %v", got)
	}
	// a project-scoped token must not let a client's OpenStack-System-Scope through
	res = e.do(t, map[string]string{"X-Auth-Token": e.ks.Issue("alice"), "OpenStack-System-Scope": "all"})
	if got := res.seen.header.Get("OpenStack-System-Scope"); got != "" {
		t.Errorf("spoofed OpenStack-System-Scope reached the app: %q", got)
	}
}

func TestCacheLifetime(t *testing.T) {
	e := newEnv(t, func(o *Options) { o.TokenCacheTime = 60 })
	tok := e.ks.Issue("alice")
	steps := []struct {
		name        string
		before      func()
		wantCode    int
		wantKeyston int
	}{
		{"first use validates", nil, 200, 1},
		{"cached", nil, 200, 0},
		{"revoked but cached", func() { e.ks.Revoke(tok) }, 200, 0},
		{"still cached just before token_cache_time", func() { e.clock.Advance(59 * time.Second) }, 200, 0},
		{"entry expired: revalidated and rejected", func() { e.clock.Advance(time.Second) }, 401, 1},
		{"invalid tokens are not cached", nil, 401, 1},
	}
	for _, s := range steps {
		if s.before != nil {
			s.before()
		}
		res := e.do(t, map[string]string{"X-Auth-Token": tok})
		if res.code != s.wantCode || len(res.ks) != s.wantKeyston {
			t.Errorf("%s: status %d with %d keystone requests, want %d with %d", s.name, res.code, len(res.ks), s.wantCode, s.wantKeyston)
		}
	}
}

func TestErrorsNeverContainTokens(t *testing.T) {
	e := newEnv(t, nil)
	good, bad := e.ks.Issue("alice"), "gAAAAAsecret-looking-token"
	e.ks.Revoke(good)
	e.do(t, map[string]string{"X-Auth-Token": good, "X-Service-Token": bad})
	e.do(t, map[string]string{"X-Auth-Token": bad})
	e.ks.Close()
	e.do(t, map[string]string{"X-Auth-Token": e.ks.Issue("bob")})
	if len(e.errs) < 3 {
		t.Fatalf("OnError called %d times, want 3", len(e.errs))
	}
	for _, err := range e.errs {
		for _, tok := range []string{good, bad, "gAAAA"} {
			if strings.Contains(err.Error(), tok) {
				t.Errorf("error %q contains a token", err)
			}
		}
	}
}

func TestCacheNeverOutlivesToken(t *testing.T) {
	e := newEnv(t, func(o *Options) { o.TokenCacheTime = 3600 })
	e.ks.SetTokenLifetime(10 * time.Second)
	tok := e.ks.Issue("alice")
	if res := e.do(t, map[string]string{"X-Auth-Token": tok}); res.code != 200 || len(res.ks) != 1 {
		t.Fatalf("first request: %d, %d keystone requests", res.code, len(res.ks))
	}
	e.clock.Advance(9 * time.Second)
	if res := e.do(t, map[string]string{"X-Auth-Token": tok}); res.code != 200 || len(res.ks) != 0 {
		t.Errorf("before expiry: %d, %d keystone requests; want cached 200", res.code, len(res.ks))
	}
	e.clock.Advance(2 * time.Second)
	res := e.do(t, map[string]string{"X-Auth-Token": tok})
	if res.code != 401 {
		t.Errorf("after expiry: status %d, want 401", res.code)
	}
	if got := e.setup.Middleware.cache.len(); got != 0 {
		t.Errorf("cache holds %d entries after the token expired", got)
	}
}

func TestCacheBounded(t *testing.T) {
	e := newEnv(t, nil)
	e.setup.Middleware.cache = newTokenCache(2)
	toks := []string{e.ks.Issue("alice"), e.ks.Issue("alice"), e.ks.Issue("alice")}
	for _, tok := range toks {
		e.do(t, map[string]string{"X-Auth-Token": tok})
	}
	if n := e.setup.Middleware.cache.len(); n != 2 {
		t.Errorf("cache size %d, want 2", n)
	}
	if res := e.do(t, map[string]string{"X-Auth-Token": toks[2]}); len(res.ks) != 0 {
		t.Errorf("most recent token revalidated")
	}
	if res := e.do(t, map[string]string{"X-Auth-Token": toks[0]}); len(res.ks) != 1 {
		t.Errorf("evicted token not revalidated: %d requests", len(res.ks))
	}
}

func TestCacheDisabled(t *testing.T) {
	e := newEnv(t, func(o *Options) { o.TokenCacheTime = -1 })
	tok := e.ks.Issue("alice")
	for i := range 3 {
		if res := e.do(t, map[string]string{"X-Auth-Token": tok}); res.code != 200 || len(res.ks) != 1 {
			t.Errorf("request %d: %d, %d keystone requests; want 200 with a validation each time", i, res.code, len(res.ks))
		}
	}
}

func TestKeystoneUnavailable(t *testing.T) {
	tests := []struct {
		name  string
		fail  int
		close bool
	}{
		{name: "500", fail: 500},
		{name: "403 for the service user", fail: 403},
		{name: "401 even after re-authentication", fail: 401},
		{name: "unreachable", close: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, delay := range []bool{false, true} {
				e := newEnv(t, func(o *Options) { o.DelayAuthDecision = delay; o.HTTPRequestMaxRetries = 2 })
				tok := e.ks.Issue("alice")
				if tt.close {
					e.ks.Close()
				} else {
					e.ks.SetFailure(func(r *http.Request) int {
						if r.Method == http.MethodGet && r.URL.Path == "/v3/auth/tokens" {
							return tt.fail
						}
						return 0
					})
				}
				res := e.do(t, map[string]string{"X-Auth-Token": tok})
				switch {
				case !delay && res.code != http.StatusServiceUnavailable:
					t.Errorf("status %d, want 503", res.code)
				case delay && (res.code != 200 || res.seen.header.Get("X-Identity-Status") != "Invalid" || res.seen.auth.Confirmed):
					t.Errorf("delay_auth_decision: status %d, want the request passed on as Invalid", res.code)
				}
				if !delay && !strings.Contains(res.body, `"code": 503`) {
					t.Errorf("body %q", res.body)
				}
				if res.header.Get("WWW-Authenticate") != "" {
					t.Errorf("503 carries WWW-Authenticate")
				}
				if len(e.errs) == 0 || !errors.Is(e.errs[len(e.errs)-1], ErrUnavailable) {
					t.Errorf("OnError got %v, want ErrUnavailable", e.errs)
				}
			}
		})
	}
}

func TestServiceTokenAllowsExpiredUserToken(t *testing.T) {
	for _, required := range []bool{false, true} {
		e := newEnv(t, func(o *Options) { o.ServiceTokenRolesRequired = required })
		e.ks.SetTokenLifetime(time.Minute)
		user := e.ks.Issue("alice")
		e.ks.SetTokenLifetime(time.Hour)
		e.clock.Advance(2 * time.Minute)
		svc, norole := e.ks.Issue("nova"), e.ks.Issue("bob")
		if res := e.do(t, map[string]string{"X-Auth-Token": user}); res.code != 401 {
			t.Errorf("required=%v: expired token alone: %d, want 401", required, res.code)
		}
		res := e.do(t, map[string]string{"X-Auth-Token": user, "X-Service-Token": svc})
		if res.code != 200 || !res.seen.auth.Confirmed {
			t.Errorf("required=%v: expired token with a service token: %d, want 200", required, res.code)
		}
		if !slices.ContainsFunc(res.ks, func(r keystonetest.Request) bool { return strings.Contains(r.RawQuery, "allow_expired=1") }) {
			t.Errorf("required=%v: allow_expired=1 not sent: %+v", required, res.ks)
		}
		// A service token without a service role never allows expired tokens; with
		// service_token_roles_required it is itself invalid.
		res = e.do(t, map[string]string{"X-Auth-Token": user, "X-Service-Token": norole})
		if res.code != 401 {
			t.Errorf("required=%v: expired token with a role-less service token: %d, want 401", required, res.code)
		}
		fresh := e.ks.Issue("alice")
		res = e.do(t, map[string]string{"X-Auth-Token": fresh, "X-Service-Token": norole})
		if want := map[bool]int{false: 200, true: 401}[required]; res.code != want {
			t.Errorf("required=%v: valid token with a role-less service token: %d, want %d", required, res.code, want)
		}
		res = e.do(t, map[string]string{"X-Auth-Token": fresh, "X-Service-Token": "gAAAAAbogus"})
		if res.code != 401 {
			t.Errorf("required=%v: invalid service token: %d, want 401", required, res.code)
		}
	}
}

func TestAccessRules(t *testing.T) {
	e := newEnv(t, func(o *Options) { o.ServiceType = "attestation"; o.IncludeServiceCatalog = true })
	e.ks.AddAppCred(keystonetest.AppCred{ID: "ac1", Secret: "s", UserID: "alice-id",
		AccessRules: []keystonetest.AccessRule{{Path: "/v1/hosts/*", Method: "GET", Service: "attestation"}}})
	e.ks.AddAppCred(keystonetest.AppCred{ID: "ac2", Secret: "s", UserID: "alice-id", AccessRules: []keystonetest.AccessRule{}})
	e.ks.AddAppCred(keystonetest.AppCred{ID: "ac3", Secret: "s", UserID: "alice-id"})
	call := func(tok, method, path string) int {
		req := httptest.NewRequestWithContext(t.Context(), method, path, nil)
		req.Header.Set("X-Auth-Token", tok)
		rec := httptest.NewRecorder()
		e.h.ServeHTTP(rec, req)
		select {
		case <-e.seen:
		default:
		}
		return rec.Code
	}
	restricted, none, unrestricted := e.ks.IssueAppCred("ac1"), e.ks.IssueAppCred("ac2"), e.ks.IssueAppCred("ac3")
	tests := []struct {
		tok, method, path string
		want              int
	}{
		{restricted, "GET", "/v1/hosts/h1", 200},
		{restricted, "GET", "/v1/hosts/h1/history", 401},
		{restricted, "DELETE", "/v1/hosts/h1", 401},
		{none, "GET", "/v1/hosts/h1", 401},
		{unrestricted, "DELETE", "/v1/hosts/h1", 200},
	}
	for _, tt := range tests {
		if got := call(tt.tok, tt.method, tt.path); got != tt.want {
			t.Errorf("%s %s with %s: %d, want %d", tt.method, tt.path, tt.tok[:8], got, tt.want)
		}
	}
	// service_type unset: a restricted credential cannot be checked, so it is refused
	e2 := newEnv(t, func(o *Options) { o.IncludeServiceCatalog = true })
	e2.ks.AddAppCred(keystonetest.AppCred{ID: "ac1", Secret: "s", UserID: "alice-id",
		AccessRules: []keystonetest.AccessRule{{Path: "/v2.1/servers", Method: "GET", Service: "attestation"}}})
	if res := e2.do(t, map[string]string{"X-Auth-Token": e2.ks.IssueAppCred("ac1")}); res.code != 401 {
		t.Errorf("restricted credential without service_type: %d, want 401", res.code)
	}
}

func TestPathMatches(t *testing.T) {
	tests := []struct {
		path, pattern string
		want          bool
	}{
		{"/v1/hosts", "/v1/hosts", true},
		{"/v1/hosts/h1", "/v1/hosts/*", true},
		{"/v1/hosts/h1/x", "/v1/hosts/*", false},
		{"/v1/hosts/h1/x", "/v1/hosts/**", true},
		{"/v1/hosts/h1", "/v1/hosts/{host}", true},
		{"/v1/hosts/", "/v1/hosts/{host}", false},
		{"/v2x1/servers", "/v2.1/servers", true}, // keystonemiddleware does not escape '.'
		{"/v1/hosts", "/v1/host", false},
	}
	for _, tt := range tests {
		if got := pathMatches(tt.path, tt.pattern); got != tt.want {
			t.Errorf("pathMatches(%q, %q) = %v, want %v", tt.path, tt.pattern, got, tt.want)
		}
	}
}

func TestTokenBind(t *testing.T) {
	for _, tt := range []struct {
		mode string
		bind map[string]any
		want int
	}{
		{"permissive", nil, 200},
		{"permissive", map[string]any{"x509": "abc"}, 200},
		{"permissive", map[string]any{"kerberos": "alice@EXAMPLE"}, 401},
		{"strict", map[string]any{"x509": "abc"}, 401},
		{"required", nil, 401},
		{"disabled", map[string]any{"kerberos": "alice@EXAMPLE"}, 200},
		{"x509", map[string]any{"other": "abc"}, 401},
	} {
		e := newEnv(t, func(o *Options) { o.EnforceTokenBind = tt.mode })
		tok := e.ks.Issue("alice")
		if tt.bind != nil {
			tok = e.ks.IssueBound("alice", tt.bind)
		}
		if res := e.do(t, map[string]string{"X-Auth-Token": tok}); res.code != tt.want {
			t.Errorf("enforce_token_bind=%s bind=%v: %d, want %d", tt.mode, tt.bind, res.code, tt.want)
		}
	}
}

func TestHandler401GetsChallenge(t *testing.T) {
	e := newEnv(t, nil)
	h := e.setup.Middleware.Wrap(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusUnauthorized)
	}))
	req := httptest.NewRequestWithContext(t.Context(), http.MethodGet, "/", nil)
	req.Header.Set("X-Auth-Token", e.ks.Issue("alice"))
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != 401 || rec.Header().Get("WWW-Authenticate") != `Keystone uri="https://keystone.example.com/v3"` {
		t.Errorf("handler 401: code %d, WWW-Authenticate %q", rec.Code, rec.Header().Get("WWW-Authenticate"))
	}
}

func TestWWWAuthenticateFallback(t *testing.T) {
	e := newEnv(t, func(o *Options) { o.WWWAuthenticateURI = ""; o.AuthURI = "http://legacy/v3" })
	if res := e.do(t, nil); res.header.Get("WWW-Authenticate") != `Keystone uri="http://legacy/v3"` {
		t.Errorf("auth_uri fallback: %q", res.header.Get("WWW-Authenticate"))
	}
	e = newEnv(t, func(o *Options) { o.WWWAuthenticateURI = "" })
	if res := e.do(t, nil); res.header.Get("WWW-Authenticate") != `Keystone uri="`+e.ks.URL+`"` {
		t.Errorf("auth_url fallback: %q", res.header.Get("WWW-Authenticate"))
	}
}

func TestSpoofedHeadersNeverReachApp(t *testing.T) {
	e := newEnv(t, func(o *Options) { o.DelayAuthDecision = true })
	spoof := map[string]string{}
	for _, h := range identityHeaders {
		spoof[h] = "spoofed"
	}
	for _, tok := range []string{"", "gAAAAAbogus", e.ks.Issue("alice")} {
		hdr := map[string]string{"X-Auth-Token": tok}
		for k, v := range spoof {
			hdr[k] = v
		}
		res := e.do(t, hdr)
		for k, v := range res.seen.header {
			if v[0] == "spoofed" {
				t.Errorf("token %q: spoofed %s reached the app", tok, k)
			}
		}
	}
}

func TestOptionsValidate(t *testing.T) {
	good := DefaultOptions()
	good.AuthURL, good.Username, good.Password, good.UserDomainName = "http://ks/v3", "u", "p", "Default"
	if err := good.Validate(); err != nil {
		t.Fatalf("valid options: %v", err)
	}
	tests := []struct {
		name string
		mod  func(*Options)
		key  string
	}{
		{"no auth_url", func(o *Options) { o.AuthURL = "" }, "keystone_authtoken.auth_url"},
		{"no password", func(o *Options) { o.Password = "" }, "keystone_authtoken.password"},
		{"bad auth_type", func(o *Options) { o.AuthType = "token" }, "keystone_authtoken.auth_type"},
		{"negative timeout", func(o *Options) { o.HTTPConnectTimeout = -1 }, "keystone_authtoken.http_connect_timeout"},
		{"roles required but none", func(o *Options) { o.ServiceTokenRolesRequired = true; o.ServiceTokenRoles = nil }, "keystone_authtoken.service_token_roles"},
		{"app cred without secret", func(o *Options) { o.AuthType = "v3applicationcredential"; o.ApplicationCredentialID = "x" }, "keystone_authtoken.application_credential_secret"},
		{"bad interface", func(o *Options) { o.Interface = "private" }, "keystone_authtoken.interface"},
	}
	for _, tt := range tests {
		o := good
		tt.mod(&o)
		err := o.Validate()
		if !errors.Is(err, ErrInvalidOptions) && (err == nil || !strings.Contains(err.Error(), tt.key)) {
			t.Errorf("%s: Validate() = %v, want an error naming %s", tt.name, err, tt.key)
		}
		if err == nil || !strings.Contains(err.Error(), tt.key) {
			t.Errorf("%s: Validate() = %v, want an error naming %s", tt.name, err, tt.key)
		}
	}
}

func TestOpenFailsWithBadCredentials(t *testing.T) {
	ks := keystonetest.New(t)
	opts := DefaultOptions()
	opts.AuthURL, opts.Username, opts.Password, opts.UserDomainName = ks.URL, "nobody", "x", "Default"
	opts.WWWAuthenticateURI = "http://ks/v3"
	if _, err := Open(context.Background(), opts, OpenConfig{}); err == nil {
		t.Fatal("Open() with unknown user succeeded")
	}
}

func TestParseISOTime(t *testing.T) {
	want := time.Date(2026, 11, 25, 22, 10, 4, 0, time.UTC)
	for _, s := range []string{"2026-11-25T22:10:04.000000Z", "2026-11-25T22:10:04Z", "2026-11-25T22:10:04", "2026-11-25T22:10:04.000000", "2026-11-25T23:10:04+01:00"} {
		if got, err := parseISOTime(s); err != nil || !got.Equal(want) {
			t.Errorf("parseISOTime(%q) = %v, %v", s, got, err)
		}
	}
	if _, err := parseISOTime("yesterday"); err == nil {
		t.Error("parseISOTime accepted garbage")
	}
}
