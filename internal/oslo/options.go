package oslo

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"math"
	"os"
	"strings"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/trustpool/trustpool/internal/config"
)

// RabbitSection is the oslo.config group RabbitOptions stands for.
const RabbitSection = "oslo_messaging_rabbit"

// ErrUnsupportedOption is wrapped by errors about [oslo_messaging_rabbit]
// options (or option values) that oslo.messaging has but this package does
// not implement. They are rejected rather than silently ignored.
var ErrUnsupportedOption = errors.New("option not supported")

// ErrInvalidOption is wrapped by errors about option values oslo would
// reject too (out of range, not one of the choices, conflicting options).
var ErrInvalidOption = errors.New("invalid option value")

// RabbitOptions is the [oslo_messaging_rabbit] group of oslo.messaging 14.0
// (Zed): the rabbit driver's options, plus the amqp_* and connection pool
// options oslo registers in the same group. Field tags are the oslo option
// names; DefaultRabbitOptions gives the Zed defaults.
type RabbitOptions struct {
	// SSL connects with TLS (amqps).
	SSL bool `toml:"ssl"`
	// SSLVersion pins the TLS version: "" (negotiate, TLS 1.2 or newer),
	// "sslv23" (the same), "tlsv1", "tlsv1_1", "tlsv1_2" (exactly that
	// version), case-insensitive. sslv2/sslv3 are not supported.
	SSLVersion string `toml:"ssl_version"`
	// SSLKeyFile is the client key (PEM); empty means it is in SSLCertFile.
	SSLKeyFile string `toml:"ssl_key_file"`
	// SSLCertFile is the client certificate (PEM) for TLS client auth.
	SSLCertFile string `toml:"ssl_cert_file"`
	// SSLCAFile holds the CA certificates the broker's chain must lead to.
	// Empty means the system roots (oslo/py-amqp do the same for the
	// default ssl_version).
	SSLCAFile string `toml:"ssl_ca_file"`
	// SSLEnforceHostnameVerification also checks the broker's name
	// against its certificate (the Debian Zed security backport's option).
	SSLEnforceHostnameVerification bool `toml:"ssl_enforce_hostname_verification"`
	// SSLEnforceFIPSMode: true is not supported (error).
	SSLEnforceFIPSMode bool `toml:"ssl_enforce_fips_mode"`
	// HeartbeatInPthread chooses, in Python, whether heartbeats run in a
	// native thread. Go's heartbeats always run independently of the
	// handlers (amqp091's own goroutine), whichever value is set.
	HeartbeatInPthread bool `toml:"heartbeat_in_pthread"`
	// KombuReconnectDelay is the pause in seconds after a recoverable
	// connection error, 0 to 4.5.
	KombuReconnectDelay float64 `toml:"kombu_reconnect_delay"`
	// KombuCompression ("gzip", "bz2") is not supported: it must be empty.
	KombuCompression string `toml:"kombu_compression"`
	// KombuMissingConsumerRetryTimeout is how long, in seconds, a server
	// retries a reply whose reply queue is missing.
	KombuMissingConsumerRetryTimeout int `toml:"kombu_missing_consumer_retry_timeout"`
	// KombuFailoverStrategy is "round-robin" or "shuffle": how the next
	// broker is chosen after a failure.
	KombuFailoverStrategy string `toml:"kombu_failover_strategy"`
	// RabbitLoginMethod is the SASL mechanism: "PLAIN", "AMQPLAIN" or
	// "EXTERNAL" ("RABBIT-CR-DEMO" is not supported).
	RabbitLoginMethod string `toml:"rabbit_login_method"`
	// RabbitRetryInterval is the first reconnect delay in seconds.
	RabbitRetryInterval int `toml:"rabbit_retry_interval"`
	// RabbitRetryBackoff is added to the delay after each failed attempt.
	RabbitRetryBackoff int `toml:"rabbit_retry_backoff"`
	// RabbitIntervalMax caps the reconnect delay, in seconds.
	RabbitIntervalMax int `toml:"rabbit_interval_max"`
	// RabbitHAQueues adds x-ha-policy=all to queue declarations.
	RabbitHAQueues bool `toml:"rabbit_ha_queues"`
	// RabbitQuorumQueue declares the control exchange and the topic and
	// notification queues durable, the queues as quorum queues.
	RabbitQuorumQueue bool `toml:"rabbit_quorum_queue"`
	// RabbitQuorumDeliveryLimit is x-delivery-limit (0: none).
	RabbitQuorumDeliveryLimit int `toml:"rabbit_quorum_delivery_limit"`
	// RabbitQuroumMaxMemoryLength is x-max-in-memory-length (0: none),
	// under Zed's misspelt option name.
	RabbitQuroumMaxMemoryLength int `toml:"rabbit_quroum_max_memory_length"`
	// RabbitQuroumMaxMemoryBytes is x-max-in-memory-bytes (0: none),
	// under Zed's misspelt option name.
	RabbitQuroumMaxMemoryBytes int `toml:"rabbit_quroum_max_memory_bytes"`
	// RabbitQuorumMaxMemoryLength is the corrected name of
	// rabbit_quroum_max_memory_length (oslo.messaging ≥ 14.3.0). Setting
	// both names to different non-zero values is an error.
	RabbitQuorumMaxMemoryLength int `toml:"rabbit_quorum_max_memory_length"`
	// RabbitQuorumMaxMemoryBytes is the corrected name of
	// rabbit_quroum_max_memory_bytes.
	RabbitQuorumMaxMemoryBytes int `toml:"rabbit_quorum_max_memory_bytes"`
	// RabbitTransientQueuesTTL is the x-expires of reply and fanout
	// queues, in seconds (≥ 1).
	RabbitTransientQueuesTTL int `toml:"rabbit_transient_queues_ttl"`
	// RabbitQosPrefetchCount is basic.qos prefetch for consumers (0: unlimited).
	RabbitQosPrefetchCount int `toml:"rabbit_qos_prefetch_count"`
	// HeartbeatTimeoutThreshold is the AMQP heartbeat in seconds (0: off).
	HeartbeatTimeoutThreshold int `toml:"heartbeat_timeout_threshold"`
	// HeartbeatRate is how many times per threshold Python checks
	// heartbeats. Only the Zed default 2 is accepted: amqp091-go paces
	// heartbeats itself.
	HeartbeatRate int `toml:"heartbeat_rate"`
	// DirectMandatoryFlag publishes replies with the mandatory flag.
	DirectMandatoryFlag bool `toml:"direct_mandatory_flag"`
	// EnableCancelOnFailover adds the x-cancel-on-ha-failover consumer argument.
	EnableCancelOnFailover bool `toml:"enable_cancel_on_failover"`
	// AMQPDurableQueues declares the control exchange and the topic and
	// notification queues durable.
	AMQPDurableQueues bool `toml:"amqp_durable_queues"`
	// AMQPAutoDelete declares the control exchange and the topic and
	// notification queues auto-delete.
	AMQPAutoDelete bool `toml:"amqp_auto_delete"`
	// RPCConnPoolSize, ConnPoolMinSize and ConnPoolTTL size oslo's pool of
	// publishing connections. Trustpool multiplexes channels over one
	// publishing connection instead; only the defaults are accepted.
	RPCConnPoolSize int `toml:"rpc_conn_pool_size"`
	ConnPoolMinSize int `toml:"conn_pool_min_size"`
	ConnPoolTTL     int `toml:"conn_pool_ttl"`
}

