package api_test

import (
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/trustpool/trustpool/internal/attestapi"
	"github.com/trustpool/trustpool/internal/launch"
)

// sealedBody is a POST /v1/launches body: a request for project, sealed to
// the fixture's launch key.
func (f *fixture) sealedBody(t *testing.T, project string, notAfter time.Time, extra string) string {
	t.Helper()
	req, err := launch.NewRequest([]byte("tenant secret"), "golden", project, notAfter)
	if err != nil {
		t.Fatal(err)
	}
	sealed, err := launch.Seal(f.launchKey.Public(), req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(attestapi.LaunchCreate{KID: f.launchKey.Public().KID(), Sealed: sealed})
	if extra != "" {
		return strings.TrimSuffix(string(b), "}") + "," + extra + "}"
	}
	return string(b)
}

// TestLaunchAPI: creation checks and refusals with their reason codes, the
// project scope of every operation (another project's launch is not found),
// readers read, administrators list all and see the host, and /v1/keys
// publishes the launch key.
func TestLaunchAPI(t *testing.T) {
	f := newFixture(t)
	hour := time.Now().Add(time.Hour)
	code, body, _ := f.do(t, "GET", "/v1/keys", "", "")
	lks, _ := body["launch_keys"].([]any)
	if code != 200 || len(lks) != 1 || lks[0].(map[string]any)["fingerprint"] != f.launchKey.Public().Fingerprint() {
		t.Fatalf("GET /v1/keys = %d %v, want the launch key", code, body)
	}
	pks, _ := body["policy_keys"].([]any)
	if len(pks) != 1 {
		t.Fatalf("GET /v1/keys: policy_keys %v, want the policy-signing key", body["policy_keys"])
	}
	pk := pks[0].(map[string]any)
	if pk["kid"] != f.policyKey.Public().KID() || pk["fingerprint"] != f.policyKey.Public().Fingerprint() ||
		pk["tpm_name"] != hex.EncodeToString(f.policyKey.Public().TPMName()) || pk["algorithm"] != "ECDSA P-256 SHA-256" {
		t.Errorf("GET /v1/keys: policy key %v", pk)
	}

	code, body, hdr := f.do(t, "POST", "/v1/launches", f.member, f.sealedBody(t, "demo-id", hour, ""))
	if code != http.StatusCreated {
		t.Fatalf("member create = %d %v", code, body)
	}
	l := body["launch"].(map[string]any)
	id := l["id"].(string)
	if l["state"] != "pending" || l["project_id"] != "demo-id" || l["profile"] != "golden" || hdr.Get("Location") != "/v1/launches/"+id {
		t.Errorf("created launch %v, Location %q", l, hdr.Get("Location"))
	}
	if _, ok := l["host"]; ok {
		t.Error("a member sees the host field")
	}

	refusals := []struct {
		name, token, body string
		want              int
		reason            string
	}{
		{"sealed for another project", f.member, f.sealedBody(t, "other-id", hour, ""), 400, "project_mismatch"},
		{"expired", f.member, f.sealedBody(t, "demo-id", time.Now().Add(-time.Second), ""), 400, "expired"},
		{"too far ahead", f.member, f.sealedBody(t, "demo-id", time.Now().Add(90*24*time.Hour), ""), 400, "request_invalid"},
		{"other key", f.member, strings.Replace(f.sealedBody(t, "demo-id", hour, ""), f.launchKey.Public().KID(), "0123456789abcdef", 1), 400, "sealed_request_invalid"},
		{"altered", f.member, strings.Replace(f.sealedBody(t, "demo-id", hour, ""), `"sealed":"`, `"sealed":"AAAA`, 1), 400, "sealed_request_invalid"},
		{"bad instance id", f.member, f.sealedBody(t, "demo-id", hour, `"instance_id":"i-1"`), 400, "request_invalid"},
		{"instance without Nova or host_id", f.member, f.sealedBody(t, "demo-id", hour, `"instance_id":"178b0921-8f85-4257-88b6-2e743b5a975c"`), 400, "request_invalid"},
		{"host_id without instance", f.member, f.sealedBody(t, "demo-id", hour, `"host_id":"`+strings.Repeat("a", 56)+`"`), 400, "request_invalid"},
		{"unknown field", f.member, f.sealedBody(t, "demo-id", hour, `"host":"compute-1"`), 400, ""},
		{"reader", f.reader, f.sealedBody(t, "demo-id", hour, ""), 403, ""},
	}
	for _, tc := range refusals {
		t.Run(tc.name, func(t *testing.T) {
			code, body, _ := f.do(t, "POST", "/v1/launches", tc.token, tc.body)
			e := body["error"].(map[string]any)
			msg := fmt.Sprint(e["message"])
			if code != tc.want || !strings.HasPrefix(msg, tc.reason) {
				t.Errorf("POST = %d %q, want %d starting with %q", code, msg, tc.want, tc.reason)
			}
			// The reason code, machine-readable too.
			if reason, _ := e["reason"].(string); reason != tc.reason {
				t.Errorf("error reason = %q, want %q", reason, tc.reason)
			}
		})
	}
	// The same sealed request twice: replayed.
	again := f.sealedBody(t, "demo-id", hour, "")
	if code, body, _ := f.do(t, "POST", "/v1/launches", f.member, again); code != 201 {
		t.Fatalf("create = %d %v", code, body)
	}
	if code, body, _ := f.do(t, "POST", "/v1/launches", f.member, again); code != 409 || !strings.HasPrefix(fmt.Sprint(body["error"].(map[string]any)["message"]), "replayed") ||
		body["error"].(map[string]any)["reason"] != attestapi.ReasonLaunchReplayed {
		t.Errorf("replay = %d %v, want 409 replayed", code, body)
	}

	// Project scope.
	for _, tc := range []struct {
		name, method, token string
		want                int
	}{
		{"member reads", "GET", f.member, 200},
		{"reader reads", "GET", f.reader, 200},
		{"admin of another project reads", "GET", f.otherAdmin, 200},
		{"service cannot", "GET", f.service, 404},
		{"reader cannot delete", "DELETE", f.reader, 403},
	} {
		if code, body, _ := f.do(t, tc.method, "/v1/launches/"+id, tc.token, ""); code != tc.want {
			t.Errorf("%s: %s = %d %v, want %d", tc.name, tc.method, code, body, tc.want)
		}
	}
	// A member of another project: as if the launch did not exist.
	f2 := f.otherMember(t)
	for _, m := range []string{"GET", "DELETE"} {
		if code, body, _ := f.do(t, m, "/v1/launches/"+id, f2, ""); code != 404 || !strings.Contains(fmt.Sprint(body), "not found") {
			t.Errorf("%s by another project's member = %d %v, want 404", m, code, body)
		}
		if code, _, _ := f.do(t, m, "/v1/launches/0b6d1c3e-8f2a-4c55-9d0e-6a7b8c9d0e1f", f2, ""); code != 404 {
			t.Errorf("%s of a missing launch = %d, want 404", m, code)
		}
	}
	list := func(token, query string) []string {
		t.Helper()
		code, body, _ := f.do(t, "GET", "/v1/launches"+query, token, "")
		if code != 200 {
			t.Fatalf("list %s = %d %v", query, code, body)
		}
		var ids []string
		for _, l := range body["launches"].([]any) {
			ids = append(ids, l.(map[string]any)["id"].(string))
		}
		return ids
	}
	if ids := list(f2, ""); len(ids) != 0 {
		t.Errorf("another project lists %v", ids)
	}
	if ids := list(f.member, ""); len(ids) != 2 {
		t.Errorf("member lists %v, want the project's 2 launches", ids)
	}
	if ids := list(f.admin, ""); len(ids) != 0 {
		t.Errorf("admin lists %v in its own project, want none", ids)
	}
	if ids := list(f.admin, "?all_projects=true"); len(ids) != 2 {
		t.Errorf("admin all_projects lists %v, want 2", ids)
	}
	if code, _, _ := f.do(t, "GET", "/v1/launches?all_projects=true", f.member, ""); code != 403 {
		t.Errorf("member all_projects = %d, want 403", code)
	}
	if code, _, _ := f.do(t, "GET", "/v1/launches?all_projects=maybe", f.admin, ""); code != 400 {
		t.Errorf("all_projects=maybe = %d, want 400", code)
	}
	_, body, _ = f.do(t, "GET", "/v1/launches/"+id, f.admin, "")
	if l := body["launch"].(map[string]any); l["history"] == nil {
		t.Errorf("show without history: %v", l)
	}
	// In progress (here: bound, as the launcher leaves it while it attests):
	// not deleted, 409 launch_in_progress.
	sl, err := f.st.GetLaunch(t.Context(), id)
	if err != nil {
		t.Fatal(err)
	}
	sl.State = launch.StateBound
	if err := f.st.TransitionLaunch(t.Context(), sl, launch.StatePending); err != nil {
		t.Fatal(err)
	}
	if code, body, _ := f.do(t, "DELETE", "/v1/launches/"+id, f.member, ""); code != 409 || body["error"].(map[string]any)["reason"] != attestapi.ReasonLaunchInProgress {
		t.Errorf("delete while bound = %d %v, want 409 launch_in_progress", code, body)
	}
	sl.State = launch.StateFailed
	if err := f.st.TransitionLaunch(t.Context(), sl, launch.StateBound); err != nil {
		t.Fatal(err)
	}
	if code, body, _ := f.do(t, "DELETE", "/v1/launches/"+id, f.member, ""); code != 204 {
		t.Errorf("member delete = %d %v", code, body)
	}
	if code, _, _ := f.do(t, "GET", "/v1/launches/"+id, f.member, ""); code != 404 {
		t.Errorf("after delete = %d, want 404", code)
	}
}

// deliveredLaunch creates a launch of the member's project and records it
// delivered on compute-1 (which has no agent: a re-delivery is refused
// host_not_enrolled, after the checks that come before asking the host).
func (f *fixture) deliveredLaunch(t *testing.T) string {
	t.Helper()
	code, body, _ := f.do(t, "POST", "/v1/launches", f.member, f.sealedBody(t, "demo-id", time.Now().Add(time.Hour), ""))
	if code != http.StatusCreated {
		t.Fatalf("create = %d %v", code, body)
	}
	rec, err := f.st.GetLaunch(t.Context(), body["launch"].(map[string]any)["id"].(string))
	if err != nil {
		t.Fatal(err)
	}
	rec.State, rec.Host, rec.InstanceID = launch.StateDelivered, "compute-1", "178b0921-8f85-4257-88b6-2e743b5a975c"
	if err := f.st.TransitionLaunch(t.Context(), rec, launch.StatePending); err != nil {
		t.Fatal(err)
	}
	return rec.ID
}

// TestRedeliverRateLimit: a member's second re-delivery of a launch within
// [launch] redelivery_user_interval answers 429 redelivery_too_soon with
// Retry-After in the usual error envelope, and runs nothing (no history
// entry); another launch is not held back by it. (launcher's
// TestRedeliverUserLimit lets the next one through after the interval.)
func TestRedeliverRateLimit(t *testing.T) {
	f := newFixture(t)
	ctx := t.Context()
	history := func(id string) int {
		t.Helper()
		h, err := f.st.LaunchHistory(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		return len(h)
	}
	a, b := f.deliveredLaunch(t), f.deliveredLaunch(t)
	// The host is not enrolled: refused, but the host was asked about
	// (a re-delivery ran).
	if code, body, _ := f.do(t, "POST", attestapi.LaunchRedeliverPath(a), f.member, ""); code != http.StatusOK {
		t.Fatalf("first redeliver = %d %v", code, body)
	}
	before := history(a)
	code, body, hdr := f.do(t, "POST", attestapi.LaunchRedeliverPath(a), f.member, "")
	e, _ := body["error"].(map[string]any)
	if code != http.StatusTooManyRequests || e["reason"] != attestapi.ReasonRedeliveryTooSoon || e["code"] != 429.0 ||
		!strings.Contains(fmt.Sprint(e["message"]), "ask again in") || e["request_id"] != hdr.Get("X-Openstack-Request-Id") {
		t.Errorf("second redeliver = %d %v, want 429 %s", code, body, attestapi.ReasonRedeliveryTooSoon)
	}
	if n, err := strconv.Atoi(hdr.Get("Retry-After")); err != nil || n < 1 || n > 10 {
		t.Errorf("Retry-After %q, want whole seconds, 1-10 (default interval 10s)", hdr.Get("Retry-After"))
	}
	if got := history(a); got != before {
		t.Errorf("a rate-limited request wrote %d history entries", got-before)
	}
	// Another launch is limited on its own.
	if code, body, hdr := f.do(t, "POST", attestapi.LaunchRedeliverPath(b), f.member, ""); code != http.StatusOK || hdr.Get("Retry-After") != "" {
		t.Errorf("redeliver of another launch = %d %v (Retry-After %q), want 200", code, body, hdr.Get("Retry-After"))
	}
}
