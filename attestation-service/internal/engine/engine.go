// Package engine is the attestation service's core: enrollment (register_host
// → TPM2_MakeCredential challenge, activate_credential → binding), one
// attestation round per host (fresh nonce → agent quote → evidence.Verify →
// policy evaluation → signed verdict), verdict publication and the admin
// operations the REST API exposes.
//
// # Trust rules (never fail open)
//
//   - trusted: fresh evidence verified by evidence.Verify and the host's
//     required profiles passed (its assigned profiles, else the configured
//     required_profiles; when both are empty, at least one defined profile
//     must pass — a host is never trusted without reference values).
//   - untrusted: the evidence was invalid (any evidence.Verify error) or a
//     profile failed; reasons name each failure.
//   - unknown: no usable evidence: not enrolled (no activated binding, e.g.
//     an EK awaiting approval), agent unreachable or past its deadline
//     (reason unreachable), an answer that cannot be used (too large, not
//     decodable: reason invalid_reply), or an internal error.
//
// expires_at is verified_at + validity for verdicts from fresh evidence and
// equal to verified_at for unknown verdicts; it is never extended: the
// heartbeat republishes the stored signed bytes. Each new verdict takes the
// next persisted per-host sequence number before it is signed. IMA appraisal
// failures stick to a host until it reboots.
//
// # Enrollment: one TPM, one host
//
// register_host checks the EK (and its certificate when required) and the
// AK and always answers with a TPM2_MakeCredential challenge: nothing is
// recorded until activate_credential proves that the AK and the EK live in
// one TPM. Then, under the host's lock:
//
//   - the host's bound EK: the AK is (re-)bound, the host attested at once;
//   - no binding, auto mode, an EK no other host holds: bound;
//   - no binding, an EK bound to another host name (either mode): a
//     pending request; the host's verdict is unknown with reason
//     ek_bound_to_other_host, naming the holder;
//   - no binding, approve mode: a pending request (approval_required);
//   - an enrolled host proving a different EK: a pending request
//     (ek_changed). The host keeps its binding, its rounds and its verdict:
//     its bound AK answers for it until an administrator decides, so a
//     peer with broker credentials cannot knock it out this way.
//
// An EK is bound to one host name at most: the store's unique index decides,
// so concurrent activations of one EK under several names bind it once.
// Each new request is audited (host.ek_change_requested) and notified
// (trustpool.host.ek_change_requested); an agent retrying the same request
// changes nothing. ApproveEK binds the pending EK (the agent then activates
// it; until then the host is unknown, ek_approved); an EK bound elsewhere
// moves only with Approval.Force and its former holder turns unknown
// (ek_moved_to_other_host). RejectEK drops the request and refuses that EK
// for the host until the host is deleted (ek_rejected for hosts without a
// binding). Deleting a host frees its EK.
//
// The Reason* codes are stable prefixes of these verdict reasons and of the
// API's pending_reason. What enrollment cannot check: that a host name
// belongs to the machine presenting it. A TPM proves only itself, so anyone
// with broker credentials and a TPM (swtpm will do) can file requests under
// any name; approving one hands the name to that TPM. Administrators
// approve fingerprints they know (Approval.Fingerprint guards against a
// request replaced after review).
//
// # Publication
//
// A verdict is cast on the fanout when its status, profiles or
// reasons change, and also when the copy the shims hold (the last one
// published) would expire before the next publication: the next heartbeat
// (which republishes the stored verdicts) or the next round (interval +
// jitter + two quote timeouts), plus a margin. So a host that stays trusted
// and keeps answering never expires at a shim while the service runs.
// After a restart the engine does not know what the shims hold, so every
// host's first verdict is published.
//
// Nonces are 32 random bytes from evidence.Ledger, single use, with a
// lifetime of at most 2 × interval. The ledger is in memory: a nonce is
// issued and consumed within one round by one instance, so nothing of it
// must survive an instance change. Enrollment challenges do (register_host
// and activate_credential may reach different instances): they are in the
// store, with a hash of the secret only. Per-host memory is bounded: a
// host's lock exists only while work on it is in progress; deleting a host
// drops its nonces, challenges, cache entry and publication record; Prune
// (on the service's timer) drops what ran out.
//
// # Several instances
//
// Instances sharing one store never store a verdict older than the one
// they replace (store.RecordVerdict takes the seq and stores the verdict
// signed with it in one transaction). Caches (parsed keys, decoded state,
// parsed profiles) are checked against the store every round. A round due
// by the interval is skipped (RecentlyAttestedError) when another instance
// recorded the host's verdict less than half an interval ago; the service
// decides which instance owns which host (package cluster) and Heartbeat
// republishes only the hosts Config.Owns reports.
package engine

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"slices"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/trustpool/trustpool/attestation-service/internal/metrics"
	"github.com/trustpool/trustpool/attestation-service/internal/store"
	"github.com/trustpool/trustpool/internal/attestapi"
	"github.com/trustpool/trustpool/internal/attestrpc"
	"github.com/trustpool/trustpool/internal/evidence"
	"github.com/trustpool/trustpool/internal/policy"
	"github.com/trustpool/trustpool/internal/verdict"
)

// Errors for callers to branch on.
var (
	// ErrNotEnrolled: the host has no activated binding.
	ErrNotEnrolled = errors.New("host not enrolled")
	// ErrNothingPending: no EK awaits approval for the host.
	ErrNothingPending = errors.New("no EK awaiting approval")
	// ErrPendingMismatch: the pending EK is not the one the administrator
	// named.
	ErrPendingMismatch = errors.New("pending EK differs from the one named")
	// ErrNoEvidence: the host has no verified evidence to learn from.
	ErrNoEvidence = errors.New("host has no verified evidence")
	// ErrInvalidReply is wrapped by AgentClient errors when the agent
	// answered but its reply was unusable (too large, not decodable, not
	// a quote result): the host is unknown with reason invalid_reply.
	ErrInvalidReply = errors.New("invalid reply")
)

// Enrollment modes.
const (
	ModeAuto    = "auto"
	ModeApprove = "approve"
)

