// Package revocation takes an untrusted host out of service: on a
// transition to untrusted it disables the host's nova-compute service
// through Nova's API (os-services, microversion 2.53) with disabled_reason
// "trustpool: <why>", and on the host's next trusted verdict it enables the
// service again — only if Trustpool disabled it.
//
// # Rules
//
//   - A transition to untrusted is a verdict with status untrusted (or
//     unknown, with DisableOnUnknown) after one that was not (or after
//     none: a new host that fails at once).
//   - A service that is already disabled is left alone, whoever disabled
//     it: an operator's disable and reason are never overwritten.
//   - Ownership is the reason: Trustpool re-enables a service only when
//     its disabled_reason starts with ReasonPrefix ("trustpool: "). An
//     operator who wants a host to stay disabled after it is trusted again
//     gives it another reason (openstack compute service set --disable
//     --disable-reason ...). Nothing else is recorded, so the rule holds
//     across restarts and for several service instances.
//   - Mass-revocation brake: when more than BrakePercent of the enrolled
//     hosts (and at least BrakeMinHosts hosts) turned untrusted within
//     BrakeWindow, the service stops disabling and sends the alert
//     notification trustpool.revocation.brake_engaged (priority ERROR)
//     instead: a bad profile push must not empty the cloud. It acts again
//     once the window holds few enough transitions
//     (trustpool.revocation.brake_released, which lists the hosts it left
//     enabled meanwhile; they are not disabled later). Re-enabling is not
//     braked. The window and whether the brake is engaged live in the
//     database (BrakeStore, the store's revocation_brake table): all
//     service instances count their transitions in one window against
//     one limit, each decision is atomic across them, and a restart
//     keeps both. One alert is sent per engagement and one release
//     notice, by whichever instance takes the decision.
//   - Every action is retried with backoff until it succeeds or a newer
//     transition of the host replaces it. VerdictStored never blocks.
//     While the brake's database cannot be reached, no transition is
//     acted on (disables are neither taken nor dropped): they wait, in
//     order, and are retried.
//
// What it does not do: Nova has no conditional update, so an operator's
// disable landing between the service's read and its write is
// overwritten (and later re-enabled). The Nova API must let the service
// user update services (admin in Zed's default policy).
package revocation

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/trustpool/trustpool/attestation-service/internal/cloud"
	"github.com/trustpool/trustpool/attestation-service/internal/metrics"
	"github.com/trustpool/trustpool/attestation-service/internal/store"
	"github.com/trustpool/trustpool/internal/attestrpc"
	"github.com/trustpool/trustpool/internal/verdict"
)

// ReasonPrefix starts every disabled_reason Trustpool writes; it marks the
// disables Trustpool may undo.
const ReasonPrefix = "trustpool: "

// maxReasonLen is Nova's limit on disabled_reason.
const maxReasonLen = 255

// Compute is what the revoker needs from Nova (*cloud.Compute). Errors wrap
// cloud.ErrNotFound when the host has no nova-compute service.
type Compute interface {
	ComputeService(ctx context.Context, host string) (cloud.Service, error)
	DisableService(ctx context.Context, id, reason string) error
	EnableService(ctx context.Context, id string) error
}

// BrakeStore keeps the brake's window for all service instances
// (*store.Store). since is where the window starts; limit is the number of
// hosts it tolerates.
type BrakeStore interface {
	// TakeBrakeSlot records host's transition to untrusted and decides
	// whether it may be acted on.
	TakeBrakeSlot(ctx context.Context, host string, at, since time.Time, limit int, window time.Duration) (store.BrakeState, error)
	// CheckBrake releases the brake once the window allows.
	CheckBrake(ctx context.Context, since time.Time, limit int, window time.Duration) (store.BrakeState, error)
}

// Notifier sends oslo notifications.
type Notifier interface {
	Notify(ctx context.Context, priority, eventType string, payload any) error
}

// Config configures a Revoker.
type Config struct {
	// Compute disables and enables services. Required.
	Compute Compute
	// DisableOnUnknown also disables on a transition to unknown (agent
	// unreachable, not enrolled any more).
	DisableOnUnknown bool
	// BrakePercent, BrakeWindow and BrakeMinHosts configure the brake
	// (see the package doc). BrakePercent 100 never brakes.
	BrakePercent  float64
	BrakeWindow   time.Duration
	BrakeMinHosts int
	// BrakeStore keeps the window; required unless BrakePercent is 100.
	BrakeStore BrakeStore
	// Hosts returns the number of enrolled hosts.
	Hosts    func(ctx context.Context) (int, error)
	Notifier Notifier
	// RetryDelay is the first backoff of a failed action (default 1 s,
	// doubling to 1 min).
	RetryDelay time.Duration
	Logger     *slog.Logger
	Metrics    *metrics.Registry
	Now        func() time.Time
}

