package store_test

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/trustpool/trustpool/attestation-service/internal/store"
)

func newLaunch(id, project, nonce string, notAfter time.Time) *store.Launch {
	return &store.Launch{ID: id, ProjectID: project, UserID: "u1", State: "pending", Profile: "baseline", KID: "k1",
		Sealed: []byte("sealed request"), NonceDigest: nonce, NotAfter: notAfter.UTC().Truncate(time.Microsecond)}
}

// TestLaunches: the launch records on both databases: create, replay
// refusal, compare-and-set transitions with history, listing by project,
// expiry queries, deletion that keeps the nonce used, nonce pruning.
func TestLaunches(t *testing.T) {
	backends(t, func(t *testing.T, url string) {
		t.Helper()
		ctx := t.Context()
		s := open(t, url)
		now := time.Now()
		l := newLaunch("l1", "p1", "n1", now.Add(time.Hour))
		if err := s.CreateLaunch(ctx, l); err != nil {
			t.Fatal(err)
		}
		if err := s.CreateLaunch(ctx, newLaunch("l2", "p1", "n1", now.Add(time.Hour))); !errors.Is(err, store.ErrExists) {
			t.Fatalf("second launch with the same nonce = %v, want ErrExists", err)
		}
		got, err := s.GetLaunch(ctx, "l1")
		if err != nil {
			t.Fatal(err)
		}
		opts := cmpopts.EquateApproxTime(time.Millisecond)
		if diff := cmp.Diff(l, got, opts, cmpopts.EquateEmpty()); diff != "" {
			t.Errorf("GetLaunch (-created +got):\n%s", diff)
		}
		if _, err := s.GetLaunch(ctx, "nope"); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("GetLaunch(missing) = %v", err)
		}

		// Bind, then a stale writer trying the same transition loses.
		b := *got
		b.State, b.InstanceID, b.Host, b.HostID = "bound", "i1", "compute-1", "abc"
		if err := s.TransitionLaunch(ctx, &b, "pending"); err != nil {
			t.Fatal(err)
		}
		stale := *got
		stale.State = "refused"
		if err := s.TransitionLaunch(ctx, &stale, "pending"); !errors.Is(err, store.ErrStateChanged) {
			t.Fatalf("stale transition = %v, want ErrStateChanged", err)
		}
		d := b
		d.State, d.Sealed, d.VerdictSeq, d.PCRs, d.PCRPolicyDigest = "delivered", nil, 9, []int{0, 7}, "ff"
		d.VerifiedAt, d.SealedAt, d.DeliveredAt, d.Receipt = now, now, now, []byte(`{"receipt":"x"}`)
		if err := s.TransitionLaunch(ctx, &d, "bound"); err != nil {
			t.Fatal(err)
		}
		got, err = s.GetLaunch(ctx, "l1")
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(&d, got, opts, cmpopts.EquateEmpty(), cmpopts.IgnoreFields(store.Launch{}, "UpdatedAt")); diff != "" {
			t.Errorf("after delivery (-want +got):\n%s", diff)
		}
		// A refused re-delivery: the launch stays delivered, the history
		// records the attempt.
		r := *got
		r.Reasons = []string{"host_untrusted: x"}
		if err := s.RecordLaunchEvent(ctx, &r, "delivered", "refused", "agent"); err != nil {
			t.Fatal(err)
		}
		if err := s.RecordLaunchEvent(ctx, &r, "bound", "refused", "user"); !errors.Is(err, store.ErrStateChanged) {
			t.Errorf("RecordLaunchEvent from a state the launch is not in = %v, want ErrStateChanged", err)
		}
		if got, err := s.GetLaunch(ctx, "l1"); err != nil || got.State != "delivered" || len(got.Reasons) != 1 {
			t.Errorf("after a recorded event: %+v, %v", got, err)
		}
		hist, err := s.LaunchHistory(ctx, "l1")
		if err != nil {
			t.Fatal(err)
		}
		var states []string
		for _, e := range hist {
			states = append(states, e.State+"/"+e.Initiator)
		}
		if diff := cmp.Diff([]string{"pending/", "bound/", "delivered/", "refused/agent"}, states); diff != "" {
			t.Errorf("history states/initiators (-want +got):\n%s", diff)
		}
		// A re-delivery names who asked for it.
		rd := r
		rd.State, rd.Reasons = "redelivered", nil
		if err := s.TransitionLaunchBy(ctx, &rd, "delivered", "user"); err != nil {
			t.Fatal(err)
		}
		if hist, err := s.LaunchHistory(ctx, "l1"); err != nil || hist[len(hist)-1].State != "redelivered" || hist[len(hist)-1].Initiator != "user" {
			t.Errorf("history after TransitionLaunchBy: %+v, %v", hist, err)
		}

		// Listing: by project, newest first; all for "".
		for i, p := range []string{"p2", "p1", "p2"} {
			if err := s.CreateLaunch(ctx, newLaunch(fmt.Sprintf("m%d", i), p, fmt.Sprintf("nm%d", i), now.Add(-time.Minute))); err != nil {
				t.Fatal(err)
			}
			time.Sleep(2 * time.Millisecond)
		}
		ids := func(ls []*store.Launch) []string {
			var out []string
			for _, l := range ls {
				out = append(out, l.ID)
			}
			return out
		}
		p2, err := s.ListLaunches(ctx, "p2", 10)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff([]string{"m2", "m0"}, ids(p2)); diff != "" {
			t.Errorf("ListLaunches(p2) (-want +got):\n%s", diff)
		}
		all, err := s.ListLaunches(ctx, "", 3)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff([]string{"m2", "m1", "m0"}, ids(all)); diff != "" {
			t.Errorf("ListLaunches(all, 3) (-want +got):\n%s", diff)
		}
		exp, err := s.LaunchesToExpire(ctx, "pending", now, 10)
		if err != nil {
			t.Fatal(err)
		}
		if len(exp) != 3 {
			t.Errorf("LaunchesToExpire = %v, want the 3 expired pending ones", ids(exp))
		}

		// Delete: only from the given states; the nonce stays used.
		if err := s.DeleteLaunch(ctx, "l1", "pending"); !errors.Is(err, store.ErrStateChanged) {
			t.Errorf("DeleteLaunch(delivered, only pending) = %v, want ErrStateChanged", err)
		}
		if err := s.DeleteLaunch(ctx, "l1", "pending", "redelivered"); err != nil {
			t.Fatal(err)
		}
		if _, err := s.GetLaunch(ctx, "l1"); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("GetLaunch after delete = %v", err)
		}
		if h, _ := s.LaunchHistory(ctx, "l1"); len(h) != 0 {
			t.Errorf("history after delete: %v", h)
		}
		if err := s.CreateLaunch(ctx, newLaunch("l3", "p1", "n1", now.Add(time.Hour))); !errors.Is(err, store.ErrExists) {
			t.Errorf("request replayed after its launch was deleted = %v, want ErrExists", err)
		}
		if err := s.DeleteLaunch(ctx, "l1", "pending"); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("DeleteLaunch(missing) = %v", err)
		}
		// Pruning forgets only nonces of expired requests.
		n, err := s.PruneLaunchNonces(ctx, now)
		if err != nil || n != 3 {
			t.Errorf("PruneLaunchNonces = %d, %v; want the 3 expired", n, err)
		}
		if err := s.CreateLaunch(ctx, newLaunch("l4", "p1", "n1", now.Add(time.Hour))); !errors.Is(err, store.ErrExists) {
			t.Errorf("unexpired nonce after pruning = %v, want ErrExists", err)
		}
	})
}

