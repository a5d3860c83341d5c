package engine_test

import (
	"errors"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/trustpool/trustpool/attestation-service/internal/engine"
	"github.com/trustpool/trustpool/attestation-service/internal/store"
	"github.com/trustpool/trustpool/internal/attestrpc"
	"github.com/trustpool/trustpool/internal/tpm"
	"github.com/trustpool/trustpool/internal/verdict"
)

// enrollFixture is an engine on the simulator with a trusting profile, and
// TPM handles: tpA and tpB share the simulator's RSA EK (two agents on one
// TPM, each with its own AK), tpECC is "another TPM" (the ECC EK).
type enrollFixture struct {
	eng            *engine.Engine
	st             *store.Store
	pub            *recPublisher
	agent          *simAgent
	tpA, tpB, tpEC *tpm.TPM
}

func newEnrollFixture(t *testing.T, mode string) *enrollFixture {
	t.Helper()
	dir := t.TempDir()
	sim, logPath := seededSim(t, dir)
	open := func(state, alg string) *tpm.TPM {
		tp, err := tpm.New(sim.Opener(), tpm.Config{StateDir: filepath.Join(dir, state), EventLogPath: logPath, EKAlgorithm: alg})
		if err != nil {
			t.Fatal(err)
		}
		return tp
	}
	f := &enrollFixture{tpA: open("a", tpm.AlgRSA), tpB: open("b", tpm.AlgRSA), tpEC: open("ecc", tpm.AlgECC)}
	f.agent = &simAgent{tp: f.tpA}
	f.eng, f.st, f.pub = newTestEngine(t, dir, engine.Config{Issuer: "test", Interval: 10 * time.Second, Validity: 30 * time.Second,
		QuoteTimeout: 5 * time.Second, PCRs: []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}, EnrollmentMode: mode, Agents: f.agent})
	body := "[[profile]]\nname = \"sb\"\n[profile.facts]\nsecure_boot = [\"enabled\"]\n"
	if err := f.st.PutProfile(t.Context(), store.Profile{Name: "sb", Body: body}, store.Create); err != nil {
		t.Fatal(err)
	}
	return f
}

