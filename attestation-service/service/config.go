package service

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/trustpool/trustpool/attestation-service/internal/engine"
	"github.com/trustpool/trustpool/attestation-service/internal/store"
	"github.com/trustpool/trustpool/internal/launch"
	"github.com/trustpool/trustpool/internal/oslo"
	"github.com/trustpool/trustpool/internal/verdict"
	"github.com/trustpool/trustpool/keystone-auth/authtoken"
	kpolicy "github.com/trustpool/trustpool/keystone-auth/policy"
)

// DefaultConfigFile is where the daemon reads its configuration.
const DefaultConfigFile = "/etc/trustpool/attestation.toml"

// MinMessageSize is the smallest [DEFAULT] max_message_size accepted.
const MinMessageSize = 64 << 10

// Config is attestation.toml. Sections and keys use oslo's names where one
// exists.
type Config struct {
	Default     DefaultSection     `toml:"DEFAULT"`
	Rabbit      oslo.RabbitOptions `toml:"oslo_messaging_rabbit"`
	Database    DatabaseSection    `toml:"database"`
	Keystone    authtoken.Options  `toml:"keystone_authtoken"`
	Policy      kpolicy.Options    `toml:"oslo_policy"`
	API         APISection         `toml:"api"`
	Attestation AttestationSection `toml:"attestation"`
	Enrollment  EnrollmentSection  `toml:"enrollment"`
	Keys        KeysSection        `toml:"keys"`
	Cluster     ClusterSection     `toml:"cluster"`
	Placement   PlacementSection   `toml:"placement"`
	Nova        NovaSection        `toml:"nova"`
	Revocation  RevocationSection  `toml:"revocation"`
	Launch      LaunchSection      `toml:"launch"`
	// UpgradeLevels pins wire formats for a rolling upgrade, as Nova's
	// [upgrade_levels] pins RPC versions.
	UpgradeLevels UpgradeLevelsSection `toml:"upgrade_levels"`

	// ConfigDir resolves a relative [oslo_policy] policy_file.
	ConfigDir string `toml:"-"`
	// Logger receives the service's logs; nil discards them.
	Logger *slog.Logger `toml:"-"`
	// NotifySocket is $NOTIFY_SOCKET for systemd readiness; "" sends nothing.
	NotifySocket string `toml:"-"`
	// LaunchObserver, when set, receives the phase timings of every
	// trusted launch that ends (benchmarks).
	LaunchObserver func(LaunchTiming) `toml:"-"`
}

// DefaultSection is [DEFAULT].
type DefaultSection struct {
	// TransportURL is oslo's transport_url.
	TransportURL string `toml:"transport_url"`
	// ControlExchange is oslo's control_exchange.
	ControlExchange string `toml:"control_exchange"`
	// Host names this service instance (its RPC server); default: the
	// machine's host name.
	Host string `toml:"host"`
	// Issuer goes into every verdict's issuer field.
	Issuer string `toml:"issuer"`
	// Debug enables debug logging.
	Debug bool `toml:"debug"`
	// MaxMessageSize bounds every message received from the bus, in
	// bytes; larger ones are dropped before they are decoded
	// (a quote reply carries the firmware log and the IMA list since boot). A Trustpool
	// option: oslo.messaging's rabbit driver has none.
	MaxMessageSize int `toml:"max_message_size"`
}

// DatabaseSection is [database].
type DatabaseSection struct {
	// Connection is the SQLAlchemy-style URL (sqlite:////abs/path.db,
	// mysql+pymysql://user:pw@host/db or postgresql://user:pw@host/db).
	Connection string `toml:"connection"`
	// HistoryRetention is how long verdict history (and the revocation
	// brake's records) is kept; 0 keeps it forever, else at least 1h and
	// at least [revocation] brake_window. A Trustpool option.
	HistoryRetention time.Duration `toml:"history_retention"`
	// AuditRetention is how long the audit log is kept; 0 keeps it
	// forever. A Trustpool option.
	AuditRetention time.Duration `toml:"audit_retention"`
}

// DefaultRetention keeps history and audit records for 30 days.
const DefaultRetention = 30 * 24 * time.Hour

// APISection is [api].
type APISection struct {
	// Listen is the REST API's address (host:port); loopback by default,
	// behind the Apache proxy DevStack sets up.
	Listen string `toml:"listen"`
	// PublicEndpoint is the API's public base URL, as clients reach it
	// (the Keystone catalog's public endpoint, e.g.
	// https://cloud.example.org/attestation); the version document at
	// GET / links to it. Unset, the links are built from each request's
	// Host header, which a client controls: set it wherever the API is
	// reachable from untrusted networks. Like Glance's and Keystone's
	// public_endpoint.
	PublicEndpoint string `toml:"public_endpoint"`
}

