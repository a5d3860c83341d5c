package traits_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/trustpool/trustpool/attestation-service/internal/cluster"
	"github.com/trustpool/trustpool/attestation-service/internal/metrics"
	"github.com/trustpool/trustpool/attestation-service/internal/traits"
	"github.com/trustpool/trustpool/internal/verdict"
)

// viewOwner is one instance's cluster view (the rendezvous split the
// service's Membership computes), changed by the test.
type viewOwner struct {
	mu sync.Mutex
	v  cluster.View
}

func newViewOwner(self string, members ...string) *viewOwner {
	return &viewOwner{v: cluster.View{Self: self, Valid: true, Members: members}}
}

func (o *viewOwner) Owns(name string) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.v.Owns(name)
}

func (o *viewOwner) setMembers(members ...string) {
	o.mu.Lock()
	o.v.Members = members
	o.mu.Unlock()
}

// instance is one service instance's mirror on the shared fixture, with
// its own Placement client counting the requests on each provider's traits.
type instance struct {
	m     *traits.Mirror
	owner *viewOwner
	reg   *metrics.Registry

	mu     sync.Mutex
	reads  map[string]int // provider UUID → GET of its traits
	writes map[string]int // provider UUID → PUT of its traits
}

func (in *instance) RoundTrip(req *http.Request) (*http.Response, error) {
	if rest, ok := strings.CutPrefix(req.URL.Path, "/resource_providers/"); ok {
		if rp, ok := strings.CutSuffix(rest, "/traits"); ok {
			in.mu.Lock()
			switch req.Method {
			case http.MethodGet:
				in.reads[rp]++
			case http.MethodPut:
				in.writes[rp]++
			}
			in.mu.Unlock()
		}
	}
	return http.DefaultTransport.RoundTrip(req)
}

// touched returns the requests on rp's traits so far.
func (in *instance) touched(rp string) (reads, writes int) {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.reads[rp], in.writes[rp]
}

func (f *fixture) instance(t *testing.T, owner *viewOwner, mod func(*traits.Config)) *instance {
	t.Helper()
	in := &instance{owner: owner, reg: metrics.New(), reads: map[string]int{}, writes: map[string]int{}}
	c := f.placementVia(t, in)
	in.m = f.mirror(t, func(cfg *traits.Config) {
		cfg.Placement, cfg.Owner, cfg.Metrics = c, owner, in.reg
		if mod != nil {
			mod(cfg)
		}
	})
	return in
}