// challenge registers host with tp's EK and AK and answers the challenge
// in tp; it returns the activate_credential arguments.
func challenge(t *testing.T, eng *engine.Engine, tp *tpm.TPM, host string) *attestrpc.ActivateCredentialArgs {
	t.Helper()
	ctx := t.Context()
	ek, err := tp.EK(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ak, err := tp.AK(ctx)
	if err != nil {
		t.Fatal(err)
	}
	res, err := eng.RegisterHost(ctx, &attestrpc.RegisterHostArgs{Host: host, EKPublic: ek.Public, AKPublic: ak.Public, AgentVersion: "test"})
	if err != nil {
		t.Fatalf("register_host %s: %v", host, err)
	}
	if res.State != attestrpc.StateChallenge {
		t.Fatalf("register_host %s = %+v, want a challenge (possession is proven before anything is recorded)", host, res)
	}
	secret, err := tp.ActivateCredential(ctx, res.Credential.IDObject, res.Credential.EncryptedSecret)
	if err != nil {
		t.Fatal(err)
	}
	return &attestrpc.ActivateCredentialArgs{Host: host, ChallengeID: res.ChallengeID, Secret: secret}
}

// enrollAs runs the agent's enrollment for host with tp (register_host,
// then activation when challenged) and returns the final state and reason.
func enrollAs(t *testing.T, eng *engine.Engine, tp *tpm.TPM, host string) (state, reason string) {
	t.Helper()
	ctx := t.Context()
	ek, err := tp.EK(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ak, err := tp.AK(ctx)
	if err != nil {
		t.Fatal(err)
	}
	res, err := eng.RegisterHost(ctx, &attestrpc.RegisterHostArgs{Host: host, EKPublic: ek.Public, AKPublic: ak.Public, AgentVersion: "test"})
	if err != nil {
		t.Fatalf("register_host %s: %v", host, err)
	}
	if res.State != attestrpc.StateChallenge {
		return res.State, res.Reason
	}
	secret, err := tp.ActivateCredential(ctx, res.Credential.IDObject, res.Credential.EncryptedSecret)
	if err != nil {
		t.Fatal(err)
	}
	ar, err := eng.ActivateCredential(ctx, &attestrpc.ActivateCredentialArgs{Host: host, ChallengeID: res.ChallengeID, Secret: secret})
	if err != nil {
		t.Fatalf("activate_credential %s: %v", host, err)
	}
	return ar.State, ar.Reason
}

// storedVerdict is host's latest stored verdict.
func storedVerdict(t *testing.T, st *store.Store, host string) verdict.Verdict {
	t.Helper()
	rec, err := st.GetHost(t.Context(), host)
	if err != nil {
		t.Fatal(err)
	}
	if len(rec.Verdict) == 0 {
		t.Fatalf("%s has no verdict", host)
	}
	s, err := verdict.ParseSigned(rec.Verdict)
	if err != nil {
		t.Fatal(err)
	}
	v, err := verdict.Unmarshal([]byte(s.Verdict))
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func mustTrust(t *testing.T, eng *engine.Engine, host string) verdict.Verdict {
	t.Helper()
	v, err := eng.Attest(t.Context(), host)
	if err != nil || v.Status != verdict.Trusted {
		t.Fatalf("Attest(%s) = %+v, %v; want trusted", host, v, err)
	}
	return v
}

func hasReason(v verdict.Verdict, code string) bool {
	for _, r := range v.Reasons {
		if strings.HasPrefix(r, code+":") {
			return true
		}
	}
	return false
}

// TestEKBoundToOneHostName: in auto mode a second host name presenting an
// EK that is bound to another host (here a second agent on the same TPM,
// with its own AK) is not enrolled: it waits for approval, its verdict is
// unknown with reason ek_bound_to_other_host, and the first host keeps its
// trusted verdict.
func TestEKBoundToOneHostName(t *testing.T) {
	f := newEnrollFixture(t, engine.ModeAuto)
	ctx := t.Context()
	if s, _ := enrollAs(t, f.eng, f.tpA, "c1"); s != attestrpc.StateEnrolled {
		t.Fatalf("c1 enrollment: %s", s)
	}
	mustTrust(t, f.eng, "c1")

	state, reason := enrollAs(t, f.eng, f.tpB, "c2")
	if state != attestrpc.StatePendingApproval || !strings.HasPrefix(reason, "ek_bound_to_other_host") {
		t.Fatalf("second host name with c1's EK: %s %q, want pending_approval ek_bound_to_other_host", state, reason)
	}
	v := storedVerdict(t, f.st, "c2")
	if v.Status != verdict.Unknown || !hasReason(v, "ek_bound_to_other_host") || !strings.Contains(v.Reasons[0], "c1") {
		t.Errorf("c2 verdict %+v, want unknown ek_bound_to_other_host naming c1", v)
	}
	if _, err := f.eng.Attest(ctx, "c2"); !errors.Is(err, engine.ErrNotEnrolled) {
		t.Errorf("Attest(c2) = %v, want ErrNotEnrolled", err)
	}
	if hs, _ := f.eng.EnrolledHosts(ctx); len(hs) != 1 || hs[0] != "c1" {
		t.Errorf("EnrolledHosts = %v, want [c1]", hs)
	}
	ek, err := f.tpA.EK(ctx)
	if err != nil {
		t.Fatal(err)
	}
	fp := store.EKFingerprint(ek.Public)
	hv, err := f.eng.HostView(ctx, "c2")
	if err != nil || hv.Enrollment != attestrpc.StatePendingApproval || hv.PendingReason != engine.ReasonEKBoundToOtherHost ||
		hv.PendingEKBoundTo != "c1" || hv.PendingEKFingerprint != fp || hv.EKFingerprint != "" {
		t.Errorf("HostView(c2) = %+v, %v", hv, err)
	}
	if hvs, err := f.eng.HostViews(ctx); err != nil || len(hvs) != 2 || hvs[1].PendingEKBoundTo != "c1" || hvs[0].PendingReason != "" {
		t.Errorf("HostViews = %+v, %v", hvs, err)
	}
	notes := f.pub.ekRequests()
	if len(notes) != 1 || notes[0]["host"] != "c2" || notes[0]["reason"] != engine.ReasonEKBoundToOtherHost ||
		notes[0]["bound_to"] != "c1" || notes[0]["pending_ek_fingerprint"] != fp {
		t.Errorf("ek_change_requested notifications %v", notes)
	}
	// A third name, and c2 again: still refused; c1 unaffected; c2's
	// repeated request is not a new one.
	if s, _ := enrollAs(t, f.eng, f.tpA, "c3"); s != attestrpc.StatePendingApproval {
		t.Errorf("third host name: %s", s)
	}
	if s, _ := enrollAs(t, f.eng, f.tpB, "c2"); s != attestrpc.StatePendingApproval {
		t.Errorf("c2 again: %s", s)
	}
	if n := len(f.pub.ekRequests()); n != 2 {
		t.Errorf("%d ek_change_requested notifications, want 2 (c2 and c3, once each)", n)
	}
	mustTrust(t, f.eng, "c1")

	// Approving c2's request needs force: the EK is c1's.
	_, err = f.eng.ApproveEK(ctx, "c2", engine.Approval{Fingerprint: fp})
	var inUse *store.EKInUseError
	if !errors.As(err, &inUse) || inUse.Host != "c1" {
		t.Errorf("ApproveEK(c2) without force = %v, want EKInUseError naming c1", err)
	}
	mustTrust(t, f.eng, "c1")

	// Deleting c1 frees the EK: c2's next registration binds it.
	if err := f.eng.DeleteHost(ctx, "c1"); err != nil {
		t.Fatal(err)
	}
	if s, _ := enrollAs(t, f.eng, f.tpB, "c2"); s != attestrpc.StateEnrolled {
		t.Fatalf("c2 after c1's deletion: %s", s)
	}
	if hv, _ := f.eng.HostView(ctx, "c2"); hv.PendingEKFingerprint != "" || hv.EKFingerprint != fp {
		t.Errorf("c2 bound: %+v, want its request gone", hv)
	}
	f.agent.tp = f.tpB
	c2 := mustTrust(t, f.eng, "c2")

	// c1's agent comes back: now c1 is the second name.
	if s, reason := enrollAs(t, f.eng, f.tpA, "c1"); s != attestrpc.StatePendingApproval || !strings.HasPrefix(reason, engine.ReasonEKBoundToOtherHost) {
		t.Fatalf("c1 after re-registration: %s %q", s, reason)
	}
	// With force the EK moves back to c1: c2 loses its binding at once.
	res, err := f.eng.ApproveEK(ctx, "c1", engine.Approval{Fingerprint: fp, Force: true})
	if err != nil || res.MovedFrom != "c2" || res.Fingerprint != fp {
		t.Fatalf("ApproveEK(c1, force) = %+v, %v", res, err)
	}
	v = storedVerdict(t, f.st, "c2")
	if v.Status != verdict.Unknown || !hasReason(v, engine.ReasonEKMoved) || v.Seq <= c2.Seq {
		t.Errorf("c2 after the move %+v, want unknown %s", v, engine.ReasonEKMoved)
	}
	if _, err := f.eng.Attest(ctx, "c2"); !errors.Is(err, engine.ErrNotEnrolled) {
		t.Errorf("Attest(c2) after the move = %v, want ErrNotEnrolled", err)
	}
	f.agent.tp = f.tpA
	if s, _ := enrollAs(t, f.eng, f.tpA, "c1"); s != attestrpc.StateEnrolled {
		t.Fatalf("c1 after approval: %s", s)
	}
	mustTrust(t, f.eng, "c1")
	if s, _ := enrollAs(t, f.eng, f.tpB, "c2"); s != attestrpc.StatePendingApproval {
		t.Errorf("c2 after the move: %s, want pending_approval", s)
	}
}

// TestApproveModeEKBoundElsewhere: in approve mode too, a second name for
// a bound EK says why and needs force.
func TestApproveModeEKBoundElsewhere(t *testing.T) {
	f := newEnrollFixture(t, engine.ModeApprove)
	ctx := t.Context()
	if s, _ := enrollAs(t, f.eng, f.tpA, "c1"); s != attestrpc.StatePendingApproval {
		t.Fatalf("c1 first registration: %s", s)
	}
	if _, err := f.eng.ApproveEK(ctx, "c1", engine.Approval{}); err != nil {
		t.Fatal(err)
	}
	if s, _ := enrollAs(t, f.eng, f.tpA, "c1"); s != attestrpc.StateEnrolled {
		t.Fatalf("c1 after approval: %s", s)
	}
	if s, reason := enrollAs(t, f.eng, f.tpB, "c2"); s != attestrpc.StatePendingApproval || !strings.HasPrefix(reason, engine.ReasonEKBoundToOtherHost) {
		t.Errorf("c2: %s %q", s, reason)
	}
	if v := storedVerdict(t, f.st, "c2"); !hasReason(v, engine.ReasonEKBoundToOtherHost) {
		t.Errorf("c2 verdict %+v", v)
	}
	var inUse *store.EKInUseError
	if _, err := f.eng.ApproveEK(ctx, "c2", engine.Approval{}); !errors.As(err, &inUse) {
		t.Errorf("ApproveEK(c2) = %v, want EKInUseError", err)
	}
}

// TestEKChangeKeepsVerdict: a known host re-registering with a different EK
// (proven in that TPM) does not lose its binding or verdict while its bound
// AK answers: the new EK waits for approval.
func TestEKChangeKeepsVerdict(t *testing.T) {
	f := newEnrollFixture(t, engine.ModeAuto)
	ctx := t.Context()
	if s, _ := enrollAs(t, f.eng, f.tpA, "c1"); s != attestrpc.StateEnrolled {
		t.Fatalf("c1 enrollment: %s", s)
	}
	before := mustTrust(t, f.eng, "c1")
	n := len(f.pub.verdicts)

	state, reason := enrollAs(t, f.eng, f.tpEC, "c1")
	if state != attestrpc.StatePendingApproval || !strings.HasPrefix(reason, "ek_changed") {
		t.Errorf("re-registration with another EK: %s %q, want pending_approval ek_changed", state, reason)
	}
	if len(f.pub.verdicts) != n {
		t.Errorf("EK change request published %v", f.pub.verdicts[n:])
	}
	if v := storedVerdict(t, f.st, "c1"); v.Seq != before.Seq || v.Status != verdict.Trusted {
		t.Errorf("stored verdict after the request %+v, want seq %d trusted", v, before.Seq)
	}
	// The bound AK still answers: still attested, still trusted.
	mustTrust(t, f.eng, "c1")
	if hs, _ := f.eng.EnrolledHosts(ctx); len(hs) != 1 {
		t.Errorf("EnrolledHosts = %v, want [c1]", hs)
	}
	ecc, err := f.tpEC.EK(ctx)
	if err != nil {
		t.Fatal(err)
	}
	fp := store.EKFingerprint(ecc.Public)
	hv, err := f.eng.HostView(ctx, "c1")
	if err != nil || hv.Enrollment != attestrpc.StateEnrolled || hv.PendingReason != engine.ReasonEKChanged ||
		hv.PendingEKFingerprint != fp || hv.PendingSince == nil || hv.Verdict == nil || hv.Verdict.Status != verdict.Trusted {
		t.Errorf("HostView(c1) = %+v, %v", hv, err)
	}
	notes := f.pub.ekRequests()
	if len(notes) != 1 || notes[0]["host"] != "c1" || notes[0]["reason"] != engine.ReasonEKChanged || notes[0]["pending_ek_fingerprint"] != fp ||
		notes[0]["ek_fingerprint"] != hv.EKFingerprint {
		t.Errorf("ek_change_requested notifications %v", notes)
	}
	audit, err := f.st.Audit(ctx, 10)
	if err != nil || len(audit) != 1 || audit[0].Action != "host.ek_change_requested" || audit[0].Target != "c1" ||
		!strings.Contains(audit[0].Detail, fp) || !strings.Contains(audit[0].Detail, "reason="+engine.ReasonEKChanged) {
		t.Errorf("audit %+v, %v", audit, err)
	}
	// The same request again is not a new one.
	enrollAs(t, f.eng, f.tpEC, "c1")
	if n := len(f.pub.ekRequests()); n != 1 {
		t.Errorf("%d notifications after a repeated request, want 1", n)
	}
	// The genuine agent restarting (same EK) re-activates without a fuss.
	if s, _ := enrollAs(t, f.eng, f.tpA, "c1"); s != attestrpc.StateEnrolled {
		t.Errorf("re-registration with the bound EK: %s", s)
	}
	mustTrust(t, f.eng, "c1")
	// An administrator rejects the request: the binding and verdict stay,
	// and the rejected EK is refused from then on, also on a challenge
	// issued before the rejection.
	inFlight := challenge(t, f.eng, f.tpEC, "c1")
	if _, err := f.eng.RejectEK(ctx, "c1", store.EKFingerprint([]byte("other"))); !errors.Is(err, engine.ErrPendingMismatch) {
		t.Errorf("RejectEK naming another EK = %v, want ErrPendingMismatch", err)
	}
	if got, err := f.eng.RejectEK(ctx, "c1", fp); err != nil || got != fp {
		t.Fatalf("RejectEK = %q, %v", got, err)
	}
	if _, err := f.eng.RejectEK(ctx, "c1", ""); !errors.Is(err, engine.ErrNothingPending) {
		t.Errorf("second RejectEK = %v, want ErrNothingPending", err)
	}
	if hv, _ := f.eng.HostView(ctx, "c1"); hv.PendingEKFingerprint != "" || hv.RejectedEKFingerprint != fp || hv.Verdict.Status != verdict.Trusted {
		t.Errorf("HostView after reject = %+v", hv)
	}
	if _, err := f.eng.ActivateCredential(ctx, inFlight); !errors.Is(err, engine.ErrEnrollment) {
		t.Errorf("activation of a challenge for the rejected EK = %v, want ErrEnrollment", err)
	}
	ak, _ := f.tpEC.AK(ctx)
	if _, err := f.eng.RegisterHost(ctx, &attestrpc.RegisterHostArgs{Host: "c1", EKPublic: ecc.Public, AKPublic: ak.Public}); !errors.Is(err, engine.ErrEnrollment) {
		t.Errorf("registration with the rejected EK = %v, want ErrEnrollment", err)
	}
	if hv, _ := f.eng.HostView(ctx, "c1"); hv.PendingEKFingerprint != "" {
		t.Errorf("rejected EK pending again: %+v", hv)
	}
	mustTrust(t, f.eng, "c1")
	// The bound AK stops answering: the host is not trusted, pending or not.
	f.agent.tp = f.tpEC
	if v, err := f.eng.Attest(ctx, "c1"); err != nil || v.Status == verdict.Trusted {
		t.Errorf("Attest with quotes from another TPM = %+v, %v; want not trusted", v, err)
	}
}

// TestRejectUnboundHost: rejecting a host without a binding makes its
// reason say so.
func TestRejectUnboundHost(t *testing.T) {
	f := newEnrollFixture(t, engine.ModeAuto)
	ctx := t.Context()
	enrollAs(t, f.eng, f.tpA, "c1")
	if s, _ := enrollAs(t, f.eng, f.tpB, "c2"); s != attestrpc.StatePendingApproval {
		t.Fatalf("c2: %s", s)
	}
	if _, err := f.eng.RejectEK(ctx, "c2", ""); err != nil {
		t.Fatal(err)
	}
	if v := storedVerdict(t, f.st, "c2"); v.Status != verdict.Unknown || !hasReason(v, engine.ReasonEKRejected) {
		t.Errorf("c2 after reject %+v", v)
	}
	// Deleting the host forgets the rejection.
	if err := f.eng.DeleteHost(ctx, "c2"); err != nil {
		t.Fatal(err)
	}
	if s, reason := enrollAs(t, f.eng, f.tpB, "c2"); s != attestrpc.StatePendingApproval || !strings.HasPrefix(reason, engine.ReasonEKBoundToOtherHost) {
		t.Errorf("c2 after deletion: %s %q", s, reason)
	}
}

// TestConcurrentActivationsBindOnce: several host names activating the same
// EK at once: exactly one is bound.
func TestConcurrentActivationsBindOnce(t *testing.T) {
	f := newEnrollFixture(t, engine.ModeAuto)
	names := []string{"h0", "h1", "h2", "h3", "h4", "h5"}
	args := map[string]*attestrpc.ActivateCredentialArgs{}
	for _, n := range names {
		args[n] = challenge(t, f.eng, f.tpA, n)
	}
	var (
		wg     sync.WaitGroup
		mu     sync.Mutex
		states = map[string]int{}
	)
	for _, n := range names {
		wg.Go(func() {
			ar, err := f.eng.ActivateCredential(t.Context(), args[n])
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				t.Errorf("activate %s: %v", n, err)
				return
			}
			states[ar.State]++
		})
	}
	wg.Wait()
	if states[attestrpc.StateEnrolled] != 1 || states[attestrpc.StatePendingApproval] != len(names)-1 {
		t.Errorf("states %v, want one enrolled, the rest pending_approval", states)
	}
	hs, err := f.eng.EnrolledHosts(t.Context())
	if err != nil || len(hs) != 1 {
		t.Errorf("EnrolledHosts = %v, %v; want exactly one", hs, err)
	}
}
