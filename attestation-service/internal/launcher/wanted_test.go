package launcher

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/trustpool/trustpool/internal/attestrpc"
	"github.com/trustpool/trustpool/internal/launch"
	"github.com/trustpool/trustpool/internal/policykey"
)

// TestRedeliveryWanted: an agent's redelivery_wanted runs the re-delivery a
// user's request runs (here up to its refusal: the host is not enrolled;
// the rest runs against real agents in tests/integration's
// TestLaunchRedeliver), naming the agent in the history, the receipt and
// the notification; a cast that names another host or instance, an
// unknown or undelivered launch is dropped; a launch is redelivered at
// most once per WantedInterval for agents.
func TestRedeliveryWanted(t *testing.T) {
	now := time.Now()
	l, st, n, vf := newTestLauncher(t, &now)
	ctx := t.Context()
	const (
		host     = "compute-1"
		instance = "178b0921-8f85-4257-88b6-2e743b5a975c"
		other    = "0b6d1c3e-8f2a-4c55-9d0e-6a7b8c9d0e1f"
	)
	rec, err := l.Create(ctx, Caller{UserID: "u", ProjectID: "p"}, CreateRequest{KID: l.PublicKey().KID(), Sealed: l.sealed(t, "p", now.Add(time.Hour))})
	if err != nil {
		t.Fatal(err)
	}
	ask := func(h, launchID, inst string) (string, <-chan struct{}) {
		t.Helper()
		a := &attestrpc.RedeliveryWantedArgs{Host: h, LaunchID: launchID, InstanceID: inst}
		if err := a.Validate(); err != nil {
			t.Fatal(err)
		}
		return l.RedeliveryWanted(ctx, a)
	}
	if got, _ := ask(host, rec.ID, instance); got != WantedOff {
		t.Errorf("ask without a policy-signing key = %s, want %s", got, WantedOff)
	}
	if l.cfg.PolicyKey, err = policykey.GenerateKey(); err != nil {
		t.Fatal(err)
	}
	if got, _ := ask(host, rec.ID, instance); got != WantedNotDelivered {
		t.Errorf("ask for a pending launch = %s, want %s", got, WantedNotDelivered)
	}
	rec.State, rec.Host, rec.InstanceID = launch.StateDelivered, host, instance
	if err := st.TransitionLaunch(ctx, rec, launch.StatePending); err != nil {
		t.Fatal(err)
	}
	histLen := func() int { t.Helper(); return historyLen(t, st, rec.ID) }
	before := histLen()
	for _, tc := range []struct {
		name, host, launch, instance, want string
	}{
		{"another host", "compute-2", rec.ID, instance, WantedHostMismatch},
		{"another instance", host, rec.ID, other, WantedInstanceMismatch},
		{"unknown launch", host, other, instance, WantedUnknownLaunch},
	} {
		if got, done := ask(tc.host, tc.launch, tc.instance); got != tc.want || done != nil {
			t.Errorf("%s: ask = %s, want %s and nothing started", tc.name, got, tc.want)
		}
	}
	if got := histLen(); got != before {
		t.Errorf("dropped asks wrote %d history entries", got-before)
	}

	// Concurrency agents' re-deliveries already run: dropped, without
	// using up the launch's interval.
	for range cap(l.wantedSem) {
		l.wantedSem <- struct{}{}
	}
	if got, done := ask(host, rec.ID, instance); got != WantedBusy || done != nil {
		t.Errorf("ask with every slot taken = %s, want %s", got, WantedBusy)
	}
	for range cap(l.wantedSem) {
		<-l.wantedSem
	}

	got, done := ask(host, rec.ID, instance)
	if got != WantedAccepted {
		t.Fatalf("ask = %s, want %s", got, WantedAccepted)
	}
	<-done
	hist, err := st.LaunchHistory(ctx, rec.ID)
	if err != nil {
		t.Fatal(err)
	}
	if last := hist[len(hist)-1]; last.State != launch.StateRefused || last.Initiator != launch.InitiatorAgent ||
		len(last.Reasons) != 1 || !strings.HasPrefix(last.Reasons[0], ReasonHostNotEnrolled) {
		t.Errorf("last history entry %+v, want refused %s by the agent", last, ReasonHostNotEnrolled)
	}
	if _, r := ended(t, st, vf, rec.ID); r.State != launch.StateRefused || r.Initiator != launch.InitiatorAgent {
		t.Errorf("receipt %+v, want refused, initiator agent", r)
	}
	n.mu.Lock()
	p := n.payloads[len(n.payloads)-1]
	n.mu.Unlock()
	if p["initiator"] != launch.InitiatorAgent || p["redelivery"] != true {
		t.Errorf("notification %v, want initiator agent", p)
	}

	// Rate limit: a flood within the interval starts nothing more.
	before = histLen()
	for range 20 {
		if got, done := ask(host, rec.ID, instance); got != WantedRateLimited || done != nil {
			t.Fatalf("ask within the interval = %s, want %s", got, WantedRateLimited)
		}
	}
	if got := histLen(); got != before {
		t.Errorf("rate-limited asks wrote %d history entries", got-before)
	}
	now = now.Add(DefaultWantedInterval)
	if got, done := ask(host, rec.ID, instance); got != WantedAccepted {
		t.Errorf("ask after the interval = %s, want %s", got, WantedAccepted)
	} else {
		<-done
	}
	// A user's request is not limited, and names the user.
	rd, err := l.Redeliver(ctx, rec.ID)
	if err != nil {
		t.Fatal(err)
	}
	if _, r := ended(t, st, vf, rd.Launch.ID); r.Initiator != launch.InitiatorUser {
		t.Errorf("receipt of a user's re-delivery names %q", r.Initiator)
	}
	hist, _ = st.LaunchHistory(ctx, rec.ID)
	var who []string
	for _, e := range hist[len(hist)-3:] {
		who = append(who, e.State+"/"+e.Initiator)
	}
	if diff := cmp.Diff([]string{"refused/agent", "refused/agent", "refused/user"}, who); diff != "" {
		t.Errorf("history (-want +got):\n%s", diff)
	}
	// Once Run stops, nothing more starts.
	now = now.Add(DefaultWantedInterval)
	l.redeliverMu.Lock()
	l.stopping = true
	l.redeliverMu.Unlock()
	if got, done := ask(host, rec.ID, instance); got != WantedStopping || done != nil {
		t.Errorf("ask while stopping = %s, want %s", got, WantedStopping)
	}
}

// TestRedeliveryWantedBounded: the rate limit tracks a bounded number of
// launches, and refuses rather than forgets a limit.
func TestRedeliveryWantedBounded(t *testing.T) {
	now := time.Now()
	l, _, _, _ := newTestLauncher(t, &now)
	// Filling the tracker: each id is allowed once, then the tracker is
	// full of asks within the interval and refuses new ones.
	for i := range maxTracked {
		if !l.wantedAllow(string(rune(i))) {
			t.Fatalf("ask %d refused before the tracker was full", i)
		}
	}
	if l.wantedAllow("one more") {
		t.Error("an ask beyond the tracker's bound within the interval was allowed")
	}
	now = now.Add(DefaultWantedInterval)
	if !l.wantedAllow("one more") || len(l.wantedLimit.at) > maxTracked {
		t.Errorf("after the interval: tracked %d, want old entries pruned", len(l.wantedLimit.at))
	}
}
