package service

import (
	"context"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/trustpool/trustpool/attestation-service/internal/cluster"
	"github.com/trustpool/trustpool/attestation-service/internal/sched"
	"github.com/trustpool/trustpool/attestation-service/internal/store"
)

func openStore(t *testing.T) *store.Store {
	t.Helper()
	st, err := store.Open(t.Context(), "sqlite:///"+filepath.Join(t.TempDir(), "a.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// GET /v1/keys on any instance: the other live instances' keys, each once,
// never this instance's own again.
func TestOtherKeys(t *testing.T) {
	st := openStore(t)
	ctx := t.Context()
	now := time.Now()
	for _, m := range []store.Member{
		{Name: "b", Incarnation: "1", HeartbeatAt: now, KID: "kb", PublicKeyPEM: "pem-b"},
		{Name: "c", Incarnation: "1", HeartbeatAt: now, KID: "ka", PublicKeyPEM: "pem-a"}, // shares a's key
		{Name: "d", Incarnation: "1", HeartbeatAt: now, KID: "kb", PublicKeyPEM: "pem-b"}, // shares b's
		{Name: "e", Incarnation: "1", HeartbeatAt: now.Add(-time.Hour), KID: "ke", PublicKeyPEM: "pem-e"},
	} {
		if err := st.Heartbeat(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	ms := cluster.New(cluster.Config{Name: "a", KID: "ka", PublicKeyPEM: "pem-a", Lease: 10 * time.Second, Store: st})
	ms.Refresh(ctx)
	got := otherKeys(ms, "ka")()
	if len(got) != 1 || got[0].KID != "kb" || got[0].PublicKeyPEM != "pem-b" || got[0].Algorithm != "Ed25519" {
		t.Errorf("otherKeys = %+v, want b's key once (a's own and the dead e's left out)", got)
	}
}

// Placement schedules the hosts the view gives this instance, keeping the
// rhythm of their last recorded verdict, and drops the others.
func TestPlacement(t *testing.T) {
	st := openStore(t)
	ctx := t.Context()
	names := []string{"h0", "h1", "h2", "h3", "h4", "h5", "h6", "h7", "h8", "h9"}
	for _, h := range names {
		if err := st.PutHost(ctx, &store.Host{Name: h, Activated: true}); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.PutHost(ctx, &store.Host{Name: "pending"}); err != nil {
		t.Fatal(err)
	}
	// Every host had its verdict recorded 3 s ago (by another instance).
	for _, h := range names {
		if _, err := st.RecordVerdict(ctx, h, time.Now().Add(-3*time.Second), func(uint64) ([]byte, []byte, *store.HistoryEntry, error) {
			return []byte(`{}`), nil, nil, nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	ms := cluster.New(cluster.Config{Name: "a", Lease: 10 * time.Second, Store: st})
	ms.Refresh(ctx)
	rounds := make(chan string, 100)
	sc := sched.New(sched.Config{Interval: 10 * time.Second, Concurrency: 4,
		Attest: func(_ context.Context, host string, _ bool) time.Time { rounds <- host; return time.Time{} }})
	p := &placement{st: st, sc: sc, ms: ms, interval: 10 * time.Second, log: slog.New(slog.DiscardHandler)}
	if err := p.rebalance(ctx); err != nil {
		t.Fatal(err)
	}
	// Alone in the cluster: every enrolled host, not the pending one.
	if sc.Hosts() != len(names) || sc.Has("pending") {
		t.Fatalf("scheduled %d hosts (pending: %v), want %d", sc.Hosts(), sc.Has("pending"), len(names))
	}
	// A second member takes about half; this instance drops them.
	if err := st.Heartbeat(ctx, store.Member{Name: "b", Incarnation: "1", HeartbeatAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	ms.Refresh(ctx)
	if err := p.rebalance(ctx); err != nil {
		t.Fatal(err)
	}
	v := ms.View()
	mine := 0
	for _, h := range names {
		if v.Owns(h) {
			mine++
		}
		if sc.Has(h) != v.Owns(h) {
			t.Errorf("%s scheduled %v, owned %v", h, sc.Has(h), v.Owns(h))
		}
	}
	if mine == 0 || mine == len(names) {
		t.Errorf("this instance owns %d of %d hosts with two members", mine, len(names))
	}
	// The hosts keep their rhythm: the next round is one interval after
	// their verdict, not within the first seconds as for a fresh host.
	ctx2, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() { _ = sc.Run(ctx2) }()
	deadline := time.After(3 * time.Second)
	for {
		select {
		case h := <-rounds:
			t.Fatalf("%s attested within 3 s although its verdict is 3 s old and the interval 10 s", h)
		case <-deadline:
			return
		}
	}
}

// TestMirrorOwner: the trait mirror writes the hosts the cluster gives this
// instance (the ones it attests), and every host once its lease lapsed
// (its database unreachable), whether it knew other instances or not: if
// all lost the database, none would remove expired traits otherwise.
func TestMirrorOwner(t *testing.T) {
	names := []string{"h0", "h1", "h2", "h3", "h4", "h5", "h6", "h7", "h8", "h9"}
	ctx := t.Context()
	clock := time.Now()
	member := func(st *store.Store, name string) *cluster.Membership {
		ms := cluster.New(cluster.Config{Name: name, Lease: 10 * time.Second, Store: st, Now: func() time.Time { return clock }})
		ms.Refresh(ctx)
		return ms
	}
	owned := func(o mirrorOwner) (n int) {
		for _, h := range names {
			if o.Owns(h) {
				n++
			}
		}
		return n
	}

	st := openStore(t)
	ms := member(st, "a")
	o := mirrorOwner{ms}
	if n := owned(o); n != len(names) {
		t.Errorf("alone: owns %d of %d hosts", n, len(names))
	}
	if err := st.Heartbeat(ctx, store.Member{Name: "b", Incarnation: "1", HeartbeatAt: clock}); err != nil {
		t.Fatal(err)
	}
	ms.Refresh(ctx)
	v := ms.View()
	for _, h := range names {
		if o.Owns(h) != v.Owns(h) || o.Owns(h) == (v.Owner(h) == "b") {
			t.Errorf("%s: mirror owns %v, cluster owner %q", h, o.Owns(h), v.Owner(h))
		}
	}
	if n := owned(o); n == 0 || n == len(names) {
		t.Errorf("with b: owns %d of %d hosts", n, len(names))
	}
	// The database goes away and a's lease runs out; b was live last.
	_ = st.Close()
	clock = clock.Add(11 * time.Second)
	ms.Refresh(ctx)
	if ms.View().Valid {
		t.Fatal("the lease is still valid: the test did not make it lapse")
	}
	if n := owned(o); n != len(names) {
		t.Errorf("lapsed, b live when last seen: owns %d of %d hosts, want all", n, len(names))
	}

	solo := openStore(t)
	alone := member(solo, "c")
	_ = solo.Close()
	clock = clock.Add(11 * time.Second)
	alone.Refresh(ctx)
	if alone.View().Valid {
		t.Fatal("the lone lease is still valid")
	}
	if n := owned(mirrorOwner{alone}); n != len(names) {
		t.Errorf("lapsed alone: owns %d of %d hosts, want all", n, len(names))
	}
}
