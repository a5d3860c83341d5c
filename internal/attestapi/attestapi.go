// Package attestapi is the wire contract of the attestation service's REST
// API (docs/ARCHITECTURE.md, "REST API"): paths, query parameters, and the
// JSON request and response bodies of every route, including the error
// envelope and the version discovery document. The service's handlers encode these types, the
// Go client (package attestclient) and the trustpool CLI decode them, and
// docs/api/openapi.yaml describes them; tests hold the router, the document
// and real responses to each other, so the four cannot drift apart.
//
// It imports only the standard library and the pure packages verdict and
// policy (profiles convert to and from policy.Profile), holds no logic beyond
// path building and that conversion, and logs nothing. Timestamps are RFC 3339 in UTC.
// Lists are never null on the wire: an empty list is [].
package attestapi

import (
	"net/url"
	"strconv"
	"time"

	"github.com/trustpool/trustpool/internal/verdict"
)

// Version is the API version the service implements: its routes live under
// "/" + Version.
const Version = "v1"

// Header names.
const (
	// HeaderAuthToken carries the caller's Keystone token.
	HeaderAuthToken = "X-Auth-Token" //nolint:gosec // a header name, not a credential
	// HeaderRequestID carries the id of every request, as OpenStack services
	// name it; the error envelope repeats it.
	HeaderRequestID = "X-Openstack-Request-Id"
)

// Media types besides application/json.
const (
	// MediaTOML is the profile file format (package policy), used by
	// export and import.
	MediaTOML = "application/toml"
	// MediaMetrics is the Prometheus text exposition format of /metrics.
	MediaMetrics = "text/plain; version=0.0.4; charset=utf-8"
)

// Paths of the routes that take no parameters.
const (
	PathVersions       = "/"
	PathHealthz        = "/healthz"
	PathMetrics        = "/metrics"
	PathKeys           = "/v1/keys"
	PathHosts          = "/v1/hosts"
	PathProfiles       = "/v1/profiles"
	PathProfilesExport = "/v1/profiles/export"
	PathProfilesImport = "/v1/profiles/import"
	PathProfilesLearn  = "/v1/profiles/learn"
	PathAudit          = "/v1/audit"
)

// HostPath returns /v1/hosts/{host}, followed by the sub-resource parts
// (e.g. "history"), with host escaped.
func HostPath(host string, sub ...string) string {
	p := PathHosts + "/" + url.PathEscape(host)
	for _, s := range sub {
		p += "/" + s
	}
	return p
}

// ProfilePath returns /v1/profiles/{name} with name escaped.
func ProfilePath(name string) string { return PathProfiles + "/" + url.PathEscape(name) }

// ProfileVersionsPath is a profile's versions collection; with version > 0,
// one version.
func ProfileVersionsPath(name string, version int) string {
	p := ProfilePath(name) + "/versions"
	if version > 0 {
		p += "/" + strconv.Itoa(version)
	}
	return p
}

// Host sub-resources and actions (HostPath's sub parts).
const (
	HostHistory  = "history"
	HostAttest   = "attest"
	HostApprove  = "approve"
	HostReject   = "reject"
	HostProfiles = "profiles"
)

// Query parameters.
const (
	// QueryLimit bounds history and audit lists.
	QueryLimit = "limit"
	// QueryForce deletes a profile that hosts still require.
	QueryForce = "force"
)

// Limits of QueryLimit.
const (
	DefaultHistoryLimit = 100
	DefaultAuditLimit   = 500
	MaxLimit            = 1000
)

// ErrorEnvelope is the body of every 4xx and 5xx answer.
type ErrorEnvelope struct {
	Error Error `json:"error"`
}

// Error describes a failed request. Message says what was wrong in the
// caller's terms; for 5xx it is generic and the detail is in the service log
// under RequestID.
type Error struct {
	Code    int    `json:"code"`
	Title   string `json:"title"`
	Message string `json:"message"`
	// Reason names, for some errors, the condition in a stable form (one of
	// the Reason* constants) that clients can act on; Message is for
	// people and may change.
	Reason string `json:"reason,omitempty"`
	// ForceRequired marks a refusal that the same request with force
	// overrides (force=true in the query, or "force": true in an EK
	// approval). Refusal then says what was refused without saying how to
	// override it, so that a client can name its own option for force.
	ForceRequired bool   `json:"force_required,omitempty"`
	Refusal       string `json:"refusal,omitempty"`
	RequestID     string `json:"request_id"`
}

