package engine_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/trustpool/trustpool/attestation-service/internal/engine"
	"github.com/trustpool/trustpool/attestation-service/internal/store"
	"github.com/trustpool/trustpool/internal/attestrpc"
	"github.com/trustpool/trustpool/internal/bootseed"
	"github.com/trustpool/trustpool/internal/eventlog"
	"github.com/trustpool/trustpool/internal/simtpm"
	"github.com/trustpool/trustpool/internal/verdict"
)

// softAgent answers quotes from a simulated TPM, as the agent would.
type softAgent struct{ tp *simtpm.TPM }

func (a *softAgent) Quote(ctx context.Context, _ string, args *attestrpc.QuoteArgs) (*attestrpc.QuoteResult, error) {
	q, err := a.tp.Quote(ctx, args.Nonce, args.PCRSelection)
	if err != nil {
		return nil, err
	}
	log, _ := a.tp.EventLog()
	ima, hs, _, err := a.tp.IMALog(args.LogOffsets.IMA)
	if err != nil {
		return nil, err
	}
	return &attestrpc.QuoteResult{Attest: q.Attest, Signature: q.Signature, PCRs: q.PCRs, EventLog: log,
		IMALog: ima, IMAOffset: args.LogOffsets.IMA, IMAHashSize: hs}, nil
}

// TestInstancesShareOneStore: two engines (two service instances) on one
// store attest one host in turn. Enrollment may start on one and finish on
// the other; each round starts from the state the other stored (an IMA
// failure recorded by one sticks on the other, although the first had the
// host's older state cached); profiles changed by another instance apply
// at the next round; sequence numbers increase across both; and a round
// due by the interval is skipped when the other attested the host moments
// ago, a triggered one is not.
func TestInstancesShareOneStore(t *testing.T) {
	ctx := t.Context()
	st, err := store.Open(ctx, "sqlite:///"+filepath.Join(t.TempDir(), "a.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	tp, err := simtpm.New(simtpm.Config{Rand: rand.Reader, IMA: true})
	if err != nil {
		t.Fatal(err)
	}
	_, priv, _ := ed25519.GenerateKey(nil)
	signer := verdict.NewSigner(priv)
	pub := &recPublisher{vf: verdict.NewVerifier(signer.Public())}
	newEngine := func() *engine.Engine {
		return engine.New(engine.Config{Issuer: "test", Interval: 10 * time.Second, Validity: 30 * time.Second, QuoteTimeout: 5 * time.Second,
			PCRs: []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10}, EnrollmentMode: engine.ModeAuto, Store: st, Signer: signer,
			Publisher: pub, Agents: &softAgent{tp: tp}})
	}
	a, b := newEngine(), newEngine()

	// register_host on a, activate_credential on b.
	ek, _ := tp.EK(ctx)
	ak, _ := tp.AK(ctx)
	reg, err := a.RegisterHost(ctx, &attestrpc.RegisterHostArgs{Host: "c1", EKPublic: ek.Public, AKPublic: ak.Public})
	if err != nil {
		t.Fatal(err)
	}
	secret, err := tp.ActivateCredential(ctx, reg.Credential.IDObject, reg.Credential.EncryptedSecret)
	if err != nil {
		t.Fatal(err)
	}
	act, err := b.ActivateCredential(ctx, &attestrpc.ActivateCredentialArgs{Host: "c1", ChallengeID: reg.ChallengeID, Secret: secret})
	if err != nil || act.State != attestrpc.StateEnrolled {
		t.Fatalf("activation on the other instance: %+v, %v", act, err)
	}
	// The challenge is used up for both.
	if _, err := a.ActivateCredential(ctx, &attestrpc.ActivateCredentialArgs{Host: "c1", ChallengeID: reg.ChallengeID, Secret: secret}); !errors.Is(err, engine.ErrEnrollment) {
		t.Errorf("second activation of one challenge: %v, want a refusal", err)
	}

	bash := bootseed.IMAFile{Path: "/usr/bin/bash", Content: []byte("bash")}
	if err := tp.AppendIMA([]bootseed.IMAFile{bash}); err != nil {
		t.Fatal(err)
	}
	profile := func(allowed ...bootseed.IMAFile) string {
		var b strings.Builder
		b.WriteString("[[profile]]\nname = \"p\"\n[profile.facts]\nsecure_boot = [\"enabled\"]\n[profile.ima.allowlist]\n")
		for _, f := range allowed {
			b.WriteString("\"" + f.Path + "\" = [\"sha256:" + hex.EncodeToString(eventlog.SHA256.Sum(f.Content)) + "\"]\n")
		}
		return b.String()
	}
	if err := st.PutProfile(ctx, store.Profile{Name: "p", Body: profile(bash)}, store.Create); err != nil {
		t.Fatal(err)
	}
	var seqs []uint64
	attest := func(e *engine.Engine, want verdict.Status, reason string) {
		t.Helper()
		v, err := e.Attest(ctx, "c1")
		if err != nil || v.Status != want || !strings.Contains(strings.Join(v.Reasons, "\n"), reason) {
			t.Fatalf("round: %+v, %v; want %s with %q", v, err, want, reason)
		}
		seqs = append(seqs, v.Seq)
	}
	attest(a, verdict.Trusted, "")
	attest(b, verdict.Trusted, "")
	attest(a, verdict.Trusted, "")

	// b sees an unlisted binary; a, with the host's earlier state cached,
	// must start from b's.
	if err := tp.AppendIMA([]bootseed.IMAFile{{Path: "/usr/bin/nc", Content: []byte("nc")}}); err != nil {
		t.Fatal(err)
	}
	attest(b, verdict.Untrusted, "/usr/bin/nc not in allowlist")
	attest(a, verdict.Untrusted, "/usr/bin/nc not in allowlist (earlier this boot)")

	// A profile changed through another instance applies at once.
	other := bootseed.IMAFile{Path: "/usr/bin/other", Content: []byte("other")}
	if err := st.PutProfile(ctx, store.Profile{Name: "p", Body: profile(bash, other) + "[profile.pcrs]\n0 = [\"" + strings.Repeat("00", 32) + "\"]\n"}, store.Replace); err != nil {
		t.Fatal(err)
	}
	attest(a, verdict.Untrusted, "pcr 0: value")

	if !slices.IsSorted(seqs) || len(slices.Compact(slices.Clone(seqs))) != len(seqs) {
		t.Errorf("seqs across instances %v, want strictly increasing", seqs)
	}

	// b's round due by the interval is skipped: a just attested.
	_, err = b.AttestRound(ctx, "c1", false)
	var recent *engine.RecentlyAttestedError
	if !errors.As(err, &recent) || time.Since(recent.At) > time.Minute {
		t.Errorf("scheduled round right after the other instance's: %v, want RecentlyAttestedError", err)
	}
	if _, err := b.AttestRound(ctx, "c1", true); err != nil {
		t.Errorf("triggered round right after the other instance's: %v", err)
	}
}
