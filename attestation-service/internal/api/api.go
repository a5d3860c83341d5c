// Package api is the attestation service's REST API (docs/ARCHITECTURE.md, "REST API"):
// hosts, profiles, trusted launches, public keys, health, metrics and
// version discovery at GET /.
//
// Every route is listed once (routes, exported as Routes) and described by
// docs/api/openapi.yaml; request and response bodies are the wire types of
// internal/attestapi, which the Go client and the trustpool CLI decode.
// Tests hold the router, the document and real answers to each other.
//
// Every /v1 route except /v1/keys sits behind Keystone token authentication
// (keystone-auth's authtoken middleware, passed in as Config.Auth) and an
// oslo.policy rule (Rules, overridable in policy.yaml). The defaults follow
// OpenStack's secure-RBAC personas as Nova (2023.1+) and Placement ship them:
// hosts, profiles, EK approvals and the audit log are operator data, for the
// admin role (from any project: in OpenStack admin is cloud-wide); the
// service role may read hosts' trust state and ask for an attestation;
// project members and readers see none of it. project_member_api and
// project_reader_api (project_id:%(project_id)s) are for tenant-owned
// resources: trusted launches (launches.go) belong to a project, whose
// members create and delete them and whose readers see them; administrators
// list every project's (all_projects=true). A launch of another project
// answers 404 to whoever may not see it, and tenants never see host names
// (only Nova's hostId form).
//
// GET /v1/keys, like /healthz and /metrics, needs no token: it serves public
// keys only (the verdict key's kid and PEM, which also signs launch
// receipts, and the HPKE launch key tenants seal to), which shims and
// tenants pin; trust comes from pinning the key out of band, not from how
// it was fetched. Managing keys is not an API operation.
//
// Admin changes are written to the audit log whatever their outcome (denied
// ones too). Changes that would turn hosts untrusted (deleting a profile
// hosts rely on, assigning profiles a trusted host does not satisfy) answer
// 409 naming the hosts unless the request says force=true.
//
// Errors are a JSON envelope {"error": {"code", "title", "message",
// "request_id"}}; the request id is also in the X-Openstack-Request-Id
// header. Messages say what was wrong in the request's terms and never name
// Go types; 5xx answers carry a generic message, the detail is logged once
// with the request id. A wrong method answers 405 with Allow; unknown query
// parameters are refused.
package api

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/trustpool/trustpool/attestation-service/internal/engine"
	"github.com/trustpool/trustpool/attestation-service/internal/launcher"
	"github.com/trustpool/trustpool/attestation-service/internal/metrics"
	"github.com/trustpool/trustpool/attestation-service/internal/store"
	"github.com/trustpool/trustpool/internal/attestapi"
	"github.com/trustpool/trustpool/internal/jsondecode"
	"github.com/trustpool/trustpool/internal/policykey"
	"github.com/trustpool/trustpool/keystone-auth/authtoken"
	kpolicy "github.com/trustpool/trustpool/keystone-auth/policy"
)

// Rule names of the operations.
const (
	RuleHostsList     = "trustpool:hosts:list"
	RuleHostsGet      = "trustpool:hosts:get"
	RuleHostsHistory  = "trustpool:hosts:history"
	RuleHostsAttest   = "trustpool:hosts:attest"
	RuleHostsDelete   = "trustpool:hosts:delete"
	RuleHostsApprove  = "trustpool:hosts:approve"
	RuleHostsReject   = "trustpool:hosts:reject"
	RuleHostsProfiles = "trustpool:hosts:update_profiles"
	RuleProfilesRead  = "trustpool:profiles:read"
	RuleProfilesWrite = "trustpool:profiles:write"
	RuleAuditRead     = "trustpool:audit:read"
	RuleVersionsRead  = "trustpool:profiles:versions:read"
	RuleVersionsWrite = "trustpool:profiles:versions:write"
)

