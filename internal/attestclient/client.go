// Package attestclient is the Go client of the attestation service's REST
// API: one method per route, requests and answers typed by package
// attestapi. The trustpool CLI uses it; so can tests and other tools.
//
// Authentication is the caller's: pass an *http.Client whose transport adds
// the Keystone token (keystone-auth/credentials' Provider.RoundTripper
// does, and re-authenticates after a 401). An answer outside 2xx becomes an
// *Error carrying the API's error envelope and the request id; a transport
// failure is returned wrapped, so callers can tell "the service said no"
// from "the service could not be reached". The package does not log.
package attestclient

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/trustpool/trustpool/internal/attestapi"
)

// maxBody bounds what is read of any answer (profile exports are the
// largest).
const maxBody = 64 << 20

// Error is an answer outside 2xx.
type Error struct {
	// StatusCode is the HTTP status.
	StatusCode int
	// Method and URL name the request.
	Method, URL string
	// API is the error envelope's content; Message is empty when the body
	// was not an envelope (e.g. a proxy's error page).
	API attestapi.Error
	// RequestID is the X-Openstack-Request-Id of the answer.
	RequestID string
}

func (e *Error) Error() string {
	msg := e.API.Message
	if msg == "" {
		msg = http.StatusText(e.StatusCode)
	}
	s := fmt.Sprintf("%s (HTTP %d)", msg, e.StatusCode)
	if e.RequestID != "" {
		s += " (Request-ID: " + e.RequestID + ")"
	}
	return s
}

// IsStatus reports whether err is an *Error with HTTP status code.
func IsStatus(err error, code int) bool {
	var e *Error
	return errors.As(err, &e) && e.StatusCode == code
}

// Client calls one attestation service.
type Client struct {
	base *url.URL
	http *http.Client
}

// New returns a client of the service at endpoint: its unversioned root
// (http://host:port, as the Keystone catalog lists it) or the versioned
// one (…/v1). httpClient nil means http.DefaultClient (no authentication).
func New(endpoint string, httpClient *http.Client) (*Client, error) {
	u, err := url.Parse(strings.TrimSpace(endpoint))
	if err != nil {
		return nil, fmt.Errorf("attestation endpoint %q: %w", endpoint, err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("attestation endpoint %q: want an http or https URL", endpoint)
	}
	u.Path = strings.TrimSuffix(strings.TrimSuffix(u.Path, "/"), "/"+attestapi.Version)
	u.RawPath, u.RawQuery, u.Fragment = "", "", ""
	if httpClient == nil {
		httpClient = http.DefaultClient
	}
	return &Client{base: u, http: httpClient}, nil
}

// Endpoint returns the service's unversioned root URL.
func (c *Client) Endpoint() string { return c.base.String() }

// request describes one call.
type request struct {
	method, path string
	query        url.Values
	// body is JSON-encoded unless it is []byte (sent as contentType).
	body        any
	contentType string
	// accept is the media type asked for (default JSON).
	accept string
	// out receives the JSON answer; a *[]byte receives the raw body.
	out any
}

func (c *Client) do(ctx context.Context, r request) error {
	u := *c.base
	u.Path = strings.TrimSuffix(u.Path, "/") + r.path
	if r.path == attestapi.PathVersions {
		u.Path = strings.TrimSuffix(u.Path, "/") + "/"
	}
	u.RawQuery = r.query.Encode()
	var body io.Reader
	ctype := r.contentType
	switch b := r.body.(type) {
	case nil:
	case []byte:
		body = bytes.NewReader(b)
	default:
		j, err := json.Marshal(b)
		if err != nil {
			return fmt.Errorf("encode %s %s body: %w", r.method, r.path, err)
		}
		body, ctype = bytes.NewReader(j), "application/json"
	}
	req, err := http.NewRequestWithContext(ctx, r.method, u.String(), body)
	if err != nil {
		return fmt.Errorf("%s %s: %w", r.method, r.path, err)
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	accept := r.accept
	if accept == "" {
		accept = "application/json"
	}
	req.Header.Set("Accept", accept)
	resp, err := c.http.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // its message repeats the method and URL
		}
		return fmt.Errorf("%s %s: %w", r.method, u.Redacted(), err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxBody+1))
	if err != nil {
		return fmt.Errorf("%s %s: read answer: %w", r.method, u.Redacted(), err)
	}
	if len(b) > maxBody {
		return fmt.Errorf("%s %s: answer larger than %d bytes", r.method, u.Redacted(), maxBody)
	}
	if resp.StatusCode/100 != 2 {
		return apiError(req, resp, b)
	}
	switch out := r.out.(type) {
	case nil:
		return nil
	case *[]byte:
		*out = b
		return nil
	default:
		if ct, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type")); ct != "application/json" {
			return fmt.Errorf("%s %s: answer is %q, not JSON", r.method, u.Redacted(), ct)
		}
		if err := json.Unmarshal(b, out); err != nil {
			return fmt.Errorf("%s %s: decode answer: %w", r.method, u.Redacted(), err)
		}
		return nil
	}
}