// Reasons of errors (Error.Reason).
const (
	// ReasonEKBoundToOtherHost (409 on approve): the pending EK is bound
	// to another host, which the host's pending_ek_bound_to names;
	// approving with force moves it.
	ReasonEKBoundToOtherHost = "ek_bound_to_other_host"
	// ReasonProfileNotSatisfied (409 on setting a host's profiles): the
	// host is trusted but its latest evidence does not satisfy a profile
	// assigned; assigning with force makes it untrusted.
	ReasonProfileNotSatisfied = "profile_not_satisfied"
	// ReasonHostsRelyOnProfile (409 on deleting a profile): hosts rely on
	// the profile; deleting with force makes them untrusted.
	ReasonHostsRelyOnProfile = "hosts_rely_on_profile"
)

// Versions is the version discovery document at GET / (the shape Nova and
// Placement use: one entry per major version).
type Versions struct {
	Versions []VersionInfo `json:"versions"`
}

// VersionInfo describes one major version of the API.
type VersionInfo struct {
	// ID is "v1".
	ID string `json:"id"`
	// Status is CURRENT, SUPPORTED or DEPRECATED.
	Status string `json:"status"`
	// MinVersion and Version bound the microversions, as in Nova: "" while
	// the API has none.
	MinVersion string    `json:"min_version"`
	Version    string    `json:"version"`
	Updated    time.Time `json:"updated"`
	Links      []Link    `json:"links"`
}

// Link is a related resource.
type Link struct {
	Rel  string `json:"rel"`
	Href string `json:"href"`
	Type string `json:"type,omitempty"`
}

// Version statuses.
const (
	StatusCurrent = "CURRENT"
)

// Health is the body of /healthz.
type Health struct {
	// Status is "ok" (200) or "unhealthy" (503).
	Status string `json:"status"`
	// Problem names what is wrong when unhealthy.
	Problem string `json:"problem,omitempty"`
}

// Keys lists the service's public keys: GET /v1/keys.
type Keys struct {
	VerdictKeys []VerdictKey `json:"verdict_keys"`
	// LaunchKeys are the HPKE keys tenants seal launch requests to
	// (launch.go); empty when trusted launches are off.
	LaunchKeys []LaunchKey `json:"launch_keys"`
	// PolicyKeys are the keys that approve PCR states for launch secrets
	// sealed under TPM2_PolicyAuthorize; empty without one (secrets are
	// then sealed to the quoted PCR values alone).
	PolicyKeys []PolicyKey `json:"policy_keys"`
}

// PolicyKey is the service's policy-signing key.
type PolicyKey struct {
	KID string `json:"kid"`
	// Algorithm is "ECDSA P-256 SHA-256".
	Algorithm string `json:"algorithm"`
	// PublicKeyPEM is a PEM "PUBLIC KEY" (PKIX) block.
	PublicKeyPEM string `json:"public_key_pem"`
	// Fingerprint is hex SHA-256 of the PKIX DER key.
	Fingerprint string `json:"fingerprint"`
	// TPMName is the key's TPM name (hex): what sealed blobs'
	// TPM2_PolicyAuthorize names.
	TPMName string `json:"tpm_name"`
}

// VerdictKey is a public key that signs verdicts; shims and tenants pin it.
type VerdictKey struct {
	// KID is verdict.KeyID of the key.
	KID string `json:"kid"`
	// Algorithm is "Ed25519".
	Algorithm string `json:"algorithm"`
	// PublicKeyPEM is a PEM "PUBLIC KEY" (PKIX) block.
	PublicKeyPEM string `json:"public_key_pem"`
}

// HostList is GET /v1/hosts.
type HostList struct {
	Hosts []Host `json:"hosts"`
}

