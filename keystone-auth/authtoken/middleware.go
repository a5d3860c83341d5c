package authtoken

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"time"
)

// Config configures a Middleware.
type Config struct {
	Options Options
	// Validator fetches token data; see NewKeystoneValidator for the usual one.
	Validator Validator
	// CacheSize bounds the token cache (default 10000 entries).
	CacheSize int
	// ValidateTimeout bounds one validation, retries included (default 60 s). A
	// validation shared by concurrent requests does not end when the first request does.
	ValidateTimeout time.Duration
	// OnError, when set, is told why a request was rejected or Keystone failed (for
	// logging by the caller; errors never contain tokens).
	OnError func(r *http.Request, err error)
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// Middleware authenticates requests the way keystonemiddleware's auth_token does.
type Middleware struct {
	opts     Options
	v        Validator
	cache    *tokenCache
	cacheTTL time.Duration
	flights  flight
	timeout  time.Duration
	onError  func(*http.Request, error)
	now      func() time.Time
	wwwAuth  string
	svcRoles []string
	bindMode string
}

// New returns a Middleware.
func New(cfg Config) (*Middleware, error) {
	if cfg.Validator == nil {
		return nil, fmt.Errorf("authtoken: no validator: %w", ErrInvalidOptions)
	}
	m := &Middleware{
		opts:     cfg.Options,
		v:        cfg.Validator,
		timeout:  cfg.ValidateTimeout,
		onError:  cfg.OnError,
		now:      cfg.Now,
		wwwAuth:  fmt.Sprintf("Keystone uri=%q", cfg.Options.wwwAuthenticateURI()),
		svcRoles: cfg.Options.ServiceTokenRoles,
		bindMode: strings.ToLower(cfg.Options.EnforceTokenBind),
	}
	if cfg.Options.wwwAuthenticateURI() == "" {
		return nil, fmt.Errorf("keystone_authtoken.www_authenticate_uri: required (or auth_url): %w", ErrInvalidOptions)
	}
	if m.bindMode == "" {
		m.bindMode = "permissive"
	}
	if m.timeout <= 0 {
		m.timeout = 60 * time.Second
	}
	if m.now == nil {
		m.now = time.Now
	}
	if cfg.Options.TokenCacheTime > 0 {
		size := cfg.CacheSize
		if size <= 0 {
			size = 10000
		}
		m.cache = newTokenCache(size)
		m.cacheTTL = time.Duration(cfg.Options.TokenCacheTime) * time.Second
	}
	return m, nil
}

// identityHeaders are removed from every incoming request: keystonemiddleware's list plus
// OpenStack-System-Scope, which keystonemiddleware forgets to strip.
var identityHeaders = func() []string {
	h := []string{"X-Service-Catalog", "X-Identity-Status", "X-Service-Identity-Status", "X-Is-Admin-Project",
		"X-Role", "X-User", "X-Tenant-Id", "X-Tenant-Name", "X-Tenant", "OpenStack-System-Scope"}
	for _, p := range []string{"", "-Service"} {
		for _, f := range []string{"Domain-Id", "Domain-Name", "Project-Id", "Project-Name", "Project-Domain-Id",
			"Project-Domain-Name", "User-Id", "User-Name", "User-Domain-Id", "User-Domain-Name", "Roles"} {
			h = append(h, "X"+p+"-"+f)
		}
	}
	return h
}()

// rejectBody is keystonemiddleware's 401 body, byte for byte.
const rejectBody = `{"error": {"code": 401, "title": "Unauthorized", "message": "The request you have made requires authentication."}}`

const unavailableBody = `{"error": {"code": 503, "title": "Service Unavailable", "message": "The Keystone service is temporarily unavailable."}}`

// Wrap returns next behind token authentication. Requests reaching next carry an *Auth in
// their context (see FromContext) and keystonemiddleware's identity headers; identity
// headers sent by the client never reach next.
func (m *Middleware) Wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r = r.Clone(r.Context())
		for _, h := range identityHeaders {
			r.Header.Del(h)
		}
		auth, err := m.authenticate(r)
		if errors.Is(err, ErrUnavailable) && !m.opts.DelayAuthDecision {
			m.report(r, err)
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = w.Write([]byte(unavailableBody))
			return
		}
		if err != nil {
			m.report(r, err)
			if !m.opts.DelayAuthDecision {
				w.Header().Set("Content-Type", "application/json")
				w.Header().Set("WWW-Authenticate", m.wwwAuth)
				w.WriteHeader(http.StatusUnauthorized)
				_, _ = w.Write([]byte(rejectBody))
				return
			}
		}
		next.ServeHTTP(&challengeWriter{ResponseWriter: w, wwwAuth: m.wwwAuth}, r.WithContext(NewContext(r.Context(), auth)))
	})
}

func (m *Middleware) report(r *http.Request, err error) {
	if m.onError != nil {
		m.onError(r, err)
	}
}

