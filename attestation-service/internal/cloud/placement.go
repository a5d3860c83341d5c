package cloud

import (
	"context"
	"fmt"
	"net/url"
	"time"

	"github.com/gophercloud/gophercloud/v2"
	"github.com/gophercloud/gophercloud/v2/openstack/placement/v1/resourceproviders"
	"github.com/gophercloud/gophercloud/v2/openstack/placement/v1/traits"
)

// Placement talks to the Placement API.
type Placement struct {
	c       *gophercloud.ServiceClient
	timeout time.Duration
}

// Provider is a resource provider.
type Provider struct {
	UUID string
	Name string
	// Root is the UUID of the provider's tree's root (itself for a compute
	// node).
	Root string
}

// ProviderTraits returns a provider's generation and traits.
func (p *Placement) ProviderTraits(ctx context.Context, rp string) (int, []string, error) {
	ctx, cancel := bound(ctx, p.timeout)
	defer cancel()
	t, err := resourceproviders.GetTraits(ctx, p.c, rp).Extract()
	if err != nil {
		return 0, nil, apiError("get traits of resource provider "+rp, err)
	}
	return t.ResourceProviderGeneration, t.Traits, nil
}

// SetProviderTraits replaces a provider's traits, if its generation is still
// gen (else ErrConflict), and returns the new generation.
func (p *Placement) SetProviderTraits(ctx context.Context, rp string, gen int, names []string) (int, error) {
	ctx, cancel := bound(ctx, p.timeout)
	defer cancel()
	if names == nil {
		names = []string{}
	}
	t, err := resourceproviders.UpdateTraits(ctx, p.c, rp, resourceproviders.UpdateTraitsOpts{
		ResourceProviderGeneration: gen, Traits: names}).Extract()
	if err != nil {
		return 0, apiError("set traits of resource provider "+rp, err)
	}
	return t.ResourceProviderGeneration, nil
}

// EnsureTrait creates a custom trait unless it exists.
func (p *Placement) EnsureTrait(ctx context.Context, name string) error {
	ctx, cancel := bound(ctx, p.timeout)
	defer cancel()
	if err := traits.Create(ctx, p.c, name).ExtractErr(); err != nil {
		return apiError("create trait "+name, err)
	}
	return nil
}

// TraitsWithPrefix lists the traits whose names start with prefix.
func (p *Placement) TraitsWithPrefix(ctx context.Context, prefix string) ([]string, error) {
	ctx, cancel := bound(ctx, p.timeout)
	defer cancel()
	page, err := traits.List(p.c, traits.ListOpts{Name: "startswith:" + prefix}).AllPages(ctx)
	if err != nil {
		return nil, apiError("list traits "+prefix+"*", err)
	}
	names, err := traits.ExtractTraits(page)
	if err != nil {
		return nil, fmt.Errorf("list traits %s*: %w", prefix, err)
	}
	return names, nil
}

// ProvidersWithTrait lists the UUIDs of the providers that have trait.
func (p *Placement) ProvidersWithTrait(ctx context.Context, trait string) ([]string, error) {
	ctx, cancel := bound(ctx, p.timeout)
	defer cancel()
	rps, err := p.providers(ctx, "list resource providers with "+trait, resourceproviders.ListOpts{Required: trait})
	if err != nil {
		return nil, err
	}
	out := make([]string, len(rps))
	for i, rp := range rps {
		out[i] = rp.UUID
	}
	return out, nil
}

// ProvidersNamed lists the providers called name (at most one: names are
// unique in Placement).
func (p *Placement) ProvidersNamed(ctx context.Context, name string) ([]Provider, error) {
	ctx, cancel := bound(ctx, p.timeout)
	defer cancel()
	return p.providers(ctx, "find resource provider "+url.QueryEscape(name), resourceproviders.ListOpts{Name: name})
}

// AllProviders lists every provider.
func (p *Placement) AllProviders(ctx context.Context) ([]Provider, error) {
	ctx, cancel := bound(ctx, p.timeout)
	defer cancel()
	return p.providers(ctx, "list resource providers", nil)
}

func (p *Placement) providers(ctx context.Context, op string, opts resourceproviders.ListOptsBuilder) ([]Provider, error) {
	page, err := resourceproviders.List(p.c, opts).AllPages(ctx)
	if err != nil {
		return nil, apiError(op, err)
	}
	rps, err := resourceproviders.ExtractResourceProviders(page)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	out := make([]Provider, 0, len(rps))
	for _, rp := range rps {
		out = append(out, Provider{UUID: rp.UUID, Name: rp.Name, Root: rp.RootProviderUUID})
	}
	return out, nil
}
