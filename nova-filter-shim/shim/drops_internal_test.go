package shim

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/trustpool/trustpool/nova-filter-shim/internal/trustcache"
)

// recordLog keeps the records logged at warning level and above.
type recordLog struct {
	mu      sync.Mutex
	records []slog.Record
}

func (l *recordLog) Enabled(_ context.Context, lvl slog.Level) bool { return lvl >= slog.LevelWarn }
func (l *recordLog) Handle(_ context.Context, r slog.Record) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.records = append(l.records, r.Clone())
	return nil
}
func (l *recordLog) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l *recordLog) WithGroup(string) slog.Handler      { return l }

func (l *recordLog) attrs(i int) map[string]string {
	l.mu.Lock()
	defer l.mu.Unlock()
	m := map[string]string{}
	l.records[i].Attrs(func(a slog.Attr) bool { m[a.Key] = a.Value.String(); return true })
	return m
}

func (l *recordLog) len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.records)
}

func forged(n int, reason trustcache.DropReason) []trustcache.Drop {
	d := make([]trustcache.Drop, n)
	for i := range d {
		d[i] = trustcache.Drop{Host: fmt.Sprintf("h%d", i), Reason: reason, Err: errors.New("signature does not verify")}
	}
	return d
}

func TestDropReportAggregates(t *testing.T) {
	rec := &recordLog{}
	r := newDropReport(slog.New(rec), 10*time.Second)
	t0 := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)

	// One message with 5,000 forged verdicts: one line, exact count.
	r.add(t0, "verdicts_changed", forged(5000, trustcache.DropBadSignature))
	if rec.len() != 1 {
		t.Fatalf("%d warnings for one message of 5,000 forged verdicts, want 1", rec.len())
	}
	want := map[string]string{"messages": "1", "bad_signature": "5000", "example_hosts": "[h0 h1 h2 h3 h4]", "example_error": "signature does not verify"}
	if diff := cmp.Diff(want, rec.attrs(0)); diff != "" {
		t.Errorf("first warning (-want +got):\n%s", diff)
	}
	// More within the interval: held back, then reported together.
	for i := range 100 {
		r.add(t0.Add(time.Duration(i)*time.Millisecond), "verdicts_changed", forged(50, trustcache.DropUnsigned))
		r.add(t0.Add(time.Duration(i)*time.Millisecond), "verdicts_changed", forged(1, trustcache.DropStale))
	}
	// Duplicates are never warned about.
	r.add(t0.Add(time.Second), "verdicts_changed", forged(1000, trustcache.DropDuplicate))
	if rec.len() != 1 {
		t.Fatalf("%d warnings within the interval, want still 1", rec.len())
	}
	r.flush(t0.Add(5*time.Second), false)
	if rec.len() != 1 {
		t.Fatalf("flush before the interval logged")
	}
	r.flush(t0.Add(10*time.Second), false)
	if rec.len() != 2 {
		t.Fatalf("%d warnings after the interval, want 2", rec.len())
	}
	want = map[string]string{"messages": "200", "unsigned": "5000", "stale_seq": "100", "example_hosts": "[h0 h1 h2 h3 h4]", "example_error": "signature does not verify"}
	if diff := cmp.Diff(want, rec.attrs(1)); diff != "" {
		t.Errorf("aggregated warning (-want +got):\n%s", diff)
	}
	// Nothing pending: nothing logged.
	r.flush(t0.Add(time.Hour), true)
	if rec.len() != 2 {
		t.Errorf("flush with nothing pending logged")
	}
}
