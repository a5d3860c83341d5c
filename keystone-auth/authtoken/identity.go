package authtoken

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// Identity is what a validated Keystone token says about its holder.
type Identity struct {
	UserID, UserName             string
	UserDomainID, UserDomainName string
	// ProjectID and the other project fields are set for project-scoped tokens.
	ProjectID, ProjectName             string
	ProjectDomainID, ProjectDomainName string
	// DomainID and DomainName are set for domain-scoped tokens.
	DomainID, DomainName string
	// SystemScope is "all" for system-scoped tokens.
	SystemScope string
	// Roles are the role names in Keystone's order.
	Roles []string
	// IsAdminProject is Keystone's is_admin_project, true when Keystone does not send it
	// (as keystonemiddleware assumes).
	IsAdminProject bool
	Methods        []string
	AuditIDs       []string
	IssuedAt       time.Time
	ExpiresAt      time.Time
	// ApplicationCredential is set for tokens issued to an application credential.
	ApplicationCredential *ApplicationCredential
	// TrustID is set for trust-scoped tokens.
	TrustID string
}

// ApplicationCredential describes the application credential behind a token.
type ApplicationCredential struct {
	ID, Name   string
	Restricted bool
	// AccessRules is nil for an unrestricted credential; an empty non-nil list allows
	// nothing.
	AccessRules []AccessRule
}

// AccessRule is one application-credential access rule.
type AccessRule struct {
	ID, Path, Method, Service string
}

// HasRole reports whether the identity has the role (compared exactly, as Keystone's role
// names are; policy checks are case-insensitive, see package policy).
func (id *Identity) HasRole(role string) bool { return id != nil && slices.Contains(id.Roles, role) }

// Auth is the outcome of authentication attached to a request's context.
type Auth struct {
	// User is the validated user token's identity; nil when there was no valid user
	// token (possible only with delay_auth_decision).
	User *Identity
	// Service is the identity of a valid X-Service-Token, nil otherwise.
	Service *Identity
	// ServiceTokenPresented reports whether the request carried an X-Service-Token (valid
	// or not).
	ServiceTokenPresented bool
	// Confirmed reports that the request is authenticated: a valid user token and, when
	// an X-Service-Token was sent, a valid service token. Without delay_auth_decision
	// every request reaching the handler is confirmed; with it, handlers must check.
	Confirmed bool
}

type ctxKey struct{}

// FromContext returns the request's authentication outcome.
func FromContext(ctx context.Context) (*Auth, bool) {
	a, ok := ctx.Value(ctxKey{}).(*Auth)
	return a, ok
}

// NewContext returns ctx carrying a (for handlers under test).
func NewContext(ctx context.Context, a *Auth) context.Context {
	return context.WithValue(ctx, ctxKey{}, a)
}

// PolicyCredentials returns the credentials oslo.context's to_policy_values() builds
// from keystonemiddleware's headers, for package policy: user_id, user_domain_id,
// system_scope, domain_id, project_id, project_domain_id, roles, is_admin_project and
// the service_* equivalents. Absent values are nil (Python's None), as in oslo.context.
func (a *Auth) PolicyCredentials() map[string]any {
	str := func(s string) any {
		if s == "" {
			return nil
		}
		return s
	}
	c := map[string]any{
		"user_id": nil, "user_domain_id": nil, "system_scope": nil, "domain_id": nil,
		"project_id": nil, "project_domain_id": nil, "roles": []string{}, "is_admin_project": true,
		"service_user_id": nil, "service_user_domain_id": nil, "service_project_id": nil,
		"service_project_domain_id": nil, "service_roles": []string{},
	}
	if a == nil {
		return c
	}
	if u := a.User; u != nil {
		c["user_id"], c["user_domain_id"] = str(u.UserID), str(u.UserDomainID)
		c["system_scope"], c["domain_id"] = str(u.SystemScope), str(u.DomainID)
		c["project_id"], c["project_domain_id"] = str(u.ProjectID), str(u.ProjectDomainID)
		c["roles"] = slices.Clone(u.Roles)
		c["is_admin_project"] = u.IsAdminProject
	}
	if s := a.Service; s != nil {
		c["service_user_id"], c["service_user_domain_id"] = str(s.UserID), str(s.UserDomainID)
		c["service_project_id"], c["service_project_domain_id"] = str(s.ProjectID), str(s.ProjectDomainID)
		c["service_roles"] = slices.Clone(s.Roles)
	}
	return c
}