// AttestationSection is [attestation].
type AttestationSection struct {
	// Interval between two attestations of a host.
	Interval time.Duration `toml:"interval"`
	// Jitter spreads rounds: each delay is interval ± up to jitter.
	Jitter time.Duration `toml:"jitter"`
	// Concurrency bounds rounds in flight.
	Concurrency int `toml:"concurrency"`
	// QuoteTimeout is the deadline for an agent's quote; a host that misses
	// it is unreachable (unknown).
	QuoteTimeout time.Duration `toml:"quote_timeout"`
	// NonceLifetime is how long a nonce is accepted (≤ 2 × interval).
	NonceLifetime time.Duration `toml:"nonce_lifetime"`
	// VerdictValidity is expires_at − verified_at (interval ≤ it ≤ 3 × interval).
	VerdictValidity time.Duration `toml:"verdict_validity"`
	// HeartbeatInterval republishes every current verdict on the fanout.
	HeartbeatInterval time.Duration `toml:"heartbeat_interval"`
	// PCRs is the SHA-256 PCR selection quoted.
	PCRs []int `toml:"pcrs"`
	// RequiredProfiles apply to hosts without their own assignment; empty
	// means "at least one defined profile must pass".
	RequiredProfiles []string `toml:"required_profiles"`
	// AllowMissingEventLog accepts quotes without a firmware event log
	// (no boot facts). Default false.
	AllowMissingEventLog bool `toml:"allow_missing_event_log"`
}

// EnrollmentSection is [enrollment].
type EnrollmentSection struct {
	// Mode is auto (a new EK enrolls after credential activation) or
	// approve (an administrator approves every new EK first).
	Mode string `toml:"mode"`
	// RequireEKCert requires an EK certificate chaining to EKRootsDir.
	RequireEKCert bool `toml:"require_ek_cert"`
	// EKRootsDir holds the TPM vendors' root and intermediate CA
	// certificates (PEM, *.pem / *.crt / *.cer).
	EKRootsDir string `toml:"ek_roots_dir"`
}

// ClusterSection is [cluster]: several instances sharing one database and
// one bus (each named by its [DEFAULT] host).
type ClusterSection struct {
	// Lease is how long an instance counts as live after its last
	// membership heartbeat (renewed every lease/4); a killed instance's
	// hosts move to the others once it runs out.
	Lease time.Duration `toml:"lease"`
}

// KeysSection is [keys].
type KeysSection struct {
	// VerdictSigningKey is the Ed25519 private key (PKCS #8 PEM, 0600).
	// Create it with `trustpool-attestation create-key PATH`; a missing key
	// stops the service unless CreateVerdictSigningKey is set.
	VerdictSigningKey string `toml:"verdict_signing_key"`
	// CreateVerdictSigningKey creates the key at start when the file does
	// not exist (DevStack sets it). Off by default: a key silently created
	// in place of a lost one makes every shim pinning the old key drop all
	// verdicts.
	CreateVerdictSigningKey bool `toml:"create_verdict_signing_key"`
	// LaunchKey is the HPKE launch key tenants seal their launch secrets
	// to. Create it with `trustpool-attestation create-launch-key PATH`; a
	// missing key stops the service (with [launch] enabled) unless
	// CreateLaunchKey is set.
	LaunchKey string `toml:"launch_key"`
	// CreateLaunchKey creates the launch key at start when the file does
	// not exist (DevStack sets it). Off by default: tenants pin the key.
	CreateLaunchKey bool `toml:"create_launch_key"`
	// LaunchKeyKEM is the KEM of a launch key created at start.
	LaunchKeyKEM string `toml:"launch_key_kem"`
	// PolicySigningKey is the ECDSA P-256 key that approves PCR states for
	// launch secrets sealed under TPM2_PolicyAuthorize (package policykey).
	// Create it with `trustpool-attestation create-policy-key PATH`. While
	// the file does not exist (and CreatePolicySigningKey is off) secrets
	// are sealed to the quoted PCR values alone (PolicyPCR), as before the
	// key existed, and the service says so at start.
	PolicySigningKey string `toml:"policy_signing_key"`
	// CreatePolicySigningKey creates the key at start when the file does
	// not exist (DevStack sets it). Off by default: blobs sealed under a
	// key that is replaced never unseal again.
	CreatePolicySigningKey bool `toml:"create_policy_signing_key"`
}

