// Package enroll is the agent's half of enrollment (docs/ARCHITECTURE.md, "Enrollment"):
// register_host with the EK and AK, answer the credential challenge with
// TPM2_ActivateCredential, and call activate_credential with the recovered
// secret, until the attestation service says the host is enrolled.
//
// The state machine never gives up while its context lives: an unreachable
// broker or service (ErrConnection, ErrTimeout), a refusal (a remote error)
// and a pending operator approval are all retried with capped exponential
// backoff and jitter. A challenge is answered once; a failed or refused
// activation starts over with a fresh register_host, so a challenge is never
// reused.
//
// What it does not do: it trusts nothing the service says beyond the state
// names; the credential is opaque to it and only the TPM decides whether it
// can be activated (it can only when it names this TPM's AK under its EK).
// The recovered secret is sent to the service and never logged.
package enroll

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"time"

	"github.com/trustpool/trustpool/internal/attestrpc"
	"github.com/trustpool/trustpool/internal/oslo"
	"github.com/trustpool/trustpool/internal/tpm"
)

// TPM is what enrollment needs of the TPM (*tpm.TPM implements it).
type TPM interface {
	EK(ctx context.Context) (*tpm.EK, error)
	AK(ctx context.Context) (*tpm.AK, error)
	ActivateCredential(ctx context.Context, idObject, encSecret []byte) ([]byte, error)
}

var _ TPM = (*tpm.TPM)(nil)

// Caller calls the attestation service (*oslo.Client implements it).
type Caller interface {
	Call(ctx context.Context, rctx map[string]any, method string, args any, result any) error
}

var _ Caller = (*oslo.Client)(nil)

// Config configures Run.
type Config struct {
	Host    string
	Version string
	TPM     TPM
	Service Caller
	// CallTimeout bounds each call (zero: 30s).
	CallTimeout time.Duration
	// Backoff spaces the attempts (zero value: 1s doubling to 1m).
	Backoff Backoff
	// OnState, when set, is told every state the service answers
	// (attestrpc.State*), and "unreachable" when a call fails.
	OnState func(state, reason string)
	Logger  *slog.Logger
}

// States passed to OnState besides the service's own.
const (
	// StateUnreachable: a call failed (broker or service away, timeout,
	// TPM error).
	StateUnreachable = "unreachable"
	// StateRefused: the service answered with an error.
	StateRefused = "refused"
	// StateActivationFailed: the TPM refused to activate the credential
	// (it does not name this TPM's AK under its EK).
	StateActivationFailed = "activation_failed"
)

// ErrActivation wraps a TPM2_ActivateCredential failure.
var ErrActivation = errors.New("credential activation failed")

