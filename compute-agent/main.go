// Command trustpool-agent is the attester on every compute node: it enrolls
// the host's TPM with the attestation service and answers its quote calls
// over RabbitMQ. See package agent.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/trustpool/trustpool/compute-agent/agent"
	"github.com/trustpool/trustpool/internal/config"
)

func main() {
	var flags config.Flags
	flags.Register(flag.CommandLine, agent.DefaultConfigFile)
	flag.Parse()
	cfg := agent.DefaultConfig()
	if err := config.Load(&cfg, flags.LoadOptions()); err != nil {
		fmt.Fprintf(os.Stderr, "trustpool-agent: configuration: %v\n", err)
		os.Exit(2)
	}
	level := slog.LevelInfo
	if cfg.Default.Debug {
		level = slog.LevelDebug
	}
	cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	cfg.NotifySocket = os.Getenv("NOTIFY_SOCKET")
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	a, err := agent.New(cfg)
	if err == nil {
		err = a.Run(ctx)
	}
	if err != nil && !errors.Is(err, context.Canceled) {
		cfg.Logger.Error("trustpool-agent failed", "error", err)
		os.Exit(1)
	}
}