// DefaultRabbitOptions returns the Zed (oslo.messaging 14.0) defaults.
func DefaultRabbitOptions() RabbitOptions {
	return RabbitOptions{
		KombuReconnectDelay:              1.0,
		KombuMissingConsumerRetryTimeout: 60,
		KombuFailoverStrategy:            "round-robin",
		RabbitLoginMethod:                "AMQPLAIN",
		RabbitRetryInterval:              1,
		RabbitRetryBackoff:               2,
		RabbitIntervalMax:                30,
		RabbitTransientQueuesTTL:         1800,
		HeartbeatTimeoutThreshold:        60,
		HeartbeatRate:                    2,
		DirectMandatoryFlag:              true,
		RPCConnPoolSize:                  30,
		ConnPoolMinSize:                  2,
		ConnPoolTTL:                      1200,
	}
}

// laterOptions are [oslo_messaging_rabbit] options added after Zed; a Zed
// oslo rejects them as unknown, and so does this package, with a hint.
var laterOptions = map[string]string{
	"rabbit_transient_quorum_queue": "14.7.0",
	"use_queue_manager":             "14.7.0",
	"hostname":                      "14.7.0",
	"processname":                   "14.7.0",
	"rabbit_stream_fanout":          "14.7.0",
	"kombu_reconnect_splay":         "16.1.0",
}

