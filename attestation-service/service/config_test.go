package service_test

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/trustpool/trustpool/attestation-service/internal/api"
	"github.com/trustpool/trustpool/attestation-service/service"
	"github.com/trustpool/trustpool/internal/config"
	kpolicy "github.com/trustpool/trustpool/keystone-auth/policy"
)

var update = flag.Bool("update", false, "rewrite etc/policy.yaml.sample")

const repo = "../.."

func TestSampleConfigLoadsAndValidates(t *testing.T) {
	cfg := service.DefaultConfig()
	if err := config.Load(&cfg, config.LoadOptions{File: filepath.Join(repo, "etc/attestation.toml.sample"), Environ: []string{}}); err != nil {
		t.Fatalf("sample: %v", err)
	}
	if def := service.DefaultConfig(); cfg.Default.MaxMessageSize != def.Default.MaxMessageSize || cfg.Database.HistoryRetention != def.Database.HistoryRetention ||
		cfg.Database.AuditRetention != service.DefaultRetention {
		t.Errorf("sample max_message_size %d, retention %v/%v: want the defaults", cfg.Default.MaxMessageSize, cfg.Database.HistoryRetention, cfg.Database.AuditRetention)
	}
	if cfg.Attestation.Interval != 10*time.Second || cfg.Enrollment.Mode != "auto" || !cfg.Enrollment.RequireEKCert {
		t.Errorf("sample values not read: %+v", cfg.Attestation)
	}
	// The sample documents the defaults of [launch] and the launch key.
	if def := service.DefaultConfig(); !reflect.DeepEqual(def.Launch, cfg.Launch) || def.Keys.LaunchKey != cfg.Keys.LaunchKey ||
		def.Keys.LaunchKeyKEM != cfg.Keys.LaunchKeyKEM || cfg.Keys.CreateLaunchKey {
		t.Errorf("sample [launch] %+v, keys %+v: want the defaults %+v", cfg.Launch, cfg.Keys, def.Launch)
	}
	// The actions are off by default, notifications on.
	if cfg.Placement.MirrorTraits || cfg.Revocation.DisableComputeService || !cfg.Revocation.Notifications ||
		cfg.Placement.NodeLookup != "nova" || cfg.Revocation.BrakeWindow != 10*time.Minute {
		t.Errorf("sample [placement] / [revocation]: %+v %+v", cfg.Placement, cfg.Revocation)
	}
	if _, err := service.New(cfg); err != nil {
		t.Errorf("New(sample) = %v", err)
	}
}

