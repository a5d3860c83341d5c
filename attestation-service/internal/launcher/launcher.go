// Package launcher runs trusted launches in the attestation service: it
// accepts a tenant's sealed launch request, binds it to an instance and the
// host that runs it, attests that host afresh, seals the secret to the
// host's TPM, has the host's agent unseal and inject it, and signs a
// receipt of every outcome.
//
// # Sealing
//
// With a policy-signing key (Config.PolicyKey) the secret is sealed under
// TPM2_PolicyAuthorize by that key (importblob.CreateAuthorized), over the
// PCRs the launch's profile pins (DefaultPCRs when it pins none), and
// deliver_secret (RPC API 1.2) carries the key's approvals of every PCR
// state the profile accepts: each combination of its accepted values for
// those PCRs, plus the state the fresh quote proved (for a profile that
// pins none of them, that state alone). More than attestrpc.MaxApprovals
// combinations: the current state alone is approved. An agent that
// answers 1.2 with UnsupportedVersion (an older agent) gets the secret
// sealed anew under a bare PolicyPCR over the quoted values, with API 1.1.
// Without a policy-signing key every launch is sealed that way.
//
// # States
//
//	pending → bound → attested → sealed → delivered
//	     ↘        ↘          ↘         ↘
//	      refused  refused    refused   failed
//
// A delivered launch can be redelivered after its instance restarted
// (redeliver.go): delivered → redelivered, again as often as asked.
//
// A launch is refused when the service will not release the secret (the
// request expired or was sealed for another project, the host is not
// enrolled or not found, the instance does not run on the host, the host
// is not trusted or does not satisfy the profile) and failed when it tried
// and the secret did not arrive (the agent could not be reached, or
// reported pcr_mismatch, replayed, import_failed, invalid_blob,
// inject_failed, tpm_unavailable). Every reason starts with its code
// (Reason* here, package launch's and attestrpc's Reason* codes). Never
// fail open: any error from binding to delivery ends the launch without
// delivery.
//
// Each change of state is a compare-and-set in the store (one worker takes a
// launch forward), recorded in the launch's history. A signed receipt is
// made when the secret is sealed (the agent puts it next to the secret in
// the instance) and at the end. The sealed request is cleared when the
// launch ends; its nonce stays used. Events trustpool.launch.delivered,
// .refused and .failed are sent as oslo notifications.
//
// # Binding
//
// A launch is bound by Nova's instance.create.end notification whose
// metadata names it (trustpool_launch=<id>) and whose tenant_id is the
// launch's project, or at creation with an instance id: the host is then
// asked from Nova's API (Servers; the server must belong to the launch's
// project) or, without Nova access, found as the enrolled host whose
// sha224(project_id + host) is the hostId the tenant gave. Nova's answer is
// not trusted: the host's agent must confirm that the instance runs there
// (instance_present), and only that host's TPM can unseal the secret.
//
// The instance must belong to the launch's project, and Nova's word (a
// notification anyone on the bus can send) is not enough for that either:
// the owner is confirmed by the host (instance_present returns the project
// the hypervisor records, libvirt's Nova metadata) or, when the service has
// a Nova account, by Nova's API (notifications included). An instance of
// another project is refused (instance_not_in_project), and so is one whose
// owner nobody but Nova's bus confirmed (owner_unknown): otherwise a tenant
// could put a secret of their choosing into another project's instance on
// the same host.
//
// What it does not check: that the agent injected the secret into the
// instance it names (a trusted host's agent is trusted to) and who made an
// import blob (see importblob). The tenant's proof from inside the
// instance (package launch) closes both.
package launcher

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/trustpool/trustpool/attestation-service/internal/cloud"
	"github.com/trustpool/trustpool/attestation-service/internal/engine"
	"github.com/trustpool/trustpool/attestation-service/internal/metrics"
	"github.com/trustpool/trustpool/attestation-service/internal/store"
	"github.com/trustpool/trustpool/internal/attestrpc"
	"github.com/trustpool/trustpool/internal/importblob"
	"github.com/trustpool/trustpool/internal/launch"
	"github.com/trustpool/trustpool/internal/novanotify"
	"github.com/trustpool/trustpool/internal/policy"
	"github.com/trustpool/trustpool/internal/policykey"
	"github.com/trustpool/trustpool/internal/verdict"
)

// Reason codes of the service (see also launch.Reason* and
// attestrpc.Reason*).
const (
	ReasonHostNotFound      = "host_not_found"
	ReasonServerNotFound    = "server_not_found"
	ReasonServerNotProject  = "server_not_in_project"
	ReasonNovaUnavailable   = "nova_unavailable"
	ReasonHostNotEnrolled   = "host_not_enrolled"
	ReasonAgentUnreachable  = "agent_unreachable"
	ReasonHostUntrusted     = "host_untrusted"
	ReasonProfileNotMet     = "profile_not_satisfied"
	ReasonSealFailed        = "seal_failed"
	ReasonDeliveryFailed    = "delivery_failed"
	ReasonInterrupted       = "interrupted"
	ReasonInternal          = "internal_error"
	ReasonInstanceNotInHost = attestrpc.ReasonInstanceNotPresent
	ReasonNotInProject      = "instance_not_in_project"
	ReasonOwnerUnknown      = "owner_unknown"
)

// ErrAgentTooOld is wrapped by Agents.DeliverSecret errors when the agent
// does not implement the RPC API version the call needs (1.2 for a blob
// sealed under PolicyAuthorize).
var ErrAgentTooOld = errors.New("agent does not implement the RPC API version")

