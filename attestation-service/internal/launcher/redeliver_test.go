package launcher

import (
	"errors"
	"testing"
	"time"

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
