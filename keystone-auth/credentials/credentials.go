// Package credentials authenticates a service to Keystone with gophercloud v2 and keeps
// its token fresh: password or application-credential authentication, configured with
// keystoneauth option names (the keys of [keystone_authtoken] and similar sections) or a
// clouds.yaml cloud.
//
// A [Provider] re-authenticates before its token expires and after a 401, at most once per
// failed request and never more often than [Config.MinReauthInterval]; concurrent callers
// share one re-authentication. [Provider.RoundTripper] adds the token to outgoing
// requests and is safe for concurrent use.
//
// It does not validate other users' tokens (package authtoken does, with a Provider's
// identity client) and does not log; secrets never appear in its errors.
package credentials

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/gophercloud/gophercloud/v2"
	"github.com/gophercloud/gophercloud/v2/openstack"
	"github.com/gophercloud/gophercloud/v2/openstack/config/clouds"
	"github.com/gophercloud/gophercloud/v2/openstack/identity/v3/tokens"
)

var (
	// ErrInvalidOptions reports options that cannot authenticate.
	ErrInvalidOptions = errors.New("invalid keystone credential options")
	// ErrAuthentication reports that Keystone rejected the credentials or could not be
	// reached while authenticating.
	ErrAuthentication = errors.New("keystone authentication failed")
	// ErrReauthThrottled reports a re-authentication refused because the last one was
	// less than MinReauthInterval ago.
	ErrReauthThrottled = errors.New("keystone re-authentication throttled")
)

// Options are keystoneauth's password and application-credential plugin options, with
// their oslo.config names, plus the session options.
type Options struct {
	// AuthType is "password" (or "v3password") or "v3applicationcredential" (or
	// "applicationcredential"). Empty means password.
	AuthType string `toml:"auth_type"`
	AuthURL  string `toml:"auth_url"`

	Username       string `toml:"username"`
	UserID         string `toml:"user_id"`
	Password       string `toml:"password"`
	UserDomainName string `toml:"user_domain_name"`
	UserDomainID   string `toml:"user_domain_id"`

	ProjectName       string `toml:"project_name"`
	ProjectID         string `toml:"project_id"`
	ProjectDomainName string `toml:"project_domain_name"`
	ProjectDomainID   string `toml:"project_domain_id"`
	DomainName        string `toml:"domain_name"`
	DomainID          string `toml:"domain_id"`
	SystemScope       string `toml:"system_scope"`
	TrustID           string `toml:"trust_id"`

	ApplicationCredentialID     string `toml:"application_credential_id"`
	ApplicationCredentialName   string `toml:"application_credential_name"`
	ApplicationCredentialSecret string `toml:"application_credential_secret"`

	Cafile   string `toml:"cafile"`
	Certfile string `toml:"certfile"`
	Keyfile  string `toml:"keyfile"`
	Insecure bool   `toml:"insecure"`
	// Timeout bounds each HTTP request to Keystone, in seconds (0: no limit).
	Timeout int `toml:"timeout"`

	RegionName string `toml:"region_name"`
	// Interface selects catalog endpoints: "public", "internal" or "admin".
	Interface string `toml:"interface"`
}

func (o Options) isAppCred() bool {
	switch strings.ToLower(o.AuthType) {
	case "v3applicationcredential", "applicationcredential", "application_credential":
		return true
	}
	return false
}

// OptionError is one problem ValidateSection found: Key is the option's
// name (e.g. "user_domain_name"), so that callers with other spellings of
// the options (command line flags, environment variables) can name theirs.
type OptionError struct {
	Section, Key, Msg string
}

func (e *OptionError) Error() string {
	k := e.Key
	if e.Section != "" {
		k = e.Section + "." + k
	}
	return fmt.Sprintf("%s: %s: %s", k, e.Msg, ErrInvalidOptions)
}

// Unwrap makes errors.Is(err, ErrInvalidOptions) hold.
func (e *OptionError) Unwrap() error { return ErrInvalidOptions }