// Errors of the API operations.
var (
	// ErrReplayed: this sealed request was already used.
	ErrReplayed = errors.New("launch request already used")
	// ErrBusy: the launch is in progress and cannot be deleted now.
	ErrBusy = errors.New("launch in progress")
)

// RequestError is a launch request refused at creation (400), with its
// reason code.
type RequestError struct {
	Reason string
	Msg    string
}

func (e *RequestError) Error() string { return e.Reason + ": " + e.Msg }

// Attester runs fresh attestations (the engine).
type Attester interface {
	AttestFresh(ctx context.Context, host string) (*engine.Fresh, error)
}

// Agents calls the agents' launch methods.
type Agents interface {
	InstancePresent(ctx context.Context, host string, args *attestrpc.InstancePresentArgs) (*attestrpc.InstancePresentResult, error)
	DeliverSecret(ctx context.Context, host string, args *attestrpc.DeliverSecretArgs) (*attestrpc.DeliverSecretResult, error)
	// RedeliverChallenge and RedeliverSecret (API 1.3) wrap
	// ErrAgentTooOld when the agent does not implement them.
	RedeliverChallenge(ctx context.Context, host string, args *attestrpc.RedeliverChallengeArgs) (*attestrpc.RedeliverChallengeResult, error)
	RedeliverSecret(ctx context.Context, host string, args *attestrpc.RedeliverSecretArgs) (*attestrpc.DeliverSecretResult, error)
	// ForgetSecret casts forget_secret (API 1.3).
	ForgetSecret(ctx context.Context, host string, args *attestrpc.ForgetSecretArgs) error
}

// Servers finds where a server runs and whose it is (package cloud's
// Compute, on the service user's session).
type Servers interface {
	Server(ctx context.Context, id string) (*cloud.Server, error)
}

// Notifier sends oslo notifications.
type Notifier interface {
	Notify(ctx context.Context, eventType string, payload any) error
}

// Timing is how long one launch's phases took (for metrics and the
// benchmark).
type Timing struct {
	LaunchID string
	State    string
	// Bind is finding the host (Nova or hostId) and instance_present;
	// Attest the fresh attestation; Seal building the import blob and
	// signing; RPC the deliver_secret round trip, which includes the
	// agent's Unseal (TPM import + unseal) and Inject.
	Bind, Attest, Seal, RPC, Unseal, Inject time.Duration
	// Total runs from the trigger (notification or request) to the end.
	Total time.Duration
}

// Config configures a Launcher.
type Config struct {
	Store  *store.Store
	Key    *launch.PrivateKey
	Signer *verdict.Signer
	Issuer string
	// Attester, Agents and Notifier are required; Servers is nil when the
	// service has no Nova access.
	Attester Attester
	Agents   Agents
	Servers  Servers
	Notifier Notifier
	// Concurrency bounds launches processed at once (default 8).
	Concurrency int
	// MaxLifetime bounds not_after − now at creation (default 30 days).
	MaxLifetime time.Duration
	// StaleAfter: a launch left in an intermediate state this long (a
	// service restart) fails as interrupted (default 10 minutes).
	StaleAfter time.Duration
	// SweepInterval is how often expired and stale launches are ended
	// (default 1 minute).
	SweepInterval time.Duration
	// DefaultPCRs seal a profile that pins no PCRs (default 0-7).
	DefaultPCRs []int
	// PolicyKey, when set, seals secrets under PolicyAuthorize by it and
	// signs the approvals sent with them (see "Sealing").
	PolicyKey *policykey.PrivateKey
	// WantedInterval is the least time between two re-deliveries of one
	// launch that agents ask for (redelivery_wanted; wanted.go; default
	// DefaultWantedInterval). Users' requests are not limited by it.
	WantedInterval time.Duration
	// RedeliverInterval is the least time between two re-deliveries of
	// one launch that users ask for (Redeliver; limiter.go; default
	// DefaultRedeliverInterval), independent of WantedInterval.
	RedeliverInterval time.Duration
	Logger            *slog.Logger
	Metrics           *metrics.Registry
	// Observer, when set, receives the timing of every launch that ends.
	Observer func(Timing)
	Now      func() time.Time
	Rand     io.Reader
}

// Launcher runs launches. It is safe for concurrent use.
type Launcher struct {
	cfg  Config
	log  *slog.Logger
	jobs chan job
	wg   sync.WaitGroup

	outcomes *metrics.Counter
	phases   map[string]*metrics.Histogram

	redeliverMu  sync.Mutex
	redelivering map[string]bool
	// wantedLimit and redeliverLimit hold when an agent's ask and a
	// user's request for a launch last ran (limiter.go; under
	// redeliverMu); wantedSem bounds agents' re-deliveries running at
	// once.
	wantedLimit, redeliverLimit *intervalLimiter
	wantedSem                   chan struct{}
	wanted                      *metrics.Counter
	// stopping: Run is waiting for its goroutines (under redeliverMu).
	stopping bool
}

type job struct {
	id, instanceID, host, hostID string
	// viaNotification: Nova named the host in instance.create.end.
	viaNotification bool
	start           time.Time
}