// Base rules: the secure-RBAC personas under the names Nova (2023.1 and
// later) and Placement give them, so that operators' policy files and habits
// carry over.
const (
	RuleAdmin                = "context_is_admin"
	RuleService              = "service_api"
	RuleServiceOrAdmin       = "service_or_admin"
	RuleProjectMember        = "project_member_api"
	RuleProjectReader        = "project_reader_api"
	RuleProjectMemberOrAdmin = "project_member_or_admin"
	RuleProjectReaderOrAdmin = "project_reader_or_admin"
)

// The rules before the personas, kept registered (deprecated) so that policy
// files and enforce_new_defaults = false still find them.
const (
	legacyAdmin       = "admin_required"
	legacyReader      = "reader_or_admin"
	deprecatedSince   = "0.2.0"
	personasReason    = "Trustpool's policies follow OpenStack's secure-RBAC personas: host, profile, EK and audit data are operator data, and the old default let every project member (who has the reader role through Keystone's implied roles) see every compute host. With [oslo_policy] enforce_new_defaults = false the old default is OR'ed back in; copy it into policy.yaml to keep it."
	legacyRuleRemoval = "Use the persona rules (context_is_admin, service_api, project_*_api) instead."
)

// Rules are the policy defaults (the sample is etc/policy.yaml.sample):
//
//   - admin (role admin, from any project: cloud-wide) manages hosts,
//     profiles, EK approvals and reads the audit log;
//   - service (role service) reads hosts' trust state and asks for an
//     attestation, for services acting on their own behalf;
//   - project members and readers see no operator data; the
//     project_member_api / project_reader_api rules (matched on
//     project_id:%(project_id)s) are there for tenant-owned resources.
//
// Every operation rule is meant for project-scoped tokens (scope_types
// project); the previous defaults are listed as deprecated rules.
func Rules() []kpolicy.RuleDefault {
	op := func(m, p string) []kpolicy.Operation { return []kpolicy.Operation{{Method: m, Path: p}} }
	project := []string{"project"}
	was := func(name, check string) *kpolicy.DeprecatedRule {
		return &kpolicy.DeprecatedRule{Name: name, CheckStr: check, DeprecatedReason: personasReason, DeprecatedSince: deprecatedSince}
	}
	admin, serviceOrAdmin := "rule:"+RuleAdmin, "rule:"+RuleServiceOrAdmin
	oldAdmin, oldReader := "rule:"+legacyAdmin, "rule:"+legacyReader
	return append([]kpolicy.RuleDefault{
		{Name: RuleAdmin, CheckStr: "role:admin", Description: "Administrators: they manage hosts, profiles and EK approvals and read the audit log. " +
			"In OpenStack the admin role is cloud-wide: a project-scoped token with the admin role on any project, not only the admin project, " +
			"passes this rule. Give it only to cloud operators."},
		{Name: RuleService, CheckStr: "role:service", Description: "Services calling on their own behalf (service users with the service role). " +
			"By default they read hosts' trust state and ask for attestations, nothing else."},
		{Name: RuleServiceOrAdmin, CheckStr: "rule:" + RuleService + " or rule:" + RuleAdmin, Description: "Services or administrators."},
		{Name: RuleProjectMember, CheckStr: "role:member and project_id:%(project_id)s", Description: "Members of the project that owns the resource, for tenant-owned resources."},
		{Name: RuleProjectReader, CheckStr: "role:reader and project_id:%(project_id)s", Description: "Readers of the project that owns the resource, for tenant-owned resources."},
		{Name: RuleProjectMemberOrAdmin, CheckStr: "rule:" + RuleProjectMember + " or rule:" + RuleAdmin, Description: "Members of the owning project, or administrators."},
		{Name: RuleProjectReaderOrAdmin, CheckStr: "rule:" + RuleProjectReader + " or rule:" + RuleAdmin, Description: "Readers of the owning project, or administrators."},
		{Name: legacyAdmin, CheckStr: "role:admin", Description: "Administrators (the rule before context_is_admin).",
			DeprecatedForRemoval: true, DeprecatedReason: legacyRuleRemoval, DeprecatedSince: deprecatedSince},
		{Name: legacyReader, CheckStr: "role:reader or role:admin", Description: "Any user with the reader or admin role on any project (the old read rule).",
			DeprecatedForRemoval: true, DeprecatedReason: legacyRuleRemoval, DeprecatedSince: deprecatedSince},
		{Name: RuleHostsList, CheckStr: serviceOrAdmin, Description: "List hosts and their verdicts.", Operations: op("GET", "/v1/hosts"),
			ScopeTypes: project, DeprecatedRule: was(RuleHostsList, oldReader)},
		{Name: RuleHostsGet, CheckStr: serviceOrAdmin, Description: "Show a host, its verdict and last evidence summary.", Operations: op("GET", "/v1/hosts/{host}"),
			ScopeTypes: project, DeprecatedRule: was(RuleHostsGet, oldReader)},
		{Name: RuleHostsHistory, CheckStr: serviceOrAdmin, Description: "Show a host's verdict history.", Operations: op("GET", "/v1/hosts/{host}/history"),
			ScopeTypes: project, DeprecatedRule: was(RuleHostsHistory, oldReader)},
		{Name: RuleHostsAttest, CheckStr: serviceOrAdmin, Description: "Attest a host now.", Operations: op("POST", "/v1/hosts/{host}/attest"),
			ScopeTypes: project, DeprecatedRule: was(RuleHostsAttest, oldAdmin)},
		{Name: RuleHostsDelete, CheckStr: admin, Description: "Delete a host.", Operations: op("DELETE", "/v1/hosts/{host}"),
			ScopeTypes: project, DeprecatedRule: was(RuleHostsDelete, oldAdmin)},
		{Name: RuleHostsApprove, CheckStr: admin, Description: "Approve a host's pending EK (with force: move an EK bound to another host).", Operations: op("POST", "/v1/hosts/{host}/approve"),
			ScopeTypes: project, DeprecatedRule: was(RuleHostsApprove, oldAdmin)},
		{Name: RuleHostsReject, CheckStr: admin, Description: "Reject a host's pending EK.", Operations: op("POST", "/v1/hosts/{host}/reject"),
			ScopeTypes: project},
		{Name: RuleHostsProfiles, CheckStr: admin, Description: "Assign required profiles to a host. An assignment that would turn a trusted host " +
			"untrusted needs force=true.", Operations: op("PUT", "/v1/hosts/{host}/profiles"),
			ScopeTypes: project, DeprecatedRule: was(RuleHostsProfiles, oldAdmin)},
		{Name: RuleProfilesRead, CheckStr: admin, Description: "List, show and export profiles.", Operations: []kpolicy.Operation{
			{Method: "GET", Path: "/v1/profiles"}, {Method: "GET", Path: "/v1/profiles/{name}"}, {Method: "GET", Path: "/v1/profiles/export"}},
			ScopeTypes: project, DeprecatedRule: was(RuleProfilesRead, oldReader)},
		{Name: RuleProfilesWrite, CheckStr: admin, Description: "Create, update, delete, import and learn profiles. Deleting a profile that hosts " +
			"rely on needs force=true.", Operations: []kpolicy.Operation{
			{Method: "POST", Path: "/v1/profiles"}, {Method: "PUT", Path: "/v1/profiles/{name}"}, {Method: "DELETE", Path: "/v1/profiles/{name}"},
			{Method: "POST", Path: "/v1/profiles/import"}, {Method: "POST", Path: "/v1/profiles/learn"}},
			ScopeTypes: project, DeprecatedRule: was(RuleProfilesWrite, oldAdmin)},
		{Name: RuleVersionsRead, CheckStr: admin, Description: "List and show profile versions.", Operations: []kpolicy.Operation{
			{Method: "GET", Path: "/v1/profiles/{name}/versions"}, {Method: "GET", Path: "/v1/profiles/{name}/versions/{version}"}},
			ScopeTypes: project},
		{Name: RuleVersionsWrite, CheckStr: admin, Description: "Add profile versions (candidates) and change their rollout state " +
			"(candidate, canary on named hosts or a fraction of hosts, approved, retired).", Operations: []kpolicy.Operation{
			{Method: "POST", Path: "/v1/profiles/{name}/versions"}, {Method: "POST", Path: "/v1/profiles/{name}/versions/{version}/state"}},
			ScopeTypes: project},
		{Name: RuleAuditRead, CheckStr: admin, Description: "Read the audit log.", Operations: op("GET", "/v1/audit"),
			ScopeTypes: project, DeprecatedRule: was(RuleAuditRead, oldAdmin)},
	}, launchRules()...)
}

