// Command trustpool is the command line client of the Trustpool attestation
// service (package commands).
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/trustpool/trustpool/cli/commands"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := commands.New(commands.DefaultConfig()).Run(ctx, os.Args[1:])
	stop()
	os.Exit(commands.ExitCode(err))
}