// AgentClient calls an agent's quote method (the service wires oslo RPC).
// An answer that arrived but cannot be used is an error wrapping
// ErrInvalidReply.
type AgentClient interface {
	Quote(ctx context.Context, host string, args *attestrpc.QuoteArgs) (*attestrpc.QuoteResult, error)
}

// Publisher sends verdicts to the fanout and notifications.
type Publisher interface {
	PublishVerdicts(ctx context.Context, vs []verdict.Signed) error
	Notify(ctx context.Context, eventType string, payload any) error
}

// VerdictObserver learns of every verdict the engine stores, right after it
// is stored: old is the host's previous verdict (nil when none). It is
// called with the host's lock held, so it must not block; the service uses
// it for Placement traits and revocation actions.
type VerdictObserver interface {
	VerdictStored(old *verdict.Verdict, v verdict.Verdict)
}

// Config configures an Engine. Durations must be positive.
type Config struct {
	Issuer   string
	Interval time.Duration
	// Jitter is the scheduler's jitter: a host's rounds are at most
	// Interval + Jitter apart (plus the round itself).
	Jitter       time.Duration
	Validity     time.Duration
	QuoteTimeout time.Duration
	// HeartbeatInterval is how often the service calls Heartbeat (0: it
	// does not); a heartbeat due before the shims' copy expires spares
	// publishing an unchanged verdict.
	HeartbeatInterval time.Duration
	NonceLifetime     time.Duration
	PCRs              []int
	// RequiredProfiles apply to hosts without their own assignment.
	RequiredProfiles     []string
	EnrollmentMode       string
	RequireEKCert        bool
	EKRoots              *x509.CertPool
	EKIntermediates      *x509.CertPool
	AllowMissingEventLog bool

	// VerdictFormat is the signed verdicts' wire format: 0 is
	// verdict.FormatLatest; verdict.Format1 keeps verdicts readable by
	// shims from before format 2 during a rolling upgrade.
	VerdictFormat int

	Store     *store.Store
	Signer    *verdict.Signer
	Agents    AgentClient
	Publisher Publisher
	Logger    *slog.Logger
	Metrics   *metrics.Registry
	// Trigger asks the scheduler to attest a host now (set by the service).
	Trigger func(host string)
	// Owns reports whether this instance attests host (several instances
	// share the fleet); the heartbeat republishes only those hosts' verdicts.
	// Nil: every host.
	Owns func(host string) bool
	// Observer, when set, is told of every stored verdict.
	Observer VerdictObserver
	Rand     io.Reader
	Now      func() time.Time
}

// Engine is the attestation core. It is safe for concurrent use.
type Engine struct {
	cfg    Config
	ledger *evidence.Ledger
	log    *slog.Logger

	mu        sync.Mutex
	hostLocks map[string]*lockEntry
	cache     map[string]*hostCache
	profiles  profileCache
	// published is the expires_at of the newest verdict of each host cast
	// on the fanout, i.e. how long the shims' copy lasts.
	published map[string]time.Time
	// lastHeartbeat is when Heartbeat last started.
	lastHeartbeat time.Time

	m engineMetrics
}

type engineMetrics struct {
	rounds       *metrics.Counter
	verifySecs   *metrics.Histogram
	roundSecs    *metrics.Histogram
	published    *metrics.Counter
	enrollments  *metrics.Counter
	hostStatuses *metrics.Gauge
}

const maxPendingChallenges = 10000