// New returns a Launcher; Run starts its workers.
func New(cfg Config) *Launcher {
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = 8
	}
	if cfg.MaxLifetime <= 0 {
		cfg.MaxLifetime = 30 * 24 * time.Hour
	}
	if cfg.StaleAfter <= 0 {
		cfg.StaleAfter = 10 * time.Minute
	}
	if cfg.SweepInterval <= 0 {
		cfg.SweepInterval = time.Minute
	}
	if len(cfg.DefaultPCRs) == 0 {
		cfg.DefaultPCRs = []int{0, 1, 2, 3, 4, 5, 6, 7}
	}
	if cfg.WantedInterval <= 0 {
		cfg.WantedInterval = DefaultWantedInterval
	}
	if cfg.RedeliverInterval <= 0 {
		cfg.RedeliverInterval = DefaultRedeliverInterval
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Metrics == nil {
		cfg.Metrics = metrics.New()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Rand == nil {
		cfg.Rand = rand.Reader
	}
	l := &Launcher{cfg: cfg, log: cfg.Logger, jobs: make(chan job, 1024),
		outcomes: cfg.Metrics.NewCounter("trustpool_launches_total", "Trusted launches that ended, by state and reason code.", "state", "reason"),
		phases:   map[string]*metrics.Histogram{}, redelivering: map[string]bool{},
		wantedLimit: newIntervalLimiter(cfg.WantedInterval), redeliverLimit: newIntervalLimiter(cfg.RedeliverInterval),
		wantedSem: make(chan struct{}, cfg.Concurrency),
		wanted: cfg.Metrics.NewCounter("trustpool_launch_redelivery_wanted_total",
			"Re-deliveries agents asked for (redelivery_wanted), by outcome: accepted, or why the ask was dropped.", "outcome")}
	buckets := []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5}
	for _, p := range []string{"bind", "attest", "seal", "rpc", "unseal", "inject", "total"} {
		l.phases[p] = cfg.Metrics.NewHistogram("trustpool_launch_"+p+"_seconds", "Trusted launch phase "+p+" (delivered launches).", buckets)
	}
	return l
}

// PublicKey is the launch key tenants seal to.
func (l *Launcher) PublicKey() *launch.PublicKey { return l.cfg.Key.Public() }

// Caller is who asks, from their Keystone token.
type Caller struct {
	UserID, ProjectID string
}

// CreateRequest is POST /v1/launches.
type CreateRequest struct {
	// KID names the launch key the request was sealed to.
	KID string
	// Sealed is the HPKE-sealed launch.Request.
	Sealed []byte
	// InstanceID binds the launch to a server now (--server).
	InstanceID string
	// HostID is the server's hostId, for services without Nova access.
	HostID string
}

// Create opens and checks a sealed request, stores the launch (still
// sealed) and, with an instance id, starts binding it. Refusals are
// *RequestError (with a launch or attestrpc reason code) or ErrReplayed.
func (l *Launcher) Create(ctx context.Context, c Caller, cr CreateRequest) (*store.Launch, error) {
	pub := l.cfg.Key.Public()
	if cr.KID != pub.KID() {
		return nil, &RequestError{Reason: launch.ReasonSealed, Msg: fmt.Sprintf("sealed to launch key %q; this service's launch key is %q (GET /v1/keys)", cr.KID, pub.KID())}
	}
	if cr.InstanceID != "" && !attestrpc.IsUUID(cr.InstanceID) {
		return nil, &RequestError{Reason: launch.ReasonRequest, Msg: "instance_id must be a server UUID (lower case, with dashes)"}
	}
	if cr.HostID != "" {
		if b, err := hex.DecodeString(cr.HostID); err != nil || len(b) != sha256.Size224 || cr.HostID != strings.ToLower(cr.HostID) {
			return nil, &RequestError{Reason: launch.ReasonRequest, Msg: "host_id must be a server's hostId (56 lower-case hexadecimal digits)"}
		}
		if cr.InstanceID == "" {
			return nil, &RequestError{Reason: launch.ReasonRequest, Msg: "host_id needs instance_id"}
		}
	}
	if cr.InstanceID != "" && cr.HostID == "" && l.cfg.Servers == nil {
		return nil, &RequestError{Reason: launch.ReasonRequest, Msg: "this service has no access to Nova's API: give the server's host_id with its instance_id"}
	}
	req, err := launch.Open(l.cfg.Key, cr.Sealed)
	if err != nil {
		return nil, &RequestError{Reason: launch.Reason(err), Msg: err.Error()}
	}
	defer req.Wipe()
	now := l.cfg.Now()
	if err := req.Check(c.ProjectID, now); err != nil {
		return nil, &RequestError{Reason: launch.Reason(err), Msg: err.Error()}
	}
	if req.NotAfter.After(now.Add(l.cfg.MaxLifetime)) {
		return nil, &RequestError{Reason: launch.ReasonRequest, Msg: fmt.Sprintf("not_after is more than %v ahead", l.cfg.MaxLifetime)}
	}
	nd := sha256.Sum256(req.Nonce)
	rec := &store.Launch{ID: newUUID(l.cfg.Rand), ProjectID: c.ProjectID, UserID: c.UserID, State: launch.StatePending,
		Profile: req.Profile, KID: cr.KID, Sealed: cr.Sealed, NonceDigest: hex.EncodeToString(nd[:]), InstanceID: cr.InstanceID,
		HostID: cr.HostID, NotAfter: req.NotAfter}
	if err := l.cfg.Store.CreateLaunch(ctx, rec); err != nil {
		if errors.Is(err, store.ErrExists) {
			return nil, ErrReplayed
		}
		return nil, err
	}
	l.log.Info("launch created", "launch_id", rec.ID, "project_id", rec.ProjectID, "profile", rec.Profile, "instance_id", rec.InstanceID)
	if cr.InstanceID != "" {
		l.submit(job{id: rec.ID, instanceID: cr.InstanceID, hostID: cr.HostID, start: now})
	}
	return rec, nil
}

