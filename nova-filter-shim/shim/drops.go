package shim

import (
	"log/slog"
	"sync"
	"time"

	"github.com/trustpool/trustpool/nova-filter-shim/internal/trustcache"
)

// dropLogInterval is the shortest time between two "dropped verdicts"
// warnings: anyone on the bus can cast thousands of forged verdicts, and
// each must not cost a log line. The counters in /metrics stay exact.
const dropLogInterval = 10 * time.Second

// maxDropExamples bounds the host names a warning quotes.
const maxDropExamples = 5

// dropReport aggregates dropped verdicts into at most one warning per
// dropLogInterval, with exact counts of everything dropped since the last
// one. Duplicates (a resend of the seq held) are expected and only
// counted, at debug level.
type dropReport struct {
	log   *slog.Logger
	every time.Duration

	mu         sync.Mutex
	last       time.Time
	counts     map[trustcache.DropReason]int
	messages   int
	examples   []string
	firstError string
}

func newDropReport(log *slog.Logger, every time.Duration) *dropReport {
	return &dropReport{log: log, every: every, counts: map[trustcache.DropReason]int{}}
}

// add records the drops of one message and logs when the last warning is
// at least every old.
func (r *dropReport) add(now time.Time, source string, drops []trustcache.Drop) {
	dups := 0
	r.mu.Lock()
	counted := false
	for _, d := range drops {
		if d.Reason == trustcache.DropDuplicate {
			dups++
			continue
		}
		counted = true
		r.counts[d.Reason]++
		if d.Host != "" && len(r.examples) < maxDropExamples {
			r.examples = append(r.examples, d.Host)
		}
		if r.firstError == "" && d.Err != nil {
			r.firstError = d.Err.Error()
		}
	}
	if counted {
		r.messages++
	}
	r.mu.Unlock()
	if dups > 0 {
		r.log.Debug("ignored duplicate verdicts", "source", source, "count", dups)
	}
	r.flush(now, false)
}

// flush logs what is pending if the last warning is old enough, or
// whenever force is set.
func (r *dropReport) flush(now time.Time, force bool) {
	r.mu.Lock()
	if r.messages == 0 || !force && now.Sub(r.last) < r.every {
		r.mu.Unlock()
		return
	}
	args := []any{"messages", r.messages}
	for _, reason := range trustcache.DropReasons {
		if n := r.counts[reason]; n > 0 {
			args = append(args, string(reason), n)
		}
	}
	args = append(args, "example_hosts", r.examples, "example_error", r.firstError)
	r.last = now
	r.counts = map[trustcache.DropReason]int{}
	r.messages, r.examples, r.firstError = 0, nil, ""
	r.mu.Unlock()
	r.log.Warn("dropped verdicts", args...)
}