// Config configures the API handler.
type Config struct {
	Engine *engine.Engine
	Store  *store.Store
	Policy *kpolicy.Enforcer
	// Auth wraps the authenticated routes (authtoken.Middleware.Wrap).
	Auth    func(http.Handler) http.Handler
	Metrics *metrics.Registry
	Logger  *slog.Logger
	// PublicKeyPEM and KID describe the verdict signing key.
	PublicKeyPEM []byte
	KID          string
	// OtherKeys returns the verdict keys of the other live service
	// instances (nil: none), listed after this instance's.
	OtherKeys func() []attestapi.VerdictKey
	// Health reports problems for /healthz (nil: healthy).
	Health func(ctx context.Context) error
	// Trigger asks for an immediate attestation.
	Trigger func(host string)
	// Launches runs trusted launches (nil: off; the routes answer 404).
	Launches *launcher.Launcher
	// PublicEndpoint is the API's public base URL ([api] public_endpoint,
	// an absolute http(s) URL, checked by the service's config), which the
	// version document's links are built on. "" builds them from the
	// request's Host header, which the client controls.
	PublicEndpoint string
}

type server struct {
	cfg Config
	log *slog.Logger
	req *metrics.Counter
}

// route is one operation: method and path as the OpenAPI document
// (docs/api/openapi.yaml) writes them, the metrics label, and whether it
// needs a token.
type route struct {
	method, path, name string
	open               bool
	fn                 func(http.ResponseWriter, *http.Request) error
}