// HandleCreateEnd binds the launch an instance.create.end names. Events
// without a launch, for another project, or for a launch no longer pending
// are ignored (logged): the bus is not trusted, so they end nothing.
func (l *Launcher) HandleCreateEnd(ctx context.Context, ev *novanotify.InstanceEvent) error {
	if ev.LaunchID == "" {
		return nil
	}
	rec, err := l.cfg.Store.GetLaunch(ctx, ev.LaunchID)
	if errors.Is(err, store.ErrNotFound) {
		l.log.Warn("instance.create.end names an unknown launch", "launch_id", ev.LaunchID, "instance_id", ev.InstanceID)
		return nil
	}
	if err != nil {
		return err // redelivered
	}
	switch {
	case rec.ProjectID != ev.ProjectID:
		l.log.Warn("instance.create.end for a launch of another project ignored", "launch_id", rec.ID, "instance_id", ev.InstanceID,
			"tenant_id", ev.ProjectID)
	case rec.State != launch.StatePending:
		l.log.Warn("instance.create.end for a launch that is not pending ignored", "launch_id", rec.ID, "state", rec.State,
			"instance_id", ev.InstanceID)
	case rec.InstanceID != "" && rec.InstanceID != ev.InstanceID:
		l.log.Warn("instance.create.end for another instance than the launch names ignored", "launch_id", rec.ID, "instance_id", ev.InstanceID)
	default:
		l.submit(job{id: rec.ID, instanceID: ev.InstanceID, host: ev.Host, viaNotification: true, start: l.cfg.Now()})
	}
	return nil
}

func (l *Launcher) submit(j job) {
	select {
	case l.jobs <- j:
	default:
		// Full queue: run it on its own rather than drop a launch.
		l.wg.Go(func() { l.process(context.Background(), j) })
	}
}

// Run processes launches and sweeps expired and stale ones until ctx ends,
// then waits for launches in progress.
func (l *Launcher) Run(ctx context.Context) error {
	for range l.cfg.Concurrency {
		l.wg.Go(func() {
			for {
				select {
				case <-ctx.Done():
					return
				case j := <-l.jobs:
					l.process(ctx, j)
				}
			}
		})
	}
	l.sweep(ctx)
	t := time.NewTicker(l.cfg.SweepInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			l.redeliverMu.Lock()
			l.stopping = true
			l.redeliverMu.Unlock()
			l.wg.Wait()
			return ctx.Err()
		case <-t.C:
			l.sweep(ctx)
		}
	}
}

// sweep refuses pending launches past not_after, ends launches stuck in an
// intermediate state, binds again launches created with an instance id
// whose job was lost, and forgets nonces of expired requests.
func (l *Launcher) sweep(ctx context.Context) {
	now := l.cfg.Now()
	expired, err := l.cfg.Store.LaunchesToExpire(ctx, launch.StatePending, now, 500)
	if err != nil {
		l.log.Warn("launch sweep failed", "error", err)
		return
	}
	for _, rec := range expired {
		r := &run{l: l, rec: rec, from: rec.State, start: now}
		r.end(ctx, launch.StateRefused, launch.ReasonExpired, "not_after "+rec.NotAfter.Format(time.RFC3339)+" passed before the launch was bound")
	}
	for _, st := range []string{launch.StateBound, launch.StateAttested, launch.StateSealed} {
		stale, err := l.cfg.Store.StaleLaunches(ctx, st, now.Add(-l.cfg.StaleAfter), 500)
		if err != nil {
			l.log.Warn("launch sweep failed", "error", err)
			return
		}
		for _, rec := range stale {
			final := launch.StateRefused
			if st == launch.StateSealed {
				final = launch.StateFailed // the secret may have been sent
			}
			r := &run{l: l, rec: rec, from: rec.State, start: now}
			r.end(ctx, final, ReasonInterrupted, "the service stopped while the launch was "+st)
		}
	}
	// Launches created with an instance id whose binding job was lost (a
	// restart) are bound again; a job still queued finds them taken.
	orphans, err := l.cfg.Store.PendingWithInstance(ctx, launch.StatePending, now.Add(-l.cfg.SweepInterval), 500)
	if err != nil {
		l.log.Warn("launch sweep failed", "error", err)
		return
	}
	for _, rec := range orphans {
		l.submit(job{id: rec.ID, instanceID: rec.InstanceID, hostID: rec.HostID, start: now})
	}
	if _, err := l.cfg.Store.PruneLaunchNonces(ctx, now.Add(-time.Hour)); err != nil {
		l.log.Warn("pruning launch nonces failed", "error", err)
	}
}

// run is one launch being taken forward.
type run struct {
	l     *Launcher
	rec   *store.Launch
	from  string
	start time.Time
	t     Timing
}

// advance moves the launch to state (after the caller changed rec),
// compare-and-set on the state it was in.
func (r *run) advance(ctx context.Context, state string) error {
	r.rec.State = state
	if err := r.l.cfg.Store.TransitionLaunch(ctx, r.rec, r.from); err != nil {
		return err
	}
	r.from = state
	return nil
}

