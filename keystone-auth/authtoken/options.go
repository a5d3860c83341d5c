package authtoken

import (
	"errors"
	"fmt"
	"strings"

	"github.com/trustpool/trustpool/keystone-auth/credentials"
)

// ErrInvalidOptions reports [keystone_authtoken] options that cannot work.
var ErrInvalidOptions = errors.New("invalid keystone_authtoken options")

// Options are the [keystone_authtoken] options, with keystonemiddleware's names: the
// middleware's own options and the keystoneauth password / application-credential plugin
// options of the service user that validates tokens. They are the keys DevStack's
// configure_keystone_authtoken_middleware writes.
type Options struct {
	// WWWAuthenticateURI goes into WWW-Authenticate: Keystone uri="..." on 401s.
	WWWAuthenticateURI string `toml:"www_authenticate_uri"`
	// AuthURI is the deprecated name of WWWAuthenticateURI.
	AuthURI string `toml:"auth_uri"`

	AuthType                    string `toml:"auth_type"`
	AuthURL                     string `toml:"auth_url"`
	Username                    string `toml:"username"`
	UserID                      string `toml:"user_id"`
	Password                    string `toml:"password"`
	UserDomainName              string `toml:"user_domain_name"`
	UserDomainID                string `toml:"user_domain_id"`
	ProjectName                 string `toml:"project_name"`
	ProjectID                   string `toml:"project_id"`
	ProjectDomainName           string `toml:"project_domain_name"`
	ProjectDomainID             string `toml:"project_domain_id"`
	DomainName                  string `toml:"domain_name"`
	DomainID                    string `toml:"domain_id"`
	SystemScope                 string `toml:"system_scope"`
	TrustID                     string `toml:"trust_id"`
	ApplicationCredentialID     string `toml:"application_credential_id"`
	ApplicationCredentialName   string `toml:"application_credential_name"`
	ApplicationCredentialSecret string `toml:"application_credential_secret"`

	Cafile   string `toml:"cafile"`
	Certfile string `toml:"certfile"`
	Keyfile  string `toml:"keyfile"`
	Insecure bool   `toml:"insecure"`

	// Interface and RegionName select the identity endpoint in the catalog.
	Interface  string `toml:"interface"`
	RegionName string `toml:"region_name"`

	// DelayAuthDecision passes requests with a missing or invalid token on, marked
	// X-Identity-Status: Invalid, instead of answering 401.
	DelayAuthDecision bool `toml:"delay_auth_decision"`
	// HTTPConnectTimeout bounds each request to Keystone, in seconds (0: only the
	// request's own context bounds it, as in keystonemiddleware).
	HTTPConnectTimeout int `toml:"http_connect_timeout"`
	// HTTPRequestMaxRetries retries Keystone requests that fail to connect.
	HTTPRequestMaxRetries int `toml:"http_request_max_retries"`
	// TokenCacheTime is how long, in seconds, a validated token is cached (never past
	// its expiry). -1 (any value <= 0) disables the cache.
	TokenCacheTime int `toml:"token_cache_time"`
	// IncludeServiceCatalog fetches the token's catalog and passes it as
	// X-Service-Catalog.
	IncludeServiceCatalog bool `toml:"include_service_catalog"`
	// EnforceTokenBind is disabled, permissive, strict, required or a bind type name.
	EnforceTokenBind string `toml:"enforce_token_bind"`
	// ServiceTokenRoles are the roles that make an X-Service-Token a service token.
	ServiceTokenRoles []string `toml:"service_token_roles"`
	// ServiceTokenRolesRequired rejects a service token without one of ServiceTokenRoles
	// (keystonemiddleware's Zed default false accepts it but then ignores it for
	// allow_expired).
	ServiceTokenRolesRequired bool `toml:"service_token_roles_required"`
	// ServiceType is this service's catalog type, needed to enforce application
	// credential access rules.
	ServiceType string `toml:"service_type"`

	// MemcachedServers is accepted for configuration compatibility and ignored: the token
	// cache is always in process.
	MemcachedServers []string `toml:"memcached_servers"`
}

// DefaultOptions returns keystonemiddleware 10.1.0's defaults.
func DefaultOptions() Options {
	return Options{
		AuthType:              "password",
		Interface:             "internal",
		HTTPRequestMaxRetries: 3,
		TokenCacheTime:        300,
		IncludeServiceCatalog: true,
		EnforceTokenBind:      "permissive",
		ServiceTokenRoles:     []string{"service"},
	}
}

// Credentials returns the service user's keystoneauth options.
func (o Options) Credentials() credentials.Options {
	return credentials.Options{
		AuthType: o.AuthType, AuthURL: o.AuthURL,
		Username: o.Username, UserID: o.UserID, Password: o.Password,
		UserDomainName: o.UserDomainName, UserDomainID: o.UserDomainID,
		ProjectName: o.ProjectName, ProjectID: o.ProjectID,
		ProjectDomainName: o.ProjectDomainName, ProjectDomainID: o.ProjectDomainID,
		DomainName: o.DomainName, DomainID: o.DomainID, SystemScope: o.SystemScope, TrustID: o.TrustID,
		ApplicationCredentialID: o.ApplicationCredentialID, ApplicationCredentialName: o.ApplicationCredentialName,
		ApplicationCredentialSecret: o.ApplicationCredentialSecret,
		Cafile:                      o.Cafile, Certfile: o.Certfile, Keyfile: o.Keyfile, Insecure: o.Insecure,
		Timeout: o.HTTPConnectTimeout, RegionName: o.RegionName, Interface: o.Interface,
	}
}

// wwwAuthenticateURI returns www_authenticate_uri, else auth_uri, else auth_url.
func (o Options) wwwAuthenticateURI() string {
	switch {
	case o.WWWAuthenticateURI != "":
		return o.WWWAuthenticateURI
	case o.AuthURI != "":
		return o.AuthURI
	}
	return o.AuthURL
}

// Validate checks the options; each problem names keystone_authtoken.key.
func (o Options) Validate() error {
	const section = "keystone_authtoken"
	var errs []error
	bad := func(k, msg string) {
		errs = append(errs, fmt.Errorf("%s.%s: %s: %w", section, k, msg, ErrInvalidOptions))
	}
	if err := o.Credentials().ValidateSection(section); err != nil {
		errs = append(errs, err)
	}
	switch b := strings.ToLower(o.EnforceTokenBind); b {
	case "disabled", "permissive", "strict", "required":
	case "":
		bad("enforce_token_bind", "must not be empty")
	}
	if o.HTTPConnectTimeout < 0 {
		bad("http_connect_timeout", "must not be negative")
	}
	if o.HTTPRequestMaxRetries < 0 {
		bad("http_request_max_retries", "must not be negative")
	}
	if o.ServiceTokenRolesRequired && len(o.ServiceTokenRoles) == 0 {
		bad("service_token_roles", "must not be empty when service_token_roles_required is set")
	}
	return errors.Join(errs...)
}
