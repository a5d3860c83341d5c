package integration

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/trustpool/trustpool/internal/bootseed"
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