// HostBody wraps one host: GET /v1/hosts/{host}.
type HostBody struct {
	Host Host `json:"host"`
}

// Enrollment states of a host.
const (
	EnrollmentRegistered      = "registered"
	EnrollmentPendingApproval = "pending_approval"
	EnrollmentEnrolled        = "enrolled"
)

// Host is a compute host as the API shows it.
type Host struct {
	Name string `json:"name"`
	// Enrollment is one of the Enrollment* states.
	Enrollment string `json:"enrollment"`
	// RequiredProfiles are the profiles the host must satisfy: its assigned
	// ones when ProfilesAssigned, else the service's configured default.
	RequiredProfiles []string `json:"required_profiles"`
	ProfilesAssigned bool     `json:"profiles_assigned"`
	AgentVersion     string   `json:"agent_version,omitempty"`
	// EKFingerprint is the hex SHA-256 of the bound EK.
	EKFingerprint string `json:"ek_fingerprint,omitempty"`
	// PendingEKFingerprint is an EK awaiting an administrator's decision,
	// PendingReason why (approval_required, ek_changed,
	// ek_bound_to_other_host) and PendingEKBoundTo the host holding it.
	PendingEKFingerprint string     `json:"pending_ek_fingerprint,omitempty"`
	PendingReason        string     `json:"pending_reason,omitempty"`
	PendingEKBoundTo     string     `json:"pending_ek_bound_to,omitempty"`
	PendingSince         *time.Time `json:"pending_since,omitempty"`
	// RejectedEKFingerprint is the EK an administrator last rejected.
	RejectedEKFingerprint string    `json:"rejected_ek_fingerprint,omitempty"`
	CreatedAt             time.Time `json:"created_at"`
	// Verdict is the latest signed verdict; absent before the first one.
	Verdict *Verdict `json:"verdict,omitempty"`
	// LastAttestation summarises the latest round (GET /v1/hosts/{host}
	// only).
	LastAttestation *Attestation `json:"last_attestation,omitempty"`
}

// Verdict is the decoded latest verdict plus its signed form.
type Verdict struct {
	Status verdict.Status `json:"status"`
	// EffectiveStatus is what a relying party acts on now: Status while
	// unexpired, unknown from expires_at on.
	EffectiveStatus verdict.Status `json:"effective_status"`
	Profiles        []string       `json:"profiles"`
	// ProfileVersions name, per satisfied profile, the version the host
	// matched (also in the signed verdict from format 2 on; a service
	// pinned to format 1 signs verdicts without them).
	ProfileVersions map[string]int `json:"profile_versions,omitempty"`
	Reasons         []string       `json:"reasons"`
	VerifiedAt      time.Time      `json:"verified_at"`
	ExpiresAt       time.Time      `json:"expires_at"`
	Seq             uint64         `json:"seq"`
	// Signed is the verdict exactly as shims receive it; verify it with a
	// key from GET /v1/keys.
	Signed verdict.Signed `json:"signed"`
}

// Attestation summarises one attestation round.
type Attestation struct {
	At     time.Time      `json:"at"`
	Status verdict.Status `json:"status"`
	// Reasons say why the round did not end trusted.
	Reasons   []string `json:"reasons"`
	Reachable bool     `json:"reachable"`
	Verified  bool     `json:"verified"`
	Rebooted  bool     `json:"rebooted,omitempty"`
	// PCRs are the quoted SHA-256 values by index (hex).
	PCRs map[string]string `json:"pcrs,omitempty"`
	// Boot are the boot facts of the verified event log.
	Boot  map[string]string `json:"boot,omitempty"`
	Clock *Clock            `json:"clock,omitempty"`
	// IMANewEntries counts the IMA entries verified in this round, IMAOffset
	// is the list position reached.
	IMANewEntries  int    `json:"ima_new_entries,omitempty"`
	IMAOffset      int64  `json:"ima_offset,omitempty"`
	EvidenceDigest string `json:"evidence_digest,omitempty"`
	// Profiles is the evaluation of every defined profile.
	Profiles   []ProfileResult `json:"profiles,omitempty"`
	DurationMS float64         `json:"duration_ms"`
}

