package traits

import (
	"container/heap"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/trustpool/trustpool/attestation-service/internal/cloud"
	"github.com/trustpool/trustpool/attestation-service/internal/metrics"
	"github.com/trustpool/trustpool/internal/policy"
	"github.com/trustpool/trustpool/internal/verdict"
)

// Placement is what the mirror needs from Placement (*cloud.Placement).
// Errors wrap cloud.ErrConflict (generation changed since read),
// cloud.ErrNotFound (no such provider) and cloud.ErrBadRequest (e.g. a
// trait that does not exist).
type Placement interface {
	// ProviderTraits returns a provider's generation and traits.
	ProviderTraits(ctx context.Context, rp string) (generation int, traits []string, err error)
	// SetProviderTraits replaces a provider's traits if its generation is
	// still generation.
	SetProviderTraits(ctx context.Context, rp string, generation int, traits []string) (int, error)
	// EnsureTrait creates a custom trait unless it exists.
	EnsureTrait(ctx context.Context, name string) error
	// TraitsWithPrefix lists the existing traits starting with prefix.
	TraitsWithPrefix(ctx context.Context, prefix string) ([]string, error)
	// ProvidersWithTrait lists the UUIDs of the providers that have trait.
	ProvidersWithTrait(ctx context.Context, trait string) ([]string, error)
}

// Nodes finds the compute node resource providers of hosts.
type Nodes interface {
	// AllNodes returns the provider UUIDs of every host it knows, by host
	// name (the nova-compute service host).
	AllNodes(ctx context.Context) (map[string][]string, error)
}

// Owner says which hosts this instance writes the traits of, when several
// service instances share one database (*cluster.Membership, through the
// service).
type Owner interface {
	// Owns reports whether this instance writes name's traits: name is a
	// host, or the UUID of a provider of no known host (an orphan). The
	// mirror calls it holding its lock: it must not call the Mirror.
	Owns(name string) bool
}

// Config configures a Mirror.
type Config struct {
	Placement Placement
	Nodes     Nodes
	// Verdicts returns every host's latest stored verdict.
	Verdicts func(ctx context.Context) ([]verdict.Verdict, error)
	// Profiles returns the names of the defined profiles.
	Profiles func(ctx context.Context) ([]string, error)
	// Owner decides which hosts and orphan providers this mirror writes;
	// nil: all of them (a single instance).
	Owner Owner
	// ReconcileInterval between full reconciliations (default 5 min).
	ReconcileInterval time.Duration
	// Workers apply host changes in parallel (default 4).
	Workers int
	// MaxAttempts bounds the read-modify-write attempts of one provider
	// write (default 8).
	MaxAttempts int
	// RetryDelay is the first backoff after a failed host or reconcile
	// (default 1 s, doubling to 30 s).
	RetryDelay time.Duration
	// NodesMaxAge: a host with no known providers triggers a fresh node
	// lookup when the last one is older (default 30 s).
	NodesMaxAge time.Duration
	Logger      *slog.Logger
	Metrics     *metrics.Registry
	Now         func() time.Time
}

// Mirror keeps Placement traits in line with verdicts. Create it with New,
// feed it with VerdictStored and run it with Run.
type Mirror struct {
	cfg Config
	log *slog.Logger

	wake chan struct{}

	mu        sync.Mutex
	latest    map[string]verdict.Verdict // newest verdict per host
	queued    map[string]*pending        // hosts to apply
	order     []string                   // FIFO of queued hosts
	busy      map[string]bool            // hosts a worker applies now
	applied   map[string][]string        // owned traits last written per host
	nodes     map[string][]string        // host → provider UUIDs
	nodesAt   time.Time
	ambiguous map[string]bool // profile traits of more than one profile
	expiries  expiryHeap
	ready     bool // the first full reconcile succeeded
	// reconcileNow: ownership changed; Run reconciles at once.
	reconcileNow bool

	m mirrorMetrics
}

type pending struct {
	since     time.Time // when queued (for the latency metric)
	notBefore time.Time // retry backoff
	delay     time.Duration
	force     bool // ignore applied (drift found by the reconcile)
	// again: queued anew while a worker applied it (from againSince).
	again      bool
	againSince time.Time
	againForce bool
}

