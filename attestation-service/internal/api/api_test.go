package api_test

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/trustpool/trustpool/attestation-service/internal/api"
	"github.com/trustpool/trustpool/attestation-service/internal/engine"
	"github.com/trustpool/trustpool/attestation-service/internal/metrics"
	"github.com/trustpool/trustpool/attestation-service/internal/store"
	"github.com/trustpool/trustpool/internal/attestrpc"
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
	admin, member string
	reader        string
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	ks := keystonetest.New(t)
	ks.AddUser(keystonetest.User{Name: "trustpool", Password: "pw", ProjectName: "service", ProjectID: "service-id", Roles: []string{"service", "admin"}})
	ks.AddUser(keystonetest.User{Name: "boss", Password: "pw", ProjectName: "admin", ProjectID: "admin-id", Roles: []string{"admin"}})
	ks.AddUser(keystonetest.User{Name: "bob", Password: "pw", ProjectName: "demo", ProjectID: "demo-id", Roles: []string{"member"}})
	ks.AddUser(keystonetest.User{Name: "rita", Password: "pw", ProjectName: "demo", ProjectID: "demo-id", Roles: []string{"reader"}})
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
	enf, err := kpolicy.New(kpolicy.Config{Options: kpolicy.DefaultOptions(), Defaults: api.Rules(), BaseDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	pem, _ := verdict.MarshalPublicKeyPEM(signer.Public())
	h := api.New(api.Config{Engine: eng, Store: st, Policy: enf, Auth: setup.Middleware.Wrap, Metrics: reg,
		PublicKeyPEM: pem, KID: signer.KID(), Trigger: func(string) {}})
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return &fixture{srv: srv, st: st, admin: ks.Issue("boss"), member: ks.Issue("bob"), reader: ks.Issue("rita")}
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

func TestPolicyAndAudit(t *testing.T) {
	f := newFixture(t)
	tests := []struct {
		name, method, path, token, body string
		want                            int
	}{
		{"anonymous", "GET", "/v1/hosts", "", "", http.StatusUnauthorized},
		{"reader lists hosts", "GET", "/v1/hosts", f.reader, "", http.StatusOK},
		{"member lists hosts (no reader role)", "GET", "/v1/hosts", f.member, "", http.StatusForbidden},
		{"member creates profile", "POST", "/v1/profiles", f.member, profileJSON, http.StatusForbidden},
		{"reader creates profile", "POST", "/v1/profiles", f.reader, profileJSON, http.StatusForbidden},
		{"admin creates profile", "POST", "/v1/profiles", f.admin, profileJSON, http.StatusCreated},
		{"admin creates it again", "POST", "/v1/profiles", f.admin, profileJSON, http.StatusConflict},
		{"reader reads profile", "GET", "/v1/profiles/golden", f.reader, "", http.StatusOK},
		{"admin sends an invalid profile", "POST", "/v1/profiles", f.admin, `{"name": "empty"}`, http.StatusBadRequest},
		{"admin sends unknown fields", "POST", "/v1/profiles", f.admin, `{"name": "x", "bogus": 1}`, http.StatusBadRequest},
		{"admin deletes a missing host", "DELETE", "/v1/hosts/nope", f.admin, "", http.StatusNotFound},
		{"admin approves a missing host", "POST", "/v1/hosts/nope/approve", f.admin, "", http.StatusNotFound},
		{"admin learns from a missing host", "POST", "/v1/profiles/learn", f.admin, `{"host": "nope", "name": "l"}`, http.StatusNotFound},
		{"admin exports", "GET", "/v1/profiles/export", f.admin, "", http.StatusOK},
		{"admin deletes profile", "DELETE", "/v1/profiles/golden", f.admin, "", http.StatusNoContent},
		{"keys are public", "GET", "/v1/keys", "", "", http.StatusOK},
		{"healthz", "GET", "/healthz", "", "", http.StatusOK},
		{"metrics", "GET", "/metrics", "", "", http.StatusOK},
		{"unknown route", "GET", "/v1/nothing", f.admin, "", http.StatusNotFound},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, body, hdr := f.do(t, tc.method, tc.path, tc.token, tc.body)
			if code != tc.want {
				t.Fatalf("%s %s = %d %v, want %d", tc.method, tc.path, code, body, tc.want)
			}
			if code >= 400 && code != http.StatusUnauthorized {
				e, ok := body["error"].(map[string]any)
				if !ok || e["request_id"] != hdr.Get("X-Openstack-Request-Id") || !strings.HasPrefix(hdr.Get("X-Openstack-Request-Id"), "req-") {
					t.Errorf("error body %v / header %q: want the envelope with the request id", body, hdr.Get("X-Openstack-Request-Id"))
				}
			}
		})
	}
	recs, err := f.st.Audit(t.Context(), 100)
	if err != nil {
		t.Fatal(err)
	}
	outcomes := map[string]int{}
	for _, r := range recs {
		outcomes[r.Action+":"+r.Outcome]++
	}
	for _, want := range []string{"profile.create:denied", "profile.create:success", "profile.create:failure", "profile.delete:success", "host.delete:failure"} {
		if outcomes[want] == 0 {
			t.Errorf("no audit record %s in %v", want, outcomes)
		}
	}
	if outcomes["profile.create:denied"] != 2 {
		t.Errorf("denied profile.create audited %d times, want 2", outcomes["profile.create:denied"])
	}
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
	code, body, _ := f.do(t, "GET", "/v1/profiles/export", f.reader, "")
	if code != http.StatusOK {
		t.Fatalf("export = %d", code)
	}
	exported := body["raw"].(string)
	if !strings.Contains(exported, `name = "a"`) || !strings.Contains(exported, `name = "b"`) || !strings.Contains(exported, strings.Repeat("ab", 32)) {
		t.Errorf("export lacks the imported profiles:\n%s", exported)
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
