// Package integration runs the demo story (scripts/demo.sh) end to end with real
// components: RabbitMQ, Keystone, one swtpm per host (seeded with a realistic
// boot), the attestation service (in-process, sqlite) and trustpool-agent;
// TestDemoScript runs the script itself.
package integration

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/trustpool/trustpool/internal/bootseed"
	"github.com/trustpool/trustpool/internal/verdict"
)

// TestDemoStory: three agents enroll (auto mode, EK certificates checked
// against the swtpm CAs); with no profile they are untrusted; a project member
// can neither see the hosts nor learn a profile (403) while the admin can,
// from the first host; all three
// become trusted; extending a PCR on one host's TPM turns it untrusted with a
// replay reason; stopping an agent makes its host unknown (unreachable); a
// service restart keeps enrollments, profiles and history and resumes
// attesting with higher sequence numbers. Every verdict is checked against
// the service's public key as a shim would.
func TestDemoStory(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test")
	}
	e := newEnv(t, 2*time.Second)
	hosts := []*host{e.newHost("compute-1", bootseed.BuildA()), e.newHost("compute-2", bootseed.BuildA()), e.newHost("compute-3", bootseed.BuildA())}
	e.startService()
	for _, h := range hosts {
		e.startAgent(h)
	}
	for _, h := range hosts {
		v := e.verdicts.wait(t, h.name, 0, 60*time.Second, "attested without profiles", status(verdict.Untrusted))
		if !slices.ContainsFunc(v.Reasons, func(r string) bool { return strings.Contains(r, "no profiles defined") }) {
			t.Errorf("%s reasons %v, want 'no profiles defined'", h.name, v.Reasons)
		}
	}

	// Hosts are operator data: a project member neither sees nor changes them.
	if code, body := e.api("GET", "/v1/hosts", e.member, nil); code != http.StatusForbidden {
		t.Fatalf("member GET /v1/hosts = %d %v, want 403", code, body)
	}
	if code, body := e.api("GET", "/v1/hosts", e.admin, nil); code != http.StatusOK || len(body["hosts"].([]any)) != 3 {
		t.Fatalf("admin GET /v1/hosts = %d %v", code, body)
	}
	learn := map[string]any{"host": "compute-1", "name": "golden"}
	code, body := e.api("POST", "/v1/profiles/learn", e.member, learn)
	if code != http.StatusForbidden {
		t.Fatalf("member learn = %d %v, want 403", code, body)
	}
	if errBody, ok := body["error"].(map[string]any); !ok || !strings.HasPrefix(fmt.Sprint(errBody["request_id"]), "req-") {
		t.Errorf("403 body %v lacks the error envelope with a request id", body)
	}
	if code, body := e.api("GET", "/v1/hosts", "", nil); code != http.StatusUnauthorized {
		t.Errorf("anonymous GET /v1/hosts = %d %v, want 401", code, body)
	}
	code, body = e.api("POST", "/v1/profiles/learn", e.admin, learn)
	if code != http.StatusCreated {
		t.Fatalf("admin learn = %d %v", code, body)
	}
	// Learn pins the PCRs the kernel and command line facts are read from,
	// and says so.
	if added := fmt.Sprint(body["added_pcrs"]); added != "[8 9]" || fmt.Sprint(body["fact_pcrs"].(map[string]any)["9"]) != "[kernel initrd]" {
		t.Errorf("learn answer: added_pcrs %s, fact_pcrs %v", added, body["fact_pcrs"])
	}
	for _, h := range hosts {
		v := e.verdicts.wait(t, h.name, 0, 30*time.Second, "trusted", status(verdict.Trusted))
		if !slices.Equal(v.Profiles, []string{"golden"}) || !v.ExpiresAt.After(v.VerifiedAt) {
			t.Errorf("%s trusted verdict %+v", h.name, v)
		}
	}
	t.Log("all three hosts trusted under profile golden")

	// Extend PCR 7 on compute-2: the event log no longer replays.
	before, _, _ := e.verdicts.get("compute-2")
	d := sha256.Sum256([]byte("evil bootkit"))
	hosts[1].sw.Tool(t, "tpm2_pcrextend", "7:sha256="+hex.EncodeToString(d[:]))
	v := e.verdicts.wait(t, "compute-2", before.Seq, 30*time.Second, "untrusted after PCR extend", status(verdict.Untrusted))
	if !slices.ContainsFunc(v.Reasons, func(r string) bool { return strings.Contains(r, "replay") }) {
		t.Errorf("compute-2 untrusted for %v, want a replay reason", v.Reasons)
	}
	code, body = e.api("GET", "/v1/hosts/compute-2", e.admin, nil)
	if code != http.StatusOK || !strings.Contains(fmt.Sprint(body), "replay") {
		t.Errorf("GET /v1/hosts/compute-2 = %d %v, want the replay reason", code, body)
	}

	// Stop compute-3's agent: unreachable → unknown.
	before, _, _ = e.verdicts.get("compute-3")
	hosts[2].stop()
	v = e.verdicts.wait(t, "compute-3", before.Seq, 30*time.Second, "unknown after agent stop", status(verdict.Unknown))
	if !strings.HasPrefix(v.Reasons[0], "unreachable") {
		t.Errorf("compute-3 unknown for %v, want unreachable", v.Reasons)
	}
	if e.verdicts.bad != 0 {
		t.Errorf("%d verdicts failed signature verification", e.verdicts.bad)
	}

	// Restart the service: state survives, attestation resumes.
	c1, _, _ := e.verdicts.get("compute-1")
	e.stopSvc()
	e.startService()
	code, body = e.api("GET", "/v1/hosts", e.admin, nil)
	if code != http.StatusOK || len(body["hosts"].([]any)) != 3 {
		t.Fatalf("after restart GET /v1/hosts = %d %v", code, body)
	}
	if code, body := e.api("GET", "/v1/profiles/golden", e.admin, nil); code != http.StatusOK {
		t.Errorf("profile lost across restart: %d %v", code, body)
	}
	code, body = e.api("GET", "/v1/hosts/compute-2/history", e.admin, nil)
	if code != http.StatusOK || len(body["history"].([]any)) < 3 {
		t.Errorf("history of compute-2 after restart = %d %v, want ≥ 3 changes", code, body)
	}
	// The restarted service re-attests (heartbeat or new round) with a higher seq.
	e.verdicts.wait(t, "compute-1", c1.Seq, 30*time.Second, "trusted after restart", status(verdict.Trusted))
	code, body = e.api("GET", "/v1/audit", e.admin, nil)
	if code != http.StatusOK || !strings.Contains(fmt.Sprint(body), "denied") || !strings.Contains(fmt.Sprint(body), "profile.learn") {
		t.Errorf("audit = %d %v, want the denied and the successful learn", code, body)
	}
	if code, body := e.api("GET", "/metrics", "", nil); code != http.StatusOK || !strings.Contains(fmt.Sprint(body), "trustpool_attestation_rounds_total") {
		t.Errorf("/metrics = %d", code)
	}
}