type mirrorMetrics struct {
	writes     *metrics.Counter
	syncSecs   *metrics.Histogram
	reconciles *metrics.Counter
	repaired   *metrics.Counter
}

// New returns a Mirror.
func New(cfg Config) *Mirror {
	if cfg.ReconcileInterval <= 0 {
		cfg.ReconcileInterval = 5 * time.Minute
	}
	if cfg.Workers <= 0 {
		cfg.Workers = 4
	}
	if cfg.MaxAttempts <= 0 {
		cfg.MaxAttempts = 8
	}
	if cfg.RetryDelay <= 0 {
		cfg.RetryDelay = time.Second
	}
	if cfg.NodesMaxAge <= 0 {
		cfg.NodesMaxAge = 30 * time.Second
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
	r := cfg.Metrics
	m := &Mirror{cfg: cfg, log: cfg.Logger, wake: make(chan struct{}, 1),
		latest: map[string]verdict.Verdict{}, queued: map[string]*pending{}, busy: map[string]bool{},
		applied: map[string][]string{}, nodes: map[string][]string{}, ambiguous: map[string]bool{},
		m: mirrorMetrics{
			writes: r.NewCounter("trustpool_placement_trait_writes_total",
				"Resource provider trait writes by result (ok, conflict: 409 generation conflict, retried; error).", "result"),
			syncSecs: r.NewHistogram("trustpool_placement_trait_sync_seconds",
				"Time from a verdict being stored to its traits written in Placement.", []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}),
			reconciles: r.NewCounter("trustpool_placement_reconciles_total", "Full trait reconciliations by result.", "result"),
			repaired: r.NewCounter("trustpool_placement_reconcile_repairs_total",
				"Providers whose owned traits a full reconciliation found wrong."),
		},
	}
	r.NewGaugeFunc("trustpool_placement_hosts_pending", "Hosts whose traits wait to be written.", func() float64 {
		m.mu.Lock()
		defer m.mu.Unlock()
		return float64(len(m.queued))
	})
	return m
}

// VerdictStored records a verdict the engine stored and queues its host if
// this instance owns it. It does not block.
func (m *Mirror) VerdictStored(_ *verdict.Verdict, v verdict.Verdict) {
	m.mu.Lock()
	if old, ok := m.latest[v.Host]; !ok || v.Seq >= old.Seq {
		m.latest[v.Host] = v
	}
	owned := m.owns(v.Host)
	if owned {
		m.queueLocked(v.Host, false)
	}
	m.mu.Unlock()
	if owned {
		m.poke()
	}
}

// OwnersChanged tells the mirror that the hosts this instance owns may have
// changed (a cluster membership change): Run reconciles at once, so that
// hosts handed over here converge without waiting for the next periodic
// reconcile. It does not block.
func (m *Mirror) OwnersChanged() {
	m.mu.Lock()
	m.reconcileNow = true
	m.mu.Unlock()
	m.poke()
}

// owns reports whether this instance writes name's traits (a host, or an
// orphan provider's UUID).
func (m *Mirror) owns(name string) bool {
	return m.cfg.Owner == nil || m.cfg.Owner.Owns(name)
}

func (m *Mirror) poke() {
	select {
	case m.wake <- struct{}{}:
	default:
	}
}

func (m *Mirror) queueLocked(host string, force bool) {
	p, ok := m.queued[host]
	switch {
	case ok && m.busy[host]:
		if !p.again {
			p.again, p.againSince = true, m.cfg.Now()
		}
		p.againForce = p.againForce || force
	case ok:
		p.force = p.force || force
	default:
		m.queued[host] = &pending{since: m.cfg.Now(), force: force}
		m.order = append(m.order, host)
	}
}

