package engine

import (
	"context"
	"fmt"
	"maps"
	"slices"

	"github.com/trustpool/trustpool/internal/policy"
	"github.com/trustpool/trustpool/internal/verdict"
)

// Fresh is the outcome of a fresh attestation of one host (trusted launch).
type Fresh struct {
	// Verdict is the round's verdict, recorded and published like any
	// other.
	Verdict verdict.Verdict
	// Verified says the evidence verified; PCRs then holds the SHA-256
	// values the quote proved.
	Verified bool
	PCRs     map[int][]byte
	// Profiles are the round's evaluations of every defined profile.
	Profiles []policy.Result
	// EKPublic is the host's enrolled EK (TPMT_PUBLIC as registered).
	EKPublic []byte
}

// Satisfies reports whether the round verified and found the host trusted
// and satisfying profile.
func (f *Fresh) Satisfies(profile string) bool {
	return f.Verified && f.Verdict.Status == verdict.Trusted && slices.Contains(f.Verdict.Profiles, profile)
}

// ProfileReasons returns why profile failed in this round (nil when it
// passed or was not evaluated).
func (f *Fresh) ProfileReasons(profile string) []string {
	for _, r := range f.Profiles {
		if r.Profile == profile {
			return r.Reasons
		}
	}
	return nil
}

// AttestFresh attests host now, whatever its schedule: a new nonce, a quote,
// full verification and appraisal, recorded and published as a normal round
// (it waits for a round in progress). It returns ErrNotEnrolled for hosts
// without an activated binding.
func (e *Engine) AttestFresh(ctx context.Context, host string) (*Fresh, error) {
	v, rec, st, err := e.attest(ctx, host, true)
	if err != nil {
		return nil, err
	}
	f := &Fresh{Verdict: v, EKPublic: rec.EKPublic}
	if st.Last != nil {
		f.Profiles = st.Last.Profiles
		f.Verified = st.Last.Verified
	}
	if f.Verified && st.Previous != nil {
		f.PCRs = maps.Clone(st.Previous.PCRs)
	}
	if f.Verified && len(f.PCRs) == 0 {
		return nil, fmt.Errorf("fresh attestation of %s: verified without PCR values", host)
	}
	return f, nil
}
