package service

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/gophercloud/gophercloud/v2"

	"github.com/trustpool/trustpool/attestation-service/internal/cloud"
	"github.com/trustpool/trustpool/attestation-service/internal/cluster"
	"github.com/trustpool/trustpool/attestation-service/internal/engine"
	"github.com/trustpool/trustpool/attestation-service/internal/metrics"
	"github.com/trustpool/trustpool/attestation-service/internal/revocation"
	"github.com/trustpool/trustpool/attestation-service/internal/store"
	"github.com/trustpool/trustpool/attestation-service/internal/traits"
	"github.com/trustpool/trustpool/internal/attestrpc"
	"github.com/trustpool/trustpool/internal/oslo"
	"github.com/trustpool/trustpool/internal/verdict"
)

// actions are what the service does with verdicts besides signing and
// publishing them: Placement traits ([placement] mirror_traits) and compute
// service disables ([revocation] disable_compute_service). Each is nil when
// switched off. Both need the service user's Keystone session, which
// exists once Keystone answered; until then they only queue verdicts.
type actions struct {
	cfg     Config
	log     *slog.Logger
	mirror  *traits.Mirror
	revoker *revocation.Revoker
	// ready is closed once the clients are set in placement and compute.
	ready     chan struct{}
	placement *latePlacement
	compute   *lateCompute
}

func newActions(cfg Config, log *slog.Logger, st *store.Store, eng func() *engine.Engine, reg *metrics.Registry, notifier *oslo.Notifier,
	owner traits.Owner) *actions {
	a := &actions{cfg: cfg, log: log, ready: make(chan struct{}), placement: &latePlacement{}, compute: &lateCompute{}}
	if cfg.Placement.MirrorTraits {
		var nodes traits.Nodes = traits.NovaNodes{Compute: a.compute}
		if cfg.Placement.NodeLookup == "name" {
			nodes = traits.NamedNodes{Placement: a.placement}
		}
		a.mirror = traits.New(traits.Config{
			Placement: a.placement, Nodes: nodes,
			Verdicts: func(ctx context.Context) ([]verdict.Verdict, error) { return storedVerdicts(ctx, st) },
			Profiles: func(ctx context.Context) ([]string, error) {
				ps, err := st.ListProfiles(ctx)
				names := make([]string, len(ps))
				for i, p := range ps {
					names[i] = p.Name
				}
				return names, err
			},
			Owner:             owner,
			ReconcileInterval: cfg.Placement.ReconcileInterval,
			Logger:            log.With("c", "placement"), Metrics: reg,
		})
	}
	if r := cfg.Revocation; r.DisableComputeService {
		a.revoker = revocation.New(revocation.Config{
			Compute: a.compute, DisableOnUnknown: r.DisableOnUnknown,
			BrakePercent: float64(r.BrakePercent), BrakeWindow: r.BrakeWindow, BrakeMinHosts: r.BrakeMinHosts,
			BrakeStore: st,
			Hosts: func(ctx context.Context) (int, error) {
				hs, err := eng().EnrolledHosts(ctx)
				return len(hs), err
			},
			Notifier: notifierFunc(func(ctx context.Context, priority, ev string, payload any) error {
				return notifier.Notify(ctx, nil, priority, ev, payload)
			}),
			Logger: log.With("c", "revocation"), Metrics: reg,
		})
	}
	return a
}

// ownersChanged tells the mirror that the cluster view changed (called
// from the membership's goroutine; a is set before its first refresh).
func (a *actions) ownersChanged() {
	if a != nil && a.mirror != nil {
		a.mirror.OwnersChanged()
	}
}

// mirrorOwner is the trait mirror's traits.Owner: the cluster's ownership
// that also decides who attests a host. Once this instance's own lease has
// lapsed (its database unreachable) every host is its to write: the
// members it knew are as stale as itself, and if every instance lost the
// database none would remove the traits of expiring verdicts otherwise.
// Writers may overlap then; each writes only what its verdicts say, and
// removing traits of expired verdicts is what matters.
type mirrorOwner struct{ ms *cluster.Membership }

func (o mirrorOwner) Owns(name string) bool {
	v := o.ms.View()
	return !v.Valid || v.Owns(name) || v.Owner(name) == ""
}

// enabled reports whether any action needs the OpenStack clients.
func (a *actions) enabled() bool { return a.mirror != nil || a.revoker != nil }

// VerdictStored implements engine.VerdictObserver.
func (a *actions) VerdictStored(old *verdict.Verdict, v verdict.Verdict) {
	if a.mirror != nil {
		a.mirror.VerdictStored(old, v)
	}
	if a.revoker != nil {
		a.revoker.VerdictStored(old, v)
	}
}

// connect builds the clients on the service user's session. Endpoint
// lookups that fail are retried: the catalog may be incomplete while a
// cloud is being deployed.
func (a *actions) connect(ctx context.Context, pc *gophercloud.ProviderClient) {
	delay := time.Second
	for {
		err := a.build(pc)
		if err == nil {
			return
		}
		a.log.Error("cannot set up the placement and nova clients; retrying", "error", err, "retry_in", delay)
		select {
		case <-ctx.Done():
			return
		case <-time.After(delay):
		}
		delay = min(2*delay, 30*time.Second)
	}
}