// New returns an Engine.
func New(cfg Config) *Engine {
	if cfg.Rand == nil {
		cfg.Rand = rand.Reader
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Metrics == nil {
		cfg.Metrics = metrics.New()
	}
	if cfg.Trigger == nil {
		cfg.Trigger = func(string) {}
	}
	if cfg.Owns == nil {
		cfg.Owns = func(string) bool { return true }
	}
	if cfg.VerdictFormat == 0 {
		cfg.VerdictFormat = verdict.FormatLatest
	}
	if cfg.NonceLifetime <= 0 || cfg.NonceLifetime > 2*cfg.Interval {
		cfg.NonceLifetime = 2 * cfg.Interval
	}
	r := cfg.Metrics
	e := &Engine{
		cfg: cfg, ledger: evidence.NewLedger(cfg.NonceLifetime), log: cfg.Logger,
		hostLocks: map[string]*lockEntry{}, cache: map[string]*hostCache{}, published: map[string]time.Time{},
		m: engineMetrics{
			rounds:       r.NewCounter("trustpool_attestation_rounds_total", "Attestation rounds by resulting status.", "status"),
			verifySecs:   r.NewHistogram("trustpool_attestation_verify_seconds", "Time to verify evidence and evaluate profiles.", []float64{.0005, .001, .0025, .005, .01, .05, .1}),
			roundSecs:    r.NewHistogram("trustpool_attestation_round_seconds", "Time of a whole attestation round (quote call included).", []float64{.01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}),
			published:    r.NewCounter("trustpool_verdicts_published_total", "Signed verdicts cast on the verdict fanout.", "kind"),
			enrollments:  r.NewCounter("trustpool_enrollment_total", "Enrollment steps by outcome.", "outcome"),
			hostStatuses: r.NewGauge("trustpool_hosts", "Hosts by current verdict status.", "status"),
		},
	}
	return e
}

// lockEntry is a host's mutex and the number of goroutines holding or
// waiting for it; the entry is dropped when that reaches zero, so the map
// holds only hosts with work in progress, whatever names peers send.
type lockEntry struct {
	mu   sync.Mutex
	refs int
}

// hostMutex serialises the work on one host (Lock, then Unlock once).
type hostMutex struct {
	e    *Engine
	host string
	l    *lockEntry
}

func (e *Engine) hostLock(host string) *hostMutex { return &hostMutex{e: e, host: host} }

// Lock takes the host's mutex.
func (m *hostMutex) Lock() {
	m.e.mu.Lock()
	l, ok := m.e.hostLocks[m.host]
	if !ok {
		l = &lockEntry{}
		m.e.hostLocks[m.host] = l
	}
	l.refs++
	m.e.mu.Unlock()
	m.l = l
	l.mu.Lock()
}

// Unlock releases it, dropping the entry when nobody else waits.
func (m *hostMutex) Unlock() {
	l := m.l
	l.mu.Unlock()
	m.e.mu.Lock()
	if l.refs--; l.refs == 0 {
		delete(m.e.hostLocks, m.host)
	}
	m.e.mu.Unlock()
}

// hostState is the per-host verification state kept in the store.
type hostState struct {
	Previous  *evidence.Previous  `json:"previous,omitempty"`
	IMATaint  map[string][]string `json:"ima_taint,omitempty"`
	IMAResync bool                `json:"ima_resync,omitempty"`
	Last      *Summary            `json:"last,omitempty"`
}

// Summary describes a host's last attestation attempt; it is stored with
// the host's state and shown by the API (api converts it).
type Summary struct {
	At             time.Time           `json:"at"`
	Status         verdict.Status      `json:"status"`
	Reasons        []string            `json:"reasons"`
	Reachable      bool                `json:"reachable"`
	Verified       bool                `json:"verified"`
	Rebooted       bool                `json:"rebooted,omitempty"`
	PCRs           map[string]string   `json:"pcrs,omitempty"`
	Boot           map[string]string   `json:"boot,omitempty"`
	Clock          *evidence.ClockInfo `json:"clock,omitempty"`
	IMAEntries     int                 `json:"ima_new_entries,omitempty"`
	IMAOffset      int64               `json:"ima_offset,omitempty"`
	EvidenceDigest string              `json:"evidence_digest,omitempty"`
	Profiles       []policy.Result     `json:"profiles,omitempty"`
	DurationMS     float64             `json:"duration_ms"`
}

// api returns the summary as the REST API shows it.
func (s *Summary) api() *attestapi.Attestation {
	a := &attestapi.Attestation{At: s.At, Status: s.Status, Reasons: nonNil(s.Reasons), Reachable: s.Reachable,
		Verified: s.Verified, Rebooted: s.Rebooted, PCRs: s.PCRs, Boot: s.Boot, IMANewEntries: s.IMAEntries,
		IMAOffset: s.IMAOffset, EvidenceDigest: s.EvidenceDigest, DurationMS: s.DurationMS}
	if c := s.Clock; c != nil {
		a.Clock = &attestapi.Clock{Clock: c.Clock, ResetCount: c.ResetCount, RestartCount: c.RestartCount, Safe: c.Safe}
	}
	for _, r := range s.Profiles {
		a.Profiles = append(a.Profiles, attestapi.ProfileResult{Profile: r.Profile, Version: r.Version, Pass: r.Pass, Reasons: r.Reasons, IMAReasons: r.IMAReasons})
	}
	return a
}

func decodeState(b []byte) (*hostState, error) {
	st := &hostState{}
	if len(b) == 0 {
		return st, nil
	}
	if err := json.Unmarshal(b, st); err != nil {
		return nil, fmt.Errorf("decode host state: %w", err)
	}
	// A verified round's PCRs and boot facts are Previous's (see
	// encodeState).
	if l, p := st.Last, st.Previous; l != nil && l.Verified && p != nil {
		if l.PCRs == nil && p.PCRs != nil {
			l.PCRs = make(map[string]string, len(p.PCRs))
			for i, v := range p.PCRs {
				l.PCRs[strconv.Itoa(i)] = hex.EncodeToString(v)
			}
		}
		if l.Boot == nil && p.Boot != nil {
			l.Boot = p.Boot.Map()
		}
	}
	return st, nil
}

// encodeState is the stored form of st. Every round writes it, so what
// can be derived is left out: after a verified round the summary's PCRs
// and boot facts are those of Previous (decodeState puts them back).
func encodeState(st *hostState) ([]byte, error) {
	if l, p := st.Last, st.Previous; l != nil && l.Verified && p != nil && sameAsPrevious(l, p) {
		c := *st
		lc := *l
		lc.PCRs, lc.Boot = nil, nil
		c.Last = &lc
		return json.Marshal(&c)
	}
	return json.Marshal(st)
}

// sameAsPrevious reports whether the summary's PCRs and boot facts are
// Previous's, so they can be derived.
func sameAsPrevious(l *Summary, p *evidence.Previous) bool {
	if len(l.PCRs) != len(p.PCRs) {
		return false
	}
	for i, v := range p.PCRs {
		if l.PCRs[strconv.Itoa(i)] != hex.EncodeToString(v) {
			return false
		}
	}
	if p.Boot == nil {
		return l.Boot == nil
	}
	return maps.Equal(l.Boot, p.Boot.Map())
}

// Attest runs one attestation round for host and records the verdict.
// It returns ErrNotEnrolled for hosts without an activated binding.
func (e *Engine) Attest(ctx context.Context, host string) (verdict.Verdict, error) {
	return e.AttestRound(ctx, host, true)
}

// AttestRound is Attest for the scheduler: a round due by the interval
// (triggered false) is skipped, with an error wrapping
// *RecentlyAttestedError, when another instance recorded a verdict for the
// host less than half an interval ago (instances that briefly disagree
// about who owns the host); a triggered round always runs.
func (e *Engine) AttestRound(ctx context.Context, host string, triggered bool) (verdict.Verdict, error) {
	v, _, _, err := e.attest(ctx, host, triggered)
	return v, err
}

// attest is AttestRound; it also returns the host's record as the round
// used it and a copy of the state the round left (the cached state is the
// next round's to change), whose Previous holds the verified PCR values
// when Last.Verified is set.
func (e *Engine) attest(ctx context.Context, host string, triggered bool) (verdict.Verdict, *store.HostRecord, *hostState, error) {
	l := e.hostLock(host)
	l.Lock()
	defer l.Unlock()
	start := time.Now()

	rec, err := e.cfg.Store.GetHost(ctx, host)
	if err != nil {
		return verdict.Verdict{}, nil, nil, err
	}
	// A pending EK request does not stop the rounds: the bound AK answers
	// for the host until an administrator decides.
	if !rec.Activated {
		return verdict.Verdict{}, nil, nil, fmt.Errorf("attest %s: %w", host, ErrNotEnrolled)
	}
	now := e.cfg.Now()
	if !triggered && !rec.AttestedAt.IsZero() && now.Sub(rec.AttestedAt) < e.cfg.Interval/2 && now.After(rec.AttestedAt) {
		return verdict.Verdict{}, nil, nil, fmt.Errorf("attest %s: %w", host, &RecentlyAttestedError{At: rec.AttestedAt})
	}
	defer func() { e.m.roundSecs.Observe(time.Since(start).Seconds()) }()
	c := e.takeCache(host)
	b, err := binding(c, rec)
	if err != nil {
		e.log.Error("stored keys unusable", "host", host, "error", err)
	}
	st, serr := state(c, rec.State)
	if serr != nil {
		// Unusable state: start over from a full verification.
		e.log.Error("host state unusable, resetting", "host", host, "error", serr)
		st = &hostState{}
	}
	var v verdict.Verdict
	var sum *Summary
	if err != nil {
		v, sum = unknownVerdict(rec.Name, e.cfg.Now(), "internal: "+err.Error())
	} else {
		v, sum = e.round(ctx, rec, b, st)
	}
	sum.DurationMS = float64(time.Since(start).Microseconds()) / 1000
	st.Last = sum
	e.m.rounds.Inc(string(v.Status))
	v, stb, err := e.record(ctx, rec, v, st)
	if err == nil && b.AK != nil {
		e.putCache(host, &hostCache{ekRaw: rec.EKPublic, akRaw: rec.AKPublic, binding: b, stateSum: sha256.Sum256(stb), state: st})
	}
	left := *st
	return v, rec, &left, err
}

// RecentlyAttestedError says a round was skipped: the host's latest
// verdict, recorded At (by another instance), is recent.
type RecentlyAttestedError struct{ At time.Time }

func (e *RecentlyAttestedError) Error() string {
	return "attested at " + e.At.UTC().Format(time.RFC3339Nano) + " by another instance"
}

// unknownVerdict is an unknown verdict and its summary, reason given.
func unknownVerdict(host string, now time.Time, reason string) (verdict.Verdict, *Summary) {
	sum := &Summary{At: now, Status: verdict.Unknown, Reasons: []string{reason}}
	return verdict.Verdict{Host: host, Status: verdict.Unknown, Reasons: sum.Reasons, VerifiedAt: now, ExpiresAt: now}, sum
}

// round does the work of Attest without persisting anything. When the
// agent omitted the unchanged event log but the PCRs moved (so steady state
// does not apply), it asks once more for the full log at once.
func (e *Engine) round(ctx context.Context, rec *store.HostRecord, binding evidence.Binding, st *hostState) (verdict.Verdict, *Summary) {
	v, sum, retry := e.roundOnce(ctx, rec, binding, st, false)
	if retry {
		v, sum, _ = e.roundOnce(ctx, rec, binding, st, true)
	}
	return v, sum
}

func (e *Engine) roundOnce(ctx context.Context, rec *store.HostRecord, binding evidence.Binding, st *hostState, fullLog bool) (_ verdict.Verdict, _ *Summary, retryFullLog bool) {
	now := e.cfg.Now()
	sum := &Summary{At: now}
	unknown := func(reason string) (verdict.Verdict, *Summary, bool) {
		sum.Status, sum.Reasons = verdict.Unknown, []string{reason}
		return verdict.Verdict{Host: rec.Name, Status: verdict.Unknown, Reasons: sum.Reasons, VerifiedAt: now, ExpiresAt: now}, sum, false
	}
	ch, err := e.ledger.Issue(e.cfg.Rand, now, rec.Name, e.cfg.PCRs)
	if err != nil {
		return unknown("internal: cannot draw a nonce")
	}
	args := &attestrpc.QuoteArgs{Nonce: ch.Nonce, PCRSelection: e.cfg.PCRs}
	if p := st.Previous; p != nil {
		args.LogOffsets.IMA = p.IMA.Offset
		if !fullLog {
			args.LogOffsets.EventLogDigest = hex.EncodeToString(p.EventLogDigest)
		}
	}
	if st.IMAResync {
		args.LogOffsets.IMA = 0
	}
	qctx, cancel := context.WithTimeout(ctx, e.cfg.QuoteTimeout)
	res, err := e.cfg.Agents.Quote(qctx, rec.Name, args)
	cancel()
	if err != nil {
		// The round is over: nothing can answer this nonce any more.
		e.ledger.Discard(ch.Nonce)
		switch {
		case ctx.Err() != nil:
			return unknown("internal: service shutting down")
		case errors.Is(err, ErrInvalidReply):
			// The agent answered, with nothing usable: no evidence.
			sum.Reachable = true
			return unknown("invalid_reply: " + err.Error())
		}
		return unknown("unreachable: " + err.Error())
	}
	sum.Reachable = true
	now = e.cfg.Now()
	sum.At = now
	untrusted := func(reasons ...string) (verdict.Verdict, *Summary, bool) {
		sum.Status, sum.Reasons = verdict.Untrusted, reasons
		v := verdict.Verdict{Host: rec.Name, Status: verdict.Untrusted, Reasons: reasons, VerifiedAt: now, ExpiresAt: now.Add(e.cfg.Validity)}
		if len(res.Attest) > 0 && len(res.Attest) <= evidence.MaxAttestSize {
			d := sha256.Sum256(res.Attest)
			v.EvidenceDigest = hex.EncodeToString(d[:])
		}
		return v, sum, false
	}
	used, err := e.ledger.Consume(rec.Name, ch.Nonce, now)
	if err != nil {
		return untrusted(evidence.Reason(err) + ": " + err.Error())
	}
	ev := &evidence.Evidence{Attest: res.Attest, Signature: res.Signature, PCRs: res.PCRs, EventLog: res.EventLog,
		IMALog: res.IMALog, IMAOffset: res.IMAOffset, IMAHashSize: res.IMAHashSize}
	vstart := time.Now()
	defer func() { e.m.verifySecs.Observe(time.Since(vstart).Seconds()) }()
	result, err := evidence.Verify(binding, used, ev, st.Previous, evidence.Options{
		Now: now, NonceLifetime: e.cfg.NonceLifetime, AllowMissingEventLog: e.cfg.AllowMissingEventLog,
	})
	if err != nil {
		if errors.Is(err, evidence.ErrEventLogMissing) && args.LogOffsets.EventLogDigest != "" && len(res.EventLog) == 0 {
			v, s, _ := untrusted("evidence: " + evidence.Reason(err) + ": " + err.Error())
			return v, s, true
		}
		st.IMAResync = errors.Is(err, evidence.ErrIMAOffset)
		return untrusted("evidence: " + evidence.Reason(err) + ": " + err.Error())
	}
	st.IMAResync = false
	sum.Verified = true
	sum.Rebooted = result.Rebooted
	sum.Clock = &result.Clock
	sum.EvidenceDigest = hex.EncodeToString(result.AttestDigest)
	sum.PCRs = map[string]string{}
	for i, v := range result.PCRs {
		sum.PCRs[fmt.Sprint(i)] = hex.EncodeToString(v)
	}
	boot := result.Boot
	if boot == nil && st.Previous != nil && !result.Rebooted {
		boot = st.Previous.Boot
	}
	if boot != nil {
		sum.Boot = boot.Map()
	}
	next := &evidence.Previous{Clock: result.Clock, PCRs: result.PCRs, EventLogDigest: result.EventLogDigest, Boot: boot}
	var imaNew = result.IMA
	switch {
	case imaNew != nil:
		next.IMA = imaNew.State
		sum.IMAEntries = len(imaNew.New)
	case st.Previous != nil && !result.Rebooted:
		next.IMA = st.Previous.IMA
	}
	sum.IMAOffset = next.IMA.Offset
	if result.Rebooted {
		st.IMATaint = nil
	}
	st.Previous = next

	in := policy.Input{PCRs: result.PCRs, Boot: boot}
	if imaNew != nil {
		in.IMA = imaNew.New
	}
	status, satisfied, reasons, results := e.appraise(ctx, rec, st, in)
	sum.Profiles = results
	sum.Status, sum.Reasons = status, reasons
	v := verdict.Verdict{Host: rec.Name, Status: status, Profiles: satisfied, Reasons: reasons, VerifiedAt: now,
		ExpiresAt: now.Add(e.cfg.Validity), EvidenceDigest: hex.EncodeToString(result.AttestDigest)}
	return v, sum, false
}

// appraise evaluates every defined profile and decides trust from the
// host's required ones.
func (e *Engine) appraise(ctx context.Context, rec *store.HostRecord, st *hostState, in policy.Input) (verdict.Status, []string, []string, []policy.Result) {
	stored, err := e.profileSet(ctx)
	if err != nil {
		return verdict.Untrusted, nil, []string{"internal: cannot load profiles"}, nil
	}
	results := map[string]policy.Result{}
	var all []policy.Result
	satisfied := []string{}
	for _, sp := range stored {
		r := e.appraiseProfile(rec.Name, sp, st, in)
		results[sp.name] = r
		all = append(all, r)
		if r.Pass {
			satisfied = append(satisfied, sp.name)
		}
	}
	sort.Strings(satisfied)
	required := rec.Profiles
	if required == nil {
		required = e.cfg.RequiredProfiles
	}
	var reasons []string
	if len(required) == 0 {
		if len(satisfied) > 0 {
			return verdict.Trusted, satisfied, nil, all
		}
		if len(stored) == 0 {
			return verdict.Untrusted, satisfied, []string{"no profiles defined: nothing to appraise against"}, all
		}
		for _, r := range all {
			for _, reason := range r.Reasons {
				reasons = append(reasons, "profile "+r.Profile+": "+reason)
			}
		}
		return verdict.Untrusted, satisfied, reasons, all
	}
	for _, name := range required {
		r, ok := results[name]
		if !ok {
			reasons = append(reasons, "profile "+name+": not defined")
			continue
		}
		for _, reason := range r.Reasons {
			reasons = append(reasons, "profile "+name+": "+reason)
		}
	}
	if len(reasons) > 0 {
		return verdict.Untrusted, satisfied, reasons, all
	}
	return verdict.Trusted, satisfied, nil, all
}

// appraiseProfile evaluates the versions of sp that host may match: the
// approved ones and the canaries naming it. Every such version is
// evaluated each round, passing or not, so the IMA failures of each are
// remembered for the rest of the boot (st.IMATaint) even while a newer
// version passes. The result names the newest version that passes; when
// none does, every version's reasons are given, prefixed by the version
// when there are several.
func (e *Engine) appraiseProfile(host string, sp parsedProfile, st *hostState, in policy.Input) policy.Result {
	out := policy.Result{Profile: sp.name}
	var failed []policy.Result
	for _, v := range sp.versions {
		if !v.Accepts(host) {
			continue
		}
		r := policy.Result{Profile: sp.name, Version: v.Version}
		if v.p == nil {
			r.Reasons = []string{"profile unusable"}
		} else {
			r = v.p.Evaluate(in)
			r.Profile, r.Version = sp.name, v.Version
			key := taintKey(sp.name, v.Version)
			for _, reason := range r.IMAReasons {
				if st.IMATaint == nil {
					st.IMATaint = map[string][]string{}
				}
				if !slices.Contains(st.IMATaint[key], reason) && len(st.IMATaint[key]) < 32 {
					st.IMATaint[key] = append(st.IMATaint[key], reason)
				}
			}
			for _, t := range st.IMATaint[key] {
				if !slices.Contains(r.Reasons, t) {
					r.Reasons = append(r.Reasons, t+" (earlier this boot)")
				}
			}
			r.Pass = len(r.Reasons) == 0
		}
		if r.Pass && !out.Pass {
			out = r
		}
		if !r.Pass {
			failed = append(failed, r)
		}
	}
	switch {
	case out.Pass:
		return out
	case len(failed) == 0:
		out.Reasons = []string{"no approved version (and no canary version naming this host)"}
	case len(failed) == 1:
		out.Reasons, out.IMAReasons = failed[0].Reasons, failed[0].IMAReasons
	default:
		for _, r := range failed {
			for _, reason := range r.Reasons {
				out.Reasons = append(out.Reasons, fmt.Sprintf("version %d: %s", r.Version, reason))
			}
			out.IMAReasons = append(out.IMAReasons, r.IMAReasons...)
		}
	}
	return out
}

// taintKey is where st.IMATaint keeps a version's IMA failures. Version 1
// uses the profile's name, the key before versions existed, so a profile
// migrated to versions keeps the failures its host already had this boot.
func taintKey(profile string, version int) string {
	if version == 1 {
		return profile
	}
	return fmt.Sprintf("%s#%d", profile, version)
}

// record assigns the next sequence number, signs, stores and, when needed,
// publishes v: on a change of status, profiles or reasons, and whenever the
// copy the shims hold would expire before the next publication (heartbeat
// or round), so a host that stays trusted is never rejected for an expired
// verdict; after a restart that is every host's first verdict. The sequence
// number is taken, the verdict signed with it and stored in one store
// transaction (store.RecordVerdict), so instances sharing the database
// never store a verdict older than the one they replace. It returns the
// recorded verdict and the stored state.
func (e *Engine) record(ctx context.Context, rec *store.HostRecord, v verdict.Verdict, st *hostState) (verdict.Verdict, []byte, error) {
	v.Issuer = e.cfg.Issuer
	if v.Profiles == nil {
		v.Profiles = []string{}
	}
	v.Format = e.cfg.VerdictFormat
	if v.Format == verdict.Format2 {
		// The round's summary (st.Last) is the verdict's: each satisfied
		// profile's passing result names the version matched.
		v.ProfileVersions = matchedVersions(st.Last)
	}
	var old *verdict.Verdict
	if len(rec.Verdict) > 0 {
		if s, err := verdict.ParseSigned(rec.Verdict); err == nil {
			if ov, err := verdict.Unmarshal([]byte(s.Verdict)); err == nil {
				old = &ov
			}
		}
	}
	stb, err := encodeState(st)
	if err != nil {
		return v, nil, fmt.Errorf("encode host state: %w", err)
	}
	changed := old == nil || old.Status != v.Status || !slices.Equal(old.Profiles, v.Profiles) || !slices.Equal(old.Reasons, v.Reasons) ||
		old.Format == v.Format && !maps.Equal(old.ProfileVersions, v.ProfileVersions)
	var signed verdict.Signed
	_, err = e.cfg.Store.RecordVerdict(ctx, rec.Name, v.VerifiedAt, func(seq uint64) ([]byte, []byte, *store.HistoryEntry, error) {
		v.Seq = seq
		var err error
		if signed, err = e.cfg.Signer.Sign(v); err != nil {
			return nil, nil, nil, fmt.Errorf("sign verdict: %w", err)
		}
		sb, err := json.Marshal(signed)
		if err != nil {
			return nil, nil, nil, fmt.Errorf("encode verdict: %w", err)
		}
		var hist *store.HistoryEntry
		if changed {
			hist = &store.HistoryEntry{At: v.VerifiedAt, Status: string(v.Status), Reasons: v.Reasons, Profiles: v.Profiles,
				EvidenceDigest: v.EvidenceDigest}
		}
		return sb, stb, hist, nil
	})
	if err != nil {
		return v, nil, err
	}
	if e.cfg.Observer != nil {
		e.cfg.Observer.VerdictStored(old, v)
	}
	refresh := e.needsRefresh(rec.Name, v)
	if !changed && !refresh {
		return v, stb, nil
	}
	kind := "refresh"
	if changed {
		kind = "change"
		e.log.Info("verdict changed", "host", rec.Name, "status", v.Status, "seq", v.Seq, "reasons", v.Reasons)
	}
	if err := e.cfg.Publisher.PublishVerdicts(ctx, []verdict.Signed{signed}); err != nil {
		e.log.Warn("cannot publish verdict", "host", rec.Name, "error", err)
	} else {
		e.m.published.Inc(kind)
		e.notePublished(rec.Name, v.ExpiresAt)
	}
	if !changed {
		return v, stb, nil
	}
	if old == nil || old.Status != v.Status {
		ev := attestrpc.EventHostUntrusted
		if v.Status == verdict.Trusted {
			ev = attestrpc.EventHostTrusted
		}
		payload := map[string]any{"host": v.Host, "status": v.Status, "profiles": v.Profiles, "profile_versions": matchedVersions(st.Last),
			"reasons": nonNil(v.Reasons),
			"seq":     v.Seq, "verified_at": v.VerifiedAt.Format(verdict.TimeFormat), "expires_at": v.ExpiresAt.Format(verdict.TimeFormat)}
		if err := e.cfg.Publisher.Notify(ctx, ev, payload); err != nil {
			e.log.Warn("cannot send notification", "event", ev, "error", err)
		}
	}
	return v, stb, nil
}

// matchedVersions maps each profile a round's evidence satisfied to the
// version it matched (empty, never nil, when none).
func matchedVersions(sum *Summary) map[string]int {
	out := map[string]int{}
	if sum == nil {
		return out
	}
	for _, r := range sum.Profiles {
		if r.Pass {
			out[r.Profile] = r.Version
		}
	}
	return out
}

func nonNil(l []string) []string {
	if l == nil {
		return []string{}
	}
	return l
}

// markUnknown records an unknown verdict for host (caller holds its lock).
// The verification state starts over.
func (e *Engine) markUnknown(ctx context.Context, rec *store.HostRecord, reason string) error {
	now := e.cfg.Now()
	st := &hostState{Last: &Summary{At: now, Status: verdict.Unknown, Reasons: []string{reason}}}
	_, _, err := e.record(ctx, rec, verdict.Verdict{Host: rec.Name, Status: verdict.Unknown, Reasons: []string{reason},
		VerifiedAt: now, ExpiresAt: now}, st)
	return err
}

// Snapshot returns the current signed verdict of every host.
func (e *Engine) Snapshot(ctx context.Context) ([]verdict.Signed, error) {
	stored, err := e.cfg.Store.ListVerdicts(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]verdict.Signed, 0, len(stored))
	counts := map[verdict.Status]int{verdict.Trusted: 0, verdict.Untrusted: 0, verdict.Unknown: 0}
	now := e.cfg.Now()
	for _, h := range stored {
		s, err := verdict.ParseSigned(h.Verdict)
		if err != nil {
			e.log.Error("stored verdict unusable", "host", h.Host, "error", err)
			counts[verdict.Unknown]++
			continue
		}
		if v, err := verdict.Unmarshal([]byte(s.Verdict)); err == nil {
			counts[v.StatusAt(now)]++
		}
		out = append(out, s)
	}
	for st, n := range counts {
		e.m.hostStatuses.Set(float64(n), string(st))
	}
	return out, nil
}

