// Package trustcache keeps the filter shim's view of host trust: the newest
// signed verdict per host, verified with the attestation service's pinned
// public key, and the filter decision over it ([Cache.Filter]).
//
// What it checks before a verdict is kept: the envelope is a signed verdict
// (kid, sig and verdict string present), the kid names a pinned key, the
// Ed25519 signature over the verdict bytes is valid, the verdict decodes
// strictly and is well formed (all through [verdict.Verifier]), and its seq
// is newer than the one already held for that host. Everything else is
// dropped and counted by [DropReason]. A verdict byte for byte identical to
// the one held for its host (the service's heartbeat resends every
// verdict) is a duplicate at once: those bytes were checked when they
// first came.
//
// What it does not check: that the issuer is the expected service (the
// pinned key is the trust anchor), or that verified_at is not in the future
// (clock skew between service and shim is tolerated). Freshness is decided
// at lookup time: a verdict past its expires_at, or older than the
// configured maximum age, counts as unknown, so if the service stops
// sending verdicts every host becomes unknown on schedule (fail closed).
//
// The package does no I/O and does not log; the clock is injected.
package trustcache

import (
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/trustpool/trustpool/internal/verdict"
)

// DropReason says why a received verdict was not kept.
type DropReason string

// The drop reasons, used as the metrics label.
const (
	// DropUnsigned: the envelope lacks the verdict, kid or signature.
	DropUnsigned DropReason = "unsigned"
	// DropMalformed: not a signed-verdict envelope, or a validly signed
	// verdict that does not decode or validate.
	DropMalformed DropReason = "malformed"
	// DropBadSignature: the signature does not verify (forged or tampered).
	DropBadSignature DropReason = "bad_signature"
	// DropUnknownKey: signed with a key that is not pinned.
	DropUnknownKey DropReason = "unknown_kid"
	// DropStale: seq older than the verdict already held for the host.
	DropStale DropReason = "stale_seq"
	// DropDuplicate: seq equal to the one already held (a resend, e.g. the
	// snapshot overlapping the fanout). Harmless but counted.
	DropDuplicate DropReason = "duplicate"
)

// DropReasons lists every reason, for exposing zero-valued counters.
var DropReasons = []DropReason{DropUnsigned, DropMalformed, DropBadSignature, DropUnknownKey, DropStale, DropDuplicate}

// Level is the host state a request asks for with trust:trusted_host.
type Level = verdict.Status

// Cache is the host → verdict map. It is safe for concurrent use.
type Cache struct {
	vf     *verdict.Verifier
	now    func() time.Time
	maxAge time.Duration

	mu    sync.RWMutex
	hosts map[string]entry
	// bySum maps the digest of each held verdict's bytes to its host.
	bySum map[[sha256.Size]byte]string
	// version counts the changes of hosts (guarded by mu).
	version uint64

	accepted atomic.Uint64
	dropped  [numDropReasons]atomic.Uint64
}

const numDropReasons = 6

var dropIndex = map[DropReason]int{
	DropUnsigned: 0, DropMalformed: 1, DropBadSignature: 2, DropUnknownKey: 3, DropStale: 4, DropDuplicate: 5,
}

type entry struct {
	v verdict.Verdict
	// sum is SHA-256 of the signed verdict as received: the same bytes
	// again (the service's heartbeat resends every verdict) were verified
	// already and are a duplicate without another signature check.
	sum     [sha256.Size]byte
	expires time.Time // effective expiry: expires_at, capped by maxAge
	note    string    // the verdict's reasons, joined, for reject reasons
	// expiredNote is the note once the verdict has expired.
	expiredNote string
}

// Options configures a Cache.
type Options struct {
	// Verifier holds the pinned public keys. Required.
	Verifier *verdict.Verifier
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// MaxAge, when positive, caps how long after verified_at a verdict is
	// acted on, whatever its expires_at says (a local staleness limit).
	MaxAge time.Duration
}

// New returns an empty cache: every host is unknown until a verdict for it
// arrives.
func New(o Options) *Cache {
	now := o.Now
	if now == nil {
		now = time.Now
	}
	return &Cache{vf: o.Verifier, now: now, maxAge: o.MaxAge, hosts: map[string]entry{}, bySum: map[[sha256.Size]byte]string{}}
}