// Clock is the TPM clock information of a quote.
type Clock struct {
	Clock        uint64 `json:"clock"`
	ResetCount   uint32 `json:"reset_count"`
	RestartCount uint32 `json:"restart_count"`
	Safe         bool   `json:"safe"`
}

// ProfileResult is one profile's evaluation in a round.
type ProfileResult struct {
	Profile string `json:"profile"`
	// Version is the profile version the host matched (Pass), or the one
	// that failed when only one could match; 0 when several failed.
	Version int      `json:"version,omitempty"`
	Pass    bool     `json:"pass"`
	Reasons []string `json:"reasons,omitempty"`
	// IMAReasons are the Reasons caused by IMA entries.
	IMAReasons []string `json:"ima_reasons,omitempty"`
}

// History is GET /v1/hosts/{host}/history: verdict changes, newest first.
type History struct {
	Host    string         `json:"host"`
	History []HistoryEntry `json:"history"`
}

// HistoryEntry is one verdict change.
type HistoryEntry struct {
	Host           string         `json:"host"`
	At             time.Time      `json:"at"`
	Status         verdict.Status `json:"status"`
	Reasons        []string       `json:"reasons"`
	Profiles       []string       `json:"profiles"`
	Seq            uint64         `json:"seq"`
	EvidenceDigest string         `json:"evidence_digest,omitempty"`
}

// AttestScheduled is the answer to POST /v1/hosts/{host}/attest (202): the
// round runs in the background; its verdict is the first one of the host
// verified at or after RequestedAt.
type AttestScheduled struct {
	Host string `json:"host"`
	// Attestation is "scheduled".
	Attestation string    `json:"attestation"`
	RequestedAt time.Time `json:"requested_at"`
}

// EKDecision is the optional body of approve and reject.
type EKDecision struct {
	// EKFingerprint, when set, must name the pending EK (the one the
	// administrator reviewed): 64 hex digits.
	EKFingerprint string `json:"ek_fingerprint,omitempty"`
	// Force (approve only) moves an EK bound to another host.
	Force bool `json:"force,omitempty"`
}

// Approved is the answer to POST /v1/hosts/{host}/approve.
type Approved struct {
	Host          string `json:"host"`
	Approved      bool   `json:"approved"`
	EKFingerprint string `json:"ek_fingerprint"`
	// MovedFrom names the host that held the EK (Force).
	MovedFrom string `json:"moved_from,omitempty"`
}

// Rejected is the answer to POST /v1/hosts/{host}/reject.
type Rejected struct {
	Host          string `json:"host"`
	Rejected      bool   `json:"rejected"`
	EKFingerprint string `json:"ek_fingerprint"`
}

// RequiredProfiles is the body of PUT /v1/hosts/{host}/profiles and its
// answer. Profiles nil (JSON null) returns the host to the service's
// configured default; [] requires no particular profile (any defined profile
// that passes will do).
type RequiredProfiles struct {
	Host     string   `json:"host,omitempty"`
	Profiles []string `json:"profiles"`
}

// Profile is an attestation profile: the profile file format's keys
// (package policy) in JSON.
type Profile struct {
	Name        string              `json:"name"`
	Description string              `json:"description,omitempty"`
	Facts       map[string][]string `json:"facts,omitempty"`
	PCRs        map[string][]string `json:"pcrs,omitempty"`
	IMA         *IMARules           `json:"ima,omitempty"`
}

// IMARules appraise IMA entries.
type IMARules struct {
	AllowViolations bool                `json:"allow_violations"`
	Exclude         []string            `json:"exclude,omitempty"`
	Allowlist       map[string][]string `json:"allowlist,omitempty"`
}

