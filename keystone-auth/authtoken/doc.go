// Package authtoken is HTTP middleware that authenticates requests with Keystone tokens
// the way keystonemiddleware's auth_token (Zed, 10.1.0) does, configured with the
// [keystone_authtoken] option names.
//
// # What it checks
//
//   - X-Auth-Token (or X-Storage-Token) is validated with GET /v3/auth/tokens, using the
//     service's own credentials (package credentials), with OpenStack-Identity-Access-Rules
//     and, unless include_service_catalog, ?nocatalog. Keystone's 404 means invalid.
//   - The token's expires_at must not be in the past, also for cached tokens.
//   - An X-Service-Token is validated the same way. When it has one of
//     service_token_roles, an expired user token is accepted (?allow_expired=1). With
//     service_token_roles_required, a service token without such a role is invalid.
//   - Application credentials with access rules may only call the method and paths their
//     rules allow on service_type (which must be configured and in the catalog).
//   - Token bind information, per enforce_token_bind (Kerberos binds always fail).
//
// Failures answer 401 with keystonemiddleware's JSON body and WWW-Authenticate: Keystone
// uri="<www_authenticate_uri>" (the header is also added to 401s of the wrapped handler);
// a Keystone that cannot be reached, fails, or rejects the service's credentials answers
// 503, never 401. With delay_auth_decision the request is passed on, marked
// X-Identity-Status: Invalid, and Keystone failures count as invalid tokens.
//
// Identity headers a client sends (X-Roles, X-User-Id, X-Identity-Status, ... and
// OpenStack-System-Scope, which keystonemiddleware forgets) are always removed. On success
// keystonemiddleware's headers are set and an [*Auth] is put in the request context.
//
// # Cache
//
// Validated tokens are cached in process, keyed by the SHA-256 of the token (the token
// itself is never stored as a key nor logged), in a bounded LRU. An entry lives at most
// token_cache_time seconds and never past the token's expiry; so, as with
// keystonemiddleware, a revoked token keeps working until its entry expires.
// token_cache_time <= 0 disables the cache (keystonemiddleware treats 0 as "no time
// limit"; here that would let revoked tokens live for their whole lifetime).
// Concurrent requests with the same uncached token share one Keystone request. Invalid
// tokens are not cached.
//
// # What it does not check
//
// Authorization: that is package policy's job, with [Auth.PolicyCredentials]. The
// middleware does not use memcached (memcached_servers is accepted and ignored), does not
// support PKI tokens or Kerberos, and does not log (see [Config.OnError]).
package authtoken