// Revoker acts on verdict transitions.
type Revoker struct {
	cfg  Config
	log  *slog.Logger
	wake chan struct{}

	mu      sync.Mutex
	events  []event            // transitions not yet looked at, in order
	actions map[string]*action // per host: the action to take
	// intakeAt: transitions wait until then after the brake's database
	// failed.
	intakeAt time.Time
	// checkAt is when to look at the brake's window again (zero: not
	// until a transition).
	checkAt time.Time

	hostsN  int
	hostsAt time.Time

	actionsTotal *metrics.Counter
	brakeGauge   *metrics.Gauge
}

type event struct {
	host    string
	disable bool
	reason  string
	at      time.Time
}

type action struct {
	disable   bool
	reason    string
	notBefore time.Time
	delay     time.Duration
}

// New returns a Revoker.
func New(cfg Config) *Revoker {
	if cfg.RetryDelay <= 0 {
		cfg.RetryDelay = time.Second
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
	if cfg.BrakePercent < 100 && cfg.BrakeStore == nil {
		panic("revocation: Config.BrakeStore is required unless BrakePercent is 100")
	}
	r := &Revoker{cfg: cfg, log: cfg.Logger, wake: make(chan struct{}, 1),
		actions: map[string]*action{},
		actionsTotal: cfg.Metrics.NewCounter("trustpool_revocation_actions_total",
			"Compute service actions by action (disable, enable) and outcome (done; unchanged: nothing to do, "+
				"e.g. disabled by an operator; braked: not taken because of the mass-revocation brake; no_service; error).", "action", "outcome"),
		brakeGauge: cfg.Metrics.NewGauge("trustpool_revocation_brake_engaged", "1 while the mass-revocation brake holds."),
	}
	r.brakeGauge.Set(0)
	if cfg.BrakePercent < 100 {
		// A restart may find the brake engaged: look at once.
		r.checkAt = cfg.Now()
	}
	return r
}

// revoking reports whether status takes a host out of service.
func (r *Revoker) revoking(s verdict.Status) bool {
	return s == verdict.Untrusted || (s == verdict.Unknown && r.cfg.DisableOnUnknown)
}

// VerdictStored looks at a stored verdict and queues an action on a
// transition. It does not block.
func (r *Revoker) VerdictStored(old *verdict.Verdict, v verdict.Verdict) {
	var ev event
	switch {
	case r.revoking(v.Status) && (old == nil || !r.revoking(old.Status)):
		ev = event{host: v.Host, disable: true, reason: Reason(v)}
	case v.Status == verdict.Trusted && (old == nil || old.Status != verdict.Trusted):
		ev = event{host: v.Host}
	default:
		return
	}
	ev.at = r.cfg.Now()
	r.mu.Lock()
	r.events = append(r.events, ev)
	r.mu.Unlock()
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// Reason is the disabled_reason for v: ReasonPrefix, the status and the
// verdict's reasons, at most 255 characters, without control characters.
func Reason(v verdict.Verdict) string {
	s := ReasonPrefix + string(v.Status)
	if len(v.Reasons) > 0 {
		s += ": " + strings.Join(v.Reasons, "; ")
	}
	s = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return ' '
		}
		return r
	}, s)
	if utf8.RuneCountInString(s) > maxReasonLen {
		rs := []rune(s)
		s = string(rs[:maxReasonLen-1]) + "…"
	}
	return s
}

// Run takes the queued actions until ctx ends.
func (r *Revoker) Run(ctx context.Context) error {
	for {
		r.intake(ctx)
		r.checkRelease(ctx)
		host, a, wait := r.next()
		if host != "" {
			err := r.act(ctx, host, a)
			r.done(host, a, err)
			continue
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-r.wake:
		case <-t.C:
		}
		t.Stop()
	}
}

