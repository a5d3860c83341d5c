package engine

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"slices"
	"sort"
	"time"

	"github.com/trustpool/trustpool/attestation-service/internal/store"
	"github.com/trustpool/trustpool/internal/attestrpc"
	"github.com/trustpool/trustpool/internal/evidence"
	"github.com/trustpool/trustpool/internal/verdict"
)

// ErrEnrollment is wrapped by every refusal of register_host or
// activate_credential that the agent should see (the RPC layer sends these
// as ValueError with the message).
var ErrEnrollment = errors.New("enrollment refused")

// Enrollment reason codes. Verdict reasons, a host's pending_reason in the
// API and the reason of the ek_change_requested notification start with
// one of them; the codes are stable, the text after ": " is for people.
const (
	// ReasonApprovalRequired: approve mode; the host has no binding and an
	// administrator must approve its EK.
	ReasonApprovalRequired = "approval_required"
	// ReasonEKChanged: an enrolled host proved a different EK. The host
	// keeps its binding and verdict until an administrator decides.
	ReasonEKChanged = "ek_changed"
	// ReasonEKBoundToOtherHost: the host's EK is bound to another host
	// name; binding it here needs an administrator (approve with force).
	ReasonEKBoundToOtherHost = "ek_bound_to_other_host"
	// ReasonEKApproved: an administrator approved the host's EK; the agent
	// has not activated a credential with it yet.
	ReasonEKApproved = "ek_approved"
	// ReasonEKRejected: an administrator rejected the EK the host asked for.
	ReasonEKRejected = "ek_rejected"
	// ReasonEKMoved: an administrator moved the host's EK to another host.
	ReasonEKMoved = "ek_moved_to_other_host"
)

// enrollChallenge is what a proven activation binds (a taken
// store.Challenge).
type enrollChallenge struct {
	host         string
	ekPublic     []byte
	ekCert       []byte
	akPublic     []byte
	agentVersion string
}

func refuse(format string, a ...any) error {
	return fmt.Errorf("%w: %s", ErrEnrollment, fmt.Sprintf(format, a...))
}

// RegisterHost is register_host: it checks the EK (and its certificate when
// required) and the AK, and answers with a credential challenge. Nothing is
// recorded here: a registration proves possession of the TPM (the challenge
// can only be activated in the TPM of that EK, for that AK) before
// ActivateCredential binds it or records it for approval. An EK an
// administrator rejected for the host is refused.
func (e *Engine) RegisterHost(ctx context.Context, a *attestrpc.RegisterHostArgs) (*attestrpc.RegisterHostResult, error) {
	if err := a.Validate(); err != nil {
		e.m.enrollments.Inc("invalid")
		return nil, refuse("%v", err)
	}
	ek, err := evidence.ParseEKPublic(a.EKPublic)
	if err != nil {
		e.m.enrollments.Inc("invalid")
		return nil, refuse("EK: %v", err)
	}
	ak, err := evidence.ParseAKPublic(a.AKPublic)
	if err != nil {
		e.m.enrollments.Inc("invalid")
		return nil, refuse("AK: %v", err)
	}
	if e.cfg.RequireEKCert {
		if len(a.EKCertificate) == 0 {
			e.m.enrollments.Inc("no_ek_cert")
			return nil, refuse("an EK certificate is required (require_ek_cert)")
		}
		if err := evidence.CheckEKCertificate(ek, a.EKCertificate, e.cfg.EKRoots, e.cfg.EKIntermediates, e.cfg.Now()); err != nil {
			e.m.enrollments.Inc("bad_ek_cert")
			return nil, refuse("EK certificate: %v", err)
		}
	}
	rec, err := e.cfg.Store.GetHost(ctx, a.Host)
	switch {
	case err == nil:
		if rejected(rec, a.EKPublic) {
			e.m.enrollments.Inc("rejected_ek")
			return nil, refuse("an administrator rejected this EK for host %s", a.Host)
		}
	case !errors.Is(err, store.ErrNotFound):
		return nil, err
	}
	secret, cred, err := evidence.MakeCredential(e.cfg.Rand, ek, ak.Name)
	if err != nil {
		return nil, refuse("make credential: %v", err)
	}
	idb := make([]byte, 16)
	if _, err := io.ReadFull(e.cfg.Rand, idb); err != nil {
		return nil, fmt.Errorf("challenge id: %w", err)
	}
	id := hex.EncodeToString(idb)
	now := e.cfg.Now()
	// In the database: activate_credential may reach another instance.
	// Only a hash of the secret is stored, so reading the database does
	// not answer the challenge.
	sh := sha256.Sum256(secret)
	clear(secret)
	err = e.cfg.Store.PutChallenge(ctx, store.Challenge{ID: id, Host: a.Host, EKPublic: a.EKPublic, EKCert: a.EKCertificate,
		AKPublic: a.AKPublic, AgentVersion: a.AgentVersion, SecretHash: sh[:], Expires: now.Add(e.challengeLifetime())}, now, maxPendingChallenges)
	if errors.Is(err, store.ErrTooMany) {
		return nil, refuse("too many enrollments in progress, retry later")
	}
	if err != nil {
		return nil, err
	}
	e.m.enrollments.Inc("challenge")
	return &attestrpc.RegisterHostResult{State: attestrpc.StateChallenge, ChallengeID: id,
		Credential: &attestrpc.Credential{IDObject: cred.IDObject, EncryptedSecret: cred.EncryptedSecret}}, nil
}