// Drop is one verdict that was not kept.
type Drop struct {
	Host   string // "" when the verdict could not be read
	Reason DropReason
	Err    error
}

// Result reports what [Cache.Apply] did with a batch.
type Result struct {
	Accepted int
	Drops    []Drop
	// Authentic counts the verdicts whose signature verified with a pinned
	// key, kept or not (duplicates and older seqs are authentic too).
	Authentic int
	// NewestVerifiedAt is the latest verified_at among the authentic
	// verdicts (zero when there is none): how recently the service signed
	// something in this batch. A replayed verdict is as old as it was.
	NewestVerifiedAt time.Time
	// MaxValidity is the longest expires_at − verified_at among the
	// authentic verdicts: the service's verdict validity.
	MaxValidity time.Duration
}

// Apply verifies each raw signed verdict (one JSON object per element, as in
// verdicts_changed's list) and keeps those that are valid and newer than
// what the cache holds. Invalid ones are counted and reported, never kept.
func (c *Cache) Apply(raw []json.RawMessage) Result {
	var res Result
	for _, r := range raw {
		sum := sha256.Sum256(r)
		if v, ok := c.held(sum); ok {
			// Byte for byte the verdict held: authentic, a duplicate.
			res.Authentic++
			if v.VerifiedAt.After(res.NewestVerifiedAt) {
				res.NewestVerifiedAt = v.VerifiedAt
			}
			res.MaxValidity = max(res.MaxValidity, v.ExpiresAt.Sub(v.VerifiedAt))
			res.Drops = append(res.Drops, Drop{Host: v.Host, Reason: DropDuplicate,
				Err: fmt.Errorf("seq %d is not newer than the seq held", v.Seq)})
			c.dropped[dropIndex[DropDuplicate]].Add(1)
			continue
		}
		v, drop := c.verify(r)
		if drop != nil {
			res.Drops = append(res.Drops, *drop)
			c.dropped[dropIndex[drop.Reason]].Add(1)
			continue
		}
		res.Authentic++
		if v.VerifiedAt.After(res.NewestVerifiedAt) {
			res.NewestVerifiedAt = v.VerifiedAt
		}
		res.MaxValidity = max(res.MaxValidity, v.ExpiresAt.Sub(v.VerifiedAt))
		if reason, ok := c.store(v, sum); !ok {
			d := Drop{Host: v.Host, Reason: reason, Err: fmt.Errorf("seq %d is not newer than the seq held", v.Seq)}
			res.Drops = append(res.Drops, d)
			c.dropped[dropIndex[reason]].Add(1)
			continue
		}
		res.Accepted++
		c.accepted.Add(1)
	}
	return res
}

func (c *Cache) verify(raw json.RawMessage) (verdict.Verdict, *Drop) {
	v, err := c.vf.VerifyJSON(raw)
	switch {
	case err == nil:
		return v, nil
	case errors.Is(err, verdict.ErrUnsigned):
		return v, &Drop{Reason: DropUnsigned, Err: err}
	case errors.Is(err, verdict.ErrUnknownKey):
		return v, &Drop{Reason: DropUnknownKey, Err: err}
	case errors.Is(err, verdict.ErrBadSignature):
		return v, &Drop{Reason: DropBadSignature, Err: err}
	default:
		return v, &Drop{Reason: DropMalformed, Err: err}
	}
}

// held returns the verdict held whose received bytes hash to sum, if any.
// The digest alone does not say which host: the verdict is read back and
// the cache's entry for its host must carry this very digest.
func (c *Cache) held(sum [sha256.Size]byte) (verdict.Verdict, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	host, ok := c.bySum[sum]
	if !ok {
		return verdict.Verdict{}, false
	}
	e, ok := c.hosts[host]
	if !ok || e.sum != sum {
		return verdict.Verdict{}, false
	}
	return e.v, true
}

