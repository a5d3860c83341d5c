package tpm_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2"

	"github.com/trustpool/trustpool/internal/bootseed"
	"github.com/trustpool/trustpool/internal/eventlog"
	"github.com/trustpool/trustpool/internal/importblob"
	"github.com/trustpool/trustpool/internal/servicetest"
	"github.com/trustpool/trustpool/internal/tpm"
	"github.com/trustpool/trustpool/internal/tpm/tpmtest"
)

const (
	launchID   = "0b6d1c3e-8f2a-4c55-9d0e-6a7b8c9d0e1f"
	instanceID = "178b0921-8f85-4257-88b6-2e743b5a975c"
)

// sealFor seals secret to agent's EK over its current values of PCRs sel,
// as the service does after a fresh quote.
func sealFor(t *testing.T, agent *tpm.TPM, sel []int, secret []byte) (*importblob.Sealed, *tpm.EK) {
	t.Helper()
	ctx := t.Context()
	ek, err := agent.EK(ctx)
	if err != nil {
		t.Fatal(err)
	}
	pcrs, err := agent.ReadPCRs(ctx, uint16(tpm2.TPMAlgSHA256), sel)
	if err != nil {
		t.Fatal(err)
	}
	s, err := importblob.Create(rand.Reader, ek.Public, sel, pcrs, launchID, instanceID, secret)
	if err != nil {
		t.Fatal(err)
	}
	return s, ek
}

// unsealOpen is the agent's side: parse, import + unseal, open.
func unsealOpen(ctx context.Context, agent *tpm.TPM, s *importblob.Sealed, instance string) ([]byte, error) {
	p, err := importblob.Parse(&s.Blob)
	if err != nil {
		return nil, err
	}
	key, err := agent.Unseal(ctx, p)
	if err != nil {
		return nil, err
	}
	defer clear(key)
	return p.Open(key, launchID, instance)
}

func extendPCR(t *testing.T, open tpm.Opener, pcr int) {
	t.Helper()
	c, err := open(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := bootseed.Apply(c, []bootseed.Extend{{PCR: pcr, Digests: map[eventlog.Alg][]byte{
		eventlog.SHA256: eventlog.SHA256.Sum([]byte("changed after the quote")),
	}}}); err != nil {
		t.Fatal(err)
	}
}

// checkUnseal runs the import path against one TPM and EK: the secret
// arrives; bound to its instance; a PCR in the policy moving makes the TPM
// refuse (ErrPolicy); a PCR outside it does not matter.
func checkUnseal(t *testing.T, open tpm.Opener, ekAlg string) {
	t.Helper()
	ctx := t.Context()
	agent, err := tpm.New(open, tpm.Config{StateDir: t.TempDir(), EKAlgorithm: ekAlg})
	if err != nil {
		t.Fatal(err)
	}
	secret := bytes.Repeat([]byte("luks passphrase "), 20) // 320 bytes: more than a TPM sealed object holds
	sel := []int{0, 7, 16}
	s, ek := sealFor(t, agent, sel, secret)
	t.Logf("EK %s (handle %#x): public %d B, duplicate %d B, in_sym_seed %d B, payload %d B",
		ek.Algorithm, ek.Handle, len(s.Blob.Public), len(s.Blob.Duplicate), len(s.Blob.InSymSeed), len(s.Blob.Payload))
	// Several rounds: every transient object is flushed (swtpm has 3 slots).
	for range 4 {
		got, err := unsealOpen(ctx, agent, s, instanceID)
		if err != nil {
			t.Fatalf("unseal: %v", err)
		}
		if !bytes.Equal(got, secret) {
			t.Fatal("unsealed secret differs")
		}
	}
	if _, err := unsealOpen(ctx, agent, s, "00000000-0000-0000-0000-000000000000"); !errors.Is(err, importblob.ErrPayload) {
		t.Errorf("blob re-sent for another instance: %v, want %v", err, importblob.ErrPayload)
	}
	extendPCR(t, open, 23) // not in the policy
	if _, err := unsealOpen(ctx, agent, s, instanceID); err != nil {
		t.Errorf("after extending PCR 23 (outside the policy): %v", err)
	}
	extendPCR(t, open, 16)
	if _, err := unsealOpen(ctx, agent, s, instanceID); !errors.Is(err, tpm.ErrPolicy) {
		t.Errorf("after extending PCR 16: %v, want %v", err, tpm.ErrPolicy)
	}
	// Sealed anew to the current values, it unseals again.
	s2, _ := sealFor(t, agent, sel, secret)
	if _, err := unsealOpen(ctx, agent, s2, instanceID); err != nil {
		t.Errorf("resealed to the new PCR values: %v", err)
	}
}

func TestUnsealSimulator(t *testing.T) {
	for _, alg := range []string{tpm.AlgRSA, tpm.AlgECC} {
		t.Run(alg, func(t *testing.T) {
			sim := tpmtest.Simulator(t)
			checkUnseal(t, sim.Opener(), alg)
		})
	}
}

func swtpmOpener(addr string) tpm.Opener {
	return func(ctx context.Context) (tpmCloser, error) { return tpm.DialSWTPM(ctx, addr, 10*time.Second) }
}

// TestUnsealSWTPM runs the import path on a swtpm manufactured by
// swtpm_setup, with each EK it can use: its persistent RSA-2048 EK (what
// the agent picks by default: the first EK with a certificate), its
// persistent P-384 EK (SHA-384 name algorithm, AES-256), and a P-256 EK
// created from the TCG default template.
func TestUnsealSWTPM(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test")
	}
	for _, alg := range []string{tpm.AlgRSA, tpm.AlgECC384, tpm.AlgECC} {
		t.Run(alg, func(t *testing.T) {
			sw := servicetest.SWTPM(t, servicetest.SWTPMOptions{EKCert: true})
			checkUnseal(t, swtpmOpener(sw.ServerAddr), alg)
		})
	}
}

// TestUnsealOtherTPM: a blob sealed to one TPM's EK does not import into
// another's.
func TestUnsealOtherTPM(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test")
	}
	ctx := t.Context()
	a := servicetest.SWTPM(t, servicetest.SWTPMOptions{EKCert: true})
	b := servicetest.SWTPM(t, servicetest.SWTPMOptions{EKCert: true})
	agentA, err := tpm.New(swtpmOpener(a.ServerAddr), tpm.Config{StateDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	agentB, err := tpm.New(swtpmOpener(b.ServerAddr), tpm.Config{StateDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	s, _ := sealFor(t, agentA, []int{0, 7}, []byte("for A only"))
	if _, err := unsealOpen(ctx, agentB, s, instanceID); !errors.Is(err, tpm.ErrImport) {
		t.Errorf("A's blob on B: %v, want %v", err, tpm.ErrImport)
	}
	if _, err := unsealOpen(ctx, agentA, s, instanceID); err != nil {
		t.Errorf("A's blob on A: %v", err)
	}
}
