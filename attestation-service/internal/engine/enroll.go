package engine

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/trustpool/trustpool/attestation-service/internal/store"
	"github.com/trustpool/trustpool/internal/attestrpc"
	"github.com/trustpool/trustpool/internal/evidence"
)

// ErrEnrollment is wrapped by every refusal of register_host or
// activate_credential that the agent should see (the RPC layer sends these
// as ValueError with the message).
var ErrEnrollment = errors.New("enrollment refused")

type enrollChallenge struct {
	host         string
	ekPublic     []byte
	ekCert       []byte
	akPublic     []byte
	agentVersion string
	secret       []byte
	expires      time.Time
}

func refuse(format string, a ...any) error {
	return fmt.Errorf("%w: %s", ErrEnrollment, fmt.Sprintf(format, a...))
}

// RegisterHost is register_host: it checks the EK (and its certificate when
// required) and the AK, and answers with a credential challenge, or with
// pending_approval when an admin must approve the EK first.
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
	l := e.hostLock(a.Host)
	l.Lock()
	defer l.Unlock()
	rec, err := e.cfg.Store.GetHost(ctx, a.Host)
	switch {
	case errors.Is(err, store.ErrNotFound):
		if e.cfg.EnrollmentMode == ModeApprove {
			h := store.Host{Name: a.Host, PendingEKPublic: a.EKPublic, PendingEKCert: a.EKCertificate,
				PendingAKPublic: a.AKPublic, PendingSince: e.cfg.Now(), AgentVersion: a.AgentVersion}
			if err := e.cfg.Store.PutHost(ctx, &h); err != nil {
				return nil, err
			}
			e.m.enrollments.Inc("pending_approval")
			e.log.Info("new host awaits approval", "host", a.Host, "ek_fingerprint", fingerprint(a.EKPublic)[:16])
			return &attestrpc.RegisterHostResult{State: attestrpc.StatePendingApproval, Reason: "new host: an administrator must approve its EK"}, nil
		}
	case err != nil:
		return nil, err
	case rec.EKPublic != nil && bytes.Equal(rec.EKPublic, a.EKPublic):
		// Same TPM: (re-)activate, possibly with a new AK.
	default:
		// A different EK than the approved one (or a new host still
		// pending): never re-bound silently.
		samePending := bytes.Equal(rec.PendingEKPublic, a.EKPublic)
		h := rec.Host
		h.PendingEKPublic, h.PendingEKCert, h.PendingAKPublic = a.EKPublic, a.EKCertificate, a.AKPublic
		if !samePending {
			h.PendingSince = e.cfg.Now()
		}
		if err := e.cfg.Store.PutHost(ctx, &h); err != nil {
			return nil, err
		}
		e.m.enrollments.Inc("pending_approval")
		reason := "new host: an administrator must approve its EK"
		if rec.EKPublic != nil {
			reason = "EK differs from the approved one: an administrator must approve the new EK"
			if !samePending {
				e.log.Warn("host presented a different EK", "host", a.Host, "ek_fingerprint", fingerprint(a.EKPublic)[:16])
				rec.Host = h
				if err := e.markUnknown(ctx, rec, "ek_changed: a new EK awaits administrator approval", nil); err != nil {
					return nil, err
				}
			}
		}
		return &attestrpc.RegisterHostResult{State: attestrpc.StatePendingApproval, Reason: reason}, nil
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
	e.mu.Lock()
	for k, c := range e.challenges {
		if now.After(c.expires) {
			delete(e.challenges, k)
		}
	}
	if len(e.challenges) >= maxPendingChallenges {
		e.mu.Unlock()
		return nil, refuse("too many enrollments in progress, retry later")
	}
	e.challenges[id] = &enrollChallenge{host: a.Host, ekPublic: a.EKPublic, ekCert: a.EKCertificate, akPublic: a.AKPublic,
		agentVersion: a.AgentVersion, secret: secret, expires: now.Add(e.challengeLifetime())}
	e.mu.Unlock()
	e.m.enrollments.Inc("challenge")
	return &attestrpc.RegisterHostResult{State: attestrpc.StateChallenge, ChallengeID: id,
		Credential: &attestrpc.Credential{IDObject: cred.IDObject, EncryptedSecret: cred.EncryptedSecret}}, nil
}

