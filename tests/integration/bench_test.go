package integration

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/trustpool/trustpool/internal/bootseed"
	"github.com/trustpool/trustpool/internal/servicetest"
	"github.com/trustpool/trustpool/internal/verdict"
)

// TestBenchExtendToUntrusted is a measurement, not a test: the time from a
// PCR extend on a host's TPM to the signed untrusted verdict arriving on the
// trustpool-verdicts fanout (verified like a shim does), p50/p99 over runs.
// Between runs the TPM is rebooted and reseeded, and the host becomes
// trusted again. Run with:
//
//	TRUSTPOOL_BENCH_RUNS=20 go test -run TestBenchExtendToUntrusted -v ./tests/integration/
func TestBenchExtendToUntrusted(t *testing.T) {
	runs, _ := strconv.Atoi(os.Getenv("TRUSTPOOL_BENCH_RUNS"))
	if runs <= 0 || testing.Short() {
		t.Skip("set TRUSTPOOL_BENCH_RUNS to run the benchmark")
	}
	interval := 2 * time.Second
	if s := os.Getenv("TRUSTPOOL_BENCH_INTERVAL"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil {
			t.Fatal(err)
		}
		interval = d
	}
	e := newEnv(t, interval)
	h := e.newHost("bench-1", bootseed.BuildA())
	e.startService()
	e.startAgent(h)
	e.verdicts.wait(t, h.name, 0, 60*time.Second, "attested", func(v verdict.Verdict) bool { return true })
	if code, body := e.api("POST", "/v1/profiles/learn", e.admin, map[string]any{"host": h.name, "name": "golden"}); code != 201 {
		t.Fatalf("learn = %d %v", code, body)
	}
	var lat []time.Duration
	for i := range runs {
		cur, _, _ := e.verdicts.get(h.name)
		trusted := e.verdicts.wait(t, h.name, 0, 60*time.Second, "trusted", func(v verdict.Verdict) bool {
			return v.Status == verdict.Trusted && (cur.Status != verdict.Trusted || v.Seq >= cur.Seq)
		})
		d := sha256.Sum256([]byte(fmt.Sprint("run", i)))
		t0 := time.Now()
		h.sw.Tool(t, "tpm2_pcrextend", "7:sha256="+hex.EncodeToString(d[:]))
		// tpm2_pcrextend returns after the extend; measure from its start.
		e.verdicts.wait(t, h.name, trusted.Seq, 60*time.Second, "untrusted", func(v verdict.Verdict) bool { return v.Status == verdict.Untrusted })
		_, at, _ := e.verdicts.get(h.name)
		lat = append(lat, at.Sub(t0))
		// Reboot: PCRs reset, reseed the same build, agent continues.
		h.sw.Stop(t)
		h.sw.Start(t)
		h.boot(t, bootseed.BuildA())
	}
	slices.Sort(lat)
	pct := func(p float64) time.Duration { return lat[min(len(lat)-1, int(p*float64(len(lat))))] }
	t.Logf("PCR extend → signed untrusted verdict on the fanout: runs=%d interval=%v p50=%v p99=%v min=%v max=%v",
		runs, interval, pct(0.50), pct(0.99), lat[0], lat[len(lat)-1])
}