// identity returns a copy of the cached identity that the request may keep.
func (t *tokenInfo) identity() *Identity {
	id := *t.id
	id.Roles = slices.Clone(id.Roles)
	id.Methods = slices.Clone(id.Methods)
	id.AuditIDs = slices.Clone(id.AuditIDs)
	if ac := id.ApplicationCredential; ac != nil {
		c := *ac
		if ac.AccessRules != nil {
			c.AccessRules = slices.Clone(ac.AccessRules)
		}
		id.ApplicationCredential = &c
	}
	return &id
}

// tokenInfo is a validated token as the cache keeps it.
type tokenInfo struct {
	id           *Identity
	bind         map[string]any
	catalog      string // X-Service-Catalog value, "" when the token has no catalog
	hasCat       bool
	catalogTypes []string
}

type nameID struct {
	ID   string `json:"id"`
	Name string `json:"name"`
}

type scopeRef struct {
	ID     string `json:"id"`
	Name   string `json:"name"`
	Domain nameID `json:"domain"`
}

type tokenBody struct {
	Token struct {
		Methods        []string        `json:"methods"`
		User           scopeRef        `json:"user"`
		AuditIDs       []string        `json:"audit_ids"`
		ExpiresAt      string          `json:"expires_at"`
		IssuedAt       string          `json:"issued_at"`
		Project        *scopeRef       `json:"project"`
		Domain         *nameID         `json:"domain"`
		System         map[string]any  `json:"system"`
		Roles          []nameID        `json:"roles"`
		IsAdminProject *bool           `json:"is_admin_project"`
		Catalog        json.RawMessage `json:"catalog"`
		Bind           map[string]any  `json:"bind"`
		AppCred        *struct {
			ID          string        `json:"id"`
			Name        string        `json:"name"`
			Restricted  bool          `json:"restricted"`
			AccessRules *[]AccessRule `json:"access_rules"`
		} `json:"application_credential"`
		Trust *struct {
			ID string `json:"id"`
		} `json:"OS-TRUST:trust"`
	} `json:"token"`
}

func (r *AccessRule) UnmarshalJSON(b []byte) error {
	var v struct{ ID, Path, Method, Service string }
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	*r = AccessRule(v)
	return nil
}

var errBadTokenBody = errors.New("malformed token data")

// parseISOTime parses Keystone's ISO 8601 times. Keystone usually sends UTC with a "Z",
// but tokens capped by an application credential's expiry carry a naive time, which
// keystoneauth (iso8601) reads as UTC.
func parseISOTime(s string) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	return time.ParseInLocation("2006-01-02T15:04:05.999999999", s, time.UTC)
}

// parseToken turns a GET /v3/auth/tokens body into a tokenInfo.
func parseToken(body []byte) (*tokenInfo, error) {
	var b tokenBody
	if err := json.Unmarshal(body, &b); err != nil {
		return nil, fmt.Errorf("%w: %w", errBadTokenBody, err)
	}
	t := b.Token
	exp, err := parseISOTime(t.ExpiresAt)
	if err != nil {
		return nil, fmt.Errorf("%w: expires_at: %w", errBadTokenBody, err)
	}
	if t.User.ID == "" {
		return nil, fmt.Errorf("%w: no user", errBadTokenBody)
	}
	id := &Identity{
		UserID: t.User.ID, UserName: t.User.Name, UserDomainID: t.User.Domain.ID, UserDomainName: t.User.Domain.Name,
		Methods: t.Methods, AuditIDs: t.AuditIDs, ExpiresAt: exp, IsAdminProject: true,
	}
	if iat, err := parseISOTime(t.IssuedAt); err == nil {
		id.IssuedAt = iat
	}
	for _, r := range t.Roles {
		id.Roles = append(id.Roles, r.Name)
	}
	switch {
	case t.Project != nil:
		id.ProjectID, id.ProjectName = t.Project.ID, t.Project.Name
		id.ProjectDomainID, id.ProjectDomainName = t.Project.Domain.ID, t.Project.Domain.Name
	case t.Domain != nil:
		id.DomainID, id.DomainName = t.Domain.ID, t.Domain.Name
	case t.System != nil:
		if all, _ := t.System["all"].(bool); all {
			id.SystemScope = "all"
		}
	}
	if t.IsAdminProject != nil {
		id.IsAdminProject = *t.IsAdminProject
	}
	if t.AppCred != nil {
		ac := &ApplicationCredential{ID: t.AppCred.ID, Name: t.AppCred.Name, Restricted: t.AppCred.Restricted}
		if t.AppCred.AccessRules != nil {
			ac.AccessRules = append([]AccessRule{}, (*t.AppCred.AccessRules)...)
		}
		id.ApplicationCredential = ac
	}
	if t.Trust != nil {
		id.TrustID = t.Trust.ID
	}
	info := &tokenInfo{id: id, bind: t.Bind}
	if len(t.Catalog) > 0 && string(t.Catalog) != "null" {
		cat, types, err := normalizeCatalog(t.Catalog)
		if err != nil {
			return nil, err
		}
		info.catalog, info.catalogTypes, info.hasCat = cat, types, true
	}
	return info, nil
}