// end finishes the launch in state (refused, failed or delivered) with
// reason code and detail (none for delivered): the sealed request is
// cleared, a receipt signed, the event sent.
func (r *run) end(ctx context.Context, state, code, detail string) {
	l, rec := r.l, r.rec
	ctx = context.WithoutCancel(ctx)
	rec.Sealed = nil
	rec.Reasons = nil
	if code != "" {
		reason := code
		if detail != "" {
			reason += ": " + detail
		}
		rec.Reasons = []string{reason}
	}
	rec.State = state
	if sr, err := l.receipt(rec); err != nil {
		l.log.Error("cannot sign launch receipt", "launch_id", rec.ID, "error", err)
	} else {
		rec.Receipt = sr
	}
	if err := r.advance(ctx, state); err != nil {
		if !errors.Is(err, store.ErrStateChanged) && !errors.Is(err, store.ErrNotFound) {
			l.log.Error("cannot record launch outcome", "launch_id", rec.ID, "state", state, "error", err)
		}
		return
	}
	r.t.LaunchID, r.t.State, r.t.Total = rec.ID, state, l.cfg.Now().Sub(r.start)
	l.outcomes.Inc(state, code)
	if state == launch.StateDelivered {
		for p, d := range map[string]time.Duration{"bind": r.t.Bind, "attest": r.t.Attest, "seal": r.t.Seal, "rpc": r.t.RPC,
			"unseal": r.t.Unseal, "inject": r.t.Inject, "total": r.t.Total} {
			l.phases[p].Observe(d.Seconds())
		}
	}
	if l.cfg.Observer != nil {
		l.cfg.Observer(r.t)
	}
	ev := map[string]string{launch.StateDelivered: attestrpc.EventLaunchDelivered, launch.StateRefused: attestrpc.EventLaunchRefused,
		launch.StateFailed: attestrpc.EventLaunchFailed}[state]
	payload := map[string]any{"launch_id": rec.ID, "project_id": rec.ProjectID, "instance_id": rec.InstanceID, "host": rec.Host,
		"profile": rec.Profile, "state": state, "reasons": nonNil(rec.Reasons)}
	if err := l.cfg.Notifier.Notify(ctx, ev, payload); err != nil {
		l.log.Warn("cannot send notification", "event", ev, "error", err)
	}
	l.log.Info("launch ended", "launch_id", rec.ID, "project_id", rec.ProjectID, "instance_id", rec.InstanceID, "host", rec.Host,
		"state", state, "reasons", rec.Reasons, "total_ms", ms(r.t.Total))
}

func ms(d time.Duration) string {
	return strconv.FormatFloat(float64(d.Microseconds())/1000, 'f', 1, 64)
}

func nonNil(l []string) []string {
	if l == nil {
		return []string{}
	}
	return l
}

// receipt signs the launch's current receipt.
func (l *Launcher) receipt(rec *store.Launch) ([]byte, error) { return l.receiptBy(rec, "") }

// receiptBy is receipt naming who asked for a re-delivery.
func (l *Launcher) receiptBy(rec *store.Launch, initiator string) ([]byte, error) {
	r := &launch.Receipt{Initiator: initiator, LaunchID: rec.ID, ProjectID: rec.ProjectID, InstanceID: rec.InstanceID, HostID: rec.HostID,
		Profile: rec.Profile, VerdictSeq: rec.VerdictSeq, EvidenceDigest: rec.EvidenceDigest, PCRPolicyDigest: rec.PCRPolicyDigest,
		PCRs: rec.PCRs, VerifiedAt: launch.Time(rec.VerifiedAt), SealedAt: launch.Time(rec.SealedAt), DeliveredAt: launch.Time(rec.DeliveredAt),
		State: rec.State, Reasons: rec.Reasons, Issuer: l.cfg.Issuer, IssuedAt: launch.Time(l.cfg.Now())}
	r.PolicyKey = l.policyKeyOf(rec.PCRPolicyDigest)
	sr, err := launch.SignReceipt(l.cfg.Signer, r)
	if err != nil {
		return nil, err
	}
	return json.Marshal(sr)
}

// untrustedDetail is a host_untrusted refusal's detail: the fresh
// verdict's status and its reasons (for a launch and a re-delivery alike).
func untrustedDetail(v verdict.Verdict) string {
	detail := "fresh attestation: " + string(v.Status)
	if len(v.Reasons) > 0 {
		detail += ": " + strings.Join(v.Reasons, "; ")
	}
	return detail
}

// policyKeyOf is the key id of the policy-signing key whose authorize
// policy digest (hex) is, or "": a receipt names the key only when its
// digest is provably that key's, so a tenant can check it offline.
func (l *Launcher) policyKeyOf(digest string) string {
	if l.cfg.PolicyKey == nil || digest == "" {
		return ""
	}
	pub := l.cfg.PolicyKey.Public()
	want, err := importblob.AuthorizePolicy(pub.TPMName())
	if err != nil || hex.EncodeToString(want) != digest {
		return ""
	}
	return pub.KID()
}

// process takes one launch from pending as far as it goes.
func (l *Launcher) process(ctx context.Context, j job) {
	rec, err := l.cfg.Store.GetLaunch(ctx, j.id)
	if err != nil {
		l.log.Warn("launch to process not found", "launch_id", j.id, "error", err)
		return
	}
	if rec.State != launch.StatePending {
		return
	}
	r := &run{l: l, rec: rec, from: rec.State, start: j.start}
	defer func() {
		if p := recover(); p != nil {
			l.log.Error("launch processing panicked", "launch_id", rec.ID, "panic", fmt.Sprint(p))
			r.end(ctx, launch.StateFailed, ReasonInternal, "")
		}
	}()
	r.bindAndDeliver(ctx, j)
}