// deprecatedOptions are old names oslo accepts in config files only.
var deprecatedOptions = map[string]string{
	"rabbit_use_ssl":          "ssl",
	"kombu_ssl_version":       "ssl_version",
	"kombu_ssl_keyfile":       "ssl_key_file",
	"kombu_ssl_certfile":      "ssl_cert_file",
	"kombu_ssl_ca_certs":      "ssl_ca_file",
	"kombu_reconnect_timeout": "kombu_missing_consumer_retry_timeout",
}

// Set sets the option called name from its string form, as a query option
// of a transport_url does. Unknown names are errors naming the option and
// the group, as oslo's NoSuchOptError does.
func (o *RabbitOptions) Set(name, value string) error {
	err := config.Set(o, name, value)
	if err == nil {
		return nil
	}
	if errors.Is(err, config.ErrUnknownKey) {
		switch {
		case laterOptions[name] != "":
			return fmt.Errorf("%w: no such option %s in group [%s] (added in oslo.messaging %s; Trustpool follows Zed)",
				ErrUnsupportedOption, name, RabbitSection, laterOptions[name])
		case deprecatedOptions[name] != "":
			return fmt.Errorf("%w: no such option %s in group [%s] (deprecated name, use %s)",
				config.ErrUnknownKey, name, RabbitSection, deprecatedOptions[name])
		}
		return fmt.Errorf("%w: no such option %s in group [%s]", config.ErrUnknownKey, name, RabbitSection)
	}
	return fmt.Errorf("%s.%s: %w", RabbitSection, name, err)
}

// QuorumMaxMemoryLength is x-max-in-memory-length, from whichever of the
// two option names is set.
func (o RabbitOptions) QuorumMaxMemoryLength() int {
	return max(o.RabbitQuorumMaxMemoryLength, o.RabbitQuroumMaxMemoryLength)
}

// QuorumMaxMemoryBytes is x-max-in-memory-bytes, from whichever of the
// two option names is set.
func (o RabbitOptions) QuorumMaxMemoryBytes() int {
	return max(o.RabbitQuorumMaxMemoryBytes, o.RabbitQuroumMaxMemoryBytes)
}

