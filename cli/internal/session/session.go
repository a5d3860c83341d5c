// Package session turns the CLI's authentication options (--os-* flags,
// OS_* environment variables, clouds.yaml and secure.yaml) into an
// attestation API client: Keystone authentication through
// keystone-auth/credentials, the attestation endpoint from the service
// catalog (service type "attestation", interface and region selectable) or
// given explicitly, TLS options, and the --debug request log.
//
// Keystone is contacted only when a command needs it: commands that use
// only the open routes (public keys) work with an explicit endpoint and no
// credentials.
package session

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/gophercloud/gophercloud/v2"
	"github.com/gophercloud/gophercloud/v2/openstack"
	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/servers"
	"github.com/gophercloud/gophercloud/v2/openstack/config/clouds"
	"github.com/gophercloud/gophercloud/v2/openstack/identity/v3/tokens"

	"github.com/trustpool/trustpool/cli/internal/httplog"
	"github.com/trustpool/trustpool/internal/attestclient"
	"github.com/trustpool/trustpool/keystone-auth/credentials"
)

// ServiceType is the attestation service's type in the Keystone catalog.
const ServiceType = "attestation"

// Errors for the CLI to map to exit codes.
var (
	// ErrOptions: the authentication options are missing or invalid (a
	// usage error).
	ErrOptions = errors.New("authentication options")
	// ErrNoEndpoint: the catalog has no matching attestation endpoint.
	ErrNoEndpoint = errors.New("no attestation endpoint in the service catalog")
)

// Options are the authentication and connection options, with
// keystoneauth's names.
type Options struct {
	Cloud string

	AuthType, AuthURL                  string
	Username, UserID, Password         string
	UserDomainName, UserDomainID       string
	ProjectName, ProjectID             string
	ProjectDomainName, ProjectDomainID string
	DomainName, DomainID               string
	SystemScope                        string
	ApplicationCredentialID            string
	ApplicationCredentialName          string
	ApplicationCredentialSecret        string
	RegionName, Interface              string
	CACert, Cert, Key                  string
	Insecure                           bool
	InsecureSet                        bool
	AttestationURL                     string
	Timeout                            time.Duration
	UserAgent                          string
	// Debug, when set, receives every request and response (httplog).
	Debug io.Writer
}

// hasCredentials reports whether any way to authenticate was given.
func (o Options) hasCredentials() bool {
	return o.Cloud != "" || o.AuthURL != ""
}

// Session authenticates on first use and hands out API clients.
type Session struct {
	o        Options
	provider *credentials.Provider
}

// New returns a session; nothing is contacted yet.
func New(o Options) *Session {
	return &Session{o: o}
}

// Client returns an API client. With needAuth, or whenever the endpoint
// must come from the catalog, it authenticates to Keystone first.
func (s *Session) Client(ctx context.Context, needAuth bool) (*attestclient.Client, error) {
	o := s.o
	if !o.hasCredentials() {
		if needAuth {
			return nil, fmt.Errorf("%w: no credentials: set --os-cloud (OS_CLOUD), or --os-auth-url (OS_AUTH_URL) "+
				"with a user and password or an application credential", ErrOptions)
		}
		if o.AttestationURL == "" {
			return nil, fmt.Errorf("%w: no attestation endpoint: set --os-attestation-url (OS_ATTESTATION_URL), "+
				"or credentials to find it in the catalog (--os-cloud or --os-auth-url)", ErrOptions)
		}
		rt, err := s.baseTransport()
		if err != nil {
			return nil, err
		}
		return attestclient.New(o.AttestationURL, &http.Client{Transport: rt, Timeout: o.Timeout})
	}
	p, err := s.authenticate(ctx)
	if err != nil {
		return nil, err
	}
	endpoint := o.AttestationURL
	if endpoint == "" {
		eo := p.EndpointOpts()
		eo.Type = ServiceType
		pc := p.ProviderClient()
		endpoint, err = pc.EndpointLocator(eo)
		if err != nil {
			iface := string(eo.Availability)
			region := eo.Region
			if region == "" {
				region = "any"
			}
			return nil, fmt.Errorf("%w for interface %s in region %s: ask the operator to register one, "+
				"or pass --os-attestation-url (%w)", ErrNoEndpoint, iface, region, err)
		}
	}
	return attestclient.New(endpoint, &http.Client{Transport: p.RoundTripper(nil), Timeout: o.Timeout})
}

// baseTransport is the transport without authentication: TLS options and
// the debug log.
func (s *Session) baseTransport() (http.RoundTripper, error) {
	tlsCfg, err := credentials.Options{Cafile: s.o.CACert, Certfile: s.o.Cert, Keyfile: s.o.Key, Insecure: s.o.Insecure}.TLSConfig()
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrOptions, err)
	}
	t, _ := http.DefaultTransport.(*http.Transport)
	t = t.Clone()
	t.TLSClientConfig = tlsCfg
	return s.wrap(t), nil
}

func (s *Session) wrap(rt http.RoundTripper) http.RoundTripper {
	if s.o.Debug == nil {
		return rt
	}
	return &httplog.Transport{Base: rt, W: s.o.Debug}
}

