package cluster_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/trustpool/trustpool/attestation-service/internal/cluster"
	"github.com/trustpool/trustpool/attestation-service/internal/store"
)

type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// flaky fails every call while down is set (a database this instance cannot
// reach).
type flaky struct {
	cluster.Store
	down atomic.Bool
}

var errDown = errors.New("database unreachable")

func (f *flaky) Heartbeat(ctx context.Context, m store.Member) error {
	if f.down.Load() {
		return errDown
	}
	return f.Store.Heartbeat(ctx, m)
}

func (f *flaky) Members(ctx context.Context) ([]store.Member, error) {
	if f.down.Load() {
		return nil, errDown
	}
	return f.Store.Members(ctx)
}

const lease = 10 * time.Second

func newMembers(t *testing.T, clk *clock, names ...string) (map[string]*cluster.Membership, map[string]*flaky) {
	t.Helper()
	st, err := store.Open(t.Context(), "sqlite:///"+filepath.Join(t.TempDir(), "a.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	ms, fs := map[string]*cluster.Membership{}, map[string]*flaky{}
	for _, n := range names {
		f := &flaky{Store: st}
		fs[n] = f
		ms[n] = cluster.New(cluster.Config{Name: n, KID: "kid-" + n, PublicKeyPEM: "pem-" + n, Lease: lease, Store: f, Now: clk.Now})
	}
	return ms, fs
}

func refresh(ms map[string]*cluster.Membership, names ...string) {
	for _, n := range names {
		ms[n].Refresh(context.Background())
	}
}

func hosts(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("compute-%05d", i)
	}
	return out
}

// Every instance computes the same owner for every host, each host has
// exactly one, and the fleet splits about evenly.
func TestOwnershipIsConsistentAndEven(t *testing.T) {
	clk := &clock{now: time.Now()}
	ms, _ := newMembers(t, clk, "a", "b", "c")
	if ms["a"].View().Valid {
		t.Fatal("view valid before the first heartbeat")
	}
	refresh(ms, "a", "b", "c")
	refresh(ms, "a", "b", "c")
	count := map[string]int{}
	for _, h := range hosts(3000) {
		owners := 0
		for _, n := range []string{"a", "b", "c"} {
			if ms[n].Owns(h) {
				owners++
				count[n]++
			}
		}
		if owners != 1 {
			t.Fatalf("%s has %d owners", h, owners)
		}
	}
	for n, c := range count {
		if c < 800 || c > 1200 {
			t.Errorf("%s owns %d of 3000 hosts, want about 1000", n, c)
		}
	}
	if keys := ms["a"].LiveKeys(); len(keys) != 3 || keys[1].KID != "kid-b" || keys[2].PublicKeyPEM != "pem-c" {
		t.Errorf("LiveKeys = %+v", keys)
	}
}

// A member that stops (kill -9) is dropped once its lease runs out; only
// its hosts move, to the survivors.
func TestDeadMemberHandsOver(t *testing.T) {
	clk := &clock{now: time.Now()}
	ms, _ := newMembers(t, clk, "a", "b", "c")
	refresh(ms, "a", "b", "c")
	refresh(ms, "a", "b", "c")
	before := map[string]string{}
	for _, h := range hosts(3000) {
		before[h] = ms["a"].View().Owner(h)
	}
	// b is silent; within the lease nothing moves.
	clk.Add(lease - time.Second)
	refresh(ms, "a", "c")
	if got := ms["a"].View().Members; len(got) != 3 {
		t.Fatalf("members %v within b's lease", got)
	}
	clk.Add(2 * time.Second)
	refresh(ms, "a", "c")
	for _, n := range []string{"a", "c"} {
		if got := ms[n].View().Members; len(got) != 2 || got[0] != "a" || got[1] != "c" {
			t.Fatalf("%s's members after b's lease: %v", n, got)
		}
	}
	for h, was := range before {
		now := ms["a"].View().Owner(h)
		if ms["c"].View().Owner(h) != now {
			t.Fatalf("a and c disagree on %s", h)
		}
		if was != "b" && now != was {
			t.Errorf("%s moved from %s to %s although %s is alive", h, was, now, was)
		}
		if was == "b" && now == "b" {
			t.Errorf("%s still owned by the dead member", h)
		}
	}
}

// An instance that cannot renew its row for a lease owns nothing (the
// others have taken its hosts); it owns its share again once it renews.
func TestLostLeaseOwnsNothing(t *testing.T) {
	clk := &clock{now: time.Now()}
	ms, fs := newMembers(t, clk, "a", "b")
	refresh(ms, "a", "b")
	owned := func(n string) int {
		c := 0
		for _, h := range hosts(1000) {
			if ms[n].Owns(h) {
				c++
			}
		}
		return c
	}
	if owned("a") == 0 {
		t.Fatal("a owns nothing while healthy")
	}
	fs["a"].down.Store(true)
	clk.Add(lease / 2)
	refresh(ms, "a", "b")
	if owned("a") == 0 {
		t.Error("a dropped its hosts before its lease ran out")
	}
	clk.Add(lease)
	refresh(ms, "a", "b")
	if v := ms["a"].View(); v.Valid || owned("a") != 0 {
		t.Errorf("a's view %+v owns %d hosts after losing its lease", v, owned("a"))
	}
	if owned("b") != 1000 {
		t.Errorf("b owns %d of 1000 hosts once a's lease ran out", owned("b"))
	}
	fs["a"].down.Store(false)
	refresh(ms, "a", "b")
	refresh(ms, "b")
	if owned("a")+owned("b") != 1000 || owned("a") == 0 {
		t.Errorf("after a renews: a %d, b %d", owned("a"), owned("b"))
	}
}

// A graceful stop removes the row: the others take the hosts at their next
// refresh, without waiting for the lease.
func TestLeaveHandsOverAtOnce(t *testing.T) {
	clk := &clock{now: time.Now()}
	ms, _ := newMembers(t, clk, "a", "b")
	refresh(ms, "a", "b")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ms["b"].Run(ctx) }()
	time.Sleep(50 * time.Millisecond)
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	refresh(ms, "a")
	if got := ms["a"].View().Members; len(got) != 1 || got[0] != "a" {
		t.Errorf("members after b left: %v", got)
	}
}

// Scores are a fixed function of the names: every instance, of any
// version during a rolling upgrade, computes the same (a changed function
// would split hosts differently on old and new instances). They differ
// between members and between hosts.
func TestScore(t *testing.T) {
	if got, want := cluster.Score("a", "h"), uint64(0x9a202b3d2fd209f6); got != want {
		t.Errorf("Score(a, h) = %#x, want %#x", got, want)
	}
	if cluster.Score("a", "h") == cluster.Score("b", "h") || cluster.Score("a", "h") == cluster.Score("a", "i") {
		t.Error("scores collide")
	}
}