// Validate checks the options as oslo does when the driver loads, plus the
// options and values this package does not support. It reports every
// problem at once (errors.Join); each error names oslo_messaging_rabbit.<key>
// and wraps ErrInvalidOption or ErrUnsupportedOption.
func (o RabbitOptions) Validate() error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s.%s: %w: %s", RabbitSection, key, ErrInvalidOption, fmt.Sprintf(format, args...)))
	}
	unsupported := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s.%s: %w: %s", RabbitSection, key, ErrUnsupportedOption, fmt.Sprintf(format, args...)))
	}
	atLeast := func(key string, v, lo int) {
		if v < lo {
			bad(key, "%d is less than %d", v, lo)
		}
	}
	within := func(key string, v, lo, hi int) {
		if v < lo || v > hi {
			bad(key, "%d is not in [%d, %d]", v, lo, hi)
		}
	}

	if _, err := tlsVersions(o.SSLVersion); err != nil {
		if errors.Is(err, ErrUnsupportedOption) {
			unsupported("ssl_version", "%v", err)
		} else {
			bad("ssl_version", "%v", err)
		}
	}
	if o.SSL && o.SSLKeyFile != "" && o.SSLCertFile == "" {
		bad("ssl_key_file", "is set but ssl_cert_file is not")
	}
	if o.SSLEnforceFIPSMode {
		unsupported("ssl_enforce_fips_mode", "OpenSSL FIPS mode cannot be enforced from Trustpool; set it to false")
	}
	if math.IsNaN(o.KombuReconnectDelay) || o.KombuReconnectDelay < 0 || o.KombuReconnectDelay > 4.5 {
		bad("kombu_reconnect_delay", "%v is not in [0, 4.5]", o.KombuReconnectDelay)
	}
	if o.KombuCompression != "" {
		unsupported("kombu_compression", "message compression (%q) is not implemented; leave it unset", o.KombuCompression)
	}
	atLeast("kombu_missing_consumer_retry_timeout", o.KombuMissingConsumerRetryTimeout, 0)
	switch o.KombuFailoverStrategy {
	case "round-robin", "shuffle":
	default:
		bad("kombu_failover_strategy", "valid values are [round-robin, shuffle], but found %q", o.KombuFailoverStrategy)
	}
	switch o.RabbitLoginMethod {
	case "PLAIN", "AMQPLAIN", "EXTERNAL":
	case "RABBIT-CR-DEMO":
		unsupported("rabbit_login_method", "RABBIT-CR-DEMO is not implemented; use PLAIN, AMQPLAIN or EXTERNAL")
	default:
		bad("rabbit_login_method", "valid values are [PLAIN, AMQPLAIN, EXTERNAL, RABBIT-CR-DEMO], but found %q", o.RabbitLoginMethod)
	}
	atLeast("rabbit_retry_interval", o.RabbitRetryInterval, 0)
	atLeast("rabbit_retry_backoff", o.RabbitRetryBackoff, 0)
	atLeast("rabbit_interval_max", o.RabbitIntervalMax, 0)
	if o.RabbitQuorumQueue && o.RabbitHAQueues {
		errs = append(errs, fmt.Errorf("%s.rabbit_quorum_queue and %s.rabbit_ha_queues: %w: both enabled, queue type is quorum or HA (mirrored) not both",
			RabbitSection, RabbitSection, ErrInvalidOption))
	}
	atLeast("rabbit_quorum_delivery_limit", o.RabbitQuorumDeliveryLimit, 0)
	atLeast("rabbit_quroum_max_memory_length", o.RabbitQuroumMaxMemoryLength, 0)
	atLeast("rabbit_quroum_max_memory_bytes", o.RabbitQuroumMaxMemoryBytes, 0)
	atLeast("rabbit_quorum_max_memory_length", o.RabbitQuorumMaxMemoryLength, 0)
	atLeast("rabbit_quorum_max_memory_bytes", o.RabbitQuorumMaxMemoryBytes, 0)
	if a, b := o.RabbitQuroumMaxMemoryLength, o.RabbitQuorumMaxMemoryLength; a != 0 && b != 0 && a != b {
		bad("rabbit_quorum_max_memory_length", "%d conflicts with rabbit_quroum_max_memory_length %d (two names of one option)", b, a)
	}
	if a, b := o.RabbitQuroumMaxMemoryBytes, o.RabbitQuorumMaxMemoryBytes; a != 0 && b != 0 && a != b {
		bad("rabbit_quorum_max_memory_bytes", "%d conflicts with rabbit_quroum_max_memory_bytes %d (two names of one option)", b, a)
	}
	// x-expires is milliseconds in a signed 32-bit field.
	within("rabbit_transient_queues_ttl", o.RabbitTransientQueuesTTL, 1, math.MaxInt32/1000)
	within("rabbit_qos_prefetch_count", o.RabbitQosPrefetchCount, 0, math.MaxUint16)
	within("heartbeat_timeout_threshold", o.HeartbeatTimeoutThreshold, 0, math.MaxUint16)
	// amqp091 paces heartbeats itself (a frame every threshold/2, the peer
	// declared dead after missing them), and publishing multiplexes
	// channels over one connection: these options cannot be honoured, so
	// only their defaults are accepted.
	d := DefaultRabbitOptions()
	onlyDefault := func(key string, v, def int, why string) {
		if v != def {
			unsupported(key, "%d: only the default %d is supported (%s)", v, def, why)
		}
	}
	onlyDefault("heartbeat_rate", o.HeartbeatRate, d.HeartbeatRate, "amqp091-go paces heartbeats itself")
	const pooling = "Trustpool publishes over channels of one connection, not a connection pool"
	onlyDefault("rpc_conn_pool_size", o.RPCConnPoolSize, d.RPCConnPoolSize, pooling)
	onlyDefault("conn_pool_min_size", o.ConnPoolMinSize, d.ConnPoolMinSize, pooling)
	onlyDefault("conn_pool_ttl", o.ConnPoolTTL, d.ConnPoolTTL, pooling)
	return errors.Join(errs...)
}

