// Command tpm-boot-seed gives a swtpm a simulated measured boot, for tests,
// demos and DevStack's development clouds: it writes a realistic TCG event
// log for a host build and extends the TPM's PCRs to match (see
// internal/bootseed). It refuses a hardware TPM, and it is not part of the
// Debian packages: a production host never runs it.
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