func (s *Session) authenticate(ctx context.Context) (*credentials.Provider, error) {
	if s.provider != nil {
		return s.provider, nil
	}
	o := s.o
	cfg := credentials.Config{UserAgent: o.UserAgent, WrapTransport: s.wrap}
	if o.Cloud != "" {
		cfg.Cloud = o.Cloud
		cfg.CloudOptions = s.cloudOverrides()
	} else {
		opts := credentials.Options{
			AuthType: o.AuthType, AuthURL: o.AuthURL,
			Username: o.Username, UserID: o.UserID, Password: o.Password,
			UserDomainName: o.UserDomainName, UserDomainID: o.UserDomainID,
			ProjectName: o.ProjectName, ProjectID: o.ProjectID,
			ProjectDomainName: o.ProjectDomainName, ProjectDomainID: o.ProjectDomainID,
			DomainName: o.DomainName, DomainID: o.DomainID, SystemScope: o.SystemScope,
			ApplicationCredentialID: o.ApplicationCredentialID, ApplicationCredentialName: o.ApplicationCredentialName,
			ApplicationCredentialSecret: o.ApplicationCredentialSecret,
			Cafile:                      o.CACert, Certfile: o.Cert, Keyfile: o.Key, Insecure: o.Insecure,
			RegionName: o.RegionName, Interface: o.Interface, Timeout: int(o.Timeout / time.Second),
		}
		if opts.Interface == "" {
			opts.Interface = "public" // python-openstackclient's default
		}
		// An application credential given without --os-auth-type is meant
		// as one, as keystoneauth's loader infers.
		if opts.AuthType == "" && opts.ApplicationCredentialSecret != "" {
			opts.AuthType = "v3applicationcredential"
		}
		if err := opts.ValidateSection(""); err != nil {
			return nil, optionErrors(err)
		}
		cfg.Options = opts
	}
	p, err := credentials.New(ctx, cfg)
	if err != nil {
		if errors.Is(err, credentials.ErrInvalidOptions) && !errors.Is(err, credentials.ErrAuthentication) {
			return nil, fmt.Errorf("%w: %w", ErrOptions, err)
		}
		return nil, err
	}
	s.provider = p
	return p, nil
}

// cloudOverrides are the options given besides --os-cloud; like
// python-openstackclient, they take precedence over the cloud's entry.
func (s *Session) cloudOverrides() []clouds.ParseOption {
	o := s.o
	var opts []clouds.ParseOption
	add := func(v string, f func(string) clouds.ParseOption) {
		if v != "" {
			opts = append(opts, f(v))
		}
	}
	add(o.AuthURL, clouds.WithIdentityEndpoint)
	add(o.Username, clouds.WithUsername)
	add(o.UserID, clouds.WithUserID)
	add(o.Password, clouds.WithPassword)
	add(o.ProjectName, clouds.WithProjectName)
	add(o.ProjectID, clouds.WithProjectID)
	add(o.ApplicationCredentialID, clouds.WithApplicationCredentialID)
	add(o.ApplicationCredentialName, clouds.WithApplicationCredentialName)
	add(o.ApplicationCredentialSecret, clouds.WithApplicationCredentialSecret)
	add(o.RegionName, clouds.WithRegion)
	add(o.CACert, clouds.WithCACertPath)
	add(o.Cert, clouds.WithClientCertPath)
	add(o.Key, clouds.WithClientKeyPath)
	add(o.Interface, clouds.WithEndpointType)
	if o.SystemScope != "" {
		opts = append(opts, clouds.WithScope(&gophercloud.AuthScope{System: true}))
	}
	if o.InsecureSet {
		opts = append(opts, clouds.WithInsecure(o.Insecure))
	}
	return opts
}

// optionErrors names each problem by its flag and environment variable.
func optionErrors(err error) error {
	var joined interface{ Unwrap() []error }
	parts := []error{err}
	if errors.As(err, &joined) {
		parts = joined.Unwrap()
	}
	var msgs []string
	for _, e := range parts {
		var oe *credentials.OptionError
		if !errors.As(e, &oe) {
			msgs = append(msgs, e.Error())
			continue
		}
		name := map[string]string{"cafile": "cacert", "certfile": "cert", "keyfile": "key"}[oe.Key]
		if name == "" {
			name = oe.Key
		}
		msgs = append(msgs, fmt.Sprintf("--os-%s (OS_%s): %s", strings.ReplaceAll(name, "_", "-"), strings.ToUpper(name), oe.Msg))
	}
	return fmt.Errorf("%w: %s", ErrOptions, strings.Join(msgs, "; "))
}

// ProjectID is the project the session's token is scoped to (the project a
// launch request must name).
func (s *Session) ProjectID(ctx context.Context) (string, error) {
	p, err := s.authenticate(ctx)
	if err != nil {
		return "", err
	}
	r, ok := p.ProviderClient().GetAuthResult().(tokens.CreateResult)
	if !ok {
		return "", fmt.Errorf("%w: the token's project is unknown", ErrOptions)
	}
	proj, err := r.ExtractProject()
	if err != nil || proj == nil || proj.ID == "" {
		return "", fmt.Errorf("%w: the token is not scoped to a project (set --os-project-name or --os-project-id)", ErrOptions)
	}
	return proj.ID, nil
}

// ErrNoCompute means the catalog has no compute endpoint (to read a
// server's hostId).
var ErrNoCompute = errors.New("no compute endpoint in the service catalog")

// ServerHostID reads a server's hostId (what Nova shows its project:
// sha224(project_id + host)) from Nova's API with the session's own
// credentials.
func (s *Session) ServerHostID(ctx context.Context, id string) (string, error) {
	p, err := s.authenticate(ctx)
	if err != nil {
		return "", err
	}
	sc, err := openstack.NewComputeV2(p.ProviderClient(), p.EndpointOpts())
	if err != nil {
		return "", fmt.Errorf("%w (%w): pass the server's hostId with --host-id", ErrNoCompute, err)
	}
	srv, err := servers.Get(ctx, sc, id).Extract()
	if err != nil {
		return "", fmt.Errorf("server %s: %w", id, err)
	}
	if srv.HostID == "" {
		return "", fmt.Errorf("server %s has no hostId yet (not scheduled); try again once it is ACTIVE", id)
	}
	return srv.HostID, nil
}