// waitReconciled waits until in's mirror finished its first reconciliation.
func (in *instance) waitReconciled(t *testing.T) {
	t.Helper()
	const want = `trustpool_placement_reconciles_total{result="ok"} 1`
	deadline := time.Now().Add(60 * time.Second) // against a hang only
	for time.Now().Before(deadline) {
		var b bytes.Buffer
		if err := in.reg.Write(&b); err != nil {
			t.Fatal(err)
		}
		if strings.Contains(b.String(), want) {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("%s: no reconciliation", in.owner.v.Self)
}

// ownedBy returns a name per member, made from prefix, that view owns.
func ownedBy(t *testing.T, prefix string, members ...string) map[string]string {
	t.Helper()
	v := cluster.View{Valid: true, Members: members}
	out := map[string]string{}
	for i := 0; len(out) < len(members); i++ {
		if i > 1000 {
			t.Fatal("no name for every member")
		}
		name := fmt.Sprintf("%s%d", prefix, i)
		if o := v.Owner(name); out[o] == "" {
			out[o] = name
		}
	}
	return out
}

// runStoppable runs m until the returned stop (or the test's end).
func runStoppable(t *testing.T, m *traits.Mirror) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; !errors.Is(err, context.Canceled) {
				t.Errorf("Run() = %v, want context.Canceled", err)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// TestMirrorOnlyOwnerWrites: two instances share the verdicts and split
// the hosts. Each host's providers are read and written only by its owner,
// and a verdict the other instance holds (a round it ran on a trigger,
// older than the owner's newest) does not put back a trait the owner
// removed.
func TestMirrorOnlyOwnerWrites(t *testing.T) {
	f := newFixture(t)
	hosts := ownedBy(t, "host", "a", "b")
	hA, hB := hosts["a"], hosts["b"]
	rpA, rpB := f.node(t, hA)[0], f.node(t, hB)[0]
	f.store(vd(hA, verdict.Untrusted, time.Hour))
	f.store(vd(hB, verdict.Trusted, time.Hour))
	a := f.instance(t, newViewOwner("a", "a", "b"), nil)
	// One worker: b applies its hosts in the order they are queued.
	b := f.instance(t, newViewOwner("b", "a", "b"), func(c *traits.Config) { c.Workers = 1 })
	run(t, a.m)
	run(t, b.m)
	a.waitReconciled(t)
	b.waitReconciled(t)
	f.waitTraits(t, rpB, "CUSTOM_TRUSTPOOL_TRUSTED")

	// a's rounds: trusted, then untrusted. In between, b ran a round on a
	// trigger (trusted); only b's mirror hears of it, after a's last.
	v1 := vd(hA, verdict.Trusted, time.Hour)
	stale := vd(hA, verdict.Trusted, time.Hour)
	v2 := vd(hA, verdict.Untrusted, time.Hour)
	f.store(v1)
	a.m.VerdictStored(nil, v1)
	f.waitTraits(t, rpA, "CUSTOM_TRUSTPOOL_TRUSTED")
	f.store(v2)
	a.m.VerdictStored(&v1, v2)
	f.waitTraits(t, rpA)
	b.m.VerdictStored(nil, stale)
	// b's own host, queued after: once it is written, b is done with hA.
	vB := vd(hB, verdict.Untrusted, time.Hour)
	f.store(vB)
	b.m.VerdictStored(nil, vB)
	f.waitTraits(t, rpB)
	f.waitTraits(t, rpA)

	for _, c := range []struct {
		name     string
		in       *instance
		rp       string
		reads    bool
		minWrite int
	}{
		{"a on its host", a, rpA, true, 2},
		{"b on a's host", b, rpA, false, 0},
		{"a on b's host", a, rpB, false, 0},
		{"b on its host", b, rpB, true, 2},
	} {
		r, w := c.in.touched(c.rp)
		if (r > 0) != c.reads || w < c.minWrite || c.minWrite == 0 && w > 0 {
			t.Errorf("%s: %d reads, %d writes; want reads %v, writes >= %d (none when 0)", c.name, r, w, c.reads, c.minWrite)
		}
	}
}

// TestMirrorHandover: an instance dies after storing a verdict its mirror
// never wrote; once the other instance's view drops it, the survivor owns
// the host and writes its traits at once (not at the next periodic
// reconcile, an hour away here).
func TestMirrorHandover(t *testing.T) {
	f := newFixture(t)
	hosts := ownedBy(t, "host", "a", "b")
	hA, hB := hosts["a"], hosts["b"]
	rpA, rpB := f.node(t, hA)[0], f.node(t, hB)[0]
	f.store(vd(hA, verdict.Trusted, time.Hour))
	f.store(vd(hB, verdict.Trusted, time.Hour))
	a := f.instance(t, newViewOwner("a", "a", "b"), nil)
	b := f.instance(t, newViewOwner("b", "a", "b"), nil)
	stopA := runStoppable(t, a.m)
	run(t, b.m)
	f.waitTraits(t, rpA, "CUSTOM_TRUSTPOOL_TRUSTED")
	f.waitTraits(t, rpB, "CUSTOM_TRUSTPOOL_TRUSTED")
	b.waitReconciled(t)

	// a stores an untrusted verdict and is killed before writing it.
	stopA()
	f.store(vd(hA, verdict.Untrusted, time.Hour))
	if _, got := f.pl.Traits(t, rpA); len(got) == 0 {
		t.Fatal("the test needs hA's trait still in place")
	}
	if r, w := b.touched(rpA); r+w != 0 {
		t.Fatalf("b touched a's host before the hand-over: %d reads, %d writes", r, w)
	}
	b.owner.setMembers("b")
	b.m.OwnersChanged()
	f.waitTraits(t, rpA)
	f.waitTraits(t, rpB, "CUSTOM_TRUSTPOOL_TRUSTED")
	if _, w := b.touched(rpA); w == 0 {
		t.Error("b did not write a's host after the hand-over")
	}
}

// TestMirrorOrphansOnce: providers with owned traits of no known host are
// cleaned by exactly one instance each: the first instance leaves the
// others' alone, the second cleans those.
func TestMirrorOrphansOnce(t *testing.T) {
	f := newFixture(t)
	v := cluster.View{Valid: true, Members: []string{"a", "b"}}
	byOwner := map[string][]string{}
	for i := 0; len(byOwner["a"]) == 0 || len(byOwner["b"]) == 0 || len(byOwner["a"])+len(byOwner["b"]) < 4; i++ {
		if i > 64 {
			t.Fatal("orphans all owned by one instance")
		}
		rp := f.pl.CreateProvider(t, fmt.Sprintf("orphan-%d", i))
		f.pl.SetTraits(t, rp, []string{"CUSTOM_TRUSTPOOL_TRUSTED", "CUSTOM_KEEP"})
		byOwner[v.Owner(rp)] = append(byOwner[v.Owner(rp)], rp)
	}
	a := f.instance(t, newViewOwner("a", "a", "b"), nil)
	b := f.instance(t, newViewOwner("b", "a", "b"), nil)

	run(t, a.m)
	a.waitReconciled(t)
	got := map[string][]string{}
	for _, rps := range byOwner {
		for _, rp := range rps {
			_, ts := f.pl.Traits(t, rp)
			if len(ts) == 2 {
				got["b"] = append(got["b"], rp) // not cleaned: left to b
			} else {
				got["a"] = append(got["a"], rp)
			}
		}
	}
	if diff := cmp.Diff(byOwner, got); diff != "" {
		t.Errorf("orphans cleaned by a (a) and left (b), (-want +got):\n%s", diff)
	}

	run(t, b.m)
	b.waitReconciled(t)
	for _, rps := range byOwner {
		for _, rp := range rps {
			f.waitTraits(t, rp, "CUSTOM_KEEP")
		}
	}
	for owner, rps := range byOwner {
		for _, rp := range rps {
			for name, in := range map[string]*instance{"a": a, "b": b} {
				r, w := in.touched(rp)
				if name != owner && r+w != 0 {
					t.Errorf("%s touched orphan %s of %s: %d reads, %d writes", name, rp, owner, r, w)
				}
				if name == owner && w != 1 {
					t.Errorf("%s wrote its orphan %s %d times, want 1", name, rp, w)
				}
			}
		}
	}
}