func (e *Engine) challengeLifetime() time.Duration {
	return max(e.cfg.NonceLifetime, time.Minute)
}

// ActivateCredential is activate_credential: the secret must be the one
// MakeCredential made for this challenge (compared in constant time); then
// the AK is bound to the host's EK, the host is enrolled and attested at
// once. A challenge is single use.
func (e *Engine) ActivateCredential(ctx context.Context, a *attestrpc.ActivateCredentialArgs) (*attestrpc.ActivateCredentialResult, error) {
	if err := a.Validate(); err != nil {
		return nil, refuse("%v", err)
	}
	e.mu.Lock()
	c, ok := e.challenges[a.ChallengeID]
	delete(e.challenges, a.ChallengeID)
	e.mu.Unlock()
	if !ok || e.cfg.Now().After(c.expires) {
		e.m.enrollments.Inc("unknown_challenge")
		return nil, refuse("unknown or expired challenge: register again")
	}
	if c.host != a.Host {
		e.m.enrollments.Inc("activation_failed")
		return nil, refuse("challenge was issued to another host")
	}
	if err := evidence.CheckActivation(c.secret, a.Secret); err != nil {
		e.m.enrollments.Inc("activation_failed")
		e.log.Warn("credential activation failed", "host", a.Host)
		return nil, refuse("credential activation failed: the AK is not in the TPM of this EK")
	}
	l := e.hostLock(a.Host)
	l.Lock()
	rec, err := e.cfg.Store.GetHost(ctx, a.Host)
	var h store.Host
	switch {
	case errors.Is(err, store.ErrNotFound):
		if e.cfg.EnrollmentMode == ModeApprove {
			l.Unlock()
			return &attestrpc.ActivateCredentialResult{State: attestrpc.StatePendingApproval, Reason: "host unknown: register again"}, nil
		}
		h = store.Host{Name: a.Host}
	case err != nil:
		l.Unlock()
		return nil, err
	default:
		h = rec.Host
		if h.EKPublic != nil && !bytes.Equal(h.EKPublic, c.ekPublic) || h.EKPublic == nil && e.cfg.EnrollmentMode == ModeApprove {
			l.Unlock()
			return &attestrpc.ActivateCredentialResult{State: attestrpc.StatePendingApproval, Reason: "EK changed during enrollment"}, nil
		}
	}
	h.EKPublic, h.EKCert, h.AKPublic, h.Activated, h.AgentVersion = c.ekPublic, c.ekCert, c.akPublic, true, c.agentVersion
	if bytes.Equal(h.PendingEKPublic, c.ekPublic) {
		h.PendingEKPublic, h.PendingEKCert, h.PendingAKPublic, h.PendingSince = nil, nil, nil, time.Time{}
	}
	if err := e.cfg.Store.PutHost(ctx, &h); err != nil {
		l.Unlock()
		return nil, err
	}
	// A new binding starts from a full verification.
	if err := e.cfg.Store.SaveState(ctx, a.Host, nil); err != nil {
		l.Unlock()
		return nil, err
	}
	l.Unlock()
	e.m.enrollments.Inc("enrolled")
	e.log.Info("host enrolled", "host", a.Host, "ek_fingerprint", fingerprint(c.ekPublic)[:16])
	if err := e.cfg.Publisher.Notify(ctx, attestrpc.EventHostEnrolled, map[string]any{
		"host": a.Host, "ek_fingerprint": fingerprint(c.ekPublic), "agent_version": c.agentVersion,
	}); err != nil {
		e.log.Warn("cannot send notification", "event", attestrpc.EventHostEnrolled, "error", err)
	}
	e.cfg.Trigger(a.Host)
	return &attestrpc.ActivateCredentialResult{State: attestrpc.StateEnrolled}, nil
}
