package integration

import (
	"context"
	"crypto/rand"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/trustpool/trustpool/compute-agent/agenttest"
	"github.com/trustpool/trustpool/internal/attestrpc"
	"github.com/trustpool/trustpool/internal/simtpm"
	"github.com/trustpool/trustpool/internal/verdict"
)

// fleetHosts is the size of the simulated fleet in make test (2-core CI);
// make bench-fleet runs thousands.
const fleetHosts = 200

// simFleet is a simulated fleet (simulated TPMs) with its CA installed in
// e's EK roots and a profile its hosts pass.
type simFleet struct {
	*agenttest.Fleet
	ca    *simtpm.CA
	files int
}

// newSimFleet creates n simulated hosts for e: their test CA goes into the
// service's EK roots (before the service starts) and, once the service
// runs, importProfile adds the profile they pass.
func (e *env) newSimFleet(n int, edit ...func(*agenttest.Config)) *simFleet {
	t := e.t
	t.Helper()
	ca, err := simtpm.NewCA(rand.Reader, "Trustpool simulated EK CA "+t.Name())
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(e.rootsDir, "simulated-ek-ca.pem"), ca.CertPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := agenttest.Config{TransportURL: e.rabbit.URL, ControlExchange: attestrpc.DefaultControlExchange, Hosts: n,
		HostsPerConnection: 50, CA: ca, IMAFiles: agenttest.IMAFiles(20), Logger: logger(t, "fleet")}
	for _, fn := range edit {
		fn(&cfg)
	}
	f, err := agenttest.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return &simFleet{Fleet: f, ca: ca, files: 20}
}

// importProfile defines the profile the fleet's untouched hosts pass.
func (e *env) importProfile(name string, files int) {
	e.t.Helper()
	prof, err := agenttest.Profile(name, nil, agenttest.IMAFiles(files))
	if err != nil {
		e.t.Fatal(err)
	}
	if code, body := e.api("POST", "/v1/profiles/import", e.admin, prof); code != http.StatusOK {
		e.t.Fatalf("import = %d %v", code, body)
	}
}

// run runs the fleet until the test ends and waits for every enrollment.
func (f *simFleet) run(t *testing.T, timeout time.Duration) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.Run(ctx) }()
	t.Cleanup(stopper(t, "simulated fleet", cancel, done))
	select {
	case <-f.Enrolled():
	case <-time.After(timeout):
		t.Fatalf("%d of %d simulated hosts enrolled after %v", f.EnrolledCount(), len(f.Hosts()), timeout)
	}
}

func hasReason(v verdict.Verdict, prefix, contains string) bool {
	return slices.ContainsFunc(v.Reasons, func(r string) bool { return strings.HasPrefix(r, prefix) && strings.Contains(r, contains) })
}

