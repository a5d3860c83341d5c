package shim_test

import (
	"crypto/ed25519"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/trustpool/trustpool/internal/config"
	"github.com/trustpool/trustpool/internal/verdict"
	"github.com/trustpool/trustpool/nova-filter-shim/internal/shimtest"
	"github.com/trustpool/trustpool/nova-filter-shim/shim"
)

func TestSampleConfig(t *testing.T) {
	cfg := shim.DefaultConfig()
	if err := config.Load(&cfg, config.LoadOptions{File: filepath.Join("..", "..", "etc", "filter-shim.toml.sample"), Environ: []string{}}); err != nil {
		t.Fatalf("sample does not load: %v", err)
	}
	def := shim.DefaultConfig()
	// The sample documents the defaults: it must not change them.
	if cfg.Shim != def.Shim {
		t.Errorf("sample [filter_shim] differs from the defaults:\n sample  %+v\n default %+v", cfg.Shim, def.Shim)
	}
	if cfg.Default.MaxMessageSize != shim.DefaultMaxMessageSize {
		t.Errorf("sample max_message_size = %d, want the default %d", cfg.Default.MaxMessageSize, shim.DefaultMaxMessageSize)
	}
	if cfg.Default.ControlExchange != "trustpool" || !strings.HasPrefix(cfg.Default.TransportURL, "rabbit://") {
		t.Errorf("[DEFAULT] = %+v", cfg.Default)
	}
}

func TestConfigLayers(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "shim.toml")
	if err := os.WriteFile(file, []byte("[DEFAULT]\ntransport_url = \"rabbit://u:p@127.0.0.1:5672/\"\n[filter_shim]\nmax_verdict_age = \"2m\"\nsocket_group = \"\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := shim.DefaultConfig()
	err := config.Load(&cfg, config.LoadOptions{
		File:      file,
		Environ:   []string{"TRUSTPOOL_FILTER_SHIM__SOCKET_MODE=0600"},
		Overrides: []string{"filter_shim.resync_interval=0s"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Shim.MaxVerdictAge != 2*time.Minute || cfg.Shim.SocketMode != "0600" || cfg.Shim.ResyncInterval != 0 || cfg.Shim.SocketGroup != "" {
		t.Errorf("layers not applied: %+v", cfg.Shim)
	}
	cfg = shim.DefaultConfig()
	err = config.Load(&cfg, config.LoadOptions{File: file, Environ: []string{"TRUSTPOOL_FILTER_SHIM__SOCKET_PAHT=/x"}})
	if !errors.Is(err, config.ErrUnknownKey) || !strings.Contains(err.Error(), "socket_paht") {
		t.Errorf("unknown key: %v", err)
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name string
		edit func(*shim.Config)
		want []string // every one must appear
	}{
		{"no transport", func(c *shim.Config) { c.Default.TransportURL = "" }, []string{"DEFAULT.transport_url: is required"}},
		{"amqp transport", func(c *shim.Config) { c.Default.TransportURL = "amqp://h/" }, []string{"DEFAULT.transport_url"}},
		{"relative socket", func(c *shim.Config) { c.Shim.SocketPath = "shim.sock" }, []string{"filter_shim.socket_path", "not an absolute path"}},
		{"long socket", func(c *shim.Config) { c.Shim.SocketPath = "/" + strings.Repeat("s", 100) }, []string{"too long for a unix socket"}},
		{"bad mode", func(c *shim.Config) { c.Shim.SocketMode = "rw-rw----" }, []string{"filter_shim.socket_mode", "octal"}},
		{"mode too big", func(c *shim.Config) { c.Shim.SocketMode = "07777" }, []string{"filter_shim.socket_mode"}},
		{"relative snapshot file", func(c *shim.Config) { c.Shim.SnapshotFile = "v.snapshot" }, []string{"filter_shim.snapshot_file", "not an absolute path"}},
		{"snapshot file is the socket", func(c *shim.Config) { c.Shim.SnapshotFile = c.Shim.SocketPath }, []string{"filter_shim.snapshot_file", "socket_path"}},
		{"group-writable snapshot file", func(c *shim.Config) { c.Shim.SnapshotFileMode = "0660" }, []string{"filter_shim.snapshot_file_mode", "lets group or others write"}},
		{"bad snapshot file mode", func(c *shim.Config) { c.Shim.SnapshotFileMode = "rw" }, []string{"filter_shim.snapshot_file_mode", "octal"}},
		{"snapshot file interval", func(c *shim.Config) { c.Shim.SnapshotFileInterval = 0 }, []string{"filter_shim.snapshot_file_interval"}},
		{"snapshot file interval too long", func(c *shim.Config) { c.Shim.SnapshotFileInterval = time.Hour }, []string{"filter_shim.snapshot_file_interval"}},
		{"no key", func(c *shim.Config) { c.Shim.VerdictPublicKey = "" }, []string{"filter_shim.verdict_public_key: is required"}},
		{"tiny messages", func(c *shim.Config) { c.Default.MaxMessageSize = 100 }, []string{"DEFAULT.max_message_size"}},
		{"several", func(c *shim.Config) {
			c.Shim.SnapshotTimeout = 0
			c.Shim.MaxVerdictAge = -time.Second
			c.Shim.MaxHosts = 0
		}, []string{"filter_shim.snapshot_timeout", "filter_shim.max_verdict_age", "filter_shim.max_hosts"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := shim.DefaultConfig()
			cfg.Default.TransportURL = "rabbit://u:p@127.0.0.1:5672/"
			tc.edit(&cfg)
			err := cfg.Validate()
			if err == nil {
				t.Fatal("Validate() = nil")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
			if _, err := shim.New(cfg); err == nil {
				t.Error("New accepted an invalid configuration")
			}
		})
	}
	cfg := shim.DefaultConfig()
	cfg.Default.TransportURL = "rabbit://u:p@127.0.0.1:5672/"
	if err := cfg.Validate(); err != nil {
		t.Errorf("defaults + transport_url: %v", err)
	}
}

func TestLoadPublicKeys(t *testing.T) {
	dir := t.TempDir()
	one := shimtest.WritePublicKey(t, dir, shimtest.GoldenKey())
	keys, err := shim.LoadPublicKeys(one)
	if err != nil || len(keys) != 1 {
		t.Fatalf("one key: %v, %v", keys, err)
	}
	pemOf := func(k ed25519.PrivateKey) []byte {
		pub, _ := k.Public().(ed25519.PublicKey)
		b, err := verdict.MarshalPublicKeyPEM(pub)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	a := pemOf(shimtest.GoldenKey())
	two := filepath.Join(dir, "two.pem")
	if err := os.WriteFile(two, append(pemOf(shimtest.OtherKey()), a...), 0o600); err != nil {
		t.Fatal(err)
	}
	if keys, err := shim.LoadPublicKeys(two); err != nil || len(keys) != 2 {
		t.Errorf("two keys: %v, %v", len(keys), err)
	}
	for name, content := range map[string]string{
		"empty": "", "garbage": "not a key", "private": "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIHRydXN0cG9vbC12ZXJkaWN0LWdvbGRlbi12ZWN0b3Ih\n-----END PRIVATE KEY-----\n",
		"trailing garbage": string(a) + "junk",
	} {
		p := filepath.Join(dir, "bad.pem")
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := shim.LoadPublicKeys(p); !errors.Is(err, verdict.ErrKeyFile) {
			t.Errorf("%s: err = %v, want ErrKeyFile", name, err)
		}
	}
	if _, err := shim.LoadPublicKeys(filepath.Join(dir, "missing.pem")); err == nil {
		t.Error("missing file accepted")
	}
}