func apiError(req *http.Request, resp *http.Response, body []byte) error {
	e := &Error{StatusCode: resp.StatusCode, Method: req.Method, URL: req.URL.Redacted(),
		RequestID: resp.Header.Get(attestapi.HeaderRequestID)}
	var env attestapi.ErrorEnvelope
	if json.Unmarshal(body, &env) == nil && env.Error.Message != "" {
		e.API = env.Error
		if e.RequestID == "" {
			e.RequestID = env.Error.RequestID
		}
	} else if resp.StatusCode == http.StatusUnauthorized {
		// keystonemiddleware-style 401s come from the auth layer, before
		// the API writes its envelope.
		e.API.Message = "authentication required: the token is missing, invalid or expired"
	}
	return e
}

func limitQuery(limit int) url.Values {
	if limit <= 0 {
		return nil
	}
	return url.Values{attestapi.QueryLimit: {strconv.Itoa(limit)}}
}

// Versions returns the version discovery document (GET /, no token needed).
func (c *Client) Versions(ctx context.Context) (attestapi.Versions, error) {
	var out attestapi.Versions
	err := c.do(ctx, request{method: http.MethodGet, path: attestapi.PathVersions, out: &out})
	return out, err
}

// Health returns /healthz (no token needed). An unhealthy service answers
// 503, returned as *Error.
func (c *Client) Health(ctx context.Context) (attestapi.Health, error) {
	var out attestapi.Health
	err := c.do(ctx, request{method: http.MethodGet, path: attestapi.PathHealthz, out: &out})
	return out, err
}

// Keys returns the public keys (no token needed).
func (c *Client) Keys(ctx context.Context) (attestapi.Keys, error) {
	var out attestapi.Keys
	err := c.do(ctx, request{method: http.MethodGet, path: attestapi.PathKeys, out: &out})
	return out, err
}

// ListHosts returns every host, sorted by name.
func (c *Client) ListHosts(ctx context.Context) ([]attestapi.Host, error) {
	var out attestapi.HostList
	err := c.do(ctx, request{method: http.MethodGet, path: attestapi.PathHosts, out: &out})
	return out.Hosts, err
}

// GetHost returns one host with its last attestation.
func (c *Client) GetHost(ctx context.Context, host string) (attestapi.Host, error) {
	var out attestapi.HostBody
	err := c.do(ctx, request{method: http.MethodGet, path: attestapi.HostPath(host), out: &out})
	return out.Host, err
}

// History returns a host's verdict changes, newest first (limit 0: the
// service's default).
func (c *Client) History(ctx context.Context, host string, limit int) (attestapi.History, error) {
	var out attestapi.History
	err := c.do(ctx, request{method: http.MethodGet, path: attestapi.HostPath(host, attestapi.HostHistory),
		query: limitQuery(limit), out: &out})
	return out, err
}

// Attest asks for an attestation round of host now.
func (c *Client) Attest(ctx context.Context, host string) (attestapi.AttestScheduled, error) {
	var out attestapi.AttestScheduled
	err := c.do(ctx, request{method: http.MethodPost, path: attestapi.HostPath(host, attestapi.HostAttest), out: &out})
	return out, err
}

// DeleteHost deletes a host (it turns unknown for the shims first).
func (c *Client) DeleteHost(ctx context.Context, host string) error {
	return c.do(ctx, request{method: http.MethodDelete, path: attestapi.HostPath(host)})
}

// ApproveEK binds a host's pending EK.
func (c *Client) ApproveEK(ctx context.Context, host string, d attestapi.EKDecision) (attestapi.Approved, error) {
	var out attestapi.Approved
	err := c.do(ctx, request{method: http.MethodPost, path: attestapi.HostPath(host, attestapi.HostApprove), body: d, out: &out})
	return out, err
}

// RejectEK drops a host's pending EK and refuses it from then on.
func (c *Client) RejectEK(ctx context.Context, host string, d attestapi.EKDecision) (attestapi.Rejected, error) {
	var out attestapi.Rejected
	err := c.do(ctx, request{method: http.MethodPost, path: attestapi.HostPath(host, attestapi.HostReject), body: d, out: &out})
	return out, err
}

// SetRequiredProfiles assigns a host's required profiles (see
// attestapi.RequiredProfiles for nil and empty). Without force the service
// refuses (409) an assignment that a trusted host does not satisfy.
func (c *Client) SetRequiredProfiles(ctx context.Context, host string, profiles []string, force bool) (attestapi.RequiredProfiles, error) {
	var out attestapi.RequiredProfiles
	err := c.do(ctx, request{method: http.MethodPut, path: attestapi.HostPath(host, attestapi.HostProfiles),
		query: forceQuery(force), body: attestapi.RequiredProfiles{Profiles: profiles}, out: &out})
	return out, err
}