// Run enrolls the host and returns nil once the service says
// attestrpc.StateEnrolled, or ctx's error.
func Run(ctx context.Context, cfg Config) error {
	if cfg.CallTimeout <= 0 {
		cfg.CallTimeout = 30 * time.Second
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	on := cfg.OnState
	if on == nil {
		on = func(string, string) {}
	}
	bo := cfg.Backoff
	for attempt := 0; ; attempt++ {
		state, reason, err := once(ctx, cfg, log)
		if err == nil && state == attestrpc.StateEnrolled {
			on(state, reason)
			log.Info("host enrolled")
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		wait := bo.Delay(attempt)
		switch {
		case err != nil:
			var re *oslo.RemoteError
			if errors.Is(err, ErrActivation) {
				on(StateActivationFailed, err.Error())
				log.Error("the TPM refused the credential; registering again", "error", err, "retry_in", wait)
			} else if errors.As(err, &re) {
				on(StateRefused, re.Message)
				log.Error("registration refused by the attestation service; retrying",
					"class", re.QualifiedClass(), "message", re.Message, "retry_in", wait)
			} else {
				on(StateUnreachable, err.Error())
				log.Warn("registration failed; retrying", "error", err, "retry_in", wait)
			}
		default:
			on(state, reason)
			log.Info("registration pending", "state", state, "reason", reason, "retry_in", wait)
		}
		if err := sleep(ctx, wait); err != nil {
			return err
		}
	}
}

// once runs register_host and, on a challenge, activation. It returns the
// service's last state.
func once(ctx context.Context, cfg Config, log *slog.Logger) (state, reason string, err error) {
	ek, err := cfg.TPM.EK(ctx)
	if err != nil {
		return "", "", fmt.Errorf("read EK: %w", err)
	}
	ak, err := cfg.TPM.AK(ctx)
	if err != nil {
		return "", "", fmt.Errorf("load AK: %w", err)
	}
	args := &attestrpc.RegisterHostArgs{
		Host: cfg.Host, EKPublic: ek.Public, EKCertificate: ek.Certificate,
		AKPublic: ak.Public, AgentVersion: cfg.Version,
	}
	var reg attestrpc.RegisterHostResult
	if err := call(ctx, cfg, attestrpc.MethodRegisterHost, args, &reg); err != nil {
		return "", "", err
	}
	switch reg.State {
	case attestrpc.StateEnrolled, attestrpc.StatePendingApproval:
		return reg.State, reg.Reason, nil
	case attestrpc.StateChallenge:
	default:
		return "", "", fmt.Errorf("register_host: unknown state %q", reg.State)
	}
	if reg.Credential == nil || reg.ChallengeID == "" {
		return "", "", errors.New("register_host: challenge without credential or challenge_id")
	}
	log.Debug("activating credential", "challenge_id", reg.ChallengeID)
	secret, err := cfg.TPM.ActivateCredential(ctx, reg.Credential.IDObject, reg.Credential.EncryptedSecret)
	if err != nil {
		return "", "", fmt.Errorf("%w: %w", ErrActivation, err)
	}
	var act attestrpc.ActivateCredentialResult
	err = call(ctx, cfg, attestrpc.MethodActivateCredential,
		&attestrpc.ActivateCredentialArgs{Host: cfg.Host, ChallengeID: reg.ChallengeID, Secret: secret}, &act)
	clear(secret)
	if err != nil {
		return "", "", err
	}
	switch act.State {
	case attestrpc.StateEnrolled, attestrpc.StatePendingApproval:
		return act.State, act.Reason, nil
	default:
		return "", "", fmt.Errorf("activate_credential: unknown state %q", act.State)
	}
}

func call(ctx context.Context, cfg Config, method string, args, result any) error {
	ctx, cancel := context.WithTimeout(ctx, cfg.CallTimeout)
	defer cancel()
	if err := cfg.Service.Call(ctx, nil, method, args, result); err != nil {
		return fmt.Errorf("%s: %w", method, err)
	}
	return nil
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// Backoff is capped exponential backoff with jitter.
type Backoff struct {
	// Initial is the first delay (zero: 1s); Max caps it (zero: 1m).
	Initial, Max time.Duration
	// Jitter is the fraction of each delay drawn at random, in [0, 1]
	// (zero: 0.2): the delay is in [d·(1-Jitter), d].
	Jitter float64
	// Rand draws in [0, 1); nil uses math/rand/v2.
	Rand func() float64
}

// Delay is the wait after the given failed attempt (0 = the first).
func (b Backoff) Delay(attempt int) time.Duration {
	initial, maxD, jitter := b.Initial, b.Max, b.Jitter
	if initial <= 0 {
		initial = time.Second
	}
	if maxD <= 0 {
		maxD = time.Minute
	}
	if jitter <= 0 || jitter > 1 {
		jitter = 0.2
	}
	d := initial
	for i := 0; i < attempt && d < maxD; i++ {
		d *= 2
	}
	d = min(d, maxD)
	r := rand.Float64
	if b.Rand != nil {
		r = b.Rand
	}
	return d - time.Duration(float64(d)*jitter*r())
}
