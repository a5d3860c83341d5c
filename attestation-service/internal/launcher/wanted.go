package launcher

import (
	"context"
	"errors"
	"time"

	"github.com/trustpool/trustpool/attestation-service/internal/store"
	"github.com/trustpool/trustpool/internal/attestrpc"
	"github.com/trustpool/trustpool/internal/launch"
)

// Re-delivery asked for by an agent (redelivery_wanted, RPC API 1.4). The
// agent casts it when it sees the instance of a blob it keeps start. Bus
// senders are not authenticated, so the cast is only a trigger: it runs
// the re-delivery a tenant's request runs (the same checks, receipt,
// history entry and notification, naming the agent as initiator) only
// for a launch that exists, is delivered or redelivered and is recorded
// on that host and instance, and at most once per launch per
// Config.WantedInterval (a limit of its own, independent of users'
// requests: limiter.go). Anything else is dropped, counted in
// trustpool_launch_redelivery_wanted_total by outcome and logged without
// secrets. Re-deliveries run in the background, at most Config.Concurrency
// at once; an ask beyond that is dropped as busy (the agent asks again).

// Outcomes of a redelivery_wanted cast.
const (
	// WantedAccepted: a re-delivery was started.
	WantedAccepted = "accepted"
	// WantedUnknownLaunch: no such launch.
	WantedUnknownLaunch = "unknown_launch"
	// WantedNotDelivered: the launch is not delivered or redelivered.
	WantedNotDelivered = "not_delivered"
	// WantedHostMismatch / WantedInstanceMismatch: the launch is not
	// recorded on the host or instance the cast names.
	WantedHostMismatch     = "host_mismatch"
	WantedInstanceMismatch = "instance_mismatch"
	// WantedRateLimited: an ask for the launch was accepted less than
	// Config.WantedInterval ago.
	WantedRateLimited = "rate_limited"
	// WantedBusy: Config.Concurrency re-deliveries asked for by agents
	// already run.
	WantedBusy = "busy"
	// WantedOff: the service has no policy-signing key.
	WantedOff = "off"
	// WantedError: the launch could not be read.
	WantedError = "error"
	// WantedStopping: the service is stopping.
	WantedStopping = "stopping"
)

// RedeliveryWanted handles a validated redelivery_wanted cast. It returns
// the outcome and, when a re-delivery was started, a channel closed once
// it ended.
func (l *Launcher) RedeliveryWanted(ctx context.Context, a *attestrpc.RedeliveryWantedArgs) (string, <-chan struct{}) {
	outcome, done := l.redeliveryWanted(ctx, a)
	l.wanted.Inc(outcome)
	if outcome != WantedAccepted {
		// The launch id is not secret; the cast carries nothing else.
		l.log.Info("redelivery_wanted dropped", "outcome", outcome, "host", a.Host, "launch_id", a.LaunchID,
			"instance_id", a.InstanceID)
	}
	return outcome, done
}

func (l *Launcher) redeliveryWanted(ctx context.Context, a *attestrpc.RedeliveryWantedArgs) (string, <-chan struct{}) {
	if l.cfg.PolicyKey == nil {
		return WantedOff, nil
	}
	rec, err := l.cfg.Store.GetLaunch(ctx, a.LaunchID)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return WantedUnknownLaunch, nil
	case err != nil:
		l.log.Error("redelivery_wanted: cannot read launch", "launch_id", a.LaunchID, "error", err)
		return WantedError, nil
	case !launch.Delivered(rec.State):
		return WantedNotDelivered, nil
	case rec.Host != a.Host:
		return WantedHostMismatch, nil
	case rec.InstanceID != a.InstanceID:
		return WantedInstanceMismatch, nil
	}
	select {
	case l.wantedSem <- struct{}{}:
	default:
		return WantedBusy, nil
	}
	if !l.wantedAllow(a.LaunchID) {
		<-l.wantedSem
		return WantedRateLimited, nil
	}
	// Added under redeliverMu, which Run takes to set stopping before it
	// waits: no Add after the Wait began.
	l.redeliverMu.Lock()
	if l.stopping {
		l.redeliverMu.Unlock()
		<-l.wantedSem
		return WantedStopping, nil
	}
	l.wg.Add(1)
	l.redeliverMu.Unlock()
	done := make(chan struct{})
	go func() {
		defer l.wg.Done()
		defer close(done)
		defer func() { <-l.wantedSem }()
		_, err := l.redeliver(context.WithoutCancel(ctx), a.LaunchID, launch.InitiatorAgent)
		switch {
		case errors.Is(err, ErrBusy):
			l.log.Info("redelivery_wanted: a re-delivery of the launch is already running", "launch_id", a.LaunchID)
		case err != nil:
			l.log.Warn("redelivery asked for by the agent did not run", "launch_id", a.LaunchID, "host", a.Host, "error", err)
		}
	}()
	return WantedAccepted, done
}

// wantedAllow reports whether an agent's ask for launch id may run now,
// and if so records it (limiter.go).
func (l *Launcher) wantedAllow(id string) bool {
	now := l.cfg.Now()
	l.redeliverMu.Lock()
	defer l.redeliverMu.Unlock()
	ok, _ := l.wantedLimit.allow(id, now)
	return ok
}

// DefaultWantedInterval is Config.WantedInterval's default.
const DefaultWantedInterval = time.Minute
