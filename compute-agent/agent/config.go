package agent

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"strconv"
	"time"

	"github.com/trustpool/trustpool/compute-agent/internal/inject"
	"github.com/trustpool/trustpool/internal/attestrpc"
	"github.com/trustpool/trustpool/internal/oslo"
	"github.com/trustpool/trustpool/internal/tpm"
)

// DefaultConfigFile is where the daemon reads its configuration.
const DefaultConfigFile = "/etc/trustpool/agent.toml"

// DefaultStateDir holds the AK blob.
const DefaultStateDir = "/var/lib/trustpool/agent"

// DefaultMaxMessageSize is the agent's default [DEFAULT] max_message_size:
// it receives only quote requests and enrollment replies, each well under
// a kilobyte.
const DefaultMaxMessageSize = 1 << 20

// MinMessageSize is the smallest [DEFAULT] max_message_size accepted.
const MinMessageSize = 64 << 10

// Config is agent.toml. Sections and keys use oslo's names where one exists;
// [tpm] and [agent] hold the agent's own settings.
type Config struct {
	Default DefaultSection     `toml:"DEFAULT"`
	Rabbit  oslo.RabbitOptions `toml:"oslo_messaging_rabbit"`
	TPM     TPMSection         `toml:"tpm"`
	Agent   AgentSection       `toml:"agent"`
	Launch  LaunchSection      `toml:"launch"`

	// Logger receives the agent's logs; nil discards them.
	Logger *slog.Logger `toml:"-"`
	// OpenTPM, when set, replaces the device or swtpm connection of [tpm]
	// (tests inject the simulator here). The log paths still apply.
	OpenTPM tpm.Opener `toml:"-"`
	// NotifySocket is $NOTIFY_SOCKET for systemd readiness; "" sends nothing.
	NotifySocket string `toml:"-"`
	// BootID returns the host's boot id (default: the kernel's
	// /proc/sys/kernel/random/boot_id): a different one than at the
	// agent's last run means the host rebooted, so instances of kept
	// blobs present at start have started (tests simulate reboots here).
	BootID func() (string, error) `toml:"-"`
}

// DefaultSection is [DEFAULT].
type DefaultSection struct {
	// Host is the name this agent registers and serves under; it must be
	// Nova's compute service host name (nova-compute's [DEFAULT] host).
	// Default: the machine's host name, as nova-compute does.
	Host string `toml:"host"`
	// TransportURL is oslo's transport_url (rabbit://user:pass@host:port/vhost).
	TransportURL string `toml:"transport_url"`
	// ControlExchange is oslo's control_exchange.
	ControlExchange string `toml:"control_exchange"`
	// Debug enables debug logging.
	Debug bool `toml:"debug"`
	// MaxMessageSize bounds every message received from the bus, in
	// bytes; larger ones are dropped before they are decoded
	// (the agent receives only quote requests and enrollment replies). A Trustpool
	// option: oslo.messaging's rabbit driver has none.
	MaxMessageSize int `toml:"max_message_size"`
}

// TPMSection is [tpm].
type TPMSection struct {
	// Device is the TPM character device; used when SWTPM is empty.
	Device string `toml:"device"`
	// SWTPM is host:port of a swtpm server (data) port; it wins over Device.
	SWTPM string `toml:"swtpm"`
	// EventLog is the TCG firmware event log.
	EventLog string `toml:"event_log"`
	// IMALog is the binary IMA measurement list ("" disables IMA); a
	// missing file means IMA is off on this host and is not an error.
	IMALog string `toml:"ima_log"`
	// AKAlgorithm is "ecc" (P-256) or "rsa" (2048).
	AKAlgorithm string `toml:"ak_algorithm"`
	// EKAlgorithm is "auto", "rsa", "ecc" or "ecc384".
	EKAlgorithm string `toml:"ek_algorithm"`
	// Timeout bounds connecting to swtpm.
	Timeout time.Duration `toml:"timeout"`
}

