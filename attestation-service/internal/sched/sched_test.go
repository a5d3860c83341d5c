package sched_test

import (
	"context"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/trustpool/trustpool/attestation-service/internal/sched"
)

type recorder struct {
	mu      sync.Mutex
	rounds  map[string][]time.Time
	running int
	maxRun  int
	dur     time.Duration
}

func (r *recorder) attest(ctx context.Context, host string) {
	r.mu.Lock()
	r.rounds[host] = append(r.rounds[host], time.Now())
	r.running++
	r.maxRun = max(r.maxRun, r.running)
	r.mu.Unlock()
	select {
	case <-time.After(r.dur):
	case <-ctx.Done():
	}
	r.mu.Lock()
	r.running--
	r.mu.Unlock()
}

func start(t *testing.T, cfg sched.Config, r *recorder) (*sched.Scheduler, context.CancelFunc) {
	t.Helper()
	cfg.Attest = r.attest
	s := sched.New(cfg)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { _ = s.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return s, cancel
}

func TestIntervalWithoutJitter(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := &recorder{rounds: map[string][]time.Time{}, dur: time.Second}
		s, cancel := start(t, sched.Config{Interval: 10 * time.Second, Concurrency: 4, Rand: func() float64 { return 0 }}, r)
		t0 := time.Now()
		s.Add("a")
		time.Sleep(35 * time.Second)
		cancel()
		synctest.Wait()
		got := r.rounds["a"]
		// Rounds at 0, 11, 22, 33: the interval counts from the end of a round.
		want := []time.Duration{0, 11 * time.Second, 22 * time.Second, 33 * time.Second}
		if len(got) != len(want) {
			t.Fatalf("rounds at %v, want %d rounds", got, len(want))
		}
		for i, w := range want {
			if d := got[i].Sub(t0); d != w {
				t.Errorf("round %d at %v, want %v", i, d, w)
			}
		}
	})
}

func TestJitterStaysInBounds(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		vals := []float64{0.99, 0.0, 0.5, 0.25}
		i := 0
		var mu sync.Mutex
		rnd := func() float64 { mu.Lock(); defer mu.Unlock(); v := vals[i%len(vals)]; i++; return v }
		r := &recorder{rounds: map[string][]time.Time{}}
		s, cancel := start(t, sched.Config{Interval: 10 * time.Second, Jitter: 2 * time.Second, Concurrency: 1, Rand: rnd}, r)
		s.Add("a")
		time.Sleep(100 * time.Second)
		cancel()
		synctest.Wait()
		got := r.rounds["a"]
		if len(got) < 8 {
			t.Fatalf("only %d rounds in 100 s", len(got))
		}
		for k := 1; k < len(got); k++ {
			if d := got[k].Sub(got[k-1]); d < 8*time.Second || d > 12*time.Second {
				t.Errorf("gap %d = %v, want within 10s ± 2s", k, d)
			}
		}
	})
}

func TestConcurrencyBound(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := &recorder{rounds: map[string][]time.Time{}, dur: 3 * time.Second}
		s, cancel := start(t, sched.Config{Interval: 10 * time.Second, Concurrency: 2, Rand: func() float64 { return 0 }}, r)
		for _, h := range []string{"a", "b", "c", "d", "e"} {
			s.Trigger(h)
		}
		time.Sleep(9 * time.Second)
		cancel()
		synctest.Wait()
		if r.maxRun != 2 {
			t.Errorf("max concurrent rounds = %d, want 2", r.maxRun)
		}
		n := 0
		for _, rs := range r.rounds {
			n += len(rs)
		}
		// 5 hosts, 2 at a time, 3 s each: all 5 started within 9 s.
		if n != 5 {
			t.Errorf("%d rounds started, want 5", n)
		}
	})
}

func TestTriggerDuringRoundRunsAgain(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := &recorder{rounds: map[string][]time.Time{}, dur: 2 * time.Second}
		s, cancel := start(t, sched.Config{Interval: time.Minute, Concurrency: 1, Rand: func() float64 { return 0 }}, r)
		t0 := time.Now()
		s.Trigger("a")
		time.Sleep(time.Second)
		s.Trigger("a") // during the first round
		time.Sleep(10 * time.Second)
		cancel()
		synctest.Wait()
		got := r.rounds["a"]
		if len(got) != 2 || got[1].Sub(t0) != 2*time.Second {
			t.Errorf("rounds at %v; want a second round right after the first (at 2s)", got)
		}
	})
}

func TestRemoveStopsRounds(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := &recorder{rounds: map[string][]time.Time{}}
		s, cancel := start(t, sched.Config{Interval: 5 * time.Second, Concurrency: 1, Rand: func() float64 { return 0 }}, r)
		s.Trigger("a")
		time.Sleep(time.Second)
		s.Remove("a")
		time.Sleep(30 * time.Second)
		cancel()
		synctest.Wait()
		if n := len(r.rounds["a"]); n != 1 {
			t.Errorf("%d rounds after Remove, want 1", n)
		}
		if s.Hosts() != 0 {
			t.Errorf("Hosts() = %d", s.Hosts())
		}
	})
}