func rejected(rec *store.HostRecord, ekPublic []byte) bool {
	return rec.RejectedEKFingerprint != "" && rec.RejectedEKFingerprint == store.EKFingerprint(ekPublic)
}

func (e *Engine) challengeLifetime() time.Duration {
	return max(e.cfg.NonceLifetime, time.Minute)
}

// ActivateCredential is activate_credential: the secret must be the one
// MakeCredential made for this challenge (compared in constant time), which
// proves the AK and the EK live in one TPM. Then bind decides: the AK is
// bound and the host attested at once, or the EK waits for an
// administrator. A challenge is single use.
func (e *Engine) ActivateCredential(ctx context.Context, a *attestrpc.ActivateCredentialArgs) (*attestrpc.ActivateCredentialResult, error) {
	if err := a.Validate(); err != nil {
		return nil, refuse("%v", err)
	}
	sc, err := e.cfg.Store.TakeChallenge(ctx, a.ChallengeID)
	switch {
	case errors.Is(err, store.ErrNotFound) || err == nil && e.cfg.Now().After(sc.Expires):
		e.m.enrollments.Inc("unknown_challenge")
		return nil, refuse("unknown or expired challenge: register again")
	case err != nil:
		return nil, err
	}
	c := &enrollChallenge{host: sc.Host, ekPublic: sc.EKPublic, ekCert: sc.EKCert, akPublic: sc.AKPublic, agentVersion: sc.AgentVersion}
	if c.host != a.Host {
		e.m.enrollments.Inc("activation_failed")
		return nil, refuse("challenge was issued to another host")
	}
	got := sha256.Sum256(a.Secret)
	if err := evidence.CheckActivation(sc.SecretHash, got[:]); err != nil {
		e.m.enrollments.Inc("activation_failed")
		e.log.Warn("credential activation failed", "host", a.Host)
		return nil, refuse("credential activation failed: the AK is not in the TPM of this EK")
	}
	res, err := e.bind(ctx, c)
	if err != nil || res.State != attestrpc.StateEnrolled {
		return res, err
	}
	e.m.enrollments.Inc("enrolled")
	e.log.Info("host enrolled", "host", a.Host, "ek_fingerprint", store.EKFingerprint(c.ekPublic)[:16])
	if err := e.cfg.Publisher.Notify(ctx, attestrpc.EventHostEnrolled, map[string]any{
		"host": a.Host, "ek_fingerprint": store.EKFingerprint(c.ekPublic), "agent_version": c.agentVersion,
	}); err != nil {
		e.log.Warn("cannot send notification", "event", attestrpc.EventHostEnrolled, "error", err)
	}
	e.cfg.Trigger(a.Host)
	return res, nil
}

