package traits_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/gophercloud/gophercloud/v2"

	"github.com/trustpool/trustpool/attestation-service/internal/cloud"
	"github.com/trustpool/trustpool/attestation-service/internal/metrics"
	"github.com/trustpool/trustpool/attestation-service/internal/traits"
	"github.com/trustpool/trustpool/internal/servicetest"
	"github.com/trustpool/trustpool/internal/verdict"
)

func TestMain(m *testing.M) { servicetest.Main(m) }

func TestWanted(t *testing.T) {
	now := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	v := func(s verdict.Status, expires time.Duration, profiles ...string) verdict.Verdict {
		return verdict.Verdict{Host: "h", Status: s, Profiles: profiles, VerifiedAt: now.Add(-time.Second), ExpiresAt: now.Add(expires)}
	}
	tests := []struct {
		name string
		v    verdict.Verdict
		want []string
	}{
		{"trusted", v(verdict.Trusted, time.Minute, "gold-v2", "baseline"),
			[]string{"CUSTOM_TRUSTPOOL_PROFILE_BASELINE", "CUSTOM_TRUSTPOOL_PROFILE_GOLD_V2", "CUSTOM_TRUSTPOOL_TRUSTED"}},
		{"trusted without profiles", v(verdict.Trusted, time.Minute), []string{"CUSTOM_TRUSTPOOL_TRUSTED"}},
		{"expired", v(verdict.Trusted, 0, "baseline"), nil},
		{"untrusted satisfying a profile", v(verdict.Untrusted, time.Minute, "baseline"), nil},
		{"unknown", v(verdict.Unknown, time.Minute), nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if diff := cmp.Diff(tc.want, traits.Wanted(tc.v, now)); diff != "" {
				t.Errorf("Wanted (-want +got):\n%s", diff)
			}
		})
	}
	if !traits.Owned("CUSTOM_TRUSTPOOL_X") || traits.Owned("CUSTOM_TRUSTPOOLX") || traits.Owned("COMPUTE_NODE") || traits.Owned(traits.Prefix) {
		t.Error("Owned is wrong")
	}
}

// fixture is a real Placement with the mirror's client on it.
type fixture struct {
	pl      *servicetest.PlacementServer
	client  *cloud.Placement
	reg     *metrics.Registry
	mu      sync.Mutex
	vs      map[string]verdict.Verdict
	nodes   map[string][]string
	prof    []string
	beforeP func(req *http.Request) // runs before each PUT of provider traits by the mirror
}

// transport lets a test act just before the mirror's trait writes.
type transport struct{ f *fixture }

func (tr transport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Method == http.MethodPut && strings.HasSuffix(req.URL.Path, "/traits") && strings.Contains(req.URL.Path, "/resource_providers/") {
		tr.f.mu.Lock()
		fn := tr.f.beforeP
		tr.f.mu.Unlock()
		if fn != nil {
			fn(req)
		}
	}
	return http.DefaultTransport.RoundTrip(req)
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	f := &fixture{pl: servicetest.Placement(t), reg: metrics.New(), vs: map[string]verdict.Verdict{}, nodes: map[string][]string{}}
	f.client = f.placementVia(t, transport{f})
	return f
}

// placementVia is a Placement client on the fixture's Placement whose
// requests go through rt (counting them, or failing some on purpose).
func (f *fixture) placementVia(t *testing.T, rt http.RoundTripper) *cloud.Placement {
	t.Helper()
	pc := &gophercloud.ProviderClient{HTTPClient: http.Client{Transport: rt}}
	pc.SetToken(f.pl.Token)
	c, err := cloud.NewPlacement(pc, cloud.Endpoint{EndpointOverride: f.pl.URL})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// answer is an empty response with status code, as Placement gives when
// it refuses.
func answer(req *http.Request, code int) *http.Response {
	return &http.Response{StatusCode: code, Body: io.NopCloser(strings.NewReader("")), Header: http.Header{}, Request: req}
}

func (f *fixture) AllNodes(context.Context) (map[string][]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := map[string][]string{}
	for h, rps := range f.nodes {
		out[h] = slices.Clone(rps)
	}
	return out, nil
}

func (f *fixture) verdicts(context.Context) ([]verdict.Verdict, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []verdict.Verdict
	for _, v := range f.vs {
		out = append(out, v)
	}
	return out, nil
}

func (f *fixture) profiles(context.Context) ([]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.prof), nil
}

// store records v as the stored verdict (what Verdicts returns).
func (f *fixture) store(v verdict.Verdict) {
	f.mu.Lock()
	f.vs[v.Host] = v
	f.mu.Unlock()
}

