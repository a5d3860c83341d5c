package api_test

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/trustpool/trustpool/attestation-service/internal/store"
	"github.com/trustpool/trustpool/internal/attestapi"
	"github.com/trustpool/trustpool/internal/bootseed"
	"github.com/trustpool/trustpool/internal/eventlog"
	"github.com/trustpool/trustpool/internal/verdict"
)

// TestProfileVersionsAPI: adding a version from a document, its life
// cycle through the state route, every refused change with its status and
// named reason, the audit of each change, and the flat profile route
// reading the latest approved version.
func TestProfileVersionsAPI(t *testing.T) {
	f := newFixture(t)
	ctx := t.Context()
	if err := f.st.PutHost(ctx, &store.Host{Name: "compute-1"}); err != nil {
		t.Fatal(err)
	}
	if err := f.st.PutProfile(ctx, storedProfile(t, "golden"), store.Create); err != nil {
		t.Fatal(err)
	}
	pcr := func(v string) string {
		return `{"pcrs": {"0": ["` + strings.Repeat(v, 64) + `"]}}`
	}
	code, body, _ := f.do(t, "POST", "/v1/profiles/golden/versions", f.admin, pcr("1"))
	if code != http.StatusCreated || body["version"] != 2.0 || body["state"] != attestapi.VersionCandidate || body["profile_name"] != "golden" {
		t.Fatalf("create version = %d %v", code, body)
	}
	for _, tc := range []struct {
		name, method, path, body string
		code                     int
		reason                   string
	}{
		{"version of a missing profile", "POST", "/v1/profiles/nope/versions", pcr("1"), http.StatusNotFound, ""},
		{"document of another profile", "POST", "/v1/profiles/golden/versions", `{"name": "other", "facts": {"secure_boot": ["enabled"]}}`, http.StatusBadRequest, ""},
		{"empty document", "POST", "/v1/profiles/golden/versions", `{}`, http.StatusBadRequest, ""},
		{"bad version number", "GET", "/v1/profiles/golden/versions/02", "", http.StatusBadRequest, ""},
		{"missing version", "GET", "/v1/profiles/golden/versions/9", "", http.StatusNotFound, ""},
		{"no state", "POST", "/v1/profiles/golden/versions/2/state", `{}`, http.StatusBadRequest, ""},
		{"unknown state", "POST", "/v1/profiles/golden/versions/2/state", `{"state": "live"}`, http.StatusBadRequest, attestapi.ReasonUnknownState},
		{"canary without hosts", "POST", "/v1/profiles/golden/versions/2/state", `{"state": "canary"}`, http.StatusBadRequest, attestapi.ReasonCanaryNeedsHosts},
		{"canary on an unknown host", "POST", "/v1/profiles/golden/versions/2/state", `{"state": "canary", "hosts": ["compute-9"]}`, http.StatusBadRequest, attestapi.ReasonUnknownHost},
		{"hosts on approve", "POST", "/v1/profiles/golden/versions/2/state", `{"state": "approved", "hosts": ["compute-1"]}`, http.StatusBadRequest, attestapi.ReasonHostsOnlyForCanary},
		{"stale from", "POST", "/v1/profiles/golden/versions/2/state", `{"state": "approved", "from": "canary"}`, http.StatusConflict, attestapi.ReasonStateChanged},
		{"approved back to candidate", "POST", "/v1/profiles/golden/versions/1/state", `{"state": "candidate"}`, http.StatusConflict, attestapi.ReasonInvalidTransition},
		{"last approved retired", "POST", "/v1/profiles/golden/versions/1/state", `{"state": "retired"}`, http.StatusConflict, attestapi.ReasonLastApprovedVersion},
	} {
		code, body, _ := f.do(t, tc.method, tc.path, f.admin, tc.body)
		e, _ := body["error"].(map[string]any)
		if code != tc.code || fmtReason(e) != tc.reason {
			t.Errorf("%s: %s %s = %d %v, want %d reason %q", tc.name, tc.method, tc.path, code, body, tc.code, tc.reason)
		}
	}
	if code, body, _ := f.do(t, "POST", "/v1/profiles/golden/versions/2/state", f.admin, `{"state": "canary", "hosts": ["compute-1"]}`); code != http.StatusOK ||
		body["state"] != "canary" || !cmp.Equal(body["hosts"], []any{"compute-1"}) {
		t.Fatalf("canary = %d %v", code, body)
	}
	if _, body, _ := f.do(t, "GET", "/v1/profiles/golden", f.admin, ""); strings.Contains(mustJSON(t, body), strings.Repeat("1", 64)) {
		t.Errorf("flat profile shows the canary version: %v", body)
	}
	if code, body, _ := f.do(t, "POST", "/v1/profiles/golden/versions/2/state", f.admin, `{"state": "approved", "from": "canary"}`); code != http.StatusOK || body["state"] != "approved" {
		t.Fatalf("approve = %d %v", code, body)
	}
	if _, body, _ := f.do(t, "GET", "/v1/profiles/golden", f.admin, ""); !strings.Contains(mustJSON(t, body), strings.Repeat("1", 64)) {
		t.Errorf("flat profile after approving version 2: %v, want its values", body)
	}
	if code, body, _ := f.do(t, "POST", "/v1/profiles/golden/versions/1/state", f.admin, `{"state": "retired"}`); code != http.StatusOK {
		t.Fatalf("retire version 1 = %d %v", code, body)
	}
	if code, body, _ := f.do(t, "POST", "/v1/profiles/golden/versions/1/state", f.admin, `{"state": "approved"}`); code != http.StatusConflict ||
		fmtReason(body["error"].(map[string]any)) != attestapi.ReasonInvalidTransition {
		t.Errorf("approve a retired version = %d %v, want 409 invalid_transition", code, body)
	}
	code, body, _ = f.do(t, "GET", "/v1/profiles/golden/versions", f.admin, "")
	var states []string
	for _, v := range body["versions"].([]any) {
		states = append(states, v.(map[string]any)["state"].(string))
	}
	if code != http.StatusOK || !cmp.Equal(states, []string{"retired", "approved"}) {
		t.Errorf("list versions = %d %v", code, body)
	}
	recs, err := f.st.Audit(ctx, 100)
	if err != nil {
		t.Fatal(err)
	}
	outcomes := map[string]int{}
	for _, r := range recs {
		if strings.HasPrefix(r.Action, "profile.version.") {
			outcomes[r.Action+":"+r.Outcome]++
		}
	}
	want := map[string]int{"profile.version.create:success": 1, "profile.version.create:failure": 3,
		"profile.version.set_state:success": 3, "profile.version.set_state:failure": 9}
	if d := cmp.Diff(want, outcomes); d != "" {
		t.Errorf("audit of version changes (-want +got):\n%s", d)
	}
}

