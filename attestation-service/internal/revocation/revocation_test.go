package revocation_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/google/go-cmp/cmp"

	"github.com/trustpool/trustpool/attestation-service/internal/cloud"
	"github.com/trustpool/trustpool/attestation-service/internal/revocation"
	"github.com/trustpool/trustpool/attestation-service/internal/store"
	"github.com/trustpool/trustpool/internal/attestrpc"
	"github.com/trustpool/trustpool/internal/verdict"
)

// nova is an in-memory os-services with Nova's semantics for what the
// revoker uses (the real Nova API is exercised by the Nova end-to-end test
// in nova-filter-shim/python/tests/functional/test_placement_traits.py).
type nova struct {
	mu       sync.Mutex
	services map[string]*cloud.Service
	fail     int // the next fail calls fail
	writes   int
}

func newNova(hosts ...string) *nova {
	n := &nova{services: map[string]*cloud.Service{}}
	for i, h := range hosts {
		n.services[h] = &cloud.Service{ID: fmt.Sprintf("uuid-%d", i), Host: h, Up: true}
	}
	return n
}

func (n *nova) ComputeService(_ context.Context, host string) (cloud.Service, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.fail > 0 {
		n.fail--
		return cloud.Service{}, errors.New("nova api: HTTP 503")
	}
	s, ok := n.services[host]
	if !ok {
		return cloud.Service{}, fmt.Errorf("service of %s: %w", host, cloud.ErrNotFound)
	}
	return *s, nil
}

func (n *nova) byID(id string) *cloud.Service {
	for _, s := range n.services {
		if s.ID == id {
			return s
		}
	}
	return nil
}

func (n *nova) DisableService(_ context.Context, id, reason string) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if reason == "" || utf8.RuneCountInString(reason) > 255 {
		return fmt.Errorf("disable: HTTP 400: %w", cloud.ErrBadRequest)
	}
	s := n.byID(id)
	s.Disabled, s.DisabledReason = true, reason
	n.writes++
	return nil
}

func (n *nova) EnableService(_ context.Context, id string) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	s := n.byID(id)
	s.Disabled, s.DisabledReason = false, ""
	n.writes++
	return nil
}

// operator disables a service as `openstack compute service set --disable` does.
func (n *nova) operator(host, reason string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	s := n.services[host]
	s.Disabled, s.DisabledReason = true, reason
}

func (n *nova) state(host string) cloud.Service {
	n.mu.Lock()
	defer n.mu.Unlock()
	return *n.services[host]
}

type note struct {
	priority, event string
	payload         map[string]any
}

type notifier struct {
	mu    sync.Mutex
	notes []note
}

func (r *notifier) Notify(_ context.Context, priority, ev string, payload any) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	m, _ := payload.(map[string]any)
	r.notes = append(r.notes, note{priority, ev, m})
	return nil
}

func (r *notifier) events(ev string) []note {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []note
	for _, n := range r.notes {
		if n.event == ev {
			out = append(out, n)
		}
	}
	return out
}

func start(t *testing.T, cfg revocation.Config) *revocation.Revoker {
	t.Helper()
	r, _ := run(t, cfg)
	return r
}

