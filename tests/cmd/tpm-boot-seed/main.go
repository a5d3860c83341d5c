// Command tpm-boot-seed "boots" a swtpm for tests and demos: it writes a
// realistic TCG event log for a host build and extends the TPM's PCRs to
// match (see internal/bootseed). Never run it against a real TPM.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/trustpool/trustpool/internal/bootseed"
	"github.com/trustpool/trustpool/internal/tpm"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	code := bootseed.Main(ctx, os.Args[1:], tpm.DialSWTPM, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
