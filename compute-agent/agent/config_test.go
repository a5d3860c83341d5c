package agent_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/trustpool/trustpool/compute-agent/agent"
	"github.com/trustpool/trustpool/internal/config"
)

func TestSampleConfig(t *testing.T) {
	cfg := agent.DefaultConfig()
	if err := config.Load(&cfg, config.LoadOptions{File: filepath.Join("..", "..", "etc", "agent.toml.sample"), Environ: []string{}}); err != nil {
		t.Fatalf("sample does not load: %v", err)
	}
	def := agent.DefaultConfig()
	// The sample documents the defaults: it must not change them.
	if diff := cmp.Diff(def.TPM, cfg.TPM); diff != "" {
		t.Errorf("sample [tpm] differs from the defaults (-default +sample):\n%s", diff)
	}
	if diff := cmp.Diff(def.Agent, cfg.Agent); diff != "" {
		t.Errorf("sample [agent] differs from the defaults (-default +sample):\n%s", diff)
	}
	if diff := cmp.Diff(def.Launch, cfg.Launch); diff != "" {
		t.Errorf("sample [launch] differs from the defaults (-default +sample):\n%s", diff)
	}
	if cfg.Default.MaxMessageSize != agent.DefaultMaxMessageSize {
		t.Errorf("sample max_message_size = %d, want the default %d", cfg.Default.MaxMessageSize, agent.DefaultMaxMessageSize)
	}
	if cfg.Default.ControlExchange != "trustpool" || !strings.HasPrefix(cfg.Default.TransportURL, "rabbit://") || cfg.Default.Host != "" {
		t.Errorf("[DEFAULT] = %+v", cfg.Default)
	}
}