func (f *fixture) node(t *testing.T, host string, names ...string) []string {
	t.Helper()
	if len(names) == 0 {
		names = []string{host}
	}
	var rps []string
	for _, n := range names {
		rps = append(rps, f.pl.CreateProvider(t, n))
	}
	f.mu.Lock()
	f.nodes[host] = rps
	f.mu.Unlock()
	return rps
}

func (f *fixture) mirror(t *testing.T, mod func(*traits.Config)) *traits.Mirror {
	t.Helper()
	cfg := traits.Config{Placement: f.client, Nodes: f, Verdicts: f.verdicts, Profiles: f.profiles,
		Metrics: f.reg, RetryDelay: 50 * time.Millisecond, ReconcileInterval: time.Hour,
		Logger: slog.New(slog.NewTextHandler(testLog{t}, nil))}
	if mod != nil {
		mod(&cfg)
	}
	return traits.New(cfg)
}

// testLog sends the mirror's log to the test's, so that a failure shows
// the Placement errors and retries that led to it. Run returns (its
// cleanup waits) before the test ends, so nothing logs after.
type testLog struct{ t *testing.T }

func (l testLog) Write(b []byte) (int, error) {
	l.t.Log(strings.TrimRight(string(b), "\n"))
	return len(b), nil
}

func run(t *testing.T, m *traits.Mirror) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("Run() = %v, want context.Canceled", err)
		}
	})
}

var seq atomic.Uint64

func vd(host string, s verdict.Status, validity time.Duration, profiles ...string) verdict.Verdict {
	now := time.Now()
	return verdict.Verdict{Host: host, Status: s, Profiles: profiles, VerifiedAt: now, ExpiresAt: now.Add(validity), Seq: seq.Add(1)}
}