func TestValidateNamesKeys(t *testing.T) {
	tests := []struct {
		name string
		mod  func(*service.Config)
		want string
	}{
		{"validity above 3x interval", func(c *service.Config) { c.Attestation.VerdictValidity = 31 * time.Second }, "attestation.verdict_validity"},
		{"validity below interval", func(c *service.Config) { c.Attestation.VerdictValidity = 5 * time.Second }, "attestation.verdict_validity"},
		{"nonce lifetime above 2x interval", func(c *service.Config) { c.Attestation.NonceLifetime = 21 * time.Second }, "attestation.nonce_lifetime"},
		{"quote timeout above interval", func(c *service.Config) { c.Attestation.QuoteTimeout = 11 * time.Second }, "attestation.quote_timeout"},
		{"jitter", func(c *service.Config) { c.Attestation.Jitter = 10 * time.Second }, "attestation.jitter"},
		{"interval", func(c *service.Config) { c.Attestation.Interval = 0 }, "attestation.interval"},
		{"concurrency", func(c *service.Config) { c.Attestation.Concurrency = 0 }, "attestation.concurrency"},
		{"pcrs", func(c *service.Config) { c.Attestation.PCRs = []int{0, 24} }, "attestation.pcrs"},
		{"pcr 0 missing", func(c *service.Config) { c.Attestation.PCRs = []int{7} }, "attestation.pcrs"},
		{"mode", func(c *service.Config) { c.Enrollment.Mode = "yolo" }, "enrollment.mode"},
		{"roots", func(c *service.Config) { c.Enrollment.EKRootsDir = "" }, "enrollment.ek_roots_dir"},
		{"database", func(c *service.Config) { c.Database.Connection = "postgresql://x/" }, "database.connection"},
		{"transport", func(c *service.Config) { c.Default.TransportURL = "amqp://x" }, "DEFAULT.transport_url"},
		{"listen", func(c *service.Config) { c.API.Listen = "nope" }, "api.listen"},
		{"relative public endpoint", func(c *service.Config) { c.API.PublicEndpoint = "cloud.example.org/attestation" }, "api.public_endpoint"},
		{"public endpoint scheme", func(c *service.Config) { c.API.PublicEndpoint = "ftp://cloud.example.org/" }, "api.public_endpoint"},
		{"public endpoint query", func(c *service.Config) { c.API.PublicEndpoint = "https://cloud.example.org/?a=b" }, "api.public_endpoint"},
		{"public endpoint fragment", func(c *service.Config) { c.API.PublicEndpoint = "https://cloud.example.org/#x" }, "api.public_endpoint"},
		{"public endpoint empty fragment", func(c *service.Config) { c.API.PublicEndpoint = "https://cloud.example.org/#" }, "api.public_endpoint"},
		{"public endpoint user", func(c *service.Config) { c.API.PublicEndpoint = "https://u:p@cloud.example.org/" }, "api.public_endpoint"},
		{"public endpoint no host", func(c *service.Config) { c.API.PublicEndpoint = "https:///attestation" }, "api.public_endpoint"},
		{"heartbeat", func(c *service.Config) { c.Attestation.HeartbeatInterval = time.Minute }, "attestation.heartbeat_interval"},
		{"node lookup", func(c *service.Config) { c.Placement.NodeLookup = "guess" }, "placement.node_lookup"},
		{"reconcile", func(c *service.Config) { c.Placement.ReconcileInterval = 0 }, "placement.reconcile_interval"},
		{"placement interfaces", func(c *service.Config) { c.Placement.ValidInterfaces = []string{"private"} }, "placement.valid_interfaces"},
		{"placement override", func(c *service.Config) { c.Placement.EndpointOverride = "placement:8778" }, "placement.endpoint_override"},
		{"nova timeout", func(c *service.Config) { c.Nova.Timeout = 0 }, "nova.timeout"},
		{"nova interfaces", func(c *service.Config) { c.Nova.ValidInterfaces = nil }, "nova.valid_interfaces"},
		{"brake percent", func(c *service.Config) { c.Revocation.BrakePercent = 0 }, "revocation.brake_percent"},
		{"brake window", func(c *service.Config) { c.Revocation.BrakeWindow = 0 }, "revocation.brake_window"},
		{"brake min hosts", func(c *service.Config) { c.Revocation.BrakeMinHosts = 0 }, "revocation.brake_min_hosts"},
		{"unknown without disable", func(c *service.Config) { c.Revocation.DisableOnUnknown = true }, "revocation.disable_on_unknown"},
		{"max message size", func(c *service.Config) { c.Default.MaxMessageSize = 1000 }, "DEFAULT.max_message_size"},
		{"validity shorter than a round gap", func(c *service.Config) { c.Attestation.VerdictValidity = 17 * time.Second }, "attestation.verdict_validity"},
		{"negative retention", func(c *service.Config) { c.Database.HistoryRetention = -time.Hour }, "database.history_retention"},
		{"tiny retention", func(c *service.Config) { c.Database.AuditRetention = time.Minute }, "database.audit_retention"},
		{"history retention shorter than brake window", func(c *service.Config) {
			c.Database.HistoryRetention, c.Revocation.BrakeWindow = time.Hour, 2*time.Hour
		}, "database.history_retention: 1h0m0s is shorter than revocation.brake_window (2h0m0s)"},
		{"launch kem", func(c *service.Config) { c.Keys.LaunchKeyKEM = "rsa" }, "keys.launch_key_kem"},
		{"no launch key", func(c *service.Config) { c.Keys.LaunchKey = "" }, "keys.launch_key"},
		{"nova's own queue", func(c *service.Config) { c.Launch.NotificationQueue = "versioned_notifications.info" }, "launch.notification_queue"},
		{"notification broker", func(c *service.Config) { c.Launch.NotificationTransportURL = "amqp://x" }, "launch.notification_transport_url"},
		{"deliver timeout", func(c *service.Config) { c.Launch.DeliverTimeout = 0 }, "launch.deliver_timeout"},
		{"launch concurrency", func(c *service.Config) { c.Launch.Concurrency = 0 }, "launch.concurrency"},
		{"request lifetime", func(c *service.Config) { c.Launch.MaxRequestLifetime = time.Second }, "launch.max_request_lifetime"},
		{"redelivery wanted interval", func(c *service.Config) { c.Launch.RedeliveryWantedInterval = 0 }, "launch.redelivery_wanted_interval"},
		{"redelivery user interval unset", func(c *service.Config) { c.Launch.RedeliveryUserInterval = 0 }, "launch.redelivery_user_interval"},
		{"redelivery user interval tiny", func(c *service.Config) { c.Launch.RedeliveryUserInterval = time.Millisecond }, "launch.redelivery_user_interval"},
		{"redelivery user interval huge", func(c *service.Config) { c.Launch.RedeliveryUserInterval = 2 * time.Hour }, "launch.redelivery_user_interval"},
		{"nova endpoint", func(c *service.Config) { c.Nova.EndpointOverride = "nova:8774" }, "nova.endpoint_override"},
		{"unknown verdict format", func(c *service.Config) { c.UpgradeLevels.Verdict = 3 }, "upgrade_levels.verdict: 3 is not a verdict format"},
		{"negative verdict format", func(c *service.Config) { c.UpgradeLevels.Verdict = -1 }, "upgrade_levels.verdict"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := service.DefaultConfig()
			cfg.Default.TransportURL = "rabbit://guest:guest@127.0.0.1:5672/"
			if err := cfg.Validate(); err != nil {
				t.Fatalf("defaults do not validate: %v", err)
			}
			tc.mod(&cfg)
			err := cfg.Validate()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Validate() = %v, want an error naming %s", err, tc.want)
			}
		})
	}
}

