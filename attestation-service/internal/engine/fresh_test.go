package engine_test

import (
	"bytes"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/trustpool/trustpool/attestation-service/internal/engine"
	"github.com/trustpool/trustpool/attestation-service/internal/store"
	"github.com/trustpool/trustpool/internal/bootseed"
	"github.com/trustpool/trustpool/internal/eventlog"
	"github.com/trustpool/trustpool/internal/tpm"
	"github.com/trustpool/trustpool/internal/verdict"
)

// TestAttestFresh: a fresh round returns the quoted PCR values and the
// enrolled EK when the evidence verifies, and no PCRs when it does not
// (changed PCR, unreachable agent); every round is a recorded verdict.
func TestAttestFresh(t *testing.T) {
	ctx := t.Context()
	dir := t.TempDir()
	sim, logPath := seededSim(t, dir)
	tp, err := tpm.New(sim.Opener(), tpm.Config{StateDir: filepath.Join(dir, "state"), EventLogPath: logPath})
	if err != nil {
		t.Fatal(err)
	}
	ag := &simAgent{tp: tp}
	pcrs := []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}
	eng, st, pub := newTestEngine(t, dir, engine.Config{Issuer: "test", Interval: 10 * time.Second, Validity: 30 * time.Second,
		QuoteTimeout: 5 * time.Second, PCRs: pcrs, EnrollmentMode: engine.ModeAuto, Agents: ag})
	if _, err := eng.AttestFresh(ctx, "c1"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("AttestFresh(unknown host) = %v, want ErrNotFound", err)
	}
	enroll(t, eng, tp)
	body := "[[profile]]\nname = \"sb\"\n[profile.facts]\nsecure_boot = [\"enabled\"]\n"
	if err := st.PutProfile(ctx, store.Profile{Name: "sb", Body: body}, store.Create); err != nil {
		t.Fatal(err)
	}
	f, err := eng.AttestFresh(ctx, "c1")
	if err != nil {
		t.Fatal(err)
	}
	want, err := tp.ReadPCRs(ctx, 0x000B, pcrs)
	if err != nil {
		t.Fatal(err)
	}
	ek, err := tp.EK(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !f.Verified || f.Verdict.Status != verdict.Trusted || !f.Satisfies("sb") || f.Satisfies("gpu") {
		t.Errorf("fresh round = %+v, want verified, trusted, satisfying sb only", f.Verdict)
	}
	if diff := cmp.Diff(want, f.PCRs); diff != "" {
		t.Errorf("fresh PCRs (-TPM +fresh):\n%s", diff)
	}
	if !bytes.Equal(f.EKPublic, ek.Public) {
		t.Error("fresh EK public differs from the enrolled one")
	}
	if got := storedVerdict(t, st, "c1"); got.Seq != f.Verdict.Seq {
		t.Errorf("stored verdict seq %d, fresh round %d: the round was not recorded", got.Seq, f.Verdict.Seq)
	}
	published := len(pub.verdicts)

	// A PCR the event log does not explain: the evidence does not verify.
	c, err := sim.Opener()(ctx)
	if err != nil {
		t.Fatal(err)
	}
	err = bootseed.Apply(c, []bootseed.Extend{{PCR: 7, Digests: map[eventlog.Alg][]byte{eventlog.SHA256: eventlog.SHA256.Sum([]byte("bootkit"))}}})
	c.Close()
	if err != nil {
		t.Fatal(err)
	}
	f2, err := eng.AttestFresh(ctx, "c1")
	if err != nil {
		t.Fatal(err)
	}
	if f2.Verified || f2.PCRs != nil || f2.Verdict.Status != verdict.Untrusted || f2.Satisfies("sb") {
		t.Errorf("after a PCR 7 extend: verified %v, PCRs %v, verdict %+v", f2.Verified, f2.PCRs, f2.Verdict)
	}
	if len(pub.verdicts) != published+1 {
		t.Errorf("the untrusted fresh round was not published")
	}

	ag.fail = errors.New("messaging timeout")
	f3, err := eng.AttestFresh(ctx, "c1")
	if err != nil {
		t.Fatal(err)
	}
	if f3.Verified || f3.Verdict.Status != verdict.Unknown {
		t.Errorf("unreachable agent: verified %v, verdict %+v", f3.Verified, f3.Verdict)
	}
}
