package engine_test

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/trustpool/trustpool/attestation-service/internal/engine"
	"github.com/trustpool/trustpool/attestation-service/internal/store"
	"github.com/trustpool/trustpool/internal/attestrpc"
	"github.com/trustpool/trustpool/internal/bootseed"
	"github.com/trustpool/trustpool/internal/tpm"
	"github.com/trustpool/trustpool/internal/tpm/tpmtest"
	"github.com/trustpool/trustpool/internal/verdict"
)

// simAgent answers quotes from a tpm.TPM over the simulator, or fails.
type simAgent struct {
	mu   sync.Mutex
	tp   *tpm.TPM
	fail error
	ima  bool // send the IMA log from the requested offset
}

func (a *simAgent) Quote(ctx context.Context, host string, args *attestrpc.QuoteArgs) (*attestrpc.QuoteResult, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.fail != nil {
		return nil, a.fail
	}
	q, err := a.tp.Quote(ctx, args.Nonce, args.PCRSelection)
	if err != nil {
		return nil, err
	}
	log, err := a.tp.EventLog()
	if err != nil {
		return nil, err
	}
	res := &attestrpc.QuoteResult{Attest: q.Attest, Signature: q.Signature, PCRs: q.PCRs, EventLog: log}
	if a.ima && slices.Contains(args.PCRSelection, 10) {
		data, hashSize, _, err := a.tp.IMALog(args.LogOffsets.IMA)
		if err != nil {
			return nil, err
		}
		res.IMALog, res.IMAOffset, res.IMAHashSize = data, args.LogOffsets.IMA, hashSize
	}
	return res, nil
}

type recPublisher struct {
	mu       sync.Mutex
	verdicts []verdict.Verdict
	events   []string
	payloads []any
	vf       *verdict.Verifier
}

func (p *recPublisher) PublishVerdicts(_ context.Context, vs []verdict.Signed) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, s := range vs {
		v, err := p.vf.Verify(s)
		if err != nil {
			return err
		}
		p.verdicts = append(p.verdicts, v)
	}
	return nil
}

func (p *recPublisher) Notify(_ context.Context, ev string, payload any) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.events = append(p.events, ev)
	p.payloads = append(p.payloads, payload)
	return nil
}

// ekRequests returns the payloads of the ek_change_requested
// notifications.
func (p *recPublisher) ekRequests() []map[string]any {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []map[string]any
	for i, e := range p.events {
		if e == attestrpc.EventHostEKChangeRequested {
			m, _ := p.payloads[i].(map[string]any)
			out = append(out, m)
		}
	}
	return out
}