func (a *actions) build(pc *gophercloud.ProviderClient) error {
	var pl *cloud.Placement
	var co *cloud.Compute
	var err error
	if a.mirror != nil {
		p := a.cfg.Placement
		if pl, err = cloud.NewPlacement(pc, cloud.Endpoint{RegionName: p.RegionName, ValidInterfaces: p.ValidInterfaces,
			EndpointOverride: p.EndpointOverride, Timeout: p.Timeout}); err != nil {
			return fmt.Errorf("[placement]: %w", err)
		}
	}
	if a.revoker != nil || (a.mirror != nil && a.cfg.Placement.NodeLookup == "nova") {
		n := a.cfg.Nova
		if co, err = cloud.NewCompute(pc, cloud.Endpoint{RegionName: n.RegionName, ValidInterfaces: n.ValidInterfaces,
			EndpointOverride: n.EndpointOverride, Timeout: n.Timeout}); err != nil {
			return fmt.Errorf("[nova]: %w", err)
		}
	}
	a.placement.c, a.compute.c = pl, co
	close(a.ready)
	return nil
}

// run runs the actions once the clients exist.
func (a *actions) run(ctx context.Context, run func(name string, fn func() error)) {
	// started waits for the clients; false when ctx ended first.
	started := func() bool {
		select {
		case <-a.ready:
			return true
		case <-ctx.Done():
			return false
		}
	}
	if a.mirror != nil {
		run("placement traits", func() error {
			if !started() {
				return nil
			}
			return a.mirror.Run(ctx)
		})
	}
	if a.revoker != nil {
		run("revocation", func() error {
			if !started() {
				return nil
			}
			return a.revoker.Run(ctx)
		})
	}
}

// latePlacement and lateCompute are the clients, set once by build before
// it closes ready, which the runners (the only callers) wait for.
type latePlacement struct{ c *cloud.Placement }

func (l *latePlacement) ProviderTraits(ctx context.Context, rp string) (int, []string, error) {
	return l.c.ProviderTraits(ctx, rp)
}
func (l *latePlacement) SetProviderTraits(ctx context.Context, rp string, gen int, ts []string) (int, error) {
	return l.c.SetProviderTraits(ctx, rp, gen, ts)
}
func (l *latePlacement) EnsureTrait(ctx context.Context, name string) error {
	return l.c.EnsureTrait(ctx, name)
}
func (l *latePlacement) TraitsWithPrefix(ctx context.Context, prefix string) ([]string, error) {
	return l.c.TraitsWithPrefix(ctx, prefix)
}
func (l *latePlacement) ProvidersWithTrait(ctx context.Context, t string) ([]string, error) {
	return l.c.ProvidersWithTrait(ctx, t)
}
func (l *latePlacement) AllProviders(ctx context.Context) ([]cloud.Provider, error) {
	return l.c.AllProviders(ctx)
}

type lateCompute struct{ c *cloud.Compute }

func (l *lateCompute) Nodes(ctx context.Context) (map[string][]cloud.Node, error) {
	return l.c.Nodes(ctx)
}
func (l *lateCompute) ComputeService(ctx context.Context, host string) (cloud.Service, error) {
	return l.c.ComputeService(ctx, host)
}
func (l *lateCompute) DisableService(ctx context.Context, id, reason string) error {
	return l.c.DisableService(ctx, id, reason)
}
func (l *lateCompute) EnableService(ctx context.Context, id string) error {
	return l.c.EnableService(ctx, id)
}

type notifierFunc func(ctx context.Context, priority, ev string, payload any) error

func (f notifierFunc) Notify(ctx context.Context, priority, ev string, payload any) error {
	return f(ctx, priority, ev, payload)
}

// storedVerdicts decodes every host's latest stored verdict (the service's
// own, signed when stored).
func storedVerdicts(ctx context.Context, st *store.Store) ([]verdict.Verdict, error) {
	hosts, err := st.ListHosts(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]verdict.Verdict, 0, len(hosts))
	for _, h := range hosts {
		if len(h.Verdict) == 0 {
			continue
		}
		s, err := verdict.ParseSigned(h.Verdict)
		if err != nil {
			continue // unusable: the host gets no traits
		}
		v, err := verdict.Unmarshal([]byte(s.Verdict))
		if err != nil {
			continue
		}
		out = append(out, v)
	}
	return out, nil
}

// trustNotifications drops trustpool.host.trusted / untrusted when
// [revocation] notifications is off; other notifications pass.
type trustNotifications struct {
	engine.Publisher
	on bool
}

func (p trustNotifications) Notify(ctx context.Context, ev string, payload any) error {
	if !p.on && (ev == attestrpc.EventHostTrusted || ev == attestrpc.EventHostUntrusted) {
		return nil
	}
	return p.Publisher.Notify(ctx, ev, payload)
}