func (r *run) bindAndDeliver(ctx context.Context, j job) {
	l, rec := r.l, r.rec
	now := l.cfg.Now()
	if !now.Before(rec.NotAfter) {
		r.end(ctx, launch.StateRefused, launch.ReasonExpired, "not_after "+rec.NotAfter.Format(time.RFC3339)+" passed")
		return
	}
	// Bind: find the host.
	t0 := time.Now()
	host := j.host
	ownerByNova := false
	if !j.viaNotification || l.cfg.Servers != nil {
		// A notification's host is checked against Nova's API too, when
		// the service may ask it.
		found, code, detail := r.findHost(ctx, j)
		if code != "" {
			r.end(ctx, launch.StateRefused, code, detail)
			return
		}
		if j.viaNotification && found != host {
			r.end(ctx, launch.StateRefused, ReasonHostNotFound, "the notification's host is not the one Nova's API names")
			return
		}
		host, ownerByNova = found, l.cfg.Servers != nil
	}
	rec.InstanceID, rec.Host, rec.HostID = j.instanceID, host, launch.HostID(rec.ProjectID, host)
	if j.hostID != "" && j.hostID != rec.HostID {
		r.end(ctx, launch.StateRefused, ReasonHostNotFound, "Nova places the server on another host than the hostId given")
		return
	}
	if err := r.advance(ctx, launch.StateBound); err != nil {
		l.log.Info("launch taken by another worker", "launch_id", rec.ID, "error", err)
		return
	}
	hr, err := l.cfg.Store.GetHost(ctx, host)
	switch {
	case errors.Is(err, store.ErrNotFound), err == nil && !hr.Activated:
		r.end(ctx, launch.StateRefused, ReasonHostNotEnrolled, "the host Nova named is not enrolled with this service")
		return
	case err != nil:
		r.end(ctx, launch.StateRefused, ReasonInternal, "")
		l.log.Error("launch: cannot read host", "launch_id", rec.ID, "host", host, "error", err)
		return
	}
	pres, err := l.cfg.Agents.InstancePresent(ctx, host, &attestrpc.InstancePresentArgs{InstanceID: rec.InstanceID})
	if err != nil {
		r.end(ctx, launch.StateRefused, ReasonAgentUnreachable, "instance_present: "+oneLine(err))
		return
	}
	if !pres.Present {
		r.end(ctx, launch.StateRefused, ReasonInstanceNotInHost, "the host's agent ("+pres.Injector+") does not run the instance")
		return
	}
	switch {
	case pres.ProjectID != "" && pres.ProjectID != rec.ProjectID:
		r.end(ctx, launch.StateRefused, ReasonNotInProject, "the host's hypervisor records another project as the instance's owner")
		return
	case pres.ProjectID == "" && !ownerByNova:
		r.end(ctx, launch.StateRefused, ReasonOwnerUnknown, "neither the host nor Nova's API confirms that the instance is the launch's project's")
		return
	}
	r.t.Bind = time.Since(t0)

	// Attest fresh.
	t0 = time.Now()
	fresh, err := l.cfg.Attester.AttestFresh(ctx, host)
	r.t.Attest = time.Since(t0)
	switch {
	case errors.Is(err, engine.ErrNotEnrolled), errors.Is(err, store.ErrNotFound):
		r.end(ctx, launch.StateRefused, ReasonHostNotEnrolled, "the host is not enrolled with this service")
		return
	case err != nil:
		l.log.Error("launch: fresh attestation failed", "launch_id", rec.ID, "host", host, "error", err)
		r.end(ctx, launch.StateRefused, ReasonInternal, "")
		return
	}
	v := fresh.Verdict
	rec.VerdictSeq, rec.EvidenceDigest, rec.VerifiedAt = v.Seq, v.EvidenceDigest, v.VerifiedAt
	if !fresh.Verified || v.Status != verdict.Trusted {
		r.end(ctx, launch.StateRefused, ReasonHostUntrusted, untrustedDetail(v))
		return
	}
	if !fresh.Satisfies(rec.Profile) {
		detail := "profile " + rec.Profile
		if rs := fresh.ProfileReasons(rec.Profile); len(rs) > 0 {
			detail += ": " + strings.Join(rs, "; ")
		} else {
			detail += ": not defined"
		}
		r.end(ctx, launch.StateRefused, ReasonProfileNotMet, detail)
		return
	}
	if err := r.advance(ctx, launch.StateAttested); err != nil {
		l.log.Warn("launch changed while attesting", "launch_id", rec.ID, "error", err)
		return
	}

	// Seal to the host's TPM.
	t0 = time.Now()
	req, err := launch.Open(l.cfg.Key, rec.Sealed)
	if err == nil {
		err = req.Check(rec.ProjectID, l.cfg.Now())
	}
	if err != nil {
		if req != nil {
			req.Wipe()
		}
		code := launch.Reason(err)
		if code == "" {
			code = ReasonInternal
		}
		r.end(ctx, launch.StateRefused, code, err.Error())
		return
	}
	sel, accepted, err := l.sealPCRs(ctx, rec.Profile, fresh.PCRs)
	if err != nil {
		req.Wipe()
		r.end(ctx, launch.StateRefused, ReasonSealFailed, err.Error())
		return
	}
	authorized := l.cfg.PolicyKey != nil
	sealed, approvals, err := l.seal(fresh, sel, accepted, rec, req.Secret, authorized)
	if err != nil {
		req.Wipe()
		r.end(ctx, launch.StateRefused, ReasonSealFailed, err.Error())
		return
	}
	receipt, err := l.sealedReceipt(rec, sel, sealed)
	if err != nil {
		req.Wipe()
		r.end(ctx, launch.StateRefused, ReasonInternal, "")
		l.log.Error("cannot sign launch receipt", "launch_id", rec.ID, "error", err)
		return
	}
	if err := r.advance(ctx, launch.StateSealed); err != nil {
		req.Wipe()
		l.log.Warn("launch changed while sealing", "launch_id", rec.ID, "error", err)
		return
	}
	r.t.Seal = time.Since(t0)

	// Deliver.
	t0 = time.Now()
	res, err := l.cfg.Agents.DeliverSecret(ctx, host, &attestrpc.DeliverSecretArgs{LaunchID: rec.ID, InstanceID: rec.InstanceID,
		Blob: sealed.Blob, Receipt: receipt, Approvals: approvals})
	if authorized && errors.Is(err, ErrAgentTooOld) {
		// An agent before API 1.2: seal to the quoted PCR values alone.
		l.log.Warn("agent does not take secrets sealed to signed policies; sealing to the quoted PCR values", "launch_id", rec.ID, "host", host)
		sealed, _, err = l.seal(fresh, sel, nil, rec, req.Secret, false)
		if err == nil {
			receipt, err = l.sealedReceipt(rec, sel, sealed)
		}
		if err != nil {
			req.Wipe()
			r.end(ctx, launch.StateFailed, ReasonSealFailed, err.Error())
			return
		}
		res, err = l.cfg.Agents.DeliverSecret(ctx, host, &attestrpc.DeliverSecretArgs{LaunchID: rec.ID, InstanceID: rec.InstanceID,
			Blob: sealed.Blob, Receipt: receipt})
	}
	req.Wipe()
	r.t.RPC = time.Since(t0)
	if err != nil {
		r.end(ctx, launch.StateFailed, ReasonDeliveryFailed, "deliver_secret: "+oneLine(err))
		return
	}
	r.t.Unseal = time.Duration(res.UnsealMS * float64(time.Millisecond))
	r.t.Inject = time.Duration(res.InjectMS * float64(time.Millisecond))
	if !res.Delivered {
		code := res.Reason
		if code == "" {
			code = ReasonDeliveryFailed
		}
		r.end(ctx, launch.StateFailed, code, res.Detail)
		return
	}
	rec.DeliveredAt = l.cfg.Now()
	r.end(ctx, launch.StateDelivered, "", "")
}