// bind applies a proven (EK, AK) pair to its host, under the host's lock:
//
//   - the host's bound EK: the AK is (re-)bound;
//   - another EK than the bound one: a pending request (ReasonEKChanged);
//     binding and verdict stay;
//   - no binding yet, approve mode: a pending request;
//   - no binding yet, auto mode: the EK is bound unless another host name
//     holds it (the store's unique index decides, so concurrent
//     registrations bind it once); then a pending request
//     (ReasonEKBoundToOtherHost).
func (e *Engine) bind(ctx context.Context, c *enrollChallenge) (*attestrpc.ActivateCredentialResult, error) {
	l := e.hostLock(c.host)
	l.Lock()
	defer l.Unlock()
	rec, err := e.cfg.Store.GetHost(ctx, c.host)
	switch {
	case errors.Is(err, store.ErrNotFound):
		rec = &store.HostRecord{Host: store.Host{Name: c.host, AgentVersion: c.agentVersion}}
	case err != nil:
		return nil, err
	case rejected(rec, c.ekPublic):
		e.m.enrollments.Inc("rejected_ek")
		return nil, refuse("an administrator rejected this EK for host %s", c.host)
	}
	h := rec.Host
	switch {
	case h.EKPublic != nil && !bytes.Equal(h.EKPublic, c.ekPublic):
		return e.request(ctx, rec, c, ReasonEKChanged, "")
	case h.EKPublic == nil && e.cfg.EnrollmentMode == ModeApprove:
		holder, err := e.holder(ctx, store.EKFingerprint(c.ekPublic), h.Name)
		if err != nil {
			return nil, err
		}
		if holder != "" {
			return e.request(ctx, rec, c, ReasonEKBoundToOtherHost, holder)
		}
		return e.request(ctx, rec, c, ReasonApprovalRequired, "")
	}
	if h.EKPublic == nil || bytes.Equal(h.PendingEKPublic, c.ekPublic) {
		// A first binding supersedes whatever the host asked for before.
		h.PendingEKPublic, h.PendingEKCert, h.PendingAKPublic, h.PendingSince = nil, nil, nil, time.Time{}
	}
	h.EKPublic, h.EKCert, h.AKPublic, h.Activated, h.AgentVersion = c.ekPublic, c.ekCert, c.akPublic, true, c.agentVersion
	err = e.cfg.Store.PutHost(ctx, &h)
	if inUse := (*store.EKInUseError)(nil); errors.As(err, &inUse) {
		return e.request(ctx, rec, c, ReasonEKBoundToOtherHost, inUse.Host)
	}
	if err != nil {
		return nil, err
	}
	// A new binding starts from a full verification.
	if err := e.cfg.Store.SaveState(ctx, c.host, nil); err != nil {
		return nil, err
	}
	return &attestrpc.ActivateCredentialResult{State: attestrpc.StateEnrolled}, nil
}

// holder returns the host other than self that ek (a fingerprint) is bound
// to, or "".
func (e *Engine) holder(ctx context.Context, ek, self string) (string, error) {
	h, err := e.cfg.Store.HostByEK(ctx, ek)
	switch {
	case errors.Is(err, store.ErrNotFound) || h == self:
		return "", nil
	case err != nil:
		return "", err
	}
	return h, nil
}

// request records c's EK as the host's pending EK (caller holds the host's
// lock), audits and announces it. A repeat of the pending request changes
// nothing. An enrolled host keeps its binding and verdict; a host without a
// binding gets an unknown verdict naming the reason.
func (e *Engine) request(ctx context.Context, rec *store.HostRecord, c *enrollChallenge, reason, holder string) (*attestrpc.ActivateCredentialResult, error) {
	e.m.enrollments.Inc(reason)
	h := rec.Host
	if !bytes.Equal(h.PendingEKPublic, c.ekPublic) {
		h.PendingEKPublic, h.PendingEKCert, h.PendingAKPublic, h.PendingSince = c.ekPublic, c.ekCert, c.akPublic, e.cfg.Now()
		if !h.Activated {
			h.AgentVersion = c.agentVersion
		}
		// Audited before it is recorded: a request is never recorded
		// unaudited (a failure here makes the agent retry).
		fp, bound := store.EKFingerprint(c.ekPublic), store.EKFingerprint(h.EKPublic)
		detail := fmt.Sprintf("reason=%s pending_ek=%s agent_version=%s", reason, fp, c.agentVersion)
		if bound != "" {
			detail += " bound_ek=" + bound
		}
		if holder != "" {
			detail += " ek_bound_to=" + holder
		}
		if err := e.cfg.Store.AddAudit(ctx, store.AuditRecord{At: e.cfg.Now(), Action: "host.ek_change_requested",
			Target: h.Name, Outcome: "pending", Detail: detail}); err != nil {
			return nil, err
		}
		if err := e.cfg.Store.PutHost(ctx, &h); err != nil {
			return nil, err
		}
		rec.Host = h
		e.log.Warn("EK awaits administrator approval", "host", h.Name, "reason", reason,
			"pending_ek_fingerprint", fp[:16], "ek_bound_to", holder)
		payload := map[string]any{"host": h.Name, "reason": reason, "ek_fingerprint": bound, "pending_ek_fingerprint": fp,
			"bound_to": holder, "pending_since": h.PendingSince.UTC().Format(verdict.TimeFormat), "agent_version": c.agentVersion}
		if err := e.cfg.Publisher.Notify(ctx, attestrpc.EventHostEKChangeRequested, payload); err != nil {
			e.log.Warn("cannot send notification", "event", attestrpc.EventHostEKChangeRequested, "error", err)
		}
	}
	if !h.Activated {
		text := reason + ": an administrator must approve this host's EK"
		if reason == ReasonEKBoundToOtherHost {
			text = fmt.Sprintf("%s: the host's EK is bound to host %s; an administrator must approve it for this host", reason, holder)
		}
		if err := e.markUnknownOnce(ctx, rec, text); err != nil {
			return nil, err
		}
	}
	// The agent is not told which host holds its EK.
	msg := map[string]string{
		ReasonApprovalRequired:   "an administrator must approve this host's EK",
		ReasonEKChanged:          "this EK differs from the host's bound EK; an administrator must approve it",
		ReasonEKBoundToOtherHost: "this EK is bound to another host; an administrator must approve it for this host",
	}[reason]
	return &attestrpc.ActivateCredentialResult{State: attestrpc.StatePendingApproval, Reason: reason + ": " + msg}, nil
}