// normalizeCatalog converts a v3 catalog to the v2 form keystonemiddleware puts in
// X-Service-Catalog, and lists the service types.
func normalizeCatalog(raw json.RawMessage) (string, []string, error) {
	var v3 []struct {
		Type      string  `json:"type"`
		Name      *string `json:"name"`
		Endpoints []struct {
			Interface string `json:"interface"`
			Region    string `json:"region"`
			URL       string `json:"url"`
		} `json:"endpoints"`
	}
	if err := json.Unmarshal(raw, &v3); err != nil {
		return "", nil, fmt.Errorf("%w: catalog: %w", errBadTokenBody, err)
	}
	var b strings.Builder
	types := make([]string, 0, len(v3))
	b.WriteString("[")
	for i, svc := range v3 {
		types = append(types, svc.Type)
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(`{"type": `)
		writeJSONString(&b, svc.Type)
		if svc.Name != nil {
			b.WriteString(`, "name": `)
			writeJSONString(&b, *svc.Name)
		}
		// one endpoint group per region, in first-seen order
		var regions []string
		groups := map[string][][2]string{}
		for _, ep := range svc.Endpoints {
			if _, ok := groups[ep.Region]; !ok {
				regions = append(regions, ep.Region)
			}
			groups[ep.Region] = append(groups[ep.Region], [2]string{strings.ToLower(ep.Interface) + "URL", ep.URL})
		}
		b.WriteString(`, "endpoints": [`)
		for j, reg := range regions {
			if j > 0 {
				b.WriteString(", ")
			}
			b.WriteString("{")
			first := true
			if reg != "" {
				b.WriteString(`"region": `)
				writeJSONString(&b, reg)
				first = false
			}
			seen := map[string]int{}
			var keys []string
			vals := map[string]string{}
			for _, kv := range groups[reg] {
				if _, ok := seen[kv[0]]; !ok {
					keys = append(keys, kv[0])
				}
				seen[kv[0]]++
				vals[kv[0]] = kv[1]
			}
			for _, k := range keys {
				if !first {
					b.WriteString(", ")
				}
				first = false
				writeJSONString(&b, k)
				b.WriteString(": ")
				writeJSONString(&b, vals[k])
			}
			b.WriteString("}")
		}
		b.WriteString("]}")
	}
	b.WriteString("]")
	return b.String(), types, nil
}

// writeJSONString writes s the way Python's json.dumps does (ensure_ascii).
func writeJSONString(b *strings.Builder, s string) {
	b.WriteByte('"')
	for _, r := range s {
		switch {
		case r == '"':
			b.WriteString(`\"`)
		case r == '\\':
			b.WriteString(`\\`)
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\r':
			b.WriteString(`\r`)
		case r == '\t':
			b.WriteString(`\t`)
		case r == '\b':
			b.WriteString(`\b`)
		case r == '\f':
			b.WriteString(`\f`)
		case r < 0x20 || (r >= 0x7f && r <= 0xffff):
			fmt.Fprintf(b, `\u%04x`, r)
		case r > 0xffff:
			r -= 0x10000
			fmt.Fprintf(b, `\u%04x\u%04x`, 0xd800+(r>>10), 0xdc00+(r&0x3ff))
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
}