// Run reconciles everything, then applies queued hosts and reconciles
// every ReconcileInterval until ctx ends.
func (m *Mirror) Run(ctx context.Context) error {
	work := make(chan string)
	var wg sync.WaitGroup
	for range m.cfg.Workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for host := range work {
				m.finish(host, m.applyHost(ctx, host))
			}
		}()
	}
	defer wg.Wait()
	defer close(work)

	delay := m.cfg.RetryDelay
	next := time.Now() // the first reconcile at once
	for {
		m.mu.Lock()
		asked := m.reconcileNow
		m.reconcileNow = false
		m.mu.Unlock()
		if asked || !time.Now().Before(next) {
			if err := m.Reconcile(ctx); err != nil {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				m.log.Warn("placement trait reconciliation failed", "error", err, "retry_in", delay)
				next = time.Now().Add(delay)
				delay = min(2*delay, 30*time.Second)
			} else {
				delay = m.cfg.RetryDelay
				next = time.Now().Add(m.cfg.ReconcileInterval)
			}
		}
		host, wait := m.pick()
		if host != "" {
			select {
			case work <- host:
				continue
			case <-ctx.Done():
				m.unbusy(host)
				return ctx.Err()
			}
		}
		wait = min(wait, time.Until(next))
		t := time.NewTimer(max(wait, time.Millisecond))
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-m.wake:
		case <-t.C:
		}
		t.Stop()
	}
}

// pick returns a queued host no worker holds whose backoff has passed,
// marking it busy, or "" and how long to wait for one. Expired verdicts are
// queued here.
func (m *Mirror) pick() (string, time.Duration) {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.cfg.Now()
	for m.expiries.Len() > 0 && !m.expiries[0].at.After(now) {
		e := heap.Pop(&m.expiries).(expiry)
		if v, ok := m.latest[e.host]; ok && !v.ExpiresAt.After(now) {
			m.queueLocked(e.host, false)
		}
	}
	wait := time.Hour
	if m.expiries.Len() > 0 {
		wait = m.expiries[0].at.Sub(now)
	}
	if !m.ready {
		return "", wait
	}
	for i, host := range m.order {
		p := m.queued[host]
		if d := p.notBefore.Sub(now); d > 0 {
			wait = min(wait, d)
			continue
		}
		m.order = slices.Delete(m.order, i, i+1)
		m.busy[host] = true
		return host, 0
	}
	return "", wait
}

// unbusy puts back a host picked but not applied.
func (m *Mirror) unbusy(host string) {
	m.mu.Lock()
	delete(m.busy, host)
	m.order = append(m.order, host)
	m.mu.Unlock()
}

// finish records the outcome of applying host: done, applied again (queued
// anew meanwhile) or retried with backoff.
func (m *Mirror) finish(host string, err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.busy, host)
	p := m.queued[host]
	switch {
	case err != nil:
		p.delay = min(max(2*p.delay, m.cfg.RetryDelay), 30*time.Second)
		p.notBefore = m.cfg.Now().Add(p.delay)
		p.force = p.force || p.againForce
		p.again, p.againForce = false, false
		m.order = append(m.order, host)
		m.log.Warn("cannot update placement traits", "host", host, "error", err, "retry_in", p.delay)
		// Run may be asleep until the next reconcile: wake it so that it
		// times the retry (it slept through them before).
		m.poke()
	case p.again:
		m.queued[host] = &pending{since: p.againSince, force: p.againForce}
		m.order = append(m.order, host)
		m.poke()
	default:
		delete(m.queued, host)
	}
}

// applyHost writes the traits of host's newest verdict to its providers,
// if this instance owns host.
func (m *Mirror) applyHost(ctx context.Context, host string) error {
	m.mu.Lock()
	if !m.owns(host) {
		// Its owner writes it. Forget what was written here: should the
		// host come back, the reconcile of the hand-over compares afresh.
		delete(m.applied, host)
		m.mu.Unlock()
		return nil
	}
	p := m.queued[host]
	since, force := p.since, p.force
	v, known := m.latest[host]
	want := m.wantLocked(v, known)
	rps, haveNodes := m.nodes[host]
	nodesAt := m.nodesAt
	applied, wasApplied := m.applied[host]
	m.mu.Unlock()

	if !haveNodes && time.Since(nodesAt) > m.cfg.NodesMaxAge {
		if err := m.refreshNodes(ctx); err != nil {
			return err
		}
		m.mu.Lock()
		rps = m.nodes[host]
		m.mu.Unlock()
	}
	if len(rps) == 0 {
		// No compute node (yet): nothing to write, and nothing recorded,
		// so that the host's next verdict looks for its nodes again.
		m.mu.Lock()
		delete(m.applied, host)
		m.mu.Unlock()
		return nil
	}
	if !force && wasApplied && sameSet(applied, want) {
		m.noteExpiry(host, v, want)
		return nil
	}
	wrote := false
	for _, rp := range rps {
		w, err := m.setOwned(ctx, rp, host)
		if err != nil {
			return fmt.Errorf("host %s: %w", host, err)
		}
		wrote = wrote || w
	}
	if wrote {
		m.m.syncSecs.Observe(m.cfg.Now().Sub(since).Seconds())
	}
	m.mu.Lock()
	// What setOwned wrote is the newest verdict's; record that.
	v, known = m.latest[host]
	m.applied[host] = m.wantLocked(v, known)
	m.mu.Unlock()
	m.noteExpiry(host, v, want)
	return nil
}