// ProfileBody wraps one profile: the answer of GET, POST and PUT on
// profiles and of learn.
type ProfileBody struct {
	Profile Profile `json:"profile"`
	// UpdatedAt is when the profile was last stored.
	UpdatedAt *time.Time `json:"updated_at,omitempty"`
	// Version is the approved version holding the document: in a show or
	// list, the latest approved one (whose document the flat view is); in
	// the answer of a create or update, the one the write created, or,
	// when the document was unchanged, the latest approved one.
	Version int `json:"version,omitempty"`
	// RetiredVersion is the version an update replaced and retired.
	RetiredVersion int `json:"retired_version,omitempty"`
	// Unchanged: the update's document equals the stored one; no
	// version was created.
	Unchanged bool `json:"unchanged,omitempty"`
}

// ProfileList is GET /v1/profiles.
type ProfileList struct {
	Profiles []ProfileBody `json:"profiles"`
}

// Imported is the answer to POST /v1/profiles/import.
type Imported struct {
	Imported []string `json:"imported"`
	// Profiles says, in file order, what the import did to each
	// profile's versions.
	Profiles []ImportedProfile `json:"profiles"`
}

// ImportedProfile is what an import did to one profile: Version is the
// approved version now holding its document (1 for a new profile, a new
// version for a changed one, the latest approved one when Unchanged) and
// RetiredVersion the version a changed profile's update retired.
type ImportedProfile struct {
	Name           string `json:"name"`
	Version        int    `json:"version"`
	RetiredVersion int    `json:"retired_version,omitempty"`
	Created        bool   `json:"created,omitempty"`
	Unchanged      bool   `json:"unchanged,omitempty"`
}

// Learn is the body of POST /v1/profiles/learn: build profile Name from
// Host's last verified evidence, or, with EventLog instead of Host, from a
// firmware event log alone (reference values computed offline, e.g. from
// a build pipeline's log: the PCRs 0-9 it replays to and its boot facts).
//
// PCRs and Facts tell nil (absent: the defaults) from empty (an explicit
// [], none): omitzero leaves out only nil.
type Learn struct {
	Host string `json:"host,omitempty"`
	// EventLog is a TCG firmware event log (binary_bios_measurements),
	// base64 in JSON; it excludes Host and IMA.
	EventLog    []byte `json:"event_log,omitempty"`
	Name        string `json:"name"`
	Description string `json:"description,omitempty"`
	// PCRs to take (nil: 0 to 7; empty: only the PCRs the facts are read
	// from).
	PCRs []int `json:"pcrs,omitzero"`
	// Facts to take (nil: secure_boot, bootloader, kernel, initrd and
	// kernel_cmdline; empty: no boot facts, a profile of PCRs alone).
	Facts []string `json:"facts,omitzero"`
	// SkipFactPCRs stops the service from also pinning the PCRs the learned
	// facts are read from (the facts are then not trustworthy: Warnings
	// says so).
	SkipFactPCRs bool `json:"skip_fact_pcrs,omitempty"`
	// Merge adds the learned values to an existing profile of that name
	// (rollouts) instead of failing with 409.
	Merge bool `json:"merge,omitempty"`
	// NewVersion stores the learned profile as a new candidate version of
	// the existing profile Name (404 when there is none) instead of
	// creating the profile; it excludes Merge.
	NewVersion bool `json:"new_version,omitempty"`
	// IMA also learns an IMA allowlist: every file of the host's IMA log
	// since boot, with its digest, from a new quote verified from
	// scratch (needs Host).
	IMA bool `json:"ima,omitempty"`
	// IMAExclude are the learned IMA rules' exclusions ("dir/" prefixes or
	// path.Match globs); excluded files are not put in the allowlist.
	IMAExclude []string `json:"ima_exclude,omitempty"`
}

// Learned is the answer to POST /v1/profiles/learn: the profile stored
// and what was pinned for its facts.
type Learned struct {
	Profile   Profile    `json:"profile"`
	UpdatedAt *time.Time `json:"updated_at,omitempty"`
	// FactPCRs lists, by PCR index, the learned facts read from that PCR's
	// events; those PCRs are pinned too.
	FactPCRs map[string][]string `json:"fact_pcrs"`
	// AddedPCRs are the PCRs of FactPCRs that Learn.PCRs did not ask for.
	AddedPCRs []int `json:"added_pcrs"`
	// Warnings name learned facts that are not trustworthy because the
	// PCRs they are read from are not pinned (SkipFactPCRs).
	Warnings []string `json:"warnings,omitempty"`
	// Version is the candidate version stored (Learn.NewVersion), else
	// the approved version now holding the profile (as in ProfileBody).
	Version int `json:"version,omitempty"`
	// RetiredVersion is the version a merge replaced and retired.
	RetiredVersion int `json:"retired_version,omitempty"`
	// Unchanged: the merge added nothing; no version was created.
	Unchanged bool `json:"unchanged,omitempty"`
}

