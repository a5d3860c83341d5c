// Package python_test runs the Python tests of the trustpool_filter Nova
// filter (nova-filter-shim/python/tests) with Debian's /usr/bin/python3 and
// python3-nova (Zed), so `go test` and `make test` cover them:
//
//   - test_filter: the filter inside Nova's real HostManager among the
//     stock filters, against an in-process fake shim (failure modes);
//   - test_snapshot: the verdict snapshot file's parser (the Go shim's
//     golden file, every malformed form, a mutation fuzz) and the filter
//     reading it in Nova's HostManager, failing closed on each rule;
//     test_snapshot_eventlet: the same under eventlet's monkey-patching;
//   - test_nova_shim: the same against a real trustpool-filter-shim
//     process (built here with go build) fed signed verdicts over a real
//     RabbitMQ (servicetest) by Python oslo.messaging, over the socket and
//     on the snapshot file it writes (same answers for every request);
//   - test_extra_specs: the flavor extra-spec validators through Nova's
//     own validation, including the installed entry point;
//   - functional/test_functional: servers booted through Nova's real
//     control plane in-process (Nova's functional-test base) land only on
//     hosts the real shim reports as attested (shim fed by a test feeder).
//
// The all-real end to end (attestation service, agents on swtpm,
// RabbitMQ, Keystone, the shim binary, Nova's functional base running
// tests/functional/test_e2e_attested.py in phases) is TestNovaE2E in
// tests/integration/nova_e2e_test.go. Placement traits and the revocation
// actions in the same Nova setup (tests/functional/test_placement_traits.py)
// are TestPlacementE2E in tests/integration/placement_e2e_test.go.
//
// TestBenchmark (only with TRUSTPOOL_FILTER_BENCH=1) runs bench.py.
package python_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/trustpool/trustpool/internal/servicetest"
)

func TestMain(m *testing.M) { servicetest.Main(m) }

// buildShim compiles the shim binary into a temporary directory.
func buildShim(t *testing.T) string {
	t.Helper()
	// go test puts $GOROOT/bin first on the PATH of test binaries.
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("go toolchain not found: %v", err)
	}
	bin := filepath.Join(t.TempDir(), "trustpool-filter-shim")
	cmd := exec.CommandContext(t.Context(), gobin, "build", "-o", bin, "..")
	cmd.Env = append(os.Environ(), "GOFLAGS=-buildvcs=false")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build the shim: %v\n%s", err, out)
	}
	return bin
}

// runUnittest runs `python3 -m unittest -v <module>` in tests/ with env and
// requires a successful run of at least one test with none skipped: the
// runner exits 0 when nothing ran or everything was skipped.
func runUnittest(t *testing.T, env []string, module string) {
	t.Helper()
	out := runPython(t, env, "-m", "unittest", "-v", module)
	if err := servicetest.CheckUnittest(out, 0); err != nil {
		t.Fatalf("python tests of %s: %v", module, err)
	}
}

// runPython runs python3 with args in tests/ with env and returns its output.
func runPython(t *testing.T, env []string, args ...string) []byte {
	t.Helper()
	py := servicetest.Python(t)
	pkgDir, err := filepath.Abs(".")
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(t.Context(), py, args...)
	cmd.Dir = filepath.Join(pkgDir, "tests")
	cmd.Env = append(os.Environ(), append(env, "PYTHONPATH="+pkgDir+string(os.PathListSeparator)+cmd.Dir, "PYTHONDONTWRITEBYTECODE=1")...)
	out, err := cmd.CombinedOutput()
	t.Logf("%s %v:\n%s", py, args, out)
	if err != nil {
		t.Fatalf("python tests failed: %v", err)
	}
	return out
}

func TestFilterInNova(t *testing.T) {
	runUnittest(t, nil, "test_filter")
}

func TestSnapshotFilter(t *testing.T) {
	runUnittest(t, nil, "test_snapshot")
}

// TestSnapshotFilterEventlet runs in a process of its own: it
// monkey-patches the process with eventlet first, as nova-scheduler does.
func TestSnapshotFilterEventlet(t *testing.T) {
	runUnittest(t, nil, "test_snapshot_eventlet")
}

// TestExtraSpecValidators runs in a process of its own: importing nova's
// API validation code monkey-patches the process with eventlet, which the
// threaded fake shim of test_filter must not meet.
func TestExtraSpecValidators(t *testing.T) {
	runUnittest(t, nil, "test_extra_specs")
}

func TestFilterInNovaWithRealShim(t *testing.T) {
	rabbit := servicetest.RabbitMQ(t)
	bin := buildShim(t)
	runUnittest(t, []string{"TRUSTPOOL_SHIM_BIN=" + bin, "TRUSTPOOL_TRANSPORT_URL=" + rabbit.URL}, "test_nova_shim")
}

// TestSampleNovaConf loads etc/nova.conf.d/trustpool-filter.conf.sample as
// nova-scheduler would (own process: it initialises nova's global CONF).
func TestSampleNovaConf(t *testing.T) {
	runUnittest(t, nil, "test_sample_conf")
}

// TestNovaFunctional boots servers through Nova's real control plane
// in-process (API, conductor, scheduler, fake computes, Placement) with
// TrustedFilter asking a real shim process; see tests/functional.
func TestNovaFunctional(t *testing.T) {
	rabbit := servicetest.RabbitMQ(t)
	bin := buildShim(t)
	runUnittest(t, []string{"TRUSTPOOL_SHIM_BIN=" + bin, "TRUSTPOOL_TRANSPORT_URL=" + rabbit.URL}, "functional.test_functional")
}

func TestBenchmark(t *testing.T) {
	if os.Getenv("TRUSTPOOL_FILTER_BENCH") == "" {
		t.Skip("set TRUSTPOOL_FILTER_BENCH=1 to run the scheduling benchmark (make bench-filter)")
	}
	rabbit := servicetest.RabbitMQ(t)
	bin := buildShim(t)
	runPython(t, []string{"TRUSTPOOL_SHIM_BIN=" + bin, "TRUSTPOOL_TRANSPORT_URL=" + rabbit.URL}, "bench.py")
}

// TestBenchmarkPlacement (only with TRUSTPOOL_PLACEMENT_BENCH=1) runs
// bench_placement.py: select_destinations through Nova's real scheduler at
// 1,000 and 5,000 hosts, TrustedFilter alone against the trait prefilter
// plus TrustedFilter (make bench-placement).
func TestBenchmarkPlacement(t *testing.T) {
	if os.Getenv("TRUSTPOOL_PLACEMENT_BENCH") == "" {
		t.Skip("set TRUSTPOOL_PLACEMENT_BENCH=1 to run the Placement scheduling benchmark (make bench-placement)")
	}
	rabbit := servicetest.RabbitMQ(t)
	bin := buildShim(t)
	out := runPython(t, []string{"TRUSTPOOL_SHIM_BIN=" + bin, "TRUSTPOOL_TRANSPORT_URL=" + rabbit.URL}, "-m", "unittest", "-v", "bench_placement")
	if err := servicetest.CheckUnittest(out, 0); err != nil {
		t.Fatal(err)
	}
}