// intake turns the queued transitions into actions, in order, applying
// the brake to disables.
func (r *Revoker) intake(ctx context.Context) {
	r.mu.Lock()
	if r.cfg.Now().Before(r.intakeAt) {
		r.mu.Unlock()
		return
	}
	evs := r.events
	r.events = nil
	r.mu.Unlock()
	for i, ev := range evs {
		if !ev.disable {
			r.mu.Lock()
			r.actions[ev.host] = &action{}
			r.mu.Unlock()
			continue
		}
		held, err := r.brake(ctx, ev)
		if err != nil {
			r.log.Warn("cannot take a revocation brake slot; transitions wait", "host", ev.host, "error", err,
				"retry_in", r.cfg.RetryDelay)
			r.mu.Lock()
			r.events = append(slices.Clone(evs[i:]), r.events...)
			r.intakeAt = r.cfg.Now().Add(r.cfg.RetryDelay)
			r.mu.Unlock()
			return
		}
		if held {
			r.actionsTotal.Inc("disable", "braked")
			r.log.Warn("mass-revocation brake holds: not disabling the compute service", "host", ev.host)
			r.mu.Lock()
			delete(r.actions, ev.host)
			r.mu.Unlock()
			continue
		}
		r.mu.Lock()
		r.actions[ev.host] = &action{disable: true, reason: ev.reason}
		r.mu.Unlock()
	}
}

// hosts returns the number of enrolled hosts, read at most every 10 s.
func (r *Revoker) hosts(ctx context.Context) int {
	if time.Since(r.hostsAt) < 10*time.Second && r.hostsN > 0 {
		return r.hostsN
	}
	n, err := r.cfg.Hosts(ctx)
	if err != nil {
		r.log.Warn("cannot count hosts for the revocation brake", "error", err)
		return r.hostsN
	}
	r.hostsN, r.hostsAt = n, time.Now()
	return n
}

// limit is the number of transitions in a window the brake tolerates.
func (r *Revoker) limit(ctx context.Context) int {
	if r.cfg.BrakePercent >= 100 {
		return math.MaxInt
	}
	n := int(math.Floor(r.cfg.BrakePercent / 100 * float64(r.hosts(ctx))))
	return max(n, r.cfg.BrakeMinHosts-1)
}

// brake records a transition to untrusted and reports whether the brake
// holds (engaging it, with the alert, if this transition trips it).
func (r *Revoker) brake(ctx context.Context, ev event) (bool, error) {
	if r.cfg.BrakePercent >= 100 {
		return false, nil
	}
	limit := r.limit(ctx)
	st, err := r.cfg.BrakeStore.TakeBrakeSlot(ctx, ev.host, ev.at, r.cfg.Now().Add(-r.cfg.BrakeWindow), limit, r.cfg.BrakeWindow)
	if err != nil {
		return false, err
	}
	if st.Released {
		r.released(ctx, st)
	}
	r.seen(st)
	if st.Engaged {
		total := r.hosts(ctx)
		r.log.Error("mass-revocation brake engaged: compute services are no longer disabled", "hosts_untrusted", len(st.Hosts),
			"hosts_total", total, "brake_percent", r.cfg.BrakePercent, "brake_window", r.cfg.BrakeWindow)
		r.notify(ctx, "ERROR", attestrpc.EventBrakeEngaged, map[string]any{
			"hosts_untrusted": len(st.Hosts), "hosts_total": total, "percent": r.cfg.BrakePercent,
			"window_seconds": r.cfg.BrakeWindow.Seconds(), "hosts": nonNil(st.Hosts)})
	}
	return st.Held, nil
}

// seen records the brake's state as the store last reported it.
func (r *Revoker) seen(st store.BrakeState) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.checkAt = time.Time{}
	if st.Held {
		r.brakeGauge.Set(1)
		// Look at the window again when its oldest transition leaves it.
		r.checkAt = st.Next.Add(time.Millisecond)
		if st.Next.IsZero() {
			r.checkAt = r.cfg.Now().Add(r.cfg.BrakeWindow)
		}
		return
	}
	r.brakeGauge.Set(0)
}

// checkRelease releases the brake once the window holds few enough
// transitions (or notes that another instance did).
func (r *Revoker) checkRelease(ctx context.Context) {
	r.mu.Lock()
	now := r.cfg.Now()
	due := !r.checkAt.IsZero() && !now.Before(r.checkAt)
	r.mu.Unlock()
	if !due {
		return
	}
	st, err := r.cfg.BrakeStore.CheckBrake(ctx, now.Add(-r.cfg.BrakeWindow), r.limit(ctx), r.cfg.BrakeWindow)
	if err != nil {
		r.log.Warn("cannot check the revocation brake", "error", err, "retry_in", r.cfg.RetryDelay)
		r.mu.Lock()
		r.checkAt = now.Add(r.cfg.RetryDelay)
		r.mu.Unlock()
		return
	}
	if st.Released {
		r.released(ctx, st)
	}
	r.seen(st)
}

