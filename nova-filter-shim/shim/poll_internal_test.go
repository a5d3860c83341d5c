package shim

import (
	"context"
	"errors"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestPollLoopBackoffThenResync(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		start := time.Now()
		var calls []time.Duration
		var waits []time.Duration
		fail := 5 // the service answers from the 6th call on
		fetch := func(context.Context) error {
			calls = append(calls, time.Since(start))
			if len(calls) == 9 {
				cancel()
			}
			if len(calls) <= fail {
				return errors.New("no reply")
			}
			return nil
		}
		pollLoop(ctx, fetch, time.Minute, 3*time.Second, func(_ error, d time.Duration) { waits = append(waits, d) })
		if len(calls) != 9 {
			t.Fatalf("fetch called %d times, want 9", len(calls))
		}
		// Backoff delays 0.5, 1, 2, 3 (capped), 3 s, each jittered to [d/2, d].
		for i, want := range []time.Duration{500 * time.Millisecond, time.Second, 2 * time.Second, 3 * time.Second, 3 * time.Second} {
			if waits[i] < want/2 || waits[i] > want {
				t.Errorf("retry %d waited %v, want within [%v, %v]", i, waits[i], want/2, want)
			}
		}
		// After the first success, one fetch per resync interval.
		var gaps []time.Duration
		for i := 6; i < len(calls); i++ {
			gaps = append(gaps, calls[i]-calls[i-1])
		}
		if diff := cmp.Diff([]time.Duration{time.Minute, time.Minute, time.Minute}, gaps); diff != "" {
			t.Errorf("resync gaps (-want +got):\n%s", diff)
		}
	})
}

func TestPollLoopOnceWithoutResync(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := 0
		pollLoop(t.Context(), func(context.Context) error { n++; return nil }, 0, time.Second, func(error, time.Duration) {})
		if n != 1 {
			t.Errorf("fetch called %d times, want 1", n)
		}
	})
}

func TestPollLoopStopsOnCancel(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan struct{})
		go func() {
			pollLoop(ctx, func(context.Context) error { return errors.New("down") }, 0, time.Hour, func(error, time.Duration) {})
			close(done)
		}()
		time.Sleep(10 * time.Minute)
		cancel()
		synctest.Wait()
		select {
		case <-done:
		default:
			t.Fatal("pollLoop did not return after cancel")
		}
	})
}
