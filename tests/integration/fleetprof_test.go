package integration

import (
	"os"
	"runtime/pprof"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/trustpool/trustpool/internal/servicetest"
	"github.com/trustpool/trustpool/internal/verdict"
)

// TestFleetProfile profiles the attestation service in process against a
// simulated fleet (for finding hot spots; the figures in docs/benchmarks.md
// come from make bench-fleet, with the service in its own process). Set
// TRUSTPOOL_FLEET_PROFILE=HOSTS,INTERVAL,WINDOW[,DB] (e.g. 2000,30s,60s or
// 2000,30s,60s,mariadb) and TRUSTPOOL_FLEET_PROFILE_OUT=cpu.pprof. The
// profile covers the whole process (simulator included): look at the
// service's packages.
func TestFleetProfile(t *testing.T) {
	spec := os.Getenv("TRUSTPOOL_FLEET_PROFILE")
	if spec == "" {
		t.Skip("set TRUSTPOOL_FLEET_PROFILE=HOSTS,INTERVAL,WINDOW[,DB] to profile")
	}
	parts := strings.Split(spec, ",")
	hosts, _ := strconv.Atoi(parts[0])
	interval, _ := time.ParseDuration(parts[1])
	window, _ := time.ParseDuration(parts[2])
	e := newEnv(t, interval)
	e.cfg.Attestation.Concurrency = 256
	e.cfg.Attestation.QuoteTimeout = 5 * time.Second
	e.cfg.Attestation.HeartbeatInterval = interval
	e.cfg.Attestation.NonceLifetime = 2 * interval
	if len(parts) > 3 && parts[3] == "mariadb" {
		e.cfg.Database.Connection = mariaURL(t)
	}
	f := e.newSimFleet(hosts, nil...)
	e.startService()
	e.importProfile("simfleet", f.files)
	f.run(t, 30*time.Minute)
	waitFor(t, 10*time.Minute, "every simulated host trusted", func() bool {
		for _, h := range f.Hosts() {
			if v, _, ok := e.verdicts.get(h.Name); !ok || v.Status != verdict.Trusted {
				return false
			}
		}
		return true
	})
	time.Sleep(interval)
	out := os.Getenv("TRUSTPOOL_FLEET_PROFILE_OUT")
	if out == "" {
		out = "cpu.pprof"
	}
	pf, err := os.Create(out)
	if err != nil {
		t.Fatal(err)
	}
	q0 := f.Quotes()
	if err := pprof.StartCPUProfile(pf); err != nil {
		t.Fatal(err)
	}
	time.Sleep(window)
	pprof.StopCPUProfile()
	pf.Close()
	q := f.Quotes() - q0
	t.Logf("%d hosts at %v: %d quotes in %v (%.1f/s); profile in %s", hosts, interval, q, window, float64(q)/window.Seconds(), out)
}

func mariaURL(t *testing.T) string {
	t.Helper()
	return servicetest.MariaDB(t).URL
}
