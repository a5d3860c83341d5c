package shim

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"path/filepath"
	"strconv"
	"time"

	"github.com/trustpool/trustpool/internal/oslo"
)

// DefaultConfigFile is where the daemon reads its configuration.
const DefaultConfigFile = "/etc/trustpool/filter-shim.toml"

// DefaultMaxMessageSize is the shim's default [DEFAULT] max_message_size:
// smaller than the service's, still room for the snapshot of about 6,000
// hosts.
const DefaultMaxMessageSize = 4 << 20

// MinMessageSize is the smallest [DEFAULT] max_message_size accepted.
const MinMessageSize = 64 << 10

// Config is filter-shim.toml. Sections and keys use oslo's names where one
// exists; [filter_shim] holds the shim's own settings.
type Config struct {
	Default DefaultSection     `toml:"DEFAULT"`
	Rabbit  oslo.RabbitOptions `toml:"oslo_messaging_rabbit"`
	Shim    Section            `toml:"filter_shim"`

	// Logger receives the shim's logs; nil discards them.
	Logger *slog.Logger `toml:"-"`
	// Now is the clock verdict expiry is judged by; nil means time.Now.
	Now func() time.Time `toml:"-"`
	// NotifySocket is $NOTIFY_SOCKET for systemd readiness; "" sends nothing.
	NotifySocket string `toml:"-"`
}

// DefaultSection is [DEFAULT].
type DefaultSection struct {
	// TransportURL is oslo's transport_url (rabbit://user:pass@host:port/vhost).
	TransportURL string `toml:"transport_url"`
	// ControlExchange is oslo's control_exchange.
	ControlExchange string `toml:"control_exchange"`
	// Host names this shim's RPC server (its private fanout queue and
	// topic.host queue); default: the machine's host name.
	Host string `toml:"host"`
	// Debug enables debug logging.
	Debug bool `toml:"debug"`
	// MaxMessageSize bounds every message received from the bus, in
	// bytes; larger ones are dropped before they are decoded
	// (the get_verdicts snapshot carries every host's verdict, about 0.6 KiB
	// each). A Trustpool
	// option: oslo.messaging's rabbit driver has none.
	MaxMessageSize int `toml:"max_message_size"`
}

// Section is [filter_shim].
type Section struct {
	// VerdictPublicKey is the PEM file with the attestation service's
	// verdict public key (PUBLIC KEY, Ed25519), pinned. Several PEM blocks
	// pin several keys (during a key rotation).
	VerdictPublicKey string `toml:"verdict_public_key"`
	// SocketPath is the unix socket the Nova filter connects to.
	SocketPath string `toml:"socket_path"`
	// SocketGroup owns the socket; nova-scheduler must be in it. "" keeps
	// the shim's own group.
	SocketGroup string `toml:"socket_group"`
	// SocketMode is the socket's mode, octal ("0660"); connecting needs write.
	SocketMode string `toml:"socket_mode"`
	// SnapshotFile is the verdict snapshot file the Nova filter reads
	// instead of asking over the socket ([trustpool] verdict_source =
	// snapshot); "" writes none.
	SnapshotFile string `toml:"snapshot_file"`
	// SnapshotFileGroup owns the file; nova-scheduler must be in it. ""
	// keeps the shim's own group.
	SnapshotFileGroup string `toml:"snapshot_file_group"`
	// SnapshotFileMode is the file's mode, octal ("0640"); it must not
	// let group or others write.
	SnapshotFileMode string `toml:"snapshot_file_mode"`
	// SnapshotFileInterval is the longest time between two writes of the
	// file (it is also written at once on every change).
	SnapshotFileInterval time.Duration `toml:"snapshot_file_interval"`
	// MaxVerdictAge, when not zero, is a local staleness limit: a verdict
	// is acted on for at most this long after its verified_at, even if its
	// expires_at is later. 0 trusts expires_at alone.
	MaxVerdictAge time.Duration `toml:"max_verdict_age"`
	// SnapshotTimeout bounds one get_verdicts call.
	SnapshotTimeout time.Duration `toml:"snapshot_timeout"`
	// SnapshotRetryMax caps the backoff between failed get_verdicts calls.
	SnapshotRetryMax time.Duration `toml:"snapshot_retry_max"`
	// ResyncInterval re-fetches the whole snapshot periodically, to catch
	// verdicts missed while disconnected; 0 disables.
	ResyncInterval time.Duration `toml:"resync_interval"`
	// AttestationTopic is the attestation service's RPC topic.
	AttestationTopic string `toml:"attestation_topic"`
	// VerdictsTopic is the verdict fanout topic.
	VerdictsTopic string `toml:"verdicts_topic"`
	// MaxHosts bounds the hosts of one filter request.
	MaxHosts int `toml:"max_hosts"`
	// MaxRequestBytes bounds one filter request body.
	MaxRequestBytes int64 `toml:"max_request_bytes"`
}

