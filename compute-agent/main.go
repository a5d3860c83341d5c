// Command trustpool-agent is the attester on every compute node: it enrolls
// the host's TPM with the attestation service and answers its quote calls
// over RabbitMQ. See package agent; the command line is package daemon's.
package main

import (
	"context"

	"github.com/trustpool/trustpool/compute-agent/agent"
	"github.com/trustpool/trustpool/internal/daemon"
)

var program = daemon.Program[agent.Config]{
	Name: "trustpool-agent",
	Summary: "the Trustpool attestation agent on a compute node. It enrolls this host's TPM 2.0 with the\n" +
		"attestation service and answers its quote calls over the message bus (RabbitMQ); it opens no port.",
	ConfigFile:    agent.DefaultConfigFile,
	Sample:        "/etc/trustpool/agent.toml as the packages install it, etc/agent.toml.sample in the source",
	DefaultConfig: agent.DefaultConfig,
	Debug:         func(c *agent.Config) bool { return c.Default.Debug },
	Run: func(ctx context.Context, cfg agent.Config, env daemon.Env) error {
		cfg.Logger, cfg.NotifySocket = env.Logger, env.NotifySocket
		a, err := agent.New(cfg)
		if err != nil {
			return err
		}
		return a.Run(ctx)
	},
}

func main() { daemon.Main(program) }
