// Package api is the attestation service's REST API (docs/ARCHITECTURE.md, "REST API"):
// hosts, profiles, public keys, health and metrics. Every /v1 route except
// /v1/keys sits behind Keystone token authentication (keystone-auth's
// authtoken middleware, passed in as Config.Auth) and an oslo.policy rule
// (Rules, overridable in policy.yaml). Admin changes are written to the
// audit log whatever their outcome (denied ones too). Errors are a JSON
// envelope {"error": {"code", "title", "message", "request_id"}}; the request
// id is also in the X-Openstack-Request-Id header. 5xx answers carry a generic
// message; the detail is logged once with the request id.
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
	"strconv"
	"time"

	"github.com/trustpool/trustpool/attestation-service/internal/engine"
	"github.com/trustpool/trustpool/attestation-service/internal/metrics"
	"github.com/trustpool/trustpool/attestation-service/internal/store"
	"github.com/trustpool/trustpool/keystone-auth/authtoken"
	kpolicy "github.com/trustpool/trustpool/keystone-auth/policy"
)

// Rule names.
const (
	RuleHostsList     = "trustpool:hosts:list"
	RuleHostsGet      = "trustpool:hosts:get"
	RuleHostsHistory  = "trustpool:hosts:history"
	RuleHostsAttest   = "trustpool:hosts:attest"
	RuleHostsDelete   = "trustpool:hosts:delete"
	RuleHostsApprove  = "trustpool:hosts:approve"
	RuleHostsProfiles = "trustpool:hosts:update_profiles"
	RuleProfilesRead  = "trustpool:profiles:read"
	RuleProfilesWrite = "trustpool:profiles:write"
	RuleAuditRead     = "trustpool:audit:read"
)

// Rules are the policy defaults: admin manages hosts and profiles; readers
// (and admins) see hosts and profiles.
func Rules() []kpolicy.RuleDefault {
	op := func(m, p string) []kpolicy.Operation { return []kpolicy.Operation{{Method: m, Path: p}} }
	return []kpolicy.RuleDefault{
		{Name: "admin_required", CheckStr: "role:admin", Description: "Administrators of the attestation service."},
		{Name: "reader_or_admin", CheckStr: "role:reader or role:admin", Description: "Read-only users and administrators."},
		{Name: RuleHostsList, CheckStr: "rule:reader_or_admin", Description: "List hosts and their verdicts.", Operations: op("GET", "/v1/hosts")},
		{Name: RuleHostsGet, CheckStr: "rule:reader_or_admin", Description: "Show a host, its verdict and last evidence summary.", Operations: op("GET", "/v1/hosts/{host}")},
		{Name: RuleHostsHistory, CheckStr: "rule:reader_or_admin", Description: "Show a host's verdict history.", Operations: op("GET", "/v1/hosts/{host}/history")},
		{Name: RuleHostsAttest, CheckStr: "rule:admin_required", Description: "Attest a host now.", Operations: op("POST", "/v1/hosts/{host}/attest")},
		{Name: RuleHostsDelete, CheckStr: "rule:admin_required", Description: "Delete a host.", Operations: op("DELETE", "/v1/hosts/{host}")},
		{Name: RuleHostsApprove, CheckStr: "rule:admin_required", Description: "Approve a host's pending EK.", Operations: op("POST", "/v1/hosts/{host}/approve")},
		{Name: RuleHostsProfiles, CheckStr: "rule:admin_required", Description: "Assign required profiles to a host.", Operations: op("PUT", "/v1/hosts/{host}/profiles")},
		{Name: RuleProfilesRead, CheckStr: "rule:reader_or_admin", Description: "List, show and export profiles.", Operations: []kpolicy.Operation{
			{Method: "GET", Path: "/v1/profiles"}, {Method: "GET", Path: "/v1/profiles/{name}"}, {Method: "GET", Path: "/v1/profiles/export"}}},
		{Name: RuleProfilesWrite, CheckStr: "rule:admin_required", Description: "Create, update, delete, import and learn profiles.", Operations: []kpolicy.Operation{
			{Method: "POST", Path: "/v1/profiles"}, {Method: "PUT", Path: "/v1/profiles/{name}"}, {Method: "DELETE", Path: "/v1/profiles/{name}"},
			{Method: "POST", Path: "/v1/profiles/import"}, {Method: "POST", Path: "/v1/profiles/learn"}}},
		{Name: RuleAuditRead, CheckStr: "rule:admin_required", Description: "Read the audit log.", Operations: op("GET", "/v1/audit")},
	}
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
	// Health reports problems for /healthz (nil: healthy).
	Health func(ctx context.Context) error
	// Trigger asks for an immediate attestation.
	Trigger func(host string)
}

