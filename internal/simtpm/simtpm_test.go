package simtpm_test

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"testing"
	"time"

	"github.com/trustpool/trustpool/internal/bootseed"
	"github.com/trustpool/trustpool/internal/evidence"
	"github.com/trustpool/trustpool/internal/simtpm"
)

var allPCRs = []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10}

func newTPM(t *testing.T, ca *simtpm.CA) *simtpm.TPM {
	t.Helper()
	tp, err := simtpm.New(simtpm.Config{Rand: rand.Reader, CA: ca, Label: "c1", IMA: true})
	if err != nil {
		t.Fatal(err)
	}
	return tp
}

// binding enrolls tp the way the service does: parse EK and AK, make a
// credential, activate it in the simulated TPM.
func binding(t *testing.T, tp *simtpm.TPM) evidence.Binding {
	t.Helper()
	ctx := context.Background()
	ekk, _ := tp.EK(ctx)
	akk, _ := tp.AK(ctx)
	ek, err := evidence.ParseEKPublic(ekk.Public)
	if err != nil {
		t.Fatalf("ParseEKPublic: %v", err)
	}
	ak, err := evidence.ParseAKPublic(akk.Public)
	if err != nil {
		t.Fatalf("ParseAKPublic: %v", err)
	}
	secret, cred, err := evidence.MakeCredential(rand.Reader, ek, ak.Name)
	if err != nil {
		t.Fatal(err)
	}
	got, err := tp.ActivateCredential(ctx, cred.IDObject, cred.EncryptedSecret)
	if err != nil {
		t.Fatalf("ActivateCredential: %v", err)
	}
	if err := evidence.CheckActivation(secret, got); err != nil {
		t.Fatalf("activation: %v", err)
	}
	return evidence.Binding{EK: ek, AK: ak, Activated: true}
}

// round quotes a fresh nonce and verifies it with the real verifier.
func round(t *testing.T, tp *simtpm.TPM, b evidence.Binding, prev *evidence.Previous, imaOffset int64) (*evidence.Result, error) {
	t.Helper()
	ch, err := evidence.NewChallenge(rand.Reader, time.Now(), "c1", allPCRs)
	if err != nil {
		t.Fatal(err)
	}
	q, err := tp.Quote(context.Background(), ch.Nonce, allPCRs)
	if err != nil {
		t.Fatal(err)
	}
	ev := &evidence.Evidence{Attest: q.Attest, Signature: q.Signature, PCRs: q.PCRs}
	if ev.EventLog, err = tp.EventLog(); err != nil {
		t.Fatal(err)
	}
	if ev.IMALog, ev.IMAHashSize, _, err = tp.IMALog(imaOffset); err != nil {
		t.Fatal(err)
	}
	ev.IMAOffset = imaOffset
	return evidence.Verify(b, ch, ev, prev, evidence.Options{Now: time.Now()})
}

func next(r *evidence.Result, prev *evidence.Previous) *evidence.Previous {
	p := &evidence.Previous{Clock: r.Clock, PCRs: r.PCRs, EventLogDigest: r.EventLogDigest, Boot: r.Boot}
	if r.IMA != nil {
		p.IMA = r.IMA.State
	} else if prev != nil {
		p.IMA = prev.IMA
	}
	return p
}