// Durable is the durable flag of the control exchange, the topic queues
// and the notification queues: amqp_durable_queues or rabbit_quorum_queue.
// Fanout exchanges, fanout queues and reply queues are never durable.
func (o RabbitOptions) Durable() bool { return o.AMQPDurableQueues || o.RabbitQuorumQueue }

// QueueArguments are the x-arguments of the topic (`<topic>`,
// `<topic>.<server>`) and notification queues: x-ha-policy with
// rabbit_ha_queues; x-queue-type=quorum and the optional x-delivery-limit,
// x-max-in-memory-length, x-max-in-memory-bytes with rabbit_quorum_queue.
// Nil when there are none. Call Validate first: with both HA and quorum it
// returns the quorum arguments (oslo raises RuntimeError).
func (o RabbitOptions) QueueArguments() amqp.Table {
	t := amqp.Table{}
	if o.RabbitQuorumQueue {
		t["x-queue-type"] = "quorum"
		if n := o.RabbitQuorumDeliveryLimit; n > 0 {
			t["x-delivery-limit"] = amqpInt(n)
		}
		if n := o.QuorumMaxMemoryLength(); n > 0 {
			t["x-max-in-memory-length"] = amqpInt(n)
		}
		if n := o.QuorumMaxMemoryBytes(); n > 0 {
			t["x-max-in-memory-bytes"] = amqpInt(n)
		}
	} else if o.RabbitHAQueues {
		t["x-ha-policy"] = "all"
	}
	if len(t) == 0 {
		return nil
	}
	return t
}

// TransientQueueArguments are the x-arguments of reply queues and of the
// per-server fanout queues: x-expires = rabbit_transient_queues_ttl in
// milliseconds, plus x-ha-policy with rabbit_ha_queues (as oslo does; never
// quorum). These queues are declared non-durable and not auto-delete.
func (o RabbitOptions) TransientQueueArguments() amqp.Table {
	t := amqp.Table{}
	if o.RabbitHAQueues {
		t["x-ha-policy"] = "all"
	}
	if o.RabbitTransientQueuesTTL > 0 {
		t["x-expires"] = amqpInt(o.RabbitTransientQueuesTTL * 1000)
	}
	if len(t) == 0 {
		return nil
	}
	return t
}

// ConsumerArguments are the basic.consume arguments: x-cancel-on-ha-failover
// with enable_cancel_on_failover, else nil.
func (o RabbitOptions) ConsumerArguments() amqp.Table {
	if !o.EnableCancelOnFailover {
		return nil
	}
	return amqp.Table{"x-cancel-on-ha-failover": true}
}

// amqpInt encodes n as py-amqp does: a signed 32-bit field when it fits,
// else 64-bit. (RabbitMQ compares integer arguments by value either way.)
func amqpInt(n int) any {
	if n >= math.MinInt32 && n <= math.MaxInt32 {
		return int32(n)
	}
	return int64(n)
}