// Heartbeat republishes every current verdict (the stored signed bytes:
// nothing is extended) on the fanout, in batches.
func (e *Engine) Heartbeat(ctx context.Context) error {
	e.mu.Lock()
	e.lastHeartbeat = e.cfg.Now()
	e.mu.Unlock()
	stored, err := e.cfg.Store.ListVerdicts(ctx)
	if err != nil {
		return err
	}
	type item struct {
		s   verdict.Signed
		exp time.Time
	}
	var mine []item
	counts := map[verdict.Status]int{verdict.Trusted: 0, verdict.Untrusted: 0, verdict.Unknown: 0}
	now := e.cfg.Now()
	for _, h := range stored {
		s, err := verdict.ParseSigned(h.Verdict)
		if err != nil {
			counts[verdict.Unknown]++
			continue
		}
		v, err := verdict.Unmarshal([]byte(s.Verdict))
		if err != nil {
			counts[verdict.Unknown]++
			continue
		}
		counts[v.StatusAt(now)]++
		// Each instance republishes the hosts it attests.
		if e.cfg.Owns(h.Host) {
			mine = append(mine, item{s: s, exp: v.ExpiresAt})
		}
	}
	for st, n := range counts {
		e.m.hostStatuses.Set(float64(n), string(st))
	}
	for len(mine) > 0 {
		n := min(len(mine), 200)
		batch := make([]verdict.Signed, n)
		for i := range n {
			batch[i] = mine[i].s
		}
		if err := e.cfg.Publisher.PublishVerdicts(ctx, batch); err != nil {
			return err
		}
		e.m.published.Add(float64(n), "heartbeat")
		for i := range n {
			if v, err := verdict.Unmarshal([]byte(mine[i].s.Verdict)); err == nil {
				e.notePublished(v.Host, mine[i].exp)
			}
		}
		mine = mine[n:]
	}
	return nil
}