// TestBenchVerdictToTrait is a measurement, not a test: the time from a
// verdict change to its trait change being visible in Placement, with the
// attestation service mirroring traits into a real Placement
// (python3-placement validating Keystone tokens), p50/p99 over runs:
//
//   - PCR extend → CUSTOM_TRUSTPOOL_TRUSTED gone from the host's provider;
//   - signed untrusted verdict on the fanout → trait gone;
//   - signed trusted verdict on the fanout (after a reboot) → trait back.
//
// Placement is polled every 10 ms (the resolution of the figures). Run with:
//
//	TRUSTPOOL_BENCH_RUNS=20 go test -run TestBenchVerdictToTrait -v ./tests/integration/
func TestBenchVerdictToTrait(t *testing.T) {
	runs, _ := strconv.Atoi(os.Getenv("TRUSTPOOL_BENCH_RUNS"))
	if runs <= 0 || testing.Short() {
		t.Skip("set TRUSTPOOL_BENCH_RUNS to run the benchmark")
	}
	e := newEnv(t, 2*time.Second)
	pl := servicetest.PlacementWithKeystone(t, e.ks)
	h := e.newHost("bench-1", bootseed.BuildA())
	rp := pl.CreateProvider(t, h.name)
	e.cfg.Placement.MirrorTraits, e.cfg.Placement.NodeLookup = true, "name"
	e.cfg.Placement.EndpointOverride, e.cfg.Placement.ReconcileInterval = pl.URL, time.Hour
	e.startService()
	e.startAgent(h)
	e.verdicts.wait(t, h.name, 0, 60*time.Second, "attested", func(v verdict.Verdict) bool { return true })
	if code, body := e.api("POST", "/v1/profiles/learn", e.admin, map[string]any{"host": h.name, "name": "golden"}); code != 201 {
		t.Fatalf("learn = %d %v", code, body)
	}
	hasTrait := func() bool {
		_, ts := pl.Traits(t, rp)
		return slices.Contains(ts, "CUSTOM_TRUSTPOOL_TRUSTED")
	}
	// poll returns when cond holds, polling Placement every 10 ms.
	poll := func(what string, cond func() bool) time.Time {
		t.Helper()
		deadline := time.Now().Add(60 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s", what)
			}
			time.Sleep(10 * time.Millisecond)
		}
		return time.Now()
	}
	var extendToGone, verdictToGone, verdictToBack []time.Duration
	cur, _, _ := e.verdicts.get(h.name)
	for i := range runs {
		trusted := e.verdicts.wait(t, h.name, 0, 60*time.Second, "trusted", func(v verdict.Verdict) bool {
			return v.Status == verdict.Trusted && (cur.Status != verdict.Trusted || v.Seq > cur.Seq)
		})
		_, at, _ := e.verdicts.get(h.name)
		back := poll("trait added", hasTrait)
		if i > 0 { // the first one waited for the profile to be learned
			verdictToBack = append(verdictToBack, back.Sub(at))
		}
		d := sha256.Sum256([]byte(fmt.Sprint("trait run", i)))
		t0 := time.Now()
		h.sw.Tool(t, "tpm2_pcrextend", "7:sha256="+hex.EncodeToString(d[:]))
		cur = e.verdicts.wait(t, h.name, trusted.Seq, 60*time.Second, "untrusted", status(verdict.Untrusted))
		_, at, _ = e.verdicts.get(h.name)
		gone := poll("trait removed", func() bool { return !hasTrait() })
		extendToGone = append(extendToGone, gone.Sub(t0))
		verdictToGone = append(verdictToGone, gone.Sub(at))
		h.sw.Stop(t)
		h.sw.Start(t)
		h.boot(t, bootseed.BuildA())
	}
	stats := func(name string, lat []time.Duration) {
		slices.Sort(lat)
		pct := func(p float64) time.Duration { return lat[min(len(lat)-1, int(p*float64(len(lat))))] }
		t.Logf("%-45s runs=%d p50=%v p99=%v min=%v max=%v", name, len(lat), pct(0.50).Round(time.Millisecond),
			pct(0.99).Round(time.Millisecond), lat[0].Round(time.Millisecond), lat[len(lat)-1].Round(time.Millisecond))
	}
	stats("PCR extend → trait gone from Placement", extendToGone)
	stats("untrusted verdict on the fanout → trait gone", verdictToGone)
	stats("trusted verdict on the fanout → trait back", verdictToBack)
	resp, err := http.Get(e.svc.APIURL() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "trustpool_placement_trait_sync_seconds_sum") || strings.HasPrefix(line, "trustpool_placement_trait_sync_seconds_count") ||
			strings.HasPrefix(line, "trustpool_placement_trait_writes_total") {
			t.Logf("service metric: %s", line)
		}
	}
}
