package engine_test

import (
	"encoding/json"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/trustpool/trustpool/attestation-service/internal/engine"
	"github.com/trustpool/trustpool/attestation-service/internal/store"
	"github.com/trustpool/trustpool/internal/verdict"
)

// signedKeys returns the keys of the JSON object host c1's stored signed
// verdict carries, sorted.
func signedKeys(t *testing.T, h *trustedHost) []string {
	t.Helper()
	hv, err := h.eng.HostView(t.Context(), "c1")
	if err != nil || hv.Verdict == nil {
		t.Fatalf("HostView = %+v, %v", hv, err)
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal([]byte(hv.Verdict.Signed.Verdict), &m); err != nil {
		t.Fatal(err)
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// The fields of format 1: all a shim from before format 2 decodes.
var format1Keys = []string{"evidence_digest", "expires_at", "host", "issuer", "profiles", "reasons", "seq", "status", "verified_at"}

// TestVerdictFormat: by default the signed verdict is format 2 and names
// the version of each satisfied profile the host matched (a new matching
// version is published at once); pinned to format 1 (the rolling upgrade)
// it carries exactly the fields of format 1.
func TestVerdictFormat(t *testing.T) {
	t.Run("default format 2", func(t *testing.T) {
		h := newTrustedHost(t)
		v := h.attest(t)
		if v.Status != verdict.Trusted || v.Format != verdict.Format2 || !cmp.Equal(v.ProfileVersions, map[string]int{"sb": 1}) {
			t.Fatalf("verdict %+v, want trusted, format 2, sb version 1", v)
		}
		if got := h.lastPublished(t); got.Format != verdict.Format2 || !cmp.Equal(got.ProfileVersions, map[string]int{"sb": 1}) {
			t.Errorf("published verdict format %d, versions %v", got.Format, got.ProfileVersions)
		}
		if got, want := signedKeys(t, h), append(slices.Clone(format1Keys), "format", "profile_versions"); !cmp.Equal(got, slices.Sorted(slices.Values(want))) {
			t.Errorf("signed verdict fields %v", got)
		}
		// A second matching version, approved: the host now matches it
		// (the newest passing), and the changed verdict is published.
		n, err := h.eng.AddProfileVersion(t.Context(), "sb", sbProfile, "test")
		if err != nil {
			t.Fatal(err)
		}
		if err := h.eng.SetProfileVersionState(t.Context(), "sb", n, store.VersionCandidate, store.VersionApproved, nil, 0); err != nil {
			t.Fatal(err)
		}
		h.pub.mu.Lock()
		before := len(h.pub.verdicts)
		h.pub.mu.Unlock()
		h.attest(t)
		h.pub.mu.Lock()
		after := len(h.pub.verdicts)
		h.pub.mu.Unlock()
		if got := h.lastPublished(t); after != before+1 || !cmp.Equal(got.ProfileVersions, map[string]int{"sb": n}) {
			t.Errorf("after approving version %d: %d verdicts published, last names %v; want one naming sb: %d", n, after-before, got.ProfileVersions, n)
		}
		// Untrusted: no profile satisfied, no versions, still format 2.
		if err := h.st.DeleteProfile(t.Context(), "sb"); err != nil {
			t.Fatal(err)
		}
		if v := h.attest(t); v.Status != verdict.Untrusted || v.Format != verdict.Format2 || len(v.ProfileVersions) != 0 {
			t.Errorf("without profiles: %+v, want untrusted format 2 without versions", v)
		}
	})
	t.Run("pinned to format 1", func(t *testing.T) {
		h := newTrustedHost(t, func(c *engine.Config) { c.VerdictFormat = verdict.Format1 })
		v := h.attest(t)
		if v.Status != verdict.Trusted || v.ProfileVersions != nil {
			t.Fatalf("verdict %+v, want trusted without versions", v)
		}
		if got := h.lastPublished(t); got.Format != 0 || got.ProfileVersions != nil {
			t.Errorf("published verdict decodes as format %d with versions %v, want format 1", got.Format, got.ProfileVersions)
		}
		if got := signedKeys(t, h); !cmp.Equal(got, format1Keys) {
			t.Errorf("signed verdict fields %v, want exactly format 1's %v", got, format1Keys)
		}
	})
}