// TestDemoScript runs `make demo` (scripts/demo.sh, DEMO_WAIT=0) and checks
// that each act printed what it shows, in order, so that a step that
// silently does nothing fails here: besides the script's own checks (it
// exits non-zero when a host does not reach its state, a refusal is not
// refused, or the re-delivered secret is missing), the operator's rollout
// (build-b imported from an event log as candidate version 2, its diff,
// a canary on compute-1, approval, the refused retirement naming --force,
// the version list), the re-delivery the user asks for (redelivered, the
// secret back, a history ending redelivered (asked by user), a valid
// redelivered receipt) and the one compute-1's agent asks for when the
// instance starts again (its log line, the service's accepted
// redelivery_wanted count, a history ending redelivered (asked by agent),
// a valid receipt).
func TestDemoScript(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test")
	}
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	// A file, not a pipe: the broker's epmd outlives the script and would
	// keep a pipe open.
	outPath := filepath.Join(t.TempDir(), "demo.out")
	out, err := os.Create(outPath)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 8*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(root, "scripts", "demo.sh"))
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "DEMO_WAIT=0", "KEEP_DEMO_DIR=")
	cmd.Stdout, cmd.Stderr = out, out
	// SIGTERM lets the script stop everything it started.
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 30 * time.Second
	runErr := cmd.Run()
	b, err := os.ReadFile(outPath)
	if err != nil {
		t.Fatal(err)
	}
	if runErr != nil {
		t.Fatalf("scripts/demo.sh: %v; output:\n%s", runErr, b)
	}
	// Table cells are padded: compare with runs of blanks as one space.
	got := strings.Join(strings.Fields(string(b)), " ")
	at := 0
	for _, want := range []string{
		"compute-2 untrusted",
		"compute-3 unknown (unreachable)",
		"(exit status 3)",
		"| state | delivered |",
		"proof matches: the instance holds the secret",
		"| state | refused |",
		// The operator's rollout.
		"$ trustpool profile version import build-a --eventlog build-b.log",
		"| version | 2 | | state | candidate | | source | learned from event log sha256:",
		"$ trustpool profile version diff build-a 1 2",
		"| kernel vmlinuz-6.1.0-13-amd64 → vmlinuz-6.1.0-17-amd64 |",
		"| kernel digest changed |",
		"| cmdline unchanged apart from the kernel's path |",
		"| initrd digest changed |",
		"| PCRs 8 and 9 differ |",
		"| state | canary | | hosts | compute-1 |",
		"| version | 2 | | state | approved |",
		"$ trustpool profile version set-state build-a 1 retired",
		`trustpool: profile "build-a" version 1 is what host "compute-1" matched: making it retired turns them untrusted; repeat with --force to do it anyway (HTTP 409)`,
		"(exit status 1: refused)",
		"| 1 | approved |", "| 2 | approved |",
		"| status | trusted | | profile_versions | {\"build-a\":1} |",
		// The re-delivery.
		"its launch-secret is gone",
		"| redelivery | redelivered | | state | redelivered |",
		"the secret is back:",
		"launch-secret",
		"Z delivered | |", // history: …delivered, then redelivered last
		"Z redelivered (asked by user) | +",
		"| signature | valid | | state | redelivered | | profile | build-a |",
		// The re-delivery the agent asks for: nobody runs launch redeliver.
		"==> re-delivery asked for by the agent: the instance on compute-1 stops and starts again",
		"the secret is back",
		`msg="instance of a kept launch blob started; asking the attestation service for re-delivery" host=compute-1`,
		`trustpool_launch_redelivery_wanted_total{outcome="accepted"} 1`,
		"Z redelivered (asked by user) | | |",
		"Z redelivered (asked by agent) | +",
		"| signature | valid | | state | redelivered | | profile | build-a |",
		"==> done: compute-1 trusted, compute-2 untrusted",
	} {
		i := strings.Index(got[at:], want)
		if i < 0 {
			t.Fatalf("the demo's output lacks %q after what came before; output:\n%s", want, b)
		}
		at += i + len(want)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "trustpool: ") && (strings.Contains(line, "force=true") || strings.Contains(line, `"force"`)) {
			t.Errorf("the CLI speaks the API's force parameter: %q", line)
		}
	}
}
