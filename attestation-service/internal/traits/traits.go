// Package traits mirrors the attestation service's verdicts onto Placement
// traits, so that a flavor with trait:CUSTOM_TRUSTPOOL_TRUSTED=required (or
// a profile trait) is prefiltered by Placement before any scheduler filter
// runs.
//
// # What is mirrored
//
// A host whose latest verdict is trusted and unexpired has, on each of its
// compute nodes' resource providers, CUSTOM_TRUSTPOOL_TRUSTED and
// CUSTOM_TRUSTPOOL_PROFILE_<KEY> for each profile the verdict lists as
// satisfied (<KEY> is policy.NameKey of the profile name: upper case, "_"
// for "-"). Any other host state — untrusted, unknown, expired, deleted, no
// verdict — has none of them. The package owns exactly the traits that
// start with CUSTOM_TRUSTPOOL_; it never adds, removes or reorders another
// trait (nova-compute's COMPUTE_* and COMPUTE_STATUS_DISABLED, other tools'
// CUSTOM_* traits).
//
// # Traits are not a trust anchor
//
// Traits are not signed and anyone with Placement admin rights can set them.
// They are a fast path that keeps untrusted hosts out of the allocation
// candidates; the Nova filter checking the signed, expiring verdicts
// (trustpool_filter.TrustedFilter) stays the authority. A trait can also lag
// the verdict: by the time of one Placement write after a change, by the
// reconcile interval after drift, and for as long as the service is down
// (a restarted service removes expired traits first thing).
//
// # How
//
//   - Writes are read-modify-write with the provider generation: read the
//     provider's traits, replace the owned ones, PUT with the generation
//     read; a 409 (someone else wrote in between, typically nova-compute's
//     own trait sync) is retried with a fresh read, up to MaxAttempts.
//     Custom traits are created on demand (PUT /traits/{name}).
//   - A host's providers are its compute nodes, found through Nodes: Nova's
//     hypervisor list (every node of the service host, e.g. Ironic) or the
//     provider named like the host.
//   - Run first reconciles every provider it owns: it computes the wanted
//     traits of every host from the stored verdicts, lists the providers
//     that carry any CUSTOM_TRUSTPOOL_ trait, and fixes every difference,
//     so traits of verdicts that expired while the service was down are
//     removed before any verdict change is applied. Until that succeeds
//     verdict changes only queue up. The reconcile repeats every
//     ReconcileInterval to repair drift (a trait removed or added by hand, a
//     node added to a host, a lost write).
//   - VerdictStored (the engine calls it after storing each verdict) only
//     records the verdict and queues the host; workers apply it (each host
//     by one worker at a time), always from the newest verdict held. A host whose
//     trusted verdict expires without a successor is queued at its
//     expires_at, which removes its traits.
//   - Several service instances sharing one database split the hosts
//     (Config.Owner, the cluster's ownership that also decides who attests
//     a host): each host's traits are written only by the instance that
//     owns it, so a verdict another instance holds (older, from a round
//     it ran on a trigger) never overwrites the owner's. The reconcile
//     compares only owned hosts; a provider with owned traits but of no
//     known host (an orphan) is cleaned by the one instance that owns its
//     UUID taken as a host name. A non-owner neither reads nor writes a
//     host's providers. On a membership change (OwnersChanged) the mirror
//     reconciles at once, so hosts handed over converge without waiting
//     for ReconcileInterval. While the instances' views of the members
//     disagree (at most a lease), two of them may both write a host; the
//     next write or reconcile of the owner settles it. Without an Owner
//     (one instance) the mirror writes every host.
//   - Profiles whose names have the same NameKey (refused at creation, but
//     possible in a database from before that rule) get no profile trait:
//     it would not say which profile was satisfied.
//
// Placement errors are retried with backoff; the package logs them.
package traits

import (
	"context"
	"slices"
	"time"

	"github.com/trustpool/trustpool/attestation-service/internal/cloud"
	"github.com/trustpool/trustpool/internal/policy"
	"github.com/trustpool/trustpool/internal/verdict"
)

// Trait names.
const (
	// Prefix starts every trait the package owns.
	Prefix = "CUSTOM_TRUSTPOOL_"
	// Trusted marks a host trusted now.
	Trusted = Prefix + "TRUSTED"
	// ProfilePrefix starts the trait of a satisfied profile.
	ProfilePrefix = Prefix + "PROFILE_"
)

// ProfileTrait returns the trait of profile name.
func ProfileTrait(name string) string { return ProfilePrefix + policy.NameKey(name) }

// Owned reports whether the package owns trait.
func Owned(trait string) bool { return len(trait) > len(Prefix) && trait[:len(Prefix)] == Prefix }

// Wanted returns the owned traits a host with verdict v has at now, sorted:
// none unless v is trusted and unexpired at now.
func Wanted(v verdict.Verdict, now time.Time) []string {
	if v.StatusAt(now) != verdict.Trusted {
		return nil
	}
	out := []string{Trusted}
	for _, p := range v.Profiles {
		out = append(out, ProfileTrait(p))
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// merge returns current with its owned traits replaced by want, sorted.
func merge(current, want []string) []string {
	out := make([]string, 0, len(current)+len(want))
	for _, t := range current {
		if !Owned(t) {
			out = append(out, t)
		}
	}
	out = append(out, want...)
	slices.Sort(out)
	return slices.Compact(out)
}

// sameSet reports whether a and b hold the same traits.
func sameSet(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(slices.Compact(a), slices.Compact(b))
}

// NovaNodes finds hosts' compute nodes in Nova's hypervisor list (every
// node of a service host; the node UUID is its provider's UUID).
type NovaNodes struct {
	Compute interface {
		Nodes(ctx context.Context) (map[string][]cloud.Node, error)
	}
}

// AllNodes implements Nodes.
func (n NovaNodes) AllNodes(ctx context.Context) (map[string][]string, error) {
	nodes, err := n.Compute.Nodes(ctx)
	if err != nil {
		return nil, err
	}
	out := make(map[string][]string, len(nodes))
	for host, ns := range nodes {
		for _, node := range ns {
			out[host] = append(out[host], node.UUID)
		}
	}
	return out, nil
}

// NamedNodes takes a host's compute node to be the root provider named like
// the host: one node per host whose hypervisor hostname is the service host
// name (libvirt's default). It needs no Nova API.
type NamedNodes struct {
	Placement interface {
		AllProviders(ctx context.Context) ([]cloud.Provider, error)
	}
}

// AllNodes implements Nodes.
func (n NamedNodes) AllNodes(ctx context.Context) (map[string][]string, error) {
	rps, err := n.Placement.AllProviders(ctx)
	if err != nil {
		return nil, err
	}
	out := make(map[string][]string, len(rps))
	for _, rp := range rps {
		if rp.Root == "" || rp.Root == rp.UUID {
			out[rp.Name] = append(out[rp.Name], rp.UUID)
		}
	}
	return out, nil
}
