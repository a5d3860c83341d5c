package engine_test

import (
	"crypto/ed25519"
	"encoding/json"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/trustpool/trustpool/attestation-service/internal/engine"
	"github.com/trustpool/trustpool/attestation-service/internal/store"
	"github.com/trustpool/trustpool/internal/verdict"
)

// TestProfileReliance: the configured required_profiles count like an
// assignment; an expired trusted verdict is no longer trusted; a host trusted
// through several profiles does not rely on one of them.
func TestProfileReliance(t *testing.T) {
	now := time.Now()
	_, priv, _ := ed25519.GenerateKey(nil)
	signer := verdict.NewSigner(priv) // the engine reads stored verdicts without checking who signed them
	eng, st, _ := newTestEngine(t, t.TempDir(), engine.Config{Issuer: "test", Interval: time.Second, Validity: 3 * time.Second,
		QuoteTimeout: time.Second, PCRs: []int{0}, EnrollmentMode: engine.ModeAuto, RequiredProfiles: []string{"base"}})
	put := func(h store.Host, status verdict.Status, expires time.Time, profiles ...string) {
		t.Helper()
		if err := st.PutHost(t.Context(), &h); err != nil {
			t.Fatal(err)
		}
		v := verdict.Verdict{Host: h.Name, Status: status, Profiles: profiles, VerifiedAt: now.Add(-time.Hour), ExpiresAt: expires, Seq: 1, Issuer: "test"}
		s, err := signer.Sign(v)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := json.Marshal(s)
		if err := st.SaveVerdict(t.Context(), h.Name, b, nil, nil); err != nil {
			t.Fatal(err)
		}
	}
	put(store.Host{Name: "default-required"}, verdict.Trusted, now.Add(time.Hour), "base", "gpu")
	put(store.Host{Name: "any-gpu", Profiles: []string{}}, verdict.Trusted, now.Add(time.Hour), "gpu")
	put(store.Host{Name: "any-expired", Profiles: []string{}}, verdict.Trusted, now.Add(-time.Minute), "gpu")
	put(store.Host{Name: "any-two", Profiles: []string{}}, verdict.Trusted, now.Add(time.Hour), "base", "gpu")
	put(store.Host{Name: "assigned-gpu", Profiles: []string{"gpu"}}, verdict.Trusted, now.Add(time.Hour), "base", "gpu")
	for _, tc := range []struct {
		profile string
		want    []string
	}{
		{"base", []string{"default-required"}},
		{"gpu", []string{"any-gpu", "assigned-gpu"}},
		{"none", nil},
	} {
		got, err := eng.ProfileReliance(t.Context(), tc.profile)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(tc.want, got); diff != "" {
			t.Errorf("ProfileReliance(%s) (-want +got):\n%s", tc.profile, diff)
		}
	}
	for _, tc := range []struct {
		host     string
		profiles []string
		want     []string
	}{
		{"default-required", nil, nil},                         // back to [base]: satisfied
		{"any-gpu", nil, []string{"base"}},                     // back to [base]: not satisfied
		{"any-gpu", []string{"gpu", "tpm2"}, []string{"tpm2"}}, // one unmet
		{"any-expired", []string{"base"}, nil},                 // not trusted now: nothing to lose
		{"assigned-gpu", []string{}, nil},                      // any profile: it has two
		{"assigned-gpu", []string{"base", "gpu"}, nil},         // both satisfied
	} {
		got, err := eng.AssignmentLosesTrust(t.Context(), tc.host, tc.profiles)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(tc.want, got); diff != "" {
			t.Errorf("AssignmentLosesTrust(%s, %v) (-want +got):\n%s", tc.host, tc.profiles, diff)
		}
	}
}
