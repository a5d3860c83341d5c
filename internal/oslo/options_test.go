package oslo

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/trustpool/trustpool/internal/servicetest"
)

// zedRabbitDefaults are the [oslo_messaging_rabbit] options of oslo.messaging
// 14.0.3 (impl_rabbit.rabbit_opts, amqp.amqp_opts, base.base_opts) with
// their defaults.
var zedRabbitDefaults = map[string]any{
	"ssl": false, "ssl_version": "", "ssl_key_file": "", "ssl_cert_file": "", "ssl_ca_file": "",
	"ssl_enforce_hostname_verification": false, "ssl_enforce_fips_mode": false,
	"heartbeat_in_pthread": false, "kombu_reconnect_delay": 1.0, "kombu_compression": "",
	"kombu_missing_consumer_retry_timeout": 60, "kombu_failover_strategy": "round-robin",
	"rabbit_login_method": "AMQPLAIN", "rabbit_retry_interval": 1, "rabbit_retry_backoff": 2,
	"rabbit_interval_max": 30, "rabbit_ha_queues": false, "rabbit_quorum_queue": false,
	"rabbit_quorum_delivery_limit": 0, "rabbit_quroum_max_memory_length": 0,
	"rabbit_quroum_max_memory_bytes": 0, "rabbit_transient_queues_ttl": 1800,
	"rabbit_qos_prefetch_count": 0, "heartbeat_timeout_threshold": 60, "heartbeat_rate": 2,
	"direct_mandatory_flag": true, "enable_cancel_on_failover": false,
	"amqp_durable_queues": false, "amqp_auto_delete": false,
	"rpc_conn_pool_size": 30, "conn_pool_min_size": 2, "conn_pool_ttl": 1200,
}

// laterFixedNames are option names from oslo.messaging ≥ 14.3.0 accepted
// as aliases of Zed's misspelt ones.
var laterFixedNames = map[string]any{"rabbit_quorum_max_memory_length": 0, "rabbit_quorum_max_memory_bytes": 0}

// optionValues maps every RabbitOptions field's oslo name to its value.
func optionValues(o RabbitOptions) map[string]any {
	out := map[string]any{}
	v := reflect.ValueOf(o)
	for i := range v.NumField() {
		out[v.Type().Field(i).Tag.Get("toml")] = v.Field(i).Interface()
	}
	return out
}

func TestDefaultRabbitOptionsAreZeds(t *testing.T) {
	want := map[string]any{}
	for k, v := range zedRabbitDefaults {
		want[k] = v
	}
	for k, v := range laterFixedNames {
		want[k] = v
	}
	if diff := cmp.Diff(want, optionValues(DefaultRabbitOptions())); diff != "" {
		t.Errorf("(-Zed +ours):\n%s", diff)
	}
	if err := DefaultRabbitOptions().Validate(); err != nil {
		t.Errorf("defaults do not validate: %v", err)
	}
}

// TestRabbitOptionsMatchInstalledOslo compares the option list and defaults
// with the installed python3-oslo.messaging itself.
func TestRabbitOptionsMatchInstalledOslo(t *testing.T) {
	py := servicetest.Python(t)
	script := `
import json
from oslo_messaging._drivers import impl_rabbit, amqp, base
print(json.dumps({o.name: o.default for o in impl_rabbit.rabbit_opts + amqp.amqp_opts + base.base_opts}))
`
	out, err := exec.Command(py, "-c", script).Output()
	if err != nil {
		t.Fatalf("python: %v", err)
	}
	var oslo map[string]any
	if err := json.Unmarshal(out, &oslo); err != nil {
		t.Fatalf("python output %q: %v", out, err)
	}
	if oslo["kombu_compression"] == nil {
		oslo["kombu_compression"] = "" // None: unset
	}
	ours := map[string]any{}
	for k, v := range optionValues(DefaultRabbitOptions()) {
		if _, later := laterFixedNames[k]; later {
			continue
		}
		b, _ := json.Marshal(v)
		var j any
		_ = json.Unmarshal(b, &j)
		ours[k] = j
	}
	if diff := cmp.Diff(oslo, ours); diff != "" {
		t.Errorf("(-installed oslo +ours):\n%s", diff)
	}
}