// TestPublicEndpointAccepted: absolute http(s) URLs, with or without a
// path, pass [api] public_endpoint's check (TestValidateNamesKeys holds the
// refusals).
func TestPublicEndpointAccepted(t *testing.T) {
	for _, e := range []string{"", "https://cloud.example.org/attestation", "http://192.0.2.1:9780", "https://[2001:db8::1]/attestation/"} {
		cfg := service.DefaultConfig()
		cfg.Default.TransportURL = "rabbit://guest:guest@127.0.0.1:5672/"
		cfg.API.PublicEndpoint = e
		if err := cfg.Validate(); err != nil {
			t.Errorf("public_endpoint %q: Validate() = %v", e, err)
		}
	}
}

// TestHistoryRetentionCoversBrakeWindow: a history retention of 0 (keep
// forever) or at least the brake window passes (TestValidateNamesKeys holds
// the refusal).
func TestHistoryRetentionCoversBrakeWindow(t *testing.T) {
	for _, retention := range []time.Duration{0, 2 * time.Hour, 3 * time.Hour} {
		cfg := service.DefaultConfig()
		cfg.Default.TransportURL = "rabbit://guest:guest@127.0.0.1:5672/"
		cfg.Database.HistoryRetention, cfg.Revocation.BrakeWindow = retention, 2*time.Hour
		if err := cfg.Validate(); err != nil {
			t.Errorf("history_retention %v, brake_window 2h: Validate() = %v", retention, err)
		}
	}
}