// run starts a revoker; stop ends it (at the latest when the test ends).
func run(t *testing.T, cfg revocation.Config) (r *revocation.Revoker, stop func()) {
	t.Helper()
	if cfg.Hosts == nil {
		cfg.Hosts = func(context.Context) (int, error) { return 100, nil }
	}
	if cfg.BrakePercent == 0 {
		cfg.BrakePercent = 100
	}
	cfg.RetryDelay = 20 * time.Millisecond
	r = revocation.New(cfg)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; !errors.Is(err, context.Canceled) {
				t.Errorf("Run() = %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return r, stop
}

// brakeDB is the path of a fresh SQLite database for the brake's window.
func brakeDB(t *testing.T) string {
	t.Helper()
	return "sqlite:///" + filepath.Join(t.TempDir(), "attestation.db")
}

// openStore opens the database at url as one service instance does.
func openStore(t *testing.T, url string) *store.Store {
	t.Helper()
	s, err := store.Open(t.Context(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

var seq uint64

func vd(host string, s verdict.Status, reasons ...string) verdict.Verdict {
	seq++
	now := time.Now()
	return verdict.Verdict{Host: host, Status: s, Reasons: reasons, VerifiedAt: now, ExpiresAt: now.Add(time.Minute), Seq: seq}
}

// transition feeds old → new for host and returns new.
func transition(r *revocation.Revoker, old *verdict.Verdict, s verdict.Status, reasons ...string) verdict.Verdict {
	v := vd(old.Host, s, reasons...)
	r.VerdictStored(old, v)
	return v
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// settle waits long enough for a queued action to have been taken.
func settle() { time.Sleep(150 * time.Millisecond) }

func TestDisableThenEnable(t *testing.T) {
	n, notes := newNova("c1"), &notifier{}
	r := start(t, revocation.Config{Compute: n, Notifier: notes})
	v := vd("c1", verdict.Trusted)
	r.VerdictStored(nil, v)
	settle()
	if s := n.state("c1"); s.Disabled {
		t.Fatalf("trusted host disabled: %+v", s)
	}
	u := transition(r, &v, verdict.Untrusted, "evidence: replay_mismatch: PCR 7")
	waitFor(t, "disable", func() bool { return n.state("c1").Disabled })
	if got := n.state("c1").DisabledReason; got != "trustpool: untrusted: evidence: replay_mismatch: PCR 7" {
		t.Errorf("disabled_reason %q", got)
	}
	// Still untrusted (a new round with other reasons): nothing more.
	u2 := transition(r, &u, verdict.Untrusted, "other")
	settle()
	if n.writes != 1 {
		t.Errorf("%d service writes, want 1", n.writes)
	}
	transition(r, &u2, verdict.Trusted)
	// The notification follows Nova's answer: wait for both.
	waitFor(t, "enable", func() bool {
		return !n.state("c1").Disabled && len(notes.events(attestrpc.EventComputeEnabled)) > 0
	})
	if d, e := notes.events(attestrpc.EventComputeDisabled), notes.events(attestrpc.EventComputeEnabled); len(d) != 1 || len(e) != 1 ||
		d[0].payload["host"] != "c1" || d[0].payload["service_id"] != "uuid-0" {
		t.Errorf("notifications disabled=%v enabled=%v", d, e)
	}
}

// TestOperatorDisableIsNeverOverridden: a service an operator disabled
// stays disabled with the operator's reason through untrusted and trusted
// verdicts; a Trustpool disable whose reason an operator replaced is the
// operator's from then on.
func TestOperatorDisableIsNeverOverridden(t *testing.T) {
	n := newNova("c1", "c2")
	r := start(t, revocation.Config{Compute: n})
	n.operator("c1", "maintenance: RAM swap")
	v := vd("c1", verdict.Trusted)
	u := transition(r, &v, verdict.Untrusted, "bad")
	settle()
	transition(r, &u, verdict.Trusted)
	settle()
	if s := n.state("c1"); !s.Disabled || s.DisabledReason != "maintenance: RAM swap" {
		t.Errorf("operator-disabled service now %+v", s)
	}
	if n.writes != 0 {
		t.Errorf("%d writes to an operator-disabled service", n.writes)
	}

	v2 := vd("c2", verdict.Trusted)
	u2 := transition(r, &v2, verdict.Untrusted, "bad")
	waitFor(t, "disable c2", func() bool { return n.state("c2").Disabled })
	n.operator("c2", "keep out: investigating")
	transition(r, &u2, verdict.Trusted)
	settle()
	if s := n.state("c2"); !s.Disabled || s.DisabledReason != "keep out: investigating" {
		t.Errorf("service whose reason the operator took over is now %+v", s)
	}
}

func TestUnknownOnlyWhenAsked(t *testing.T) {
	for _, onUnknown := range []bool{false, true} {
		t.Run(fmt.Sprint("disable_on_unknown=", onUnknown), func(t *testing.T) {
			n := newNova("c1")
			r := start(t, revocation.Config{Compute: n, DisableOnUnknown: onUnknown})
			v := vd("c1", verdict.Trusted)
			u := transition(r, &v, verdict.Unknown, "unreachable: timeout")
			settle()
			if got := n.state("c1").Disabled; got != onUnknown {
				t.Fatalf("disabled = %v after unknown", got)
			}
			// unknown → untrusted is a transition only when unknown was not one.
			transition(r, &u, verdict.Untrusted, "bad")
			waitFor(t, "disabled", func() bool { return n.state("c1").Disabled })
			if want := "trustpool: unknown: unreachable: timeout"; onUnknown && n.state("c1").DisabledReason != want {
				t.Errorf("reason %q, want %q", n.state("c1").DisabledReason, want)
			}
		})
	}
}

// TestNewHostFailingAtOnce: a host whose first verdict is untrusted is
// disabled too.
func TestNewHostFailingAtOnce(t *testing.T) {
	n := newNova("c1")
	r := start(t, revocation.Config{Compute: n})
	r.VerdictStored(nil, vd("c1", verdict.Untrusted, "bad"))
	waitFor(t, "disabled", func() bool { return n.state("c1").Disabled })
}

func TestRetriedUntilNovaAnswers(t *testing.T) {
	n := newNova("c1")
	n.fail = 3
	r := start(t, revocation.Config{Compute: n})
	v := vd("c1", verdict.Trusted)
	transition(r, &v, verdict.Untrusted, "bad")
	waitFor(t, "disable after retries", func() bool { return n.state("c1").Disabled })
}

func TestNoComputeService(t *testing.T) {
	n := newNova()
	r := start(t, revocation.Config{Compute: n})
	v := vd("agent-only", verdict.Trusted)
	transition(r, &v, verdict.Untrusted, "bad")
	settle()
	if n.writes != 0 {
		t.Errorf("writes for a host without a service: %d", n.writes)
	}
}

// TestBrake: 10 hosts, brake at more than 20 % (and at least 2) within the
// window: two disables happen, the third transition trips the brake (one
// ERROR alert naming the hosts), later ones are not acted on either; once
// the window has passed the brake is released (listing the hosts skipped)
// and the service acts again. Re-enabling is not braked.
func TestBrake(t *testing.T) {
	hosts := []string{"c0", "c1", "c2", "c3", "c4", "c5", "c6", "c7", "c8", "c9"}
	n, notes := newNova(hosts...), &notifier{}
	window := 700 * time.Millisecond
	r := start(t, revocation.Config{Compute: n, Notifier: notes, BrakePercent: 20, BrakeMinHosts: 2, BrakeWindow: window,
		BrakeStore: openStore(t, brakeDB(t)), Hosts: func(context.Context) (int, error) { return len(hosts), nil }})
	trusted := map[string]verdict.Verdict{}
	untrusted := map[string]verdict.Verdict{}
	for _, h := range hosts {
		trusted[h] = vd(h, verdict.Trusted)
	}
	revoke := func(h string) {
		old := trusted[h]
		untrusted[h] = transition(r, &old, verdict.Untrusted, "profile baseline: pcr 7")
	}
	start := time.Now()
	for _, h := range hosts[:5] {
		revoke(h)
	}
	waitFor(t, "brake alert", func() bool { return len(notes.events(attestrpc.EventBrakeEngaged)) == 1 })
	settle()
	var disabled []string
	for _, h := range hosts {
		if n.state(h).Disabled {
			disabled = append(disabled, h)
		}
	}
	if diff := cmp.Diff([]string{"c0", "c1"}, disabled); diff != "" {
		t.Errorf("disabled hosts (-want +got):\n%s", diff)
	}
	alert := notes.events(attestrpc.EventBrakeEngaged)[0]
	if alert.priority != "ERROR" || alert.payload["hosts_untrusted"] != 3 || alert.payload["hosts_total"] != 10 ||
		!slices.Equal(alert.payload["hosts"].([]string), []string{"c0", "c1", "c2"}) {
		t.Errorf("alert %+v", alert)
	}
	// A host turning trusted again while braked is re-enabled.
	old := untrusted["c0"]
	transition(r, &old, verdict.Trusted)
	waitFor(t, "c0 enabled while braked", func() bool { return !n.state("c0").Disabled })

	waitFor(t, "brake released", func() bool { return len(notes.events(attestrpc.EventBrakeReleased)) == 1 })
	if time.Since(start) < window {
		t.Errorf("released after %v, before the window of %v passed", time.Since(start), window)
	}
	rel := notes.events(attestrpc.EventBrakeReleased)[0]
	if diff := cmp.Diff([]string{"c2", "c3", "c4"}, rel.payload["skipped_hosts"]); diff != "" {
		t.Errorf("skipped hosts (-want +got):\n%s", diff)
	}
	for _, h := range []string{"c2", "c3", "c4"} {
		if n.state(h).Disabled {
			t.Errorf("%s disabled after the brake skipped it", h)
		}
	}
	revoke("c9")
	waitFor(t, "acting again", func() bool { return n.state("c9").Disabled })
}

// brakeCfg is TestBrake's brake for ten hosts (it holds from the third
// transition in the window) on db. The window is long enough for a test's
// transitions to fall into it on a loaded machine.
func brakeCfg(t *testing.T, n *nova, notes *notifier, db string) revocation.Config {
	t.Helper()
	return revocation.Config{Compute: n, Notifier: notes, BrakePercent: 20, BrakeMinHosts: 2, BrakeWindow: 3 * time.Second,
		BrakeStore: openStore(t, db), Hosts: func(context.Context) (int, error) { return 10, nil }}
}

func disabledHosts(n *nova, hosts []string) []string {
	var out []string
	for _, h := range hosts {
		if n.state(h).Disabled {
			out = append(out, h)
		}
	}
	return out
}

// TestBrakeSharedByInstances: two service instances on one database (each
// with its own connection) share one window and one limit: of four hosts
// turning untrusted, two on each instance, two are disabled, the brake
// engages once and is released once, naming the two it held.
func TestBrakeSharedByInstances(t *testing.T) {
	hosts := []string{"c0", "c1", "c2", "c3"}
	n, notes, db := newNova(hosts...), &notifier{}, brakeDB(t)
	instances := []*revocation.Revoker{start(t, brakeCfg(t, n, notes, db)), start(t, brakeCfg(t, n, notes, db))}
	for i, h := range hosts {
		old := vd(h, verdict.Trusted)
		transition(instances[i%2], &old, verdict.Untrusted, "profile baseline: pcr 7")
	}
	waitFor(t, "brake alert", func() bool { return len(notes.events(attestrpc.EventBrakeEngaged)) > 0 })
	settle()
	disabled := disabledHosts(n, hosts)
	if len(disabled) != 2 {
		t.Errorf("disabled %v; want two of %v (one limit for both instances)", disabled, hosts)
	}
	waitFor(t, "brake released", func() bool { return len(notes.events(attestrpc.EventBrakeReleased)) > 0 })
	settle()
	if e, r := notes.events(attestrpc.EventBrakeEngaged), notes.events(attestrpc.EventBrakeReleased); len(e) != 1 || len(r) != 1 {
		t.Fatalf("%d brake alerts and %d releases, want one each", len(e), len(r))
	}
	var held []string
	for _, h := range hosts {
		if !slices.Contains(disabled, h) {
			held = append(held, h)
		}
	}
	if diff := cmp.Diff(held, notes.events(attestrpc.EventBrakeReleased)[0].payload["skipped_hosts"]); diff != "" {
		t.Errorf("skipped hosts (-want +got):\n%s", diff)
	}
}

// TestBrakeSurvivesRestart: a restarted service finds the brake engaged
// and its window as they were: a transition after the restart is held, no
// second alert is sent, and the release names the hosts held before and
// after the restart.
func TestBrakeSurvivesRestart(t *testing.T) {
	hosts := []string{"c0", "c1", "c2", "c3"}
	n, notes, db := newNova(hosts...), &notifier{}, brakeDB(t)
	before, stop := run(t, brakeCfg(t, n, notes, db))
	for _, h := range hosts[:3] {
		old := vd(h, verdict.Trusted)
		transition(before, &old, verdict.Untrusted, "profile baseline: pcr 7")
	}
	waitFor(t, "brake alert", func() bool { return len(notes.events(attestrpc.EventBrakeEngaged)) == 1 })
	waitFor(t, "c0 and c1 disabled", func() bool { return len(disabledHosts(n, hosts)) == 2 })
	stop()

	after := start(t, brakeCfg(t, n, notes, db))
	old := vd("c3", verdict.Trusted)
	transition(after, &old, verdict.Untrusted, "profile baseline: pcr 7")
	waitFor(t, "brake released", func() bool { return len(notes.events(attestrpc.EventBrakeReleased)) == 1 })
	if diff := cmp.Diff([]string{"c0", "c1"}, disabledHosts(n, hosts)); diff != "" {
		t.Errorf("disabled hosts (-want +got):\n%s", diff)
	}
	if e := notes.events(attestrpc.EventBrakeEngaged); len(e) != 1 {
		t.Errorf("%d brake alerts, want 1 (the restart kept the engaged brake)", len(e))
	}
	if diff := cmp.Diff([]string{"c2", "c3"}, notes.events(attestrpc.EventBrakeReleased)[0].payload["skipped_hosts"]); diff != "" {
		t.Errorf("skipped hosts (-want +got):\n%s", diff)
	}
}

// failingBrake is the real store behind a switch that makes it unreachable
// (fault injection: a database outage mid-run).
type failingBrake struct {
	*store.Store
	mu    sync.Mutex
	down  bool
	calls int
}

func (f *failingBrake) fail() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	if f.down {
		return errors.New("dial tcp 127.0.0.1:3306: connect: connection refused")
	}
	return nil
}

func (f *failingBrake) setDown(down bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.down, f.calls = down, 0
}

func (f *failingBrake) failed() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls
}

func (f *failingBrake) TakeBrakeSlot(ctx context.Context, host string, at, since time.Time, limit int, window time.Duration) (store.BrakeState, error) {
	if err := f.fail(); err != nil {
		return store.BrakeState{}, err
	}
	return f.Store.TakeBrakeSlot(ctx, host, at, since, limit, window)
}

func (f *failingBrake) CheckBrake(ctx context.Context, since time.Time, limit int, window time.Duration) (store.BrakeState, error) {
	if err := f.fail(); err != nil {
		return store.BrakeState{}, err
	}
	return f.Store.CheckBrake(ctx, since, limit, window)
}

// TestBrakeStoreDown: while the brake's database cannot be reached no
// host is disabled (the brake cannot be consulted) and none is dropped:
// the transitions wait, are retried, and are taken in order once it
// answers (c1 untrusted then trusted again ends enabled, c2 disabled).
func TestBrakeStoreDown(t *testing.T) {
	n := newNova("c1", "c2")
	cfg := brakeCfg(t, n, &notifier{}, brakeDB(t))
	fb := &failingBrake{Store: cfg.BrakeStore.(*store.Store)}
	cfg.BrakeStore = fb
	fb.setDown(true)
	r := start(t, cfg)
	v1, v2 := vd("c1", verdict.Trusted), vd("c2", verdict.Trusted)
	u1 := transition(r, &v1, verdict.Untrusted, "bad")
	transition(r, &v2, verdict.Untrusted, "bad")
	waitFor(t, "retries", func() bool { return fb.failed() >= 3 })
	if d := disabledHosts(n, []string{"c1", "c2"}); len(d) != 0 || n.writes != 0 {
		t.Fatalf("disabled %v (%d writes) without the brake's database", d, n.writes)
	}
	transition(r, &u1, verdict.Trusted)
	fb.setDown(false)
	waitFor(t, "c2 disabled", func() bool { return n.state("c2").Disabled })
	settle()
	if diff := cmp.Diff([]string{"c2"}, disabledHosts(n, []string{"c1", "c2"})); diff != "" {
		t.Errorf("disabled hosts (-want +got):\n%s", diff)
	}
}

// TestBrakeReleaseNamesRetriedHost: a transition seen before the one that
// engaged the brake, but taken after it (its instance could not reach the
// database meanwhile), is held, and the release notice names it.
func TestBrakeReleaseNamesRetriedHost(t *testing.T) {
	hosts := []string{"c0", "c1", "c2", "c3"}
	n, notes, db := newNova(hosts...), &notifier{}, brakeDB(t)
	cfgB := brakeCfg(t, n, notes, db)
	fb := &failingBrake{Store: cfgB.BrakeStore.(*store.Store)}
	cfgB.BrakeStore = fb
	fb.setDown(true)
	a, b := start(t, brakeCfg(t, n, notes, db)), start(t, cfgB)
	old := vd("c0", verdict.Trusted)
	transition(b, &old, verdict.Untrusted, "profile baseline: pcr 7")
	waitFor(t, "b failing", func() bool { return fb.failed() >= 1 })
	for _, h := range hosts[1:] {
		old := vd(h, verdict.Trusted)
		transition(a, &old, verdict.Untrusted, "profile baseline: pcr 7")
	}
	waitFor(t, "brake alert", func() bool { return len(notes.events(attestrpc.EventBrakeEngaged)) == 1 })
	fb.setDown(false)
	waitFor(t, "brake released", func() bool { return len(notes.events(attestrpc.EventBrakeReleased)) == 1 })
	if diff := cmp.Diff([]string{"c1", "c2"}, disabledHosts(n, hosts)); diff != "" {
		t.Errorf("disabled hosts (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"c0", "c3"}, notes.events(attestrpc.EventBrakeReleased)[0].payload["skipped_hosts"]); diff != "" {
		t.Errorf("skipped hosts (-want +got):\n%s", diff)
	}
}

func TestReason(t *testing.T) {
	for _, tc := range []struct {
		v    verdict.Verdict
		want string
	}{
		{verdict.Verdict{Status: verdict.Untrusted, Reasons: []string{"a", "b\nc"}}, "trustpool: untrusted: a; b c"},
		{verdict.Verdict{Status: verdict.Unknown}, "trustpool: unknown"},
	} {
		if got := revocation.Reason(tc.v); got != tc.want {
			t.Errorf("Reason(%v) = %q, want %q", tc.v, got, tc.want)
		}
	}
	// Nova takes at most 255 characters.
	got := revocation.Reason(verdict.Verdict{Status: verdict.Untrusted, Reasons: []string{strings.Repeat("é", 300)}})
	if utf8.RuneCountInString(got) != 255 || !strings.HasPrefix(got, "trustpool: untrusted: éé") || !strings.HasSuffix(got, "…") || !utf8.ValidString(got) {
		t.Errorf("long reason: %d runes %q", utf8.RuneCountInString(got), got)
	}
}
