// Command trustpool-filter-shim is the trust cache next to nova-scheduler:
// it follows the attestation service's signed verdicts over RabbitMQ and
// answers the Nova TrustedFilter on a unix socket. See package shim.
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

	"github.com/trustpool/trustpool/internal/config"
	"github.com/trustpool/trustpool/nova-filter-shim/shim"
)

func main() {
	var flags config.Flags
	flags.Register(flag.CommandLine, shim.DefaultConfigFile)
	flag.Parse()
	cfg := shim.DefaultConfig()
	if err := config.Load(&cfg, flags.LoadOptions()); err != nil {
		fmt.Fprintf(os.Stderr, "trustpool-filter-shim: configuration: %v\n", err)
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
	s, err := shim.New(cfg)
	if err == nil {
		err = s.Run(ctx)
	}
	if err != nil && !errors.Is(err, context.Canceled) {
		cfg.Logger.Error("trustpool-filter-shim failed", "error", err)
		os.Exit(1)
	}
}