// pattern is the route's http.ServeMux pattern.
func (rt route) pattern() string {
	if rt.path == "/" {
		return rt.method + " /{$}" // the root only, not every path
	}
	return rt.method + " " + rt.path
}

// routes lists every operation of the API; New registers exactly these.
func (s *server) routes() []route {
	return []route{
		{"GET", "/", "versions", true, s.versions},
		{"GET", "/healthz", "healthz", true, s.healthz},
		{"GET", "/metrics", "metrics", true, s.metrics},
		{"GET", attestapi.PathKeys, "keys", true, s.keys},
		{"GET", attestapi.PathHosts, "hosts.list", false, s.listHosts},
		{"GET", "/v1/hosts/{host}", "hosts.get", false, s.getHost},
		{"GET", "/v1/hosts/{host}/history", "hosts.history", false, s.history},
		{"POST", "/v1/hosts/{host}/attest", "hosts.attest", false, s.attestNow},
		{"DELETE", "/v1/hosts/{host}", "hosts.delete", false, s.deleteHost},
		{"POST", "/v1/hosts/{host}/approve", "hosts.approve", false, s.approve},
		{"POST", "/v1/hosts/{host}/reject", "hosts.reject", false, s.reject},
		{"PUT", "/v1/hosts/{host}/profiles", "hosts.profiles", false, s.setHostProfiles},
		{"GET", attestapi.PathProfiles, "profiles.list", false, s.listProfiles},
		{"POST", attestapi.PathProfiles, "profiles.create", false, s.createProfile},
		{"GET", attestapi.PathProfilesExport, "profiles.export", false, s.exportProfiles},
		{"POST", attestapi.PathProfilesImport, "profiles.import", false, s.importProfiles},
		{"POST", attestapi.PathProfilesLearn, "profiles.learn", false, s.learnProfile},
		{"GET", "/v1/profiles/{name}", "profiles.get", false, s.getProfile},
		{"PUT", "/v1/profiles/{name}", "profiles.update", false, s.updateProfile},
		{"DELETE", "/v1/profiles/{name}", "profiles.delete", false, s.deleteProfile},
		{"GET", "/v1/profiles/{name}/versions", "profiles.versions.list", false, s.listVersions},
		{"POST", "/v1/profiles/{name}/versions", "profiles.versions.create", false, s.createVersion},
		{"GET", "/v1/profiles/{name}/versions/{version}", "profiles.versions.get", false, s.getVersion},
		{"POST", "/v1/profiles/{name}/versions/{version}/state", "profiles.versions.state", false, s.setVersionState},
		{"GET", attestapi.PathAudit, "audit", false, s.audit},
		{"POST", attestapi.PathLaunches, "launches.create", false, s.createLaunch},
		{"GET", attestapi.PathLaunches, "launches.list", false, s.listLaunches},
		{"GET", "/v1/launches/{launch_id}", "launches.get", false, s.getLaunch},
		{"DELETE", "/v1/launches/{launch_id}", "launches.delete", false, s.deleteLaunch},
		{"POST", "/v1/launches/{launch_id}/redeliver", "launches.redeliver", false, s.redeliverLaunch},
	}
}

