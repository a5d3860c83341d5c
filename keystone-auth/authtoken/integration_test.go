package authtoken

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gophercloud/gophercloud/v2"
	"github.com/gophercloud/gophercloud/v2/openstack/identity/v3/applicationcredentials"
	"github.com/gophercloud/gophercloud/v2/openstack/identity/v3/tokens"

	"github.com/trustpool/trustpool/internal/servicetest"
	"github.com/trustpool/trustpool/keystone-auth/credentials"
	"github.com/trustpool/trustpool/keystone-auth/policy"
)

func TestMain(m *testing.M) { servicetest.Main(m) }

// These tests run the middleware against the real Keystone (python3-keystone, Zed) of
// internal/servicetest. They are skipped with -short.

// countingTransport counts token validations sent to Keystone.
type countingTransport struct {
	base        http.RoundTripper
	validations atomic.Int32
	auths       atomic.Int32
}

func (c *countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if strings.HasSuffix(r.URL.Path, "/auth/tokens") {
		switch r.Method {
		case http.MethodGet:
			c.validations.Add(1)
		case http.MethodPost:
			c.auths.Add(1)
		}
	}
	return c.base.RoundTrip(r)
}

// offsetClock is real time plus an adjustable offset: Keystone judges expiry by real
// time, the middleware's cache by this clock.
type offsetClock struct {
	mu  sync.Mutex
	off time.Duration
}

func (c *offsetClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return time.Now().Add(c.off)
}

func (c *offsetClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.off += d
}

// realEnv is a set of users on the shared Keystone, named uniquely for the test.
type realEnv struct {
	ks                                     *servicetest.KeystoneServer
	suffix                                 string
	svcUser, svcProject                    string
	project, otherProject                  string
	projectID, otherProjectID              string
	adminID, memberID, readerID, outsideID string
	norole                                 string
}

const pw = "integration-pw"

func newRealEnv(t *testing.T) *realEnv {
	t.Helper()
	ks := servicetest.Keystone(t)
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	s := hex.EncodeToString(b)
	e := &realEnv{ks: ks, suffix: s, svcUser: "svc-" + s, svcProject: "service-" + s, project: "p1-" + s, otherProject: "p2-" + s, norole: "norole-" + s}
	ks.CreateUser(t, servicetest.KeystoneUser{Name: e.svcUser, Password: pw, Project: e.svcProject, Roles: []string{"service"}})
	ks.CreateUser(t, servicetest.KeystoneUser{Name: e.norole, Password: pw, Project: e.svcProject, Roles: []string{"member"}})
	e.adminID, e.projectID = ks.CreateUser(t, servicetest.KeystoneUser{Name: "admin-" + s, Password: pw, Project: e.project, Roles: []string{"admin"}})
	e.memberID, _ = ks.CreateUser(t, servicetest.KeystoneUser{Name: "member-" + s, Password: pw, Project: e.project, Roles: []string{"member"}})
	e.readerID, _ = ks.CreateUser(t, servicetest.KeystoneUser{Name: "reader-" + s, Password: pw, Project: e.project, Roles: []string{"reader"}})
	e.outsideID, e.otherProjectID = ks.CreateUser(t, servicetest.KeystoneUser{Name: "outsider-" + s, Password: pw, Project: e.otherProject, Roles: []string{"member"}})
	return e
}

func (e *realEnv) token(t *testing.T, who string) string {
	t.Helper()
	project := e.project
	switch who {
	case "outsider":
		project = e.otherProject
	case "svc", "norole":
		project = e.svcProject
	}
	name := who + "-" + e.suffix
	if who == "svc" {
		name = e.svcUser
	}
	if who == "norole" {
		name = e.norole
	}
	return e.ks.Token(t, name, pw, project)
}

func (e *realEnv) options() Options {
	o := DefaultOptions()
	o.AuthURL = e.ks.URL
	o.Username, o.Password, o.UserDomainName = e.svcUser, pw, "Default"
	o.ProjectName, o.ProjectDomainName = e.svcProject, "Default"
	o.WWWAuthenticateURI = e.ks.URL
	o.Interface = "public"
	o.IncludeServiceCatalog = false
	o.ServiceTokenRolesRequired = true
	return o
}