// DefaultConfig returns the defaults of every key.
func DefaultConfig() Config {
	return Config{
		Default: DefaultSection{ControlExchange: oslo.DefaultControlExchange, MaxMessageSize: DefaultMaxMessageSize},
		Rabbit:  oslo.DefaultRabbitOptions(),
		Shim: Section{
			VerdictPublicKey:     "/etc/trustpool/verdict_public_key.pem",
			SocketPath:           "/run/trustpool/filter-shim.sock",
			SocketGroup:          "nova",
			SocketMode:           "0660",
			SnapshotFile:         "/run/trustpool/verdicts.snapshot",
			SnapshotFileGroup:    "nova",
			SnapshotFileMode:     "0640",
			SnapshotFileInterval: 2 * time.Second,
			SnapshotTimeout:      10 * time.Second,
			SnapshotRetryMax:     30 * time.Second,
			ResyncInterval:       5 * time.Minute,
			AttestationTopic:     "trustpool-attestation",
			VerdictsTopic:        "trustpool-verdicts",
			MaxHosts:             20000,
			MaxRequestBytes:      4 << 20,
		},
	}
}

// maxSocketPath is the longest unix socket path Linux accepts (sun_path
// holds 108 bytes including the terminating NUL).
const maxSocketPath = 107

// Validate checks [DEFAULT] and [filter_shim]; it returns every problem,
// each naming its section.key.
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
	s := c.Shim
	if s.VerdictPublicKey == "" {
		bad("filter_shim.verdict_public_key", "is required (the attestation service's verdict public key, PEM)")
	}
	switch {
	case s.SocketPath == "":
		bad("filter_shim.socket_path", "is required")
	case !filepath.IsAbs(s.SocketPath):
		bad("filter_shim.socket_path", "%q is not an absolute path", s.SocketPath)
	case len(s.SocketPath)+16 > maxSocketPath: // room for the temporary name Listen binds
		bad("filter_shim.socket_path", "%q is too long for a unix socket (at most %d bytes)", s.SocketPath, maxSocketPath-16)
	}
	if _, err := c.Shim.Mode(); err != nil {
		bad("filter_shim.socket_mode", "%v", err)
	}
	switch {
	case s.SnapshotFile == "":
	case !filepath.IsAbs(s.SnapshotFile):
		bad("filter_shim.snapshot_file", "%q is not an absolute path", s.SnapshotFile)
	case filepath.Clean(s.SnapshotFile) == filepath.Clean(s.SocketPath):
		bad("filter_shim.snapshot_file", "must not be the socket_path")
	}
	if m, err := parseMode(s.SnapshotFileMode); err != nil {
		bad("filter_shim.snapshot_file_mode", "%v", err)
	} else if m&0o022 != 0 {
		bad("filter_shim.snapshot_file_mode", "%q lets group or others write (the filter refuses such a file); use 0640", s.SnapshotFileMode)
	}
	if s.SnapshotFileInterval < MinSnapshotFileInterval || s.SnapshotFileInterval > MaxSnapshotFileInterval {
		bad("filter_shim.snapshot_file_interval", "must be between %v and %v", MinSnapshotFileInterval, MaxSnapshotFileInterval)
	}
	for key, d := range map[string]time.Duration{
		"filter_shim.max_verdict_age": s.MaxVerdictAge, "filter_shim.resync_interval": s.ResyncInterval,
	} {
		if d < 0 {
			bad(key, "must not be negative")
		}
	}
	for key, d := range map[string]time.Duration{
		"filter_shim.snapshot_timeout": s.SnapshotTimeout, "filter_shim.snapshot_retry_max": s.SnapshotRetryMax,
	} {
		if d <= 0 {
			bad(key, "must be positive")
		}
	}
	if s.AttestationTopic == "" {
		bad("filter_shim.attestation_topic", "is required")
	}
	if s.VerdictsTopic == "" {
		bad("filter_shim.verdicts_topic", "is required")
	}
	if s.MaxHosts <= 0 {
		bad("filter_shim.max_hosts", "must be positive")
	}
	if s.MaxRequestBytes <= 0 {
		bad("filter_shim.max_request_bytes", "must be positive")
	}
	return errors.Join(errs...)
}

// Bounds of [filter_shim] snapshot_file_interval: the filter's
// [trustpool] snapshot_max_age (10 s by default) must cover a few of them.
const (
	MinSnapshotFileInterval = 100 * time.Millisecond
	MaxSnapshotFileInterval = time.Minute
)

// Mode parses SocketMode.
func (s Section) Mode() (fs.FileMode, error) { return parseMode(s.SocketMode) }

// FileMode parses SnapshotFileMode.
func (s Section) FileMode() (fs.FileMode, error) { return parseMode(s.SnapshotFileMode) }

func parseMode(v string) (fs.FileMode, error) {
	m, err := strconv.ParseUint(v, 8, 32)
	if err != nil || m > 0o777 {
		return 0, fmt.Errorf("%q is not an octal mode such as 0660", v)
	}
	return fs.FileMode(m), nil
}