// released says the brake was released, listing the hosts it held.
func (r *Revoker) released(ctx context.Context, st store.BrakeState) {
	r.log.Info("mass-revocation brake released", "hosts_untrusted", len(st.Hosts), "skipped_hosts", st.Skipped)
	r.notify(ctx, "INFO", attestrpc.EventBrakeReleased, map[string]any{
		"hosts_untrusted": len(st.Hosts), "hosts_total": r.hosts(ctx), "percent": r.cfg.BrakePercent,
		"window_seconds": r.cfg.BrakeWindow.Seconds(), "hosts": nonNil(st.Hosts), "skipped_hosts": nonNil(st.Skipped)})
}

func nonNil(l []string) []string {
	if l == nil {
		return []string{}
	}
	return l
}

// next returns an action whose backoff has passed, or how long to wait.
func (r *Revoker) next() (string, action, time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.cfg.Now()
	wait := time.Minute
	if !r.checkAt.IsZero() {
		wait = min(wait, r.checkAt.Sub(now))
	}
	if len(r.events) > 0 {
		wait = min(wait, r.intakeAt.Sub(now))
	}
	names := make([]string, 0, len(r.actions))
	for h := range r.actions {
		names = append(names, h)
	}
	slices.Sort(names)
	for _, h := range names {
		a := r.actions[h]
		if d := a.notBefore.Sub(now); d > 0 {
			wait = min(wait, d)
			continue
		}
		return h, *a, 0
	}
	return "", action{}, max(wait, time.Millisecond)
}

// done records an action's outcome; a failed one is retried unless a newer
// transition replaced it meanwhile.
func (r *Revoker) done(host string, a action, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	cur, ok := r.actions[host]
	if !ok || cur.disable != a.disable || cur.reason != a.reason || cur.notBefore != a.notBefore {
		return // replaced
	}
	if err == nil {
		delete(r.actions, host)
		return
	}
	cur.delay = min(max(2*cur.delay, r.cfg.RetryDelay), time.Minute)
	cur.notBefore = r.cfg.Now().Add(cur.delay)
	r.log.Warn("compute service action failed", "host", host, "disable", a.disable, "error", err, "retry_in", cur.delay)
}

// act disables or enables host's nova-compute service by the rules.
func (r *Revoker) act(ctx context.Context, host string, a action) error {
	kind := "enable"
	if a.disable {
		kind = "disable"
	}
	svc, err := r.cfg.Compute.ComputeService(ctx, host)
	if errors.Is(err, cloud.ErrNotFound) {
		r.actionsTotal.Inc(kind, "no_service")
		r.log.Info("no nova-compute service for host; nothing to "+kind, "host", host)
		return nil
	}
	if err != nil {
		r.actionsTotal.Inc(kind, "error")
		return err
	}
	ours := strings.HasPrefix(svc.DisabledReason, ReasonPrefix)
	switch {
	case a.disable && svc.Disabled:
		r.actionsTotal.Inc(kind, "unchanged")
		r.log.Info("compute service already disabled; left as it is", "host", host, "disabled_reason", svc.DisabledReason)
		return nil
	case a.disable:
		if err := r.cfg.Compute.DisableService(ctx, svc.ID, a.reason); err != nil {
			r.actionsTotal.Inc(kind, "error")
			return err
		}
		r.actionsTotal.Inc(kind, "done")
		r.log.Warn("compute service disabled", "host", host, "service_id", svc.ID, "disabled_reason", a.reason)
		r.notify(ctx, "INFO", attestrpc.EventComputeDisabled, map[string]any{"host": host, "service_id": svc.ID, "reason": a.reason})
		return nil
	case !svc.Disabled:
		r.actionsTotal.Inc(kind, "unchanged")
		return nil
	case !ours:
		r.actionsTotal.Inc(kind, "unchanged")
		r.log.Info("compute service disabled by someone else; not re-enabling", "host", host, "disabled_reason", svc.DisabledReason)
		return nil
	}
	if err := r.cfg.Compute.EnableService(ctx, svc.ID); err != nil {
		r.actionsTotal.Inc(kind, "error")
		return err
	}
	r.actionsTotal.Inc(kind, "done")
	r.log.Info("compute service enabled again", "host", host, "service_id", svc.ID, "was", svc.DisabledReason)
	r.notify(ctx, "INFO", attestrpc.EventComputeEnabled, map[string]any{"host": host, "service_id": svc.ID, "reason": svc.DisabledReason})
	return nil
}

func (r *Revoker) notify(ctx context.Context, priority, ev string, payload any) {
	if r.cfg.Notifier == nil {
		return
	}
	if err := r.cfg.Notifier.Notify(ctx, priority, ev, payload); err != nil {
		r.log.Warn("cannot send notification", "event", ev, "error", fmt.Sprint(err))
	}
}