type realMW struct {
	setup *Setup
	ct    *countingTransport
	clock *offsetClock
	h     http.Handler
}

var hostPolicies = []policy.RuleDefault{
	{Name: "hosts:list", CheckStr: "role:reader and project_id:%(project_id)s", Description: "List a project's hosts."},
	{Name: "hosts:create", CheckStr: "role:member and project_id:%(project_id)s", Description: "Add a host."},
	{Name: "hosts:delete", CheckStr: "role:admin", Description: "Delete a host."},
}

// open builds the middleware in front of a small API whose handlers enforce hostPolicies.
func (e *realEnv) open(t *testing.T, mod func(*Options)) *realMW {
	t.Helper()
	o := e.options()
	if mod != nil {
		mod(&o)
	}
	m := &realMW{ct: &countingTransport{base: http.DefaultTransport}, clock: &offsetClock{}}
	s, err := Open(t.Context(), o, OpenConfig{Transport: m.ct, Now: m.clock.Now, RetryDelay: 10 * time.Millisecond})
	if err != nil {
		t.Fatalf("Open() against the real Keystone: %v", err)
	}
	m.setup = s
	enf, err := policy.New(policy.Config{Defaults: hostPolicies})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	route := func(pattern, rule string) {
		mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
			a, _ := FromContext(r.Context())
			ok, err := enf.Authorize(rule, map[string]any{"project_id": r.PathValue("project")}, a.PolicyCredentials())
			if err != nil || !ok {
				http.Error(w, "forbidden", http.StatusForbidden)
				return
			}
			roles := slices.Sorted(slices.Values(a.User.Roles)) // Keystone's order varies
			fmt.Fprintf(w, "%s %s %s", a.User.UserID, a.User.ProjectID, strings.Join(roles, ","))
		})
	}
	route("GET /projects/{project}/hosts", "hosts:list")
	route("POST /projects/{project}/hosts", "hosts:create")
	route("DELETE /projects/{project}/hosts/{host}", "hosts:delete")
	mux.HandleFunc("GET /whoami", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		for _, h := range []string{"X-Roles", "X-User-Id", "X-Project-Id", "X-Identity-Status"} {
			fmt.Fprintf(w, "%s=%s\n", h, r.Header.Get(h)) //nolint:gosec // test handler echoing headers as text
		}
	})
	m.h = s.Middleware.Wrap(mux)
	return m
}

func (m *realMW) call(t *testing.T, method, path string, hdr map[string]string) (int, string) {
	t.Helper()
	req := httptest.NewRequestWithContext(t.Context(), method, path, nil)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	rec := httptest.NewRecorder()
	m.h.ServeHTTP(rec, req)
	b, _ := io.ReadAll(rec.Body)
	return rec.Code, string(b)
}

func TestKeystoneValidAndRoles(t *testing.T) {
	e := newRealEnv(t)
	m := e.open(t, nil)
	admin, member, reader, outsider := e.token(t, "admin"), e.token(t, "member"), e.token(t, "reader"), e.token(t, "outsider")
	own := "/projects/" + e.projectID + "/hosts"
	tests := []struct {
		name, tok, method, path string
		want                    int
	}{
		{"member lists own project", member, "GET", own, 200},
		{"reader lists own project", reader, "GET", own, 200},
		{"reader cannot create", reader, "POST", own, 403},
		{"member creates", member, "POST", own, 200},
		{"member cannot delete", member, "DELETE", own + "/h1", 403},
		{"admin deletes", admin, "DELETE", own + "/h1", 200},
		{"admin implies reader", admin, "GET", own, 200},
		{"wrong project", outsider, "GET", own, 403},
		{"outsider in own project", outsider, "GET", "/projects/" + e.otherProjectID + "/hosts", 200},
		{"no token", "", "GET", own, 401},
		{"garbage token", "gAAAAABnot-a-token", "GET", own, 401},
	}
	for _, tt := range tests {
		hdr := map[string]string{}
		if tt.tok != "" {
			hdr["X-Auth-Token"] = tt.tok
		}
		code, body := m.call(t, tt.method, tt.path, hdr)
		if code != tt.want {
			t.Errorf("%s: %d %q, want %d", tt.name, code, body, tt.want)
		}
	}
	code, body := m.call(t, "GET", own, map[string]string{"X-Auth-Token": member})
	if want := e.memberID + " " + e.projectID + " member,reader"; code != 200 || body != want {
		t.Errorf("identity of the member: %q, want %q", body, want)
	}
	rec := httptest.NewRecorder()
	m.h.ServeHTTP(rec, httptest.NewRequestWithContext(t.Context(), "GET", own, nil))
	if got := rec.Header().Get("WWW-Authenticate"); rec.Code != 401 || got != `Keystone uri="`+e.ks.URL+`"` {
		t.Errorf("without a token: %d, WWW-Authenticate %q", rec.Code, got)
	}
}

