package store_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/trustpool/trustpool/attestation-service/internal/store"
)

// TestPrune: history and audit records older than the retention go, newer
// ones stay; a zero cut-off keeps a table whole. Runs on every backend.
func TestPrune(t *testing.T) {
	backends(t, func(t *testing.T, url string) {
		t.Helper()
		ctx := t.Context()
		s := open(t, url)
		defer store.SetPruneBatch(2)() // several batches
		if err := s.PutHost(ctx, &store.Host{Name: "c1"}); err != nil {
			t.Fatal(err)
		}
		now := time.Now().UTC().Truncate(time.Microsecond)
		ages := []time.Duration{90 * 24 * time.Hour, 40 * 24 * time.Hour, 31 * 24 * time.Hour, 29 * 24 * time.Hour, time.Hour, 0}
		for i, age := range ages {
			hist := &store.HistoryEntry{At: now.Add(-age), Status: "trusted", Seq: uint64(i + 1)}
			if err := s.SaveVerdict(ctx, "c1", []byte("{}"), nil, hist); err != nil {
				t.Fatal(err)
			}
			if err := s.AddAudit(ctx, store.AuditRecord{At: now.Add(-age), Action: "a", Target: fmt.Sprint(i)}); err != nil {
				t.Fatal(err)
			}
		}
		cut := now.Add(-30 * 24 * time.Hour)
		// Audit kept whole first: a zero cut-off removes nothing.
		p, err := s.Prune(ctx, cut, time.Time{})
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(store.Pruned{History: 3}, p); diff != "" {
			t.Errorf("Prune(history) (-want +got):\n%s", diff)
		}
		hs, err := s.History(ctx, "c1", 100)
		if err != nil {
			t.Fatal(err)
		}
		var seqs []uint64
		for _, h := range hs {
			seqs = append(seqs, h.Seq)
		}
		if diff := cmp.Diff([]uint64{6, 5, 4}, seqs); diff != "" {
			t.Errorf("history kept (-want +got):\n%s", diff)
		}
		if as, _ := s.Audit(ctx, 100); len(as) != len(ages) {
			t.Errorf("audit has %d records after a history-only prune, want %d", len(as), len(ages))
		}
		p, err = s.Prune(ctx, cut, cut)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(store.Pruned{Audit: 3}, p); diff != "" {
			t.Errorf("Prune(both) (-want +got):\n%s", diff)
		}
		as, err := s.Audit(ctx, 100)
		if err != nil {
			t.Fatal(err)
		}
		var targets []string
		for _, a := range as {
			targets = append(targets, a.Target)
		}
		if diff := cmp.Diff([]string{"5", "4", "3"}, targets); diff != "" {
			t.Errorf("audit kept (-want +got):\n%s", diff)
		}
	})
}