// seededSim is a simulator booted with bootseed's build-a; the event log
// is written to dir.
func seededSim(t *testing.T, dir string) (sim *tpmtest.Sim, logPath string) {
	t.Helper()
	sim = tpmtest.Simulator(t)
	logPath = filepath.Join(dir, "binary_bios_measurements")
	c, err := sim.Opener()(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	log, err := bootseed.Seed(t.Context(), c, bootseed.BuildA())
	c.Close()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(logPath, log, 0o600); err != nil {
		t.Fatal(err)
	}
	return sim, logPath
}

// newTestEngine opens a sqlite store in dir and an engine on it with a
// fresh signing key; cfg supplies everything else.
func newTestEngine(t *testing.T, dir string, cfg engine.Config) (*engine.Engine, *store.Store, *recPublisher) {
	t.Helper()
	st, err := store.Open(t.Context(), "sqlite:///"+filepath.Join(dir, "a.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	_, priv, _ := ed25519.GenerateKey(nil)
	cfg.Signer = verdict.NewSigner(priv)
	cfg.Store = st
	pub := &recPublisher{vf: verdict.NewVerifier(cfg.Signer.Public())}
	cfg.Publisher = pub
	return engine.New(cfg), st, pub
}

// enroll enrolls host "c1" with tp (enrollAs) and returns the final state.
func enroll(t *testing.T, eng *engine.Engine, tp *tpm.TPM) string {
	t.Helper()
	s, _ := enrollAs(t, eng, tp, "c1")
	return s
}

func TestEnrollAttestAndEKChange(t *testing.T) {
	ctx := t.Context()
	dir := t.TempDir()
	sim, logPath := seededSim(t, dir)
	open := func(ekAlg string) *tpm.TPM {
		tp, err := tpm.New(sim.Opener(), tpm.Config{StateDir: filepath.Join(dir, "state-"+ekAlg), EventLogPath: logPath, EKAlgorithm: ekAlg})
		if err != nil {
			t.Fatal(err)
		}
		return tp
	}
	tpRSA, tpECC := open(tpm.AlgRSA), open(tpm.AlgECC)

	ag := &simAgent{tp: tpRSA}
	var triggered []string
	eng, st, pub := newTestEngine(t, dir, engine.Config{Issuer: "test", Interval: 10 * time.Second, Validity: 30 * time.Second, QuoteTimeout: 5 * time.Second,
		PCRs: []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}, EnrollmentMode: engine.ModeAuto,
		Agents: ag, Trigger: func(h string) { triggered = append(triggered, h) }})
	if s := enroll(t, eng, tpRSA); s != attestrpc.StateEnrolled {
		t.Fatalf("enrollment state %s", s)
	}
	if !slices.Equal(triggered, []string{"c1"}) {
		t.Errorf("enrollment triggered %v, want an immediate round for c1", triggered)
	}

	// No profile: verified but untrusted.
	v, err := eng.Attest(ctx, "c1")
	if err != nil || v.Status != verdict.Untrusted || !strings.Contains(v.Reasons[0], "no profiles defined") {
		t.Fatalf("Attest without profiles = %+v, %v", v, err)
	}
	// A profile pinning the secure boot state: trusted.
	body := "[[profile]]\nname = \"sb\"\n[profile.facts]\nsecure_boot = [\"enabled\"]\n"
	if err := st.PutProfile(ctx, store.Profile{Name: "sb", Body: body}, store.Create); err != nil {
		t.Fatal(err)
	}
	v2, err := eng.Attest(ctx, "c1")
	if err != nil || v2.Status != verdict.Trusted || !slices.Equal(v2.Profiles, []string{"sb"}) || v2.Seq <= v.Seq {
		t.Fatalf("Attest with profile = %+v, %v", v2, err)
	}
	if got := v2.ExpiresAt.Sub(v2.VerifiedAt); got != 30*time.Second {
		t.Errorf("validity %v, want 30s", got)
	}
	// Unchanged: a new seq but nothing published.
	n := len(pub.verdicts)
	v3, err := eng.Attest(ctx, "c1")
	if err != nil || v3.Status != verdict.Trusted || v3.Seq <= v2.Seq || len(pub.verdicts) != n {
		t.Errorf("steady-state Attest = %+v, %v; published %d→%d", v3, err, n, len(pub.verdicts))
	}
	// Heartbeat republishes the stored verdict unchanged (no extension).
	if err := eng.Heartbeat(ctx); err != nil {
		t.Fatal(err)
	}
	if hb := pub.verdicts[len(pub.verdicts)-1]; hb.Seq != v3.Seq || !hb.ExpiresAt.Equal(v3.ExpiresAt.Truncate(time.Microsecond)) {
		t.Errorf("heartbeat verdict %+v, want seq %d unchanged", hb, v3.Seq)
	}
	// Unreachable agent: unknown, expired at once.
	ag.fail = errors.New("messaging timeout")
	v4, err := eng.Attest(ctx, "c1")
	if err != nil || v4.Status != verdict.Unknown || !strings.HasPrefix(v4.Reasons[0], "unreachable") || !v4.ExpiresAt.Equal(v4.VerifiedAt) {
		t.Errorf("unreachable Attest = %+v, %v", v4, err)
	}
	ag.fail = nil

	// Same host, different EK: never re-bound silently, and the host keeps
	// its binding: the bound AK still answers.
	if s := enroll(t, eng, tpECC); s != attestrpc.StatePendingApproval {
		t.Fatalf("re-registration with another EK: state %s, want pending_approval", s)
	}
	v5, err := eng.Attest(ctx, "c1")
	if err != nil || v5.Status != verdict.Trusted {
		t.Fatalf("Attest while a new EK is pending = %+v, %v; want trusted", v5, err)
	}
	if hs, _ := eng.EnrolledHosts(ctx); len(hs) != 1 {
		t.Errorf("EnrolledHosts while pending = %v", hs)
	}
	// An admin approves the EK they reviewed; evidence from the old binding
	// no longer speaks for the host.
	eccEK, err := tpECC.EK(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := eng.ApproveEK(ctx, "c1", engine.Approval{Fingerprint: strings.Repeat("0", 64)}); !errors.Is(err, engine.ErrPendingMismatch) {
		t.Errorf("ApproveEK naming another EK = %v, want ErrPendingMismatch", err)
	}
	res, err := eng.ApproveEK(ctx, "c1", engine.Approval{Fingerprint: store.EKFingerprint(eccEK.Public)})
	if err != nil || res.Fingerprint != store.EKFingerprint(eccEK.Public) || res.MovedFrom != "" {
		t.Fatalf("ApproveEK = %+v, %v", res, err)
	}
	last := pub.verdicts[len(pub.verdicts)-1]
	if last.Status != verdict.Unknown || !strings.HasPrefix(last.Reasons[0], engine.ReasonEKApproved+":") || last.Seq <= v5.Seq {
		t.Errorf("verdict after approval %+v, want unknown %s", last, engine.ReasonEKApproved)
	}
	if _, err := eng.Attest(ctx, "c1"); !errors.Is(err, engine.ErrNotEnrolled) {
		t.Errorf("Attest before activating the approved EK = %v, want ErrNotEnrolled", err)
	}
	if _, err := eng.ApproveEK(ctx, "c1", engine.Approval{}); !errors.Is(err, engine.ErrNothingPending) {
		t.Errorf("second ApproveEK = %v", err)
	}
	ag.tp = tpECC
	if s := enroll(t, eng, tpECC); s != attestrpc.StateEnrolled {
		t.Fatalf("enrollment after approval: %s", s)
	}
	v6, err := eng.Attest(ctx, "c1")
	if err != nil || v6.Status != verdict.Trusted || v6.Seq <= last.Seq {
		t.Errorf("Attest after approval = %+v, %v", v6, err)
	}
	wantEvents := []string{attestrpc.EventHostEnrolled, attestrpc.EventHostUntrusted, attestrpc.EventHostTrusted,
		attestrpc.EventHostUntrusted /* unreachable */, attestrpc.EventHostEKChangeRequested, attestrpc.EventHostTrusted, /* agent back */
		attestrpc.EventHostUntrusted /* approved, not yet activated */, attestrpc.EventHostEnrolled, attestrpc.EventHostTrusted}
	if !slices.Equal(pub.events, wantEvents) {
		t.Errorf("notifications %v, want %v", pub.events, wantEvents)
	}
	// Seqs on the fanout strictly increase.
	for i := 1; i < len(pub.verdicts); i++ {
		if pub.verdicts[i].Seq < pub.verdicts[i-1].Seq {
			t.Errorf("published seq went back: %d after %d", pub.verdicts[i].Seq, pub.verdicts[i-1].Seq)
		}
	}
}

func TestApproveModeAndBadActivation(t *testing.T) {
	ctx := t.Context()
	sim := tpmtest.Simulator(t)
	dir := t.TempDir()
	tp, err := tpm.New(sim.Opener(), tpm.Config{StateDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	eng, st, pub := newTestEngine(t, dir, engine.Config{Issuer: "test", Interval: 10 * time.Second, Validity: 30 * time.Second, QuoteTimeout: time.Second,
		PCRs: []int{0}, EnrollmentMode: engine.ModeApprove, Agents: &simAgent{tp: tp}})
	ek, _ := tp.EK(ctx)
	ak, _ := tp.AK(ctx)
	// A registration that never proves possession of the TPM records
	// nothing.
	args := &attestrpc.RegisterHostArgs{Host: "new", EKPublic: ek.Public, AKPublic: ak.Public}
	if res, err := eng.RegisterHost(ctx, args); err != nil || res.State != attestrpc.StateChallenge {
		t.Fatalf("register in approve mode = %+v, %v; want a challenge", res, err)
	}
	if _, err := st.GetHost(ctx, "new"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("unproven registration stored a host: %v", err)
	}
	if _, err := eng.ApproveEK(ctx, "new", engine.Approval{}); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("ApproveEK of an unproven host = %v, want ErrNotFound", err)
	}
	// After activation the EK awaits approval; the host is unknown.
	if s, reason := enrollAs(t, eng, tp, "new"); s != attestrpc.StatePendingApproval || !strings.HasPrefix(reason, engine.ReasonApprovalRequired) {
		t.Fatalf("enrollment in approve mode = %s %q, want pending_approval %s", s, reason, engine.ReasonApprovalRequired)
	}
	hv, err := eng.HostView(ctx, "new")
	if err != nil || hv.Enrollment != attestrpc.StatePendingApproval || hv.PendingReason != engine.ReasonApprovalRequired ||
		hv.PendingEKFingerprint != store.EKFingerprint(ek.Public) {
		t.Errorf("HostView = %+v, %v", hv, err)
	}
	if v := storedVerdict(t, st, "new"); v.Status != verdict.Unknown || !hasReason(v, engine.ReasonApprovalRequired) {
		t.Errorf("verdict while pending %+v", v)
	}
	// Retries of the same agent change nothing.
	n, events := len(pub.verdicts), len(pub.events)
	enrollAs(t, eng, tp, "new")
	if len(pub.verdicts) != n || len(pub.events) != events {
		t.Errorf("a repeated request published %v %v", pub.verdicts[n:], pub.events[events:])
	}
	if _, err := eng.ApproveEK(ctx, "new", engine.Approval{}); err != nil {
		t.Fatal(err)
	}
	res, err := eng.RegisterHost(ctx, args)
	if err != nil || res.State != attestrpc.StateChallenge {
		t.Fatalf("register after approval = %+v, %v", res, err)
	}
	_, err = eng.ActivateCredential(ctx, &attestrpc.ActivateCredentialArgs{Host: "new", ChallengeID: res.ChallengeID, Secret: make([]byte, 32)})
	if !errors.Is(err, engine.ErrEnrollment) {
		t.Errorf("activation with a wrong secret = %v, want ErrEnrollment", err)
	}
	if h, _ := st.GetHost(ctx, "new"); h.Activated {
		t.Error("host activated despite a wrong secret")
	}
	if s, _ := enrollAs(t, eng, tp, "new"); s != attestrpc.StateEnrolled {
		t.Errorf("enrollment after approval: %s", s)
	}
	// Malformed keys are refused before anything is stored.
	if _, err := eng.RegisterHost(ctx, &attestrpc.RegisterHostArgs{Host: "x", EKPublic: []byte{1, 2, 3}, AKPublic: ak.Public}); !errors.Is(err, engine.ErrEnrollment) {
		t.Errorf("register with a garbage EK = %v", err)
	}
	if _, err := st.GetHost(ctx, "x"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("garbage registration stored a host: %v", err)
	}
}

// A file outside the IMA allowlist keeps the host untrusted for the rest of
// the boot, although later rounds only carry newer IMA entries.
func TestIMAFailureSticksUntilReboot(t *testing.T) {
	ctx := t.Context()
	dir := t.TempDir()
	sim, logPath := seededSim(t, dir)
	imaPath := filepath.Join(dir, "binary_runtime_measurements")
	bash := bootseed.IMAFile{Path: "/usr/bin/bash", Content: []byte("bash")}
	appendIMA := func(files []bootseed.IMAFile, bootAggregate bool) {
		t.Helper()
		c, err := sim.Opener()(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		logs, err := bootseed.AppendIMA(c, files, bootAggregate)
		if err != nil {
			t.Fatal(err)
		}
		for path, b := range map[string][]byte{imaPath: logs.SHA1, imaPath + "_sha256": logs.SHA256} {
			f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := f.Write(b); err != nil {
				t.Fatal(err)
			}
			if err := f.Close(); err != nil {
				t.Fatal(err)
			}
		}
	}
	appendIMA([]bootseed.IMAFile{bash}, true)

	tp, err := tpm.New(sim.Opener(), tpm.Config{StateDir: filepath.Join(dir, "state"), EventLogPath: logPath, IMALogPath: imaPath})
	if err != nil {
		t.Fatal(err)
	}
	eng, st, _ := newTestEngine(t, dir, engine.Config{Issuer: "test", Interval: 10 * time.Second, Validity: 30 * time.Second, QuoteTimeout: 5 * time.Second,
		PCRs: []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10}, EnrollmentMode: engine.ModeAuto,
		Agents: &simAgent{tp: tp, ima: true}, Trigger: func(string) {}})
	if s := enroll(t, eng, tp); s != attestrpc.StateEnrolled {
		t.Fatalf("enrollment state %s", s)
	}
	sum := sha256.Sum256(bash.Content)
	body := "[[profile]]\nname = \"ima\"\n[profile.facts]\nsecure_boot = [\"enabled\"]\n[profile.ima]\n[profile.ima.allowlist]\n" +
		"\"/usr/bin/bash\" = [\"sha256:" + hex.EncodeToString(sum[:]) + "\"]\n"
	if err := st.PutProfile(ctx, store.Profile{Name: "ima", Body: body}, store.Create); err != nil {
		t.Fatal(err)
	}
	if v, err := eng.Attest(ctx, "c1"); err != nil || v.Status != verdict.Trusted {
		t.Fatalf("allowlisted IMA log: %+v, %v", v, err)
	}

	appendIMA([]bootseed.IMAFile{{Path: "/usr/bin/nc", Content: []byte("netcat")}}, false)
	v, err := eng.Attest(ctx, "c1")
	if err != nil || v.Status != verdict.Untrusted || !strings.Contains(strings.Join(v.Reasons, "\n"), "/usr/bin/nc not in allowlist") {
		t.Fatalf("unlisted file: %+v, %v", v, err)
	}
	// The next round sends no new IMA entries; the earlier failure stands.
	v, err = eng.Attest(ctx, "c1")
	if err != nil || v.Status != verdict.Untrusted || !strings.Contains(strings.Join(v.Reasons, "\n"), "/usr/bin/nc not in allowlist (earlier this boot)") {
		t.Fatalf("round after the unlisted file: %+v, %v", v, err)
	}
}

type observed struct {
	old *verdict.Verdict
	v   verdict.Verdict
}

type recObserver struct {
	mu   sync.Mutex
	seen []observed
}

func (o *recObserver) VerdictStored(old *verdict.Verdict, v verdict.Verdict) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.seen = append(o.seen, observed{old, v})
}

// TestObserverSeesEveryStoredVerdict: the observer is told of each stored
// verdict, unchanged ones included, with the previous one (the trait mirror
// and the revocation actions rely on both), and of the final unknown
// verdict of a deleted host.
func TestObserverSeesEveryStoredVerdict(t *testing.T) {
	ctx := t.Context()
	dir := t.TempDir()
	sim, logPath := seededSim(t, dir)
	tp, err := tpm.New(sim.Opener(), tpm.Config{StateDir: filepath.Join(dir, "state"), EventLogPath: logPath})
	if err != nil {
		t.Fatal(err)
	}
	obs := &recObserver{}
	eng, st, _ := newTestEngine(t, dir, engine.Config{Issuer: "test", Interval: 10 * time.Second, Validity: 30 * time.Second, QuoteTimeout: 5 * time.Second,
		PCRs: []int{0, 1, 2, 3, 4, 5, 6, 7}, EnrollmentMode: engine.ModeAuto, Agents: &simAgent{tp: tp}, Observer: obs})
	enroll(t, eng, tp)
	body := "[[profile]]\nname = \"sb\"\n[profile.facts]\nsecure_boot = [\"enabled\"]\n"
	if err := st.PutProfile(ctx, store.Profile{Name: "sb", Body: body}, store.Create); err != nil {
		t.Fatal(err)
	}
	obs.mu.Lock()
	obs.seen = nil // enrollment's own verdicts are not the point here
	obs.mu.Unlock()
	var want []verdict.Verdict
	for range 2 {
		v, err := eng.Attest(ctx, "c1")
		if err != nil || v.Status != verdict.Trusted {
			t.Fatalf("Attest = %+v, %v", v, err)
		}
		want = append(want, v)
	}
	if err := eng.DeleteHost(ctx, "c1"); err != nil {
		t.Fatal(err)
	}
	obs.mu.Lock()
	defer obs.mu.Unlock()
	if len(obs.seen) != 3 {
		t.Fatalf("observer saw %d verdicts, want 3: %+v", len(obs.seen), obs.seen)
	}
	if obs.seen[0].v.Seq != want[0].Seq || obs.seen[1].v.Seq != want[1].Seq {
		t.Errorf("observed seqs %d, %d; want %d, %d", obs.seen[0].v.Seq, obs.seen[1].v.Seq, want[0].Seq, want[1].Seq)
	}
	if obs.seen[1].old == nil || obs.seen[1].old.Seq != want[0].Seq {
		t.Errorf("second verdict's old = %+v, want seq %d", obs.seen[1].old, want[0].Seq)
	}
	if last := obs.seen[2]; last.v.Status != verdict.Unknown || last.old == nil || last.old.Status != verdict.Trusted {
		t.Errorf("deletion observed as %+v", last)
	}
}
