package store_test

import (
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/trustpool/trustpool/attestation-service/internal/store"
)

// TestBrakeSlotsRace: 8 transitions race for a brake that tolerates 3
// hosts, through two connection pools (two service instances): exactly 3
// are acted on, exactly one engages the brake, and all 8 are in the
// window. Runs on every backend.
func TestBrakeSlotsRace(t *testing.T) {
	backends(t, func(t *testing.T, url string) {
		t.Helper()
		ctx := t.Context()
		instances := []*store.Store{open(t, url), open(t, url)}
		now := time.Now()
		const window = time.Minute
		var (
			wg      sync.WaitGroup
			mu      sync.Mutex
			granted []string
			engaged int
			errs    []error
		)
		for i := range 8 {
			wg.Go(func() {
				host := fmt.Sprintf("c%d", i)
				st, err := instances[i%2].TakeBrakeSlot(ctx, host, now, now.Add(-window), 3, window)
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					errs = append(errs, err)
					return
				}
				if !st.Held {
					granted = append(granted, host)
				}
				if st.Engaged {
					engaged++
				}
			})
		}
		wg.Wait()
		if len(errs) > 0 {
			t.Fatalf("TakeBrakeSlot: %v", errs)
		}
		if len(granted) != 3 || engaged != 1 {
			t.Errorf("granted %v, engaged %d times; want 3 granted, engaged once", granted, engaged)
		}
		st, err := instances[0].CheckBrake(ctx, now.Add(-window), 3, window)
		if err != nil {
			t.Fatal(err)
		}
		want := store.BrakeState{Held: true, Hosts: []string{"c0", "c1", "c2", "c3", "c4", "c5", "c6", "c7"},
			Next: now.Add(window).Truncate(time.Microsecond)}
		if diff := cmp.Diff(want, st); diff != "" {
			t.Errorf("CheckBrake (-want +got):\n%s", diff)
		}
		// All share one at: the release names the 5 held hosts by slot
		// order, not by time.
		st, err = instances[1].CheckBrake(ctx, now.Add(time.Hour), 3, window)
		if err != nil {
			t.Fatal(err)
		}
		var held []string
		for _, h := range want.Hosts {
			if !slices.Contains(granted, h) {
				held = append(held, h)
			}
		}
		if diff := cmp.Diff(store.BrakeState{Released: true, Skipped: held, Hosts: []string{}}, st); diff != "" {
			t.Errorf("release (-want +got):\n%s", diff)
		}
	})
}

// TestBrakeWindowSlides: a host counts once however often it turns
// untrusted; transitions held by the brake count too; the brake is released
// once the window has slid past enough of them (by CheckBrake or by the
// next transition), naming the hosts it held.
func TestBrakeWindowSlides(t *testing.T) {
	backends(t, func(t *testing.T, url string) {
		t.Helper()
		ctx := t.Context()
		s := open(t, url)
		t0 := time.Now().Truncate(time.Microsecond)
		const window, limit = 10 * time.Second, 2
		take := func(host string, at time.Duration) store.BrakeState {
			t.Helper()
			st, err := s.TakeBrakeSlot(ctx, host, t0.Add(at), t0.Add(at-window), limit, window)
			if err != nil {
				t.Fatal(err)
			}
			return st
		}
		check := func(at time.Duration) store.BrakeState {
			t.Helper()
			st, err := s.CheckBrake(ctx, t0.Add(at-window), limit, window)
			if err != nil {
				t.Fatal(err)
			}
			return st
		}
		steps := []struct {
			name string
			got  func() store.BrakeState
			want store.BrakeState
		}{
			{"c1", func() store.BrakeState { return take("c1", 0) },
				store.BrakeState{Hosts: []string{"c1"}, Next: t0.Add(window)}},
			{"c1 again counts once", func() store.BrakeState { return take("c1", time.Second) },
				store.BrakeState{Hosts: []string{"c1"}, Next: t0.Add(time.Second + window)}},
			{"c2", func() store.BrakeState { return take("c2", 2*time.Second) },
				store.BrakeState{Hosts: []string{"c1", "c2"}, Next: t0.Add(time.Second + window)}},
			{"c3 engages", func() store.BrakeState { return take("c3", 3*time.Second) },
				store.BrakeState{Held: true, Engaged: true, Hosts: []string{"c1", "c2", "c3"}, Next: t0.Add(time.Second + window)}},
			{"still engaged", func() store.BrakeState { return check(5 * time.Second) },
				store.BrakeState{Held: true, Hosts: []string{"c1", "c2", "c3"}, Next: t0.Add(time.Second + window)}},
			{"released once c1 left", func() store.BrakeState { return check(11 * time.Second) },
				store.BrakeState{Released: true, Skipped: []string{"c3"}, Hosts: []string{"c2", "c3"}, Next: t0.Add(2*time.Second + window)}},
			{"held c3 counts: c4 engages", func() store.BrakeState { return take("c4", 11500*time.Millisecond) },
				store.BrakeState{Held: true, Engaged: true, Hosts: []string{"c2", "c3", "c4"}, Next: t0.Add(2*time.Second + window)}},
			{"c5 held", func() store.BrakeState { return take("c5", 12*time.Second) },
				store.BrakeState{Held: true, Hosts: []string{"c3", "c4", "c5"}, Next: t0.Add(3*time.Second + window)}},
			{"window empty: c6 releases and is acted on", func() store.BrakeState { return take("c6", 30*time.Second) },
				store.BrakeState{Released: true, Skipped: []string{"c4", "c5"}, Hosts: []string{"c6"}, Next: t0.Add(30*time.Second + window)}},
			{"released stays released", func() store.BrakeState { return check(31 * time.Second) },
				store.BrakeState{Hosts: []string{"c6"}, Next: t0.Add(30*time.Second + window)}},
		}
		for _, st := range steps {
			if diff := cmp.Diff(st.want, st.got()); diff != "" {
				t.Errorf("%s (-want +got):\n%s", st.name, diff)
			}
		}
	})
}

