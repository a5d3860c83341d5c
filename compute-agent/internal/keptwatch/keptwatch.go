// Package keptwatch asks the attestation service for re-delivery when the
// instance of a blob the agent keeps (package deliver) starts: it was
// absent and is present, or it is present at the agent's first look after
// the host rebooted. The ask (redelivery_wanted) is only a trigger: the
// service attests the host afresh, checks the launch and decides; the
// secret comes back, if at all, through redeliver_challenge and
// redeliver_secret, which the agent authenticates as for a user's request.
//
// Bounds: one check every Interval (presence through the injector, one
// query per kept blob, at most deliver.MaxKept); per launch at most one
// outstanding ask: after an ask no re-delivery followed (the service
// refused, dropped it, or is older than RPC API 1.4 and ignores the cast)
// the next waits Backoff, doubling up to BackoffMax, and after MaxAsks
// asks the launch is left to its tenant (`trustpool launch redeliver`)
// until its instance stops and starts again. A re-delivery (asked for by
// anyone) ends the asking. It logs launch and instance ids only.
package keptwatch

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// Kept names one kept blob.
type Kept struct {
	LaunchID, InstanceID string
}

// Config configures a Watcher.
type Config struct {
	// Interval between checks (required for Run).
	Interval time.Duration
	// Kept lists the kept blobs.
	Kept func() ([]Kept, error)
	// Present reports whether the instance runs on this host (the
	// injector's check, as for instance_present).
	Present func(ctx context.Context, instanceID string) (bool, error)
	// Ask casts redelivery_wanted for k.
	Ask func(ctx context.Context, k Kept) error
	// Rebooted: the host booted since the agent last ran, so instances
	// present at the first check have started (otherwise they are the
	// baseline: they were running, with their secret, before the agent
	// restarted).
	Rebooted bool
	// Settled, when set, is called once, after the first check that had
	// a presence answer for every kept blob: from then on the instances'
	// states are known here, and the caller may record the boot as seen.
	Settled func()
	// Backoff is the wait after an ask before the next (default
	// DefaultBackoff; longer than the service's redelivery_wanted_interval
	// and a re-delivery take); it doubles up to BackoffMax (default
	// DefaultBackoffMax).
	Backoff, BackoffMax time.Duration
	// MaxAsks bounds the asks per start of an instance (default
	// DefaultMaxAsks).
	MaxAsks int
	Now     func() time.Time
	Logger  *slog.Logger
}

// Defaults of Config.
const (
	DefaultBackoff    = 2 * time.Minute
	DefaultBackoffMax = time.Hour
	DefaultMaxAsks    = 8
)

// Watcher tracks the kept blobs' instances. Check and Redelivered are safe
// for concurrent use.
type Watcher struct {
	cfg Config
	log *slog.Logger

	mu       sync.Mutex
	primed   bool
	settled  bool // Settled was called
	launches map[string]*state
	// booted holds the blobs kept before a reboot whose instance's
	// presence is not known yet (libvirt may answer only later): their
	// first answer "present" is a start.
	booted      map[string]bool
	warnedNoAns bool
}

type state struct {
	present bool
	// wanted: the instance started and no re-delivery followed yet.
	wanted bool
	asks   int
	next   time.Time
}