// Routes returns every operation the handler serves, as "METHOD /path" in
// the OpenAPI document's notation, so that a test can hold the two to each
// other. (GET routes also answer HEAD.)
func Routes() []string {
	var out []string
	for _, rt := range (&server{}).routes() {
		out = append(out, rt.method+" "+rt.path)
	}
	return out
}

// New returns the API's http.Handler.
func New(cfg Config) http.Handler {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Metrics == nil {
		cfg.Metrics = metrics.New()
	}
	s := &server{cfg: cfg, log: cfg.Logger,
		req: cfg.Metrics.NewCounter("trustpool_api_requests_total", "REST API requests by route and status code.", "route", "code")}
	open, authed := http.NewServeMux(), http.NewServeMux()
	for _, rt := range s.routes() {
		mux := authed
		if rt.open {
			mux = open
		}
		mux.Handle(rt.pattern(), s.handle(rt.name, rt.fn))
	}
	authed.Handle("/", s.handle("not_found", func(w http.ResponseWriter, r *http.Request) error {
		return routeError(w, r, authed)
	}))
	var protected http.Handler = authed
	if cfg.Auth != nil {
		protected = cfg.Auth(authed)
	}
	// The open routes answer a wrong method with 405 without a token; every
	// other path needs one first, as behind keystonemiddleware.
	open.Handle("/", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if allow := allowedMethods(open, r); len(allow) > 0 {
			s.handle("method_not_allowed", func(w http.ResponseWriter, r *http.Request) error {
				return routeError(w, r, open)
			}).ServeHTTP(w, r)
			return
		}
		protected.ServeHTTP(w, r)
	}))
	return withRequestID(open)
}

// methods are those the API routes use; HEAD is served wherever GET is.
var methods = []string{http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete}

// allowedMethods returns the methods for which mux has a route (other than
// its catch-all "/") matching r's path.
func allowedMethods(mux *http.ServeMux, r *http.Request) []string {
	var allow []string
	for _, m := range methods {
		probe := r.Clone(r.Context())
		probe.Method = m
		if _, pattern := mux.Handler(probe); pattern != "" && pattern != "/" {
			allow = append(allow, m)
		}
	}
	return allow
}

// routeError answers a request no route of mux takes: 405 with Allow when
// the path exists for other methods, 404 otherwise.
func routeError(w http.ResponseWriter, r *http.Request, mux *http.ServeMux) error {
	if allow := allowedMethods(mux, r); len(allow) > 0 {
		w.Header().Set("Allow", strings.Join(allow, ", "))
		return httpErr(http.StatusMethodNotAllowed, fmt.Sprintf("method %s is not allowed on %s; allowed: %s",
			r.Method, r.URL.Path, strings.Join(allow, ", ")), nil)
	}
	return httpErr(http.StatusNotFound, "no such resource", nil)
}

