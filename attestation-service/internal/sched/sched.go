// Package sched decides when each host is attested: every interval, with a
// random jitter so hosts do not move in lockstep, at most Concurrency rounds
// at once, and immediately when triggered (enrollment, a measurements_changed
// cast, attest-now). A trigger that arrives while the host's round runs
// causes one more round right after it, so a change is never missed.
//
// It uses the time package's clock and timers only; tests run it inside a
// testing/synctest bubble, which fakes them. It does not log.
package sched

import (
	"context"
	"math/rand/v2"
	"sync"
	"time"
)

// Config configures a Scheduler.
type Config struct {
	// Interval between two rounds of a host.
	Interval time.Duration
	// Jitter: each delay is Interval ± a uniform random part of Jitter.
	Jitter time.Duration
	// Concurrency bounds the rounds running at once (≥ 1).
	Concurrency int
	// Attest runs one round; it must return when ctx is done.
	Attest func(ctx context.Context, host string)
	// Rand returns a uniform value in [0, 1) (default math/rand/v2).
	Rand func() float64
}

type entry struct {
	due     time.Time
	running bool
	again   bool
}

// Scheduler runs attestation rounds.
type Scheduler struct {
	cfg   Config
	mu    sync.Mutex
	hosts map[string]*entry
	wake  chan struct{}
	slots chan struct{}
}

// New returns a Scheduler.
func New(cfg Config) *Scheduler {
	if cfg.Concurrency < 1 {
		cfg.Concurrency = 1
	}
	if cfg.Rand == nil {
		cfg.Rand = rand.Float64
	}
	return &Scheduler{cfg: cfg, hosts: map[string]*entry{}, wake: make(chan struct{}, 1),
		slots: make(chan struct{}, cfg.Concurrency)}
}

func (s *Scheduler) poke() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// next returns the delay until a host's next round.
func (s *Scheduler) next() time.Duration {
	d := s.cfg.Interval
	if s.cfg.Jitter > 0 {
		d += time.Duration((2*s.cfg.Rand() - 1) * float64(s.cfg.Jitter))
	}
	return max(d, s.cfg.Interval/2, time.Millisecond)
}

// Add schedules host (no-op if known), first round within one jitter (or
// interval when there is no jitter) from now, spreading a fleet after a
// restart.
func (s *Scheduler) Add(host string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.hosts[host]; ok {
		return
	}
	spread := s.cfg.Jitter
	if spread <= 0 || spread > s.cfg.Interval {
		spread = s.cfg.Interval
	}
	s.hosts[host] = &entry{due: time.Now().Add(time.Duration(s.cfg.Rand() * float64(spread)))}
	s.poke()
}

// Remove stops attesting host (a running round finishes).
func (s *Scheduler) Remove(host string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.hosts, host)
}

// Trigger attests host as soon as a slot is free, adding it if needed.
func (s *Scheduler) Trigger(host string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.hosts[host]
	if !ok {
		e = &entry{}
		s.hosts[host] = e
	}
	if e.running {
		e.again = true
		return
	}
	e.due = time.Now()
	s.poke()
}

// TriggerKnown is Trigger for hosts already scheduled only (untrusted
// callers such as measurements_changed casts cannot add hosts). It reports
// whether host is scheduled.
func (s *Scheduler) TriggerKnown(host string) bool {
	s.mu.Lock()
	_, ok := s.hosts[host]
	s.mu.Unlock()
	if ok {
		s.Trigger(host)
	}
	return ok
}

// Hosts returns the number of scheduled hosts.
func (s *Scheduler) Hosts() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.hosts)
}

// Run runs rounds until ctx is done, then waits for running rounds.
func (s *Scheduler) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		wait := s.dispatch(ctx, &wg)
		timer.Reset(wait)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-s.wake:
		case <-timer.C:
		}
	}
}

// dispatch starts every due round a slot is free for and returns how long
// to sleep until the next due one.
func (s *Scheduler) dispatch(ctx context.Context, wg *sync.WaitGroup) time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	wait := time.Hour
	for host, e := range s.hosts {
		if e.running {
			continue
		}
		if d := e.due.Sub(now); d > 0 {
			wait = min(wait, d)
			continue
		}
		select {
		case s.slots <- struct{}{}:
		default:
			// All slots busy: a finishing round pokes us.
			continue
		}
		e.running = true
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.cfg.Attest(ctx, host)
			<-s.slots
			s.mu.Lock()
			if cur, ok := s.hosts[host]; ok && cur == e {
				e.running = false
				if e.again {
					e.again = false
					e.due = time.Now()
				} else {
					e.due = time.Now().Add(s.next())
				}
			}
			s.mu.Unlock()
			s.poke()
		}()
	}
	return wait
}