// markUnknownOnce records an unknown verdict with reason unless that is
// already the host's verdict (retries of a pending agent do not churn
// sequence numbers).
func (e *Engine) markUnknownOnce(ctx context.Context, rec *store.HostRecord, reason string) error {
	if len(rec.Verdict) > 0 {
		if s, err := verdict.ParseSigned(rec.Verdict); err == nil {
			if v, err := verdict.Unmarshal([]byte(s.Verdict)); err == nil && v.Status == verdict.Unknown && slices.Equal(v.Reasons, []string{reason}) {
				return nil
			}
		}
	}
	return e.markUnknown(ctx, rec, reason)
}

// lockHosts locks the named hosts ("" skipped) in name order, so that two
// callers locking the same pair never wait on each other crosswise. It
// returns the unlock function.
func (e *Engine) lockHosts(names ...string) func() {
	names = slices.DeleteFunc(slices.Clone(names), func(n string) bool { return n == "" })
	sort.Strings(names)
	names = slices.Compact(names)
	ls := make([]interface{ Unlock() }, 0, len(names))
	for _, n := range names {
		l := e.hostLock(n)
		l.Lock()
		ls = append(ls, l)
	}
	return func() {
		for _, l := range slices.Backward(ls) {
			l.Unlock()
		}
	}
}

// Approval is what an administrator approves with ApproveEK.
type Approval struct {
	// Fingerprint, when set, must be the pending EK's fingerprint (what the
	// administrator reviewed): a request replaced meanwhile is not approved.
	Fingerprint string
	// Force moves the EK when another host holds it: that host loses its
	// binding and turns unknown (ReasonEKMoved).
	Force bool
}

// Approved says what ApproveEK did.
type Approved struct {
	// Fingerprint is the approved EK's.
	Fingerprint string
	// MovedFrom names the host that lost the EK, if any.
	MovedFrom string
}

// ApproveEK makes a host's pending EK its bound EK. The agent then
// activates a credential with it on its next registration; until then the
// host is not attested and, if it had a verdict, its verdict is unknown
// (ReasonEKApproved): evidence from the previous binding no longer speaks
// for the host. An EK bound to another host is moved only with Force;
// otherwise the error is an *store.EKInUseError naming the holder.
func (e *Engine) ApproveEK(ctx context.Context, host string, ap Approval) (Approved, error) {
	for range 3 {
		rec, err := e.cfg.Store.GetHost(ctx, host)
		if err != nil {
			return Approved{}, err
		}
		fp, err := pendingFingerprint(rec, ap.Fingerprint)
		if err != nil {
			return Approved{}, fmt.Errorf("approve EK of %s: %w", host, err)
		}
		holder, err := e.holder(ctx, fp, host)
		if err != nil {
			return Approved{}, err
		}
		if holder != "" && !ap.Force {
			return Approved{}, fmt.Errorf("approve EK of %s: %w", host, &store.EKInUseError{Fingerprint: fp, Host: holder})
		}
		unlock := e.lockHosts(host, holder)
		res, retry, err := e.approveLocked(ctx, host, fp, holder)
		unlock()
		if !retry {
			return res, err
		}
	}
	return Approved{}, fmt.Errorf("approve EK of %s: %w: the request or the EK's holder changed meanwhile, review it and try again", host, ErrPendingMismatch)
}

