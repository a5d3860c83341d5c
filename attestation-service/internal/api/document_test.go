package api_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/trustpool/trustpool/attestation-service/internal/api"
	"github.com/trustpool/trustpool/attestation-service/internal/store"
	"github.com/trustpool/trustpool/internal/attestapi"
	"github.com/trustpool/trustpool/internal/attestapi/attestapitest"
	"github.com/trustpool/trustpool/internal/verdict"
)

// TestRoutesMatchDocument holds the router and docs/api/openapi.yaml to
// each other: every route the handler registers is a documented operation
// and every documented operation is a route; and each documented operation,
// sent to the real handler, reaches a handler (no 405, no "no such
// resource").
func TestRoutesMatchDocument(t *testing.T) {
	doc := attestapitest.Load(t)
	var documented []string
	for _, op := range attestapitest.Operations(doc) {
		documented = append(documented, op.String())
	}
	routes := api.Routes()
	slices.Sort(routes)
	slices.Sort(documented)
	if diff := cmp.Diff(documented, routes); diff != "" {
		t.Errorf("router and document disagree (-document +router):\n%s", diff)
	}

	f := newFixture(t)
	for _, op := range attestapitest.Operations(doc) {
		path := strings.NewReplacer("{host}", "no-such-host", "{name}", "no-such-profile").Replace(op.Path)
		code, body, hdr := f.do(t, op.Method, path, f.admin, "")
		e, _ := body["error"].(map[string]any)
		if code == http.StatusMethodNotAllowed || (code == http.StatusNotFound && e["message"] == "no such resource") {
			t.Errorf("%s (as %s %s) = %d %v (Allow %q): the router has no such route", op, op.Method, path, code, body, hdr.Get("Allow"))
		}
	}
}

// TestVersionDiscovery: GET / is the OpenStack version document, open to
// all, linking to the v1 API at the address the client used; only the root
// is the document.
func TestVersionDiscovery(t *testing.T) {
	f := newFixture(t)
	code, body, _ := f.do(t, "GET", "/", "", "")
	if code != http.StatusOK {
		t.Fatalf("GET / = %d %v", code, body)
	}
	vs, _ := body["versions"].([]any)
	if len(vs) != 1 {
		t.Fatalf("versions %v", body)
	}
	v := vs[0].(map[string]any)
	links, _ := v["links"].([]any)
	if v["id"] != "v1" || v["status"] != "CURRENT" || len(links) != 1 ||
		links[0].(map[string]any)["href"] != f.srv.URL+"/v1/" {
		t.Errorf("version %v, want v1 CURRENT with a self link to %s/v1/", v, f.srv.URL)
	}
	if code, body, _ := f.do(t, "GET", "/?x=1", "", ""); code != http.StatusBadRequest {
		t.Errorf("GET /?x=1 = %d %v, want 400", code, body)
	}
	if code, _, hdr := f.do(t, "POST", "/", "", ""); code != http.StatusMethodNotAllowed || hdr.Get("Allow") != "GET, HEAD" {
		t.Errorf("POST / = %d, Allow %q; want 405, GET, HEAD", code, hdr.Get("Allow"))
	}
	if code, _, _ := f.do(t, "GET", "/v2", "", ""); code != http.StatusUnauthorized {
		t.Errorf("GET /v2 without a token = %d, want 401 (only the root is open)", code)
	}
}

// TestVersionLinksFromPublicEndpoint: with [api] public_endpoint set, the
// version document links to it whatever Host header the client sent (a
// client's Host header must not put another site into links other clients
// follow); unset, the links follow the Host header as before.
func TestVersionLinksFromPublicEndpoint(t *testing.T) {
	tests := []struct {
		name, endpoint, host, want string
	}{
		{"configured, forged host", "https://cloud.example.org/attestation", "evil.example", "https://cloud.example.org/attestation/v1/"},
		{"configured with a trailing slash", "https://cloud.example.org/attestation/", "evil.example", "https://cloud.example.org/attestation/v1/"},
		{"configured, no path", "http://192.0.2.1:9780", "192.0.2.1:9780", "http://192.0.2.1:9780/v1/"},
		{"unset: the Host header", "", "api.example:9780", "http://api.example:9780/v1/"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := api.New(api.Config{PublicEndpoint: tc.endpoint})
			req := httptest.NewRequest("GET", "/", nil)
			req.Host = tc.host
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			var vs attestapi.Versions
			if err := json.Unmarshal(rec.Body.Bytes(), &vs); err != nil || rec.Code != http.StatusOK {
				t.Fatalf("GET / = %d %s (%v)", rec.Code, rec.Body, err)
			}
			if len(vs.Versions) != 1 || len(vs.Versions[0].Links) != 1 || vs.Versions[0].Links[0].Href != tc.want {
				t.Errorf("links %+v, want one self link to %s", vs.Versions, tc.want)
			}
		})
	}
}

