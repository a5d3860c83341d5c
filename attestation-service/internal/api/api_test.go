package api_test

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/trustpool/trustpool/attestation-service/internal/api"
	"github.com/trustpool/trustpool/attestation-service/internal/engine"
	"github.com/trustpool/trustpool/attestation-service/internal/launcher"
	"github.com/trustpool/trustpool/attestation-service/internal/metrics"
	"github.com/trustpool/trustpool/attestation-service/internal/store"
	"github.com/trustpool/trustpool/internal/attestapi"
	"github.com/trustpool/trustpool/internal/attestrpc"
	"github.com/trustpool/trustpool/internal/bootseed"
	"github.com/trustpool/trustpool/internal/eventlog"
	"github.com/trustpool/trustpool/internal/evidence"
	"github.com/trustpool/trustpool/internal/launch"
	"github.com/trustpool/trustpool/internal/policykey"
	"github.com/trustpool/trustpool/internal/verdict"
	"github.com/trustpool/trustpool/keystone-auth/authtoken"
	"github.com/trustpool/trustpool/keystone-auth/keystonetest"
	kpolicy "github.com/trustpool/trustpool/keystone-auth/policy"
)

type nopAgents struct{}

func (nopAgents) Quote(context.Context, string, *attestrpc.QuoteArgs) (*attestrpc.QuoteResult, error) {
	return nil, context.DeadlineExceeded
}

type nopPublisher struct{}

func (nopPublisher) PublishVerdicts(context.Context, []verdict.Signed) error { return nil }
func (nopPublisher) Notify(context.Context, string, any) error               { return nil }

type fixture struct {
	srv           *httptest.Server
	st            *store.Store
	eng           *engine.Engine
	signer        *verdict.Signer
	policyFile    string
	admin, member string
	reader        string
	otherAdmin    string // admin role on an unrelated project
	service       string // service role only
	systemAdmin   string // system-scoped admin token
	launchKey     *launch.PrivateKey
	policyKey     *policykey.PrivateKey
	rival         string // member of another project
}

// otherMember is a token of a member of another project than member's.
func (f *fixture) otherMember(*testing.T) string { return f.rival }

// serviceDefaults are the attestation service's [oslo_policy] defaults
// (service.DefaultConfig): new defaults only, scope enforced.
func serviceDefaults() kpolicy.Options {
	o := kpolicy.DefaultOptions()
	o.EnforceScope, o.EnforceNewDefaults = true, true
	return o
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	return newFixtureWith(t, serviceDefaults())
}

