package integration

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/trustpool/trustpool/internal/bootseed"
	"github.com/trustpool/trustpool/internal/servicetest"
	"github.com/trustpool/trustpool/internal/verdict"
)

// TestNovaE2E is the end-to-end proof with every component real:
// RabbitMQ, Keystone, the attestation service, one trustpool-agent per Nova
// compute host on its own swtpm (seeded with a realistic boot), the
// trustpool-filter-shim binary following the service's signed verdicts, and
// Nova's control plane in-process (python3-nova's functional-test base: API,
// conductor, scheduler, fake-virt computes host1-host4, Placement) with
// TrustedFilter enabled. host1-3 boot the approved firmware, host4 another
// build; the profile "baseline" is learned from host1 through the REST API.
//
// nova-filter-shim/python/tests/functional/test_e2e_attested.py asserts the
// scheduling outcomes, one Python run per phase (Nova booted anew per test):
//
//  1. trust:profile=baseline boots land only on host1-3 (never on host4);
//     an untagged flavor goes anywhere, host4 included, with no shim call;
//  2. after host2's PCR 7 is extended, new boots avoid host2;
//  3. after every host's PCR is extended, the boot ends in "No valid host".
//
// Between phases this test waits for the signed verdicts (checked with the
// service's key) and for the shim's own answer to change.
func TestNovaE2E(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test")
	}
	py := servicetest.Python(t)
	shimBin := buildFilterShim(t)

	e := newEnv(t, 5*time.Second)
	names := []string{"host1", "host2", "host3", "host4"}
	hosts := map[string]*host{}
	for _, n := range names {
		v := bootseed.BuildA()
		if n == "host4" {
			v = bootseed.BuildB()
		}
		hosts[n] = e.newHost(n, v)
	}
	e.startService()
	for _, n := range names {
		e.startAgent(hosts[n])
	}
	for _, n := range names {
		e.verdicts.wait(t, n, 0, 60*time.Second, "attested without profiles", status(verdict.Untrusted))
	}
	h4, _, _ := e.verdicts.get("host4")
	if code, body := e.api("POST", "/v1/profiles/learn", e.admin, map[string]any{"host": "host1", "name": "baseline"}); code != http.StatusCreated {
		t.Fatalf("learn baseline from host1 = %d %v", code, body)
	}
	for _, n := range names[:3] {
		e.verdicts.wait(t, n, 0, 60*time.Second, "trusted under baseline", status(verdict.Trusted))
	}
	// host4 is attested again after the learn and still fails the profile.
	e.verdicts.wait(t, "host4", h4.Seq, 60*time.Second, "re-attested, untrusted", status(verdict.Untrusted))

	shim := startFilterShim(t, e, shimBin)
	shim.waitPasses(t, names, []string{"host1", "host2", "host3"})

	phase := func(n int) {
		t.Helper()
		runE2EPhase(t, py, shim, names, n)
	}
	phase(1)

	extend := func(n string) {
		t.Helper()
		before, _, _ := e.verdicts.get(n)
		d := sha256.Sum256([]byte("evil bootkit on " + n))
		hosts[n].sw.Tool(t, "tpm2_pcrextend", "7:sha256="+hex.EncodeToString(d[:]))
		e.verdicts.wait(t, n, before.Seq, 60*time.Second, "untrusted after PCR extend", status(verdict.Untrusted))
	}
	extend("host2")
	shim.waitPasses(t, names, []string{"host1", "host3"})
	phase(2)

	extend("host1")
	extend("host3")
	shim.waitPasses(t, names, []string{})
	phase(3)

	if e.verdicts.bad != 0 {
		t.Errorf("%d verdicts failed signature verification", e.verdicts.bad)
	}
}

// buildFilterShim compiles ./nova-filter-shim into a temporary directory.
func buildFilterShim(t *testing.T) string {
	t.Helper()
	gobin, err := exec.LookPath("go") // go test puts $GOROOT/bin first on PATH
	if err != nil {
		t.Fatalf("go toolchain not found: %v", err)
	}
	bin := filepath.Join(t.TempDir(), "trustpool-filter-shim")
	cmd := exec.CommandContext(t.Context(), gobin, "build", "-o", bin, "../../nova-filter-shim")
	cmd.Env = append(os.Environ(), "GOFLAGS=-buildvcs=false")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build the shim: %v\n%s", err, out)
	}
	return bin
}