// PlacementSection is [placement]: verdicts mirrored onto Placement traits
// (CUSTOM_TRUSTPOOL_TRUSTED, CUSTOM_TRUSTPOOL_PROFILE_<NAME>) with the
// [keystone_authtoken] service user, which needs Placement's admin rights.
// The endpoint keys are keystoneauth's adapter options, as in Nova's
// [placement].
type PlacementSection struct {
	// MirrorTraits turns the mirroring on (default off).
	MirrorTraits bool `toml:"mirror_traits"`
	// NodeLookup finds a host's compute node providers: "nova" (Nova's
	// hypervisor list: every node of the service host, e.g. Ironic; needs
	// [nova] and the os-hypervisors API) or "name" (the provider named like
	// the host).
	NodeLookup string `toml:"node_lookup"`
	// ReconcileInterval between full comparisons of Placement with the
	// verdicts (also done at start).
	ReconcileInterval time.Duration `toml:"reconcile_interval"`
	RegionName        string        `toml:"region_name"`
	ValidInterfaces   []string      `toml:"valid_interfaces"`
	EndpointOverride  string        `toml:"endpoint_override"`
	// Timeout bounds each request.
	Timeout time.Duration `toml:"timeout"`
}

// NovaSection is [nova]: the Nova API, used with the [keystone_authtoken]
// service user to disable compute services ([revocation]), to find
// compute nodes ([placement] node_lookup = "nova") and to find where a
// launch's server runs and whose it is ([launch] nova_api).
type NovaSection struct {
	RegionName       string        `toml:"region_name"`
	ValidInterfaces  []string      `toml:"valid_interfaces"`
	EndpointOverride string        `toml:"endpoint_override"`
	Timeout          time.Duration `toml:"timeout"`
}

// RevocationSection is [revocation]: what happens when a host turns
// untrusted besides the signed verdict.
type RevocationSection struct {
	// Notifications sends trustpool.host.trusted / trustpool.host.untrusted
	// (default on).
	Notifications bool `toml:"notifications"`
	// DisableComputeService disables the host's nova-compute service
	// (default off) and enables it again on the next trusted verdict if
	// Trustpool disabled it.
	DisableComputeService bool `toml:"disable_compute_service"`
	// DisableOnUnknown also disables on unknown (unreachable) verdicts.
	DisableOnUnknown bool `toml:"disable_on_unknown"`
	// BrakePercent, BrakeWindow, BrakeMinHosts: when more than
	// BrakePercent % of the enrolled hosts, and at least BrakeMinHosts,
	// turn untrusted within BrakeWindow, stop disabling and alert.
	BrakePercent  int           `toml:"brake_percent"`
	BrakeWindow   time.Duration `toml:"brake_window"`
	BrakeMinHosts int           `toml:"brake_min_hosts"`
}

// UpgradeLevelsSection is [upgrade_levels].
type UpgradeLevelsSection struct {
	// Verdict is the signed verdicts' format: unset (0) is the newest,
	// verdict.FormatLatest; 1 keeps them readable by filter shims from
	// before format 2 (which drop every format-2 verdict) until every
	// shim is upgraded.
	Verdict int `toml:"verdict"`
}