// findHost binds a launch created with an instance id: Nova's API names
// the host, or, without Nova access, the hostId the tenant gave is matched
// against the enrolled hosts. It returns a reason code and detail when it
// cannot.
func (r *run) findHost(ctx context.Context, j job) (host, code, detail string) {
	l, rec := r.l, r.rec
	if l.cfg.Servers != nil {
		s, err := l.cfg.Servers.Server(ctx, j.instanceID)
		switch {
		case errors.Is(err, cloud.ErrNotFound):
			return "", ReasonServerNotFound, "Nova has no server " + j.instanceID
		case err != nil:
			l.log.Warn("launch: cannot ask Nova", "launch_id", rec.ID, "error", err)
			return "", ReasonNovaUnavailable, "Nova could not be asked where the server runs"
		case s.ProjectID != rec.ProjectID:
			return "", ReasonServerNotProject, "the server does not belong to the launch's project"
		case s.Host == "":
			return "", ReasonHostNotFound, "Nova names no host for the server (not built yet, or shelved)"
		}
		return s.Host, "", ""
	}
	hosts, err := l.cfg.Store.ListHosts(ctx)
	if err != nil {
		l.log.Error("launch: cannot list hosts", "launch_id", rec.ID, "error", err)
		return "", ReasonInternal, ""
	}
	for _, h := range hosts {
		if launch.HostID(rec.ProjectID, h.Name) == j.hostID {
			return h.Name, "", ""
		}
	}
	return "", ReasonHostNotFound, "no enrolled host has the hostId given"
}

// sealPCRs returns the PCRs to seal a launch of profile to and the PCR
// states over them to approve. The selection is the PCRs the profile's
// latest approved version (the flat profile) pins, DefaultPCRs when it pins
// none, either way only quoted ones. The states are the quoted one and
// every combination of accepted values of each approved version that pins
// every selected PCR: candidate, canary and retired versions get no
// approval (a canary host's own quoted state is approved, it was just
// found trusted), and a version pinning fewer PCRs cannot name a state over
// the selection. When the combinations exceed attestrpc.MaxApprovals, the
// quoted state alone is approved.
func (l *Launcher) sealPCRs(ctx context.Context, profile string, quoted map[int][]byte) ([]int, []map[int][]byte, error) {
	sp, err := l.cfg.Store.GetProfile(ctx, profile)
	if err != nil {
		return nil, nil, fmt.Errorf("profile %s: %w", profile, err)
	}
	ps, err := policy.Parse([]byte(sp.Body))
	if err != nil || len(ps) != 1 {
		return nil, nil, fmt.Errorf("profile %s unusable", profile)
	}
	var sel []int
	for k := range ps[0].PCRs {
		if i, err := strconv.Atoi(k); err == nil {
			sel = append(sel, i)
		}
	}
	pinned := len(sel) > 0
	if !pinned {
		sel = slices.Clone(l.cfg.DefaultPCRs)
	}
	sel = slices.DeleteFunc(sel, func(i int) bool { _, ok := quoted[i]; return !ok })
	slices.Sort(sel)
	if len(sel) == 0 {
		return nil, nil, errors.New("no quoted PCR to seal to")
	}
	current := make(map[int][]byte, len(sel))
	for _, i := range sel {
		current[i] = quoted[i]
	}
	states := []map[int][]byte{current}
	if !pinned {
		return sel, states, nil
	}
	versions, err := l.cfg.Store.ProfileVersions(ctx, profile)
	if err != nil {
		return nil, nil, fmt.Errorf("profile %s: %w", profile, err)
	}
	var approved []*policy.Profile
	n := 0
	for _, v := range versions {
		if v.State != store.VersionApproved {
			continue
		}
		vp, err := policy.Parse([]byte(v.Body))
		if err != nil || len(vp) != 1 {
			return nil, nil, fmt.Errorf("profile %s version %d unusable", profile, v.Version)
		}
		c := 1
		for _, i := range sel {
			c *= len(vp[0].PCRs[strconv.Itoa(i)])
		}
		if c == 0 {
			continue // does not pin every selected PCR
		}
		if n += c; n > attestrpc.MaxApprovals {
			l.log.Warn("profile accepts too many PCR states to approve them all; approving the quoted one only",
				"profile", profile, "max", attestrpc.MaxApprovals)
			return sel, states, nil
		}
		approved = append(approved, vp[0])
	}
	for _, p := range approved {
		combos := []map[int][]byte{{}}
		for _, i := range sel {
			var next []map[int][]byte
			for _, c := range combos {
				for _, v := range p.PCRs[strconv.Itoa(i)] {
					b, err := hex.DecodeString(v)
					if err != nil {
						return nil, nil, fmt.Errorf("profile %s: PCR %d: %w", profile, i, err)
					}
					m := maps.Clone(c)
					m[i] = b
					next = append(next, m)
				}
			}
			combos = next
		}
		for _, c := range combos {
			if !slices.ContainsFunc(states, func(s map[int][]byte) bool { return samePCRs(s, c) }) {
				states = append(states, c)
			}
		}
	}
	return sel, states, nil
}