func (c *Cache) store(v verdict.Verdict, sum [sha256.Size]byte) (DropReason, bool) {
	exp := v.ExpiresAt
	if c.maxAge > 0 {
		if capAt := v.VerifiedAt.Add(c.maxAge); capAt.Before(exp) {
			exp = capAt
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if old, ok := c.hosts[v.Host]; ok {
		switch {
		case v.Seq == old.v.Seq:
			return DropDuplicate, false
		case v.Seq < old.v.Seq:
			return DropStale, false
		}
	}
	if old, ok := c.hosts[v.Host]; ok {
		delete(c.bySum, old.sum)
	}
	c.hosts[v.Host] = entry{
		v: v, sum: sum, expires: exp, note: strings.Join(v.Reasons, "; "),
		expiredNote: "verdict expired at " + exp.UTC().Format(time.RFC3339),
	}
	c.bySum[sum] = v.Host
	c.version++
	return "", true
}

// Held is one host's verdict as the cache acts on it: its status and
// profiles, and its effective expiry (expires_at, capped by the maximum
// age). Past ExpiresAt the host is unknown.
type Held struct {
	Host      string
	Status    verdict.Status
	Profiles  []string // sorted; shared with the cache, not to be modified
	ExpiresAt time.Time
}

// Version counts the changes to the verdicts held: it grows whenever a
// verdict is kept, and only then.
func (c *Cache) Version() uint64 {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.version
}

// AppendHeld appends every verdict held, expired or not, sorted by host,
// and returns the Version they are.
func (c *Cache) AppendHeld(dst []Held) ([]Held, uint64) {
	c.mu.RLock()
	start := len(dst)
	for h, e := range c.hosts {
		dst = append(dst, Held{Host: h, Status: e.v.Status, Profiles: e.v.Profiles, ExpiresAt: e.expires})
	}
	version := c.version
	c.mu.RUnlock()
	slices.SortFunc(dst[start:], func(a, b Held) int { return strings.Compare(a.Host, b.Host) })
	return dst, version
}

// Lookup returns the verdict held for host and the status acted on now
// (Unknown when there is none or it has expired).
func (c *Cache) Lookup(host string) (verdict.Verdict, verdict.Status, bool) {
	now := c.now()
	c.mu.RLock()
	e, ok := c.hosts[host]
	c.mu.RUnlock()
	if !ok {
		return verdict.Verdict{}, verdict.Unknown, false
	}
	return e.v, e.status(now), true
}

func (e entry) status(now time.Time) verdict.Status {
	if !now.Before(e.expires) {
		return verdict.Unknown
	}
	return e.v.Status
}

// Request is a filter question: which of Hosts satisfy TrustedHost and/or
// Profile (at least one is set).
type Request struct {
	Hosts       []string
	TrustedHost *Level
	Profile     *string
}

// Decision is the answer: the passing hosts and the rejected ones with
// their reasons, both in request order; a host named twice in the request
// appears once.
type Decision struct {
	Passes   []string
	Rejected []Rejection
}

// Rejection is one rejected host and why: Cause says which condition
// failed, Note what the verdict says (its reasons, "no verdict", or when it
// expired). Both are shared strings, so a large answer allocates little.
type Rejection struct {
	Host, Cause, Note string
}

// MaxReasonLen bounds a reason string sent back to Nova's log.
const MaxReasonLen = 256

// Reason is the rejection as one line: "cause (note)", at most
// MaxReasonLen bytes.
func (r Rejection) Reason() string {
	s := r.Cause
	if r.Note != "" {
		s += " (" + r.Note + ")"
	}
	if len(s) > MaxReasonLen {
		s = s[:MaxReasonLen-3] + "..."
	}
	return s
}

// causes are the few distinct failure texts one request can produce,
// built once per request.
type causes struct {
	byStatus       map[verdict.Status]string // status does not satisfy the request
	profileMissing string                    // trusted, but without the profile
}

func newCauses(req Request) causes {
	c := causes{byStatus: map[verdict.Status]string{}}
	for _, st := range []verdict.Status{verdict.Trusted, verdict.Untrusted, verdict.Unknown} {
		var parts []string
		if req.TrustedHost != nil && st != *req.TrustedHost {
			parts = append(parts, "status is "+string(st)+", want "+string(*req.TrustedHost))
		}
		if req.Profile != nil && st != verdict.Trusted {
			parts = append(parts, "status is "+string(st)+", profile "+*req.Profile+" needs trusted")
		}
		c.byStatus[st] = strings.Join(parts, "; ")
	}
	if req.Profile != nil {
		c.profileMissing = "profile " + *req.Profile + " not satisfied"
		if req.TrustedHost != nil && *req.TrustedHost != verdict.Trusted {
			c.profileMissing = "status is trusted, want " + string(*req.TrustedHost) + "; " + c.profileMissing
		}
	}
	return c
}

var seenPool = sync.Pool{New: func() any { return map[string]struct{}{} }}

// Filter applies the filter's truth table at the current time:
//
//   - trust:trusted_host=V passes when the host's current, unexpired
//     verdict status equals V; a host with no verdict or an expired one is
//     unknown;
//   - trust:profile=P passes when the host's verdict is trusted, unexpired
//     and lists P in its profiles;
//   - with both, both must hold.
func (c *Cache) Filter(req Request) Decision {
	now := c.now()
	cs := newCauses(req)
	d := Decision{Passes: make([]string, 0, len(req.Hosts)), Rejected: make([]Rejection, 0, len(req.Hosts)/2)}
	seen, _ := seenPool.Get().(map[string]struct{})
	defer func() { clear(seen); seenPool.Put(seen) }()
	c.mu.RLock()
	defer c.mu.RUnlock()
	for _, h := range req.Hosts {
		if _, dup := seen[h]; dup {
			continue
		}
		seen[h] = struct{}{}
		e, ok := c.hosts[h]
		if cause, note := decide(e, ok, now, req, &cs); cause != "" {
			d.Rejected = append(d.Rejected, Rejection{Host: h, Cause: cause, Note: note})
			continue
		}
		d.Passes = append(d.Passes, h)
	}
	return d
}

// Mask appends to dst one byte per requested host, in request order
// (duplicates included): '1' when the host passes, '0' when not. It decides
// exactly as Filter does, without the reasons.
func (c *Cache) Mask(req Request, dst []byte) []byte {
	now := c.now()
	cs := newCauses(req)
	c.mu.RLock()
	defer c.mu.RUnlock()
	for _, h := range req.Hosts {
		e, ok := c.hosts[h]
		if cause, _ := decide(e, ok, now, req, &cs); cause != "" {
			dst = append(dst, '0')
		} else {
			dst = append(dst, '1')
		}
	}
	return dst
}

const noVerdict = "no verdict"

// decide returns cause "" when the host passes, else the failed condition
// and the verdict's note.
func decide(e entry, ok bool, now time.Time, req Request, cs *causes) (cause, note string) {
	status := verdict.Unknown
	switch {
	case !ok:
		note = noVerdict
	case !now.Before(e.expires):
		note = e.expiredNote
	default:
		status = e.v.Status
		note = e.note
	}
	if status == verdict.Trusted && req.Profile != nil && !contains(e.v.Profiles, *req.Profile) {
		return cs.profileMissing, note
	}
	return cs.byStatus[status], note
}

func contains(sorted []string, s string) bool {
	i := sort.SearchStrings(sorted, s)
	return i < len(sorted) && sorted[i] == s
}

// Stats are the counters and gauges the metrics endpoint exposes.
type Stats struct {
	Accepted uint64
	Dropped  map[DropReason]uint64
	// Hosts counts hosts by the status acted on now; expired verdicts are
	// counted under "expired" (they act as unknown).
	Hosts map[string]int
}

// Stats returns the current counters and host counts.
func (c *Cache) Stats() Stats {
	now := c.now()
	s := Stats{Accepted: c.accepted.Load(), Dropped: map[DropReason]uint64{}, Hosts: map[string]int{
		string(verdict.Trusted): 0, string(verdict.Untrusted): 0, string(verdict.Unknown): 0, "expired": 0,
	}}
	for r, i := range dropIndex {
		s.Dropped[r] = c.dropped[i].Load()
	}
	c.mu.RLock()
	defer c.mu.RUnlock()
	for _, e := range c.hosts {
		if !now.Before(e.expires) {
			s.Hosts["expired"]++
			continue
		}
		s.Hosts[string(e.v.Status)]++
	}
	return s
}

// Len is the number of hosts with a verdict (expired or not).
func (c *Cache) Len() int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return len(c.hosts)
}

// ProfileNamePattern is what a profile name may look like, here and in the
// Nova extra-spec validator (trust:profile).
const ProfileNamePattern = `[A-Za-z0-9][A-Za-z0-9._-]{0,63}`

var profileRE = regexp.MustCompile(`^` + ProfileNamePattern + `$`)

// ValidProfileName reports whether s is an acceptable profile name.
func ValidProfileName(s string) bool { return profileRE.MatchString(s) }