func TestKeystoneCacheHitMakesNoRequest(t *testing.T) {
	e := newRealEnv(t)
	m := e.open(t, nil)
	tok := e.token(t, "member")
	path := "/projects/" + e.projectID + "/hosts"
	if code, _ := m.call(t, "GET", path, map[string]string{"X-Auth-Token": tok}); code != 200 {
		t.Fatalf("first request: %d", code)
	}
	if n := m.ct.validations.Load(); n != 1 {
		t.Fatalf("first request made %d validations, want 1", n)
	}
	for range 5 {
		if code, _ := m.call(t, "GET", path, map[string]string{"X-Auth-Token": tok}); code != 200 {
			t.Fatalf("cached request: %d", code)
		}
	}
	if n := m.ct.validations.Load(); n != 1 {
		t.Errorf("5 cached requests made %d more validations, want 0", n-1)
	}
}

func TestKeystoneRevokedToken(t *testing.T) {
	e := newRealEnv(t)
	m := e.open(t, func(o *Options) { o.TokenCacheTime = 30 })
	admin := adminIdentity(t, e)
	path := "/projects/" + e.projectID + "/hosts"

	// not cached: rejected at once
	tok := e.token(t, "member")
	if r := tokens.Revoke(t.Context(), admin, tok); r.Err != nil {
		t.Fatal(r.Err)
	}
	if code, _ := m.call(t, "GET", path, map[string]string{"X-Auth-Token": tok}); code != 401 {
		t.Errorf("revoked, uncached token: %d, want 401", code)
	}

	// cached: accepted until its cache entry expires, then rejected
	tok = e.token(t, "member")
	if code, _ := m.call(t, "GET", path, map[string]string{"X-Auth-Token": tok}); code != 200 {
		t.Fatalf("valid token: %d", code)
	}
	if r := tokens.Revoke(t.Context(), admin, tok); r.Err != nil {
		t.Fatal(r.Err)
	}
	before := m.ct.validations.Load()
	if code, _ := m.call(t, "GET", path, map[string]string{"X-Auth-Token": tok}); code != 200 {
		t.Errorf("revoked but cached token: %d, want 200 (keystonemiddleware semantics)", code)
	}
	m.clock.Advance(29 * time.Second)
	if code, _ := m.call(t, "GET", path, map[string]string{"X-Auth-Token": tok}); code != 200 || m.ct.validations.Load() != before {
		t.Errorf("revoked token within token_cache_time: %d after %d validations, want cached 200", code, m.ct.validations.Load()-before)
	}
	m.clock.Advance(time.Second)
	if code, _ := m.call(t, "GET", path, map[string]string{"X-Auth-Token": tok}); code != 401 {
		t.Errorf("revoked token after token_cache_time: %d, want 401", code)
	}
	if n := m.ct.validations.Load() - before; n != 1 {
		t.Errorf("%d validations after the cache entry expired, want 1", n)
	}
}

