package engine

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/trustpool/trustpool/internal/attestrpc"
	"github.com/trustpool/trustpool/internal/evidence"
	"github.com/trustpool/trustpool/internal/policy"
)

// ErrNoIMA means a host cannot be learned from with IMA: the service
// does not quote PCR 10 or the host keeps no IMA log.
var ErrNoIMA = errors.New("no verified IMA log")

// LearnInputWithIMA returns what policy.Learn needs to build a profile with
// an IMA allowlist: a new quote of the host, its whole firmware event log
// and its whole IMA log since boot (from offset 0), verified from scratch
// as on a host's first round (evidence.Verify without a previous state;
// boot_aggregate against the quoted PCRs). Nothing is recorded: the
// host's rounds, state and verdict are untouched. A host whose evidence
// does not verify, or that sends no IMA log, cannot be learned from.
func (e *Engine) LearnInputWithIMA(ctx context.Context, host string) (policy.Input, error) {
	fail := func(err error) (policy.Input, error) {
		return policy.Input{}, fmt.Errorf("learn from %s with IMA: %w", host, err)
	}
	if !slices.Contains(e.cfg.PCRs, evidence.IMAPCR) {
		return fail(fmt.Errorf("%w: PCR %d is not in the quoted PCRs", ErrNoIMA, evidence.IMAPCR))
	}
	l := e.hostLock(host)
	l.Lock()
	defer l.Unlock()
	rec, err := e.cfg.Store.GetHost(ctx, host)
	if err != nil {
		return fail(err)
	}
	if !rec.Activated {
		return fail(fmt.Errorf("%w: %w", ErrNoEvidence, ErrNotEnrolled))
	}
	ek, err := evidence.ParseEKPublic(rec.EKPublic)
	if err != nil {
		return fail(fmt.Errorf("stored EK unusable: %w", err))
	}
	ak, err := evidence.ParseAKPublic(rec.AKPublic)
	if err != nil {
		return fail(fmt.Errorf("stored AK unusable: %w", err))
	}
	ch, err := e.ledger.Issue(e.cfg.Rand, e.cfg.Now(), rec.Name, e.cfg.PCRs)
	if err != nil {
		return fail(err)
	}
	// No event log digest and IMA offset 0: the agent sends both logs whole.
	args := &attestrpc.QuoteArgs{Nonce: ch.Nonce, PCRSelection: e.cfg.PCRs}
	qctx, cancel := context.WithTimeout(ctx, e.cfg.QuoteTimeout)
	res, err := e.cfg.Agents.Quote(qctx, rec.Name, args)
	cancel()
	if err != nil {
		e.ledger.Discard(ch.Nonce)
		return fail(fmt.Errorf("%w: %w", ErrNoEvidence, err))
	}
	now := e.cfg.Now()
	used, err := e.ledger.Consume(rec.Name, ch.Nonce, now)
	if err != nil {
		return fail(fmt.Errorf("%w: %w", ErrNoEvidence, err))
	}
	ev := &evidence.Evidence{Attest: res.Attest, Signature: res.Signature, PCRs: res.PCRs, EventLog: res.EventLog,
		IMALog: res.IMALog, IMAOffset: res.IMAOffset, IMAHashSize: res.IMAHashSize}
	result, err := evidence.Verify(evidence.Binding{EK: ek, AK: ak, Activated: rec.Activated}, used, ev, nil, evidence.Options{
		Now: now, NonceLifetime: e.cfg.NonceLifetime, AllowMissingEventLog: e.cfg.AllowMissingEventLog,
	})
	if err != nil {
		return fail(fmt.Errorf("%w: %w", ErrNoEvidence, err))
	}
	if result.IMA == nil || len(result.IMA.New) == 0 {
		return fail(fmt.Errorf("%w: the host sent no IMA entries", ErrNoIMA))
	}
	return policy.Input{PCRs: result.PCRs, Boot: result.Boot, IMA: result.IMA.New}, nil
}
