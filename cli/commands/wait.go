package commands

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/trustpool/trustpool/internal/attestapi"
	"github.com/trustpool/trustpool/internal/attestclient"
)

// waitFlags are the options of commands that wait for the service.
type waitFlags struct {
	noWait  bool
	timeout time.Duration
}

func (w *waitFlags) add(cmd *cobra.Command, def time.Duration) {
	cmd.Flags().BoolVar(&w.noWait, "no-wait", false, "return at once instead of waiting for the result")
	cmd.Flags().DurationVar(&w.timeout, "wait-timeout", def, "how long to wait for the result")
}

// ErrWaitTimeout is returned when the awaited verdict did not come in time.
var ErrWaitTimeout = errors.New("timed out waiting")

// newerThan accepts a verdict newer than before's that was verified at or
// after since (the service's clock; a zero since is ignored).
func newerThan(before attestapi.Host, since time.Time) func(*attestapi.Verdict) bool {
	var seq uint64
	if before.Verdict != nil {
		seq = before.Verdict.Seq
	}
	return func(v *attestapi.Verdict) bool {
		return v != nil && v.Seq > seq && !v.VerifiedAt.Before(since)
	}
}

// waitVerdict polls host until done accepts its verdict, showing what it
// waits for on a terminal.
func (c *CLI) waitVerdict(ctx context.Context, cl *attestclient.Client, host string, timeout time.Duration,
	what string, done func(*attestapi.Verdict) bool) (attestapi.Host, error) {
	if timeout <= 0 {
		return attestapi.Host{}, usagef("--wait-timeout must be positive")
	}
	p := c.progress()
	defer p.Done()
	deadline := c.cfg.Now().Add(timeout)
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tick := time.NewTicker(c.cfg.PollInterval)
	defer tick.Stop()
	for {
		p.Update(what + ": waiting for the new verdict")
		h, err := cl.GetHost(ctx, host)
		switch {
		case err == nil && done(h.Verdict):
			return h, nil
		case err != nil && ctx.Err() == nil:
			return h, err
		}
		if ctx.Err() != nil || !c.cfg.Now().Before(deadline) {
			return h, fmt.Errorf("%w %s for a new verdict of %s; the round may still complete: see %s host show %s",
				ErrWaitTimeout, timeout, host, Name, host)
		}
		select {
		case <-ctx.Done():
		case <-tick.C:
		}
	}
}
