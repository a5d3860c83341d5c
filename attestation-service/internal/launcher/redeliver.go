package launcher

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/trustpool/trustpool/attestation-service/internal/cloud"
	"github.com/trustpool/trustpool/attestation-service/internal/engine"
	"github.com/trustpool/trustpool/attestation-service/internal/store"
	"github.com/trustpool/trustpool/internal/attestrpc"
	"github.com/trustpool/trustpool/internal/launch"
	"github.com/trustpool/trustpool/internal/verdict"
)

// Re-delivery. A delivered launch's agent keeps the blob sealed under
// PolicyAuthorize (compute-agent's package deliver). When the instance
// restarted (a host reboot), Redeliver asks the service first: the host
// must still be enrolled, its agent must confirm the instance runs there
// and is the launch's project's (or Nova's API, as at binding), a fresh
// attestation must find it trusted and satisfying the launch's profile;
// then the policy-signing key approves exactly the PCR state the fresh
// quote proved (over the launch's sealed PCR selection), and signs the
// redeliver_secret request over a nonce the agent issued for it, so a
// replayed or forged request unseals nothing. The agent unseals its kept
// blob with that approval and injects the secret and the new receipt
// (state redelivered, naming the fresh verdict).
//
// A refusal (or a failure at the agent) leaves the launch in its state,
// records the attempt in its history as refused (or failed) with a reason,
// and signs a receipt saying so, which becomes the launch's receipt.

// Reasons of a refused re-delivery, besides those of a launch.
const (
	// ReasonAgentTooOld: the host's agent does not implement RPC API 1.3.
	ReasonAgentTooOld = "agent_too_old"
	// ReasonNotKept: the agent keeps no blob of the launch.
	ReasonNotKept = attestrpc.ReasonNotKept
	// ReasonTooSoon: a user's re-delivery within
	// Config.RedeliverInterval of the last (TooSoonError).
	ReasonTooSoon = "redelivery_too_soon"
)

// Errors of Redeliver.
var (
	// ErrNotDelivered: the launch's secret never reached its instance
	// (409).
	ErrNotDelivered = errors.New("launch not delivered")
	// ErrRedeliverOff: the service has no policy-signing key, so no blob
	// can be redelivered (409).
	ErrRedeliverOff = errors.New("re-delivery needs the policy-signing key")
)

// Redelivery is the outcome of one re-delivery.
type Redelivery struct {
	// Launch is the launch as it then is: redelivered, or in its state
	// with the refusal in its reasons and receipt.
	Launch *store.Launch
	// State is redelivered, refused or failed; Reasons say why not.
	State   string
	Reasons []string
}

// Redeliver runs a re-delivery of a delivered launch that a user asked
// for through the API. ErrNotDelivered, ErrRedeliverOff, ErrBusy (a
// re-delivery of it is in progress) and *TooSoonError (one was started
// less than Config.RedeliverInterval ago) are returned before anything is
// asked of the host.
func (l *Launcher) Redeliver(ctx context.Context, id string) (*Redelivery, error) {
	return l.redeliver(ctx, id, launch.InitiatorUser)
}