// HTTPError is an error with an HTTP status and, for errors clients act
// on, a machine-readable reason (attestapi.Reason*). A refusal that force
// overrides has ForceRequired and Refusal (forceRequired).
type HTTPError struct {
	Code          int
	Msg           string
	Err           error
	Reason        string
	ForceRequired bool
	Refusal       string
	// RetryAfter, when positive, is sent as the Retry-After header (a
	// 429 says when to ask again).
	RetryAfter time.Duration
}

// retryAfterSeconds is d as Retry-After's whole seconds, rounded up: a
// client that waits that long is let through.
func retryAfterSeconds(d time.Duration) int64 {
	return max(1, int64((d+time.Second-1)/time.Second))
}

func (e *HTTPError) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("%s: %v", e.Msg, e.Err)
	}
	return e.Msg
}

func (e *HTTPError) Unwrap() error { return e.Err }

func httpErr(code int, msg string, err error) error {
	return &HTTPError{Code: code, Msg: msg, Err: err}
}

// forceRequired is the 409 of a refusal that the same request with force
// overrides: refusal says what was refused, hint how to override it in the
// API's terms. The answer marks it force_required and carries refusal on
// its own, so that clients name their own option (the CLI's --force)
// without parsing the message.
func forceRequired(reason, refusal, hint string) error {
	return &HTTPError{Code: http.StatusConflict, Reason: reason, Msg: refusal + "; " + hint, ForceRequired: true, Refusal: refusal}
}

type ctxKey struct{}

func withRequestID(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b := make([]byte, 16)
		_, _ = rand.Read(b)
		h := hex.EncodeToString(b)
		id := fmt.Sprintf("req-%s-%s-%s-%s-%s", h[:8], h[8:12], h[12:16], h[16:20], h[20:])
		w.Header().Set("X-Openstack-Request-Id", id)
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), ctxKey{}, id)))
	})
}

func requestID(r *http.Request) string {
	id, _ := r.Context().Value(ctxKey{}).(string)
	return id
}

type statusWriter struct {
	http.ResponseWriter
	code int
}

func (w *statusWriter) WriteHeader(c int) {
	if w.code == 0 {
		w.code = c
	}
	w.ResponseWriter.WriteHeader(c)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.code == 0 {
		w.code = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// handle is the one error boundary per request.
func (s *server) handle(route string, fn func(http.ResponseWriter, *http.Request) error) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sw := &statusWriter{ResponseWriter: w}
		if err := fn(sw, r); err != nil {
			s.writeError(sw, r, err)
		}
		s.req.Inc(route, strconv.Itoa(sw.code))
	})
}