// TestResponsesMatchDocument sends every operation through a validating
// proxy to the real handler, answers that succeed and answers that fail
// (401, 403, 404, 405, 409, 400): each answer must match the document's
// status codes, headers and schemas, each well-formed request its request
// schemas, and every documented operation must have been exercised.
func TestResponsesMatchDocument(t *testing.T) {
	f := newFixture(t)
	v := attestapitest.NewValidator(t)
	p := attestapitest.NewProxy(t, v, f.srv.URL)
	ctx := t.Context()
	for _, h := range []store.Host{
		{Name: "compute-1", EKPublic: []byte("ek-1"), AKPublic: []byte("ak"), Activated: true},
		{Name: "compute-2", PendingEKPublic: []byte("ek-1"), PendingSince: time.Now()},
		{Name: "compute-3", EKPublic: []byte("ek-3"), AKPublic: []byte("ak"), Activated: true, PendingEKPublic: []byte("ek-4"), PendingSince: time.Now()},
	} {
		if err := f.st.PutHost(ctx, &h); err != nil {
			t.Fatal(err)
		}
	}
	f.setVerdict(t, "compute-1", verdict.Untrusted)
	hist := &store.HistoryEntry{At: time.Now(), Status: "untrusted", Reasons: nil, Profiles: nil, Seq: 1}
	if err := f.st.SaveVerdict(ctx, "compute-3", nil, nil, hist); err != nil {
		t.Fatal(err)
	}
	fp4 := store.EKFingerprint([]byte("ek-4"))
	toml := "[[profile]]\nname = \"imported\"\n[profile.facts]\nsecure_boot = [\"enabled\"]\n"
	ima := `{"name": "with-ima", "ima": {"allow_violations": false, "exclude": ["/tmp/"], "allowlist": {"/usr/bin/bash": ["sha256:ab"]}}}`

	_, created, _ := f.do(t, "POST", "/v1/launches", f.member, f.sealedBody(t, "demo-id", time.Now().Add(time.Hour), ""))
	launchID := created["launch"].(map[string]any)["id"].(string)
	sealed := f.sealedBody(t, "demo-id", time.Now().Add(time.Hour), "")
	delivered := f.deliveredLaunch(t)

	type call struct {
		method, path, token, ctype, body string
		want                             int
		badRequest                       bool // the request itself is meant to be invalid
	}
	calls := []call{
		{"GET", "/", "", "", "", 200, false},
		{"GET", "/healthz", "", "", "", 200, false},
		{"GET", "/metrics", "", "", "", 200, false},
		{"GET", "/v1/keys", "", "", "", 200, false},
		{"GET", "/v1/hosts", "", "", "", 401, false},
		{"GET", "/v1/hosts", f.member, "", "", 403, false},
		{"GET", "/v1/hosts", f.admin, "", "", 200, false},
		{"GET", "/v1/hosts/compute-1", f.admin, "", "", 200, false},
		{"GET", "/v1/hosts/compute-2", f.admin, "", "", 200, false},
		{"GET", "/v1/hosts/nope", f.admin, "", "", 404, false},
		{"GET", "/v1/hosts/compute-3/history", f.admin, "", "", 200, false},
		{"GET", "/v1/hosts/compute-3/history?limit=5", f.admin, "", "", 200, false},
		{"GET", "/v1/hosts/compute-3/history?limit=abc", f.admin, "", "", 400, true},
		{"GET", "/v1/hosts/nope/history", f.admin, "", "", 404, false},
		{"POST", "/v1/hosts/compute-1/attest", f.admin, "", "", 202, false},
		{"POST", "/v1/hosts/compute-2/attest", f.admin, "", "", 409, false},
		{"POST", "/v1/hosts/compute-2/approve", f.admin, "application/json", "{}", 409, false},
		{"POST", "/v1/hosts/compute-2/approve", f.admin, "application/json", `{"force": true}`, 200, false},
		{"POST", "/v1/hosts/compute-3/reject", f.admin, "application/json", `{"ek_fingerprint": "` + fp4 + `"}`, 200, false},
		{"POST", "/v1/hosts/compute-3/reject", f.admin, "application/json", `{"force": true}`, 400, false},
		{"PUT", "/v1/hosts/compute-3/profiles", f.admin, "application/json", `{"profiles": []}`, 200, false},
		{"PUT", "/v1/hosts/compute-3/profiles", f.admin, "application/json", `{"profiles": null}`, 200, false},
		{"PUT", "/v1/hosts/compute-3/profiles", f.admin, "application/json", `{}`, 400, true},
		{"POST", "/v1/profiles", f.admin, "application/json", profileJSON, 201, false},
		{"POST", "/v1/profiles", f.admin, "application/json", ima, 201, false},
		{"POST", "/v1/profiles", f.admin, "application/json", profileJSON, 409, false},
		{"POST", "/v1/profiles", f.admin, "application/json", `{"name": "x", "bogus": 1}`, 400, true},
		{"PUT", "/v1/hosts/compute-3/profiles", f.admin, "application/json", `{"profiles": ["golden"]}`, 200, false},
		{"GET", "/v1/profiles", f.admin, "", "", 200, false},
		{"GET", "/v1/profiles/golden", f.admin, "", "", 200, false},
		{"GET", "/v1/profiles/nope", f.admin, "", "", 404, false},
		{"PUT", "/v1/profiles/golden", f.admin, "application/json", `{"description": "d", "facts": {"secure_boot": ["enabled"]}}`, 200, false},
		// The same document again: unchanged, no version stored (the update above made version 2).
		{"PUT", "/v1/profiles/golden", f.admin, "application/json", `{"description": "d", "facts": {"secure_boot": ["enabled"]}}`, 200, false},
		{"PUT", "/v1/profiles/nope", f.admin, "application/json", `{"facts": {"secure_boot": ["enabled"]}}`, 404, false},
		{"GET", "/v1/profiles/export", f.admin, "", "", 200, false},
		{"GET", "/v1/profiles/golden/versions", f.admin, "", "", 200, false},
		{"GET", "/v1/profiles/nope/versions", f.admin, "", "", 404, false},
		{"POST", "/v1/profiles/golden/versions", f.admin, "application/json", `{"facts": {"secure_boot": ["disabled"]}}`, 201, false},
		{"POST", "/v1/profiles/golden/versions", f.admin, "application/json", `{"bogus": 1}`, 400, true},
		{"GET", "/v1/profiles/golden/versions/3", f.admin, "", "", 200, false},
		{"GET", "/v1/profiles/golden/versions/9", f.admin, "", "", 404, false},
		{"POST", "/v1/profiles/golden/versions/3/state", f.admin, "application/json", `{"state": "canary", "hosts": ["compute-3"]}`, 200, false},
		{"POST", "/v1/profiles/golden/versions/3/state", f.admin, "application/json", `{"state": "canary", "hosts": ["compute-3"], "fraction": 0.5}`, 200, false},
		{"GET", "/v1/profiles/golden/versions/3", f.admin, "", "", 200, false},
		{"GET", "/v1/profiles/golden/versions", f.admin, "", "", 200, false},
		{"POST", "/v1/profiles/golden/versions/3/state", f.admin, "application/json", `{"state": "canary", "fraction": 2}`, 400, true},
		{"POST", "/v1/profiles/golden/versions/3/state", f.admin, "application/json", `{"state": "retired", "fraction": 0.5}`, 400, false},
		{"POST", "/v1/profiles/golden/versions/3/state", f.admin, "application/json", `{"state": "approved", "from": "candidate"}`, 409, false},
		{"POST", "/v1/profiles/golden/versions/3/state", f.admin, "application/json", `{"state": "canary"}`, 400, false},
		{"POST", "/v1/profiles/golden/versions/2/state", f.admin, "application/json", `{"state": "retired"}`, 409, false},
		{"POST", "/v1/profiles/import", f.admin, attestapi.MediaTOML, toml, 200, false},
		{"POST", "/v1/profiles", f.admin, "application/json", `{"name": "with_ima", "facts": {"secure_boot": ["enabled"]}}`, 409, false},
		{"POST", "/v1/profiles/import", f.admin, attestapi.MediaTOML, strings.ReplaceAll(toml, "imported", "with_ima"), 409, false},
		{"POST", "/v1/profiles/learn", f.admin, "application/json", `{"host": "compute-1", "name": "learned"}`, 409, false},
		{"POST", "/v1/profiles/learn", f.admin, "application/json", `{"host": "nope", "name": "learned"}`, 404, false},
		{"DELETE", "/v1/profiles/golden", f.admin, "", "", 409, false},
		{"DELETE", "/v1/profiles/golden?force=true", f.admin, "", "", 204, false},
		{"DELETE", "/v1/profiles/nope", f.admin, "", "", 404, false},
		{"DELETE", "/v1/hosts/compute-1", f.admin, "", "", 204, false},
		{"GET", "/v1/audit", f.admin, "", "", 200, false},
		{"GET", "/v1/audit?limit=2", f.admin, "", "", 200, false},
		{"POST", "/v1/launches", f.member, "application/json", sealed, 201, false},
		{"POST", "/v1/launches", f.member, "application/json", sealed, 409, false},
		{"POST", "/v1/launches", f.member, "application/json", f.sealedBody(t, "rival-id", time.Now().Add(time.Hour), ""), 400, false},
		{"POST", "/v1/launches", f.member, "application/json", `{"kid": "k"}`, 400, true},
		{"POST", "/v1/launches", f.reader, "application/json", sealed, 403, false},
		{"GET", "/v1/launches", f.member, "", "", 200, false},
		{"GET", "/v1/launches?all_projects=true&limit=5", f.admin, "", "", 200, false},
		{"GET", "/v1/launches/" + launchID, f.member, "", "", 200, false},
		{"GET", "/v1/launches/" + launchID, f.otherMember(t), "", "", 404, false},
		{"POST", "/v1/launches/" + launchID + "/redeliver", f.member, "", "", 409, false},  // pending: never delivered
		{"POST", "/v1/launches/" + delivered + "/redeliver", f.member, "", "", 200, false}, // refused: compute-1 has no agent
		{"POST", "/v1/launches/" + delivered + "/redeliver", f.member, "", "", 429, false}, // again, within the interval
		{"POST", "/v1/launches/" + launchID + "/redeliver", f.reader, "", "", 403, false},
		{"POST", "/v1/launches/" + launchID + "/redeliver", f.otherMember(t), "", "", 404, false},
		{"DELETE", "/v1/launches/" + launchID, f.reader, "", "", 403, false},
		{"DELETE", "/v1/launches/" + launchID, f.member, "", "", 204, false},
		{"PATCH", "/v1/hosts/compute-2", f.admin, "", "", 405, true},
		{"GET", "/v1/nothing", f.admin, "", "", 404, true},
	}
	for _, c := range calls {
		req, _ := http.NewRequest(c.method, p.URL+c.path, strings.NewReader(c.body))
		if c.token != "" {
			req.Header.Set(attestapi.HeaderAuthToken, c.token)
		}
		if c.ctype != "" {
			req.Header.Set("Content-Type", c.ctype)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != c.want {
			t.Errorf("%s %s = %d %s, want %d", c.method, c.path, resp.StatusCode, b, c.want)
		}
	}
	exs := p.Exchanges()
	if len(exs) != len(calls) {
		t.Fatalf("proxy saw %d exchanges, want %d", len(exs), len(calls))
	}
	for i, ex := range exs {
		if ex.ResponseErr != nil {
			t.Errorf("answer not as documented: %v", ex.ResponseErr)
		}
		if ex.RequestErr != nil && !calls[i].badRequest {
			t.Errorf("request not as documented: %s %s: %v", ex.Method, ex.Path, ex.RequestErr)
		}
		if ex.RequestErr == nil && calls[i].badRequest {
			t.Errorf("%s %s: the document allows this bad request", ex.Method, ex.Path)
		}
	}
	if un := p.Uncovered(); len(un) > 0 {
		t.Errorf("documented operations not exercised: %v", un)
	}
}