// wantLocked is the owned traits for v (nothing when !known), without
// ambiguous profile traits.
func (m *Mirror) wantLocked(v verdict.Verdict, known bool) []string {
	if !known {
		return nil
	}
	want := Wanted(v, m.cfg.Now())
	return slices.DeleteFunc(want, func(t string) bool { return m.ambiguous[t] })
}

// noteExpiry queues host at the expiry of a verdict that gives it traits.
func (m *Mirror) noteExpiry(host string, v verdict.Verdict, want []string) {
	if len(want) == 0 {
		return
	}
	m.mu.Lock()
	heap.Push(&m.expiries, expiry{at: v.ExpiresAt, host: host})
	m.mu.Unlock()
	m.poke()
}

// setOwned makes rp's owned traits those of host's newest verdict (none
// for host ""), read-modify-write with the generation. The wanted traits
// are computed again on every attempt, from the newest verdict. It reports
// whether it wrote. It stops without writing once this instance no longer
// owns host (rp for host ""): ownership may move while it retries.
func (m *Mirror) setOwned(ctx context.Context, rp, host string) (bool, error) {
	name := host
	if name == "" {
		name = rp
	}
	created := map[string]bool{}
	for attempt := 1; ; attempt++ {
		if !m.owns(name) {
			return false, nil
		}
		gen, cur, err := m.cfg.Placement.ProviderTraits(ctx, rp)
		if errors.Is(err, cloud.ErrNotFound) {
			return false, nil // gone: nothing to mirror on
		}
		if err != nil {
			return false, err
		}
		var want []string
		if host != "" {
			m.mu.Lock()
			v, known := m.latest[host]
			want = m.wantLocked(v, known)
			m.mu.Unlock()
		}
		next := merge(cur, want)
		if sameSet(cur, next) {
			return false, nil
		}
		for _, t := range want {
			if !created[t] && !slices.Contains(cur, t) {
				if err := m.cfg.Placement.EnsureTrait(ctx, t); err != nil {
					return false, err
				}
				created[t] = true
			}
		}
		_, err = m.cfg.Placement.SetProviderTraits(ctx, rp, gen, next)
		switch {
		case err == nil:
			m.m.writes.Inc("ok")
			m.log.Debug("placement traits written", "resource_provider", rp, "host", host, "traits", want)
			return true, nil
		case errors.Is(err, cloud.ErrConflict) && attempt < m.cfg.MaxAttempts:
			m.m.writes.Inc("conflict")
			m.log.Debug("placement trait write conflict, retrying", "resource_provider", rp, "attempt", attempt)
		case errors.Is(err, cloud.ErrBadRequest) && attempt < m.cfg.MaxAttempts:
			// Deleted between our create and the write; create again.
			m.m.writes.Inc("error")
			clear(created)
		case errors.Is(err, cloud.ErrNotFound):
			return false, nil
		default:
			m.m.writes.Inc("error")
			return false, err
		}
		// A short random pause lets the other writer finish.
		d := time.Duration(attempt) * (5*time.Millisecond + rand.N(20*time.Millisecond)) //nolint:gosec // G404: retry jitter, not a secret
		select {
		case <-ctx.Done():
			return false, ctx.Err()
		case <-time.After(d):
		}
	}
}

func (m *Mirror) refreshNodes(ctx context.Context) error {
	nodes, err := m.cfg.Nodes.AllNodes(ctx)
	if err != nil {
		return fmt.Errorf("find compute nodes: %w", err)
	}
	m.mu.Lock()
	m.nodes, m.nodesAt = nodes, time.Now()
	m.mu.Unlock()
	return nil
}

