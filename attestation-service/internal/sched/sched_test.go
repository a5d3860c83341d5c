package sched_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/trustpool/trustpool/attestation-service/internal/sched"
)

type recorder struct {
	mu        sync.Mutex
	rounds    map[string][]time.Time
	triggered map[string][]bool
	running   int
	maxRun    int
	dur       time.Duration
	// next is what Attest returns per host (zero: the interval).
	next map[string]time.Time
}

func (r *recorder) attest(ctx context.Context, host string, triggered bool) time.Time {
	r.mu.Lock()
	r.rounds[host] = append(r.rounds[host], time.Now())
	if r.triggered == nil {
		r.triggered = map[string][]bool{}
	}
	r.triggered[host] = append(r.triggered[host], triggered)
	r.running++
	r.maxRun = max(r.maxRun, r.running)
	r.mu.Unlock()
	select {
	case <-time.After(r.dur):
	case <-ctx.Done():
	}
	r.mu.Lock()
	r.running--
	next := r.next[host]
	r.mu.Unlock()
	return next
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

// A one-off host gets one round, marked triggered, and is forgotten; a
// scheduled host's interval rounds are not marked triggered.
func TestTriggerOnceAndTriggeredFlag(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := &recorder{rounds: map[string][]time.Time{}}
		s, cancel := start(t, sched.Config{Interval: 10 * time.Second, Concurrency: 2, Rand: func() float64 { return 0 }}, r)
		s.TriggerOnce("other")
		s.Add("mine")
		time.Sleep(25 * time.Second)
		s.Trigger("mine")
		time.Sleep(time.Second)
		if s.Has("other") || !s.Has("mine") || s.Hosts() != 1 {
			t.Errorf("Has(other) %v, Has(mine) %v, Hosts %d", s.Has("other"), s.Has("mine"), s.Hosts())
		}
		if s.TriggerKnown("other") {
			t.Error("TriggerKnown accepted a one-off host")
		}
		cancel()
		synctest.Wait()
		if got := r.triggered["other"]; len(got) != 1 || !got[0] {
			t.Errorf("one-off rounds %v, want one triggered round", got)
		}
		// mine: rounds at 0, 10, 20 by the interval, then the trigger.
		if got, want := r.triggered["mine"], []bool{false, false, false, true}; !slices.Equal(got, want) {
			t.Errorf("mine's rounds triggered %v, want %v", got, want)
		}
	})
}

// A one-off that gets scheduled while it waits keeps its interval after.
func TestOnceBecomesScheduled(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := &recorder{rounds: map[string][]time.Time{}, dur: time.Second}
		s, cancel := start(t, sched.Config{Interval: 10 * time.Second, Concurrency: 1, Rand: func() float64 { return 0 }}, r)
		s.TriggerOnce("h")
		s.Add("h")
		time.Sleep(25 * time.Second)
		cancel()
		synctest.Wait()
		if n := len(r.rounds["h"]); n != 3 {
			t.Errorf("%d rounds in 25 s, want 3 (at 0, 11, 22)", n)
		}
	})
}

// AddDue keeps a host's rhythm (a hand-over from another instance): the
// first round is at the given time; a time already past starts within the
// jitter.
func TestAddDue(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := &recorder{rounds: map[string][]time.Time{}}
		s, cancel := start(t, sched.Config{Interval: 30 * time.Second, Jitter: 2 * time.Second, Concurrency: 2,
			Rand: func() float64 { return 0.5 }}, r)
		t0 := time.Now()
		s.AddDue("later", t0.Add(17*time.Second))
		s.AddDue("overdue", t0.Add(-time.Hour))
		time.Sleep(20 * time.Second)
		cancel()
		synctest.Wait()
		if got := r.rounds["later"]; len(got) != 1 || got[0].Sub(t0) != 17*time.Second {
			t.Errorf("later's rounds at %v, want one at 17s", got)
		}
		if got := r.rounds["overdue"]; len(got) != 1 || got[0].Sub(t0) != time.Second {
			t.Errorf("overdue's rounds at %v, want one at 1s (half the jitter)", got)
		}
	})
}

// Many hosts: every one gets its rounds, and removing half of them while
// they are queued stops theirs.
func TestManyHosts(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := &recorder{rounds: map[string][]time.Time{}, dur: 10 * time.Millisecond}
		s, cancel := start(t, sched.Config{Interval: 10 * time.Second, Jitter: time.Second, Concurrency: 8}, r)
		for i := range 2000 {
			s.Add(fmt.Sprintf("h%d", i))
		}
		time.Sleep(15 * time.Second)
		for i := 0; i < 2000; i += 2 {
			s.Remove(fmt.Sprintf("h%d", i))
		}
		time.Sleep(30 * time.Second)
		cancel()
		synctest.Wait()
		for i := range 2000 {
			n := len(r.rounds[fmt.Sprintf("h%d", i)])
			if i%2 == 0 && n > 2 || i%2 == 1 && n < 4 {
				t.Fatalf("h%d: %d rounds in 45 s (removed at 15 s: %v)", i, n, i%2 == 0)
			}
		}
		if s.Hosts() != 1000 {
			t.Errorf("Hosts() = %d, want 1000", s.Hosts())
		}
	})
}

func BenchmarkDispatch10k(b *testing.B) {
	s := sched.New(sched.Config{Interval: time.Hour, Concurrency: 1 << 20, Attest: func(context.Context, string, bool) time.Time { return time.Time{} }})
	for i := range 10000 {
		s.AddDue(fmt.Sprintf("h%d", i), time.Now().Add(time.Hour))
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = s.Run(ctx) }()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		s.Trigger(fmt.Sprintf("h%d", i%10000))
	}
}

// A round can name its host's next round (a skipped round keeps the rhythm
// of the instance that did it).
func TestRoundNamesNextDue(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		t0 := time.Now()
		r := &recorder{rounds: map[string][]time.Time{}, next: map[string]time.Time{"h": t0.Add(3 * time.Second)}}
		s, cancel := start(t, sched.Config{Interval: 10 * time.Second, Concurrency: 1, Rand: func() float64 { return 0 }}, r)
		s.Trigger("h")
		time.Sleep(time.Second)
		r.mu.Lock()
		r.next["h"] = time.Time{}
		r.mu.Unlock()
		time.Sleep(5 * time.Second)
		cancel()
		synctest.Wait()
		if got := r.rounds["h"]; len(got) != 2 || got[1].Sub(t0) != 3*time.Second {
			t.Errorf("rounds at %v, want the second at 3s", got)
		}
	})
}

// A triggered round goes before interval rounds that are overdue because
// every slot was busy.
func TestTriggerJumpsTheQueue(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := &recorder{rounds: map[string][]time.Time{}, dur: 5 * time.Second}
		s, cancel := start(t, sched.Config{Interval: time.Minute, Concurrency: 1, Rand: func() float64 { return 0 }}, r)
		t0 := time.Now()
		s.Trigger("busy") // holds the only slot for 5 s
		time.Sleep(time.Millisecond)
		for i := range 5 {
			s.AddDue(fmt.Sprintf("late%d", i), t0.Add(time.Second)) // overdue once the slot frees
		}
		time.Sleep(2 * time.Second)
		s.Trigger("changed")
		time.Sleep(8 * time.Second)
		cancel()
		synctest.Wait()
		if got := r.rounds["changed"]; len(got) != 1 || got[0].Sub(t0) != 5*time.Second {
			t.Errorf("triggered round at %v, want at 5s, before the overdue interval rounds", got)
		}
	})
}
