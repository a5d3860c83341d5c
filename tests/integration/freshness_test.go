package integration

import (
	"database/sql"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	_ "github.com/mattn/go-sqlite3" // reads the service's sqlite database

	"github.com/trustpool/trustpool/internal/bootseed"
	"github.com/trustpool/trustpool/internal/verdict"
)

// trusted asks the shim, as the Nova filter does, whether host passes
// trust:trusted_host=trusted; it returns the rejection reason otherwise.
func (s *filterShim) trusted(t *testing.T, host string) (bool, string) {
	t.Helper()
	body, _ := json.Marshal(map[string]any{"hosts": []string{host}, "trusted_host": "trusted"})
	code, b, err := s.do("POST", "/v1/filter", body)
	var d struct {
		Passes   []string          `json:"passes"`
		Rejected map[string]string `json:"rejected"`
	}
	if err != nil || code != http.StatusOK || json.Unmarshal(b, &d) != nil {
		t.Fatalf("filter: %d %s %v", code, b, err)
	}
	return len(d.Passes) == 1, d.Rejected[host]
}

// storedSeq is the host's verdict sequence number in the service's
// database: how many verdicts the service has recorded, published or not.
func (e *env) storedSeq(t *testing.T, host string) uint64 {
	t.Helper()
	path := strings.TrimPrefix(e.cfg.Database.Connection, "sqlite:///")
	db, err := sql.Open("sqlite3", "file:"+path+"?_busy_timeout=5000")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var seq uint64
	if err := db.QueryRow("SELECT seq FROM verdict_seqs WHERE host = ?", host).Scan(&seq); err != nil {
		t.Fatalf("read %s's seq: %v", host, err)
	}
	return seq
}

// neverRejected asks the shim about host every 100 ms for d and fails on
// the first rejection.
func (s *filterShim) neverRejected(t *testing.T, host string, d time.Duration) {
	t.Helper()
	n := 0
	for end := time.Now().Add(d); time.Now().Before(end); n++ {
		if ok, why := s.trusted(t, host); !ok {
			t.Fatalf("check %d: the shim rejected %s, which stays trusted and answers: %s", n, host, why)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestShimVerdictFreshness: a host that stays trusted and keeps answering
// is never rejected at a real filter shim (the trustpool-filter-shim
// binary) while the service runs, over
// several verdict validity periods, although the heartbeat alone (here
// just under the validity) could not keep the shim's copy fresh. After a
// service restart, shorter or longer than the validity, the shim accepts
// the host again from the first round after the restart, before the
// second, and keeps accepting it.
func TestShimVerdictFreshness(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test")
	}
	const interval = 2 * time.Second
	e := newEnv(t, interval)
	a := &e.cfg.Attestation
	validity := a.VerdictValidity // 6 s
	a.HeartbeatInterval = validity - 100*time.Millisecond
	h := e.newHost("fresh-1", bootseed.BuildA())
	e.startService()
	e.startAgent(h)
	e.verdicts.wait(t, h.name, 0, time.Minute, "attested", func(verdict.Verdict) bool { return true })
	if code, body := e.api("POST", "/v1/profiles/learn", e.admin, map[string]any{"host": h.name, "name": "golden"}); code != http.StatusCreated {
		t.Fatalf("learn = %d %v", code, body)
	}
	e.verdicts.wait(t, h.name, 0, time.Minute, "trusted", status(verdict.Trusted))
	s := startFilterShim(t, e, buildFilterShim(t))
	waitFor(t, 30*time.Second, "shim accepts the host", func() bool { ok, _ := s.trusted(t, h.name); return ok })

	t.Run("steady state", func(t *testing.T) {
		s.neverRejected(t, h.name, 4*validity)
	})
	for _, tc := range []struct {
		name   string
		outage time.Duration
	}{
		{"restart shorter than the validity", validity / 2},
		{"restart longer than the validity", validity + validity/2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e.stopSvc()
			stopped := e.storedSeq(t, h.name)
			time.Sleep(tc.outage)
			if tc.outage > validity {
				// Fail closed: what the shim holds has expired.
				if ok, why := s.trusted(t, h.name); ok || !strings.Contains(why, "expired") {
					t.Fatalf("after %v without the service the shim says trusted=%v (%s), want expired", tc.outage, ok, why)
				}
			}
			e.startService()
			// Accepted again no later than the second round after the
			// restart: the first one's verdict is published at once.
			for {
				if ok, _ := s.trusted(t, h.name); ok {
					break
				}
				if seq := e.storedSeq(t, h.name); seq >= stopped+2 {
					_, why := s.trusted(t, h.name)
					t.Fatalf("the service recorded %d verdicts since the restart, the shim still rejects %s: %s", seq-stopped, h.name, why)
				}
				time.Sleep(20 * time.Millisecond)
			}
			s.neverRejected(t, h.name, 2*validity)
		})
	}
}
