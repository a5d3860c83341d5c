package authtoken

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/trustpool/trustpool/keystone-auth/credentials"
)

// NewKeystoneValidator returns a validator that uses the provider's identity endpoint and
// token.
func NewKeystoneValidator(p *credentials.Provider, includeCatalog bool) (*KeystoneValidator, error) {
	id, err := p.IdentityV3()
	if err != nil {
		return nil, err
	}
	return &KeystoneValidator{Identity: id, IncludeCatalog: includeCatalog, Provider: p}, nil
}

// Setup is what Open builds from [keystone_authtoken] options.
type Setup struct {
	Middleware *Middleware
	// Provider is the service user's authenticated session; it can also call other
	// OpenStack services.
	Provider *credentials.Provider
}

// OpenConfig holds the optional parts of Open.
type OpenConfig struct {
	// Transport is the base transport for Keystone requests (tests count them with it).
	Transport http.RoundTripper
	// RetryDelay is the first backoff between connection retries (default 0.5 s).
	RetryDelay time.Duration
	OnError    func(r *http.Request, err error)
	CacheSize  int
	Now        func() time.Time
	UserAgent  string
}

// Open validates the options, authenticates the service user to Keystone and returns
// the middleware. It fails when Keystone cannot be reached or rejects the credentials.
func Open(ctx context.Context, opts Options, oc OpenConfig) (*Setup, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	p, err := credentials.New(ctx, credentials.Config{
		Options:    opts.Credentials(),
		Transport:  oc.Transport,
		UserAgent:  oc.UserAgent,
		MaxRetries: opts.HTTPRequestMaxRetries,
		RetryDelay: oc.RetryDelay,
		Now:        oc.Now,
	})
	if err != nil {
		return nil, fmt.Errorf("keystone_authtoken: %w", err)
	}
	v, err := NewKeystoneValidator(p, opts.IncludeServiceCatalog)
	if err != nil {
		return nil, fmt.Errorf("keystone_authtoken: %w", err)
	}
	m, err := New(Config{Options: opts, Validator: v, OnError: oc.OnError, CacheSize: oc.CacheSize, Now: oc.Now})
	if err != nil {
		return nil, err
	}
	return &Setup{Middleware: m, Provider: p}, nil
}
