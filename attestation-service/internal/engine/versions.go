package engine

import (
	"context"
	"fmt"
	"slices"

	"github.com/trustpool/trustpool/attestation-service/internal/store"
	"github.com/trustpool/trustpool/internal/attestrpc"
)

// AddProfileVersion stores body (the TOML of one profile) as a new
// candidate version of profile, notifies it and returns its number. A
// candidate is accepted nowhere, so no host is attested again.
func (e *Engine) AddProfileVersion(ctx context.Context, profile, body, source string) (int, error) {
	n, err := e.cfg.Store.AddProfileVersion(ctx, profile, body, source)
	if err != nil {
		return 0, err
	}
	e.notifyVersionCreated(ctx, profile, n, store.VersionCandidate, source)
	return n, nil
}

// SetProfileVersionState changes a version's rollout state (see
// store.SetProfileVersionState), notifies the change and attests every
// host again under the new set of accepted versions. The notification
// carries the canary's named hosts and fraction (0: none).
func (e *Engine) SetProfileVersionState(ctx context.Context, profile string, version int, from, to string, hosts []string, fraction float64) error {
	if err := e.cfg.Store.SetProfileVersionState(ctx, profile, version, from, to, hosts, fraction); err != nil {
		return fmt.Errorf("change state of profile %q version %d: %w", profile, version, err)
	}
	e.notifyVersionState(ctx, profile, version, from, to, hosts, fraction)
	e.TriggerAll(ctx)
	return nil
}

// PutProfile stores a profile written as one document (the flat profile
// API, import, learn with merge; see store.PutFlatProfile): a changed
// document is a new approved version that retires the one it replaces.
// Both are notified as the version operations are. The same document
// again changes nothing and notifies nothing. Every host is attested
// again either way (as before versions: a caller waiting for a verdict
// after the write gets one).
func (e *Engine) PutProfile(ctx context.Context, p store.Profile, mode store.PutMode) (store.FlatWrite, error) {
	w, err := e.cfg.Store.PutFlatProfile(ctx, p, mode)
	if err != nil {
		return w, err
	}
	if w.Changed {
		e.notifyVersionCreated(ctx, p.Name, w.Version, store.VersionApproved, w.Source)
	}
	if w.Retired != 0 {
		e.notifyVersionState(ctx, p.Name, w.Retired, store.VersionApproved, store.VersionRetired, nil, 0)
	}
	e.TriggerAll(ctx)
	return w, nil
}

func (e *Engine) notifyVersionCreated(ctx context.Context, profile string, version int, state, source string) {
	payload := map[string]any{"profile": profile, "version": version, "state": state, "source": source}
	if err := e.cfg.Publisher.Notify(ctx, attestrpc.EventProfileVersionCreated, payload); err != nil {
		e.log.Warn("cannot send notification", "event", attestrpc.EventProfileVersionCreated, "error", err)
	}
}

func (e *Engine) notifyVersionState(ctx context.Context, profile string, version int, from, to string, hosts []string, fraction float64) {
	if hosts == nil {
		hosts = []string{}
	}
	payload := map[string]any{"profile": profile, "version": version, "from": from, "state": to, "hosts": hosts, "fraction": fraction}
	if err := e.cfg.Publisher.Notify(ctx, attestrpc.EventProfileVersionStateChanged, payload); err != nil {
		e.log.Warn("cannot send notification", "event", attestrpc.EventProfileVersionStateChanged, "error", err)
	}
}

// VersionReliance returns the hosts, sorted, that a state change of a
// profile version would turn untrusted: hosts trusted now that the version
// stops accepting (to, hosts, fraction: the new state and canary hosts and
// fraction; a lowered fraction drops hosts as a removed name does), whose
// latest round matched that version, and for which the profile matters
// (required by assignment or default, or the only profile they satisfy
// when none is required). A host whose state does not say which version it
// matched counts as relying. Only the newest matching version is recorded,
// so a host that also matches an older approved version is named too: the
// answer errs towards asking for force.
func (e *Engine) VersionReliance(ctx context.Context, profile string, version int, to string, hosts []string, fraction float64) ([]string, error) {
	cur, err := e.cfg.Store.GetProfileVersion(ctx, profile, version)
	if err != nil {
		return nil, err
	}
	after := store.ProfileVersion{Profile: profile, Version: version, State: to, Hosts: hosts, Fraction: fraction}
	recs, err := e.cfg.Store.ListHosts(ctx)
	if err != nil {
		return nil, fmt.Errorf("version reliance: %w", err)
	}
	var out []string
	for _, h := range recs {
		if !cur.Accepts(h.Name) || after.Accepts(h.Name) {
			continue
		}
		v, ok := e.trustedVerdict(h)
		if !ok {
			continue
		}
		required := e.requiredProfiles(h)
		if !slices.Contains(required, profile) && (len(required) > 0 || !slices.Equal(v.Profiles, []string{profile})) {
			continue
		}
		if st, err := decodeState(h.State); err == nil && st.Last != nil {
			if matched, ok := matchedVersions(st.Last)[profile]; ok && matched != version {
				continue
			}
		}
		out = append(out, h.Name)
	}
	slices.Sort(out)
	return out, nil
}