// authenticate validates the tokens, sets the identity headers on r and returns the Auth.
// A non-nil error means the request is not authenticated: ErrUnavailable (503) or the
// reason for a 401.
func (m *Middleware) authenticate(r *http.Request) (*Auth, error) {
	auth := &Auth{}
	allowExpired := false
	var serviceErr error
	svcToken := strings.TrimSpace(r.Header.Get("X-Service-Token"))
	if r.Header.Get("X-Service-Token") != "" {
		auth.ServiceTokenPresented = true
		var info *tokenInfo
		err := fmt.Errorf("blank X-Service-Token: %w", ErrInvalidToken)
		if svcToken != "" {
			info, err = m.fetch(r, svcToken, false)
		}
		switch {
		case errors.Is(err, ErrUnavailable) && !m.opts.DelayAuthDecision:
			return auth, err
		case err == nil:
			err = m.checkBind(info, r)
		}
		if err != nil {
			serviceErr = fmt.Errorf("service token: %w", err)
		} else {
			passed := slices.ContainsFunc(info.id.Roles, func(role string) bool { return slices.Contains(m.svcRoles, role) })
			if m.opts.ServiceTokenRolesRequired && !passed {
				serviceErr = fmt.Errorf("service token lacks a role of service_token_roles: %w", ErrInvalidToken)
			} else {
				auth.Service = info.identity()
				setIdentityHeaders(r.Header, "-Service", info.id)
			}
			allowExpired = passed
		}
		status := "Confirmed"
		if serviceErr != nil {
			status = "Invalid"
		}
		r.Header.Set("X-Service-Identity-Status", status)
	}

	userToken := r.Header.Get("X-Auth-Token")
	if userToken == "" {
		userToken = r.Header.Get("X-Storage-Token")
	}
	userToken = strings.TrimSpace(userToken)
	var userErr error
	if userToken == "" {
		userErr = fmt.Errorf("no X-Auth-Token: %w", ErrInvalidToken)
	} else {
		info, err := m.fetch(r, userToken, allowExpired)
		if errors.Is(err, ErrUnavailable) && !m.opts.DelayAuthDecision {
			return auth, err
		}
		if err == nil {
			err = m.checkAccessRules(info, r, svcToken != "")
		}
		if err == nil && svcToken == "" {
			err = m.checkBind(info, r)
		}
		if err != nil {
			userErr = fmt.Errorf("user token: %w", err)
		} else {
			auth.User = info.identity()
			setIdentityHeaders(r.Header, "", info.id)
			r.Header.Set("X-Is-Admin-Project", pyBool(info.id.IsAdminProject))
			if info.id.SystemScope != "" {
				r.Header.Set("OpenStack-System-Scope", info.id.SystemScope)
			}
			for alias, src := range map[string]string{"X-Role": "X-Roles", "X-User": "X-User-Name",
				"X-Tenant-Id": "X-Project-Id", "X-Tenant-Name": "X-Project-Name", "X-Tenant": "X-Project-Name"} {
				if v := r.Header.Get(src); v != "" {
					r.Header.Set(alias, v)
				}
			}
			if m.opts.IncludeServiceCatalog && info.hasCat {
				r.Header.Set("X-Service-Catalog", info.catalog)
			}
		}
	}
	if userErr != nil {
		r.Header.Set("X-Identity-Status", "Invalid")
		// an invalid user token leaves no user identity headers behind
		return auth, userErr
	}
	r.Header.Set("X-Identity-Status", "Confirmed")
	if serviceErr != nil {
		return auth, serviceErr
	}
	auth.Confirmed = true
	return auth, nil
}

func pyBool(b bool) string {
	if b {
		return "True"
	}
	return "False"
}

func setIdentityHeaders(h http.Header, prefix string, id *Identity) {
	set := func(name, v string) {
		if v != "" {
			h.Set("X"+prefix+"-"+name, v)
		}
	}
	h.Set("X"+prefix+"-Roles", strings.Join(id.Roles, ","))
	set("Domain-Id", id.DomainID)
	set("Domain-Name", id.DomainName)
	set("Project-Id", id.ProjectID)
	set("Project-Name", id.ProjectName)
	set("Project-Domain-Id", id.ProjectDomainID)
	set("Project-Domain-Name", id.ProjectDomainName)
	set("User-Id", id.UserID)
	set("User-Name", id.UserName)
	set("User-Domain-Id", id.UserDomainID)
	set("User-Domain-Name", id.UserDomainName)
}