// TestKeystoneServiceTokenRevoked revokes the middleware's own token: the next
// validation gets Keystone's 401, re-authenticates once and succeeds.
func TestKeystoneServiceTokenRevoked(t *testing.T) {
	e := newRealEnv(t)
	m := e.open(t, nil)
	own, err := m.setup.Provider.Token(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if r := tokens.Revoke(t.Context(), adminIdentity(t, e), own); r.Err != nil {
		t.Fatal(r.Err)
	}
	before := m.ct.auths.Load()
	if code, body := m.call(t, "GET", "/projects/"+e.projectID+"/hosts", map[string]string{"X-Auth-Token": e.token(t, "member")}); code != 200 {
		t.Errorf("after the service token was revoked: %d %s, want 200", code, body)
	}
	if n := m.ct.auths.Load() - before; n != 1 {
		t.Errorf("%d re-authentications, want 1", n)
	}
}

// adminIdentity returns an identity client authenticated as the bootstrap admin.
func adminIdentity(t *testing.T, e *realEnv) *gopherIdentity {
	t.Helper()
	p, err := credentials.New(t.Context(), credentials.Config{Options: credentials.Options{
		AuthURL: e.ks.URL, Username: e.ks.AdminUser, Password: e.ks.AdminPassword, UserDomainID: "default",
		ProjectName: e.ks.AdminProject, ProjectDomainID: "default", Interface: "public"}})
	if err != nil {
		t.Fatal(err)
	}
	id, err := p.IdentityV3()
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// userIdentity returns an identity client authenticated as one of the env's users.
func userIdentity(t *testing.T, e *realEnv, who string) *gopherIdentity {
	t.Helper()
	p, err := credentials.New(t.Context(), credentials.Config{Options: credentials.Options{
		AuthURL: e.ks.URL, Username: who + "-" + e.suffix, Password: pw, UserDomainID: "default",
		ProjectName: e.project, ProjectDomainID: "default", Interface: "public"}})
	if err != nil {
		t.Fatal(err)
	}
	id, err := p.IdentityV3()
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// createAppCred creates an application credential for the member user.
func createAppCred(t *testing.T, e *realEnv, expires *time.Time) *applicationcredentials.ApplicationCredential {
	t.Helper()
	ac, err := applicationcredentials.Create(t.Context(), userIdentity(t, e, "member"), e.memberID, applicationcredentials.CreateOpts{
		Name: "ac-" + t.Name() + "-" + e.suffix, ExpiresAt: expires}).Extract()
	if err != nil {
		t.Fatalf("create application credential: %v", err)
	}
	return ac
}

func appCredToken(t *testing.T, e *realEnv, ac *applicationcredentials.ApplicationCredential) string {
	t.Helper()
	p, err := credentials.New(t.Context(), credentials.Config{Options: credentials.Options{
		AuthType: "v3applicationcredential", AuthURL: e.ks.URL, ApplicationCredentialID: ac.ID,
		ApplicationCredentialSecret: ac.Secret, Interface: "public"}})
	if err != nil {
		t.Fatalf("authenticate with the application credential: %v", err)
	}
	tok, err := p.Token(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func TestKeystoneApplicationCredential(t *testing.T) {
	e := newRealEnv(t)
	m := e.open(t, nil)
	ac := createAppCred(t, e, nil)
	tok := appCredToken(t, e, ac)
	var got *Auth
	h := m.setup.Middleware.Wrap(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) { got, _ = FromContext(r.Context()) }))
	req := httptest.NewRequestWithContext(t.Context(), "GET", "/", nil)
	req.Header.Set("X-Auth-Token", tok)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != 200 || got == nil || got.User == nil {
		t.Fatalf("application credential token: %d", rec.Code)
	}
	if got.User.ApplicationCredential == nil || got.User.ApplicationCredential.ID != ac.ID ||
		got.User.UserID != e.memberID || got.User.ProjectID != e.projectID || len(got.User.Methods) != 1 || got.User.Methods[0] != "application_credential" {
		t.Errorf("identity = %+v (application credential %+v)", got.User, got.User.ApplicationCredential)
	}
	if code, _ := m.call(t, "POST", "/projects/"+e.projectID+"/hosts", map[string]string{"X-Auth-Token": tok}); code != 200 {
		t.Errorf("application credential acting as member: %d", code)
	}
}

// TestKeystoneExpiredToken uses an application credential that expires in a few seconds:
// Keystone caps its tokens' expiry to the credential's.
func TestKeystoneExpiredAndServiceToken(t *testing.T) {
	e := newRealEnv(t)
	expires := time.Now().Add(3 * time.Second).UTC().Truncate(time.Second)
	ac := createAppCred(t, e, &expires)
	userTok := appCredToken(t, e, ac)
	svcTok, noroleTok := e.token(t, "svc"), e.token(t, "norole")
	path := "/projects/" + e.projectID + "/hosts"

	m := e.open(t, func(o *Options) { o.TokenCacheTime = -1 })
	if code, _ := m.call(t, "GET", path, map[string]string{"X-Auth-Token": userTok}); code != 200 {
		t.Fatalf("before expiry: %d", code)
	}
	for time.Now().Before(expires.Add(1500 * time.Millisecond)) {
		time.Sleep(200 * time.Millisecond) // Keystone judges expiry by the real clock
	}
	if code, _ := m.call(t, "GET", path, map[string]string{"X-Auth-Token": userTok}); code != 401 {
		t.Errorf("expired token: %d, want 401", code)
	}
	// a valid service token with the service role makes the expired user token acceptable
	if code, body := m.call(t, "GET", path, map[string]string{"X-Auth-Token": userTok, "X-Service-Token": svcTok}); code != 200 {
		t.Errorf("expired token with a service token: %d %s, want 200", code, body)
	}
	// a service token without the service role is refused (service_token_roles_required)
	if code, _ := m.call(t, "GET", path, map[string]string{"X-Auth-Token": e.token(t, "member"), "X-Service-Token": noroleTok}); code != 401 {
		t.Errorf("role-less service token: %d, want 401", code)
	}
	// and does not make an expired token acceptable even when not required
	m2 := e.open(t, func(o *Options) { o.ServiceTokenRolesRequired = false; o.TokenCacheTime = -1 })
	if code, _ := m2.call(t, "GET", path, map[string]string{"X-Auth-Token": userTok, "X-Service-Token": noroleTok}); code != 401 {
		t.Errorf("expired token with a role-less service token: %d, want 401", code)
	}
}

func TestKeystoneSpoofedHeaders(t *testing.T) {
	e := newRealEnv(t)
	m := e.open(t, nil)
	code, body := m.call(t, "GET", "/whoami", map[string]string{"X-Auth-Token": e.token(t, "reader"),
		"X-Roles": "admin", "X-User-Id": "evil", "X-Project-Id": "other", "X-Identity-Status": "Confirmed"})
	want := fmt.Sprintf("X-Roles=reader\nX-User-Id=%s\nX-Project-Id=%s\nX-Identity-Status=Confirmed\n", e.readerID, e.projectID)
	if code != 200 || body != want {
		t.Errorf("app saw %q, want %q", body, want)
	}
}

// TestKeystoneStopped stops the shared Keystone: it must not run in parallel with other
// tests of this package.
func TestKeystoneStopped(t *testing.T) {
	e := newRealEnv(t)
	m := e.open(t, func(o *Options) { o.HTTPRequestMaxRetries = 1 })
	path := "/projects/" + e.projectID + "/hosts"
	cached, fresh := e.token(t, "member"), e.token(t, "reader")
	if code, _ := m.call(t, "GET", path, map[string]string{"X-Auth-Token": cached}); code != 200 {
		t.Fatalf("before stopping Keystone: %d", code)
	}
	e.ks.Stop(t)
	t.Cleanup(func() { e.ks.Start(t) })
	code, body := m.call(t, "GET", path, map[string]string{"X-Auth-Token": fresh})
	if code != http.StatusServiceUnavailable {
		t.Errorf("Keystone stopped, uncached token: %d %q, want 503", code, body)
	}
	if code, _ := m.call(t, "GET", path, map[string]string{"X-Auth-Token": cached}); code != 200 {
		t.Errorf("Keystone stopped, cached token: %d, want 200 from the cache", code)
	}
	e.ks.Start(t)
	if code, _ := m.call(t, "GET", path, map[string]string{"X-Auth-Token": fresh}); code != 200 {
		t.Errorf("Keystone back: %d, want 200", code)
	}
}

type gopherIdentity = gophercloud.ServiceClient