// approveLocked is ApproveEK with the locks of host and holder held; retry
// says the request or holder changed since they were read.
func (e *Engine) approveLocked(ctx context.Context, host, fp, holder string) (_ Approved, retry bool, _ error) {
	rec, err := e.cfg.Store.GetHost(ctx, host)
	if err != nil {
		return Approved{}, false, err
	}
	now, err := e.holder(ctx, fp, host)
	if err != nil {
		return Approved{}, false, err
	}
	if store.EKFingerprint(rec.PendingEKPublic) != fp || now != holder {
		return Approved{}, true, nil
	}
	var writes []*store.Host
	var from *store.HostRecord
	if holder != "" {
		if from, err = e.cfg.Store.GetHost(ctx, holder); err != nil {
			return Approved{}, false, err
		}
		fh := from.Host
		fh.EKPublic, fh.EKCert, fh.AKPublic, fh.Activated = nil, nil, nil, false
		writes = append(writes, &fh)
	}
	h := rec.Host
	h.EKPublic, h.EKCert, h.AKPublic, h.Activated = h.PendingEKPublic, h.PendingEKCert, nil, false
	h.PendingEKPublic, h.PendingEKCert, h.PendingAKPublic, h.PendingSince = nil, nil, nil, time.Time{}
	if h.RejectedEKFingerprint == fp {
		h.RejectedEKFingerprint = ""
	}
	writes = append(writes, &h)
	if err := e.cfg.Store.PutHosts(ctx, writes...); err != nil {
		return Approved{}, false, err
	}
	for _, w := range writes {
		if err := e.cfg.Store.SaveState(ctx, w.Name, nil); err != nil {
			return Approved{}, false, err
		}
	}
	e.log.Info("EK approved", "host", host, "ek_fingerprint", fp[:16], "moved_from", holder)
	if len(rec.Verdict) > 0 {
		if err := e.markUnknown(ctx, rec, ReasonEKApproved+": an administrator approved a new EK; waiting for the agent to activate it"); err != nil {
			return Approved{}, false, err
		}
	}
	if from != nil {
		if err := e.markUnknown(ctx, from, fmt.Sprintf("%s: an administrator moved this host's EK to host %s", ReasonEKMoved, host)); err != nil {
			return Approved{}, false, err
		}
	}
	return Approved{Fingerprint: fp, MovedFrom: holder}, false, nil
}

// pendingFingerprint returns the fingerprint of rec's pending EK, checked
// against want when want is set.
func pendingFingerprint(rec *store.HostRecord, want string) (string, error) {
	if rec.PendingEKPublic == nil {
		return "", ErrNothingPending
	}
	fp := store.EKFingerprint(rec.PendingEKPublic)
	if want != "" && want != fp {
		return "", fmt.Errorf("%w: pending EK is %s", ErrPendingMismatch, fp)
	}
	return fp, nil
}

// RejectEK drops a host's pending EK request and remembers the EK: the
// host's registrations with it are refused until the host is deleted (or
// another EK is rejected). want, when set, must be the pending EK's
// fingerprint. An enrolled host keeps its binding and verdict; a host
// without one turns unknown (ReasonEKRejected). It returns the rejected
// EK's fingerprint.
func (e *Engine) RejectEK(ctx context.Context, host, want string) (string, error) {
	l := e.hostLock(host)
	l.Lock()
	defer l.Unlock()
	rec, err := e.cfg.Store.GetHost(ctx, host)
	if err != nil {
		return "", err
	}
	fp, err := pendingFingerprint(rec, want)
	if err != nil {
		return "", fmt.Errorf("reject EK of %s: %w", host, err)
	}
	h := rec.Host
	h.RejectedEKFingerprint = fp
	h.PendingEKPublic, h.PendingEKCert, h.PendingAKPublic, h.PendingSince = nil, nil, nil, time.Time{}
	if err := e.cfg.Store.PutHost(ctx, &h); err != nil {
		return "", err
	}
	e.log.Info("EK rejected", "host", host, "ek_fingerprint", fp[:16])
	if !h.Activated {
		if err := e.markUnknownOnce(ctx, rec, ReasonEKRejected+": an administrator rejected the EK this host presented"); err != nil {
			return "", err
		}
	}
	return fp, nil
}
