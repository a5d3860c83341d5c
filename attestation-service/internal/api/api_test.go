package api_test

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
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
		{"unknown field", "POST", "/v1/hosts/c/approve", f.admin, `{"fingerprint": "x"}`, http.StatusBadRequest, "malformed"},
		{"reject another EK", "POST", "/v1/hosts/c/reject", f.admin, `{"ek_fingerprint": "` + fp1 + `"}`, http.StatusConflict, fp3},
		{"reject", "POST", "/v1/hosts/c/reject", f.admin, `{"ek_fingerprint": "` + strings.ToUpper(fp3) + `"}`, http.StatusOK, fp3},
		{"reject again", "POST", "/v1/hosts/c/reject", f.admin, "", http.StatusConflict, "no EK awaits approval"},
		{"reject on a missing host", "POST", "/v1/hosts/nope/reject", f.admin, "", http.StatusNotFound, "nope"},
		{"approve without force", "POST", "/v1/hosts/b/approve", f.admin, "", http.StatusConflict, "bound to host a"},
		{"approve with force", "POST", "/v1/hosts/b/approve", f.admin, `{"force": true, "ek_fingerprint": "` + fp1 + `"}`, http.StatusOK, `"moved_from":"a"`},
		{"approve again", "POST", "/v1/hosts/b/approve", f.admin, "", http.StatusConflict, "no EK awaits approval"},
	}
	for _, tc := range tests {
		code, body, _ := f.do(t, tc.method, tc.path, tc.token, tc.body)
		b, _ := json.Marshal(body)
		if code != tc.want || !strings.Contains(string(b), tc.msg) {
			t.Errorf("%s: %s %s = %d %s, want %d containing %q", tc.name, tc.method, tc.path, code, b, tc.want, tc.msg)
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
