package watch_test

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/trustpool/trustpool/compute-agent/internal/watch"
)

// fakeHost is a TPM and IMA list that tests change by hand. The IMA list is
// a sequence of entry sizes; reads return at most chunk entries.
type fakeHost struct {
	mu      sync.Mutex
	pcrs    map[int][]byte
	entries []int64
	chunk   int
	noIMA   bool
	pcrErr  error
	imaErr  error
	reads   int
}

func newFakeHost() *fakeHost {
	return &fakeHost{pcrs: map[int][]byte{0: {1}, 7: {2}, 10: {3}}, entries: []int64{100, 50}, chunk: 1000}
}

func (f *fakeHost) PCRs(context.Context) (map[int][]byte, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.pcrErr != nil {
		return nil, f.pcrErr
	}
	out := map[int][]byte{}
	for k, v := range f.pcrs {
		out[k] = append([]byte(nil), v...)
	}
	return out, nil
}

func (f *fakeHost) IMA(off int64) (int64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reads++
	if f.imaErr != nil {
		return off, f.imaErr
	}
	if f.noIMA {
		return off, fmt.Errorf("read IMA log: %w", fs.ErrNotExist)
	}
	var pos int64
	n := 0
	for _, e := range f.entries {
		if pos >= off && n < f.chunk {
			n++
			off = pos + e
		}
		pos += e
	}
	return off, nil
}

func (f *fakeHost) extend(pcr int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.pcrs[pcr] = append(f.pcrs[pcr], 0xee)
}

func (f *fakeHost) measure(size int64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.entries = append(f.entries, size)
	f.pcrs[10] = append(f.pcrs[10], 0xaa)
}

func (f *fakeHost) set(fn func(*fakeHost)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn(f)
}

func newWatcher(f *fakeHost, notify func(context.Context, string) error) *watch.Watcher {
	return watch.New(watch.Config{Interval: 10 * time.Second, PCRs: f.PCRs, IMA: f.IMA, Notify: notify})
}

func TestCheck(t *testing.T) {
	tests := []struct {
		name   string
		change func(*fakeHost)
		want   string
	}{
		{"nothing", func(*fakeHost) {}, ""},
		{"boot pcr", func(f *fakeHost) { f.extend(7) }, watch.ReasonPCRChanged},
		{"ima entry", func(f *fakeHost) { f.measure(70) }, watch.ReasonIMAGrew},
		{"ima and boot pcr", func(f *fakeHost) { f.measure(70); f.extend(0) }, watch.ReasonPCRChanged + "," + watch.ReasonIMAGrew},
		{"pcr 10 without ima entry", func(f *fakeHost) { f.extend(10) }, watch.ReasonPCRChanged},
		{"pcr disappeared", func(f *fakeHost) { f.set(func(f *fakeHost) { delete(f.pcrs, 7) }) }, watch.ReasonPCRChanged},
		{"reboot: ima list restarts", func(f *fakeHost) {
			f.set(func(f *fakeHost) { f.entries = []int64{100}; f.pcrs[10] = []byte{9} })
		}, watch.ReasonPCRChanged},
		{"ima list appears", func(f *fakeHost) { f.set(func(f *fakeHost) { f.noIMA = false }); f.measure(1) }, watch.ReasonIMAGrew},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeHost()
			if tc.name == "ima list appears" {
				f.noIMA = true
			}
			w := newWatcher(f, nil)
			if got, err := w.Check(t.Context()); got != "" || err != nil {
				t.Fatalf("baseline Check() = %q, %v; want no change", got, err)
			}
			tc.change(f)
			got, err := w.Check(t.Context())
			if err != nil || got != tc.want {
				t.Fatalf("Check() = %q, %v; want %q", got, err, tc.want)
			}
			if got, err := w.Check(t.Context()); got != "" || err != nil {
				t.Errorf("Check() after reporting = %q, %v; want no change", got, err)
			}
		})
	}
}

// TestCheckLongBacklog: the baseline reads a long list to its end; growth
// larger than one check's reads is followed over several checks.
func TestCheckLongBacklog(t *testing.T) {
	f := newFakeHost()
	f.chunk = 1
	for range 200 {
		f.entries = append(f.entries, 10)
	}
	w := newWatcher(f, nil)
	var reasons []string
	for i := range 5 {
		if i == 1 {
			for range 100 {
				f.measure(10)
			}
		}
		r, err := w.Check(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		reasons = append(reasons, r)
	}
	if diff := cmp.Diff([]string{"", watch.ReasonIMAGrew, watch.ReasonIMAGrew, "", ""}, reasons); diff != "" {
		t.Errorf("reasons (-want +got):\n%s", diff)
	}
}

func TestCheckErrors(t *testing.T) {
	f := newFakeHost()
	w := newWatcher(f, nil)
	boom := errors.New("boom")
	f.pcrErr = boom
	if _, err := w.Check(t.Context()); !errors.Is(err, boom) {
		t.Fatalf("Check() = %v, want %v", err, boom)
	}
	f.pcrErr = nil
	if r, err := w.Check(t.Context()); r != "" || err != nil {
		t.Fatalf("baseline after an error = %q, %v", r, err)
	}
	f.extend(0)
	f.imaErr = boom
	if _, err := w.Check(t.Context()); !errors.Is(err, boom) {
		t.Fatalf("Check() = %v, want %v", err, boom)
	}
	f.imaErr = nil
	// The change seen by the failed check is still reported: the baseline
	// was kept.
	if r, err := w.Check(t.Context()); r != watch.ReasonPCRChanged || err != nil {
		t.Errorf("Check() = %q, %v; want %q", r, err, watch.ReasonPCRChanged)
	}
}

// TestRun drives the watcher with synctest's fake clock: a change is cast
// within one interval, a failed cast is retried at the next tick, and Run
// returns when its context ends.
func TestRun(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeHost()
		type cast struct {
			at     time.Duration
			reason string
		}
		var (
			mu    sync.Mutex
			casts []cast
			fail  = true
		)
		start := time.Now()
		notify := func(_ context.Context, reason string) error {
			mu.Lock()
			defer mu.Unlock()
			casts = append(casts, cast{time.Since(start), reason})
			if fail {
				fail = false
				return errors.New("broker away")
			}
			return nil
		}
		w := newWatcher(f, notify)
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error, 1)
		go func() { done <- w.Run(ctx) }()

		time.Sleep(25 * time.Second) // ticks at 10s and 20s: no change
		synctest.Wait()
		f.measure(40)
		f.extend(7)
		time.Sleep(10 * time.Second) // tick at 30s: change, cast fails
		synctest.Wait()
		time.Sleep(10 * time.Second) // tick at 40s: retried, succeeds
		synctest.Wait()
		time.Sleep(20 * time.Second) // nothing more
		synctest.Wait()
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("Run() = %v, want context.Canceled", err)
		}
		want := []cast{
			{30 * time.Second, "pcr_changed,ima_log_grew"},
			{40 * time.Second, "pcr_changed,ima_log_grew"},
		}
		mu.Lock()
		defer mu.Unlock()
		if diff := cmp.Diff(want, casts, cmp.AllowUnexported(cast{})); diff != "" {
			t.Errorf("casts (-want +got):\n%s", diff)
		}
	})
}

func TestRunNeedsInterval(t *testing.T) {
	w := watch.New(watch.Config{})
	if err := w.Run(t.Context()); err == nil {
		t.Error("Run() with no interval succeeded")
	}
}
