package shim_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/trustpool/trustpool/internal/servicetest"
	"github.com/trustpool/trustpool/internal/verdict"
	"github.com/trustpool/trustpool/nova-filter-shim/internal/shimtest"
	"github.com/trustpool/trustpool/nova-filter-shim/shim"
)

// countLog counts log records by message, at warning level and above.
type countLog struct {
	mu sync.Mutex
	n  map[string]int
}

func (l *countLog) Enabled(_ context.Context, lvl slog.Level) bool { return lvl >= slog.LevelWarn }
func (l *countLog) Handle(_ context.Context, r slog.Record) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.n[r.Message]++
	return nil
}
func (l *countLog) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l *countLog) WithGroup(string) slog.Handler      { return l }

func (l *countLog) total() int {
	n, _ := l.counts()
	return n
}

// counts returns the total and a copy of the counts by message.
func (l *countLog) counts() (int, map[string]int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	n, m := 0, make(map[string]int, len(l.n))
	for msg, c := range l.n {
		n += c
		m[msg] = c
	}
	return n, m
}

// One verdicts_changed message with 5,000 forged verdicts costs one log
// line, while the drop counters stay exact.
func TestForgedFloodIsOneWarning(t *testing.T) {
	rabbit := servicetest.RabbitMQ(t)
	feeder := shimtest.NewFeeder(t, rabbit.URL)
	feeder.Serve(t)
	logs := &countLog{n: map[string]int{}}
	r := start(t, rabbit.URL, func(c *shim.Config) { c.Logger = slog.New(logs) })
	eventually(t, "snapshot", r.shim.SnapshotLoaded)

	now := time.Now().UTC()
	var flood []json.RawMessage
	for i := range 5000 {
		v := shimtest.Verdict(fmt.Sprintf("victim-%d", i), verdict.Untrusted, 1, now, time.Hour)
		flood = append(flood, shimtest.Forge(t, shimtest.GoldenKey(), v, verdict.Trusted))
	}
	if err := feeder.Publish(t.Context(), flood...); err != nil {
		t.Fatal(err)
	}
	eventually(t, "5,000 drops counted", func() bool {
		return r.metric(t, `trustpool_filter_shim_verdicts_dropped_total{reason="bad_signature"} 5000`)
	})
	// The drops are counted before they are reported: wait for the report.
	eventually(t, "the warning", func() bool { return logs.total() > 0 })
	if n, counts := logs.counts(); n != 1 {
		t.Errorf("%d warnings for one message of 5,000 forged verdicts (%v), want 1", n, counts)
	}
	if d := r.filter(t, []string{"victim-0"}, "trusted", nil); len(d.Passes) != 0 {
		t.Errorf("forged verdict accepted: %+v", d)
	}
}

// /healthz says degraded once nothing has come from the service for
// longer than the verdict validity, here through a real broker outage, and
// recovers when verdicts flow again.
func TestHealthzDegradedWhileServiceSilent(t *testing.T) {
	rabbit := servicetest.NewRabbitMQ(t)
	key := shimtest.GoldenKey()
	const validity = 2 * time.Second
	var seq atomic.Uint64
	fresh := func() json.RawMessage {
		return shimtest.Sign(t, key, shimtest.Verdict("h1", verdict.Trusted, seq.Add(1), time.Now().UTC(), validity, "baseline"))
	}
	feeder := shimtest.NewFeeder(t, rabbit.URL)
	feeder.SetSnapshot(fresh())
	feeder.Serve(t)
	// The "service": a fresh verdict every 300 ms, as its rounds and
	// heartbeat would; failures while the broker is down are ignored.
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })
	wg.Go(func() {
		for ctx.Err() == nil {
			pctx, pcancel := context.WithTimeout(ctx, time.Second)
			_ = feeder.Publish(pctx, fresh())
			pcancel()
			select {
			case <-ctx.Done():
			case <-time.After(300 * time.Millisecond):
			}
		}
	})
	r := start(t, rabbit.URL, func(c *shim.Config) {
		c.Rabbit.RabbitRetryInterval, c.Rabbit.RabbitRetryBackoff, c.Rabbit.RabbitIntervalMax = 1, 0, 1
	})
	healthy := func() bool {
		code, body := r.get(t, "/healthz")
		return code == http.StatusOK && strings.Contains(body, `"service_silent":false`)
	}
	eventually(t, "healthy while verdicts flow", healthy)

	rabbit.StopApp(t)
	eventually(t, "degraded during the broker outage", func() bool {
		code, body := r.get(t, "/healthz")
		return code == http.StatusServiceUnavailable && strings.Contains(body, `"status":"degraded"`) && strings.Contains(body, `"service_silent":true`)
	})
	if !r.metric(t, "trustpool_filter_shim_service_silent 1") {
		t.Error("metrics do not report the silence")
	}
	rabbit.StartApp(t)
	eventually(t, "healthy again after the outage", healthy)
}
