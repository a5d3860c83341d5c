// Command trustpool-attestation is the attestation service (verifier, trust
// registry and REST API). See package service; the command line is package
// daemon's.
//
//	trustpool-attestation [-config-file FILE] [-set section.key=value ...]
//	trustpool-attestation create-key PATH
//	trustpool-attestation create-launch-key [-kem KEM] PATH
//	trustpool-attestation inspect-eventlog FILE
package main

import (
	"context"
	"path/filepath"

	"github.com/trustpool/trustpool/attestation-service/service"
	"github.com/trustpool/trustpool/internal/daemon"
	"github.com/trustpool/trustpool/internal/eventlog/inspect"
)

var program = daemon.Program[service.Config]{
	Name: "trustpool-attestation",
	Summary: "the Trustpool attestation service. It enrolls compute hosts' TPMs, verifies their quotes and\n" +
		"measured-boot logs against profiles, publishes signed per-host verdicts on the message bus and\n" +
		"serves a Keystone-protected REST API.",
	ConfigFile:    service.DefaultConfigFile,
	Sample:        "/etc/trustpool/attestation.toml as the packages install it, etc/attestation.toml.sample in the source",
	DefaultConfig: service.DefaultConfig,
	Debug:         func(c *service.Config) bool { return c.Default.Debug },
	Run: func(ctx context.Context, cfg service.Config, env daemon.Env) error {
		cfg.Logger, cfg.NotifySocket = env.Logger, env.NotifySocket
		cfg.ConfigDir = filepath.Dir(env.ConfigFile)
		s, err := service.New(cfg)
		if err != nil {
			return err
		}
		return s.Run(ctx)
	},
	Commands: []daemon.Command{{
		Name: "create-key", Usage: "PATH",
		Summary: "create the verdict signing key ([keys] verdict_signing_key) once, as the service's user; prints the public key shims pin",
		Run:     service.CreateKeyMain,
	}, {
		Name: "create-launch-key", Usage: "[-kem mlkem768x25519|x25519] PATH",
		Summary: "create the HPKE launch key ([keys] launch_key) once, as the service's user; prints the fingerprint tenants pin",
		Run:     service.CreateLaunchKeyMain,
	}, {
		Name: "inspect-eventlog", Usage: "FILE",
		Summary: "print a TCG firmware event log's replayed PCRs and boot facts as JSON (offline, not verified)",
		Run:     inspect.Main,
	}},
}

func main() { daemon.Main(program) }
