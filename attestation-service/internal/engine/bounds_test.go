package engine_test

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/trustpool/trustpool/attestation-service/internal/engine"
	"github.com/trustpool/trustpool/attestation-service/internal/store"
	"github.com/trustpool/trustpool/internal/attestrpc"
	"github.com/trustpool/trustpool/internal/tpm"
	"github.com/trustpool/trustpool/internal/verdict"
)

// fakeClock is a settable clock for the engine.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

const sbProfile = "[[profile]]\nname = \"sb\"\n[profile.facts]\nsecure_boot = [\"enabled\"]\n"

// trustedHost is an engine with host c1 enrolled on a simulator and a
// profile it passes, on a fake clock.
type trustedHost struct {
	eng   *engine.Engine
	st    *store.Store
	pub   *recPublisher
	agent *simAgent
	clock *fakeClock
	cfg   engine.Config
}

func newTrustedHost(t *testing.T, edit ...func(*engine.Config)) *trustedHost {
	t.Helper()
	dir := t.TempDir()
	sim, logPath := seededSim(t, dir)
	tp, err := tpm.New(sim.Opener(), tpm.Config{StateDir: filepath.Join(dir, "state"), EventLogPath: logPath})
	if err != nil {
		t.Fatal(err)
	}
	h := &trustedHost{agent: &simAgent{tp: tp}, clock: &fakeClock{now: time.Now()}}
	st, err := store.Open(t.Context(), "sqlite:///"+filepath.Join(dir, "a.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	_, priv, _ := ed25519.GenerateKey(nil)
	signer := verdict.NewSigner(priv)
	h.st, h.pub = st, &recPublisher{vf: verdict.NewVerifier(signer.Public())}
	h.cfg = engine.Config{Issuer: "test", Interval: 10 * time.Second, Jitter: 2 * time.Second, Validity: 30 * time.Second,
		QuoteTimeout: time.Second, PCRs: []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}, EnrollmentMode: engine.ModeAuto,
		Agents: h.agent, Now: h.clock.Now, Trigger: func(string) {}, Store: st, Signer: signer, Publisher: h.pub}
	for _, fn := range edit {
		fn(&h.cfg)
	}
	h.eng = engine.New(h.cfg)
	if s := enroll(t, h.eng, tp); s != attestrpc.StateEnrolled {
		t.Fatalf("enrollment state %s", s)
	}
	if err := h.st.PutProfile(t.Context(), store.Profile{Name: "sb", Body: sbProfile}, store.Create); err != nil {
		t.Fatal(err)
	}
	return h
}

func (h *trustedHost) attest(t *testing.T) verdict.Verdict {
	t.Helper()
	v, err := h.eng.Attest(t.Context(), "c1")
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// lastPublished is the newest verdict cast on the fanout.
func (h *trustedHost) lastPublished(t *testing.T) verdict.Verdict {
	t.Helper()
	h.pub.mu.Lock()
	defer h.pub.mu.Unlock()
	if len(h.pub.verdicts) == 0 {
		t.Fatal("nothing published")
	}
	return h.pub.verdicts[len(h.pub.verdicts)-1]
}

// An agent that answers with something unusable gave no evidence: unknown,
// but with reason invalid_reply, not unreachable; its nonce is dropped.
func TestInvalidReplyIsNotUnreachable(t *testing.T) {
	h := newTrustedHost(t)
	if v := h.attest(t); v.Status != verdict.Trusted {
		t.Fatalf("first round: %+v", v)
	}
	h.agent.fail = fmt.Errorf("call quote: reply of 30000000 bytes: %w", engine.ErrInvalidReply)
	v := h.attest(t)
	if v.Status != verdict.Unknown || len(v.Reasons) != 1 || !strings.HasPrefix(v.Reasons[0], "invalid_reply: ") {
		t.Fatalf("round with an invalid reply = %+v, want unknown with reason invalid_reply", v)
	}
	if !v.ExpiresAt.Equal(v.VerifiedAt) {
		t.Errorf("invalid_reply verdict expires %v after verification, want at once", v.ExpiresAt.Sub(v.VerifiedAt))
	}
	hv, err := h.eng.HostView(t.Context(), "c1")
	if err != nil {
		t.Fatal(err)
	}
	if hv.LastAttestation == nil || !hv.LastAttestation.Reachable || hv.LastAttestation.Verified {
		t.Errorf("last attestation %+v, want reachable and not verified", hv.LastAttestation)
	}
	// Only the nonce consumed by the first round is left.
	if n := h.eng.LedgerEntries(); n != 1 {
		t.Errorf("ledger holds %d nonces, want 1 (the failed round's is dropped)", n)
	}
}

// Per-host state does not outlive the host: lock entries go when nobody
// holds them (whatever names peers send), and deleting a host drops its
// nonces and publication record.
func TestPerHostStateIsDropped(t *testing.T) {
	h := newTrustedHost(t)
	ctx := t.Context()
	for i := range 100 {
		if _, err := h.eng.Attest(ctx, fmt.Sprintf("no-such-host-%d", i)); err == nil {
			t.Fatal("Attest of an unknown host succeeded")
		}
	}
	if n := h.eng.HostLockEntries(); n != 0 {
		t.Errorf("%d lock entries after rounds of unknown hosts, want 0", n)
	}
	h.attest(t)
	h.attest(t)
	if h.eng.LedgerEntries() == 0 || h.eng.PublishedEntries() == 0 {
		t.Fatalf("ledger %d, published %d after two rounds: nothing to drop", h.eng.LedgerEntries(), h.eng.PublishedEntries())
	}
	if err := h.eng.DeleteHost(ctx, "c1"); err != nil {
		t.Fatal(err)
	}
	if n, p, l := h.eng.LedgerEntries(), h.eng.PublishedEntries(), h.eng.HostLockEntries(); n != 0 || p != 0 || l != 0 {
		t.Errorf("after DeleteHost: %d nonces, %d published records, %d lock entries; want none", n, p, l)
	}
}

// The host mutex still excludes: a counter incremented under it by many
// goroutines is exact (and the race detector is quiet).
func TestHostLockExcludes(t *testing.T) {
	h := newTrustedHost(t)
	var wg sync.WaitGroup
	n := 0
	for range 50 {
		wg.Go(func() {
			for range 100 {
				l := h.eng.HostLock("x")
				l.Lock()
				n++
				l.Unlock()
			}
		})
	}
	wg.Wait()
	if n != 5000 || h.eng.HostLockEntries() != 0 {
		t.Errorf("counter %d (want 5000), %d lock entries left (want 0)", n, h.eng.HostLockEntries())
	}
}

// Prune, run on a timer by the service, drops nonces and enrollment
// challenges that ran out.
func TestPruneDropsExpiredState(t *testing.T) {
	h := newTrustedHost(t)
	h.attest(t)
	ctx := t.Context()
	ek, _ := h.agent.tp.EK(ctx)
	ak, _ := h.agent.tp.AK(ctx)
	if _, err := h.eng.RegisterHost(ctx, &attestrpc.RegisterHostArgs{Host: "c1", EKPublic: ek.Public, AKPublic: ak.Public}); err != nil {
		t.Fatal(err)
	}
	if h.eng.LedgerEntries() == 0 || h.eng.Challenges() == 0 {
		t.Fatalf("ledger %d, challenges %d: nothing to prune", h.eng.LedgerEntries(), h.eng.Challenges())
	}
	if ps := h.eng.Prune(t.Context()); ps.Nonces != 0 || ps.Challenges != 0 {
		t.Errorf("Prune before expiry dropped %+v", ps)
	}
	h.clock.Add(time.Hour)
	ps := h.eng.Prune(t.Context())
	if ps.Nonces == 0 || ps.Challenges != 1 || ps.Published != 1 {
		t.Errorf("Prune an hour later = %+v, want nonces, 1 challenge and 1 published record", ps)
	}
	if n, c := h.eng.LedgerEntries(), h.eng.Challenges(); n != 0 || c != 0 {
		t.Errorf("after Prune: %d nonces, %d challenges", n, c)
	}
}

// A host that stays trusted and answers every round is never held as
// expired by a shim: at every round, the copy published last is still
// valid when the next round is due, although nothing changes, with rounds
// as far apart as the scheduler allows.
func TestPublishedCopyNeverExpiresBetweenRounds(t *testing.T) {
	h := newTrustedHost(t)
	gaps := []time.Duration{12 * time.Second, 8 * time.Second, 12 * time.Second, 12 * time.Second, 10 * time.Second,
		12 * time.Second, 12 * time.Second, 12 * time.Second, 9 * time.Second, 12 * time.Second, 12 * time.Second}
	for i, gap := range gaps {
		if v := h.attest(t); v.Status != verdict.Trusted {
			t.Fatalf("round %d: %+v", i, v)
		}
		next := h.clock.Now().Add(gap)
		if cp := h.lastPublished(t); !next.Before(cp.ExpiresAt) {
			t.Fatalf("round %d: the shims' copy (seq %d) expires at %v, before the next round at %v", i, cp.Seq, cp.ExpiresAt, next)
		}
		h.clock.Add(gap)
	}
	// Not every round is published: only when the copy would run out.
	if n := len(h.pub.verdicts); n >= len(gaps) {
		t.Errorf("%d of %d unchanged rounds published, want fewer", n, len(gaps))
	}
}

// After a restart the engine does not know what the shims hold (their
// copies may have expired while it was down): the first verdict of every
// host is published at once, changed or not.
func TestFirstVerdictAfterRestartIsPublished(t *testing.T) {
	h := newTrustedHost(t)
	v1 := h.attest(t)
	// A new engine on the same store: the service restarted.
	eng2 := engine.New(h.cfg)
	h.clock.Add(5 * time.Second)
	v2, err := eng2.Attest(context.Background(), "c1")
	if err != nil || v2.Status != verdict.Trusted || v2.Seq <= v1.Seq {
		t.Fatalf("first round after restart: %+v, %v", v2, err)
	}
	if got := h.lastPublished(t); got.Seq != v2.Seq {
		t.Errorf("last published seq %d, want the first verdict after the restart (%d)", got.Seq, v2.Seq)
	}
}

// With the service's heartbeat running, the heartbeat keeps the shims'
// copy fresh and unchanged rounds are not published on their own; the
// copy still never expires, second by second.
func TestHeartbeatSparesRoundPublications(t *testing.T) {
	h := newTrustedHost(t, func(c *engine.Config) { c.HeartbeatInterval, c.QuoteTimeout = 10*time.Second, 5*time.Second })
	start := h.clock.Now()
	nextRound := start
	roundPublished := 0
	for sec := range 150 {
		now := start.Add(time.Duration(sec) * time.Second)
		h.clock.Add(now.Sub(h.clock.Now()))
		if sec%10 == 5 {
			if err := h.eng.Heartbeat(t.Context()); err != nil {
				t.Fatal(err)
			}
		}
		if !now.Before(nextRound) {
			n := len(h.pub.verdicts)
			if v := h.attest(t); v.Status != verdict.Trusted {
				t.Fatalf("round at %ds: %+v", sec, v)
			}
			if sec > 0 && len(h.pub.verdicts) > n {
				roundPublished++
			}
			nextRound = now.Add(12 * time.Second) // interval + jitter
		}
		if cp := h.lastPublished(t); !now.Add(time.Second).Before(cp.ExpiresAt) {
			t.Fatalf("at %ds the shims' copy (seq %d) expires at %v", sec, cp.Seq, cp.ExpiresAt.Sub(start))
		}
	}
	if roundPublished != 0 {
		t.Errorf("%d unchanged rounds published although the heartbeat covered them", roundPublished)
	}
}