func TestRabbitOptionsSet(t *testing.T) {
	o := DefaultRabbitOptions()
	for name, value := range map[string]string{
		"ssl": "yes", "kombu_reconnect_delay": "2.5", "rabbit_login_method": "PLAIN",
		"rabbit_quroum_max_memory_length": "9", "rabbit_quorum_max_memory_bytes": "10",
	} {
		if err := o.Set(name, value); err != nil {
			t.Errorf("Set(%s, %s): %v", name, value, err)
		}
	}
	if !o.SSL || o.KombuReconnectDelay != 2.5 || o.RabbitLoginMethod != "PLAIN" || o.QuorumMaxMemoryLength() != 9 || o.QuorumMaxMemoryBytes() != 10 {
		t.Errorf("got %+v", o)
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name    string
		mod     func(*RabbitOptions)
		wantKey string // "" means valid
		wantIs  error
	}{
		{"defaults", func(*RabbitOptions) {}, "", nil},
		{"quorum with limits", func(o *RabbitOptions) {
			o.RabbitQuorumQueue, o.RabbitQuorumDeliveryLimit, o.RabbitQuroumMaxMemoryLength = true, 5, 100
		}, "", nil},
		{"both quorum names, same value", func(o *RabbitOptions) { o.RabbitQuroumMaxMemoryBytes, o.RabbitQuorumMaxMemoryBytes = 7, 7 }, "", nil},
		{"ha", func(o *RabbitOptions) { o.RabbitHAQueues = true }, "", nil},
		{"tls versions", func(o *RabbitOptions) { o.SSL, o.SSLVersion = true, "TLSv1_2" }, "", nil},
		{"heartbeat off", func(o *RabbitOptions) { o.HeartbeatTimeoutThreshold = 0 }, "", nil},
		{"max reconnect delay", func(o *RabbitOptions) { o.KombuReconnectDelay = 4.5 }, "", nil},

		{"quorum and ha", func(o *RabbitOptions) { o.RabbitQuorumQueue, o.RabbitHAQueues = true, true }, "rabbit_quorum_queue", ErrInvalidOption},
		{"sslv3", func(o *RabbitOptions) { o.SSLVersion = "SSLv3" }, "ssl_version", ErrUnsupportedOption},
		{"unknown ssl version", func(o *RabbitOptions) { o.SSLVersion = "tlsv1_3" }, "ssl_version", ErrInvalidOption},
		{"key without cert", func(o *RabbitOptions) { o.SSL, o.SSLKeyFile = true, "/k" }, "ssl_key_file", ErrInvalidOption},
		{"fips", func(o *RabbitOptions) { o.SSLEnforceFIPSMode = true }, "ssl_enforce_fips_mode", ErrUnsupportedOption},
		{"reconnect delay too big", func(o *RabbitOptions) { o.KombuReconnectDelay = 5 }, "kombu_reconnect_delay", ErrInvalidOption},
		{"reconnect delay negative", func(o *RabbitOptions) { o.KombuReconnectDelay = -1 }, "kombu_reconnect_delay", ErrInvalidOption},
		{"reconnect delay NaN", func(o *RabbitOptions) { o.KombuReconnectDelay = math.NaN() }, "kombu_reconnect_delay", ErrInvalidOption},
		{"compression", func(o *RabbitOptions) { o.KombuCompression = "gzip" }, "kombu_compression", ErrUnsupportedOption},
		{"missing consumer timeout", func(o *RabbitOptions) { o.KombuMissingConsumerRetryTimeout = -1 }, "kombu_missing_consumer_retry_timeout", ErrInvalidOption},
		{"failover strategy", func(o *RabbitOptions) { o.KombuFailoverStrategy = "random" }, "kombu_failover_strategy", ErrInvalidOption},
		{"login method case", func(o *RabbitOptions) { o.RabbitLoginMethod = "plain" }, "rabbit_login_method", ErrInvalidOption},
		{"cr-demo", func(o *RabbitOptions) { o.RabbitLoginMethod = "RABBIT-CR-DEMO" }, "rabbit_login_method", ErrUnsupportedOption},
		{"retry interval", func(o *RabbitOptions) { o.RabbitRetryInterval = -1 }, "rabbit_retry_interval", ErrInvalidOption},
		{"retry backoff", func(o *RabbitOptions) { o.RabbitRetryBackoff = -1 }, "rabbit_retry_backoff", ErrInvalidOption},
		{"interval max", func(o *RabbitOptions) { o.RabbitIntervalMax = -1 }, "rabbit_interval_max", ErrInvalidOption},
		{"delivery limit", func(o *RabbitOptions) { o.RabbitQuorumDeliveryLimit = -1 }, "rabbit_quorum_delivery_limit", ErrInvalidOption},
		{"memory length", func(o *RabbitOptions) { o.RabbitQuroumMaxMemoryLength = -1 }, "rabbit_quroum_max_memory_length", ErrInvalidOption},
		{"memory bytes", func(o *RabbitOptions) { o.RabbitQuorumMaxMemoryBytes = -1 }, "rabbit_quorum_max_memory_bytes", ErrInvalidOption},
		{"conflicting quorum names", func(o *RabbitOptions) { o.RabbitQuroumMaxMemoryLength, o.RabbitQuorumMaxMemoryLength = 1, 2 }, "rabbit_quorum_max_memory_length", ErrInvalidOption},
		{"transient ttl 0 (Zed: min 1)", func(o *RabbitOptions) { o.RabbitTransientQueuesTTL = 0 }, "rabbit_transient_queues_ttl", ErrInvalidOption},
		{"transient ttl overflow", func(o *RabbitOptions) { o.RabbitTransientQueuesTTL = math.MaxInt32 }, "rabbit_transient_queues_ttl", ErrInvalidOption},
		{"prefetch negative", func(o *RabbitOptions) { o.RabbitQosPrefetchCount = -1 }, "rabbit_qos_prefetch_count", ErrInvalidOption},
		{"prefetch overflow", func(o *RabbitOptions) { o.RabbitQosPrefetchCount = 70000 }, "rabbit_qos_prefetch_count", ErrInvalidOption},
		{"heartbeat negative", func(o *RabbitOptions) { o.HeartbeatTimeoutThreshold = -1 }, "heartbeat_timeout_threshold", ErrInvalidOption},
		{"heartbeat rate 3", func(o *RabbitOptions) { o.HeartbeatRate = 3 }, "heartbeat_rate", ErrUnsupportedOption},
		{"pool size", func(o *RabbitOptions) { o.RPCConnPoolSize = 10 }, "rpc_conn_pool_size", ErrUnsupportedOption},
		{"pool min size", func(o *RabbitOptions) { o.ConnPoolMinSize = 1 }, "conn_pool_min_size", ErrUnsupportedOption},
		{"pool ttl", func(o *RabbitOptions) { o.ConnPoolTTL = 60 }, "conn_pool_ttl", ErrUnsupportedOption},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := DefaultRabbitOptions()
			tt.mod(&o)
			err := o.Validate()
			if tt.wantKey == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("Validate succeeded")
			}
			if !errors.Is(err, tt.wantIs) {
				t.Errorf("error %v does not wrap %v", err, tt.wantIs)
			}
			if want := "oslo_messaging_rabbit." + tt.wantKey; !strings.Contains(err.Error(), want) {
				t.Errorf("error %q does not name %s", err, want)
			}
		})
	}

	// All problems at once.
	o := DefaultRabbitOptions()
	o.KombuCompression, o.HeartbeatRate, o.KombuFailoverStrategy = "bz2", 0, "x"
	err := o.Validate()
	for _, key := range []string{"kombu_compression", "heartbeat_rate", "kombu_failover_strategy"} {
		if err == nil || !strings.Contains(err.Error(), key) {
			t.Errorf("joined error %v lacks %s", err, key)
		}
	}
}