func TestConfigLayers(t *testing.T) {
	file := filepath.Join(t.TempDir(), "agent.toml")
	body := `[DEFAULT]
host = "compute-7"
transport_url = "rabbit://u:p@127.0.0.1:5672/"
[tpm]
swtpm = "127.0.0.1:2321"
ak_algorithm = "rsa"
[agent]
watch_pcrs = [7, 10]
`
	if err := os.WriteFile(file, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := agent.DefaultConfig()
	err := config.Load(&cfg, config.LoadOptions{
		File:      file,
		Environ:   []string{"TRUSTPOOL_AGENT__WATCH_INTERVAL=3s", "TRUSTPOOL_TPM__IMA_LOG="},
		Overrides: []string{"agent.state_dir=/srv/agent", "tpm.ak_algorithm=ecc"},
	})
	if err != nil {
		t.Fatal(err)
	}
	want := agent.DefaultConfig()
	want.Default.Host, want.Default.TransportURL = "compute-7", "rabbit://u:p@127.0.0.1:5672/"
	want.TPM.SWTPM, want.TPM.IMALog = "127.0.0.1:2321", ""
	want.Agent.WatchPCRs, want.Agent.WatchInterval, want.Agent.StateDir = []int{7, 10}, 3*time.Second, "/srv/agent"
	if diff := cmp.Diff(want.Default, cfg.Default); diff != "" {
		t.Errorf("[DEFAULT] (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(want.TPM, cfg.TPM); diff != "" {
		t.Errorf("[tpm] (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(want.Agent, cfg.Agent); diff != "" {
		t.Errorf("[agent] (-want +got):\n%s", diff)
	}

	cfg = agent.DefaultConfig()
	err = config.Load(&cfg, config.LoadOptions{File: file, Environ: []string{"TRUSTPOOL_TPM__EVENTLOG=/x"}})
	if !errors.Is(err, config.ErrUnknownKey) || !strings.Contains(err.Error(), "eventlog") {
		t.Errorf("unknown key: %v", err)
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name string
		edit func(*agent.Config)
		want []string // every one must appear; nil means valid
	}{
		{"defaults", func(*agent.Config) {}, nil},
		{"swtpm without device", func(c *agent.Config) { c.TPM.Device, c.TPM.SWTPM = "", "127.0.0.1:1" }, nil},
		{"no ima, watcher on pcrs", func(c *agent.Config) { c.TPM.IMALog = "" }, nil},
		{"watcher off", func(c *agent.Config) { c.Agent.WatchInterval, c.Agent.WatchPCRs, c.TPM.IMALog = 0, nil, "" }, nil},
		{"no transport", func(c *agent.Config) { c.Default.TransportURL = "" }, []string{"DEFAULT.transport_url: is required"}},
		{"amqp transport", func(c *agent.Config) { c.Default.TransportURL = "amqp://h/" }, []string{"DEFAULT.transport_url"}},
		{"long host", func(c *agent.Config) { c.Default.Host = strings.Repeat("h", 256) }, []string{"DEFAULT.host"}},
		{"no exchange", func(c *agent.Config) { c.Default.ControlExchange = "" }, []string{"DEFAULT.control_exchange"}},
		{"tiny messages", func(c *agent.Config) { c.Default.MaxMessageSize = 0 }, []string{"DEFAULT.max_message_size"}},
		{"no tpm", func(c *agent.Config) { c.TPM.Device = "" }, []string{"tpm.device: is required"}},
		{"swtpm without port", func(c *agent.Config) { c.TPM.SWTPM = "127.0.0.1" }, []string{`tpm.swtpm: "127.0.0.1" is not host:port`}},
		{"swtpm without host", func(c *agent.Config) { c.TPM.SWTPM = ":2321" }, []string{`tpm.swtpm: ":2321"`}},
		{"swtpm port not a number", func(c *agent.Config) { c.TPM.SWTPM = "localhost:tpm" }, []string{`tpm.swtpm: "localhost:tpm"`}},
		{"swtpm port out of range", func(c *agent.Config) { c.TPM.SWTPM = "[::1]:65536" }, []string{`tpm.swtpm: "[::1]:65536"`}},
		{"swtpm ipv6", func(c *agent.Config) { c.TPM.SWTPM = "[::1]:2321" }, nil},
		{"relative device", func(c *agent.Config) { c.TPM.Device = "tpmrm0" }, []string{"tpm.device", "not an absolute path"}},
		{"no event log", func(c *agent.Config) { c.TPM.EventLog = "" }, []string{"tpm.event_log: is required"}},
		{"relative ima", func(c *agent.Config) { c.TPM.IMALog = "ima" }, []string{"tpm.ima_log"}},
		{"ak alg", func(c *agent.Config) { c.TPM.AKAlgorithm = "dsa" }, []string{`tpm.ak_algorithm: "dsa"`}},
		{"ek alg", func(c *agent.Config) { c.TPM.EKAlgorithm = "ecc521" }, []string{"tpm.ek_algorithm"}},
		{"tpm timeout", func(c *agent.Config) { c.TPM.Timeout = 0 }, []string{"tpm.timeout: must be positive"}},
		{"relative state", func(c *agent.Config) { c.Agent.StateDir = "state" }, []string{"agent.state_dir"}},
		{"nothing to watch", func(c *agent.Config) { c.Agent.WatchPCRs, c.TPM.IMALog = nil, "" }, []string{"agent.watch_pcrs: is empty"}},
		{"bad pcrs", func(c *agent.Config) { c.Agent.WatchPCRs = []int{1, 1, 24} }, []string{"agent.watch_pcrs: 1 ", "agent.watch_pcrs: 24 "}},
		{"retry order", func(c *agent.Config) { c.Agent.RetryInitial = time.Hour }, []string{"agent.retry_initial: is larger"}},
		{"directory injector", func(c *agent.Config) { c.Launch.Injector, c.Launch.Directory = agent.InjectorDirectory, "/run/x" }, nil},
		{"directory injector without directory", func(c *agent.Config) { c.Launch.Injector = agent.InjectorDirectory }, []string{"launch.directory"}},
		{"socket injector without directory", func(c *agent.Config) { c.Launch.Injector = agent.InjectorQGASocket }, []string{"launch.qga_socket_dir"}},
		{"unknown injector", func(c *agent.Config) { c.Launch.Injector = "ssh" }, []string{`launch.injector: "ssh"`}},
		{"relative libvirt socket", func(c *agent.Config) { c.Launch.LibvirtSocket = "sock" }, []string{"launch.libvirt_socket"}},
		{"relative guest dir", func(c *agent.Config) { c.Launch.GuestDir = "run" }, []string{"launch.guest_dir"}},
		{"launch timeout", func(c *agent.Config) { c.Launch.Timeout = 0 }, []string{"launch.timeout"}},
		{"redelivery check off", func(c *agent.Config) { c.Launch.RedeliveryCheckInterval = 0 }, nil},
		{"redelivery check too often", func(c *agent.Config) { c.Launch.RedeliveryCheckInterval = 100 * time.Millisecond },
			[]string{"launch.redelivery_check_interval: 100ms is neither 0 (off) nor at least 1s"}},
		{"redelivery check negative", func(c *agent.Config) { c.Launch.RedeliveryCheckInterval = -time.Second },
			[]string{"launch.redelivery_check_interval"}},
		{"several", func(c *agent.Config) {
			c.Agent.RPCTimeout, c.Agent.QuoteTimeout, c.Agent.WatchInterval, c.Agent.ServiceTopic = 0, -1, -1, ""
		}, []string{"agent.rpc_timeout", "agent.quote_timeout", "agent.watch_interval", "agent.service_topic"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := agent.DefaultConfig()
			cfg.Default.TransportURL = "rabbit://u:p@127.0.0.1:5672/"
			tc.edit(&cfg)
			err := cfg.Validate()
			if tc.want == nil {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			if err == nil {
				t.Fatal("Validate() = nil, want an error")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Validate() = %q, missing %q", err, w)
				}
			}
		})
	}
}

func TestLoadReportsSectionKey(t *testing.T) {
	// Validation runs inside Load too, naming section.key.
	cfg := agent.DefaultConfig()
	err := config.Load(&cfg, config.LoadOptions{Environ: []string{}, Overrides: []string{"tpm.ak_algorithm=rsa4096"}})
	if err == nil || !strings.Contains(err.Error(), "tpm.ak_algorithm") || !strings.Contains(err.Error(), "DEFAULT.transport_url") {
		t.Errorf("Load() = %v", err)
	}
}

func TestNewRejectsInvalid(t *testing.T) {
	if _, err := agent.New(agent.DefaultConfig()); err == nil || !strings.Contains(err.Error(), "DEFAULT.transport_url") {
		t.Errorf("New() = %v", err)
	}
	// A malformed swtpm address is a configuration error at start, not a TPM that
	// is retried forever.
	cfg := agent.DefaultConfig()
	cfg.Default.TransportURL = "rabbit://u:p@127.0.0.1:5672/"
	cfg.TPM.SWTPM = "127.0.0.1"
	if _, err := agent.New(cfg); err == nil || !strings.Contains(err.Error(), "tpm.swtpm") {
		t.Errorf("New() with swtpm %q = %v, want an error naming tpm.swtpm", cfg.TPM.SWTPM, err)
	}
}
