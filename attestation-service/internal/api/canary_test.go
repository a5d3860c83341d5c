package api_test

import (
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/trustpool/trustpool/attestation-service/internal/store"
	"github.com/trustpool/trustpool/internal/attestapi"
	"github.com/trustpool/trustpool/internal/verdict"
)

// TestCanaryFractionAPI: a canary given a fraction of hosts through the
// state route: each malformed request refused with 400 and its reason
// naming the fraction, admin only, show and list naming the fraction and
// the enrolled hosts in the canary now, the audit detail carrying it, and
// lowering it refused with 409 naming the trusted hosts that fall out
// unless force=true.
func TestCanaryFractionAPI(t *testing.T) {
	f := newFixture(t)
	ctx := t.Context()
	if err := f.st.PutProfile(ctx, storedProfile(t, "golden"), store.Create); err != nil {
		t.Fatal(err)
	}
	var hosts []string
	for i := range 8 {
		h := fmt.Sprintf("compute-%d", i)
		if err := f.st.PutHost(ctx, &store.Host{Name: h, Profiles: []string{"golden"}}); err != nil {
			t.Fatal(err)
		}
		f.setVerdict(t, h, verdict.Trusted, "golden")
		hosts = append(hosts, h)
	}
	if code, body, _ := f.do(t, "POST", "/v1/profiles/golden/versions", f.admin, `{"facts": {"secure_boot": ["disabled"]}}`); code != http.StatusCreated {
		t.Fatalf("create version = %d %v", code, body)
	}
	const state = "/v1/profiles/golden/versions/2/state"
	for _, tc := range []struct {
		name, body string
		reason     string
	}{
		{"fraction 0", `{"state": "canary", "fraction": 0}`, attestapi.ReasonInvalidFraction},
		{"fraction above 1", `{"state": "canary", "fraction": 1.5}`, attestapi.ReasonInvalidFraction},
		{"negative fraction", `{"state": "canary", "hosts": ["compute-1"], "fraction": -0.1}`, attestapi.ReasonInvalidFraction},
		{"fraction not a number", `{"state": "canary", "fraction": "half"}`, ""},
		{"fraction on approve", `{"state": "approved", "fraction": 0.5}`, attestapi.ReasonFractionOnlyCanary},
		{"fraction on candidate", `{"state": "candidate", "fraction": 0.5}`, attestapi.ReasonFractionOnlyCanary},
		{"canary without hosts or fraction", `{"state": "canary"}`, attestapi.ReasonCanaryNeedsHosts},
	} {
		code, body, _ := f.do(t, "POST", state, f.admin, tc.body)
		e, _ := body["error"].(map[string]any)
		if code != http.StatusBadRequest || fmtReason(e) != tc.reason || !strings.Contains(fmt.Sprint(e["message"]), "fraction") {
			t.Errorf("%s: %s = %d %v, want 400 reason %q with a message naming the fraction", tc.name, tc.body, code, body, tc.reason)
		}
	}
	for _, p := range []struct{ name, token string }{{"member", f.member}, {"reader", f.reader}, {"service", f.service}} {
		if code, body, _ := f.do(t, "POST", state, p.token, `{"state": "canary", "fraction": 0.5}`); code != http.StatusForbidden {
			t.Errorf("%s sets a canary fraction = %d %v, want 403", p.name, code, body)
		}
		if code, body, _ := f.do(t, "GET", "/v1/profiles/golden/versions/2", p.token, ""); code != http.StatusForbidden {
			t.Errorf("%s shows a version = %d %v, want 403", p.name, code, body)
		}
	}
	if v, _ := f.st.GetProfileVersion(ctx, "golden", 2); v.State != store.VersionCandidate || v.Fraction != 0 {
		t.Fatalf("refused requests changed version 2: %+v", v)
	}

	inCanary := func(named []string, fraction float64) []any {
		out := []any{}
		for _, h := range hosts {
			if slices.Contains(named, h) || store.CanarySelects("golden", 2, h, fraction) {
				out = append(out, h)
			}
		}
		return out
	}
	half := inCanary(nil, 0.5)
	if len(half) == 0 || len(half) == len(hosts) {
		t.Fatalf("half selects %v of %d hosts: the test needs hosts in and out", half, len(hosts))
	}
	checkView := func(step string, body map[string]any, fraction float64, named []string) {
		t.Helper()
		want := inCanary(named, fraction)
		if body["state"] != "canary" || body["fraction"] != fraction || !cmp.Equal(body["in_canary"], want) {
			t.Errorf("%s: version = %v; want canary, fraction %v, in_canary %v", step, body, fraction, want)
		}
	}
	code, body, _ := f.do(t, "POST", state, f.admin, `{"state": "canary", "fraction": 1}`)
	if code != http.StatusOK {
		t.Fatalf("canary with fraction 1 = %d %v", code, body)
	}
	checkView("fraction 1", body, 1, nil)

	// Lowering to a half drops the trusted hosts outside it: refused
	// unless forced.
	var dropped []string
	for _, h := range hosts {
		if !slices.Contains(half, any(h)) {
			dropped = append(dropped, h)
		}
	}
	code, body, _ = f.do(t, "POST", state, f.admin, `{"state": "canary", "fraction": 0.5}`)
	e, _ := body["error"].(map[string]any)
	if code != http.StatusConflict || fmtReason(e) != attestapi.ReasonHostsRelyOnVersion {
		t.Fatalf("lower the fraction = %d %v, want 409 hosts_rely_on_version", code, body)
	}
	for _, h := range hosts {
		if named := strings.Contains(fmt.Sprint(e["message"]), `"`+h+`"`); named != slices.Contains(dropped, h) {
			t.Errorf("409 message %q names %s: %v; want only the hosts that fall out %v", e["message"], h, named, dropped)
		}
	}
	if v, _ := f.st.GetProfileVersion(ctx, "golden", 2); v.Fraction != 1 {
		t.Errorf("refused change stored: fraction %v", v.Fraction)
	}
	code, body, _ = f.do(t, "POST", state+"?force=true", f.admin, `{"state": "canary", "hosts": ["compute-0"], "fraction": 0.5}`)
	if code != http.StatusOK {
		t.Fatalf("forced lowering = %d %v", code, body)
	}
	checkView("forced to a half with compute-0 named", body, 0.5, []string{"compute-0"})
	recs, err := f.st.Audit(ctx, 1)
	if err != nil || len(recs) != 1 || !strings.Contains(recs[0].Detail, "hosts=compute-0 fraction=0.5; forced") {
		t.Errorf("audit of the forced change = %+v, %v; want its hosts and fraction", recs, err)
	}
	// Raising it again drops nobody: no force needed.
	if code, body, _ := f.do(t, "POST", state, f.admin, `{"state": "canary", "fraction": 0.75}`); code != http.StatusOK {
		t.Errorf("raise the fraction = %d %v", code, body)
	}

	_, body, _ = f.do(t, "GET", "/v1/profiles/golden/versions/2", f.admin, "")
	checkView("show", body, 0.75, nil)
	_, body, _ = f.do(t, "GET", "/v1/profiles/golden/versions", f.admin, "")
	vs, _ := body["versions"].([]any)
	if len(vs) != 2 {
		t.Fatalf("list versions = %v", body)
	}
	checkView("list", vs[1].(map[string]any), 0.75, nil)
	if v1 := vs[0].(map[string]any); v1["fraction"] != nil || v1["in_canary"] != nil {
		t.Errorf("approved version 1 listed with canary fields: %v", v1)
	}
	// Leaving canary clears the fraction.
	if code, body, _ := f.do(t, "POST", state+"?force=true", f.admin, `{"state": "approved"}`); code != http.StatusOK || body["fraction"] != nil || body["in_canary"] != nil {
		t.Errorf("approve = %d %v, want no fraction and no in_canary", code, body)
	}
}