// waitTraits waits until rp's traits are want (sorted), failing with the last seen.
func (f *fixture) waitTraits(t *testing.T, rp string, want ...string) {
	t.Helper()
	slices.Sort(want)
	var got []string
	// A bound against a hang, not a pass criterion: Placement and the
	// mirror share a loaded 2-core CI machine with the race detector.
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		_, got = f.pl.Traits(t, rp)
		slices.Sort(got)
		if slices.Equal(got, want) || len(got) == 0 && len(want) == 0 {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("traits of %s = %v, want %v", rp, got, want)
}

func (f *fixture) metric(t *testing.T, line string) bool {
	t.Helper()
	var b bytes.Buffer
	if err := f.reg.Write(&b); err != nil {
		t.Fatal(err)
	}
	return strings.Contains(b.String(), line)
}

// TestMirrorFollowsVerdicts: traits appear on a trusted host's provider,
// created on demand, and go with an untrusted verdict; foreign traits on
// the same provider (nova-compute's standard ones, another tool's custom
// one) survive both writes.
func TestMirrorFollowsVerdicts(t *testing.T) {
	f := newFixture(t)
	rp1 := f.node(t, "host1")[0]
	rp2 := f.node(t, "host2")[0]
	f.pl.SetTraits(t, rp1, []string{"COMPUTE_NODE", "CUSTOM_OTHER_TOOL"})
	v1 := vd("host1", verdict.Trusted, time.Hour, "baseline", "gold-v2")
	v2 := vd("host2", verdict.Untrusted, time.Hour, "baseline")
	f.store(v1)
	f.store(v2)
	f.prof = []string{"baseline", "gold-v2"}
	m := f.mirror(t, nil)
	run(t, m)
	f.waitTraits(t, rp1, "COMPUTE_NODE", "CUSTOM_OTHER_TOOL", "CUSTOM_TRUSTPOOL_TRUSTED",
		"CUSTOM_TRUSTPOOL_PROFILE_BASELINE", "CUSTOM_TRUSTPOOL_PROFILE_GOLD_V2")
	f.waitTraits(t, rp2)

	// host1 turns untrusted, host2 trusted.
	for _, v := range []verdict.Verdict{vd("host1", verdict.Untrusted, time.Hour), vd("host2", verdict.Trusted, time.Hour, "baseline")} {
		f.store(v)
		m.VerdictStored(nil, v)
	}
	f.waitTraits(t, rp1, "COMPUTE_NODE", "CUSTOM_OTHER_TOOL")
	f.waitTraits(t, rp2, "CUSTOM_TRUSTPOOL_TRUSTED", "CUSTOM_TRUSTPOOL_PROFILE_BASELINE")
	// An older verdict arriving late changes nothing.
	m.VerdictStored(nil, v1)
	time.Sleep(300 * time.Millisecond)
	f.waitTraits(t, rp1, "COMPUTE_NODE", "CUSTOM_OTHER_TOOL")
}

// TestMirrorRetriesGenerationConflict: another writer (here a foreign
// trait update, as nova-compute's resource tracker makes) lands between the
// mirror's read and its write: Placement answers 409, the mirror reads
// again and writes both sets; nothing is lost.
func TestMirrorRetriesGenerationConflict(t *testing.T) {
	f := newFixture(t)
	rp := f.node(t, "host1")[0]
	f.pl.SetTraits(t, rp, []string{"COMPUTE_NODE"})
	var raced atomic.Int32
	f.beforeP = func(*http.Request) {
		if raced.Add(1) == 1 {
			f.pl.SetTraits(t, rp, []string{"COMPUTE_NODE", "COMPUTE_VOLUME_MULTI_ATTACH"})
		}
	}
	v := vd("host1", verdict.Trusted, time.Hour)
	f.store(v)
	run(t, f.mirror(t, nil))
	f.waitTraits(t, rp, "COMPUTE_NODE", "COMPUTE_VOLUME_MULTI_ATTACH", "CUSTOM_TRUSTPOOL_TRUSTED")
	if raced.Load() < 2 {
		t.Errorf("%d trait writes, want the conflicting one and its retry", raced.Load())
	}
	if !f.metric(t, `trustpool_placement_trait_writes_total{result="conflict"} 1`) {
		t.Error("the 409 was not counted as a conflict")
	}
}

// TestMirrorReconcilesFirst: what Placement holds from before a restart is
// fixed before anything else: a trait of a verdict that expired while the
// service was down goes, so does a provider's trait that no host owns and a
// profile trait of a profile the verdict no longer lists; a missing trait of
// a trusted host is added.
func TestMirrorReconcilesFirst(t *testing.T) {
	f := newFixture(t)
	rp1 := f.node(t, "host1")[0]
	rp2 := f.node(t, "host2")[0]
	orphan := f.pl.CreateProvider(t, "not-a-compute-node")
	f.pl.SetTraits(t, rp1, []string{"COMPUTE_NODE", "CUSTOM_TRUSTPOOL_TRUSTED", "CUSTOM_TRUSTPOOL_PROFILE_BASELINE"})
	f.pl.SetTraits(t, rp2, []string{"CUSTOM_TRUSTPOOL_TRUSTED", "CUSTOM_TRUSTPOOL_PROFILE_OLD"})
	f.pl.SetTraits(t, orphan, []string{"CUSTOM_TRUSTPOOL_TRUSTED", "CUSTOM_KEEP"})
	expired := vd("host1", verdict.Trusted, time.Hour, "baseline")
	expired.VerifiedAt, expired.ExpiresAt = time.Now().Add(-time.Hour), time.Now().Add(-time.Minute)
	f.store(expired)
	f.store(vd("host2", verdict.Trusted, time.Hour, "baseline"))
	run(t, f.mirror(t, nil))
	f.waitTraits(t, rp1, "COMPUTE_NODE")
	f.waitTraits(t, rp2, "CUSTOM_TRUSTPOOL_TRUSTED", "CUSTOM_TRUSTPOOL_PROFILE_BASELINE")
	f.waitTraits(t, orphan, "CUSTOM_KEEP")
}

// TestMirrorExpiry: a trusted verdict that is not renewed loses its traits
// at expires_at, without any further verdict.
func TestMirrorExpiry(t *testing.T) {
	f := newFixture(t)
	rp := f.node(t, "host1")[0]
	v := vd("host1", verdict.Trusted, 1500*time.Millisecond)
	f.store(v)
	run(t, f.mirror(t, nil))
	f.waitTraits(t, rp, "CUSTOM_TRUSTPOOL_TRUSTED")
	start := time.Now()
	f.waitTraits(t, rp)
	if time.Now().Before(v.ExpiresAt) {
		t.Errorf("trait removed %v before expires_at", time.Until(v.ExpiresAt))
	}
	t.Logf("removed %v after waiting", time.Since(start))
}

// TestMirrorRepairsDrift: the periodic reconcile puts back a trait removed
// by hand and removes one added by hand.
func TestMirrorRepairsDrift(t *testing.T) {
	f := newFixture(t)
	rp1 := f.node(t, "host1")[0]
	rp2 := f.node(t, "host2")[0]
	f.store(vd("host1", verdict.Trusted, time.Hour))
	f.store(vd("host2", verdict.Untrusted, time.Hour))
	run(t, f.mirror(t, func(c *traits.Config) { c.ReconcileInterval = 300 * time.Millisecond }))
	f.waitTraits(t, rp1, "CUSTOM_TRUSTPOOL_TRUSTED")
	f.pl.SetTraits(t, rp1, []string{"CUSTOM_SOMETHING"})
	f.pl.SetTraits(t, rp2, []string{"CUSTOM_TRUSTPOOL_TRUSTED"})
	f.waitTraits(t, rp1, "CUSTOM_SOMETHING", "CUSTOM_TRUSTPOOL_TRUSTED")
	f.waitTraits(t, rp2)
}

// TestMirrorEveryNode: a host with several compute nodes (Ironic, or a
// driver managing more than one node) gets the traits on each of them.
func TestMirrorEveryNode(t *testing.T) {
	f := newFixture(t)
	rps := f.node(t, "ironic-conductor", "node-a", "node-b")
	v := vd("ironic-conductor", verdict.Trusted, time.Hour)
	f.store(v)
	m := f.mirror(t, nil)
	run(t, m)
	for _, rp := range rps {
		f.waitTraits(t, rp, "CUSTOM_TRUSTPOOL_TRUSTED")
	}
	u := vd("ironic-conductor", verdict.Unknown, 0)
	f.store(u)
	m.VerdictStored(&v, u)
	for _, rp := range rps {
		f.waitTraits(t, rp)
	}
}

// TestMirrorAmbiguousProfileTrait: two profiles from before the naming rule
// whose names are one trait get no profile trait (it would not say which
// profile passed); the trusted trait is still mirrored.
func TestMirrorAmbiguousProfileTrait(t *testing.T) {
	f := newFixture(t)
	rp := f.node(t, "host1")[0]
	f.prof = []string{"gold-v2", "gold_v2", "baseline"}
	f.store(vd("host1", verdict.Trusted, time.Hour, "baseline", "gold-v2"))
	run(t, f.mirror(t, nil))
	f.waitTraits(t, rp, "CUSTOM_TRUSTPOOL_TRUSTED", "CUSTOM_TRUSTPOOL_PROFILE_BASELINE")
}

// TestMirrorPlacementDown: while Placement refuses, nothing is lost: the
// host is retried and written once Placement answers.
func TestMirrorPlacementDown(t *testing.T) {
	f := newFixture(t)
	rp := f.node(t, "host1")[0]
	var fail atomic.Bool
	fail.Store(true)
	c := f.placementVia(t, roundTripFunc(func(req *http.Request) (*http.Response, error) {
		if fail.Load() {
			return answer(req, http.StatusServiceUnavailable), nil
		}
		return http.DefaultTransport.RoundTrip(req)
	}))
	f.store(vd("host1", verdict.Trusted, time.Hour))
	run(t, f.mirror(t, func(cfg *traits.Config) { cfg.Placement = c }))
	time.Sleep(300 * time.Millisecond)
	if _, got := f.pl.Traits(t, rp); len(got) != 0 {
		t.Fatalf("traits %v while Placement was refusing", got)
	}
	fail.Store(false)
	f.waitTraits(t, rp, "CUSTOM_TRUSTPOOL_TRUSTED")
}

// TestMirrorRetriesFailedWrite: a trait write that fails once (Placement
// answers 500 when two writers create one custom trait at once) is
// retried after its backoff, not at the next reconcile an hour later.
func TestMirrorRetriesFailedWrite(t *testing.T) {
	f := newFixture(t)
	rp := f.node(t, "host1")[0]
	var failed atomic.Bool
	c := f.placementVia(t, roundTripFunc(func(req *http.Request) (*http.Response, error) {
		if req.Method == http.MethodPut && strings.HasSuffix(req.URL.Path, "/traits") && failed.CompareAndSwap(false, true) {
			return answer(req, http.StatusInternalServerError), nil
		}
		return http.DefaultTransport.RoundTrip(req)
	}))
	f.store(vd("host1", verdict.Trusted, time.Hour))
	run(t, f.mirror(t, func(cfg *traits.Config) { cfg.Placement = c }))
	f.waitTraits(t, rp, "CUSTOM_TRUSTPOOL_TRUSTED")
	if !failed.Load() {
		t.Error("no trait write was refused: the test did not inject its fault")
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// TestMirrorFindsNewNodes: a host whose compute node appears after its
// first verdicts gets its traits with a later verdict, once the node
// lookup has aged (no need to wait for the periodic reconcile).
func TestMirrorFindsNewNodes(t *testing.T) {
	f := newFixture(t)
	f.node(t, "other")
	v := vd("late", verdict.Trusted, time.Hour)
	f.store(v)
	m := f.mirror(t, func(c *traits.Config) { c.NodesMaxAge = 200 * time.Millisecond })
	run(t, m)
	m.VerdictStored(nil, v)
	time.Sleep(300 * time.Millisecond)
	rp := f.node(t, "late")[0]
	time.Sleep(250 * time.Millisecond)
	v2 := vd("late", verdict.Trusted, time.Hour)
	f.store(v2)
	m.VerdictStored(&v, v2)
	f.waitTraits(t, rp, "CUSTOM_TRUSTPOOL_TRUSTED")
}