func newFixtureWith(t *testing.T, popts kpolicy.Options) *fixture {
	t.Helper()
	ks := keystonetest.New(t)
	ks.AddUser(keystonetest.User{Name: "trustpool", Password: "pw", ProjectName: "service", ProjectID: "service-id", Roles: []string{"service", "admin"}})
	ks.AddUser(keystonetest.User{Name: "boss", Password: "pw", ProjectName: "admin", ProjectID: "admin-id", Roles: []string{"admin", "member", "reader"}})
	ks.AddUser(keystonetest.User{Name: "carol", Password: "pw", ProjectName: "other", ProjectID: "other-id", Roles: []string{"admin", "member", "reader"}})
	ks.AddUser(keystonetest.User{Name: "nova", Password: "pw", ProjectName: "service", ProjectID: "service-id", Roles: []string{"service"}})
	ks.AddUser(keystonetest.User{Name: "sysadmin", Password: "pw", System: true, Roles: []string{"admin", "member", "reader"}})
	// Keystone's implied roles give members the reader role too.
	ks.AddUser(keystonetest.User{Name: "bob", Password: "pw", ProjectName: "demo", ProjectID: "demo-id", Roles: []string{"member", "reader"}})
	ks.AddUser(keystonetest.User{Name: "rita", Password: "pw", ProjectName: "demo", ProjectID: "demo-id", Roles: []string{"reader"}})
	ks.AddUser(keystonetest.User{Name: "mallory", Password: "pw", ProjectName: "rival", ProjectID: "rival-id", Roles: []string{"member", "reader"}})
	opts := authtoken.DefaultOptions()
	opts.AuthURL, opts.WWWAuthenticateURI = ks.URL, ks.URL
	opts.Username, opts.Password, opts.ProjectName = "trustpool", "pw", "service"
	opts.UserDomainName, opts.ProjectDomainName = "Default", "Default"
	setup, err := authtoken.Open(t.Context(), opts, authtoken.OpenConfig{RetryDelay: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(t.Context(), "sqlite:///"+filepath.Join(t.TempDir(), "a.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	_, priv, _ := ed25519.GenerateKey(nil)
	signer := verdict.NewSigner(priv)
	reg := metrics.New()
	eng := engine.New(engine.Config{Issuer: "test", Interval: time.Second, Validity: 3 * time.Second, QuoteTimeout: time.Second,
		PCRs: []int{0}, EnrollmentMode: engine.ModeAuto, Store: st, Signer: signer, Agents: nopAgents{}, Publisher: nopPublisher{}, Metrics: reg})
	dir := t.TempDir()
	popts.PolicyFile = "policy.yaml"
	enf, err := kpolicy.New(kpolicy.Config{Options: popts, Defaults: api.Rules(), BaseDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	pem, _ := verdict.MarshalPublicKeyPEM(signer.Public())
	lkey, err := launch.GenerateKey("")
	if err != nil {
		t.Fatal(err)
	}
	pkey, err := policykey.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	// Not Run: launches created here wait for a binding that never comes.
	lr := launcher.New(launcher.Config{Store: st, Key: lkey, Signer: signer, Issuer: "test", Notifier: nopPublisher{}, Metrics: reg, PolicyKey: pkey})
	h := api.New(api.Config{Engine: eng, Store: st, Policy: enf, Auth: setup.Middleware.Wrap, Metrics: reg,
		PublicKeyPEM: pem, KID: signer.KID(), Trigger: func(string) {}, Launches: lr})
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return &fixture{srv: srv, st: st, eng: eng, signer: signer, policyFile: filepath.Join(dir, "policy.yaml"),
		admin: ks.Issue("boss"), member: ks.Issue("bob"), reader: ks.Issue("rita"),
		otherAdmin: ks.Issue("carol"), service: ks.Issue("nova"), systemAdmin: ks.Issue("sysadmin"), launchKey: lkey, policyKey: pkey,
		rival: ks.Issue("mallory")}
}

func (f *fixture) do(t *testing.T, method, path, token, body string) (int, map[string]any, http.Header) {
	t.Helper()
	req, _ := http.NewRequest(method, f.srv.URL+path, strings.NewReader(body))
	if token != "" {
		req.Header.Set("X-Auth-Token", token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	out := map[string]any{}
	if json.Unmarshal(b, &out) != nil {
		out["raw"] = string(b)
	}
	return resp.StatusCode, out, resp.Header
}

const profileJSON = `{"name": "golden", "pcrs": {"0": ["` + "0000000000000000000000000000000000000000000000000000000000000001" + `"]}}`

// TestPersonas holds every route to the secure-RBAC defaults: operator data
// (hosts, profiles, EK approvals, audit) only for admins (from any project:
// admin is cloud-wide) and, for reading hosts and asking for attestations,
// the service role; never for project members or readers; project-scoped
// tokens only.
func TestPersonas(t *testing.T) {
	f := newFixture(t)
	if err := f.st.PutHost(t.Context(), &store.Host{Name: "compute-1"}); err != nil {
		t.Fatal(err)
	}
	if err := f.st.PutProfile(t.Context(), storedProfile(t, "golden"), store.Create); err != nil {
		t.Fatal(err)
	}
	const (
		allow = http.StatusOK // or any other status past the policy check
		deny  = http.StatusForbidden
	)
	type want struct{ admin, otherAdmin, service, member, reader, systemAdmin int }
	adminOnly := want{allow, allow, deny, deny, deny, deny}
	serviceOrAdmin := want{allow, allow, allow, deny, deny, deny}
	routes := []struct {
		method, path, body string
		want               want
	}{
		{"GET", "/v1/hosts", "", serviceOrAdmin},
		{"GET", "/v1/hosts/compute-1", "", serviceOrAdmin},
		{"GET", "/v1/hosts/compute-1/history", "", serviceOrAdmin},
		{"POST", "/v1/hosts/nope/attest", "", serviceOrAdmin},
		{"DELETE", "/v1/hosts/nope", "", adminOnly},
		{"POST", "/v1/hosts/nope/approve", "", adminOnly},
		{"POST", "/v1/hosts/nope/reject", "", adminOnly},
		{"PUT", "/v1/hosts/nope/profiles", `{"profiles": null}`, adminOnly},
		{"GET", "/v1/profiles", "", adminOnly},
		{"GET", "/v1/profiles/golden", "", adminOnly},
		{"GET", "/v1/profiles/export", "", adminOnly},
		{"POST", "/v1/profiles", `{"name": 5}`, adminOnly},
		{"PUT", "/v1/profiles/golden", `{"name": 5}`, adminOnly},
		{"DELETE", "/v1/profiles/nope", "", adminOnly},
		{"POST", "/v1/profiles/import", "not toml", adminOnly},
		{"POST", "/v1/profiles/learn", `{"host": "nope", "name": "l"}`, adminOnly},
		{"GET", "/v1/profiles/golden/versions", "", adminOnly},
		{"GET", "/v1/profiles/golden/versions/1", "", adminOnly},
		{"POST", "/v1/profiles/golden/versions", `{"name": 5}`, adminOnly},
		{"POST", "/v1/profiles/golden/versions/1/state", `{"state": 5}`, adminOnly},
		{"GET", "/v1/audit", "", adminOnly},
	}
	users := []struct {
		name, token string
		want        func(want) int
	}{
		{"admin", f.admin, func(w want) int { return w.admin }},
		{"admin of another project", f.otherAdmin, func(w want) int { return w.otherAdmin }},
		{"service", f.service, func(w want) int { return w.service }},
		{"member", f.member, func(w want) int { return w.member }},
		{"reader", f.reader, func(w want) int { return w.reader }},
		{"system-scoped admin", f.systemAdmin, func(w want) int { return w.systemAdmin }},
	}
	for _, rt := range routes {
		for _, u := range users {
			t.Run(rt.method+" "+rt.path+" as "+u.name, func(t *testing.T) {
				code, body, _ := f.do(t, rt.method, rt.path, u.token, rt.body)
				if w := u.want(rt.want); (w == deny) != (code == deny) {
					t.Errorf("%s %s as %s = %d %v, want %s", rt.method, rt.path, u.name, code, body, map[bool]string{true: "403", false: "allowed"}[w == deny])
				}
				if code == deny {
					if e, _ := body["error"].(map[string]any); !strings.Contains(fmt.Sprint(e["message"]), "trustpool:") {
						t.Errorf("403 body %v does not name the rule", body)
					}
				}
			})
		}
	}
	// Public and anonymous routes.
	for _, tc := range []struct {
		path string
		want int
	}{{"/v1/keys", 200}, {"/healthz", 200}, {"/metrics", 200}, {"/v1/hosts", 401}} {
		if code, body, _ := f.do(t, "GET", tc.path, "", ""); code != tc.want {
			t.Errorf("anonymous GET %s = %d %v, want %d", tc.path, code, body, tc.want)
		}
	}
}

// TestLegacyRules: the old defaults come back with [oslo_policy]
// enforce_new_defaults = false (deprecated rules OR'ed in, as oslo.policy
// does) or with a policy.yaml that restores them.
func TestLegacyRules(t *testing.T) {
	legacy := serviceDefaults()
	legacy.EnforceNewDefaults = false
	f := newFixtureWith(t, legacy)
	if code, body, _ := f.do(t, "GET", "/v1/hosts", f.reader, ""); code != http.StatusOK {
		t.Errorf("enforce_new_defaults=false: reader GET /v1/hosts = %d %v, want 200", code, body)
	}
	if code, body, _ := f.do(t, "GET", "/v1/audit", f.reader, ""); code != http.StatusForbidden {
		t.Errorf("enforce_new_defaults=false: reader GET /v1/audit = %d %v, want 403 (admin-only before too)", code, body)
	}

	f = newFixture(t)
	if code, _, _ := f.do(t, "GET", "/v1/hosts", f.reader, ""); code != http.StatusForbidden {
		t.Fatalf("reader GET /v1/hosts = %d, want 403 before the override", code)
	}
	override := "\"trustpool:hosts:list\": \"rule:reader_or_admin\"\n\"trustpool:profiles:read\": \"rule:reader_or_admin\"\n"
	if err := os.WriteFile(f.policyFile, []byte(override), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{"/v1/hosts", "/v1/profiles"} {
		if code, body, _ := f.do(t, "GET", path, f.reader, ""); code != http.StatusOK {
			t.Errorf("policy.yaml restores the legacy rule: reader GET %s = %d %v, want 200", path, code, body)
		}
	}
}

// TestAudit: admin changes are audited whatever their outcome.
func TestAudit(t *testing.T) {
	f := newFixture(t)
	for _, tc := range []struct {
		method, path, token, body string
		want                      int
	}{
		{"POST", "/v1/profiles", f.member, profileJSON, http.StatusForbidden},
		{"POST", "/v1/profiles", f.reader, profileJSON, http.StatusForbidden},
		{"POST", "/v1/profiles", f.admin, profileJSON, http.StatusCreated},
		{"POST", "/v1/profiles", f.admin, profileJSON, http.StatusConflict},
		{"DELETE", "/v1/hosts/nope", f.admin, "", http.StatusNotFound},
		{"DELETE", "/v1/profiles/golden", f.admin, "", http.StatusNoContent},
	} {
		code, body, hdr := f.do(t, tc.method, tc.path, tc.token, tc.body)
		if code != tc.want {
			t.Fatalf("%s %s = %d %v, want %d", tc.method, tc.path, code, body, tc.want)
		}
		if code >= 400 {
			e, ok := body["error"].(map[string]any)
			if !ok || e["request_id"] != hdr.Get("X-Openstack-Request-Id") || !strings.HasPrefix(hdr.Get("X-Openstack-Request-Id"), "req-") {
				t.Errorf("error body %v / header %q: want the envelope with the request id", body, hdr.Get("X-Openstack-Request-Id"))
			}
		}
	}
	recs, err := f.st.Audit(t.Context(), 100)
	if err != nil {
		t.Fatal(err)
	}
	outcomes := map[string]int{}
	for _, r := range recs {
		outcomes[r.Action+":"+r.Outcome]++
	}
	want := map[string]int{"profile.create:denied": 2, "profile.create:success": 1, "profile.create:failure": 1,
		"profile.delete:success": 1, "host.delete:failure": 1}
	if diff := cmp.Diff(want, outcomes); diff != "" {
		t.Errorf("audit outcomes (-want +got):\n%s", diff)
	}
}

func storedProfile(t *testing.T, name string) store.Profile {
	t.Helper()
	return store.Profile{Name: name, Body: "[[profile]]\nname = \"" + name + "\"\n[profile.facts]\nsecure_boot = [\"enabled\"]\n"}
}

func TestImportExportRoundTrip(t *testing.T) {
	f := newFixture(t)
	file := "[[profile]]\nname = \"a\"\n[profile.facts]\nsecure_boot = [\"enabled\"]\n\n[[profile]]\nname = \"b\"\n[profile.pcrs]\n7 = [\"" + strings.Repeat("ab", 32) + "\"]\n"
	if code, body, _ := f.do(t, "POST", "/v1/profiles/import", f.admin, file); code != http.StatusOK {
		t.Fatalf("import = %d %v", code, body)
	}
	if code, body, _ := f.do(t, "POST", "/v1/profiles/import", f.admin, "[[profile]]\nname = \"BAD NAME\"\n"); code != http.StatusBadRequest {
		t.Errorf("import of an invalid file = %d %v", code, body)
	}
	code, body, _ := f.do(t, "GET", "/v1/profiles/export", f.admin, "")
	if code != http.StatusOK {
		t.Fatalf("export = %d", code)
	}
	exported := body["raw"].(string)
	if !strings.Contains(exported, `name = "a"`) || !strings.Contains(exported, `name = "b"`) || !strings.Contains(exported, strings.Repeat("ab", 32)) {
		t.Errorf("export lacks the imported profiles:\n%s", exported)
	}
}

// TestProfileTraitNameCollision: profile names that Placement's trait grammar
// spells alike are refused with 409 naming both, through every route that
// creates profiles; an import stores nothing then.
func TestProfileTraitNameCollision(t *testing.T) {
	f := newFixture(t)
	doc := func(name string) string {
		return `{"name": "` + name + `", "facts": {"secure_boot": ["enabled"]}}`
	}
	if code, body, _ := f.do(t, "POST", "/v1/profiles", f.admin, doc("gold-v2")); code != http.StatusCreated {
		t.Fatalf("create gold-v2 = %d %v", code, body)
	}
	wantConflict := func(what string, code int, body map[string]any) {
		t.Helper()
		e, _ := body["error"].(map[string]any)
		msg, _ := e["message"].(string)
		if code != http.StatusConflict || !strings.Contains(msg, `"gold_v2"`) || !strings.Contains(msg, `"gold-v2"`) || !strings.Contains(msg, "GOLD_V2") {
			t.Errorf("%s = %d %v, want 409 naming gold_v2, gold-v2 and the trait name", what, code, body)
		}
	}
	code, body, _ := f.do(t, "POST", "/v1/profiles", f.admin, doc("gold_v2"))
	wantConflict("create gold_v2", code, body)
	file := "[[profile]]\nname = \"other\"\n[profile.facts]\nsecure_boot = [\"enabled\"]\n\n" +
		"[[profile]]\nname = \"gold_v2\"\n[profile.facts]\nsecure_boot = [\"enabled\"]\n"
	code, body, _ = f.do(t, "POST", "/v1/profiles/import", f.admin, file)
	wantConflict("import with gold_v2", code, body)
	if _, err := f.st.GetProfile(t.Context(), "other"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("the refused import stored profile other: %v", err)
	}
	// Within one file: 400 naming both.
	file = "[[profile]]\nname = \"x-1\"\n[profile.facts]\nsecure_boot = [\"enabled\"]\n\n" +
		"[[profile]]\nname = \"x_1\"\n[profile.facts]\nsecure_boot = [\"enabled\"]\n"
	if code, body, _ := f.do(t, "POST", "/v1/profiles/import", f.admin, file); code != http.StatusBadRequest || !strings.Contains(fmt.Sprint(body), "X_1") {
		t.Errorf("import of x-1 and x_1 = %d %v, want 400 naming X_1", code, body)
	}
}

// goTypes matches what encoding/json and BurntSushi/toml say about Go types.
var goTypes = regexp.MustCompile(`Go (struct|value)|of type|destination|\[\]|map\[|interface \{|int64|uint8|float64|slice|profileDoc|imaDoc|api\.`)

// TestBadInput: bad input gets a 4xx naming what was wrong and never a Go
// type; a wrong method gets 405 with Allow; unknown or malformed query
// parameters are refused, not ignored.
func TestBadInput(t *testing.T) {
	f := newFixture(t)
	if err := f.st.PutHost(t.Context(), &store.Host{Name: "compute-1"}); err != nil {
		t.Fatal(err)
	}
	if code, body, _ := f.do(t, "POST", "/v1/profiles", f.admin, profileJSON); code != http.StatusCreated {
		t.Fatalf("create profile = %d %v", code, body)
	}
	tests := []struct {
		name, method, path, token, body string
		want                            int
		msg, allow                      string
	}{
		{"number for a string", "POST", "/v1/profiles", f.admin, `{"name": 5}`, 400, "name: want a string, got a number", ""},
		{"string for a list", "POST", "/v1/profiles", f.admin, `{"name": "x", "pcrs": {"0": "abc"}}`, 400, "pcrs: want an array of strings, got a string", ""},
		{"list for an object", "POST", "/v1/profiles", f.admin, `{"name": "x", "pcrs": []}`, 400, "pcrs: want an object, got an array", ""},
		{"string for a boolean", "POST", "/v1/profiles", f.admin, `{"name": "x", "ima": {"allow_violations": "yes"}}`, 400, "ima.allow_violations: want a boolean", ""},
		{"list for the body", "POST", "/v1/profiles", f.admin, `[1]`, 400, "want an object, got an array", ""},
		{"trailing data", "POST", "/v1/profiles", f.admin, `{"name": "x"} {}`, 400, "unexpected data after the JSON value", ""},
		{"unknown field", "POST", "/v1/profiles", f.admin, `{"name": "x", "bogus": 1}`, 400, `unknown field "bogus"`, ""},
		{"fraction for a PCR", "POST", "/v1/profiles/learn", f.admin, `{"host": "compute-1", "name": "n", "pcrs": [1.5]}`, 400, "pcrs: want an integer", ""},
		{"TOML integer for a name", "POST", "/v1/profiles/import", f.admin, "[[profile]]\nname = 5\n", 400, "profile[0].name: want a string, got an integer", ""},
		{"TOML string for a list", "POST", "/v1/profiles/import", f.admin, "[[profile]]\nname = \"a\"\n[profile.pcrs]\n0 = \"x\"\n", 400, "profile[0].pcrs.0: want an array of strings", ""},
		{"non-numeric history limit", "GET", "/v1/hosts/compute-1/history?limit=abc", f.admin, "", 400, `limit must be an integer from 1 to 1000, not "abc"`, ""},
		{"history limit too large", "GET", "/v1/hosts/compute-1/history?limit=1001", f.admin, "", 400, "limit must be an integer from 1 to 1000", ""},
		{"history limit", "GET", "/v1/hosts/compute-1/history?limit=5", f.admin, "", 200, "", ""},
		{"non-numeric audit limit", "GET", "/v1/audit?limit=ten", f.admin, "", 400, `limit must be an integer from 1 to 1000, not "ten"`, ""},
		{"audit limit", "GET", "/v1/audit?limit=10", f.admin, "", 200, "", ""},
		{"unknown query parameter", "GET", "/v1/hosts?all_tenants=1", f.admin, "", 400, `unknown query parameter "all_tenants"`, ""},
		{"repeated query parameter", "GET", "/v1/audit?limit=1&limit=2", f.admin, "", 400, `"limit" given 2 times`, ""},
		{"missing profile assigned", "PUT", "/v1/hosts/compute-1/profiles", f.admin, `{"profiles": ["golden", "nope"]}`, 400, `profile "nope" does not exist`, ""},
		{"profile assigned twice", "PUT", "/v1/hosts/compute-1/profiles", f.admin, `{"profiles": ["golden", "golden"]}`, 400, `profile "golden" is listed twice`, ""},
		{"existing profile assigned", "PUT", "/v1/hosts/compute-1/profiles", f.admin, `{"profiles": ["golden"]}`, 200, "", ""},
		{"POST on a list", "POST", "/v1/hosts", f.admin, "", 405, "method POST is not allowed on /v1/hosts", "GET, HEAD"},
		{"PATCH on a host", "PATCH", "/v1/hosts/compute-1", f.admin, "", 405, "", "GET, HEAD, DELETE"},
		{"GET on an action", "GET", "/v1/hosts/compute-1/attest", f.admin, "", 405, "", "POST"},
		{"DELETE on the keys", "DELETE", "/v1/keys", "", "", 405, "", "GET, HEAD"},
		{"PUT on healthz", "PUT", "/healthz", "", "", 405, "", "GET, HEAD"},
		{"wrong method needs a token first", "POST", "/v1/hosts", "", "", 401, "", ""},
		{"unknown path", "POST", "/v1/nothing", f.admin, "", 404, "no such resource", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, body, hdr := f.do(t, tc.method, tc.path, tc.token, tc.body)
			if code != tc.want {
				t.Fatalf("%s %s = %d %v, want %d", tc.method, tc.path, code, body, tc.want)
			}
			if got := hdr.Get("Allow"); got != tc.allow {
				t.Errorf("Allow = %q, want %q", got, tc.allow)
			}
			if code < 400 {
				return
			}
			e, _ := body["error"].(map[string]any)
			msg := fmt.Sprint(e["message"])
			if !strings.Contains(msg, tc.msg) {
				t.Errorf("message %q, want it to contain %q", msg, tc.msg)
			}
			if goTypes.MatchString(msg) {
				t.Errorf("message %q names a Go type", msg)
			}
		})
	}
}

// setVerdict stores a signed verdict for host as the engine would.
func (f *fixture) setVerdict(t *testing.T, host string, status verdict.Status, profiles ...string) {
	t.Helper()
	now := time.Now()
	v := verdict.Verdict{Host: host, Status: status, Profiles: profiles, Reasons: []string{}, VerifiedAt: now,
		ExpiresAt: now.Add(time.Minute), Seq: 1, Issuer: "test"}
	if status != verdict.Trusted {
		v.Reasons = []string{"unreachable: test"}
	}
	s, err := f.signer.Sign(v)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(s)
	if err := f.st.SaveVerdict(t.Context(), host, b, nil, nil); err != nil {
		t.Fatal(err)
	}
}

// TestForceBeforeDistrust: deleting a profile hosts rely on, or assigning
// profiles a trusted host's evidence does not satisfy, turns hosts untrusted:
// it is refused with 409 naming them unless force=true (marked
// force_required, with its reason), and the forced change is audited with
// the hosts it affected.
func TestForceBeforeDistrust(t *testing.T) {
	f := newFixture(t)
	ctx := t.Context()
	for _, p := range []string{"golden", "other"} {
		if err := f.st.PutProfile(ctx, storedProfile(t, p), store.Create); err != nil {
			t.Fatal(err)
		}
	}
	// compute-1: any profile will do, trusted through golden alone.
	// compute-2: assigned golden, not trusted now (it still relies on it).
	// compute-3: any profile will do, trusted through golden and other.
	// compute-4: any profile will do, untrusted.
	for _, h := range []store.Host{{Name: "compute-1"}, {Name: "compute-2", Profiles: []string{"golden"}}, {Name: "compute-3"}, {Name: "compute-4"}} {
		if err := f.st.PutHost(ctx, &h); err != nil {
			t.Fatal(err)
		}
	}
	f.setVerdict(t, "compute-1", verdict.Trusted, "golden")
	f.setVerdict(t, "compute-2", verdict.Unknown)
	f.setVerdict(t, "compute-3", verdict.Trusted, "golden", "other")
	f.setVerdict(t, "compute-4", verdict.Untrusted)

	steps := []struct {
		name, method, path, body string
		want                     int
		msg                      string
		// reason, when set, is that of a refusal force overrides.
		reason string
	}{
		{"delete a relied-on profile", "DELETE", "/v1/profiles/golden", "", http.StatusConflict,
			`profile "golden" is relied on by 2 hosts ("compute-1", "compute-2"): deleting it makes them untrusted`, attestapi.ReasonHostsRelyOnProfile},
		{"force must be a boolean", "DELETE", "/v1/profiles/golden?force=please", "", http.StatusBadRequest, `force must be true or false, not "please"`, ""},
		{"force=false is no force", "DELETE", "/v1/profiles/golden?force=false", "", http.StatusConflict, "repeat with force=true", attestapi.ReasonHostsRelyOnProfile},
		{"delete a missing profile", "DELETE", "/v1/profiles/nope", "", http.StatusNotFound, "", ""},
		{"assign what a trusted host does not satisfy", "PUT", "/v1/hosts/compute-1/profiles", `{"profiles": ["golden", "other"]}`, http.StatusConflict,
			`host "compute-1" is trusted, but its latest evidence does not satisfy profile "other": this assignment makes it untrusted`,
			attestapi.ReasonProfileNotSatisfied},
		{"assign what it satisfies", "PUT", "/v1/hosts/compute-1/profiles", `{"profiles": ["golden"]}`, http.StatusOK, "", ""},
		{"back to the default", "PUT", "/v1/hosts/compute-1/profiles", `{"profiles": null}`, http.StatusOK, "", ""},
		{"untrusted host: nothing to lose", "PUT", "/v1/hosts/compute-4/profiles", `{"profiles": ["other"]}`, http.StatusOK, "", ""},
		{"assign with force", "PUT", "/v1/hosts/compute-3/profiles?force=true", `{"profiles": ["other", "golden"]}`, http.StatusOK, "", ""},
		{"assign unmet with force", "PUT", "/v1/hosts/compute-1/profiles?force=true", `{"profiles": ["other"]}`, http.StatusOK, "", ""},
		{"delete with force", "DELETE", "/v1/profiles/golden?force=true", "", http.StatusNoContent, "", ""},
	}
	for _, st := range steps {
		code, body, _ := f.do(t, st.method, st.path, f.admin, st.body)
		if code != st.want {
			t.Fatalf("%s: %s %s = %d %v, want %d", st.name, st.method, st.path, code, body, st.want)
		}
		e, _ := body["error"].(map[string]any)
		if st.msg != "" && !strings.Contains(fmt.Sprint(e["message"]), st.msg) {
			t.Errorf("%s: message %q, want %q", st.name, e["message"], st.msg)
		}
		if code >= 400 {
			checkForceRequired(t, st.name, e, st.reason)
		}
	}
	if _, err := f.st.GetProfile(ctx, "golden"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("golden after the forced delete: %v", err)
	}
	recs, err := f.st.Audit(ctx, 100)
	if err != nil {
		t.Fatal(err)
	}
	var details []string
	for _, r := range recs {
		details = append(details, r.Action+":"+r.Outcome+":"+r.Detail)
	}
	for _, want := range []string{
		"profile.delete:success:forced; hosts relying on it: compute-2,compute-3",
		"host.set_profiles:success:profiles=other; forced: the host no longer satisfies other",
		"profile.delete:failure:" + `profile "golden" is relied on by 2 hosts`,
	} {
		if !slices.ContainsFunc(details, func(d string) bool { return strings.HasPrefix(d, want) }) {
			t.Errorf("no audit record %q in %q", want, details)
		}
	}
}

// checkForceRequired checks an error envelope's content: with reason set,
// a refusal force overrides (that reason, force_required, and a refusal
// that the message begins with and that names no force parameter);
// without, no force_required.
func checkForceRequired(t *testing.T, name string, e map[string]any, reason string) {
	t.Helper()
	refusal, _ := e["refusal"].(string)
	if reason == "" {
		if e["force_required"] != nil || e["refusal"] != nil {
			t.Errorf("%s: error %v, want no force_required or refusal", name, e)
		}
		return
	}
	msg, _ := e["message"].(string)
	if e["reason"] != reason || e["force_required"] != true || refusal == "" || !strings.HasPrefix(msg, refusal) || strings.Contains(refusal, "force") {
		t.Errorf("%s: error %v, want reason %s, force_required true and a refusal that begins the message without naming force", name, e, reason)
	}
}

// TestApproveRejectEK: pending EK requests in the host view; approve needs
// force for an EK bound elsewhere and checks the named fingerprint; reject
// is admin-only; every decision is audited.
func TestApproveRejectEK(t *testing.T) {
	f := newFixture(t)
	ctx := t.Context()
	ek1, ek2, ek3 := []byte("ek-1"), []byte("ek-2"), []byte("ek-3")
	for _, h := range []store.Host{
		{Name: "a", EKPublic: ek1, AKPublic: []byte("ak"), Activated: true},
		{Name: "b", PendingEKPublic: ek1, PendingSince: time.Now()},
		{Name: "c", EKPublic: ek2, AKPublic: []byte("ak"), Activated: true, PendingEKPublic: ek3, PendingSince: time.Now()},
	} {
		if err := f.st.PutHost(ctx, &h); err != nil {
			t.Fatal(err)
		}
	}
	fp1, fp3 := store.EKFingerprint(ek1), store.EKFingerprint(ek3)
	host := func(name string) map[string]any {
		t.Helper()
		code, body, _ := f.do(t, "GET", "/v1/hosts/"+name, f.admin, "")
		if code != http.StatusOK {
			t.Fatalf("GET %s = %d %v", name, code, body)
		}
		return body["host"].(map[string]any)
	}
	if b := host("b"); b["pending_reason"] != "ek_bound_to_other_host" || b["pending_ek_bound_to"] != "a" || b["enrollment"] != "pending_approval" {
		t.Errorf("host b = %v", b)
	}
	if c := host("c"); c["pending_reason"] != "ek_changed" || c["pending_ek_fingerprint"] != fp3 || c["enrollment"] != "enrolled" {
		t.Errorf("host c = %v", c)
	}
	tests := []struct {
		name, method, path, token, body string
		want                            int
		msg                             string
	}{
		{"member rejects", "POST", "/v1/hosts/c/reject", f.member, "", http.StatusForbidden, "trustpool:hosts:reject"},
		{"reader rejects", "POST", "/v1/hosts/c/reject", f.reader, "", http.StatusForbidden, "trustpool:hosts:reject"},
		{"reader approves", "POST", "/v1/hosts/b/approve", f.reader, "", http.StatusForbidden, "trustpool:hosts:approve"},
		{"bad fingerprint", "POST", "/v1/hosts/c/reject", f.admin, `{"ek_fingerprint": "zz"}`, http.StatusBadRequest, "64 hexadecimal"},
		{"force on reject", "POST", "/v1/hosts/c/reject", f.admin, `{"force": true}`, http.StatusBadRequest, "force"},
		{"unknown field", "POST", "/v1/hosts/c/approve", f.admin, `{"fingerprint": "x"}`, http.StatusBadRequest, `unknown field \"fingerprint\"`},
		{"reject another EK", "POST", "/v1/hosts/c/reject", f.admin, `{"ek_fingerprint": "` + fp1 + `"}`, http.StatusConflict, fp3},
		{"reject", "POST", "/v1/hosts/c/reject", f.admin, `{"ek_fingerprint": "` + strings.ToUpper(fp3) + `"}`, http.StatusOK, fp3},
		{"reject again", "POST", "/v1/hosts/c/reject", f.admin, "", http.StatusConflict, "no EK awaits approval"},
		{"reject on a missing host", "POST", "/v1/hosts/nope/reject", f.admin, "", http.StatusNotFound, "nope"},
		{"approve without force", "POST", "/v1/hosts/b/approve", f.admin, "", http.StatusConflict, "bound to host a"},
		{"approve without force: the reason for clients", "POST", "/v1/hosts/b/approve", f.admin, "", http.StatusConflict, `"reason":"ek_bound_to_other_host"`},
		{"approve with force", "POST", "/v1/hosts/b/approve", f.admin, `{"force": true, "ek_fingerprint": "` + fp1 + `"}`, http.StatusOK, `"moved_from":"a"`},
		{"approve again", "POST", "/v1/hosts/b/approve", f.admin, "", http.StatusConflict, "no EK awaits approval"},
	}
	for _, tc := range tests {
		code, body, _ := f.do(t, tc.method, tc.path, tc.token, tc.body)
		b, _ := json.Marshal(body)
		if code != tc.want || !strings.Contains(string(b), tc.msg) {
			t.Errorf("%s: %s %s = %d %s, want %d containing %q", tc.name, tc.method, tc.path, code, b, tc.want, tc.msg)
		}
		if e, _ := body["error"].(map[string]any); code >= 400 {
			reason := ""
			if strings.HasPrefix(tc.name, "approve without force") {
				reason = attestapi.ReasonEKBoundToOtherHost
			}
			checkForceRequired(t, tc.name, e, reason)
		}
	}
	if c := host("c"); c["pending_ek_fingerprint"] != nil || c["rejected_ek_fingerprint"] != fp3 || c["ek_fingerprint"] != store.EKFingerprint(ek2) {
		t.Errorf("host c after reject = %v", c)
	}
	if a, b := host("a"), host("b"); a["ek_fingerprint"] != nil || a["enrollment"] != "registered" || b["ek_fingerprint"] != fp1 {
		t.Errorf("after the move: a = %v, b = %v", a, b)
	}
	recs, err := f.st.Audit(ctx, 100)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, r := range recs {
		got[r.Action+":"+r.Target+":"+r.Outcome] = r.Detail
	}
	for k, detail := range map[string]string{
		"host.reject_ek:c:success": "rejected EK " + fp3, "host.reject_ek:c:denied": "", "host.approve_ek:b:denied": "",
		"host.approve_ek:b:success": "approved EK " + fp1 + " moved from host a", "host.approve_ek:b:failure": "",
	} {
		if d, ok := got[k]; !ok || !strings.Contains(d, detail) {
			t.Errorf("audit %s = %q (present %v), want detail containing %q", k, d, ok, detail)
		}
	}
}

// learnable stores host with the state of a verified round: the PCRs and
// boot facts of bootseed's build-a, as the engine keeps them for learning.
func (f *fixture) learnable(t *testing.T, host string) {
	t.Helper()
	raw, _, err := bootseed.BuildLog(bootseed.BuildA(), []eventlog.Alg{eventlog.SHA256})
	if err != nil {
		t.Fatal(err)
	}
	l, err := eventlog.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	rep, err := l.Replay(eventlog.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	boot, err := eventlog.ExtractBootFacts(l, eventlog.SHA256, nil)
	if err != nil {
		t.Fatal(err)
	}
	pcrs := map[int][]byte{}
	for i := range 10 {
		pcrs[i] = make([]byte, 32)
		if d, ok := rep[uint32(i)]; ok { //nolint:gosec // 0-9
			pcrs[i] = d
		}
	}
	state, err := json.Marshal(map[string]any{
		"previous": evidence.Previous{PCRs: pcrs, Boot: boot},
		"last":     engine.Summary{At: time.Now(), Status: verdict.Untrusted, Reachable: true, Verified: true},
	})
	if err != nil {
		t.Fatal(err)
	}
	h := store.Host{Name: host, EKPublic: []byte("ek-" + host), AKPublic: []byte("ak"), Activated: true}
	if err := f.st.PutHost(t.Context(), &h); err != nil {
		t.Fatal(err)
	}
	if err := f.st.SaveState(t.Context(), host, state); err != nil {
		t.Fatal(err)
	}
}

// TestLearnFacts: "facts": [] learns no boot facts (a profile of PCRs
// alone); facts absent or null take the default ones, and "pcrs": [] takes
// only the PCRs the facts are read from.
func TestLearnFacts(t *testing.T) {
	f := newFixture(t)
	f.learnable(t, "compute-1")
	defaults := []string{"bootloader", "initrd", "kernel", "kernel_cmdline", "secure_boot"}
	tests := []struct {
		name, body string
		facts      []string
		pcrs       []string
	}{
		{"no facts", `{"facts": []}`, nil, []string{"0", "1", "2", "3", "4", "5", "6", "7"}},
		{"default facts", `{}`, defaults, []string{"0", "1", "2", "3", "4", "5", "6", "7", "8", "9"}},
		{"null facts", `{"facts": null}`, defaults, []string{"0", "1", "2", "3", "4", "5", "6", "7", "8", "9"}},
		{"one fact", `{"facts": ["secure_boot"]}`, []string{"secure_boot"}, []string{"0", "1", "2", "3", "4", "5", "6", "7"}},
		{"no PCRs but the facts'", `{"pcrs": [], "facts": ["kernel"]}`, []string{"kernel"}, []string{"8", "9"}},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			name := fmt.Sprintf("p%d", i)
			body := strings.Replace(tc.body, "{", `{"host": "compute-1", "name": "`+name+`", `, 1)
			body = strings.Replace(body, ", }", "}", 1)
			code, got, _ := f.do(t, "POST", "/v1/profiles/learn", f.admin, body)
			if code != http.StatusCreated {
				t.Fatalf("learn %s = %d %v", body, code, got)
			}
			p := got["profile"].(map[string]any)
			facts, _ := p["facts"].(map[string]any)
			pcrs, _ := p["pcrs"].(map[string]any)
			if diff := cmp.Diff(tc.facts, sortedKeys(facts)); diff != "" {
				t.Errorf("learn %s: facts (-want +got):\n%s", body, diff)
			}
			if diff := cmp.Diff(tc.pcrs, sortedKeys(pcrs)); diff != "" {
				t.Errorf("learn %s: pcrs (-want +got):\n%s", body, diff)
			}
		})
	}
}

func sortedKeys(m map[string]any) []string {
	if len(m) == 0 {
		return nil
	}
	return slices.Sorted(maps.Keys(m))
}

// TestLearnFromEventLog: POST /v1/profiles/learn with event_log computes
// the same reference values as learning from a host that booted that log
// (learnable stores build-a's verified values), audited with the log's
// digest; requests that mix or lack sources, ask for PCRs a firmware log
// does not record, or send a log that fails the verifier's checks are 400s
// naming what was wrong.
func TestLearnFromEventLog(t *testing.T) {
	f := newFixture(t)
	f.learnable(t, "compute-1")
	raw, _, err := bootseed.BuildLog(bootseed.BuildA(), []eventlog.Alg{eventlog.SHA1, eventlog.SHA256})
	if err != nil {
		t.Fatal(err)
	}
	b64 := base64.StdEncoding.EncodeToString(raw)
	code, fromHost, _ := f.do(t, "POST", "/v1/profiles/learn", f.admin, `{"host": "compute-1", "name": "from-host"}`)
	if code != http.StatusCreated {
		t.Fatalf("learn from host = %d %v", code, fromHost)
	}
	code, fromLog, _ := f.do(t, "POST", "/v1/profiles/learn", f.admin, `{"event_log": "`+b64+`", "name": "from-log"}`)
	if code != http.StatusCreated {
		t.Fatalf("learn from event log = %d %v", code, fromLog)
	}
	hp, lp := fromHost["profile"].(map[string]any), fromLog["profile"].(map[string]any)
	for _, k := range []string{"pcrs", "facts"} {
		if diff := cmp.Diff(hp[k], lp[k]); diff != "" || lp[k] == nil {
			t.Errorf("%s learned from the host vs from its event log (-host +log):\n%s", k, diff)
		}
	}
	if diff := cmp.Diff(fromHost["fact_pcrs"], fromLog["fact_pcrs"]); diff != "" {
		t.Errorf("fact_pcrs (-host +log):\n%s", diff)
	}
	d := sha256.Sum256(raw)
	if want := "learned from event log sha256:" + hex.EncodeToString(d[:8]); lp["description"] != want {
		t.Errorf("description %q, want %q", lp["description"], want)
	}
	recs, err := f.st.Audit(t.Context(), 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) == 0 || recs[0].Action != "profile.learn" || recs[0].Target != "from-log" || !strings.Contains(recs[0].Detail, hex.EncodeToString(d[:8])) {
		t.Errorf("newest audit record %+v, want profile.learn of from-log naming the log's digest", recs[0])
	}

	retyped := bootseed.Events(bootseed.BuildA())
	for i := range retyped {
		if retyped[i].Type == eventlog.EvEFIBootServicesApp {
			retyped[i].Type = eventlog.EvEFIBootServicesDriver
			break
		}
	}
	bad, _, err := bootseed.EncodeLog(retyped, []eventlog.Alg{eventlog.SHA256})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ name, body, want string }{
		{"host and log", `{"host": "compute-1", "event_log": "` + b64 + `", "name": "x"}`, "host and event_log exclude each other"},
		{"neither", `{"name": "x"}`, "host or event_log is required"},
		{"no name", `{"event_log": "` + b64 + `"}`, "name is required"},
		{"PCR 10", `{"event_log": "` + b64 + `", "name": "x", "pcrs": [0, 10]}`, "PCR 10 is not recorded in a firmware event log"},
		{"IMA from a log", `{"event_log": "` + b64 + `", "name": "x", "ima": true}`, "ima needs host"},
		{"exclusions without IMA", `{"host": "compute-1", "name": "x", "ima_exclude": ["/tmp/"]}`, "ima_exclude needs ima"},
		// jsondecode reports base64 errors without the field (as for every
		// base64 field of the API).
		{"not base64", `{"event_log": "not base64!", "name": "x"}`, "illegal base64 data"},
		{"truncated log", `{"event_log": "` + base64.StdEncoding.EncodeToString(raw[:len(raw)-9]) + `", "name": "x"}`, "event_log: not a usable firmware event log: reference values from event log: event log malformed"},
		{"retyped event", `{"event_log": "` + base64.StdEncoding.EncodeToString(bad) + `", "name": "x"}`, "event types or data inconsistent with digests"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, got, _ := f.do(t, "POST", "/v1/profiles/learn", f.admin, tc.body)
			msg, _ := got["error"].(map[string]any)["message"].(string)
			if code != http.StatusBadRequest || !strings.Contains(msg, tc.want) {
				t.Errorf("learn %s = %d %q, want 400 containing %q", tc.name, code, msg, tc.want)
			}
		})
	}
	// IMA needs a new verified quote with the IMA log; this fixture's
	// agents never answer.
	if code, got, _ := f.do(t, "POST", "/v1/profiles/learn", f.admin, `{"host": "compute-1", "name": "x", "ima": true}`); code != http.StatusConflict {
		t.Errorf("learn with IMA from a host that does not answer = %d %v, want 409", code, got)
	}
	if _, err := f.st.GetProfile(t.Context(), "x"); err == nil {
		t.Error("a refused learn stored a profile")
	}
}
