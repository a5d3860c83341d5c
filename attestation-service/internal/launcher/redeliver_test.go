package launcher

import (
	"errors"
	"testing"
	"time"

	"github.com/trustpool/trustpool/attestation-service/internal/store"
	"github.com/trustpool/trustpool/internal/attestrpc"
	"github.com/trustpool/trustpool/internal/launch"
	"github.com/trustpool/trustpool/internal/policykey"
)

// TestRedeliverRefusedUpFront: what Redeliver refuses before it asks the
// host anything (the rest runs against real agents in
// tests/integration's TestLaunchRedeliver).
func TestRedeliverRefusedUpFront(t *testing.T) {
	now := time.Now()
	l, st, _, _ := newTestLauncher(t, &now)
	ctx := t.Context()
	rec, err := l.Create(ctx, Caller{UserID: "u", ProjectID: "p"}, CreateRequest{KID: l.PublicKey().KID(), Sealed: l.sealed(t, "p", now.Add(time.Hour))})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.Redeliver(ctx, rec.ID); !errors.Is(err, ErrNotDelivered) {
		t.Errorf("Redeliver(pending) = %v, want ErrNotDelivered", err)
	}
	rec.State, rec.Host, rec.InstanceID = launch.StateDelivered, "compute-1", "178b0921-8f85-4257-88b6-2e743b5a975c"
	if err := st.TransitionLaunch(ctx, rec, launch.StatePending); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Redeliver(ctx, rec.ID); !errors.Is(err, ErrRedeliverOff) {
		t.Errorf("Redeliver without a policy-signing key = %v, want ErrRedeliverOff", err)
	}
	if l.cfg.PolicyKey, err = policykey.GenerateKey(); err != nil {
		t.Fatal(err)
	}
	l.redeliveryStart(rec.ID) // another request is at it
	if _, err := l.Redeliver(ctx, rec.ID); !errors.Is(err, ErrBusy) {
		t.Errorf("Redeliver while another runs = %v, want ErrBusy", err)
	}
	l.redeliveryDone(rec.ID)
	// The host is not enrolled: refused with a signed receipt, the launch
	// stays delivered, the history records the attempt.
	rd, err := l.Redeliver(ctx, rec.ID)
	if err != nil {
		t.Fatal(err)
	}
	if rd.State != launch.StateRefused || len(rd.Reasons) != 1 || rd.Launch.State != launch.StateDelivered {
		t.Errorf("Redeliver to a host not enrolled = %+v (launch %s)", rd, rd.Launch.State)
	}
	hist, err := st.LaunchHistory(ctx, rec.ID)
	if err != nil {
		t.Fatal(err)
	}
	if last := hist[len(hist)-1]; last.State != launch.StateRefused {
		t.Errorf("last history entry %+v, want refused", last)
	}
}

// TestRedeliverUserLimit: a user's re-delivery of a launch within
// Config.RedeliverInterval of the last is refused with a TooSoonError
// saying how long to wait, before anything is asked of the host (no
// history entry); once that has passed it runs. The agents' limit is
// independent: a user's re-delivery does not drop the agent's ask, nor
// the agent's a user's (TestRedeliveryWanted).
func TestRedeliverUserLimit(t *testing.T) {
	now := time.Now()
	l, st, _, _ := newTestLauncher(t, &now)
	ctx := t.Context()
	var err error
	if l.cfg.PolicyKey, err = policykey.GenerateKey(); err != nil {
		t.Fatal(err)
	}
	rec, err := l.Create(ctx, Caller{UserID: "u", ProjectID: "p"}, CreateRequest{KID: l.PublicKey().KID(), Sealed: l.sealed(t, "p", now.Add(time.Hour))})
	if err != nil {
		t.Fatal(err)
	}
	rec.State, rec.Host, rec.InstanceID = launch.StateDelivered, "compute-1", "178b0921-8f85-4257-88b6-2e743b5a975c"
	if err := st.TransitionLaunch(ctx, rec, launch.StatePending); err != nil {
		t.Fatal(err)
	}
	histLen := func() int { t.Helper(); return historyLen(t, st, rec.ID) }
	if _, err := l.Redeliver(ctx, rec.ID); err != nil {
		t.Fatal(err)
	}
	before := histLen()
	now = now.Add(DefaultRedeliverInterval - 3*time.Second)
	_, err = l.Redeliver(ctx, rec.ID)
	var soon *TooSoonError
	if !errors.As(err, &soon) || soon.RetryAfter != 3*time.Second || soon.Interval != DefaultRedeliverInterval || soon.LaunchID != rec.ID {
		t.Fatalf("Redeliver within the interval = %v, want a TooSoonError to retry after 3s", err)
	}
	if got := histLen(); got != before {
		t.Errorf("a refused request wrote %d history entries", got-before)
	}
	// The agent's ask is limited on its own: accepted now.
	if got, done := l.RedeliveryWanted(ctx, &attestrpc.RedeliveryWantedArgs{Host: rec.Host, LaunchID: rec.ID, InstanceID: rec.InstanceID}); got != WantedAccepted {
		t.Errorf("agent's ask after a user's re-delivery = %s, want %s", got, WantedAccepted)
	} else {
		<-done
	}
	now = now.Add(3 * time.Second)
	if _, err := l.Redeliver(ctx, rec.ID); err != nil {
		t.Errorf("Redeliver once the interval passed = %v", err)
	}
}

// TestIntervalLimiter: one pass per key per interval, the wait until the
// next, and a full tracker refusing (with the wait until its oldest entry
// expires) rather than forgetting a limit.
func TestIntervalLimiter(t *testing.T) {
	now := time.Now()
	r := newIntervalLimiter(10 * time.Second)
	if ok, _ := r.allow("a", now); !ok {
		t.Fatal("first pass refused")
	}
	if ok, wait := r.allow("a", now.Add(4*time.Second)); ok || wait != 6*time.Second {
		t.Errorf("within the interval: %v, wait %v; want refused, 6s", ok, wait)
	}
	if ok, _ := r.allow("b", now.Add(4*time.Second)); !ok {
		t.Error("another key refused")
	}
	if ok, _ := r.allow("a", now.Add(10*time.Second)); !ok {
		t.Error("refused after the interval")
	}
	full := newIntervalLimiter(10 * time.Second)
	for i := range maxTracked {
		if ok, _ := full.allow(string(rune(i)), now.Add(time.Duration(i)*time.Millisecond)); !ok {
			t.Fatalf("key %d refused before the tracker was full", i)
		}
	}
	if ok, wait := full.allow("one more", now.Add(time.Second)); ok || wait != 9*time.Second {
		t.Errorf("beyond the bound: %v, wait %v; want refused, 9s (the oldest entry's)", ok, wait)
	}
}

// historyLen is the number of entries in launch id's history.
func historyLen(t *testing.T, st *store.Store, id string) int {
	t.Helper()
	h, err := st.LaunchHistory(t.Context(), id)
	if err != nil {
		t.Fatal(err)
	}
	return len(h)
}