// Profile version states.
const (
	VersionCandidate = "candidate"
	VersionCanary    = "canary"
	VersionApproved  = "approved"
	VersionRetired   = "retired"
)

// ProfileVersion is one version of a profile: GET
// /v1/profiles/{name}/versions/{version}, and the answer of creating one
// or changing its state.
type ProfileVersion struct {
	// ProfileName and Version name the version.
	ProfileName string `json:"profile_name"`
	Version     int    `json:"version"`
	// State is candidate (accepted nowhere), canary (accepted on Hosts
	// and on the Fraction of hosts it selects, only), approved (accepted
	// everywhere) or retired (accepted nowhere, for good).
	State string   `json:"state"`
	Hosts []string `json:"hosts,omitempty"`
	// Fraction is a canary's share of hosts (absent: none).
	Fraction float64 `json:"fraction,omitempty"`
	// InCanary, for a canary, are the enrolled hosts it is accepted on
	// now: named, or selected by the fraction.
	InCanary []string `json:"in_canary,omitempty"`
	// Source says where the version came from.
	Source    string    `json:"source"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
	// Profile is the version's reference values.
	Profile Profile `json:"profile"`
}

// ProfileVersionList is GET /v1/profiles/{name}/versions, oldest first.
type ProfileVersionList struct {
	Versions []ProfileVersion `json:"versions"`
}

// VersionState is the body of POST
// /v1/profiles/{name}/versions/{version}/state.
type VersionState struct {
	// State is the new state; Hosts the hosts a canary is accepted on and
	// Fraction, in (0, 1], the share of hosts it is also accepted on (only
	// with state canary, which needs at least one of them). A host is in
	// the canary when named or selected: the first 8 bytes of
	// SHA-256(profile NUL version NUL host name) as a big-endian uint64
	// are below Fraction·2^64, so raising the fraction only adds hosts.
	State    string   `json:"state"`
	Hosts    []string `json:"hosts,omitempty"`
	Fraction *float64 `json:"fraction,omitempty"`
	// From, when set, is the state the caller saw: the change is refused
	// (409, reason state_changed) when the version is no longer in it.
	From string `json:"from,omitempty"`
}

// Reasons of a refused version state change (Error.Reason).
const (
	ReasonInvalidTransition   = "invalid_transition"
	ReasonLastApprovedVersion = "last_approved_version"
	ReasonStateChanged        = "state_changed"
	ReasonCanaryNeedsHosts    = "canary_needs_hosts"
	ReasonHostsOnlyForCanary  = "hosts_only_for_canary"
	ReasonFractionOnlyCanary  = "fraction_only_for_canary"
	ReasonInvalidFraction     = "invalid_fraction"
	ReasonUnknownState        = "unknown_state"
	ReasonUnknownHost         = "unknown_host"
	ReasonHostsRelyOnVersion  = "hosts_rely_on_version"
)

// AuditList is GET /v1/audit: administrative changes, newest first.
type AuditList struct {
	Audit []AuditRecord `json:"audit"`
}

// Audit outcomes.
const (
	OutcomeSuccess = "success"
	OutcomeFailure = "failure"
	OutcomeDenied  = "denied"
)

// AuditRecord is one administrative change and its outcome.
type AuditRecord struct {
	At        time.Time `json:"at"`
	RequestID string    `json:"request_id"`
	UserID    string    `json:"user_id"`
	ProjectID string    `json:"project_id"`
	Action    string    `json:"action"`
	Target    string    `json:"target"`
	Outcome   string    `json:"outcome"`
	Detail    string    `json:"detail,omitempty"`
}