func TestPolicySampleUpToDate(t *testing.T) {
	var b bytes.Buffer
	if err := kpolicy.WriteSample(&b, api.Rules()); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(repo, "etc/policy.yaml.sample")
	if *update {
		if err := os.WriteFile(p, b.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, err := os.ReadFile(p)
	if err != nil {
		t.Fatalf("%v (run go test -run TestPolicySampleUpToDate -update)", err)
	}
	if !bytes.Equal(got, b.Bytes()) {
		t.Errorf("%s is stale: run go test ./attestation-service/service -run TestPolicySampleUpToDate -update", p)
	}
	// Every rule the API uses is registered.
	enf, err := kpolicy.New(kpolicy.Config{Options: kpolicy.DefaultOptions(), Defaults: api.Rules(), BaseDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	if undefined, cyclic, err := enf.CheckRules(); err != nil || len(undefined) > 0 || len(cyclic) > 0 {
		t.Errorf("CheckRules: undefined %v, cyclic %v, %v", undefined, cyclic, err)
	}
}

// TestPolicySampleMatchesOsloGenerator: etc/policy.yaml.sample, deprecated
// rules included, is byte for byte what oslopolicy-sample-generator
// (python3-oslo.policy) writes for the same defaults.
func TestPolicySampleMatchesOsloGenerator(t *testing.T) {
	if testing.Short() {
		t.Skip("runs /usr/bin/python3 with oslo.policy")
	}
	type op struct {
		Method string `json:"method"`
		Path   string `json:"path"`
	}
	type dep struct {
		Name     string `json:"name"`
		CheckStr string `json:"check_str"`
		Reason   string `json:"reason,omitempty"`
		Since    string `json:"since,omitempty"`
	}
	type def struct {
		Name                 string   `json:"name"`
		CheckStr             string   `json:"check_str"`
		Description          string   `json:"description"`
		Operations           []op     `json:"operations,omitempty"`
		ScopeTypes           []string `json:"scope_types,omitempty"`
		DeprecatedRule       *dep     `json:"deprecated_rule,omitempty"`
		DeprecatedForRemoval bool     `json:"deprecated_for_removal,omitempty"`
		DeprecatedReason     string   `json:"deprecated_reason,omitempty"`
		DeprecatedSince      string   `json:"deprecated_since,omitempty"`
	}
	var defs []def
	deprecated := 0
	for _, r := range api.Rules() {
		d := def{Name: r.Name, CheckStr: r.CheckStr, Description: r.Description, ScopeTypes: r.ScopeTypes,
			DeprecatedForRemoval: r.DeprecatedForRemoval, DeprecatedReason: r.DeprecatedReason, DeprecatedSince: r.DeprecatedSince}
		for _, o := range r.Operations {
			d.Operations = append(d.Operations, op{o.Method, o.Path})
		}
		if dr := r.DeprecatedRule; dr != nil {
			d.DeprecatedRule = &dep{Name: dr.Name, CheckStr: dr.CheckStr, Reason: dr.DeprecatedReason, Since: dr.DeprecatedSince}
		}
		if r.DeprecatedRule != nil || r.DeprecatedForRemoval {
			deprecated++
		}
		defs = append(defs, d)
	}
	in, err := json.Marshal([]map[string]any{{"defaults": defs, "sample": true}})
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(t.Context(), "/usr/bin/python3", filepath.Join(repo, "keystone-auth/policy/testdata/oslo_eval.py"))
	cmd.Stdin = bytes.NewReader(in)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("oslo_eval.py: %v\n%s", err, stderr.String())
	}
	var res []struct {
		Sample string `json:"sample"`
	}
	if err := json.Unmarshal(out, &res); err != nil || len(res) != 1 {
		t.Fatalf("oslo_eval.py output: %v", err)
	}
	got, err := os.ReadFile(filepath.Join(repo, "etc/policy.yaml.sample"))
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != res[0].Sample {
		t.Errorf("etc/policy.yaml.sample differs from oslopolicy-sample-generator's output:\n%s", res[0].Sample)
	}
	if n := strings.Count(res[0].Sample, "# DEPRECATED\n"); n != deprecated || n == 0 {
		t.Errorf("sample lists %d deprecated rules, want %d", n, deprecated)
	}
	if !strings.Contains(res[0].Sample, "cloud-wide") {
		t.Error("the sample does not say that the admin role is cloud-wide")
	}
}

// TestUpgradeLevelsVerdict: [upgrade_levels] verdict is read from the file
// layers (unset: the newest format); 1 and 2 are accepted, anything else is
// refused at start naming the key.
func TestUpgradeLevelsVerdict(t *testing.T) {
	for _, tc := range []struct {
		override string
		want     int
		err      string
	}{
		{"", 0, ""},
		{"upgrade_levels.verdict=1", 1, ""},
		{"upgrade_levels.verdict=2", 2, ""},
		{"upgrade_levels.verdict=3", 3, "upgrade_levels.verdict: 3 is not a verdict format this service writes"},
		{"upgrade_levels.verdict=0", 0, ""},
	} {
		t.Run(tc.override, func(t *testing.T) {
			cfg := service.DefaultConfig()
			var over []string
			if tc.override != "" {
				over = []string{tc.override}
			}
			// Load validates too; New (the daemon's start) again.
			err := config.Load(&cfg, config.LoadOptions{File: filepath.Join(repo, "etc/attestation.toml.sample"), Environ: []string{}, Overrides: over})
			if cfg.UpgradeLevels.Verdict != tc.want {
				t.Errorf("upgrade_levels.verdict = %d, want %d", cfg.UpgradeLevels.Verdict, tc.want)
			}
			if err == nil {
				_, err = service.New(cfg)
			}
			if tc.err == "" && err != nil || tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)) {
				t.Errorf("New = %v, want %q", err, tc.err)
			}
		})
	}
}
