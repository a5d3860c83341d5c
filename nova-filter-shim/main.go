// Command trustpool-filter-shim is the trust cache next to nova-scheduler:
// it follows the attestation service's signed verdicts over RabbitMQ and
// answers the Nova TrustedFilter on a unix socket. See package shim; the
// command line is package daemon's.
package main

import (
	"context"

	"github.com/trustpool/trustpool/internal/daemon"
	"github.com/trustpool/trustpool/nova-filter-shim/shim"
)

var program = daemon.Program[shim.Config]{
	Name: "trustpool-filter-shim",
	Summary: "the Trustpool filter shim next to nova-scheduler. It keeps the attestation service's signed\n" +
		"per-host verdicts (from the message bus) and answers the Nova TrustedFilter on a unix socket.",
	ConfigFile:    shim.DefaultConfigFile,
	Sample:        "/etc/trustpool/filter-shim.toml as the packages install it, etc/filter-shim.toml.sample in the source",
	DefaultConfig: shim.DefaultConfig,
	Debug:         func(c *shim.Config) bool { return c.Default.Debug },
	Run: func(ctx context.Context, cfg shim.Config, env daemon.Env) error {
		cfg.Logger, cfg.NotifySocket = env.Logger, env.NotifySocket
		s, err := shim.New(cfg)
		if err != nil {
			return err
		}
		return s.Run(ctx)
	},
}

func main() { daemon.Main(program) }