func forceQuery(force bool) url.Values {
	if !force {
		return nil
	}
	return url.Values{attestapi.QueryForce: {"true"}}
}

// ListProfiles returns every profile.
func (c *Client) ListProfiles(ctx context.Context) ([]attestapi.ProfileBody, error) {
	var out attestapi.ProfileList
	err := c.do(ctx, request{method: http.MethodGet, path: attestapi.PathProfiles, out: &out})
	return out.Profiles, err
}

// GetProfile returns one profile.
func (c *Client) GetProfile(ctx context.Context, name string) (attestapi.ProfileBody, error) {
	var out attestapi.ProfileBody
	err := c.do(ctx, request{method: http.MethodGet, path: attestapi.ProfilePath(name), out: &out})
	return out, err
}

// CreateProfile creates a profile (409 when the name exists).
func (c *Client) CreateProfile(ctx context.Context, p attestapi.Profile) (attestapi.ProfileBody, error) {
	var out attestapi.ProfileBody
	err := c.do(ctx, request{method: http.MethodPost, path: attestapi.PathProfiles, body: p, out: &out})
	return out, err
}

// ReplaceProfile replaces an existing profile.
func (c *Client) ReplaceProfile(ctx context.Context, p attestapi.Profile) (attestapi.ProfileBody, error) {
	var out attestapi.ProfileBody
	err := c.do(ctx, request{method: http.MethodPut, path: attestapi.ProfilePath(p.Name), body: p, out: &out})
	return out, err
}

// DeleteProfile deletes a profile. Without force the service refuses (409)
// to delete a profile that hosts rely on.
func (c *Client) DeleteProfile(ctx context.Context, name string, force bool) error {
	return c.do(ctx, request{method: http.MethodDelete, path: attestapi.ProfilePath(name), query: forceQuery(force)})
}

// ListProfileVersions returns a profile's versions, oldest first.
func (c *Client) ListProfileVersions(ctx context.Context, profile string) ([]attestapi.ProfileVersion, error) {
	var out attestapi.ProfileVersionList
	err := c.do(ctx, request{method: http.MethodGet, path: attestapi.ProfileVersionsPath(profile, 0), out: &out})
	return out.Versions, err
}

// GetProfileVersion returns one version of a profile.
func (c *Client) GetProfileVersion(ctx context.Context, profile string, version int) (attestapi.ProfileVersion, error) {
	var out attestapi.ProfileVersion
	err := c.do(ctx, request{method: http.MethodGet, path: attestapi.ProfileVersionsPath(profile, version), out: &out})
	return out, err
}

// CreateProfileVersion stores p as a new candidate version of the profile
// p.Name.
func (c *Client) CreateProfileVersion(ctx context.Context, p attestapi.Profile) (attestapi.ProfileVersion, error) {
	var out attestapi.ProfileVersion
	err := c.do(ctx, request{method: http.MethodPost, path: attestapi.ProfileVersionsPath(p.Name, 0), body: p, out: &out})
	return out, err
}

// SetProfileVersionState changes a version's rollout state.
// Without force the service refuses (409) a change that turns hosts
// untrusted.
func (c *Client) SetProfileVersionState(ctx context.Context, profile string, version int, s attestapi.VersionState, force bool) (attestapi.ProfileVersion, error) {
	var out attestapi.ProfileVersion
	err := c.do(ctx, request{method: http.MethodPost, path: attestapi.ProfileVersionsPath(profile, version) + "/state", body: s,
		query: forceQuery(force), out: &out})
	return out, err
}

// ExportProfiles returns every profile in the TOML profile file format.
func (c *Client) ExportProfiles(ctx context.Context) ([]byte, error) {
	var out []byte
	err := c.do(ctx, request{method: http.MethodGet, path: attestapi.PathProfilesExport, accept: attestapi.MediaTOML, out: &out})
	return out, err
}

// ImportProfiles creates or replaces every profile of a TOML profile file;
// the service validates the whole file before storing any.
func (c *Client) ImportProfiles(ctx context.Context, toml []byte) (attestapi.Imported, error) {
	var out attestapi.Imported
	err := c.do(ctx, request{method: http.MethodPost, path: attestapi.PathProfilesImport, body: toml,
		contentType: attestapi.MediaTOML, out: &out})
	return out, err
}

// LearnProfile builds a profile from a host's last verified evidence.
func (c *Client) LearnProfile(ctx context.Context, l attestapi.Learn) (attestapi.Learned, error) {
	var out attestapi.Learned
	err := c.do(ctx, request{method: http.MethodPost, path: attestapi.PathProfilesLearn, body: l, out: &out})
	return out, err
}

// Audit returns administrative changes, newest first (limit 0: the
// service's default).
func (c *Client) Audit(ctx context.Context, limit int) ([]attestapi.AuditRecord, error) {
	var out attestapi.AuditList
	err := c.do(ctx, request{method: http.MethodGet, path: attestapi.PathAudit, query: limitQuery(limit), out: &out})
	return out.Audit, err
}