func samePCRs(a, b map[int][]byte) bool {
	return maps.EqualFunc(a, b, func(x, y []byte) bool { return string(x) == string(y) })
}

// seal makes the import blob for the fresh quote's host: under
// PolicyAuthorize with the approvals of accepted (authorized), or under a
// PolicyPCR over the quoted values.
func (l *Launcher) seal(fresh *engine.Fresh, sel []int, accepted []map[int][]byte, rec *store.Launch, secret []byte, authorized bool) (*importblob.Sealed, []attestrpc.PolicyApproval, error) {
	if !authorized {
		s, err := importblob.Create(l.cfg.Rand, fresh.EKPublic, sel, fresh.PCRs, rec.ID, rec.InstanceID, secret)
		return s, nil, err
	}
	approvals := make([]attestrpc.PolicyApproval, 0, len(accepted))
	for _, st := range accepted {
		a, err := l.cfg.PolicyKey.Approve(sel, st)
		if err != nil {
			return nil, nil, fmt.Errorf("approve PCR state: %w", err)
		}
		approvals = append(approvals, a)
	}
	s, err := importblob.CreateAuthorized(l.cfg.Rand, fresh.EKPublic, sel, l.cfg.PolicyKey.Public().TPMPublic(), rec.ID, rec.InstanceID, secret)
	return s, approvals, err
}

// sealedReceipt records the sealing in rec and signs the receipt the agent
// puts next to the secret.
func (l *Launcher) sealedReceipt(rec *store.Launch, sel []int, sealed *importblob.Sealed) ([]byte, error) {
	rec.PCRs, rec.PCRPolicyDigest, rec.SealedAt = sel, hex.EncodeToString(sealed.PolicyDigest), l.cfg.Now()
	rec.State = launch.StateSealed
	receipt, err := l.receipt(rec)
	if err != nil {
		return nil, err
	}
	rec.Receipt = receipt
	return receipt, nil
}

// PolicyPublicKey is the policy-signing key's public half (nil without
// one), for GET /v1/keys.
func (l *Launcher) PolicyPublicKey() *policykey.PublicKey {
	if l.cfg.PolicyKey == nil {
		return nil
	}
	return l.cfg.PolicyKey.Public()
}

func oneLine(err error) string { return strings.ReplaceAll(err.Error(), "\n", " ") }

// newUUID is a random (version 4) UUID.
func newUUID(r io.Reader) string {
	var b [16]byte
	if _, err := io.ReadFull(r, b[:]); err != nil {
		panic(fmt.Sprintf("random launch id: %v", err))
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b[:])
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

// Get returns a launch.
func (l *Launcher) Get(ctx context.Context, id string) (*store.Launch, error) {
	return l.cfg.Store.GetLaunch(ctx, id)
}

// List returns the launches of projectID ("" for all), newest first.
func (l *Launcher) List(ctx context.Context, projectID string, limit int) ([]*store.Launch, error) {
	return l.cfg.Store.ListLaunches(ctx, projectID, limit)
}

// History returns a launch's state changes.
func (l *Launcher) History(ctx context.Context, id string) ([]store.LaunchEvent, error) {
	return l.cfg.Store.LaunchHistory(ctx, id)
}

// Delete removes a pending or ended launch (ErrBusy while it is being
// bound, attested or delivered). A pending launch's sealed request goes
// with it; a delivered launch's host is told to drop the blob it kept
// for re-delivery (forget_secret, best effort).
func (l *Launcher) Delete(ctx context.Context, id string) error {
	rec, err := l.cfg.Store.GetLaunch(ctx, id)
	if err != nil {
		return err
	}
	err = l.cfg.Store.DeleteLaunch(ctx, id, launch.StatePending, launch.StateDelivered, launch.StateRefused, launch.StateFailed,
		launch.StateRedelivered)
	if errors.Is(err, store.ErrStateChanged) {
		return fmt.Errorf("%w: %w", ErrBusy, err)
	}
	if err != nil {
		return err
	}
	if launch.Delivered(rec.State) && l.cfg.PolicyKey != nil && rec.Host != "" {
		a := &attestrpc.ForgetSecretArgs{LaunchID: rec.ID, InstanceID: rec.InstanceID}
		err := l.cfg.PolicyKey.SignForget(a)
		if err == nil {
			err = l.cfg.Agents.ForgetSecret(ctx, rec.Host, a)
		}
		if err != nil {
			l.log.Warn("cannot tell the host to drop the deleted launch's kept blob", "launch_id", rec.ID, "host", rec.Host, "error", err)
		}
	}
	return nil
}