// ValidateSection checks the options; each problem is an *OptionError
// naming section.key, joined with errors.Join.
func (o Options) ValidateSection(section string) error {
	var errs []error
	bad := func(k, msg string) { errs = append(errs, &OptionError{Section: section, Key: k, Msg: msg}) }
	switch strings.ToLower(o.AuthType) {
	case "", "password", "v3password", "v3applicationcredential", "applicationcredential", "application_credential":
	default:
		bad("auth_type", fmt.Sprintf("unsupported auth plugin %q (password or v3applicationcredential)", o.AuthType))
	}
	if o.AuthURL == "" {
		bad("auth_url", "required")
	} else if !strings.HasPrefix(o.AuthURL, "http://") && !strings.HasPrefix(o.AuthURL, "https://") {
		bad("auth_url", "must be an http or https URL")
	}
	if o.isAppCred() {
		if o.ApplicationCredentialSecret == "" {
			bad("application_credential_secret", "required for application credentials")
		}
		if o.ApplicationCredentialID == "" && o.ApplicationCredentialName == "" {
			bad("application_credential_id", "application_credential_id or application_credential_name is required")
		}
		if o.ApplicationCredentialID == "" && o.Username == "" && o.UserID == "" {
			bad("username", "an application credential given by name needs username or user_id")
		}
		if o.ProjectName != "" || o.ProjectID != "" || o.DomainName != "" || o.DomainID != "" || o.SystemScope != "" {
			bad("project_name", "an application credential carries its own scope; remove project, domain and system scope")
		}
	} else {
		if o.Username == "" && o.UserID == "" {
			bad("username", "username or user_id is required")
		}
		if o.Password == "" {
			bad("password", "required")
		}
		if o.UserID == "" && o.UserDomainName == "" && o.UserDomainID == "" {
			bad("user_domain_name", "user_domain_name or user_domain_id is required with username")
		}
		if o.ProjectName != "" && o.ProjectID == "" && o.ProjectDomainName == "" && o.ProjectDomainID == "" {
			bad("project_domain_name", "project_domain_name or project_domain_id is required with project_name")
		}
		if o.SystemScope != "" && o.SystemScope != "all" {
			bad("system_scope", `only "all" is supported`)
		}
	}
	if (o.Certfile == "") != (o.Keyfile == "") {
		bad("certfile", "certfile and keyfile go together")
	}
	if o.Timeout < 0 {
		bad("timeout", "must not be negative")
	}
	switch o.Interface {
	case "", "public", "internal", "admin":
	default:
		bad("interface", "must be public, internal or admin")
	}
	return errors.Join(errs...)
}

// authOptions converts the options to gophercloud's.
func (o Options) authOptions() gophercloud.AuthOptions {
	ao := gophercloud.AuthOptions{
		IdentityEndpoint: o.AuthURL,
		Username:         o.Username,
		UserID:           o.UserID,
		Password:         o.Password,
		DomainID:         o.UserDomainID,
		DomainName:       o.UserDomainName,
		AllowReauth:      true,
	}
	if o.isAppCred() {
		ao.Password = ""
		ao.ApplicationCredentialID = o.ApplicationCredentialID
		ao.ApplicationCredentialName = o.ApplicationCredentialName
		ao.ApplicationCredentialSecret = o.ApplicationCredentialSecret
		return ao
	}
	switch {
	case o.TrustID != "":
		ao.Scope = &gophercloud.AuthScope{TrustID: o.TrustID}
	case o.SystemScope != "":
		ao.Scope = &gophercloud.AuthScope{System: true}
	case o.ProjectID != "":
		ao.Scope = &gophercloud.AuthScope{ProjectID: o.ProjectID}
	case o.ProjectName != "":
		ao.Scope = &gophercloud.AuthScope{ProjectName: o.ProjectName, DomainID: o.ProjectDomainID, DomainName: o.ProjectDomainName}
	case o.DomainID != "":
		ao.Scope = &gophercloud.AuthScope{DomainID: o.DomainID}
	case o.DomainName != "":
		ao.Scope = &gophercloud.AuthScope{DomainName: o.DomainName}
	}
	return ao
}