// Reconcile compares every owned trait in Placement with the stored
// verdicts and repairs the differences: hosts whose providers differ are
// queued (and applied by the workers), providers that carry owned traits
// but belong to no known host lose them here. With an Owner, only the
// hosts and orphan providers it owns are compared and repaired.
func (m *Mirror) Reconcile(ctx context.Context) error {
	err := m.reconcile(ctx)
	if err != nil {
		m.m.reconciles.Inc("error")
		return err
	}
	m.m.reconciles.Inc("ok")
	return nil
}

func (m *Mirror) reconcile(ctx context.Context) error {
	vs, err := m.cfg.Verdicts(ctx)
	if err != nil {
		return fmt.Errorf("read verdicts: %w", err)
	}
	names, err := m.cfg.Profiles(ctx)
	if err != nil {
		return fmt.Errorf("read profiles: %w", err)
	}
	if err := m.refreshNodes(ctx); err != nil {
		return err
	}
	owned, err := m.cfg.Placement.TraitsWithPrefix(ctx, Prefix)
	if err != nil {
		return err
	}
	have := map[string][]string{} // provider → owned traits it has
	for _, t := range owned {
		rps, err := m.cfg.Placement.ProvidersWithTrait(ctx, t)
		if err != nil {
			return err
		}
		for _, rp := range rps {
			have[rp] = append(have[rp], t)
		}
	}

	m.mu.Lock()
	byKey := map[string][]string{}
	for _, n := range names {
		byKey[ProfileTrait(n)] = append(byKey[ProfileTrait(n)], n)
	}
	m.ambiguous = map[string]bool{}
	for t, ns := range byKey {
		if len(ns) > 1 {
			m.ambiguous[t] = true
			m.log.Error("profiles share one placement trait; not mirroring it", "trait", t, "profiles", ns,
				"name_key", policy.NameKey(ns[0]))
		}
	}
	for _, v := range vs {
		if old, ok := m.latest[v.Host]; !ok || v.Seq > old.Seq {
			m.latest[v.Host] = v
		}
	}
	// Hosts no longer stored (deleted) have no traits.
	stored := map[string]bool{}
	for _, v := range vs {
		stored[v.Host] = true
	}
	for h := range m.latest {
		if !stored[h] && !m.busy[h] && m.queued[h] == nil {
			delete(m.latest, h)
		}
	}
	owner := map[string]string{} // provider → host
	repairs := 0
	for host, rps := range m.nodes {
		if !m.owns(host) {
			// Another instance's: its providers are no orphans, and this
			// instance neither reads nor writes them.
			for _, rp := range rps {
				owner[rp] = host
			}
			delete(m.applied, host)
			continue
		}
		v, known := m.latest[host]
		want := m.wantLocked(v, known)
		drift := false
		for _, rp := range rps {
			owner[rp] = host
			if !sameSet(have[rp], want) {
				drift = true
				repairs++
			}
		}
		if drift {
			m.queueLocked(host, true)
		} else if known {
			m.applied[host] = want
			if len(want) > 0 {
				heap.Push(&m.expiries, expiry{at: v.ExpiresAt, host: host})
			}
		}
	}
	var orphans []string
	for rp := range have {
		// An orphan is cleaned by the one instance that owns its UUID as
		// if it were a host's name: deterministic, and spread like hosts.
		if _, ok := owner[rp]; !ok && m.owns(rp) {
			orphans = append(orphans, rp)
		}
	}
	m.mu.Unlock()

	// A provider with owned traits that belongs to no host we know: remove
	// them (never wrong, the filter decides anyway).
	var errs []error
	for _, rp := range orphans {
		repairs++
		if _, err := m.setOwned(ctx, rp, ""); err != nil {
			errs = append(errs, fmt.Errorf("resource provider %s: %w", rp, err))
		}
	}
	m.m.repaired.Add(float64(repairs))
	if repairs > 0 {
		m.log.Info("placement trait drift found", "providers", repairs, "orphans", len(orphans))
	}
	m.mu.Lock()
	m.ready = true
	m.mu.Unlock()
	m.poke()
	return errors.Join(errs...)
}

type expiry struct {
	at   time.Time
	host string
}

type expiryHeap []expiry

func (h expiryHeap) Len() int           { return len(h) }
func (h expiryHeap) Less(i, j int) bool { return h[i].at.Before(h[j].at) }
func (h expiryHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *expiryHeap) Push(x any)        { *h = append(*h, x.(expiry)) }
func (h *expiryHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}