// publishMargin is how long before a round the shims' copy must still be
// valid for the round to leave it alone: room for publishing and clocks.
const publishMargin = time.Second

// nextPublication is the latest time by which something will publish a
// host's newest verdict again without this round doing it: the next round
// (the scheduler's interval and jitter, plus a round that asks twice:
// quote, then again for the full event log) or, sooner, the next
// heartbeat, which republishes the verdict this round stored.
func (e *Engine) nextPublication(now time.Time) time.Time {
	next := now.Add(e.cfg.Interval + e.cfg.Jitter + 2*e.cfg.QuoteTimeout)
	e.mu.Lock()
	last := e.lastHeartbeat
	e.mu.Unlock()
	if hb := last.Add(e.cfg.HeartbeatInterval); e.cfg.HeartbeatInterval > 0 && !last.IsZero() && hb.After(now) && hb.Before(next) {
		next = hb
	}
	return next
}

// needsRefresh reports whether v must be published although it did not
// change: nothing was published for the host since this engine started
// (after a restart shims may hold only expired copies), or the copy they
// hold expires before the next publication. Unknown verdicts carry no
// validity, so refreshing them changes nothing at the shims.
func (e *Engine) needsRefresh(host string, v verdict.Verdict) bool {
	e.mu.Lock()
	exp, ok := e.published[host]
	e.mu.Unlock()
	if !ok {
		return true
	}
	if !v.ExpiresAt.After(v.VerifiedAt) {
		return false
	}
	now := e.cfg.Now()
	return exp.Before(e.nextPublication(now).Add(publishMargin))
}