// TestSimulatedFleet: a few hundred simulated hosts (the agent's own
// enrollment and quoting code over simulated TPMs, fifty hosts per broker
// connection) enroll with EK certificates from a test CA through
// credential activation, their quotes pass the real verifier and every
// host is trusted; each fault the simulator injects is caught with its
// reason, and the untouched hosts stay trusted.
func TestSimulatedFleet(t *testing.T) {
	e := newEnv(t, 5*time.Second)
	f := e.newSimFleet(fleetHosts, func(c *agenttest.Config) { c.IMAGrowth = 2 * time.Minute })
	e.startService()
	e.importProfile("simfleet", f.files)
	f.run(t, 3*time.Minute)
	hosts := f.Hosts()
	waitFor(t, 2*time.Minute, "every simulated host trusted", func() bool {
		for _, h := range hosts {
			if v, _, ok := e.verdicts.get(h.Name); !ok || v.Status != verdict.Trusted {
				return false
			}
		}
		return true
	})
	ctx := t.Context()
	seq := func(h *agenttest.Host) uint64 { v, _, _ := e.verdicts.get(h.Name); return v.Seq }

	// An unknown binary runs: IMA appraisal fails.
	h := hosts[0]
	s := seq(h)
	if err := h.Tamper(ctx, agenttest.TamperIMA); err != nil {
		t.Fatal(err)
	}
	v := e.verdicts.wait(t, h.Name, s, 30*time.Second, "untrusted after an unknown binary", status(verdict.Untrusted))
	if !hasReason(v, "profile simfleet: ", "ima: /usr/local/sbin/implant-") {
		t.Errorf("tampered IMA: reasons %v, want the implant not in the allowlist", v.Reasons)
	}

	// A PCR extended outside the event log: replay fails.
	h = hosts[1]
	s = seq(h)
	if err := h.Tamper(ctx, agenttest.TamperPCR); err != nil {
		t.Fatal(err)
	}
	v = e.verdicts.wait(t, h.Name, s, 30*time.Second, "untrusted after an unlogged extend", status(verdict.Untrusted))
	if !hasReason(v, "evidence: replay_mismatch: ", "PCR 9") {
		t.Errorf("tampered PCR: reasons %v, want replay_mismatch on PCR 9", v.Reasons)
	}

	// Slower than the quote timeout, and silent: unreachable.
	for i, fault := range []func(*agenttest.Host){
		func(h *agenttest.Host) { h.Slow(e.cfg.Attestation.QuoteTimeout + 2*time.Second) },
		func(h *agenttest.Host) { h.Silent(true) },
	} {
		h := hosts[2+i]
		s := seq(h)
		fault(h)
		v := e.verdicts.wait(t, h.Name, s, time.Minute, "unknown while not answering", status(verdict.Unknown))
		if !hasReason(v, "unreachable: ", "") {
			t.Errorf("%s: reasons %v, want unreachable", h.Name, v.Reasons)
		}
	}
	// Slow within the timeout is fine.
	h = hosts[4]
	h.Slow(time.Second)
	e.verdicts.wait(t, h.Name, seq(h), time.Minute, "trusted while slow but in time", status(verdict.Trusted))

	// A reboot: silent for a while, a new boot, enrollment again; the
	// service sees the reset counter move and trusts the new boot.
	h = hosts[5]
	if err := h.Reboot(ctx, 2*time.Second, nil); err != nil {
		t.Fatal(err)
	}
	waitFor(t, time.Minute, h.Name+" trusted after its reboot", func() bool {
		hv := e.hostView(h.Name)
		st, _ := viewStatus(hv)
		last, _ := hv["last_attestation"].(map[string]any)
		clock, _ := last["clock"].(map[string]any)
		rc, _ := clock["reset_count"].(float64)
		return st == string(verdict.Trusted) && rc == 1
	})

	// The agent enrolls again with the same TPM: still enrolled, trusted.
	h = hosts[6]
	if st, err := h.Reregister(ctx, false); err != nil || st != attestrpc.StateEnrolled {
		t.Fatalf("re-registration with the same TPM: %q, %v", st, err)
	}
	e.verdicts.wait(t, h.Name, seq(h), time.Minute, "trusted after re-registering", status(verdict.Trusted))

	// A new TPM under the same name: the request waits for an
	// administrator (ek_changed) and the bound AK no longer answers.
	h = hosts[7]
	s = seq(h)
	if st, err := h.Reregister(ctx, true); err != nil || st != attestrpc.StatePendingApproval {
		t.Fatalf("re-registration with new keys: %q, %v; want pending_approval", st, err)
	}
	if r, _ := e.hostView(h.Name)["pending_reason"].(string); r != "ek_changed" {
		t.Errorf("pending_reason %q, want ek_changed", r)
	}
	v = e.verdicts.wait(t, h.Name, s, time.Minute, "untrusted once the bound AK no longer signs", status(verdict.Untrusted))
	if !hasReason(v, "evidence: bad_signature", "") {
		t.Errorf("new keys: reasons %v, want bad_signature", v.Reasons)
	}

	// Everyone else stayed trusted throughout.
	for _, h := range hosts[8:] {
		if v, _, _ := e.verdicts.get(h.Name); v.Status != verdict.Trusted {
			t.Errorf("untouched host %s: %s %v", h.Name, v.Status, v.Reasons)
		}
	}
	if e.verdicts.bad != 0 {
		t.Errorf("%d verdicts failed signature verification", e.verdicts.bad)
	}
	t.Logf("%d hosts, %d quotes answered", len(hosts), f.Quotes())
}