// redeliver is Redeliver for initiator (launch.InitiatorUser or
// launch.InitiatorAgent), which the history entry, the receipt and the
// notification name.
func (l *Launcher) redeliver(ctx context.Context, id, initiator string) (*Redelivery, error) {
	if !l.redeliveryStart(id) {
		return nil, fmt.Errorf("%w: a re-delivery of launch %s is in progress", ErrBusy, id)
	}
	defer l.redeliveryDone(id)
	rec, err := l.cfg.Store.GetLaunch(ctx, id)
	if err != nil {
		return nil, err
	}
	if !launch.Delivered(rec.State) {
		return nil, fmt.Errorf("%w: launch %s is %s", ErrNotDelivered, id, rec.State)
	}
	if l.cfg.PolicyKey == nil {
		return nil, ErrRedeliverOff
	}
	if initiator == launch.InitiatorUser {
		// Agents' asks are limited before they get here (wanted.go).
		l.redeliverMu.Lock()
		ok, wait := l.redeliverLimit.allow(id, l.cfg.Now())
		l.redeliverMu.Unlock()
		if !ok {
			l.outcomes.Inc("redelivery_rate_limited", ReasonTooSoon)
			return nil, &TooSoonError{LaunchID: id, Interval: l.cfg.RedeliverInterval, RetryAfter: wait}
		}
	}
	ctx = context.WithoutCancel(ctx)
	from := rec.State
	end := func(event, code, detail string) (*Redelivery, error) {
		reason := code
		if detail != "" {
			reason += ": " + detail
		}
		rec.State, rec.Reasons = event, []string{reason}
		sr, err := l.receiptBy(rec, initiator)
		rec.State = from
		if err != nil {
			return nil, fmt.Errorf("sign re-delivery receipt: %w", err)
		}
		rec.Receipt = sr
		if err := l.cfg.Store.RecordLaunchEvent(ctx, rec, from, event, initiator); err != nil {
			return nil, err
		}
		l.outcomes.Inc("redelivery_"+event, code)
		ev := attestrpc.EventLaunchRefused
		if event == launch.StateFailed {
			ev = attestrpc.EventLaunchFailed
		}
		l.notify(ctx, ev, rec, event, initiator)
		l.log.Warn("launch not redelivered", "launch_id", rec.ID, "host", rec.Host, "state", event, "reasons", rec.Reasons,
			"initiator", initiator)
		return &Redelivery{Launch: rec, State: event, Reasons: rec.Reasons}, nil
	}
	refuse := func(code, detail string) (*Redelivery, error) { return end(launch.StateRefused, code, detail) }

	host := rec.Host
	switch hr, err := l.cfg.Store.GetHost(ctx, host); {
	case errors.Is(err, store.ErrNotFound), err == nil && !hr.Activated:
		return refuse(ReasonHostNotEnrolled, "the launch's host is no longer enrolled with this service")
	case err != nil:
		l.log.Error("redeliver: cannot read host", "launch_id", rec.ID, "host", host, "error", err)
		return refuse(ReasonInternal, "")
	}
	pres, err := l.cfg.Agents.InstancePresent(ctx, host, &attestrpc.InstancePresentArgs{InstanceID: rec.InstanceID})
	if err != nil {
		return refuse(ReasonAgentUnreachable, "instance_present: "+oneLine(err))
	}
	if !pres.Present {
		return refuse(ReasonInstanceNotInHost, "the host's agent ("+pres.Injector+") does not run the instance")
	}
	if code, detail := l.confirmOwner(ctx, rec, pres); code != "" {
		return refuse(code, detail)
	}

	fresh, err := l.cfg.Attester.AttestFresh(ctx, host)
	switch {
	case errors.Is(err, engine.ErrNotEnrolled), errors.Is(err, store.ErrNotFound):
		return refuse(ReasonHostNotEnrolled, "the host is not enrolled with this service")
	case err != nil:
		l.log.Error("redeliver: fresh attestation failed", "launch_id", rec.ID, "host", host, "error", err)
		return refuse(ReasonInternal, "")
	}
	v := fresh.Verdict
	rec.VerdictSeq, rec.EvidenceDigest, rec.VerifiedAt = v.Seq, v.EvidenceDigest, v.VerifiedAt
	if !fresh.Verified || v.Status != verdict.Trusted {
		return refuse(ReasonHostUntrusted, untrustedDetail(v))
	}
	if !fresh.Satisfies(rec.Profile) {
		detail := "profile " + rec.Profile
		if rs := fresh.ProfileReasons(rec.Profile); len(rs) > 0 {
			detail += ": " + strings.Join(rs, "; ")
		}
		return refuse(ReasonProfileNotMet, detail)
	}
	current := make(map[int][]byte, len(rec.PCRs))
	for _, i := range rec.PCRs {
		val, ok := fresh.PCRs[i]
		if !ok {
			return refuse(ReasonSealFailed, fmt.Sprintf("the fresh quote does not cover PCR %d of the sealed policy", i))
		}
		current[i] = val
	}
	if len(current) == 0 {
		return refuse(ReasonSealFailed, "the launch records no sealed PCR selection")
	}
	approval, err := l.cfg.PolicyKey.Approve(rec.PCRs, current)
	if err != nil {
		return refuse(ReasonSealFailed, err.Error())
	}

	ch, err := l.cfg.Agents.RedeliverChallenge(ctx, host, &attestrpc.RedeliverChallengeArgs{LaunchID: rec.ID, InstanceID: rec.InstanceID})
	switch {
	case errors.Is(err, ErrAgentTooOld):
		return refuse(ReasonAgentTooOld, "the host's agent does not implement re-delivery (RPC API "+attestrpc.RedeliverVersion+")")
	case err != nil:
		return refuse(ReasonAgentUnreachable, "redeliver_challenge: "+oneLine(err))
	case !ch.Kept || len(ch.Nonce) != attestrpc.RedeliverNonceSize:
		return refuse(ReasonNotKept, "the host's agent keeps no sealed blob of this launch (sealed without a policy-signing key, "+
			"dropped, or its state directory was lost)")
	}
	rec.State, rec.Reasons, rec.DeliveredAt = launch.StateRedelivered, nil, l.cfg.Now()
	receipt, err := l.receiptBy(rec, initiator)
	rec.State = from
	if err != nil {
		l.log.Error("cannot sign launch receipt", "launch_id", rec.ID, "error", err)
		return refuse(ReasonInternal, "")
	}
	args := &attestrpc.RedeliverSecretArgs{LaunchID: rec.ID, InstanceID: rec.InstanceID, Nonce: ch.Nonce, Receipt: receipt,
		Approvals: []attestrpc.PolicyApproval{approval}}
	if err := l.cfg.PolicyKey.SignRedeliver(args); err != nil {
		return refuse(ReasonInternal, err.Error())
	}
	res, err := l.cfg.Agents.RedeliverSecret(ctx, host, args)
	if err != nil {
		return end(launch.StateFailed, ReasonDeliveryFailed, "redeliver_secret: "+oneLine(err))
	}
	if !res.Delivered {
		code := res.Reason
		if code == "" {
			code = ReasonDeliveryFailed
		}
		return end(launch.StateFailed, code, res.Detail)
	}
	rec.State, rec.Receipt = launch.StateRedelivered, receipt
	if err := l.cfg.Store.TransitionLaunchBy(ctx, rec, from, initiator); err != nil {
		return nil, err
	}
	l.outcomes.Inc(launch.StateRedelivered, "")
	l.notify(ctx, attestrpc.EventLaunchRedelivered, rec, launch.StateRedelivered, initiator)
	l.log.Info("launch redelivered", "launch_id", rec.ID, "project_id", rec.ProjectID, "instance_id", rec.InstanceID, "host", host,
		"verdict_seq", rec.VerdictSeq, "initiator", initiator)
	return &Redelivery{Launch: rec, State: launch.StateRedelivered, Reasons: []string{}}, nil
}