// The simulated TPM's keys, credential activation and quotes pass the
// real verifier: EK and AK checks, MakeCredential/activation, signature,
// selection, digest, event log replay with boot facts, IMA replay
// (boot_aggregate first), boot counters.
func TestQuotesPassTheVerifier(t *testing.T) {
	tp := newTPM(t, nil)
	b := binding(t, tp)
	r, err := round(t, tp, b, nil, 0)
	if err != nil {
		t.Fatalf("first round: %v", err)
	}
	if r.Boot == nil || r.Boot.Map()["secure_boot"] != "enabled" {
		t.Errorf("boot facts %v, want secure_boot enabled", r.Boot)
	}
	if r.IMA == nil || len(r.IMA.New) != 1 || r.IMA.New[0].Path() != "boot_aggregate" {
		t.Fatalf("IMA %+v, want boot_aggregate", r.IMA)
	}
	prev := next(r, nil)
	// The IMA list grows; the next round verifies only the new entries.
	if err := tp.AppendIMA([]bootseed.IMAFile{{Path: "/usr/bin/bash", Content: []byte("bash")}}); err != nil {
		t.Fatal(err)
	}
	r, err = round(t, tp, b, prev, prev.IMA.Offset)
	if err != nil {
		t.Fatalf("second round: %v", err)
	}
	if len(r.IMA.New) != 1 || r.IMA.New[0].Path() != "/usr/bin/bash" || r.Rebooted {
		t.Errorf("second round: IMA %v, rebooted %v", r.IMA.New, r.Rebooted)
	}
	prev = next(r, prev)
	// A reboot is seen through resetCount; the new boot replays from
	// scratch.
	tp.Reboot(nil)
	r, err = round(t, tp, b, prev, 0)
	if err != nil {
		t.Fatalf("round after reboot: %v", err)
	}
	if !r.Rebooted {
		t.Error("reboot not detected")
	}
}

// What the simulator's faults look like to the verifier: a PCR extended
// outside the log fails replay; a quote for another nonce fails; a
// credential made for another AK name or another TPM's EK does not
// activate.
func TestFaultsAreCaught(t *testing.T) {
	tp := newTPM(t, nil)
	b := binding(t, tp)
	if _, err := round(t, tp, b, nil, 0); err != nil {
		t.Fatal(err)
	}
	if err := tp.Extend(9, []byte("another kernel")); err != nil {
		t.Fatal(err)
	}
	if _, err := round(t, tp, b, nil, 0); !errors.Is(err, evidence.ErrReplay) {
		t.Errorf("round after an unlogged extend of PCR 9: %v, want ErrReplay", err)
	}

	// Nonce mismatch: the quote is over another nonce than the challenge.
	ch, _ := evidence.NewChallenge(rand.Reader, time.Now(), "c1", allPCRs)
	q, err := tp.Quote(context.Background(), []byte("0123456789abcdef0123456789abcdef"), allPCRs)
	if err != nil {
		t.Fatal(err)
	}
	log, _ := tp.EventLog()
	if _, err := evidence.Verify(b, ch, &evidence.Evidence{Attest: q.Attest, Signature: q.Signature, PCRs: q.PCRs, EventLog: log},
		nil, evidence.Options{Now: time.Now()}); !errors.Is(err, evidence.ErrNonceMismatch) {
		t.Errorf("quote over another nonce: %v, want ErrNonceMismatch", err)
	}

	// Another TPM's AK cannot sign for this binding.
	other := newTPM(t, nil)
	q, _ = other.Quote(context.Background(), ch.Nonce, allPCRs)
	if _, err := evidence.Verify(b, ch, &evidence.Evidence{Attest: q.Attest, Signature: q.Signature, PCRs: q.PCRs, EventLog: log},
		nil, evidence.Options{Now: time.Now()}); !errors.Is(err, evidence.ErrSignature) {
		t.Errorf("quote by another AK: %v, want ErrSignature", err)
	}

	ctx := context.Background()
	ekk, _ := tp.EK(ctx)
	ek, _ := evidence.ParseEKPublic(ekk.Public)
	otherAK, _ := other.AK(ctx)
	_, cred, err := evidence.MakeCredential(rand.Reader, ek, otherAK.Name)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tp.ActivateCredential(ctx, cred.IDObject, cred.EncryptedSecret); !errors.Is(err, simtpm.ErrActivation) {
		t.Errorf("credential for another AK name: %v, want ErrActivation", err)
	}
	akk, _ := tp.AK(ctx)
	_, cred, _ = evidence.MakeCredential(rand.Reader, ek, akk.Name)
	if _, err := other.ActivateCredential(ctx, cred.IDObject, cred.EncryptedSecret); !errors.Is(err, simtpm.ErrActivation) {
		t.Errorf("credential for another EK: %v, want ErrActivation", err)
	}
	bad := append([]byte(nil), cred.IDObject...)
	bad[len(bad)-1] ^= 1
	if _, err := tp.ActivateCredential(ctx, bad, cred.EncryptedSecret); !errors.Is(err, simtpm.ErrActivation) {
		t.Errorf("tampered credential blob: %v, want ErrActivation", err)
	}
	if _, err := tp.ActivateCredential(ctx, cred.IDObject, []byte{1, 2, 3}); !errors.Is(err, simtpm.ErrActivation) {
		t.Errorf("malformed encrypted secret: %v, want ErrActivation", err)
	}

	// New keys (a replaced board): the old binding no longer verifies.
	if err := tp.ReplaceKeys(nil, "c1"); err != nil {
		t.Fatal(err)
	}
	if _, err := round(t, tp, b, nil, 0); !errors.Is(err, evidence.ErrSignature) {
		t.Errorf("quote after ReplaceKeys with the old binding: %v, want ErrSignature", err)
	}
}

