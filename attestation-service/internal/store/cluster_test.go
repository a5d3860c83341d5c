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

// TestRecordVerdictAcrossInstances: several store handles (instances) on
// one database record verdicts of one host at once; every record gets its
// own sequence number, and the stored verdict is the one with the highest.
// A deleted host takes no number.
func TestRecordVerdictAcrossInstances(t *testing.T) {
	backends(t, func(t *testing.T, url string) {
		t.Helper()
		ctx := t.Context()
		stores := []*store.Store{open(t, url), open(t, url), open(t, url)}
		if err := stores[0].PutHost(ctx, &store.Host{Name: "h", Activated: true}); err != nil {
			t.Fatal(err)
		}
		var (
			mu   sync.Mutex
			seqs = map[uint64]bool{}
			wg   sync.WaitGroup
		)
		const each = 15
		for i, s := range stores {
			wg.Go(func() {
				for j := range each {
					seq, err := s.RecordVerdict(ctx, "h", time.Now(), func(seq uint64) ([]byte, []byte, *store.HistoryEntry, error) {
						return fmt.Appendf(nil, `{"seq":%d}`, seq), fmt.Appendf(nil, `{"by":%d,"n":%d}`, i, j), nil, nil
					})
					if err != nil {
						t.Errorf("instance %d: %v", i, err)
						return
					}
					mu.Lock()
					if seqs[seq] {
						t.Errorf("seq %d handed out twice", seq)
					}
					seqs[seq] = true
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		if len(seqs) != len(stores)*each {
			t.Fatalf("%d distinct seqs, want %d", len(seqs), len(stores)*each)
		}
		h, err := stores[1].GetHost(ctx, "h")
		if err != nil {
			t.Fatal(err)
		}
		if want := fmt.Sprintf(`{"seq":%d}`, len(seqs)); string(h.Verdict) != want {
			t.Errorf("stored verdict %s, want the newest %s", h.Verdict, want)
		}
		sched, err := stores[2].Schedule(ctx)
		if err != nil || len(sched) != 1 || !sched[0].Activated || time.Since(sched[0].AttestedAt) > time.Minute {
			t.Errorf("Schedule = %+v, %v", sched, err)
		}
		// History entries carry the seq they were recorded with.
		if _, err := stores[0].RecordVerdict(ctx, "h", time.Now(), func(uint64) ([]byte, []byte, *store.HistoryEntry, error) {
			return []byte(`{}`), nil, &store.HistoryEntry{Status: "trusted"}, nil
		}); err != nil {
			t.Fatal(err)
		}
		if hs, _ := stores[0].History(ctx, "h", 1); len(hs) != 1 || hs[0].Seq != uint64(len(seqs)+1) {
			t.Errorf("History = %+v, want seq %d", hs, len(seqs)+1)
		}
		// A missing host: ErrNotFound, and no number is used up.
		if _, err := stores[0].RecordVerdict(ctx, "gone", time.Now(), func(uint64) ([]byte, []byte, *store.HistoryEntry, error) {
			return []byte(`{}`), nil, nil, nil
		}); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("RecordVerdict(missing host) = %v, want ErrNotFound", err)
		}
		if err := stores[0].PutHost(ctx, &store.Host{Name: "gone"}); err != nil {
			t.Fatal(err)
		}
		if seq, err := stores[0].RecordVerdict(ctx, "gone", time.Now(), func(uint64) ([]byte, []byte, *store.HistoryEntry, error) {
			return []byte(`{}`), nil, nil, nil
		}); err != nil || seq != 1 {
			t.Errorf("first seq of a host created after a refused record = %d, %v; want 1", seq, err)
		}
		vs, err := stores[0].ListVerdicts(ctx)
		if err != nil || len(vs) != 2 || vs[0].Host != "gone" || vs[1].Host != "h" {
			t.Errorf("ListVerdicts = %+v, %v", vs, err)
		}
	})
}

func TestMembers(t *testing.T) {
	backends(t, func(t *testing.T, url string) {
		t.Helper()
		ctx := t.Context()
		s := open(t, url)
		t0 := time.UnixMicro(time.Now().UnixMicro()).UTC()
		a := store.Member{Name: "a", Incarnation: "i1", StartedAt: t0, HeartbeatAt: t0, KID: "k1", PublicKeyPEM: "pem-a"}
		b := store.Member{Name: "b", Incarnation: "i2", StartedAt: t0, HeartbeatAt: t0.Add(-time.Hour), KID: "k2", PublicKeyPEM: "pem-b"}
		for _, m := range []store.Member{a, b} {
			if err := s.Heartbeat(ctx, m); err != nil {
				t.Fatal(err)
			}
		}
		a.HeartbeatAt = t0.Add(time.Second)
		if err := s.Heartbeat(ctx, a); err != nil {
			t.Fatal(err)
		}
		got, err := s.Members(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff([]store.Member{a, b}, got); diff != "" {
			t.Errorf("Members (-want +got):\n%s", diff)
		}
		if n, err := s.PruneMembers(ctx, t0.Add(-time.Minute)); err != nil || n != 1 {
			t.Errorf("PruneMembers = %d, %v; want 1 (b)", n, err)
		}
		// Leaving needs the incarnation: a second process under the name
		// cannot remove the first one's row.
		if err := s.LeaveCluster(ctx, "a", "other"); err != nil {
			t.Fatal(err)
		}
		if got, _ := s.Members(ctx); len(got) != 1 {
			t.Errorf("after leaving with another incarnation: %+v", got)
		}
		if err := s.LeaveCluster(ctx, "a", "i1"); err != nil {
			t.Fatal(err)
		}
		if got, _ := s.Members(ctx); len(got) != 0 {
			t.Errorf("after leaving: %+v", got)
		}
	})
}

func TestChallenges(t *testing.T) {
	backends(t, func(t *testing.T, url string) {
		t.Helper()
		ctx := t.Context()
		s1, s2 := open(t, url), open(t, url)
		now := time.UnixMicro(time.Now().UnixMicro()).UTC()
		c := store.Challenge{ID: "c1", Host: "h", EKPublic: []byte{1}, EKCert: []byte{2}, AKPublic: []byte{3}, AgentVersion: "1",
			SecretHash: []byte{4, 5}, Expires: now.Add(time.Minute)}
		if err := s1.PutChallenge(ctx, c, now, 2); err != nil {
			t.Fatal(err)
		}
		if err := s1.PutChallenge(ctx, store.Challenge{ID: "c2", Host: "h2", EKPublic: []byte{1}, AKPublic: []byte{1}, SecretHash: []byte{1},
			Expires: now.Add(time.Minute)}, now, 2); err != nil {
			t.Fatal(err)
		}
		if err := s1.PutChallenge(ctx, store.Challenge{ID: "c3", Host: "h3", EKPublic: []byte{1}, AKPublic: []byte{1}, SecretHash: []byte{1},
			Expires: now.Add(time.Minute)}, now, 2); !errors.Is(err, store.ErrTooMany) {
			t.Errorf("third challenge with a bound of 2: %v, want ErrTooMany", err)
		}
		// Another instance takes it, once, whatever races.
		var (
			wg    sync.WaitGroup
			mu    sync.Mutex
			taken []store.Challenge
		)
		for _, s := range []*store.Store{s1, s2, s1, s2} {
			wg.Go(func() {
				got, err := s.TakeChallenge(ctx, "c1")
				if err == nil {
					mu.Lock()
					taken = append(taken, got)
					mu.Unlock()
				} else if !errors.Is(err, store.ErrNotFound) {
					t.Errorf("TakeChallenge: %v", err)
				}
			})
		}
		wg.Wait()
		if len(taken) != 1 {
			t.Fatalf("challenge taken %d times, want once", len(taken))
		}
		if diff := cmp.Diff(c, taken[0], cmpopts.EquateEmpty()); diff != "" {
			t.Errorf("taken challenge (-want +got):\n%s", diff)
		}
		if n, err := s2.DropChallenges(ctx, "h2"); err != nil || n != 1 {
			t.Errorf("DropChallenges = %d, %v", n, err)
		}
		if err := s1.PutChallenge(ctx, store.Challenge{ID: "old", Host: "h", EKPublic: []byte{1}, AKPublic: []byte{1}, SecretHash: []byte{1},
			Expires: now.Add(-time.Minute)}, now, 2); err != nil {
			t.Fatal(err)
		}
		if n, err := s1.PruneChallenges(ctx, now); err != nil || n != 1 {
			t.Errorf("PruneChallenges = %d, %v", n, err)
		}
	})
}

func TestProfilesGeneration(t *testing.T) {
	backends(t, func(t *testing.T, url string) {
		t.Helper()
		ctx := t.Context()
		s := open(t, url)
		gen := func() int64 {
			g, err := s.ProfilesGeneration(ctx)
			if err != nil {
				t.Fatal(err)
			}
			return g
		}
		g0 := gen()
		if err := s.PutProfile(ctx, store.Profile{Name: "p", Body: "x"}, store.Create); err != nil {
			t.Fatal(err)
		}
		g1 := gen()
		if err := s.PutProfile(ctx, store.Profile{Name: "p", Body: "y"}, store.Replace); err != nil {
			t.Fatal(err)
		}
		g2 := gen()
		if err := s.DeleteProfile(ctx, "p"); err != nil {
			t.Fatal(err)
		}
		g3 := gen()
		if g0 >= g1 || g1 >= g2 || g2 >= g3 {
			t.Errorf("generations %d %d %d %d, want increasing", g0, g1, g2, g3)
		}
		// A refused change moves nothing.
		if err := s.DeleteProfile(ctx, "p"); !errors.Is(err, store.ErrNotFound) {
			t.Fatal(err)
		}
		if gen() != g3 {
			t.Error("a refused delete moved the generation")
		}
	})
}

// TestMigrationAddsMembership: a database with trusted launches (version 4)
// migrates to the membership schema (5) and keeps its launches.
func TestMigrationAddsMembership(t *testing.T) {
	backends(t, func(t *testing.T, url string) {
		t.Helper()
		ctx := t.Context()
		old, err := store.OpenAtVersion(ctx, url, 4)
		if err != nil {
			t.Fatal(err)
		}
		if err := old.CreateLaunch(ctx, newLaunch("l1", "p", "n", time.Now())); err != nil {
			t.Fatal(err)
		}
		if err := old.Heartbeat(ctx, store.Member{Name: "a"}); err == nil {
			t.Fatal("membership row written at version 4")
		}
		old.Close()
		s := open(t, url)
		if v, err := s.SchemaVersion(ctx); err != nil || v != store.LatestSchema {
			t.Fatalf("schema version %d, %v; want %d", v, err, store.LatestSchema)
		}
		if _, err := s.GetLaunch(ctx, "l1"); err != nil {
			t.Errorf("launch lost in migration: %v", err)
		}
		if err := s.Heartbeat(ctx, store.Member{Name: "a", Incarnation: "i"}); err != nil {
			t.Errorf("Heartbeat after migration: %v", err)
		}
	})
}