// tlsVersions maps ssl_version to a min/max pair (zero: Go's default).
func tlsVersions(v string) ([2]uint16, error) {
	switch strings.ToLower(v) {
	case "", "sslv23":
		return [2]uint16{tls.VersionTLS12, 0}, nil
	case "tlsv1":
		return [2]uint16{tls.VersionTLS10, tls.VersionTLS10}, nil
	case "tlsv1_1":
		return [2]uint16{tls.VersionTLS11, tls.VersionTLS11}, nil
	case "tlsv1_2":
		return [2]uint16{tls.VersionTLS12, tls.VersionTLS12}, nil
	case "sslv2", "sslv3":
		return [2]uint16{}, fmt.Errorf("%w: %s is not available in Go's TLS stack", ErrUnsupportedOption, v)
	}
	return [2]uint16{}, fmt.Errorf("invalid SSL version: %q (valid: TLSv1, TLSv1_1, TLSv1_2, SSLv23)", v)
}

// TLSConfig is the TLS client configuration for a broker called serverName
// (the host being dialled; used for SNI and, when enforced, hostname
// checks), or nil when ssl is off. It reads the certificate files.
//
// What it checks: the broker's certificate chain must always lead to
// ssl_ca_file's certificates, or to the system roots when ssl_ca_file is
// empty; the broker's name is checked only with
// ssl_enforce_hostname_verification, as in oslo's stable branches. This is
// stricter than oslo in two corners, so it never fails open: oslo skips
// chain verification with a pinned ssl_version and no CA file, and skips the
// hostname check with no CA file even when enforcement is on.
func (o RabbitOptions) TLSConfig(serverName string) (*tls.Config, error) {
	if !o.SSL {
		return nil, nil
	}
	vers, err := tlsVersions(o.SSLVersion)
	if err != nil {
		return nil, fmt.Errorf("%s.ssl_version: %w", RabbitSection, err)
	}
	cfg := &tls.Config{ServerName: serverName, MinVersion: vers[0], MaxVersion: vers[1]}
	if o.SSLCertFile != "" {
		key := o.SSLKeyFile
		if key == "" {
			key = o.SSLCertFile
		}
		cert, err := tls.LoadX509KeyPair(o.SSLCertFile, key)
		if err != nil {
			return nil, fmt.Errorf("%s.ssl_cert_file/ssl_key_file: load client certificate: %w", RabbitSection, err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	} else if o.SSLKeyFile != "" {
		return nil, fmt.Errorf("%s.ssl_key_file: %w: set without ssl_cert_file", RabbitSection, ErrInvalidOption)
	}
	var roots *x509.CertPool
	if o.SSLCAFile != "" {
		pem, err := os.ReadFile(o.SSLCAFile)
		if err != nil {
			return nil, fmt.Errorf("%s.ssl_ca_file: %w", RabbitSection, err)
		}
		roots = x509.NewCertPool()
		if !roots.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%s.ssl_ca_file: %w: %s holds no PEM certificate", RabbitSection, ErrInvalidOption, o.SSLCAFile)
		}
		cfg.RootCAs = roots
	}
	if o.SSLEnforceHostnameVerification {
		if serverName == "" {
			return nil, fmt.Errorf("%s.ssl_enforce_hostname_verification: %w: no broker hostname to verify", RabbitSection, ErrInvalidOption)
		}
		return cfg, nil // Go's default verification: chain and name.
	}
	// Chain only: Go cannot skip just the name check, so verify by hand.
	cfg.InsecureSkipVerify = true //nolint:gosec // the chain is verified in VerifyConnection below
	cfg.VerifyConnection = func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 {
			return errors.New("broker presented no certificate")
		}
		inter := x509.NewCertPool()
		for _, c := range cs.PeerCertificates[1:] {
			inter.AddCert(c)
		}
		_, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{
			Roots:         roots,
			Intermediates: inter,
			KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		})
		if err != nil {
			return fmt.Errorf("verify broker certificate chain: %w", err)
		}
		return nil
	}
	return cfg, nil
}
