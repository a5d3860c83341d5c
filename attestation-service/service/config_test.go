package service_test

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
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
		{"database", func(c *service.Config) { c.Database.Connection = "postgresql://x/y" }, "database.connection"},
		{"transport", func(c *service.Config) { c.Default.TransportURL = "amqp://x" }, "DEFAULT.transport_url"},
		{"listen", func(c *service.Config) { c.API.Listen = "nope" }, "api.listen"},
		{"heartbeat", func(c *service.Config) { c.Attestation.HeartbeatInterval = time.Minute }, "attestation.heartbeat_interval"},
		{"max message size", func(c *service.Config) { c.Default.MaxMessageSize = 1000 }, "DEFAULT.max_message_size"},
		{"validity shorter than a round gap", func(c *service.Config) { c.Attestation.VerdictValidity = 17 * time.Second }, "attestation.verdict_validity"},
		{"negative retention", func(c *service.Config) { c.Database.HistoryRetention = -time.Hour }, "database.history_retention"},
		{"tiny retention", func(c *service.Config) { c.Database.AuditRetention = time.Minute }, "database.audit_retention"},
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