type server struct {
	cfg Config
	log *slog.Logger
	req *metrics.Counter
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
	open := http.NewServeMux()
	open.Handle("GET /healthz", s.handle("healthz", s.healthz))
	open.Handle("GET /metrics", s.handle("metrics", s.metrics))
	open.Handle("GET /v1/keys", s.handle("keys", s.keys))

	authed := http.NewServeMux()
	authed.Handle("GET /v1/hosts", s.handle("hosts.list", s.listHosts))
	authed.Handle("GET /v1/hosts/{host}", s.handle("hosts.get", s.getHost))
	authed.Handle("GET /v1/hosts/{host}/history", s.handle("hosts.history", s.history))
	authed.Handle("POST /v1/hosts/{host}/attest", s.handle("hosts.attest", s.attestNow))
	authed.Handle("DELETE /v1/hosts/{host}", s.handle("hosts.delete", s.deleteHost))
	authed.Handle("POST /v1/hosts/{host}/approve", s.handle("hosts.approve", s.approve))
	authed.Handle("PUT /v1/hosts/{host}/profiles", s.handle("hosts.profiles", s.setHostProfiles))
	authed.Handle("GET /v1/profiles", s.handle("profiles.list", s.listProfiles))
	authed.Handle("POST /v1/profiles", s.handle("profiles.create", s.createProfile))
	authed.Handle("GET /v1/profiles/export", s.handle("profiles.export", s.exportProfiles))
	authed.Handle("POST /v1/profiles/import", s.handle("profiles.import", s.importProfiles))
	authed.Handle("POST /v1/profiles/learn", s.handle("profiles.learn", s.learnProfile))
	authed.Handle("GET /v1/profiles/{name}", s.handle("profiles.get", s.getProfile))
	authed.Handle("PUT /v1/profiles/{name}", s.handle("profiles.update", s.updateProfile))
	authed.Handle("DELETE /v1/profiles/{name}", s.handle("profiles.delete", s.deleteProfile))
	authed.Handle("GET /v1/audit", s.handle("audit", s.audit))
	authed.Handle("/", s.handle("not_found", func(w http.ResponseWriter, r *http.Request) error {
		return httpErr(http.StatusNotFound, "no such resource", nil)
	}))
	var protected http.Handler = authed
	if cfg.Auth != nil {
		protected = cfg.Auth(authed)
	}
	open.Handle("/", protected)
	return withRequestID(open)
}

// HTTPError is an error with an HTTP status.
type HTTPError struct {
	Code int
	Msg  string
	Err  error
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
	code, msg := http.StatusInternalServerError, "internal error"
	var he *HTTPError
	switch {
	case errors.As(err, &he):
		code, msg = he.Code, he.Msg
		if he.Err != nil && code < 500 {
			msg = he.Error()
		}
	case errors.Is(err, store.ErrNotFound):
		code, msg = http.StatusNotFound, err.Error()
	case errors.Is(err, store.ErrExists):
		code, msg = http.StatusConflict, err.Error()
	}
	if code >= 500 {
		s.log.Error("request failed", "request_id", requestID(r), "method", r.Method, "path", r.URL.Path, "error", err)
	}
	writeJSON(w, code, map[string]any{"error": map[string]any{
		"code": code, "title": http.StatusText(code), "message": msg, "request_id": requestID(r),
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
	dec := json.NewDecoder(bytesReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return httpErr(http.StatusBadRequest, "malformed JSON body", err)
	}
	return nil
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
			writeJSON(w, http.StatusServiceUnavailable, map[string]any{"status": "unhealthy", "problem": err.Error()})
			return nil
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{"status": "ok"})
	return nil
}

func (s *server) metrics(w http.ResponseWriter, r *http.Request) error {
	w.Header().Set("Content-Type", metrics.ContentType)
	return s.cfg.Metrics.Write(w)
}

func (s *server) keys(w http.ResponseWriter, r *http.Request) error {
	writeJSON(w, http.StatusOK, map[string]any{"verdict_keys": []map[string]any{{
		"kid": s.cfg.KID, "algorithm": "Ed25519", "public_key_pem": string(s.cfg.PublicKeyPEM),
	}}})
	return nil
}

func jsonDecoder(b []byte) *json.Decoder {
	dec := json.NewDecoder(bytesReader(b))
	dec.DisallowUnknownFields()
	return dec
}