// DefaultConfig returns the defaults of every key.
func DefaultConfig() Config {
	ks := authtoken.DefaultOptions()
	// As Nova does since 2023.1: the persona defaults only, for
	// project-scoped tokens. Operators may turn either off in [oslo_policy].
	pol := kpolicy.DefaultOptions()
	pol.EnforceScope, pol.EnforceNewDefaults = true, true
	return Config{
		Default: DefaultSection{ControlExchange: oslo.DefaultControlExchange, Issuer: "trustpool-attestation", MaxMessageSize: oslo.DefaultMaxMessageSize},
		Rabbit:  oslo.DefaultRabbitOptions(),
		Database: DatabaseSection{Connection: "sqlite:////var/lib/trustpool/attestation.db",
			HistoryRetention: DefaultRetention, AuditRetention: DefaultRetention},
		Keystone: ks,
		Policy:   pol,
		API:      APISection{Listen: "127.0.0.1:9780"},
		Attestation: AttestationSection{
			Interval: 10 * time.Second, Jitter: 2 * time.Second, Concurrency: 32,
			QuoteTimeout: 5 * time.Second, NonceLifetime: 10 * time.Second,
			VerdictValidity: 30 * time.Second, HeartbeatInterval: 10 * time.Second,
			PCRs: []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10},
		},
		Enrollment: EnrollmentSection{Mode: engine.ModeAuto, RequireEKCert: true, EKRootsDir: "/etc/trustpool/ek-roots"},
		Keys: KeysSection{VerdictSigningKey: "/var/lib/trustpool/verdict-signing.key", LaunchKey: DefaultLaunchKey,
			LaunchKeyKEM: launch.KEMMLKEM768X25519, PolicySigningKey: DefaultPolicySigningKey},
		Launch: defaultLaunch(),
		Placement: PlacementSection{NodeLookup: "nova", ReconcileInterval: 5 * time.Minute,
			ValidInterfaces: []string{"internal", "public"}, Timeout: 10 * time.Second},
		Nova:       NovaSection{ValidInterfaces: []string{"internal", "public"}, Timeout: 10 * time.Second},
		Cluster:    ClusterSection{Lease: 10 * time.Second},
		Revocation: RevocationSection{Notifications: true, BrakePercent: 20, BrakeWindow: 10 * time.Minute, BrakeMinHosts: 3},
	}
}