// notePublished records that the shims hold a verdict of host valid until
// exp (a shim keeps the newest seq, so the latest expiry wins).
func (e *Engine) notePublished(host string, exp time.Time) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if old, ok := e.published[host]; !ok || exp.After(old) {
		e.published[host] = exp
	}
}

// forgetHost drops what is kept of a host besides its record: its nonces,
// cached keys and state, what was published for it (in memory) and its
// enrollment challenges (in the store).
func (e *Engine) forgetHost(ctx context.Context, host string) {
	e.ledger.Forget(host)
	e.mu.Lock()
	delete(e.published, host)
	delete(e.cache, host)
	e.mu.Unlock()
	if _, err := e.cfg.Store.DropChallenges(ctx, host); err != nil {
		e.log.Warn("cannot drop enrollment challenges", "host", host, "error", err)
	}
}

// PruneStats says what Prune dropped.
type PruneStats struct {
	Nonces, Challenges, Published int
}

// Prune drops state that has run out: expired nonces, expired enrollment
// challenges (in the store) and the record of verdicts published so long
// ago that they have expired (the next round publishes again). The service
// calls it on a timer; host deletion drops a host's state at once.
func (e *Engine) Prune(ctx context.Context) PruneStats {
	now := e.cfg.Now()
	st := PruneStats{Nonces: e.ledger.Prune(now)}
	if n, err := e.cfg.Store.PruneChallenges(ctx, now); err != nil {
		e.log.Warn("cannot prune enrollment challenges", "error", err)
	} else {
		st.Challenges = int(n)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	for h, exp := range e.published {
		if now.After(exp) {
			delete(e.published, h)
			st.Published++
		}
	}
	return st
}

// IsEnrolled reports whether host exists and has an activated binding.
func (e *Engine) IsEnrolled(ctx context.Context, host string) (bool, error) {
	rec, err := e.cfg.Store.GetHost(ctx, host)
	if errors.Is(err, store.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return rec.Activated, nil
}

// EnrolledHosts returns the hosts the scheduler should attest.
func (e *Engine) EnrolledHosts(ctx context.Context) ([]string, error) {
	hosts, err := e.cfg.Store.ListHosts(ctx)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, h := range hosts {
		if h.Activated {
			out = append(out, h.Name)
		}
	}
	return out, nil
}

// HostView returns a host as the API shows it (the REST wire type), with
// its last attestation summary.
func (e *Engine) HostView(ctx context.Context, name string) (attestapi.Host, error) {
	h, err := e.cfg.Store.GetHost(ctx, name)
	if err != nil {
		return attestapi.Host{}, err
	}
	var holder string
	if h.PendingEKPublic != nil {
		if holder, err = e.holder(ctx, store.EKFingerprint(h.PendingEKPublic), name); err != nil {
			return attestapi.Host{}, err
		}
	}
	return e.view(h, true, holder), nil
}

// HostViews returns every host as the API lists them, sorted by name.
func (e *Engine) HostViews(ctx context.Context) ([]attestapi.Host, error) {
	hosts, err := e.cfg.Store.ListHosts(ctx)
	if err != nil {
		return nil, err
	}
	holders := map[string]string{}
	for _, h := range hosts {
		if h.EKPublic != nil {
			holders[store.EKFingerprint(h.EKPublic)] = h.Name
		}
	}
	out := make([]attestapi.Host, 0, len(hosts))
	for _, h := range hosts {
		holder := holders[store.EKFingerprint(h.PendingEKPublic)]
		if holder == h.Name {
			holder = ""
		}
		out = append(out, e.view(h, false, holder))
	}
	return out, nil
}

// view renders a stored host; holder is the host its pending EK is bound
// to ("" if none).
func (e *Engine) view(h *store.HostRecord, withLast bool, holder string) attestapi.Host {
	hv := attestapi.Host{Name: h.Name, RequiredProfiles: h.Profiles, ProfilesAssigned: h.Profiles != nil, AgentVersion: h.AgentVersion,
		EKFingerprint: store.EKFingerprint(h.EKPublic), PendingEKFingerprint: store.EKFingerprint(h.PendingEKPublic),
		RejectedEKFingerprint: h.RejectedEKFingerprint, CreatedAt: h.CreatedAt}
	if hv.RequiredProfiles == nil {
		hv.RequiredProfiles = nonNil(e.cfg.RequiredProfiles)
	}
	if h.PendingEKPublic != nil {
		t := h.PendingSince
		hv.PendingSince = &t
		switch {
		case h.EKPublic != nil:
			hv.PendingReason = ReasonEKChanged
		case holder != "":
			hv.PendingReason, hv.PendingEKBoundTo = ReasonEKBoundToOtherHost, holder
		default:
			hv.PendingReason = ReasonApprovalRequired
		}
	}
	switch {
	case h.Activated:
		hv.Enrollment = attestapi.EnrollmentEnrolled
	case h.PendingEKPublic != nil:
		hv.Enrollment = attestapi.EnrollmentPendingApproval
	default:
		hv.Enrollment = attestapi.EnrollmentRegistered
	}
	if len(h.Verdict) > 0 {
		if s, err := verdict.ParseSigned(h.Verdict); err == nil {
			if v, err := verdict.Unmarshal([]byte(s.Verdict)); err == nil {
				hv.Verdict = &attestapi.Verdict{Status: v.Status, EffectiveStatus: v.StatusAt(e.cfg.Now()), Profiles: nonNil(v.Profiles),
					Reasons: nonNil(v.Reasons), VerifiedAt: v.VerifiedAt, ExpiresAt: v.ExpiresAt, Seq: v.Seq, Signed: s}
			}
		}
	}
	st, stErr := decodeState(h.State)
	if hv.Verdict != nil && stErr == nil {
		// The state is stored with the verdict (store.RecordVerdict): its
		// last round is the verdict's.
		hv.Verdict.ProfileVersions = matchedVersions(st.Last)
	}
	if withLast && stErr == nil && st.Last != nil {
		hv.LastAttestation = st.Last.api()
	}
	return hv
}

// DeleteHost publishes a final unknown verdict for host and removes it.
func (e *Engine) DeleteHost(ctx context.Context, host string) error {
	l := e.hostLock(host)
	l.Lock()
	defer l.Unlock()
	rec, err := e.cfg.Store.GetHost(ctx, host)
	if err != nil {
		return err
	}
	if err := e.markUnknown(ctx, rec, "host deleted by an administrator"); err != nil {
		return err
	}
	if err := e.cfg.Store.DeleteHost(ctx, host); err != nil {
		return err
	}
	e.forgetHost(ctx, host)
	return nil
}

// SetHostProfiles assigns required profiles to a host (nil: back to the
// configured default) and re-attests it.
func (e *Engine) SetHostProfiles(ctx context.Context, host string, profiles []string) error {
	l := e.hostLock(host)
	l.Lock()
	rec, err := e.cfg.Store.GetHost(ctx, host)
	if err != nil {
		l.Unlock()
		return err
	}
	h := rec.Host
	h.Profiles = profiles
	err = e.cfg.Store.PutHost(ctx, &h)
	l.Unlock()
	if err == nil {
		e.cfg.Trigger(host)
	}
	return err
}

// LearnInput returns the verified evidence of host's last successful round,
// for policy.Learn.
func (e *Engine) LearnInput(ctx context.Context, host string) (policy.Input, error) {
	rec, err := e.cfg.Store.GetHost(ctx, host)
	if err != nil {
		return policy.Input{}, err
	}
	st, err := decodeState(rec.State)
	if err != nil || st.Previous == nil || st.Last == nil || !st.Last.Verified {
		return policy.Input{}, fmt.Errorf("learn from %s: %w", host, ErrNoEvidence)
	}
	return policy.Input{PCRs: st.Previous.PCRs, Boot: st.Previous.Boot}, nil
}

// TriggerAll asks for a re-attestation of every enrolled host (after a
// profile change).
func (e *Engine) TriggerAll(ctx context.Context) {
	hosts, err := e.EnrolledHosts(ctx)
	if err != nil {
		return
	}
	for _, h := range hosts {
		e.cfg.Trigger(h)
	}
}