// fetch returns the token's data from the cache or Keystone, and rejects expired tokens
// (unless allowExpired).
func (m *Middleware) fetch(r *http.Request, token string, allowExpired bool) (*tokenInfo, error) {
	k := keyOf(token)
	now := m.now()
	var info *tokenInfo
	if m.cache != nil {
		info, _ = m.cache.get(k, now)
	}
	if info == nil {
		var err error
		info, err, _ = m.flights.do(flightKey{k, allowExpired}, r.Context().Done(), func() (*tokenInfo, error) {
			ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), m.timeout)
			defer cancel()
			body, err := m.v.Validate(ctx, token, allowExpired)
			if err != nil {
				return nil, err
			}
			info, err := parseToken(body)
			if err != nil {
				return nil, fmt.Errorf("%w: %w", ErrInvalidToken, err)
			}
			if m.cache != nil {
				exp := m.now().Add(m.cacheTTL)
				if info.id.ExpiresAt.Before(exp) {
					exp = info.id.ExpiresAt
				}
				if exp.After(m.now()) {
					m.cache.put(k, info, exp)
				}
			}
			return info, nil
		})
		if errors.Is(err, errCanceled) {
			return nil, fmt.Errorf("request canceled while waiting for keystone: %w", ErrUnavailable)
		}
		if err != nil {
			return nil, err
		}
	}
	if !allowExpired && info.id.ExpiresAt.Before(now) {
		return nil, fmt.Errorf("token expired at %s: %w", info.id.ExpiresAt.Format(time.RFC3339), ErrInvalidToken)
	}
	return info, nil
}

// checkBind is keystonemiddleware's _confirm_token_bind. This middleware has no Kerberos
// support, so a kerberos bind always fails.
func (m *Middleware) checkBind(info *tokenInfo, _ *http.Request) error {
	mode := m.bindMode
	if mode == "disabled" {
		return nil
	}
	permissive := mode == "permissive" || mode == "strict"
	if len(info.bind) == 0 {
		if permissive {
			return nil
		}
		return fmt.Errorf("no bind information in token: %w", ErrInvalidToken)
	}
	if !permissive && mode != "required" {
		if _, ok := info.bind[mode]; !ok {
			return fmt.Errorf("bind mode %q not in the token: %w", mode, ErrInvalidToken)
		}
	}
	for bindType := range info.bind {
		switch {
		case bindType == "kerberos":
			return fmt.Errorf("kerberos bind not supported: %w", ErrInvalidToken)
		case mode == "permissive":
		default:
			return fmt.Errorf("unknown bind type %q: %w", bindType, ErrInvalidToken)
		}
	}
	return nil
}

// checkAccessRules is keystonemiddleware's validate_allowed_request for application
// credentials with access rules.
func (m *Middleware) checkAccessRules(info *tokenInfo, r *http.Request, haveServiceToken bool) error {
	ac := info.id.ApplicationCredential
	if ac == nil || ac.AccessRules == nil {
		return nil
	}
	st := m.opts.ServiceType
	if st == "" {
		return fmt.Errorf("application credential with access rules, but service_type is not configured: %w", ErrInvalidToken)
	}
	if st == "identity" && r.Method == http.MethodGet && strings.HasSuffix(r.URL.Path, "/v3/auth/tokens") {
		return nil
	}
	if !info.hasCat {
		return fmt.Errorf("application credential with access rules needs the catalog (include_service_catalog): %w", ErrInvalidToken)
	}
	if !slices.Contains(info.catalogTypes, st) {
		return fmt.Errorf("service_type %q is not in the catalog: %w", st, ErrInvalidToken)
	}
	if haveServiceToken {
		return nil
	}
	for _, rule := range ac.AccessRules {
		if r.Method == rule.Method && rule.Service == st && pathMatches(r.URL.Path, rule.Path) {
			return nil
		}
	}
	return fmt.Errorf("no application credential access rule allows %s %s: %w", r.Method, r.URL.Path, ErrInvalidToken)
}

var pathTokenRe = regexp.MustCompile(`(\{[^}]*\})|(\*\*)|(\*)|([^{}*])`)

// pathMatches is keystonemiddleware's _path_matches: {tag} and * match one path segment,
// ** matches anything.
func pathMatches(path, pattern string) bool {
	var b strings.Builder
	b.WriteString("^")
	for _, m := range pathTokenRe.FindAllStringSubmatch(pattern, -1) {
		switch {
		case m[1] != "":
			b.WriteString(`[^/]+`)
		case m[2] != "":
			b.WriteString(`.*`)
		case m[3] != "":
			b.WriteString(`[^/]+`)
		default:
			// keystonemiddleware does not escape literals either: "." matches any character
			b.WriteString(m[4])
		}
	}
	b.WriteString("$")
	re, err := regexp.Compile(b.String())
	return err == nil && re.MatchString(path)
}

// challengeWriter adds WWW-Authenticate to 401s from the wrapped handler.
type challengeWriter struct {
	http.ResponseWriter
	wwwAuth     string
	wroteHeader bool
}

func (c *challengeWriter) WriteHeader(code int) {
	if !c.wroteHeader {
		c.wroteHeader = true
		if code == http.StatusUnauthorized {
			c.ResponseWriter.Header().Add("WWW-Authenticate", c.wwwAuth)
		}
	}
	c.ResponseWriter.WriteHeader(code)
}

func (c *challengeWriter) Write(b []byte) (int, error) {
	c.wroteHeader = true
	return c.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (c *challengeWriter) Unwrap() http.ResponseWriter { return c.ResponseWriter }