// New returns a Watcher.
func New(cfg Config) *Watcher {
	if cfg.Backoff <= 0 {
		cfg.Backoff = DefaultBackoff
	}
	if cfg.BackoffMax < cfg.Backoff {
		cfg.BackoffMax = max(DefaultBackoffMax, cfg.Backoff)
	}
	if cfg.MaxAsks <= 0 {
		cfg.MaxAsks = DefaultMaxAsks
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Watcher{cfg: cfg, log: cfg.Logger, launches: map[string]*state{}}
}

// Run checks every Interval until ctx ends, the first time at once.
func (w *Watcher) Run(ctx context.Context) error {
	t := time.NewTicker(w.cfg.Interval)
	defer t.Stop()
	for {
		w.Check(ctx)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

// Redelivered records that the launch's secret was delivered again: its
// instance's start needs no more asks.
func (w *Watcher) Redelivered(launchID string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if s := w.launches[launchID]; s != nil {
		s.wanted, s.asks = false, 0
	}
}

// Check looks at every kept blob's instance once and asks for the
// re-deliveries due.
func (w *Watcher) Check(ctx context.Context) {
	kept, err := w.cfg.Kept()
	if err != nil {
		w.log.Warn("cannot list kept launch blobs", "error", err)
		return
	}
	w.mu.Lock()
	if !w.primed && w.cfg.Rebooted {
		w.booted = make(map[string]bool, len(kept))
		for _, k := range kept {
			w.booted[k.LaunchID] = true
		}
	}
	w.primed = true
	w.mu.Unlock()
	seen := make(map[string]bool, len(kept))
	answered := true
	for _, k := range kept {
		seen[k.LaunchID] = true
		// The presence check may take a while (libvirt): not under mu.
		present, err := w.cfg.Present(ctx, k.InstanceID)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			answered = false
			w.log.Debug("instance presence unknown", "launch_id", k.LaunchID, "instance_id", k.InstanceID, "error", err)
			continue // no transition on an unknown answer
		}
		if w.due(k, present) {
			w.ask(ctx, k)
		}
	}
	w.mu.Lock()
	for id := range w.launches {
		if !seen[id] {
			delete(w.launches, id) // dropped (launch deleted, or too many kept)
		}
	}
	for id := range w.booted {
		if !seen[id] {
			delete(w.booted, id)
		}
	}
	settle := answered && !w.settled && w.cfg.Settled != nil
	if answered {
		w.settled = true
	}
	w.mu.Unlock()
	if settle {
		w.cfg.Settled()
	}
}

// due updates a launch's state with a presence answer and reports whether
// an ask is due now (recording it as made).
func (w *Watcher) due(k Kept, present bool) bool {
	now := w.cfg.Now()
	w.mu.Lock()
	defer w.mu.Unlock()
	s := w.launches[k.LaunchID]
	if s == nil {
		// Otherwise the blob was kept for a running instance that has
		// its secret (kept after the first check, or before an agent
		// restart without a reboot).
		s = &state{present: present && !w.booted[k.LaunchID]}
		delete(w.booted, k.LaunchID)
		w.launches[k.LaunchID] = s
	}
	if !present {
		s.present, s.wanted, s.asks = false, false, 0
		return false
	}
	if !s.present {
		w.log.Info("instance of a kept launch blob started; asking the attestation service for re-delivery",
			"launch_id", k.LaunchID, "instance_id", k.InstanceID)
		s.present, s.wanted, s.asks, s.next = true, true, 0, now
	}
	if !s.wanted || now.Before(s.next) {
		return false
	}
	if s.asks >= w.cfg.MaxAsks {
		s.wanted = false
		w.log.Warn("no re-delivery followed the asks for a kept launch blob; giving up until the instance starts again (its tenant can run `trustpool launch redeliver`)",
			"launch_id", k.LaunchID, "instance_id", k.InstanceID, "asks", s.asks)
		return false
	}
	if s.asks > 0 && !w.warnedNoAns {
		w.warnedNoAns = true
		w.log.Warn("no re-delivery followed an ask: the service refused it (see the launch's history), dropped it, "+
			"or does not implement redelivery_wanted (RPC API 1.4); asking again with backoff",
			"launch_id", k.LaunchID, "asks", s.asks)
	}
	s.next = now.Add(w.delay(s.asks))
	s.asks++
	return true
}

// delay is the wait after the n-th ask (from 0).
func (w *Watcher) delay(n int) time.Duration {
	d := w.cfg.Backoff
	for range n {
		if d >= w.cfg.BackoffMax/2 {
			return w.cfg.BackoffMax
		}
		d *= 2
	}
	return min(d, w.cfg.BackoffMax)
}

func (w *Watcher) ask(ctx context.Context, k Kept) {
	if err := w.cfg.Ask(ctx, k); err != nil {
		// The backoff already runs: the next ask waits as after an
		// unanswered one.
		w.log.Warn("cannot ask for re-delivery", "launch_id", k.LaunchID, "error", err)
		return
	}
	w.log.Debug("asked for re-delivery", "launch_id", k.LaunchID, "instance_id", k.InstanceID)
}