// AgentSection is [agent].
type AgentSection struct {
	// StateDir holds the AK (mode 0700 directory, 0600 files).
	StateDir string `toml:"state_dir"`
	// WatchInterval is how often the agent looks for measurement changes
	// (IMA log growth, PCR changes); 0 disables the watcher.
	WatchInterval time.Duration `toml:"watch_interval"`
	// WatchPCRs are the SHA-256 PCRs the watcher reads.
	WatchPCRs []int `toml:"watch_pcrs"`
	// RPCTimeout bounds one call to the attestation service.
	RPCTimeout time.Duration `toml:"rpc_timeout"`
	// RetryInitial and RetryMax are the first and the largest wait between
	// registration attempts (doubling, with jitter).
	RetryInitial time.Duration `toml:"retry_initial"`
	RetryMax     time.Duration `toml:"retry_max"`
	// QuoteTimeout bounds answering one quote call.
	QuoteTimeout time.Duration `toml:"quote_timeout"`
	// ServiceTopic is the attestation service's RPC topic.
	ServiceTopic string `toml:"service_topic"`
}

// Injector names of [launch] injector.
const (
	// InjectorQGA reaches the QEMU guest agent through libvirt.
	InjectorQGA = "qemu-guest-agent"
	// InjectorQGASocket reaches guest agents on unix sockets
	// <qga_socket_dir>/<instance_id>.sock (tests and demos with qemu-ga).
	InjectorQGASocket = "qemu-guest-agent-socket"
	// InjectorDirectory writes into <directory>/<instance_id>/ (tests,
	// Nova's fake virt driver, sidecar containers).
	InjectorDirectory = "directory"
)

// LaunchSection is [launch]: trusted launches on this host.
type LaunchSection struct {
	// Injector puts the secret into instances: qemu-guest-agent,
	// qemu-guest-agent-socket or directory.
	Injector string `toml:"injector"`
	// LibvirtSocket and LibvirtURI reach libvirtd (qemu-guest-agent).
	LibvirtSocket string `toml:"libvirt_socket"`
	LibvirtURI    string `toml:"libvirt_uri"`
	// GuestDir is where the secret and receipt go inside the guest.
	GuestDir string `toml:"guest_dir"`
	// QGASocketDir holds <instance_id>.sock guest agent sockets
	// (qemu-guest-agent-socket).
	QGASocketDir string `toml:"qga_socket_dir"`
	// Directory holds <instance_id>/ directories (directory).
	Directory string `toml:"directory"`
	// Timeout bounds one delivery.
	Timeout time.Duration `toml:"timeout"`
	// RedeliveryCheckInterval is how often the agent checks whether the
	// instance of a blob it keeps for re-delivery started (after a host
	// reboot, or stopped and started again), to ask the attestation
	// service for re-delivery (redelivery_wanted). 0 turns it off: only
	// `trustpool launch redeliver` redelivers.
	RedeliveryCheckInterval time.Duration `toml:"redelivery_check_interval"`
}

// MinRedeliveryCheckInterval is the least non-zero
// launch.redelivery_check_interval (one presence query per kept blob per
// check).
const MinRedeliveryCheckInterval = time.Second

// DefaultConfig returns the defaults of every key.
func DefaultConfig() Config {
	return Config{
		Default: DefaultSection{ControlExchange: attestrpc.DefaultControlExchange, MaxMessageSize: DefaultMaxMessageSize},
		Rabbit:  oslo.DefaultRabbitOptions(),
		TPM: TPMSection{
			Device:      tpm.DefaultDevice,
			EventLog:    tpm.DefaultEventLogPath,
			IMALog:      tpm.DefaultIMALogPath,
			AKAlgorithm: tpm.AlgECC,
			EKAlgorithm: tpm.AlgAuto,
			Timeout:     5 * time.Second,
		},
		Agent: AgentSection{
			StateDir:      DefaultStateDir,
			WatchInterval: 10 * time.Second,
			WatchPCRs:     []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10},
			RPCTimeout:    30 * time.Second,
			RetryInitial:  time.Second,
			RetryMax:      time.Minute,
			QuoteTimeout:  30 * time.Second,
			ServiceTopic:  attestrpc.ServiceTopic,
		},
		Launch: LaunchSection{
			Injector: InjectorQGA, LibvirtSocket: "/var/run/libvirt/libvirt-sock", LibvirtURI: "qemu:///system",
			GuestDir: "/run/trustpool", Timeout: time.Minute, RedeliveryCheckInterval: 30 * time.Second,
		},
	}
}