func (s *server) writeError(w http.ResponseWriter, r *http.Request, err error) {
	code, msg, reason := http.StatusInternalServerError, "internal error", ""
	force, refusal, retry := false, "", time.Duration(0)
	var he *HTTPError
	le, isLaunch := launchError(err)
	ve, isVersion := versionStateError(err)
	switch {
	case isLaunch:
		code, msg, reason, retry = le.Code, le.Msg, le.Reason, le.RetryAfter
	case isVersion:
		code, msg, reason = ve.Code, ve.Msg, ve.Reason
	case errors.As(err, &he):
		code, msg, reason = he.Code, he.Msg, he.Reason
		force, refusal, retry = he.ForceRequired, he.Refusal, he.RetryAfter
		if he.Err != nil && code < 500 {
			msg = he.Error()
		}
	case errors.Is(err, store.ErrNotFound):
		code, msg = http.StatusNotFound, err.Error()
	case errors.Is(err, store.ErrExists):
		code, msg = http.StatusConflict, err.Error()
	case errors.Is(err, engine.ErrNothingPending):
		code, msg = http.StatusConflict, "no EK awaits approval for this host"
	case errors.Is(err, engine.ErrPendingMismatch):
		code, msg = http.StatusConflict, err.Error()
	}
	if retry > 0 {
		w.Header().Set("Retry-After", strconv.FormatInt(retryAfterSeconds(retry), 10))
	}
	if code >= 500 {
		s.log.Error("request failed", "request_id", requestID(r), "method", r.Method, "path", r.URL.Path, "error", err)
	}
	writeJSON(w, code, attestapi.ErrorEnvelope{Error: attestapi.Error{
		Code: code, Title: http.StatusText(code), Message: msg, Reason: reason, ForceRequired: force, Refusal: refusal, RequestID: requestID(r),
	}})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

const maxBody = 4 << 20

func readBody(r *http.Request) ([]byte, error) {
	b, err := io.ReadAll(http.MaxBytesReader(nil, r.Body, maxBody))
	if err != nil {
		return nil, httpErr(http.StatusRequestEntityTooLarge, "request body too large or unreadable", err)
	}
	return b, nil
}

func decodeJSON(r *http.Request, v any) error {
	b, err := readBody(r)
	if err != nil {
		return err
	}
	return decodeJSONBytes(b, v)
}

// decodeJSONBytes decodes a request body; its errors never name Go types.
func decodeJSONBytes(b []byte, v any) error {
	if err := jsondecode.Strict(b, v); err != nil {
		return httpErr(http.StatusBadRequest, "bad request body", err)
	}
	return nil
}

// queryParams returns r's query parameters after checking that each is one of
// allowed and given at most once: nothing a client sends is silently ignored.
func queryParams(r *http.Request, allowed ...string) (url.Values, error) {
	q, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		return nil, httpErr(http.StatusBadRequest, "malformed query string", err)
	}
	for k, vs := range q {
		switch {
		case !slices.Contains(allowed, k):
			if len(allowed) == 0 {
				return nil, httpErr(http.StatusBadRequest, fmt.Sprintf("unknown query parameter %q: this request takes none", k), nil)
			}
			return nil, httpErr(http.StatusBadRequest, fmt.Sprintf("unknown query parameter %q (accepted: %s)", k, strings.Join(allowed, ", ")), nil)
		case len(vs) > 1:
			return nil, httpErr(http.StatusBadRequest, fmt.Sprintf("query parameter %q given %d times", k, len(vs)), nil)
		}
	}
	return q, nil
}

// limitParam reads the optional "limit" query parameter: 1 to maxLimit, def
// when absent.
func limitParam(q url.Values, def, maxLimit int) (int, error) {
	if !q.Has("limit") {
		return def, nil
	}
	v := q.Get("limit")
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > maxLimit {
		return 0, httpErr(http.StatusBadRequest, fmt.Sprintf("limit must be an integer from 1 to %d, not %q", maxLimit, v), nil)
	}
	return n, nil
}

// authorize enforces rule; for admin changes (audit non-empty) a denial is
// audited too.
func (s *server) authorize(r *http.Request, rule string, target map[string]any) error {
	auth, ok := authtoken.FromContext(r.Context())
	if !ok || !auth.Confirmed {
		return httpErr(http.StatusUnauthorized, "authentication required", nil)
	}
	if target == nil {
		target = map[string]any{}
	}
	allowed, err := s.cfg.Policy.Authorize(rule, target, auth.PolicyCredentials())
	if err != nil {
		s.log.Error("policy evaluation failed", "rule", rule, "error", err)
	}
	if !allowed {
		return httpErr(http.StatusForbidden, fmt.Sprintf("policy does not allow %s to be performed", rule), nil)
	}
	return nil
}