// Validate checks the configuration; it returns every problem, each naming
// its section.key.
func (c *Config) Validate() error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", key, fmt.Sprintf(format, args...)))
	}
	if c.Default.TransportURL == "" {
		bad("DEFAULT.transport_url", "is required (rabbit://user:password@host:5672/vhost)")
	} else if _, err := oslo.ParseTransportURL(c.Default.TransportURL); err != nil {
		bad("DEFAULT.transport_url", "%v", err)
	}
	if c.Default.MaxMessageSize < MinMessageSize {
		bad("DEFAULT.max_message_size", "must be at least %d bytes", MinMessageSize)
	}
	if c.Default.Issuer == "" {
		bad("DEFAULT.issuer", "is required")
	}
	if _, _, err := store.ParseURL(c.Database.Connection); err != nil {
		bad("database.connection", "%v", err)
	}
	for key, d := range map[string]time.Duration{"database.history_retention": c.Database.HistoryRetention, "database.audit_retention": c.Database.AuditRetention} {
		if d < 0 || d > 0 && d < time.Hour {
			bad(key, "must be 0 (keep forever) or at least 1h")
		}
	}
	if _, _, err := net.SplitHostPort(c.API.Listen); err != nil {
		bad("api.listen", "%q is not host:port", c.API.Listen)
	}
	if e := c.API.PublicEndpoint; e != "" {
		if u, err := url.Parse(e); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil ||
			u.RawQuery != "" || u.ForceQuery || u.Fragment != "" || strings.Contains(e, "#") {
			bad("api.public_endpoint", "%q is not an absolute http or https URL without user info, query or fragment", e)
		}
	}
	a := c.Attestation
	if a.Interval <= 0 {
		bad("attestation.interval", "must be positive")
	} else {
		if a.Jitter < 0 || a.Jitter >= a.Interval {
			bad("attestation.jitter", "must be at least 0 and less than attestation.interval (%v)", a.Interval)
		}
		if a.QuoteTimeout <= 0 || a.QuoteTimeout > a.Interval {
			bad("attestation.quote_timeout", "must be positive and at most attestation.interval (%v)", a.Interval)
		}
		if a.NonceLifetime < a.QuoteTimeout || a.NonceLifetime > 2*a.Interval {
			bad("attestation.nonce_lifetime", "must be between attestation.quote_timeout and 2 × attestation.interval (%v)", 2*a.Interval)
		}
		if a.VerdictValidity < a.Interval || a.VerdictValidity > 3*a.Interval {
			bad("attestation.verdict_validity", "must be between attestation.interval and 3 × attestation.interval (%v)", 3*a.Interval)
		} else if gap := a.Interval + a.Jitter + a.QuoteTimeout; a.VerdictValidity <= gap && a.Jitter >= 0 && a.Jitter < a.Interval && a.QuoteTimeout > 0 {
			// Otherwise a host that stays trusted is unknown at the shims
			// between two rounds.
			bad("attestation.verdict_validity", "must be longer than attestation.interval + jitter + quote_timeout (%v), the longest gap between two rounds", gap)
		}
		if a.HeartbeatInterval <= 0 || a.HeartbeatInterval >= a.VerdictValidity {
			bad("attestation.heartbeat_interval", "must be positive and less than attestation.verdict_validity")
		}
	}
	if a.Concurrency < 1 || a.Concurrency > 10000 {
		bad("attestation.concurrency", "must be 1-10000")
	}
	if len(a.PCRs) == 0 {
		bad("attestation.pcrs", "must not be empty")
	}
	for _, p := range a.PCRs {
		if p < 0 || p > 23 {
			bad("attestation.pcrs", "PCR %d is not 0-23", p)
		}
	}
	if s := slices.Sorted(slices.Values(a.PCRs)); len(slices.Compact(s)) != len(a.PCRs) {
		bad("attestation.pcrs", "has duplicates")
	}
	if !slices.Contains(a.PCRs, 0) {
		bad("attestation.pcrs", "must include PCR 0 (firmware)")
	}
	switch c.Enrollment.Mode {
	case engine.ModeAuto, engine.ModeApprove:
	default:
		bad("enrollment.mode", "%q is not auto or approve", c.Enrollment.Mode)
	}
	if c.Enrollment.RequireEKCert && c.Enrollment.EKRootsDir == "" {
		bad("enrollment.ek_roots_dir", "is required when enrollment.require_ek_cert is on")
	}
	if c.Keys.VerdictSigningKey == "" {
		bad("keys.verdict_signing_key", "is required")
	}
	if l := c.Cluster.Lease; l < time.Second || l > 10*time.Minute {
		bad("cluster.lease", "must be between 1s and 10m")
	}
	switch c.UpgradeLevels.Verdict {
	case 0, verdict.Format1, verdict.Format2:
	default:
		bad("upgrade_levels.verdict", "%d is not a verdict format this service writes (1 or 2; unset: %d)", c.UpgradeLevels.Verdict, verdict.FormatLatest)
	}
	c.validateLaunch(bad)
	p := c.Placement
	switch p.NodeLookup {
	case "nova", "name":
	default:
		bad("placement.node_lookup", "%q is not nova or name", p.NodeLookup)
	}
	if p.ReconcileInterval < time.Second {
		bad("placement.reconcile_interval", "must be at least 1s")
	}
	checkEndpoint := func(section string, ifaces []string, override string, timeout time.Duration) {
		if len(ifaces) == 0 {
			bad(section+".valid_interfaces", "must not be empty")
		}
		for _, i := range ifaces {
			if i != "public" && i != "internal" && i != "admin" {
				bad(section+".valid_interfaces", "%q is not public, internal or admin", i)
			}
		}
		if override != "" {
			if u, err := url.Parse(override); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
				bad(section+".endpoint_override", "%q is not an http or https URL", override)
			}
		}
		if timeout <= 0 {
			bad(section+".timeout", "must be positive")
		}
	}
	checkEndpoint("placement", p.ValidInterfaces, p.EndpointOverride, p.Timeout)
	checkEndpoint("nova", c.Nova.ValidInterfaces, c.Nova.EndpointOverride, c.Nova.Timeout)
	r := c.Revocation
	if r.BrakePercent < 1 || r.BrakePercent > 100 {
		bad("revocation.brake_percent", "must be 1-100 (100: never brake)")
	}
	if r.BrakeWindow <= 0 {
		bad("revocation.brake_window", "must be positive")
	} else if h := c.Database.HistoryRetention; h > 0 && h < r.BrakeWindow {
		// The brake's records go with the history: a shorter retention
		// would prune transitions still in the window (under-counting it).
		bad("database.history_retention", "%v is shorter than revocation.brake_window (%v): must be 0 (keep forever) or at least the brake window",
			h, r.BrakeWindow)
	}
	if r.BrakeMinHosts < 1 {
		bad("revocation.brake_min_hosts", "must be at least 1")
	}
	if r.DisableOnUnknown && !r.DisableComputeService {
		bad("revocation.disable_on_unknown", "needs revocation.disable_compute_service")
	}
	return errors.Join(errs...)
}

// HandOverGap is how much of a verdict's validity a crash of another
// instance can use up: the dead instance's lease, one membership refresh,
// then the new owner's round (jitter and quote timeout). Above the margin
// verdict_validity leaves after an interval, a healthy host's verdict may
// expire at the shims during such a hand-over; the service says so at
// start.
func (c *Config) HandOverGap() time.Duration {
	a := c.Attestation
	return c.Cluster.Lease + c.Cluster.Lease/4 + a.Jitter + a.QuoteTimeout
}
