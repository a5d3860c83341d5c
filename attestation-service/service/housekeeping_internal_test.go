package service

import (
	"context"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/trustpool/trustpool/attestation-service/internal/engine"
	"github.com/trustpool/trustpool/attestation-service/internal/store"
)

// The housekeeping loop applies [database] history_retention and
// audit_retention as soon as it starts (then every 10 minutes).
func TestHousekeepingAppliesRetention(t *testing.T) {
	ctx := t.Context()
	st, err := store.Open(ctx, "sqlite:///"+filepath.Join(t.TempDir(), "a.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if err := st.PutHost(ctx, &store.Host{Name: "c1"}); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	for i, at := range []time.Time{now.Add(-40 * 24 * time.Hour), now} {
		if err := st.SaveVerdict(ctx, "c1", []byte("{}"), nil, &store.HistoryEntry{At: at, Status: "trusted", Seq: uint64(i + 1)}); err != nil {
			t.Fatal(err)
		}
		if err := st.AddAudit(ctx, store.AuditRecord{At: at, Action: "a"}); err != nil {
			t.Fatal(err)
		}
	}
	s := &Service{cfg: DefaultConfig(), log: slog.New(slog.DiscardHandler)}
	eng := engine.New(engine.Config{Store: st, Interval: 10 * time.Second})
	hctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { s.housekeeping(hctx, eng, st); close(done) }()
	deadline := time.Now().Add(30 * time.Second)
	for {
		hs, _ := st.History(ctx, "c1", 10)
		as, _ := st.Audit(ctx, 10)
		if len(hs) == 1 && len(as) == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after housekeeping: %d history entries, %d audit records; want the recent one of each", len(hs), len(as))
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	<-done
}