// TestBrakeReleaseListsEarlierHeld: a transition taken after the one that
// engaged the brake but seen earlier (an instance that waited for the lock,
// or retried after a database error) is held, and the release names it.
func TestBrakeReleaseListsEarlierHeld(t *testing.T) {
	backends(t, func(t *testing.T, url string) {
		t.Helper()
		ctx := t.Context()
		s := open(t, url)
		t0 := time.Now().Truncate(time.Microsecond)
		const window, limit = time.Minute, 1
		for _, tr := range []struct {
			host    string
			at      time.Duration
			held    bool
			engaged bool
		}{
			{"c1", 10 * time.Second, false, false},
			{"c2", 20 * time.Second, true, true},
			{"c3", 15 * time.Second, true, false}, // before c2's at
			{"c4", 5 * time.Second, true, false},  // before c1's too
		} {
			st, err := s.TakeBrakeSlot(ctx, tr.host, t0.Add(tr.at), t0.Add(tr.at-window), limit, window)
			if err != nil {
				t.Fatal(err)
			}
			if st.Held != tr.held || st.Engaged != tr.engaged {
				t.Fatalf("TakeBrakeSlot(%s) = %+v; want held %v, engaged %v", tr.host, st, tr.held, tr.engaged)
			}
		}
		st, err := s.CheckBrake(ctx, t0.Add(time.Hour), limit, window)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(store.BrakeState{Released: true, Skipped: []string{"c2", "c3", "c4"}, Hosts: []string{}}, st); diff != "" {
			t.Errorf("CheckBrake (-want +got):\n%s", diff)
		}
	})
}

// TestBrakePrune: Prune removes the brake's records with the history
// retention, except those of the hosts an engaged brake still holds.
func TestBrakePrune(t *testing.T) {
	backends(t, func(t *testing.T, url string) {
		t.Helper()
		ctx := t.Context()
		s := open(t, url)
		defer store.SetPruneBatch(1)() // several batches
		now := time.Now()
		const window = time.Hour
		day := 24 * time.Hour
		for i, age := range []time.Duration{40 * day, 35 * day, 20 * day} {
			at := now.Add(-age)
			if _, err := s.TakeBrakeSlot(ctx, fmt.Sprint("old", i), at, at.Add(-window), 5, window); err != nil {
				t.Fatal(err)
			}
		}
		cut := now.Add(-30 * day)
		if p, err := s.Prune(ctx, time.Time{}, cut); err != nil || p.Brake != 0 {
			t.Fatalf("Prune(audit only) = %+v, %v; want no brake records pruned", p, err)
		}
		if p, err := s.Prune(ctx, cut, time.Time{}); err != nil || p.Brake != 2 {
			t.Fatalf("Prune = %+v, %v; want 2 brake records pruned", p, err)
		}
		// Engaged 40 days ago and never released: its held host stays.
		at := now.Add(-40 * day)
		if st, err := s.TakeBrakeSlot(ctx, "held", at, at.Add(-window), 0, window); err != nil || !st.Engaged {
			t.Fatalf("TakeBrakeSlot(limit 0) = %+v, %v; want engaged", st, err)
		}
		// Held after the engaging transition but seen a day before it.
		at = now.Add(-41 * day)
		if st, err := s.TakeBrakeSlot(ctx, "early", at, at.Add(-window), 0, window); err != nil || !st.Held {
			t.Fatalf("TakeBrakeSlot(early) = %+v, %v; want held", st, err)
		}
		if p, err := s.Prune(ctx, cut, time.Time{}); err != nil || p.Brake != 0 {
			t.Fatalf("Prune(engaged) = %+v, %v; want nothing pruned", p, err)
		}
		st, err := s.CheckBrake(ctx, now.Add(-window), 0, window)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(store.BrakeState{Released: true, Skipped: []string{"early", "held"}, Hosts: []string{}}, st); diff != "" {
			t.Errorf("CheckBrake (-want +got):\n%s", diff)
		}
		if p, err := s.Prune(ctx, cut, time.Time{}); err != nil || p.Brake != 2 {
			t.Fatalf("Prune(released) = %+v, %v; want 2 brake records pruned", p, err)
		}
	})
}