func TestQueueArguments(t *testing.T) {
	tests := []struct {
		name                       string
		mod                        func(*RabbitOptions)
		durable                    bool
		queue, transient, consumer amqp.Table
	}{
		{"defaults", func(*RabbitOptions) {}, false, nil, amqp.Table{"x-expires": int32(1800000)}, nil},
		// broker_quorum_check.txt: quorum with rabbit_quorum_delivery_limit=5.
		{"quorum as captured", func(o *RabbitOptions) { o.RabbitQuorumQueue, o.RabbitQuorumDeliveryLimit = true, 5 }, true,
			amqp.Table{"x-queue-type": "quorum", "x-delivery-limit": int32(5)}, amqp.Table{"x-expires": int32(1800000)}, nil},
		{"quorum with memory limits (both names)", func(o *RabbitOptions) {
			o.RabbitQuorumQueue, o.RabbitQuroumMaxMemoryLength, o.RabbitQuorumMaxMemoryBytes = true, 10, 1<<33
		}, true, amqp.Table{"x-queue-type": "quorum", "x-max-in-memory-length": int32(10), "x-max-in-memory-bytes": int64(1 << 33)},
			amqp.Table{"x-expires": int32(1800000)}, nil},
		{"durable", func(o *RabbitOptions) { o.AMQPDurableQueues = true }, true, nil, amqp.Table{"x-expires": int32(1800000)}, nil},
		{"ha, ttl, cancel on failover", func(o *RabbitOptions) {
			o.RabbitHAQueues, o.RabbitTransientQueuesTTL, o.EnableCancelOnFailover = true, 60, true
		}, false, amqp.Table{"x-ha-policy": "all"}, amqp.Table{"x-ha-policy": "all", "x-expires": int32(60000)},
			amqp.Table{"x-cancel-on-ha-failover": true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := DefaultRabbitOptions()
			tt.mod(&o)
			if err := o.Validate(); err != nil {
				t.Fatal(err)
			}
			if o.Durable() != tt.durable {
				t.Errorf("Durable = %v", o.Durable())
			}
			if diff := cmp.Diff(tt.queue, o.QueueArguments()); diff != "" {
				t.Errorf("QueueArguments (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.transient, o.TransientQueueArguments()); diff != "" {
				t.Errorf("TransientQueueArguments (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.consumer, o.ConsumerArguments()); diff != "" {
				t.Errorf("ConsumerArguments (-want +got):\n%s", diff)
			}
			for _, tab := range []amqp.Table{o.QueueArguments(), o.TransientQueueArguments(), o.ConsumerArguments()} {
				if err := tab.Validate(); err != nil {
					t.Errorf("amqp091 rejects %v: %v", tab, err)
				}
			}
		})
	}
}

// tlsPKI is a throw-away CA with a broker and a client certificate.
type tlsPKI struct {
	caFile, otherCAFile           string
	serverCert                    tls.Certificate
	clientCert, clientKey, bundle string
	caPool                        *x509.CertPool
}

func newTLSPKI(t *testing.T) *tlsPKI {
	t.Helper()
	dir := t.TempDir()
	write := func(name string, blocks ...*pem.Block) string {
		var b []byte
		for _, blk := range blocks {
			b = append(b, pem.EncodeToMemory(blk)...)
		}
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	newKey := func() *ecdsa.PrivateKey {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	keyPEM := func(k *ecdsa.PrivateKey) *pem.Block {
		b, err := x509.MarshalPKCS8PrivateKey(k)
		if err != nil {
			t.Fatal(err)
		}
		return &pem.Block{Type: "PRIVATE KEY", Bytes: b}
	}
	serial := int64(1)
	issue := func(tmpl *x509.Certificate, parent *x509.Certificate, parentKey, key *ecdsa.PrivateKey) *x509.Certificate {
		serial++
		tmpl.SerialNumber = big.NewInt(serial)
		tmpl.NotBefore = time.Now().Add(-time.Hour)
		tmpl.NotAfter = time.Now().Add(time.Hour)
		if parent == nil {
			parent, parentKey = tmpl, key
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
		if err != nil {
			t.Fatal(err)
		}
		c, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	caTmpl := func(cn string) *x509.Certificate {
		return &x509.Certificate{Subject: pkix.Name{CommonName: cn}, IsCA: true, BasicConstraintsValid: true,
			KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
	}
	caKey := newKey()
	ca := issue(caTmpl("test CA"), nil, nil, caKey)
	otherKey := newKey()
	other := issue(caTmpl("other CA"), nil, nil, otherKey)

	srvKey := newKey()
	srv := issue(&x509.Certificate{Subject: pkix.Name{CommonName: "broker.example"}, DNSNames: []string{"broker.example"},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, KeyUsage: x509.KeyUsageDigitalSignature}, ca, caKey, srvKey)
	cliKey := newKey()
	cli := issue(&x509.Certificate{Subject: pkix.Name{CommonName: "trustpool"},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, KeyUsage: x509.KeyUsageDigitalSignature}, ca, caKey, cliKey)

	p := &tlsPKI{
		caFile:      write("ca.pem", &pem.Block{Type: "CERTIFICATE", Bytes: ca.Raw}),
		otherCAFile: write("other.pem", &pem.Block{Type: "CERTIFICATE", Bytes: other.Raw}),
		clientCert:  write("client.pem", &pem.Block{Type: "CERTIFICATE", Bytes: cli.Raw}),
		clientKey:   write("client.key", keyPEM(cliKey)),
		bundle:      write("bundle.pem", &pem.Block{Type: "CERTIFICATE", Bytes: cli.Raw}, keyPEM(cliKey)),
		serverCert:  tls.Certificate{Certificate: [][]byte{srv.Raw}, PrivateKey: srvKey},
		caPool:      x509.NewCertPool(),
	}
	p.caPool.AddCert(ca)
	return p
}

// handshake runs a TLS handshake over loopback TCP (buffered, unlike
// net.Pipe, so an alert never deadlocks) and returns the client's error and
// negotiated version.
func (p *tlsPKI) handshake(t *testing.T, client *tls.Config, requireClientCert bool) (uint16, error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	srvCfg := &tls.Config{Certificates: []tls.Certificate{p.serverCert}, MinVersion: tls.VersionTLS12}
	if requireClientCert {
		srvCfg.ClientAuth, srvCfg.ClientCAs = tls.RequireAndVerifyClientCert, p.caPool
	}
	deadline := time.Now().Add(10 * time.Second)
	done := make(chan error, 1)
	go func() {
		s, err := ln.Accept()
		if err != nil {
			done <- err
			return
		}
		_ = s.SetDeadline(deadline)
		srv := tls.Server(s, srvCfg)
		err = srv.Handshake()
		if err == nil {
			// TLS 1.3 checks the client certificate after the client's
			// handshake returns; read so that a rejection reaches it.
			var n int
			n, err = srv.Read(make([]byte, 1))
			if n == 1 {
				err = nil // the byte may come together with the close_notify's EOF
			}
			if err != nil {
				err = fmt.Errorf("read after handshake (%d bytes, version %x): %w", n, srv.ConnectionState().Version, err)
			}
		}
		_ = srv.Close()
		done <- err
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	_ = c.SetDeadline(deadline)
	cli := tls.Client(c, client)
	err = cli.Handshake()
	if err == nil {
		_, err = cli.Write([]byte{1})
	}
	version := cli.ConnectionState().Version
	_ = cli.Close()
	serr := <-done
	if err == nil && serr != nil {
		err = fmt.Errorf("server: %w", serr)
	}
	return version, err
}

func TestTLSConfig(t *testing.T) {
	p := newTLSPKI(t)
	if cfg, err := DefaultRabbitOptions().TLSConfig("broker.example"); cfg != nil || err != nil {
		t.Fatalf("ssl off: got %v, %v; want nil, nil", cfg, err)
	}
	tests := []struct {
		name          string
		mod           func(*RabbitOptions)
		serverName    string
		clientCert    bool
		wantErr       bool
		wantVersion   uint16
		wantConfigErr bool
	}{
		{"CA, name not checked by default", func(o *RabbitOptions) { o.SSLCAFile = p.caFile }, "other.example", false, false, tls.VersionTLS13, false},
		{"CA, enforced name matches", func(o *RabbitOptions) {
			o.SSLCAFile, o.SSLEnforceHostnameVerification = p.caFile, true
		}, "broker.example", false, false, tls.VersionTLS13, false},
		{"CA, enforced name differs", func(o *RabbitOptions) {
			o.SSLCAFile, o.SSLEnforceHostnameVerification = p.caFile, true
		}, "other.example", false, true, 0, false},
		{"wrong CA", func(o *RabbitOptions) { o.SSLCAFile = p.otherCAFile }, "broker.example", false, true, 0, false},
		{"no CA: system roots, never unverified", func(*RabbitOptions) {}, "broker.example", false, true, 0, false},
		{"no CA, enforced: system roots", func(o *RabbitOptions) { o.SSLEnforceHostnameVerification = true }, "broker.example", false, true, 0, false},
		{"pinned TLS 1.2", func(o *RabbitOptions) { o.SSLCAFile, o.SSLVersion = p.caFile, "tlsv1_2" }, "broker.example", false, false, tls.VersionTLS12, false},
		{"client certificate", func(o *RabbitOptions) {
			o.SSLCAFile, o.SSLCertFile, o.SSLKeyFile = p.caFile, p.clientCert, p.clientKey
		}, "broker.example", true, false, tls.VersionTLS13, false},
		{"client certificate and key in one file", func(o *RabbitOptions) {
			o.SSLCAFile, o.SSLCertFile = p.caFile, p.bundle
		}, "broker.example", true, false, tls.VersionTLS13, false},
		{"server requires a client certificate", func(o *RabbitOptions) { o.SSLCAFile = p.caFile }, "broker.example", true, true, 0, false},
		{"missing CA file", func(o *RabbitOptions) { o.SSLCAFile = p.caFile + ".missing" }, "", false, false, 0, true},
		{"CA file without certificates", func(o *RabbitOptions) { o.SSLCAFile = p.clientKey }, "", false, false, 0, true},
		{"key without certificate", func(o *RabbitOptions) { o.SSLKeyFile = p.clientKey }, "", false, false, 0, true},
		{"certificate without key", func(o *RabbitOptions) { o.SSLCertFile = p.clientCert }, "", false, false, 0, true},
		{"bad version", func(o *RabbitOptions) { o.SSLVersion = "sslv3" }, "", false, false, 0, true},
		{"enforced without a name", func(o *RabbitOptions) { o.SSLEnforceHostnameVerification = true }, "", false, false, 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := DefaultRabbitOptions()
			o.SSL = true
			tt.mod(&o)
			cfg, err := o.TLSConfig(tt.serverName)
			if tt.wantConfigErr {
				if err == nil {
					t.Fatal("TLSConfig succeeded")
				}
				if !strings.Contains(err.Error(), "oslo_messaging_rabbit.") {
					t.Errorf("error %q does not name the option", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			version, err := p.handshake(t, cfg, tt.clientCert)
			if tt.wantErr {
				if err == nil {
					t.Fatal("handshake succeeded")
				}
				return
			}
			if err != nil {
				t.Fatalf("handshake: %v", err)
			}
			if version != tt.wantVersion {
				t.Errorf("version %x, want %x", version, tt.wantVersion)
			}
		})
	}
}
