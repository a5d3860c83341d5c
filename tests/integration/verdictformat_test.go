package integration

import (
	"maps"
	"net/http"
	"testing"
	"time"

	"github.com/trustpool/trustpool/internal/bootseed"
	"github.com/trustpool/trustpool/internal/verdict"
)

// TestVerdictFormatUpgrade is the rolling upgrade of the signed verdict's
// format against the real service, agent (swtpm) and filter shim binary:
// pinned with [upgrade_levels] verdict = 1 the service signs format-1
// verdicts (no versions) and the shim accepts the host; with the pin
// removed and the service restarted, the verdicts are format 2 and name
// the profile version the host matched, and the shim accepts the host on
// them alone (once every format-1 verdict has expired).
func TestVerdictFormatUpgrade(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test")
	}
	const interval = time.Second
	e := newEnv(t, interval)
	e.cfg.UpgradeLevels.Verdict = verdict.Format1
	validity := e.cfg.Attestation.VerdictValidity
	h := e.newHost("fmt-1", bootseed.BuildA())
	e.startService()
	e.startAgent(h)
	e.verdicts.wait(t, h.name, 0, time.Minute, "attested", func(verdict.Verdict) bool { return true })
	if code, body := e.api("POST", "/v1/profiles/learn", e.admin, map[string]any{"host": h.name, "name": "golden"}); code != http.StatusCreated {
		t.Fatalf("learn = %d %v", code, body)
	}
	v1 := e.verdicts.wait(t, h.name, 0, time.Minute, "trusted", status(verdict.Trusted))
	if v1.Format != 0 || v1.ProfileVersions != nil {
		t.Fatalf("pinned: verdict format %d, versions %v; want format 1", v1.Format, v1.ProfileVersions)
	}
	s := startFilterShim(t, e, buildFilterShim(t))
	waitFor(t, 30*time.Second, "shim accepts the host on format 1", func() bool { ok, _ := s.trusted(t, h.name); return ok })

	e.stopSvc()
	e.cfg.UpgradeLevels.Verdict = 0
	e.startService()
	v2 := e.verdicts.wait(t, h.name, v1.Seq, time.Minute, "format 2", func(v verdict.Verdict) bool { return v.Format == verdict.Format2 })
	if v2.Status != verdict.Trusted || !maps.Equal(v2.ProfileVersions, map[string]int{"golden": 1}) {
		t.Fatalf("unpinned: verdict %s, versions %v; want trusted, golden version 1", v2.Status, v2.ProfileVersions)
	}
	// Every format-1 verdict the shim held has expired by now.
	time.Sleep(validity)
	if ok, why := s.trusted(t, h.name); !ok {
		t.Fatalf("shim rejects %s on format-2 verdicts: %s", h.name, why)
	}
	if last, _, _ := e.verdicts.get(h.name); last.Format != verdict.Format2 {
		t.Errorf("latest verdict format %d after the pin was removed", last.Format)
	}
}
