package engine

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"slices"

	"github.com/trustpool/trustpool/attestation-service/internal/store"
	"github.com/trustpool/trustpool/internal/evidence"
	"github.com/trustpool/trustpool/internal/policy"
)

// What a round would otherwise recompute from the store every time: the
// parsed EK and AK of a host, its decoded verification state, and the
// parsed profiles. Every entry is checked against what the store returns
// in the round (the raw bytes, or the profiles generation), so another
// instance's writes are never missed; the caches only spare parsing.

// maxCachedHosts bounds the per-host cache (it is emptied when full).
const maxCachedHosts = 1 << 17

// hostCache is what the last round of a host left.
type hostCache struct {
	ekRaw, akRaw []byte
	binding      evidence.Binding
	// stateSum is SHA-256 of the state as stored (a digest, not the
	// bytes: a few KiB per host add up over a fleet); state is it decoded.
	// Rounds mutate state, so an entry is taken out of the cache for the
	// round and put back only once the new state is stored.
	stateSum [sha256.Size]byte
	state    *hostState
}

// takeCache removes and returns host's cache entry (nil when none).
func (e *Engine) takeCache(host string) *hostCache {
	e.mu.Lock()
	defer e.mu.Unlock()
	c := e.cache[host]
	delete(e.cache, host)
	return c
}

// putCache stores host's entry after a round whose state was stored.
func (e *Engine) putCache(host string, c *hostCache) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(e.cache) >= maxCachedHosts {
		clear(e.cache)
	}
	e.cache[host] = c
}

// binding returns the host's parsed EK and AK, from c when they did not
// change.
func binding(c *hostCache, rec *store.HostRecord) (evidence.Binding, error) {
	if c != nil && bytes.Equal(c.ekRaw, rec.EKPublic) && bytes.Equal(c.akRaw, rec.AKPublic) {
		b := c.binding
		b.Activated = rec.Activated
		return b, nil
	}
	ek, err := evidence.ParseEKPublic(rec.EKPublic)
	if err != nil {
		return evidence.Binding{}, fmt.Errorf("stored EK unusable: %w", err)
	}
	ak, err := evidence.ParseAKPublic(rec.AKPublic)
	if err != nil {
		return evidence.Binding{}, fmt.Errorf("stored AK unusable: %w", err)
	}
	return evidence.Binding{EK: ek, AK: ak, Activated: rec.Activated}, nil
}

// state returns the host's decoded state, from c when the stored bytes
// are the ones c decoded.
func state(c *hostCache, raw []byte) (*hostState, error) {
	if c != nil && c.state != nil && c.stateSum == sha256.Sum256(raw) {
		return c.state, nil
	}
	return decodeState(raw)
}

// parsedProfile is a stored profile with the versions that can be
// accepted anywhere (approved and canary), newest first.
type parsedProfile struct {
	name     string
	versions []parsedVersion
}

// parsedVersion is a version, parsed (p nil: unusable).
type parsedVersion struct {
	store.ProfileVersion
	p *policy.Profile
}

type profileCache struct {
	gen   int64
	valid bool
	list  []parsedProfile
}

// profileSet returns the parsed profiles: every round reads the store's
// profiles generation (one row), and the profiles themselves are read and
// parsed again only when it moved.
func (e *Engine) profileSet(ctx context.Context) ([]parsedProfile, error) {
	gen, err := e.cfg.Store.ProfilesGeneration(ctx)
	if err != nil {
		return nil, err
	}
	e.mu.Lock()
	pc := e.profiles
	e.mu.Unlock()
	if pc.valid && gen == pc.gen {
		return pc.list, nil
	}
	stored, err := e.cfg.Store.ListProfiles(ctx)
	if err != nil {
		return nil, err
	}
	versions, err := e.cfg.Store.AllProfileVersions(ctx)
	if err != nil {
		return nil, err
	}
	byProfile := map[string][]parsedVersion{}
	for _, v := range versions {
		if v.State != store.VersionApproved && v.State != store.VersionCanary {
			continue
		}
		pv := parsedVersion{ProfileVersion: v}
		if ps, err := policy.Parse([]byte(v.Body)); err == nil && len(ps) == 1 {
			pv.p = ps[0]
		}
		byProfile[v.Profile] = append(byProfile[v.Profile], pv)
	}
	list := make([]parsedProfile, 0, len(stored))
	for _, sp := range stored {
		vs := byProfile[sp.Name]
		slices.Reverse(vs)
		list = append(list, parsedProfile{name: sp.Name, versions: vs})
	}
	e.mu.Lock()
	// The generation read before the list: a change in between makes the
	// next check read again.
	e.profiles = profileCache{gen: gen, valid: true, list: list}
	e.mu.Unlock()
	return list, nil
}
