package integration

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/trustpool/trustpool/internal/bootseed"
	"github.com/trustpool/trustpool/internal/tpm"
	"github.com/trustpool/trustpool/internal/verdict"
)

// TestBenchAgentFootprint is a measurement, not a test: the resident memory
// and CPU use of a trustpool-agent process (built from this tree, default
// [agent] settings: watcher every 10 s) attested every 10 s by the service,
// on a swtpm with a firmware log and a short IMA list, read from
// /proc/<pid>/status and /proc/<pid>/stat over a window once it is
// enrolled. For scale, the same figures for `oslo-peer serve` (a Go oslo
// RPC server on the same broker, no TPM) are measured in the same run. Run
// with:
//
//	TRUSTPOOL_BENCH_FOOTPRINT=60s go test -count=1 -run TestBenchAgentFootprint -v ./tests/integration/
func TestBenchAgentFootprint(t *testing.T) {
	window, _ := time.ParseDuration(os.Getenv("TRUSTPOOL_BENCH_FOOTPRINT"))
	if window <= 0 || testing.Short() {
		t.Skip("set TRUSTPOOL_BENCH_FOOTPRINT to a duration (e.g. 60s) to run the measurement")
	}
	e := newEnv(t, 10*time.Second)
	h := e.newHost("footprint-1", bootseed.BuildA())
	imaPath := filepath.Join(h.dir, "binary_runtime_measurements")
	seedIMA(t, h, imaPath)
	e.startService()

	bin := t.TempDir()
	build(t, bin, "trustpool-agent", "github.com/trustpool/trustpool/compute-agent")
	build(t, bin, "oslo-peer", "github.com/trustpool/trustpool/tests/cmd/oslo-peer")
	conf := filepath.Join(h.dir, "agent.toml")
	body := fmt.Sprintf(`[DEFAULT]
host = %q
transport_url = %q
[tpm]
swtpm = %q
event_log = %q
ima_log = %q
[agent]
state_dir = %q
`, h.name, e.rabbit.URL, h.sw.ServerAddr, filepath.Join(h.dir, "binary_bios_measurements"), imaPath, filepath.Join(h.dir, "state"))
	if err := os.WriteFile(conf, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	agent := spawn(t, filepath.Join(bin, "trustpool-agent"), "-config-file", conf)
	peer := spawn(t, filepath.Join(bin, "oslo-peer"), "serve", "--transport-url", e.rabbit.URL, "--exchange", "trustpool",
		"--topic", "footprint-baseline", "--server", "peer")
	e.verdicts.wait(t, h.name, 0, 2*time.Minute, "attested", func(v verdict.Verdict) bool { return v.Status != verdict.Unknown })
	first, _, _ := e.verdicts.get(h.name)

	tick := clockTicks(t)
	a0, p0 := cpuTicks(t, agent), cpuTicks(t, peer)
	var aMax, pMax int
	end := time.Now().Add(window)
	for time.Now().Before(end) {
		aMax, pMax = max(aMax, statusKB(t, agent, "VmRSS")), max(pMax, statusKB(t, peer, "VmRSS"))
		time.Sleep(time.Second)
	}
	a1, p1 := cpuTicks(t, agent), cpuTicks(t, peer)
	last, _, _ := e.verdicts.get(h.name)
	rounds := "(no new verdict published: unchanged)"
	if last.Seq > first.Seq {
		rounds = fmt.Sprintf("(verdict seq %d → %d)", first.Seq, last.Seq)
	}
	cpu := func(d int64) float64 { return 100 * float64(d) / float64(tick) / window.Seconds() }
	t.Logf("window %v, attestation every 10s %s", window, rounds)
	t.Logf("trustpool-agent: VmRSS %d kB (max %d kB), VmHWM %d kB, CPU %.2f%% of one core",
		statusKB(t, agent, "VmRSS"), aMax, statusKB(t, agent, "VmHWM"), cpu(a1-a0))
	t.Logf("oslo-peer serve (baseline): VmRSS %d kB (max %d kB), VmHWM %d kB, CPU %.2f%% of one core",
		statusKB(t, peer, "VmRSS"), pMax, statusKB(t, peer, "VmHWM"), cpu(p1-p0))
}

// seedIMA writes a short IMA list (boot_aggregate and three files, as the
// demo does) and extends PCR 10 to match.
func seedIMA(t *testing.T, h *host, path string) {
	t.Helper()
	c, err := tpm.DialSWTPM(context.Background(), h.sw.ServerAddr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	logs, err := bootseed.AppendIMA(c, []bootseed.IMAFile{
		{Path: "/usr/bin/bash", Content: []byte("bash")}, {Path: "/usr/sbin/sshd", Content: []byte("sshd")},
		{Path: "/usr/bin/python3", Content: []byte("python3")},
	}, true)
	if err != nil {
		t.Fatal(err)
	}
	for p, b := range map[string][]byte{path: logs.SHA1, path + "_sha256": logs.SHA256} {
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

func build(t *testing.T, dir, name, pkg string) {
	t.Helper()
	cmd := exec.Command("go", "build", "-o", filepath.Join(dir, name), pkg)
	cmd.Env = append(os.Environ(), "GOFLAGS=-buildvcs=false")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", pkg, err, out)
	}
}

// spawn starts a command that runs until the test ends (SIGTERM, then
// wait); its output goes to the test log when TRUSTPOOL_TEST_LOGS is set.
func spawn(t *testing.T, name string, args ...string) int {
	t.Helper()
	cmd := exec.Command(name, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		if os.Getenv("TRUSTPOOL_TEST_LOGS") != "" {
			t.Logf("%s output:\n%s", filepath.Base(name), out.String())
		}
	})
	return cmd.Process.Pid
}

// statusKB reads a "<key>: N kB" line of /proc/<pid>/status.
func statusKB(t *testing.T, pid int, key string) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, key+":"); ok {
			n, err := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
			if err != nil {
				t.Fatalf("%s: %v", line, err)
			}
			return n
		}
	}
	t.Fatalf("no %s in /proc/%d/status", key, pid)
	return 0
}

// cpuTicks is utime + stime of /proc/<pid>/stat, in clock ticks.
func cpuTicks(t *testing.T, pid int) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	// Fields after the command name, which is in parentheses and may hold spaces.
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+2:]))
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		t.Fatalf("parse /proc/%d/stat: %v %v", pid, err1, err2)
	}
	return utime + stime
}

// clockTicks is sysconf(_SC_CLK_TCK).
func clockTicks(t *testing.T) int64 {
	t.Helper()
	out, err := exec.Command("getconf", "CLK_TCK").Output()
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.ParseInt(strings.TrimSpace(string(out)), 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return n
}
