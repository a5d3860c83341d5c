package keptwatch

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

const (
	launchA = "6f1c2a3b-4d5e-4f60-8a7b-9c0d1e2f3a4b"
	instA   = "178b0921-8f85-4257-88b6-2e743b5a975c"
	launchB = "0b6d1c3e-8f2a-4c55-9d0e-6a7b8c9d0e1f"
	instB   = "2b6d1c3e-8f2a-4c55-9d0e-6a7b8c9d0e1f"
)

// fakeHost is the host as the watcher sees it: kept blobs, running
// instances (nil error unless presenceErr), and the asks it made.
type fakeHost struct {
	now         time.Time
	kept        []Kept
	running     map[string]bool
	presenceErr map[string]bool
	askErr      error
	asks        []string
}

func newWatcher(t *testing.T, h *fakeHost, rebooted bool) *Watcher {
	t.Helper()
	h.now = time.Unix(1_800_000_000, 0)
	if h.running == nil {
		h.running = map[string]bool{}
	}
	return New(Config{Interval: time.Second, Rebooted: rebooted, Backoff: time.Minute, BackoffMax: 4 * time.Minute, MaxAsks: 4,
		Now:  func() time.Time { return h.now },
		Kept: func() ([]Kept, error) { return h.kept, nil },
		Present: func(_ context.Context, id string) (bool, error) {
			if h.presenceErr[id] {
				return false, errors.New("libvirt not up")
			}
			return h.running[id], nil
		},
		Ask: func(_ context.Context, k Kept) error {
			h.asks = append(h.asks, k.LaunchID)
			return h.askErr
		},
	})
}

// check runs one check after advancing the clock by d and returns the asks
// it made.
func (h *fakeHost) check(t *testing.T, w *Watcher, d time.Duration) []string {
	t.Helper()
	h.now = h.now.Add(d)
	h.asks = nil
	w.Check(t.Context())
	return h.asks
}

func TestStartTransitions(t *testing.T) {
	h := &fakeHost{kept: []Kept{{launchA, instA}}, running: map[string]bool{instA: true}}
	w := newWatcher(t, h, false)
	// The agent restarted (no reboot) while the instance ran: it has its
	// secret; nothing to ask.
	if got := h.check(t, w, 0); len(got) != 0 {
		t.Fatalf("asks at an agent restart without a reboot: %v", got)
	}
	h.running[instA] = false
	if got := h.check(t, w, time.Second); len(got) != 0 {
		t.Fatalf("asks for a stopped instance: %v", got)
	}
	h.running[instA] = true
	if diff := cmp.Diff([]string{launchA}, h.check(t, w, time.Second)); diff != "" {
		t.Fatalf("asks when the instance started (-want +got):\n%s", diff)
	}
	// One outstanding ask: the next waits Backoff, then doubles.
	for _, step := range []struct {
		after time.Duration
		want  int
	}{
		{time.Second, 0}, {59 * time.Second, 1}, // 1 min
		{time.Minute, 0}, {time.Minute, 1}, // 2 min
		{3 * time.Minute, 0}, {time.Minute, 1}, // 4 min
		{4 * time.Minute, 0}, // MaxAsks (4) reached: given up
		{time.Hour, 0},
	} {
		if got := h.check(t, w, step.after); len(got) != step.want {
			t.Fatalf("after %v more: %d asks, want %d", step.after, len(got), step.want)
		}
	}
	// Stopped and started again: asking starts over.
	h.running[instA] = false
	h.check(t, w, time.Second)
	h.running[instA] = true
	if got := h.check(t, w, time.Second); len(got) != 1 {
		t.Fatalf("asks after a new start: %v", got)
	}
	// A re-delivery (asked by anyone) ends the asking.
	w.Redelivered(launchA)
	if got := h.check(t, w, time.Hour); len(got) != 0 {
		t.Errorf("asks after the re-delivery: %v", got)
	}
}

func TestRebooted(t *testing.T) {
	h := &fakeHost{kept: []Kept{{launchA, instA}, {launchB, instB}}, running: map[string]bool{instA: true, instB: true},
		presenceErr: map[string]bool{instB: true}}
	w := newWatcher(t, h, true)
	settled := 0
	w.cfg.Settled = func() { settled++ }
	// Present at the first check after a reboot: started. B's presence
	// is not known yet, so the reboot is not settled (an agent restarted
	// now must still see it).
	if diff := cmp.Diff([]string{launchA}, h.check(t, w, 0)); diff != "" {
		t.Fatalf("first check after a reboot (-want +got):\n%s", diff)
	}
	if settled != 0 {
		t.Errorf("settled %d times with an instance's presence unknown, want 0", settled)
	}
	// B's instance answers later: still a start after the reboot, and
	// every kept blob has an answer now.
	h.presenceErr = nil
	if diff := cmp.Diff([]string{launchB}, h.check(t, w, time.Second)); diff != "" {
		t.Fatalf("once libvirt answers (-want +got):\n%s", diff)
	}
	if settled != 1 {
		t.Errorf("settled %d times once every presence was known, want 1", settled)
	}
	h.check(t, w, time.Second)
	if settled != 1 {
		t.Errorf("settled %d times after a further check, want once", settled)
	}
	// A blob kept after the first check is for an instance that has its
	// secret.
	const launchC, instC = "3b6d1c3e-8f2a-4c55-9d0e-6a7b8c9d0e1f", "4b6d1c3e-8f2a-4c55-9d0e-6a7b8c9d0e1f"
	w.Redelivered(launchA)
	w.Redelivered(launchB)
	h.kept = append(h.kept, Kept{launchC, instC})
	h.running[instC] = true
	if got := h.check(t, w, time.Second); len(got) != 0 {
		t.Errorf("asks for a blob kept after the first check: %v", got)
	}
	// A dropped blob is forgotten.
	h.kept = h.kept[:1]
	h.check(t, w, time.Second)
	w.mu.Lock()
	n := len(w.launches)
	w.mu.Unlock()
	if n != 1 {
		t.Errorf("tracking %d launches, want 1", n)
	}
}

// A failing cast (broker away) backs off like an unanswered ask: no tight
// loop.
func TestAskFailsBacksOff(t *testing.T) {
	h := &fakeHost{kept: []Kept{{launchA, instA}}, running: map[string]bool{instA: true}, askErr: errors.New("broker away")}
	w := newWatcher(t, h, true)
	if got := h.check(t, w, 0); len(got) != 1 {
		t.Fatalf("first ask: %v", got)
	}
	for range 10 {
		if got := h.check(t, w, time.Second); len(got) != 0 {
			t.Fatalf("asked again %v after a failed cast, within the backoff", got)
		}
	}
	if got := h.check(t, w, time.Minute); len(got) != 1 {
		t.Errorf("after the backoff: %v", got)
	}
}

func TestDelay(t *testing.T) {
	w := New(Config{Backoff: time.Minute, BackoffMax: 5 * time.Minute})
	var got []time.Duration
	for n := range 6 {
		got = append(got, w.delay(n))
	}
	want := []time.Duration{time.Minute, 2 * time.Minute, 4 * time.Minute, 5 * time.Minute, 5 * time.Minute, 5 * time.Minute}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("delays (-want +got):\n%s", diff)
	}
}
