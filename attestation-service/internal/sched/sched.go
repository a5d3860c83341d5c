// Package sched decides when each host is attested: every interval, with a
// random jitter so hosts do not move in lockstep, at most Concurrency rounds
// at once, and immediately when triggered (enrollment, a measurements_changed
// cast, attest-now). A trigger that arrives while the host's round runs
// causes one more round right after it, so a change is never missed.
//
// Hosts wait in a heap ordered by their next round, so the cost of starting
// a round does not grow with the fleet (tens of thousands of hosts); rounds
// run on one goroutine each, at most Concurrency at a time.
//
// A host is either scheduled (Add, AddDue, Trigger: attested every interval
// until Remove) or a one-off (TriggerOnce: one round now, then forgotten),
// which is how an instance attests a host another instance owns when a
// trigger reaches it.
//
// It uses the time package's clock and timers only; tests run it inside a
// testing/synctest bubble, which fakes them. It does not log.
package sched

import (
	"container/heap"
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
	// Attest runs one round; it must return when ctx is done. triggered
	// is true for rounds asked for by a trigger, false for rounds due by
	// the interval. It returns when the host's next round is due; the zero
	// time means one interval (± jitter) from now.
	Attest func(ctx context.Context, host string, triggered bool) (next time.Time)
	// Rand returns a uniform value in [0, 1) (default math/rand/v2).
	Rand func() float64
}

type entry struct {
	host    string
	due     time.Time
	running bool
	again   bool
	// triggered: the next round was asked for by a trigger.
	triggered bool
	// once: a one-off host, forgotten after its round.
	once  bool
	index int // in the heap; -1 when not queued
}

// queue is a min-heap of entries: triggered rounds first (a change to
// look at must not wait behind interval rounds that are late because every
// slot is busy), then by due time.
type queue []*entry

func (q queue) Len() int { return len(q) }
func (q queue) Less(i, j int) bool {
	if q[i].triggered != q[j].triggered {
		return q[i].triggered
	}
	return q[i].due.Before(q[j].due)
}
func (q queue) Swap(i, j int) {
	q[i], q[j] = q[j], q[i]
	q[i].index, q[j].index = i, j
}
func (q *queue) Push(x any) {
	e := x.(*entry)
	e.index = len(*q)
	*q = append(*q, e)
}
func (q *queue) Pop() any {
	old := *q
	e := old[len(old)-1]
	old[len(old)-1] = nil
	*q = old[:len(old)-1]
	e.index = -1
	return e
}

// Scheduler runs attestation rounds.
type Scheduler struct {
	cfg       Config
	mu        sync.Mutex
	hosts     map[string]*entry
	scheduled int // hosts that are not one-offs
	q         queue
	wake      chan struct{}
	slots     chan struct{}
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

// spread is the window over which hosts added without a due time start.
func (s *Scheduler) spread() time.Duration {
	spread := s.cfg.Jitter
	if spread <= 0 || spread > s.cfg.Interval {
		spread = s.cfg.Interval
	}
	return spread
}

// queueLocked (re)queues e for its due time.
func (s *Scheduler) queueLocked(e *entry) {
	if e.index >= 0 {
		heap.Fix(&s.q, e.index)
	} else {
		heap.Push(&s.q, e)
	}
	s.poke()
}

// Add schedules host (no-op if scheduled), first round within one jitter
// (or interval when there is no jitter) from now, spreading a fleet after a
// restart. A one-off host becomes scheduled.
func (s *Scheduler) Add(host string) {
	s.AddDue(host, time.Now().Add(time.Duration(s.cfg.Rand()*float64(s.spread()))))
}

// AddDue schedules host (no-op if scheduled) with its first round at due,
// or, when due has passed, within one jitter from now. A one-off host
// becomes scheduled (its pending round stays).
func (s *Scheduler) AddDue(host string, due time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e, ok := s.hosts[host]; ok {
		if e.once {
			e.once = false
			s.scheduled++
		}
		return
	}
	if now := time.Now(); due.Before(now) {
		due = now.Add(time.Duration(s.cfg.Rand() * float64(s.spread())))
	}
	e := &entry{host: host, due: due, index: -1}
	s.hosts[host] = e
	s.scheduled++
	s.queueLocked(e)
}

// Remove stops attesting host (a running round finishes).
func (s *Scheduler) Remove(host string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.hosts[host]
	if !ok {
		return
	}
	s.removeLocked(e)
}

func (s *Scheduler) removeLocked(e *entry) {
	delete(s.hosts, e.host)
	if !e.once {
		s.scheduled--
	}
	if e.index >= 0 {
		heap.Remove(&s.q, e.index)
	}
}

// Trigger attests host as soon as a slot is free, adding it (scheduled) if
// needed.
func (s *Scheduler) Trigger(host string) {
	s.trigger(host, false)
}

// TriggerOnce attests host as soon as a slot is free; a host not scheduled
// gets that one round only.
func (s *Scheduler) TriggerOnce(host string) {
	s.trigger(host, true)
}

func (s *Scheduler) trigger(host string, once bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.hosts[host]
	if !ok {
		e = &entry{host: host, index: -1, once: once}
		s.hosts[host] = e
		if !once {
			s.scheduled++
		}
	}
	if e.running {
		e.again = true
		return
	}
	e.due, e.triggered = time.Now(), true
	s.queueLocked(e)
}

// TriggerKnown is Trigger for hosts already scheduled only (untrusted
// callers such as measurements_changed casts cannot add hosts). It reports
// whether host is scheduled.
func (s *Scheduler) TriggerKnown(host string) bool {
	s.mu.Lock()
	e, ok := s.hosts[host]
	ok = ok && !e.once
	s.mu.Unlock()
	if ok {
		s.Trigger(host)
	}
	return ok
}

// Has reports whether host is scheduled (one-offs are not).
func (s *Scheduler) Has(host string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.hosts[host]
	return ok && !e.once
}

// Hosts returns the number of scheduled hosts.
func (s *Scheduler) Hosts() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.scheduled
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

// dispatch starts due rounds while slots are free and returns how long to
// sleep until the next due one.
func (s *Scheduler) dispatch(ctx context.Context, wg *sync.WaitGroup) time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	for s.q.Len() > 0 {
		e := s.q[0]
		if d := e.due.Sub(now); d > 0 {
			return d
		}
		select {
		case s.slots <- struct{}{}:
		default:
			// All slots busy: a finishing round pokes us.
			return time.Hour
		}
		heap.Pop(&s.q)
		e.running = true
		triggered := e.triggered
		e.triggered = false
		wg.Add(1)
		go func() {
			defer wg.Done()
			next := s.cfg.Attest(ctx, e.host, triggered)
			<-s.slots
			s.finish(e, next)
		}()
	}
	return time.Hour
}

// finish requeues e after its round (for next, when not zero), unless it
// was removed or was a one-off.
func (s *Scheduler) finish(e *entry, next time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	defer s.poke()
	e.running = false
	if cur, ok := s.hosts[e.host]; !ok || cur != e {
		return
	}
	switch {
	case e.again:
		e.again = false
		e.due, e.triggered = time.Now(), true
	case e.once:
		s.removeLocked(e)
		return
	case !next.IsZero():
		e.due = next
	default:
		e.due = time.Now().Add(s.next())
	}
	s.queueLocked(e)
}
