package integration

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/trustpool/trustpool/cli/commands"
	"github.com/trustpool/trustpool/internal/attestapi"
	"github.com/trustpool/trustpool/internal/attestrpc"
	"github.com/trustpool/trustpool/internal/bootseed"
	"github.com/trustpool/trustpool/internal/oslo"
	"github.com/trustpool/trustpool/internal/tpm"
	"github.com/trustpool/trustpool/internal/verdict"
)

// notes collects the service's oslo notifications (its own queue on the
// notifications topic).
type notes struct {
	mu   sync.Mutex
	seen []*oslo.Notification
}

func newNotes(t *testing.T, url string) *notes {
	t.Helper()
	tr, err := oslo.NewTransport(oslo.Config{TransportURL: url, ControlExchange: attestrpc.DefaultControlExchange})
	if err != nil {
		t.Fatal(err)
	}
	n := &notes{}
	l := oslo.NewListener(tr, oslo.ListenerConfig{Topic: attestrpc.NotificationTopic, Queue: "test-notes"},
		func(_ context.Context, m *oslo.Notification) error {
			n.mu.Lock()
			defer n.mu.Unlock()
			n.seen = append(n.seen, m)
			return nil
		})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = l.Run(ctx); close(done) }()
	select {
	case <-l.Ready():
	case <-time.After(30 * time.Second):
		t.Fatal("notification listener not ready")
	}
	t.Cleanup(func() { cancel(); <-done; tr.Close() })
	return n
}

// payloads returns the decoded payloads of every notification of eventType.
func (n *notes) payloads(eventType string) []map[string]any {
	n.mu.Lock()
	defer n.mu.Unlock()
	var out []map[string]any
	for _, m := range n.seen {
		if m.EventType != eventType {
			continue
		}
		p := map[string]any{}
		_ = json.Unmarshal(m.Payload, &p)
		out = append(out, p)
	}
	return out
}

