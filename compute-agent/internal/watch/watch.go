// Package watch notices measurement changes on the host between two
// attestations — the IMA list growing, PCRs moving — so the agent can cast
// measurements_changed and the service re-attests at once instead of at its
// next interval.
//
// It is a hint, not evidence: the service ignores nothing because of it and
// trusts nothing from it. So the watcher is cheap and simple: every interval
// it reads the watched SHA-256 PCRs and asks for IMA entries past the last
// offset it saw; the first look records a baseline and reports nothing.
// A change is reported until the notification succeeds (the broker may be
// away), then forgotten.
package watch

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"maps"
	"math"
	"slices"
	"strings"
	"time"
)

// Reasons passed to Notify.
const (
	ReasonPCRChanged = "pcr_changed"
	ReasonIMAGrew    = "ima_log_grew"
)

// maxIMAReads bounds the IMA reads of one check after the baseline (each
// returns at most a chunk); a longer backlog is read on the following checks.
const maxIMAReads = 64

// Config configures a Watcher.
type Config struct {
	// Interval between checks (required for Run).
	Interval time.Duration
	// PCRs reads the watched PCRs; nil watches none.
	PCRs func(ctx context.Context) (map[int][]byte, error)
	// IMA returns the offset after the complete IMA entries from offset
	// (tpm.TPM.IMALog's next); nil watches no IMA list. An error wrapping
	// fs.ErrNotExist means the host has no IMA list (not an error).
	IMA func(offset int64) (next int64, err error)
	// Notify is called with the reason of a change.
	Notify func(ctx context.Context, reason string) error
	// IMAPCR is left out of "pcr_changed" when the IMA list grew in the same
	// check (IMA extends it); default 10.
	IMAPCR int
	Logger *slog.Logger
}

// Watcher compares measurements between checks. It is not safe for
// concurrent use.
type Watcher struct {
	cfg     Config
	log     *slog.Logger
	primed  bool
	pcrs    map[int][]byte
	imaOff  int64
	pending string
}

// New returns a Watcher.
func New(cfg Config) *Watcher {
	if cfg.IMAPCR == 0 {
		cfg.IMAPCR = 10
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Watcher{cfg: cfg, log: log}
}

// Check reads the measurements and returns the reason they changed since
// the last check ("" when they did not, and on the first check, which
// records the baseline). On an error the baseline is kept.
func (w *Watcher) Check(ctx context.Context) (string, error) {
	var pcrs map[int][]byte
	if w.cfg.PCRs != nil {
		p, err := w.cfg.PCRs(ctx)
		if err != nil {
			return "", fmt.Errorf("read PCRs: %w", err)
		}
		pcrs = p
	}
	off := w.imaOff
	if w.cfg.IMA != nil {
		reads := maxIMAReads
		if !w.primed {
			reads = math.MaxInt // the baseline reads to the end
		}
		for range reads {
			next, err := w.cfg.IMA(off)
			if errors.Is(err, fs.ErrNotExist) {
				next = 0
			} else if err != nil {
				return "", fmt.Errorf("read IMA list: %w", err)
			}
			if next == off || next < off {
				off = next
				break
			}
			off = next
		}
	}
	if !w.primed {
		w.primed, w.pcrs, w.imaOff = true, pcrs, off
		return "", nil
	}
	var reasons []string
	grew := off > w.imaOff
	changed := changedPCRs(w.pcrs, pcrs)
	if grew {
		reasons = append(reasons, ReasonIMAGrew)
		changed = slices.DeleteFunc(changed, func(p int) bool { return p == w.cfg.IMAPCR })
	}
	if len(changed) > 0 || off < w.imaOff {
		// A shrinking IMA list means a reboot; the PCRs moved too.
		reasons = append([]string{ReasonPCRChanged}, reasons...)
	}
	if len(changed) > 0 {
		w.log.Info("PCRs changed", "pcrs", changed)
	}
	w.pcrs, w.imaOff = pcrs, off
	return strings.Join(reasons, ","), nil
}

func changedPCRs(old, cur map[int][]byte) []int {
	var out []int
	for _, p := range slices.Sorted(maps.Keys(cur)) {
		if o, ok := old[p]; !ok || string(o) != string(cur[p]) {
			out = append(out, p)
		}
	}
	for p := range old {
		if _, ok := cur[p]; !ok {
			out = append(out, p)
		}
	}
	slices.Sort(out)
	return out
}

// Step runs one check and notifies a change (or one left pending by a
// failed notification).
func (w *Watcher) Step(ctx context.Context) {
	reason, err := w.Check(ctx)
	if err != nil {
		w.log.Warn("measurement check failed", "error", err)
	}
	if reason != "" {
		w.pending = mergeReasons(w.pending, reason)
	}
	if w.pending == "" {
		return
	}
	if err := w.cfg.Notify(ctx, w.pending); err != nil {
		if ctx.Err() == nil {
			w.log.Warn("measurements_changed not sent; retrying at the next check", "reason", w.pending, "error", err)
		}
		return
	}
	w.log.Info("measurements changed; re-attestation requested", "reason", w.pending)
	w.pending = ""
}

func mergeReasons(a, b string) string {
	if a == "" {
		return b
	}
	set := strings.Split(a, ",")
	for _, r := range strings.Split(b, ",") {
		if !slices.Contains(set, r) {
			set = append(set, r)
		}
	}
	return strings.Join(set, ",")
}

// Run checks every Interval until ctx is done (the first check, the
// baseline, runs at once) and returns ctx's error.
func (w *Watcher) Run(ctx context.Context) error {
	if w.cfg.Interval <= 0 {
		return errors.New("watch: interval must be positive")
	}
	tick := time.NewTicker(w.cfg.Interval)
	defer tick.Stop()
	w.Step(ctx)
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
			w.Step(ctx)
		}
	}
}
