package integration

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/trustpool/trustpool/internal/servicetest"
	"github.com/trustpool/trustpool/internal/verdict"
)

// TestFleetProfile profiles the attestation service, run in this process,
// against a simulated fleet (fleet-sim, in its own process): CPU
// (TRUSTPOOL_FLEET_PROFILE_OUT, default cpu.pprof) over the window, and
// the heap at its end (same name with .heap). Set
// TRUSTPOOL_FLEET_PROFILE=HOSTS,INTERVAL,WINDOW[,DB] (e.g. 10000,30s,60s
// or 10000,30s,60s,mariadb). For finding hot spots; the figures in
// docs/benchmarks.md come from make bench-fleet (the service built and run
// as it ships).
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
	bins := buildBinaries(t)
	simDir := filepath.Join(e.dir, "sim")
	if out, err := exec.Command(bins.sim, "-ca-dir", simDir, "-init", "-ima-files", "50").CombinedOutput(); err != nil {
		t.Fatalf("fleet-sim -init: %v\n%s", err, out)
	}
	caPEM, err := os.ReadFile(filepath.Join(simDir, "ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(e.rootsDir, "sim.pem"), string(caPEM))
	e.startService()
	prof, err := os.ReadFile(filepath.Join(simDir, "profile.toml"))
	if err != nil {
		t.Fatal(err)
	}
	if code, body := e.api("POST", "/v1/profiles/import", e.admin, string(prof)); code != 200 {
		t.Fatalf("import = %d %v", code, body)
	}
	sim := startSim(t, bins.sim, filepath.Join(e.dir, "fleet-sim.log"), "-ca-dir", simDir, "-transport-url", e.rabbit.URL,
		"-hosts", strconv.Itoa(hosts), "-ima-files", "50")
	sim.waitEnrolled(t, 30*time.Minute)
	waitFor(t, 10*time.Minute, "every simulated host trusted", func() bool {
		for i := range hosts {
			if v, _, ok := e.verdicts.get(fmt.Sprintf("sim-%05d", i)); !ok || v.Status != verdict.Trusted {
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
	if err := pprof.StartCPUProfile(pf); err != nil {
		t.Fatal(err)
	}
	time.Sleep(window)
	pprof.StopCPUProfile()
	pf.Close()
	hf, err := os.Create(out + ".heap")
	if err != nil {
		t.Fatal(err)
	}
	runtime.GC()
	if err := pprof.WriteHeapProfile(hf); err != nil {
		t.Fatal(err)
	}
	hf.Close()
	t.Logf("%d hosts at %v: profiles in %s and %s.heap", hosts, interval, out, out)
}

func mariaURL(t *testing.T) string {
	t.Helper()
	return servicetest.MariaDB(t).URL
}