// admin runs an admin change: policy check, the change, and an audit record
// of the outcome.
func (s *server) admin(r *http.Request, rule, action, target string, fn func() (detail string, err error)) error {
	rec := store.AuditRecord{At: time.Now(), RequestID: requestID(r), Action: action, Target: target}
	if auth, ok := authtoken.FromContext(r.Context()); ok && auth.User != nil {
		rec.UserID, rec.ProjectID = auth.User.UserID, auth.User.ProjectID
	}
	err := s.authorize(r, rule, map[string]any{"target": target})
	if err != nil {
		rec.Outcome = "denied"
	} else {
		rec.Detail, err = fn()
		rec.Outcome = "success"
		if err != nil {
			rec.Outcome = "failure"
			if rec.Detail == "" {
				rec.Detail = err.Error()
			}
		}
	}
	if aerr := s.cfg.Store.AddAudit(context.WithoutCancel(r.Context()), rec); aerr != nil {
		s.log.Error("cannot write audit record", "request_id", rec.RequestID, "action", action, "error", aerr)
		if err == nil {
			// An admin change that cannot be audited is reported as failed.
			return httpErr(http.StatusInternalServerError, "internal error", aerr)
		}
	}
	s.log.Info("admin change", "request_id", rec.RequestID, "action", action, "target", target, "outcome", rec.Outcome, "user_id", rec.UserID)
	return err
}

func (s *server) healthz(w http.ResponseWriter, r *http.Request) error {
	if s.cfg.Health != nil {
		if err := s.cfg.Health(r.Context()); err != nil {
			s.log.Warn("health check failed", "error", err)
			writeJSON(w, http.StatusServiceUnavailable, attestapi.Health{Status: "unhealthy", Problem: err.Error()})
			return nil
		}
	}
	writeJSON(w, http.StatusOK, attestapi.Health{Status: "ok"})
	return nil
}

func (s *server) metrics(w http.ResponseWriter, r *http.Request) error {
	w.Header().Set("Content-Type", metrics.ContentType)
	return s.cfg.Metrics.Write(w)
}

func (s *server) keys(w http.ResponseWriter, r *http.Request) error {
	keys := attestapi.Keys{VerdictKeys: []attestapi.VerdictKey{{
		KID: s.cfg.KID, Algorithm: "Ed25519", PublicKeyPEM: string(s.cfg.PublicKeyPEM),
	}}, LaunchKeys: []attestapi.LaunchKey{}, PolicyKeys: []attestapi.PolicyKey{}}
	if s.cfg.OtherKeys != nil {
		keys.VerdictKeys = append(keys.VerdictKeys, s.cfg.OtherKeys()...)
	}
	if s.cfg.Launches != nil {
		keys.LaunchKeys = append(keys.LaunchKeys, attestapi.NewLaunchKey(s.cfg.Launches.PublicKey()))
		if pk := s.cfg.Launches.PolicyPublicKey(); pk != nil {
			keys.PolicyKeys = append(keys.PolicyKeys, attestapi.PolicyKey{KID: pk.KID(), Algorithm: policykey.Algorithm,
				PublicKeyPEM: string(pk.MarshalPEM()), Fingerprint: pk.Fingerprint(), TPMName: hex.EncodeToString(pk.TPMName())})
		}
	}
	writeJSON(w, http.StatusOK, keys)
	return nil
}

// apiUpdated is when the v1 API last changed (discovery's "updated").
var apiUpdated = time.Date(2026, 11, 26, 0, 0, 0, 0, time.UTC)

// versions is the version discovery document. Its links are built on
// Config.PublicEndpoint, as OpenStack services build theirs on a configured
// public endpoint; without one they point at the address the client used
// (its Host header, which any client can set to another site's address).
func (s *server) versions(w http.ResponseWriter, r *http.Request) error {
	if _, err := queryParams(r); err != nil {
		return err
	}
	base := strings.TrimSuffix(s.cfg.PublicEndpoint, "/") + "/" + attestapi.Version + "/"
	if s.cfg.PublicEndpoint == "" {
		scheme := "http"
		if r.TLS != nil {
			scheme = "https"
		}
		base = (&url.URL{Scheme: scheme, Host: r.Host, Path: "/" + attestapi.Version + "/"}).String()
	}
	writeJSON(w, http.StatusOK, attestapi.Versions{Versions: []attestapi.VersionInfo{{
		ID: attestapi.Version, Status: attestapi.StatusCurrent, Updated: apiUpdated,
		Links: []attestapi.Link{{Rel: "self", Href: base}},
	}}})
	return nil
}