// Validate checks [DEFAULT], [tpm] and [agent]; it returns every problem,
// each naming its section.key. ([oslo_messaging_rabbit] validates itself.)
func (c *Config) Validate() error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", key, fmt.Sprintf(format, args...)))
	}
	d := c.Default
	if d.TransportURL == "" {
		bad("DEFAULT.transport_url", "is required (rabbit://user:password@host:5672/vhost)")
	} else if _, err := oslo.ParseTransportURL(d.TransportURL); err != nil {
		bad("DEFAULT.transport_url", "%v", err)
	}
	if len(d.Host) > attestrpc.MaxHostLen {
		bad("DEFAULT.host", "longer than %d bytes", attestrpc.MaxHostLen)
	}
	if d.ControlExchange == "" {
		bad("DEFAULT.control_exchange", "must not be empty")
	}
	if d.MaxMessageSize < MinMessageSize {
		bad("DEFAULT.max_message_size", "must be at least %d bytes", MinMessageSize)
	}

	t := c.TPM
	if t.SWTPM == "" && t.Device == "" && c.OpenTPM == nil {
		bad("tpm.device", "is required when tpm.swtpm is not set")
	}
	if t.SWTPM != "" {
		// A malformed address would fail every dial the same way: report it now
		// instead of retrying as if swtpm were not started yet.
		host, port, err := net.SplitHostPort(t.SWTPM)
		if n, perr := strconv.Atoi(port); err != nil || host == "" || perr != nil || n < 1 || n > 65535 {
			bad("tpm.swtpm", "%q is not host:port with a port 1-65535 (e.g. 127.0.0.1:2321)", t.SWTPM)
		}
	}
	if t.Device != "" && !filepath.IsAbs(t.Device) {
		bad("tpm.device", "%q is not an absolute path", t.Device)
	}
	if t.EventLog == "" {
		bad("tpm.event_log", "is required")
	} else if !filepath.IsAbs(t.EventLog) {
		bad("tpm.event_log", "%q is not an absolute path", t.EventLog)
	}
	if t.IMALog != "" && !filepath.IsAbs(t.IMALog) {
		bad("tpm.ima_log", "%q is not an absolute path", t.IMALog)
	}
	switch t.AKAlgorithm {
	case tpm.AlgECC, tpm.AlgRSA:
	default:
		bad("tpm.ak_algorithm", "%q is not one of ecc, rsa", t.AKAlgorithm)
	}
	switch t.EKAlgorithm {
	case tpm.AlgAuto, tpm.AlgRSA, tpm.AlgECC, tpm.AlgECC384:
	default:
		bad("tpm.ek_algorithm", "%q is not one of auto, rsa, ecc, ecc384", t.EKAlgorithm)
	}
	if t.Timeout <= 0 {
		bad("tpm.timeout", "must be positive")
	}

	a := c.Agent
	if a.StateDir == "" {
		bad("agent.state_dir", "is required")
	} else if !filepath.IsAbs(a.StateDir) {
		bad("agent.state_dir", "%q is not an absolute path", a.StateDir)
	}
	if a.WatchInterval < 0 {
		bad("agent.watch_interval", "must not be negative")
	}
	if a.WatchInterval > 0 && len(a.WatchPCRs) == 0 && t.IMALog == "" {
		bad("agent.watch_pcrs", "is empty and tpm.ima_log is not set: nothing to watch (set agent.watch_interval = \"0s\" to disable the watcher)")
	}
	seen := map[int]bool{}
	for _, p := range a.WatchPCRs {
		if p < 0 || p > 23 || seen[p] {
			bad("agent.watch_pcrs", "%d is out of range 0-23 or repeated", p)
		}
		seen[p] = true
	}
	for _, d := range []struct {
		key string
		v   time.Duration
	}{
		{"agent.rpc_timeout", a.RPCTimeout}, {"agent.retry_initial", a.RetryInitial},
		{"agent.retry_max", a.RetryMax}, {"agent.quote_timeout", a.QuoteTimeout},
	} {
		if d.v <= 0 {
			bad(d.key, "must be positive")
		}
	}
	if a.RetryMax > 0 && a.RetryInitial > a.RetryMax {
		bad("agent.retry_initial", "is larger than agent.retry_max")
	}
	if a.ServiceTopic == "" {
		bad("agent.service_topic", "is required")
	}
	l := c.Launch
	switch l.Injector {
	case InjectorQGA:
		if !filepath.IsAbs(l.LibvirtSocket) {
			bad("launch.libvirt_socket", "%q is not an absolute path", l.LibvirtSocket)
		}
		if l.LibvirtURI == "" {
			bad("launch.libvirt_uri", "is required for injector %s", InjectorQGA)
		}
	case InjectorQGASocket:
		if !filepath.IsAbs(l.QGASocketDir) {
			bad("launch.qga_socket_dir", "%q is not an absolute path (required for injector %s)", l.QGASocketDir, InjectorQGASocket)
		}
	case InjectorDirectory:
		if !filepath.IsAbs(l.Directory) {
			bad("launch.directory", "%q is not an absolute path (required for injector %s)", l.Directory, InjectorDirectory)
		}
	default:
		bad("launch.injector", "%q is not one of %s, %s, %s", l.Injector, InjectorQGA, InjectorQGASocket, InjectorDirectory)
	}
	if (l.Injector == InjectorQGA || l.Injector == InjectorQGASocket) && !filepath.IsAbs(l.GuestDir) {
		bad("launch.guest_dir", "%q is not an absolute path", l.GuestDir)
	}
	if l.Timeout <= 0 {
		bad("launch.timeout", "must be positive")
	}
	if l.RedeliveryCheckInterval != 0 && l.RedeliveryCheckInterval < MinRedeliveryCheckInterval {
		bad("launch.redelivery_check_interval", "%v is neither 0 (off) nor at least %v", l.RedeliveryCheckInterval, MinRedeliveryCheckInterval)
	}
	return errors.Join(errs...)
}

// tpmConfig is the tpm package's view of the configuration.
func (c *Config) tpmConfig() tpm.Config {
	return tpm.Config{
		Device:       c.TPM.Device,
		SWTPM:        c.TPM.SWTPM,
		EventLogPath: c.TPM.EventLog,
		IMALogPath:   c.TPM.IMALog,
		StateDir:     c.Agent.StateDir,
		AKAlgorithm:  c.TPM.AKAlgorithm,
		EKAlgorithm:  c.TPM.EKAlgorithm,
		DialTimeout:  c.TPM.Timeout,
	}
}

// injector builds [launch]'s injector.
func (c *Config) injector() inject.Injector {
	l := c.Launch
	switch l.Injector {
	case InjectorDirectory:
		return &inject.Directory{Root: l.Directory}
	case InjectorQGASocket:
		return &inject.QGA{Dialer: &inject.SocketDialer{Dir: l.QGASocketDir}, GuestDir: l.GuestDir}
	}
	return &inject.QGA{Dialer: &inject.LibvirtDialer{Socket: l.LibvirtSocket, URI: l.LibvirtURI}, GuestDir: l.GuestDir}
}
