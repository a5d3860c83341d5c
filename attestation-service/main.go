// Command trustpool-attestation is the attestation service (verifier, trust
// registry and REST API). See package service.
//
//	trustpool-attestation [-config-file FILE] [-set section.key=value ...]
//	trustpool-attestation create-key PATH
//	trustpool-attestation inspect-eventlog FILE
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/trustpool/trustpool/attestation-service/service"
	"github.com/trustpool/trustpool/internal/config"
	"github.com/trustpool/trustpool/internal/eventlog/inspect"
)

func main() {
	if len(os.Args) > 1 {
		switch os.Args[1] {
		case "inspect-eventlog":
			os.Exit(inspect.Main(os.Args[2:], os.Stdout, os.Stderr))
		case "create-key":
			os.Exit(service.CreateKeyMain(os.Args[2:], os.Stdout, os.Stderr))
		}
	}
	var flags config.Flags
	flags.Register(flag.CommandLine, service.DefaultConfigFile)
	flag.Parse()
	cfg := service.DefaultConfig()
	opts := flags.LoadOptions()
	if err := config.Load(&cfg, opts); err != nil {
		fmt.Fprintf(os.Stderr, "trustpool-attestation: configuration: %v\n", err)
		os.Exit(2)
	}
	cfg.ConfigDir = filepath.Dir(opts.File)
	level := slog.LevelInfo
	if cfg.Default.Debug {
		level = slog.LevelDebug
	}
	cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	s, err := service.New(cfg)
	if err == nil {
		err = s.Run(ctx)
	}
	if err != nil && !errors.Is(err, context.Canceled) {
		cfg.Logger.Error("trustpool-attestation failed", "error", err)
		os.Exit(1)
	}
}