// cloneHost is a second compute node name on h's TPM (a copy of its event
// log, its own agent state directory, so its own AK).
func (e *env) cloneHost(h *host, name string) *host {
	t := e.t
	t.Helper()
	c := &host{name: name, sw: h.sw, dir: t.TempDir()}
	b, err := os.ReadFile(filepath.Join(h.dir, "binary_bios_measurements"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(c.dir, "binary_bios_measurements"), b, 0o600); err != nil {
		t.Fatal(err)
	}
	return c
}

// hostView is GET /v1/hosts/{host}'s host object.
func (e *env) hostView(name string) map[string]any {
	e.t.Helper()
	code, body := e.api("GET", "/v1/hosts/"+name, e.admin, nil)
	if code != http.StatusOK {
		e.t.Fatalf("GET /v1/hosts/%s = %d %v", name, code, body)
	}
	h, _ := body["host"].(map[string]any)
	return h
}

func viewStatus(h map[string]any) (status string, seq float64) {
	v, _ := h["verdict"].(map[string]any)
	s, _ := v["effective_status"].(string)
	n, _ := v["seq"].(float64)
	return s, n
}

// staysTrusted follows host's stored verdict through the API for rounds
// further attestation rounds and fails if it is ever not trusted.
func (e *env) staysTrusted(name string, rounds int) {
	e.t.Helper()
	_, start := viewStatus(e.hostView(name))
	waitFor(e.t, 60*time.Second, fmt.Sprintf("%s: %d more trusted rounds", name, rounds), func() bool {
		s, seq := viewStatus(e.hostView(name))
		if s != string(verdict.Trusted) {
			e.t.Fatalf("%s is %s after the EK request (seq %v), want it to stay trusted", name, s, seq)
		}
		return seq >= start+float64(rounds)
	})
	if v, _, _ := e.verdicts.get(name); v.Status != verdict.Trusted {
		e.t.Fatalf("%s on the fanout: %+v, want trusted", name, v)
	}
}

func ekFingerprint(t *testing.T, tp *tpm.TPM) string {
	t.Helper()
	ek, err := tp.EK(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	d := sha256.Sum256(ek.Public)
	return hex.EncodeToString(d[:])
}

// TestOneTPMOneHost: in auto enrollment one TPM (EK) is bound to one host
// name. A second agent on compute-1's swtpm under another name stays
// unknown with reason ek_bound_to_other_host and compute-1 stays trusted; a
// peer with broker credentials re-registering compute-1 with another TPM's
// EK creates a pending request (API, audit, notification) and compute-1
// stays trusted; the admin rejects it and the same EK is refused from then
// on; deleting compute-1 frees its EK for the second name.
func TestOneTPMOneHost(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test")
	}
	e := newEnv(t, 2*time.Second)
	h1 := e.newHost("compute-1", bootseed.BuildA())
	spare := e.newHost("spare", bootseed.BuildA()) // another TPM, no agent
	e.startService()
	ns := newNotes(t, e.rabbit.URL)
	ctx := t.Context()
	imp := "[[profile]]\nname = \"boot\"\n[profile.facts]\nsecure_boot = [\"enabled\"]\n"
	if code, body := e.api("POST", "/v1/profiles/import", e.admin, imp); code != http.StatusOK {
		t.Fatalf("import = %d %v", code, body)
	}
	e.startAgent(h1)
	e.verdicts.wait(t, "compute-1", 0, 60*time.Second, "trusted", status(verdict.Trusted))
	ek1 := e.hostView("compute-1")["ek_fingerprint"]

	// A second agent on the same TPM under another name.
	clone := e.cloneHost(h1, "compute-1-clone")
	e.startAgent(clone)
	cv := e.verdicts.wait(t, clone.name, 0, 60*time.Second, "a verdict", func(verdict.Verdict) bool { return true })
	if cv.Status != verdict.Unknown || len(cv.Reasons) != 1 || !strings.HasPrefix(cv.Reasons[0], "ek_bound_to_other_host:") ||
		!strings.Contains(cv.Reasons[0], "compute-1") {
		t.Fatalf("second name on compute-1's TPM: %+v, want unknown ek_bound_to_other_host naming compute-1", cv)
	}
	cview := e.hostView(clone.name)
	if cview["enrollment"] != attestrpc.StatePendingApproval || cview["pending_reason"] != "ek_bound_to_other_host" ||
		cview["pending_ek_bound_to"] != "compute-1" || cview["pending_ek_fingerprint"] != ek1 {
		t.Errorf("GET /v1/hosts/%s = %v, want a pending request for compute-1's EK", clone.name, cview)
	}
	e.staysTrusted("compute-1", 2)
	code, body := e.api("POST", "/v1/hosts/"+clone.name+"/approve", e.admin, nil)
	if code != http.StatusConflict || !strings.Contains(fmt.Sprint(body), "compute-1") || !strings.Contains(fmt.Sprint(body), "force") {
		t.Errorf("approve without force = %d %v, want 409 naming compute-1 and force", code, body)
	}
	if env, _ := body["error"].(map[string]any); env["reason"] != attestapi.ReasonEKBoundToOtherHost {
		t.Errorf("approve without force: error %v, want reason %s", env, attestapi.ReasonEKBoundToOtherHost)
	}
	// The trustpool CLI says it with its own flag, naming the holder.
	c := &cli{t: t, bin: buildCLI(t), env: []string{"OS_AUTH_URL=" + e.ks.URL, "OS_USERNAME=" + e.ks.AdminUser,
		"OS_PASSWORD=" + e.ks.AdminPassword, "OS_PROJECT_NAME=" + e.ks.AdminProject, "OS_USER_DOMAIN_NAME=Default",
		"OS_PROJECT_DOMAIN_NAME=Default", "OS_ATTESTATION_URL=" + e.svc.APIURL()}}
	c.fails(commands.ExitError, []string{"the pending EK is bound to host compute-1, which loses its binding if the EK moves here; repeat with --force to do it anyway", "(HTTP 409)", "(Request-ID: req-"},
		"host", "approve-ek", clone.name)

	// A peer with broker credentials re-registers compute-1 with the spare
	// TPM's EK, proving it holds that TPM.
	spareTPM, err := tpm.Open(spare.tpmConfig())
	if err != nil {
		t.Fatal(err)
	}
	spareEK := ekFingerprint(t, spareTPM)
	r := newRogue(t, e, "compute-1")
	register := func() (string, error) {
		t.Helper()
		res, err := r.register(ctx, spareTPM, spareTPM)
		if err != nil || res.State != attestrpc.StateChallenge {
			return res.State, err
		}
		secret, err := spareTPM.ActivateCredential(ctx, res.Credential.IDObject, res.Credential.EncryptedSecret)
		if err != nil {
			t.Fatal(err)
		}
		ar, err := r.activate(ctx, res.ChallengeID, secret)
		return ar.State, err
	}
	if st, err := register(); err != nil || st != attestrpc.StatePendingApproval {
		t.Fatalf("re-registration of compute-1 with another EK = %s, %v; want pending_approval", st, err)
	}
	e.staysTrusted("compute-1", 2)
	v := e.hostView("compute-1")
	if v["enrollment"] != attestrpc.StateEnrolled || v["ek_fingerprint"] != ek1 || v["pending_ek_fingerprint"] != spareEK ||
		v["pending_reason"] != "ek_changed" {
		t.Errorf("GET /v1/hosts/compute-1 = %v, want enrolled with a pending ek_changed request for %s", v, spareEK)
	}
	waitFor(t, 10*time.Second, "ek_change_requested notification", func() bool {
		for _, p := range ns.payloads(attestrpc.EventHostEKChangeRequested) {
			if p["host"] == "compute-1" && p["pending_ek_fingerprint"] == spareEK && p["reason"] == "ek_changed" {
				return true
			}
		}
		return false
	})
	code, body = e.api("GET", "/v1/audit", e.admin, nil)
	if code != http.StatusOK || !strings.Contains(fmt.Sprint(body), "host.ek_change_requested") || !strings.Contains(fmt.Sprint(body), spareEK) {
		t.Errorf("audit = %d %v, want the EK change request", code, body)
	}
	// Retries of the same request are not new requests.
	if st, err := register(); err != nil || st != attestrpc.StatePendingApproval {
		t.Fatalf("second re-registration = %s, %v", st, err)
	}

	// Only an admin rejects; the rejected EK is refused from then on.
	if code, body := e.api("POST", "/v1/hosts/compute-1/reject", e.member, nil); code != http.StatusForbidden {
		t.Errorf("member reject = %d %v, want 403", code, body)
	}
	if code, body := e.api("POST", "/v1/hosts/compute-1/reject", e.admin, map[string]any{"ek_fingerprint": ek1}); code != http.StatusConflict {
		t.Errorf("reject naming the wrong EK = %d %v, want 409", code, body)
	}
	if code, body := e.api("POST", "/v1/hosts/compute-1/reject", e.admin, map[string]any{"ek_fingerprint": spareEK}); code != http.StatusOK {
		t.Fatalf("reject = %d %v", code, body)
	}
	v = e.hostView("compute-1")
	if v["pending_ek_fingerprint"] != nil || v["rejected_ek_fingerprint"] != spareEK {
		t.Errorf("after reject: %v", v)
	}
	_, err = register()
	var re *oslo.RemoteError
	if !errors.As(err, &re) || !strings.Contains(re.Message, "rejected") {
		t.Errorf("registration with the rejected EK = %v, want a refusal", err)
	}
	e.staysTrusted("compute-1", 1)

	// Deleting compute-1 frees its EK: the clone's agent, still retrying,
	// enrolls and is attested.
	if code, body := e.api("DELETE", "/v1/hosts/compute-1", e.admin, nil); code != http.StatusNoContent {
		t.Fatalf("delete compute-1 = %d %v", code, body)
	}
	e.verdicts.wait(t, clone.name, cv.Seq, 60*time.Second, "trusted once compute-1's EK is free", status(verdict.Trusted))
	// Notifications arrive in order: once the clone's enrollment is in, so
	// is any repeated request (there must be none: retries of a pending
	// agent and the refused rejected EK are not new requests).
	waitFor(t, 10*time.Second, "the clone's enrolled notification", func() bool {
		for _, p := range ns.payloads(attestrpc.EventHostEnrolled) {
			if p["host"] == clone.name {
				return true
			}
		}
		return false
	})
	if n := len(ns.payloads(attestrpc.EventHostEKChangeRequested)); n != 2 {
		t.Errorf("%d ek_change_requested notifications, want 2 (the clone's and compute-1's, once each)", n)
	}
	if e.verdicts.bad != 0 {
		t.Errorf("%d verdicts failed signature verification", e.verdicts.bad)
	}
}
