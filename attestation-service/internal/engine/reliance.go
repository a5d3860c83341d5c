package engine

import (
	"context"
	"fmt"
	"slices"

	"github.com/trustpool/trustpool/attestation-service/internal/store"
	"github.com/trustpool/trustpool/internal/verdict"
)

// Which hosts rely on which profiles, so that the API can ask for an
// explicit force before a change turns hosts untrusted (one DELETE of the
// last profile used to turn every host untrusted). The answers come from the
// stored assignments and each host's latest verdict; a round that completes
// between the check and the change is not accounted for.

// requiredProfiles is what host h must satisfy: its assignment, else the
// configured default (empty: any defined profile).
func (e *Engine) requiredProfiles(h *store.HostRecord) []string {
	if h.Profiles != nil {
		return h.Profiles
	}
	return e.cfg.RequiredProfiles
}

// trustedVerdict returns h's latest verdict when it is trusted now.
func (e *Engine) trustedVerdict(h *store.HostRecord) (verdict.Verdict, bool) {
	if len(h.Verdict) == 0 {
		return verdict.Verdict{}, false
	}
	s, err := verdict.ParseSigned(h.Verdict)
	if err != nil {
		return verdict.Verdict{}, false
	}
	v, err := verdict.Unmarshal([]byte(s.Verdict))
	if err != nil || v.StatusAt(e.cfg.Now()) != verdict.Trusted {
		return verdict.Verdict{}, false
	}
	return v, true
}

// ProfileReliance returns the hosts that rely on profile name, sorted:
// deleting it would turn them untrusted or keep them from being trusted.
// They are the hosts required to satisfy it (by assignment or the configured
// default) and the hosts that require no particular profile and are trusted
// now through that profile alone.
func (e *Engine) ProfileReliance(ctx context.Context, name string) ([]string, error) {
	hosts, err := e.cfg.Store.ListHosts(ctx)
	if err != nil {
		return nil, fmt.Errorf("profile reliance: %w", err)
	}
	var out []string
	for _, h := range hosts {
		required := e.requiredProfiles(h)
		if slices.Contains(required, name) {
			out = append(out, h.Name)
			continue
		}
		if v, ok := e.trustedVerdict(h); ok && len(required) == 0 && slices.Equal(v.Profiles, []string{name}) {
			out = append(out, h.Name)
		}
	}
	slices.Sort(out)
	return out, nil
}

// AssignmentLosesTrust reports the profiles of a proposed assignment
// (nil: back to the configured default) that host, trusted now, did not
// satisfy in its latest verdict: assigning them turns it untrusted. It
// returns nil when the host is not trusted now or would stay trusted.
func (e *Engine) AssignmentLosesTrust(ctx context.Context, host string, profiles []string) ([]string, error) {
	h, err := e.cfg.Store.GetHost(ctx, host)
	if err != nil {
		return nil, err
	}
	v, ok := e.trustedVerdict(h)
	if !ok {
		return nil, nil
	}
	required := profiles
	if required == nil {
		required = e.cfg.RequiredProfiles
	}
	var unmet []string
	for _, p := range required {
		if !slices.Contains(v.Profiles, p) {
			unmet = append(unmet, p)
		}
	}
	return unmet, nil
}