// TLSConfig returns the TLS configuration of cafile, certfile, keyfile and insecure
// (nil when none is set).
func (o Options) TLSConfig() (*tls.Config, error) {
	if o.Cafile == "" && o.Certfile == "" && !o.Insecure {
		return nil, nil
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: o.Insecure} //nolint:gosec // operator's explicit [insecure] choice
	if o.Cafile != "" {
		pem, err := os.ReadFile(o.Cafile)
		if err != nil {
			return nil, fmt.Errorf("read cafile: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("cafile %s: no PEM certificates: %w", o.Cafile, ErrInvalidOptions)
		}
		cfg.RootCAs = pool
	}
	if o.Certfile != "" {
		cert, err := tls.LoadX509KeyPair(o.Certfile, o.Keyfile)
		if err != nil {
			return nil, fmt.Errorf("load certfile and keyfile: %w", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}

// Config configures a Provider. Exactly one of Options (AuthURL set) or Cloud is used.
type Config struct {
	Options Options
	// Cloud names a clouds.yaml entry, read from CloudsFile or, when empty, from the
	// python-openstackclient locations (OS_CLIENT_CONFIG_FILE, ./, ~/.config/openstack,
	// /etc/openstack), secure.yaml included.
	Cloud      string
	CloudsFile string
	// CloudOptions override what the cloud's entry says (e.g. the region,
	// the interface or TLS verification from a command line).
	CloudOptions []clouds.ParseOption
	// Transport is the base round tripper (default: a clone of http.DefaultTransport with
	// the TLS options applied). Tests use it to count or break requests.
	Transport http.RoundTripper
	// WrapTransport, when set, wraps the transport after the TLS options
	// are applied (e.g. to log requests); every request, Keystone's included,
	// goes through it.
	WrapTransport func(http.RoundTripper) http.RoundTripper
	// UserAgent is prepended to gophercloud's.
	UserAgent string
	// MaxRetries retries requests that fail to connect, with exponential backoff from
	// RetryDelay (keystonemiddleware's http_request_max_retries; default 0).
	MaxRetries int
	RetryDelay time.Duration
	// MinReauthInterval bounds re-authentication after a 401 (default 5 s).
	MinReauthInterval time.Duration
	// RefreshBefore renews the token this long before it expires (default 2 min).
	RefreshBefore time.Duration
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// Provider holds an authenticated gophercloud ProviderClient.
type Provider struct {
	client    *gophercloud.ProviderClient
	endpoint  gophercloud.EndpointOpts
	now       func() time.Time
	minReauth time.Duration
	refresh   time.Duration

	mu         sync.Mutex
	lastReauth time.Time
	expToken   string    // the token exp belongs to
	exp        time.Time // its expiry, parsed once
}

// New authenticates and returns a Provider.
func New(ctx context.Context, cfg Config) (*Provider, error) {
	var ao gophercloud.AuthOptions
	var eo gophercloud.EndpointOpts
	var tlsCfg *tls.Config
	timeout := time.Duration(0)
	switch {
	case cfg.Cloud != "" && cfg.Options.AuthURL != "":
		return nil, fmt.Errorf("both a cloud and auth options given: %w", ErrInvalidOptions)
	case cfg.Cloud != "":
		opts := []clouds.ParseOption{clouds.WithCloudName(cfg.Cloud)}
		if cfg.CloudsFile != "" {
			opts = append(opts, clouds.WithLocations(cfg.CloudsFile))
		}
		opts = append(opts, cfg.CloudOptions...)
		var err error
		ao, eo, tlsCfg, err = clouds.Parse(opts...)
		if err != nil {
			return nil, fmt.Errorf("read cloud %q from clouds.yaml: %w: %w", cfg.Cloud, ErrInvalidOptions, err)
		}
		ao.AllowReauth = true
		// clouds.Parse sets both the legacy tenant fields and the scope.
		ao.TenantID, ao.TenantName = "", ""
	default:
		if err := cfg.Options.ValidateSection(""); err != nil {
			return nil, err
		}
		ao = cfg.Options.authOptions()
		eo = gophercloud.EndpointOpts{Region: cfg.Options.RegionName, Availability: availability(cfg.Options.Interface)}
		var err error
		if tlsCfg, err = cfg.Options.TLSConfig(); err != nil {
			return nil, err
		}
		timeout = time.Duration(cfg.Options.Timeout) * time.Second
	}
	client, err := openstack.NewClient(ao.IdentityEndpoint)
	if err != nil {
		return nil, fmt.Errorf("keystone auth_url: %w: %w", ErrInvalidOptions, err)
	}
	base := cfg.Transport
	if base == nil {
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.TLSClientConfig = tlsCfg
		base = t
	} else if tlsCfg != nil {
		if t, ok := base.(*http.Transport); ok {
			t = t.Clone()
			t.TLSClientConfig = tlsCfg
			base = t
		}
	}
	if cfg.WrapTransport != nil {
		base = cfg.WrapTransport(base)
	}
	client.HTTPClient = http.Client{Transport: base, Timeout: timeout}
	if cfg.UserAgent != "" {
		client.UserAgent.Prepend(cfg.UserAgent)
	}
	if cfg.MaxRetries > 0 {
		client.RetryFunc = retryFunc(cfg.MaxRetries, cfg.RetryDelay)
	}
	p := &Provider{client: client, endpoint: eo, now: cfg.Now, minReauth: cfg.MinReauthInterval, refresh: cfg.RefreshBefore}
	if p.now == nil {
		p.now = time.Now
	}
	if p.minReauth == 0 {
		p.minReauth = 5 * time.Second
	}
	if p.refresh == 0 {
		p.refresh = 2 * time.Minute
	}
	if err := openstack.Authenticate(ctx, client, ao); err != nil {
		return nil, fmt.Errorf("authenticate to keystone at %s: %w: %w", ao.IdentityEndpoint, ErrAuthentication, scrub(err))
	}
	// Every re-authentication (gophercloud's after a 401, ours before expiry) goes
	// through reauth, which records its time for the MinReauthInterval bound.
	inner := client.ReauthFunc
	client.ReauthFunc = func(ctx context.Context) error {
		p.mu.Lock()
		last := p.lastReauth
		p.mu.Unlock()
		if !last.IsZero() && p.now().Sub(last) < p.minReauth {
			return ErrReauthThrottled
		}
		err := inner(ctx)
		p.mu.Lock()
		p.lastReauth = p.now()
		p.mu.Unlock()
		if err != nil {
			return fmt.Errorf("re-authenticate to keystone: %w: %w", ErrAuthentication, scrub(err))
		}
		return nil
	}
	return p, nil
}

func availability(iface string) gophercloud.Availability {
	switch iface {
	case "public":
		return gophercloud.AvailabilityPublic
	case "admin":
		return gophercloud.AvailabilityAdmin
	}
	return gophercloud.AvailabilityInternal
}

// retryFunc retries connection failures with exponential backoff.
func retryFunc(maxRetries int, delay time.Duration) gophercloud.RetryFunc {
	if delay <= 0 {
		delay = 500 * time.Millisecond
	}
	return func(ctx context.Context, _, _ string, _ *gophercloud.RequestOpts, err error, failCount uint) error {
		// gophercloud also calls this for unexpected status codes and undecodable bodies;
		// only requests that got no response at all (*url.Error) are retried.
		var ue *url.Error
		if int(failCount) > maxRetries || ctx.Err() != nil || !errors.As(err, &ue) ||
			errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
			return err
		}
		d := delay << (failCount - 1)
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-ctx.Done():
			return err
		case <-t.C:
			return nil
		}
	}
}

// scrub keeps gophercloud errors but drops response bodies, which may echo request data.
func scrub(err error) error {
	var uc gophercloud.ErrUnexpectedResponseCode
	if errors.As(err, &uc) {
		return fmt.Errorf("%s %s: unexpected HTTP status %d", uc.Method, uc.URL, uc.Actual)
	}
	return err
}

// ProviderClient returns the authenticated gophercloud client (for gophercloud service
// clients; it re-authenticates on 401 through the same bounds).
func (p *Provider) ProviderClient() *gophercloud.ProviderClient { return p.client }

// IdentityV3 returns an identity v3 service client, its endpoint taken from the catalog
// (region_name, interface) like keystonemiddleware's.
func (p *Provider) IdentityV3() (*gophercloud.ServiceClient, error) {
	c, err := openstack.NewIdentityV3(p.client, p.endpoint)
	if err != nil {
		return nil, fmt.Errorf("find the identity endpoint in the catalog: %w", err)
	}
	return c, nil
}

// EndpointOpts returns the catalog selection (region and interface) of the options.
func (p *Provider) EndpointOpts() gophercloud.EndpointOpts { return p.endpoint }

// ExpiresAt returns the expiry of the current token (zero when unknown).
func (p *Provider) ExpiresAt() time.Time {
	tok := p.client.Token()
	p.mu.Lock()
	if tok == p.expToken {
		defer p.mu.Unlock()
		return p.exp
	}
	p.mu.Unlock()
	var exp time.Time
	if r, ok := p.client.GetAuthResult().(tokens.CreateResult); ok {
		if t, err := r.ExtractToken(); err == nil && t.ID == tok {
			exp = t.ExpiresAt
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.expToken, p.exp = tok, exp
	return exp
}

// Token returns a valid token, renewing it first when it expires within RefreshBefore.
func (p *Provider) Token(ctx context.Context) (string, error) {
	tok := p.client.Token()
	if exp := p.ExpiresAt(); !exp.IsZero() && p.now().Add(p.refresh).After(exp) {
		err := p.client.Reauthenticate(ctx, tok)
		switch {
		case errors.Is(err, ErrReauthThrottled) && p.now().Before(exp):
			// still valid; keep using it
		case err != nil:
			return "", err
		}
		tok = p.client.Token()
	}
	if tok == "" {
		return "", fmt.Errorf("no keystone token: %w", ErrAuthentication)
	}
	return tok, nil
}

// Reauthenticate renews the token unless another caller already replaced failedToken.
func (p *Provider) Reauthenticate(ctx context.Context, failedToken string) error {
	return p.client.Reauthenticate(ctx, failedToken)
}

// RoundTripper returns an http.RoundTripper that sends requests through base (nil: the
// Provider's transport) with the service token in X-Auth-Token. After a 401 it
// re-authenticates once and retries once, when the request body can be replayed.
func (p *Provider) RoundTripper(base http.RoundTripper) http.RoundTripper {
	if base == nil {
		base = p.client.HTTPClient.Transport
		if base == nil {
			base = http.DefaultTransport
		}
	}
	return &roundTripper{p: p, base: base}
}

type roundTripper struct {
	p    *Provider
	base http.RoundTripper
}

func (rt *roundTripper) RoundTrip(req *http.Request) (*http.Response, error) {
	tok, err := rt.p.Token(req.Context())
	if err != nil {
		return nil, err
	}
	r := req.Clone(req.Context())
	r.Header.Set("X-Auth-Token", tok)
	resp, err := rt.base.RoundTrip(r)
	if err != nil || resp.StatusCode != http.StatusUnauthorized {
		return resp, err
	}
	if req.Body != nil && req.Body != http.NoBody && req.GetBody == nil {
		return resp, nil // cannot replay the body
	}
	if err := rt.p.Reauthenticate(req.Context(), tok); err != nil {
		return resp, nil //nolint:nilerr // the caller sees the original 401
	}
	r2 := req.Clone(req.Context())
	if req.GetBody != nil {
		body, err := req.GetBody()
		if err != nil {
			return resp, nil //nolint:nilerr // the caller sees the original 401
		}
		r2.Body = body
	}
	tok2 := rt.p.client.Token()
	if tok2 == tok {
		return resp, nil
	}
	_ = resp.Body.Close()
	r2.Header.Set("X-Auth-Token", tok2)
	return rt.base.RoundTrip(r2)
}