// confirmOwner checks, as binding does, that the instance is the launch's
// project's: by the host's hypervisor record or Nova's API.
func (l *Launcher) confirmOwner(ctx context.Context, rec *store.Launch, pres *attestrpc.InstancePresentResult) (string, string) {
	switch {
	case pres.ProjectID != "" && pres.ProjectID != rec.ProjectID:
		return ReasonNotInProject, "the host's hypervisor records another project as the instance's owner"
	case pres.ProjectID != "":
		return "", ""
	case l.cfg.Servers == nil:
		return ReasonOwnerUnknown, "neither the host nor Nova's API confirms that the instance is the launch's project's"
	}
	s, err := l.cfg.Servers.Server(ctx, rec.InstanceID)
	switch {
	case errors.Is(err, cloud.ErrNotFound):
		return ReasonServerNotFound, "Nova has no server " + rec.InstanceID
	case err != nil:
		return ReasonNovaUnavailable, "Nova could not be asked whose the server is"
	case s.ProjectID != rec.ProjectID:
		return ReasonServerNotProject, "the server does not belong to the launch's project"
	case s.Host != rec.Host:
		return ReasonHostNotFound, "Nova places the server on another host than the launch's"
	}
	return "", ""
}

// notify sends a re-delivery event (payload as at the end of a launch,
// state being the event's, plus redelivery and initiator).
func (l *Launcher) notify(ctx context.Context, ev string, rec *store.Launch, state, initiator string) {
	payload := map[string]any{"launch_id": rec.ID, "project_id": rec.ProjectID, "instance_id": rec.InstanceID, "host": rec.Host,
		"profile": rec.Profile, "state": state, "reasons": nonNil(rec.Reasons), "redelivery": true, "initiator": initiator}
	if err := l.cfg.Notifier.Notify(ctx, ev, payload); err != nil {
		l.log.Warn("cannot send notification", "event", ev, "error", err)
	}
}

func (l *Launcher) redeliveryStart(id string) bool {
	l.redeliverMu.Lock()
	defer l.redeliverMu.Unlock()
	if l.redelivering[id] {
		return false
	}
	l.redelivering[id] = true
	return true
}

func (l *Launcher) redeliveryDone(id string) {
	l.redeliverMu.Lock()
	defer l.redeliverMu.Unlock()
	delete(l.redelivering, id)
}