// TestLaunchTransitionRace: of concurrent transitions from one state,
// exactly one wins.
func TestLaunchTransitionRace(t *testing.T) {
	backends(t, func(t *testing.T, url string) {
		t.Helper()
		ctx := t.Context()
		s := open(t, url)
		if err := s.CreateLaunch(ctx, newLaunch("r1", "p", "nr", time.Now().Add(time.Hour))); err != nil {
			t.Fatal(err)
		}
		var (
			wg   sync.WaitGroup
			mu   sync.Mutex
			wins int
		)
		for i := range 8 {
			wg.Go(func() {
				l, err := s.GetLaunch(ctx, "r1")
				if err != nil {
					t.Error(err)
					return
				}
				l.State, l.InstanceID = "bound", fmt.Sprintf("i%d", i)
				err = s.TransitionLaunch(ctx, l, "pending")
				switch {
				case err == nil:
					mu.Lock()
					wins++
					mu.Unlock()
				case !errors.Is(err, store.ErrStateChanged):
					t.Error(err)
				}
			})
		}
		wg.Wait()
		if wins != 1 {
			t.Errorf("%d transitions from pending won, want 1", wins)
		}
	})
}

// TestMigrationAddsLaunches: a database at version 3 with hosts migrates to
// the launch schema and keeps its hosts.
func TestMigrationAddsLaunches(t *testing.T) {
	backends(t, func(t *testing.T, url string) {
		t.Helper()
		ctx := t.Context()
		old, err := store.OpenAtVersion(ctx, url, 3)
		if err != nil {
			t.Fatal(err)
		}
		if err := old.PutHost(ctx, &store.Host{Name: "c1", AgentVersion: "0.1.0"}); err != nil {
			t.Fatal(err)
		}
		old.Close()
		s := open(t, url)
		if v, err := s.SchemaVersion(ctx); err != nil || v != store.LatestSchema {
			t.Fatalf("schema version %d, %v; want %d", v, err, store.LatestSchema)
		}
		if _, err := s.GetHost(ctx, "c1"); err != nil {
			t.Errorf("host lost in migration: %v", err)
		}
		if err := s.CreateLaunch(ctx, newLaunch("l1", "p", "n", time.Now())); err != nil {
			t.Errorf("CreateLaunch after migration: %v", err)
		}
	})
}