type filterShim struct {
	socket, log string
	client      *http.Client
}

// startFilterShim runs the shim binary with the service's pinned public key
// and broker, and waits for /healthz (snapshot loaded, fanout followed).
func startFilterShim(t *testing.T, e *env, bin string) *filterShim {
	t.Helper()
	dir := t.TempDir()
	keyPath := filepath.Join(dir, "verdict_public_key.pem")
	keyPEM, err := verdict.MarshalPublicKeyPEM(e.svc.PublicKey())
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyPath, keyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	s := &filterShim{socket: filepath.Join(dir, "shim.sock"), log: filepath.Join(dir, "shim.log")}
	conf := fmt.Sprintf("[DEFAULT]\ntransport_url = %q\nhost = \"e2e-scheduler\"\n"+
		"[filter_shim]\nverdict_public_key = %q\nsocket_path = %q\nsocket_group = \"\"\nsnapshot_retry_max = \"1s\"\n"+
		"snapshot_file = %q\nsnapshot_file_group = \"\"\n",
		e.rabbit.URL, keyPath, s.socket, filepath.Join(dir, "verdicts.snapshot"))
	confPath := filepath.Join(dir, "filter-shim.toml")
	if err := os.WriteFile(confPath, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	logf, err := os.Create(s.log)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, bin, "-config-file", confPath)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Cancel = func() error { return cmd.Process.Signal(os.Interrupt) }
	cmd.WaitDelay = 30 * time.Second
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		cancel()
		<-exited
		logf.Close()
		if t.Failed() {
			b, _ := os.ReadFile(s.log)
			t.Logf("filter shim log:\n%s", b)
		}
	})
	s.client = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", s.socket)
		},
	}}
	waitFor(t, 60*time.Second, "filter shim /healthz", func() bool {
		select {
		case <-exited:
			b, _ := os.ReadFile(s.log)
			t.Fatalf("filter shim exited:\n%s", b)
		default:
		}
		code, _, err := s.do("GET", "/healthz", nil)
		return err == nil && code == http.StatusOK
	})
	return s
}

func (s *filterShim) do(method, path string, body []byte) (int, []byte, error) {
	req, err := http.NewRequest(method, "http://shim"+path, bytes.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

// waitPasses waits until the shim lets exactly want (of hosts) pass for
// trust:profile=baseline.
func (s *filterShim) waitPasses(t *testing.T, hosts, want []string) {
	t.Helper()
	req, _ := json.Marshal(map[string]any{"hosts": hosts, "trusted_host": nil, "profile": "baseline"})
	var last string
	deadline := time.Now().Add(60 * time.Second)
	for {
		code, b, err := s.do("POST", "/v1/filter", req)
		last = fmt.Sprint(code, " ", err, " ", string(b))
		var d struct{ Passes []string }
		if err == nil && code == http.StatusOK && json.Unmarshal(b, &d) == nil && slices.Equal(d.Passes, want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for the shim to pass %v; last answer %s", want, last)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// runE2EPhase runs the phase's tests of functional/test_e2e_attested.py.
func runE2EPhase(t *testing.T, py string, s *filterShim, hosts []string, phase int) {
	t.Helper()
	pkgDir, err := filepath.Abs("../../nova-filter-shim/python")
	if err != nil {
		t.Fatal(err)
	}
	testsDir := filepath.Join(pkgDir, "tests")
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, py, "-m", "unittest", "-v", "-k", fmt.Sprintf("test_phase%d_", phase), "functional.test_e2e_attested")
	cmd.Dir = testsDir
	cmd.Env = append(os.Environ(),
		"PYTHONPATH="+pkgDir+string(os.PathListSeparator)+testsDir, "PYTHONDONTWRITEBYTECODE=1",
		"TRUSTPOOL_SHIM_SOCKET="+s.socket, "TRUSTPOOL_SHIM_LOG="+s.log,
		"TRUSTPOOL_E2E_HOSTS="+strings.Join(hosts, ","))
	out, err := cmd.CombinedOutput()
	// What failed goes first: a CI report shows the head of a long log.
	if cerr := servicetest.CheckUnittest(out, 0); cerr != nil || err != nil {
		t.Errorf("phase %d: python tests failed (exit: %v): %v", phase, err, cerr)
	}
	t.Logf("phase %d: %s %v:\n%s", phase, py, cmd.Args[1:], out)
	if t.Failed() {
		t.FailNow()
	}
}