func fmtReason(e map[string]any) string {
	r, _ := e["reason"].(string)
	return r
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestLearnNewVersion: learning with new_version stores a candidate
// version of an existing profile (from a host or an event log), leaves the
// flat profile alone, and refuses a missing profile and merge.
func TestLearnNewVersion(t *testing.T) {
	f := newFixture(t)
	f.learnable(t, "compute-1")
	if err := f.st.PutProfile(t.Context(), storedProfile(t, "golden"), store.Create); err != nil {
		t.Fatal(err)
	}
	raw, _, err := bootseed.BuildLog(bootseed.BuildA(), []eventlog.Alg{eventlog.SHA1, eventlog.SHA256})
	if err != nil {
		t.Fatal(err)
	}
	b64 := base64.StdEncoding.EncodeToString(raw)
	for i, body := range []string{`{"host": "compute-1", "name": "golden", "new_version": true}`,
		`{"event_log": "` + b64 + `", "name": "golden", "new_version": true}`} {
		code, got, _ := f.do(t, "POST", "/v1/profiles/learn", f.admin, body)
		if code != http.StatusCreated || got["version"] != float64(i+2) {
			t.Fatalf("learn new version = %d %v, want 201 version %d", code, got, i+2)
		}
		v, err := f.st.GetProfileVersion(t.Context(), "golden", i+2)
		if err != nil || v.State != store.VersionCandidate || !strings.HasPrefix(v.Source, "learned from ") {
			t.Errorf("learned version %d = %+v, %v; want a candidate learned from its source", i+2, v, err)
		}
	}
	if p, _ := f.st.GetProfile(t.Context(), "golden"); p.Body != storedProfile(t, "golden").Body {
		t.Errorf("flat profile changed by learning candidates: %q", p.Body)
	}
	for _, tc := range []struct {
		body string
		code int
	}{
		{`{"host": "compute-1", "name": "nope", "new_version": true}`, http.StatusNotFound},
		{`{"host": "compute-1", "name": "golden", "new_version": true, "merge": true}`, http.StatusBadRequest},
	} {
		if code, got, _ := f.do(t, "POST", "/v1/profiles/learn", f.admin, tc.body); code != tc.code {
			t.Errorf("learn %s = %d %v, want %d", tc.body, code, got, tc.code)
		}
	}
}

// TestVersionStateForce: a state change that would turn a trusted host
// untrusted (it requires the profile, and nothing says it matched another
// version) is refused with 409 naming it unless force=true (marked
// force_required); the forced
// change is audited with the host.
func TestVersionStateForce(t *testing.T) {
	f := newFixture(t)
	ctx := t.Context()
	if err := f.st.PutProfile(ctx, storedProfile(t, "golden"), store.Create); err != nil {
		t.Fatal(err)
	}
	if err := f.st.PutHost(ctx, &store.Host{Name: "compute-1", Profiles: []string{"golden"}}); err != nil {
		t.Fatal(err)
	}
	f.setVerdict(t, "compute-1", verdict.Trusted, "golden")
	if code, body, _ := f.do(t, "POST", "/v1/profiles/golden/versions", f.admin, `{"facts": {"secure_boot": ["disabled"]}}`); code != http.StatusCreated {
		t.Fatalf("create version = %d %v", code, body)
	}
	// Approving accepts more: nobody relies on that.
	if code, body, _ := f.do(t, "POST", "/v1/profiles/golden/versions/2/state", f.admin, `{"state": "approved"}`); code != http.StatusOK {
		t.Fatalf("approve = %d %v", code, body)
	}
	code, body, _ := f.do(t, "POST", "/v1/profiles/golden/versions/1/state", f.admin, `{"state": "retired"}`)
	e, _ := body["error"].(map[string]any)
	if code != http.StatusConflict || fmtReason(e) != attestapi.ReasonHostsRelyOnVersion || !strings.Contains(fmt.Sprint(e["message"]), "compute-1") {
		t.Fatalf("retire a version a trusted host relies on = %d %v, want 409 hosts_rely_on_version naming compute-1", code, body)
	}
	checkForceRequired(t, "retire a version a trusted host relies on", e, attestapi.ReasonHostsRelyOnVersion)
	if v, _ := f.st.GetProfileVersion(ctx, "golden", 1); v.State != store.VersionApproved {
		t.Errorf("refused change stored: version 1 is %s", v.State)
	}
	if code, body, _ := f.do(t, "POST", "/v1/profiles/golden/versions/1/state?force=true", f.admin, `{"state": "retired"}`); code != http.StatusOK || body["state"] != "retired" {
		t.Fatalf("forced retire = %d %v", code, body)
	}
	recs, err := f.st.Audit(ctx, 1)
	if err != nil || len(recs) != 1 || !strings.Contains(recs[0].Detail, "forced; hosts relying on it: compute-1") {
		t.Errorf("audit of the forced change = %+v, %v", recs, err)
	}
}

// TestFlatUpdateNewVersion: a flat update (PUT), an import replacing a
// profile and learn with merge each store a new approved version, retire
// the version they replace and name both in the answer and the audit;
// writing the same document again changes nothing; an approved version of
// a rollout in progress stays approved.
func TestFlatUpdateNewVersion(t *testing.T) {
	f := newFixture(t)
	ctx := t.Context()
	f.learnable(t, "golden-host")
	doc := func(pcr0 string) string {
		return `{"name": "golden", "pcrs": {"0": ["` + strings.Repeat(pcr0, 64) + `"]}}`
	}
	states := func() map[float64]string {
		t.Helper()
		code, body, _ := f.do(t, "GET", "/v1/profiles/golden/versions", f.admin, "")
		if code != http.StatusOK {
			t.Fatalf("list versions = %d %v", code, body)
		}
		out := map[float64]string{}
		for _, v := range body["versions"].([]any) {
			m := v.(map[string]any)
			out[m["version"].(float64)] = m["state"].(string)
		}
		return out
	}
	write := func(step, method, path, body string, wantCode int, want map[string]any) {
		t.Helper()
		code, got, _ := f.do(t, method, path, f.admin, body)
		if code != wantCode {
			t.Fatalf("%s: %s %s = %d %v, want %d", step, method, path, code, got, wantCode)
		}
		for k, v := range want {
			if !cmp.Equal(got[k], v) {
				t.Errorf("%s: %q = %v, want %v (answer %v)", step, k, got[k], v, got)
			}
		}
		for _, k := range []string{"version", "retired_version", "unchanged"} {
			if _, ok := want[k]; !ok && got[k] != nil {
				t.Errorf("%s: %q = %v, want it absent", step, k, got[k])
			}
		}
	}
	write("create", "POST", "/v1/profiles", doc("1"), http.StatusCreated, map[string]any{"version": 1.0})
	write("same document", "PUT", "/v1/profiles/golden", doc("1"), http.StatusOK, map[string]any{"version": 1.0, "unchanged": true})
	if got := states(); !cmp.Equal(got, map[float64]string{1: "approved"}) {
		t.Errorf("versions after the same document = %v", got)
	}
	write("update", "PUT", "/v1/profiles/golden", doc("2"), http.StatusOK, map[string]any{"version": 2.0, "retired_version": 1.0})
	if got := states(); !cmp.Equal(got, map[float64]string{1: "retired", 2: "approved"}) {
		t.Errorf("versions after an update = %v", got)
	}
	// The version the update replaced keeps its values.
	if _, body, _ := f.do(t, "GET", "/v1/profiles/golden/versions/1", f.admin, ""); !strings.Contains(mustJSON(t, body), strings.Repeat("1", 64)) {
		t.Errorf("version 1 after an update = %v, want its own values", body)
	}
	if _, body, _ := f.do(t, "GET", "/v1/profiles/golden", f.admin, ""); !strings.Contains(mustJSON(t, body), strings.Repeat("2", 64)) {
		t.Errorf("flat profile after an update = %v, want the new values", body)
	}

	// A rollout in progress: version 3 approved next to 2. An update
	// replaces the latest (3); 2 stays approved.
	write("add version 3", "POST", "/v1/profiles/golden/versions", doc("3"), http.StatusCreated, map[string]any{"version": 3.0})
	write("approve version 3", "POST", "/v1/profiles/golden/versions/3/state", `{"state": "approved"}`, http.StatusOK, map[string]any{"version": 3.0})
	toml := "[[profile]]\nname = \"golden\"\n[profile.pcrs]\n0 = [\"" + strings.Repeat("4", 64) + "\"]\n\n" +
		"[[profile]]\nname = \"silver\"\n[profile.facts]\nsecure_boot = [\"enabled\"]\n"
	code, body, _ := f.do(t, "POST", "/v1/profiles/import", f.admin, toml)
	wantImport := []any{map[string]any{"name": "golden", "version": 4.0, "retired_version": 3.0},
		map[string]any{"name": "silver", "version": 1.0, "created": true}}
	if code != http.StatusOK || !cmp.Equal(body["profiles"], wantImport) {
		t.Errorf("import = %d %v, want profiles %v", code, body, wantImport)
	}
	if got := states(); !cmp.Equal(got, map[float64]string{1: "retired", 2: "approved", 3: "retired", 4: "approved"}) {
		t.Errorf("versions after an import = %v", got)
	}
	code, body, _ = f.do(t, "POST", "/v1/profiles/import", f.admin, toml)
	wantImport = []any{map[string]any{"name": "golden", "version": 4.0, "unchanged": true},
		map[string]any{"name": "silver", "version": 1.0, "unchanged": true}}
	if code != http.StatusOK || !cmp.Equal(body["profiles"], wantImport) {
		t.Errorf("import of the same file = %d %v, want profiles %v", code, body, wantImport)
	}

	// learn with merge writes through the same path.
	write("learn merge", "POST", "/v1/profiles/learn", `{"host": "golden-host", "name": "golden", "merge": true, "pcrs": [4]}`, http.StatusOK,
		map[string]any{"version": 5.0, "retired_version": 4.0})
	if got := states(); !cmp.Equal(got, map[float64]string{1: "retired", 2: "approved", 3: "retired", 4: "retired", 5: "approved"}) {
		t.Errorf("versions after learn with merge = %v", got)
	}

	recs, err := f.st.Audit(ctx, 100)
	if err != nil {
		t.Fatal(err)
	}
	var details []string
	for _, r := range recs {
		switch r.Action {
		case "profile.create", "profile.update", "profile.import", "profile.learn":
			details = append(details, r.Action+" "+r.Outcome+": "+r.Detail)
		}
	}
	slices.Reverse(details)
	want := []string{
		"profile.create success: version=1 state=approved",
		"profile.update success: unchanged; version=1",
		"profile.update success: version=2 state=approved; retired version 1",
		"profile.import success: profiles=golden,silver (golden: version=4 state=approved; retired version 3; silver: version=1 state=approved)",
		"profile.import success: profiles=golden,silver (golden: unchanged; version=4; silver: unchanged; version=1)",
		"profile.learn success: learned from host golden-host; version=5 state=approved; retired version 4",
	}
	if d := cmp.Diff(want, details); d != "" {
		t.Errorf("audit of flat writes (-want +got):\n%s", d)
	}
}

// TestFlatViewsNameVersion: GET /v1/profiles/{name} and the list name the
// latest approved version, whose document they show: 1 after a create, 2
// after an update; a candidate does not count until it is approved, and
// retiring the latest approved one names the one before again.
func TestFlatViewsNameVersion(t *testing.T) {
	f := newFixture(t)
	doc := func(pcr0 string) string {
		return `{"name": "golden", "pcrs": {"0": ["` + strings.Repeat(pcr0, 64) + `"]}}`
	}
	step := func(name, method, path, body string, wantCode int) {
		t.Helper()
		if code, got, _ := f.do(t, method, path, f.admin, body); code != wantCode {
			t.Fatalf("%s: %s %s = %d %v, want %d", name, method, path, code, got, wantCode)
		}
	}
	check := func(name string, wantVersion float64, wantPCR0 string) {
		t.Helper()
		code, got, _ := f.do(t, "GET", "/v1/profiles/golden", f.admin, "")
		if code != http.StatusOK || got["version"] != wantVersion || !strings.Contains(mustJSON(t, got), strings.Repeat(wantPCR0, 64)) {
			t.Errorf("%s: GET /v1/profiles/golden = %d %v, want version %v with PCR 0 of %s", name, code, got, wantVersion, wantPCR0)
		}
		code, got, _ = f.do(t, "GET", "/v1/profiles", f.admin, "")
		ps, _ := got["profiles"].([]any)
		if code != http.StatusOK || len(ps) != 1 || ps[0].(map[string]any)["version"] != wantVersion {
			t.Errorf("%s: GET /v1/profiles = %d %v, want golden at version %v", name, code, got, wantVersion)
		}
	}
	step("create", "POST", "/v1/profiles", doc("1"), http.StatusCreated)
	check("after create", 1, "1")
	step("update", "PUT", "/v1/profiles/golden", doc("2"), http.StatusOK)
	check("after update", 2, "2")
	step("candidate", "POST", "/v1/profiles/golden/versions", doc("3"), http.StatusCreated)
	check("with a candidate", 2, "2")
	step("approve 3", "POST", "/v1/profiles/golden/versions/3/state", `{"state": "approved"}`, http.StatusOK)
	check("after approving 3", 3, "3")
	step("retire 3", "POST", "/v1/profiles/golden/versions/3/state", `{"state": "retired"}`, http.StatusOK)
	check("after retiring 3", 2, "2")
}