// The EK certificate chains to the test CA and names the EK; the chain
// check refuses another CA.
func TestEKCertificate(t *testing.T) {
	ca, err := simtpm.NewCA(rand.Reader, "simulated EK CA")
	if err != nil {
		t.Fatal(err)
	}
	tp := newTPM(t, ca)
	ekk, _ := tp.EK(context.Background())
	ek, err := evidence.ParseEKPublic(ekk.Public)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca.Cert)
	if err := evidence.CheckEKCertificate(ek, ekk.Certificate, roots, nil, time.Now()); err != nil {
		t.Errorf("EK certificate: %v", err)
	}
	// A CA loaded from its PEM issues certificates that chain too.
	kp, err := ca.KeyPEM()
	if err != nil {
		t.Fatal(err)
	}
	again, err := simtpm.ParseCA(ca.CertPEM, kp)
	if err != nil {
		t.Fatal(err)
	}
	tp3 := newTPM(t, again)
	ek3, _ := tp3.EK(context.Background())
	ek3p, _ := evidence.ParseEKPublic(ek3.Public)
	if err := evidence.CheckEKCertificate(ek3p, ek3.Certificate, roots, nil, time.Now()); err != nil {
		t.Errorf("certificate from the reloaded CA: %v", err)
	}
	other, _ := simtpm.NewCA(rand.Reader, "other CA")
	if _, err := simtpm.ParseCA(ca.CertPEM, mustKey(t, other)); err == nil {
		t.Error("ParseCA accepted another CA's key")
	}
	wrong := x509.NewCertPool()
	wrong.AddCert(other.Cert)
	if err := evidence.CheckEKCertificate(ek, ekk.Certificate, wrong, nil, time.Now()); !errors.Is(err, evidence.ErrEKCertChain) {
		t.Errorf("EK certificate against another root: %v, want ErrEKCertChain", err)
	}
	// Another TPM's certificate from the same CA names another key.
	tp2 := newTPM(t, ca)
	ek2, _ := tp2.EK(context.Background())
	if err := evidence.CheckEKCertificate(ek, ek2.Certificate, roots, nil, time.Now()); !errors.Is(err, evidence.ErrEKCertMismatch) {
		t.Errorf("another EK's certificate: %v, want ErrEKCertMismatch", err)
	}
}

func BenchmarkQuote(b *testing.B) {
	tp, err := simtpm.New(simtpm.Config{Rand: rand.Reader, IMA: true})
	if err != nil {
		b.Fatal(err)
	}
	nonce := make([]byte, 32)
	for b.Loop() {
		if _, err := tp.Quote(context.Background(), nonce, allPCRs); err != nil {
			b.Fatal(err)
		}
	}
}

func mustKey(t *testing.T, ca *simtpm.CA) []byte {
	t.Helper()
	k, err := ca.KeyPEM()
	if err != nil {
		t.Fatal(err)
	}
	return k
}
