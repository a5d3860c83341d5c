package tpm_test

import (
	"bytes"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2"

	"github.com/trustpool/trustpool/internal/bootseed"
	"github.com/trustpool/trustpool/internal/evidence"
	"github.com/trustpool/trustpool/internal/policy"
	"github.com/trustpool/trustpool/internal/servicetest"
	"github.com/trustpool/trustpool/internal/tpm"
	"github.com/trustpool/trustpool/internal/tpm/tpmtest"
)

// backend is a real TPM implementation under test.
type backend struct {
	open   tpm.Opener
	reboot func(t *testing.T)
	swtpm  *servicetest.SWTPMServer // nil for the simulator
	// sha1Bank: the TPM has an allocated SHA-1 PCR bank.
	sha1Bank bool
}

type backendFactory func(t *testing.T) backend

func simBackend(t *testing.T) backend {
	t.Helper()
	sim := tpmtest.Simulator(t)
	return backend{open: sim.Opener(), reboot: func(t *testing.T) { t.Helper(); sim.Reboot(t) }, sha1Bank: true}
}

func swtpmBackend(ekCert bool) backendFactory {
	return func(t *testing.T) backend {
		t.Helper()
		s := servicetest.SWTPM(t, servicetest.SWTPMOptions{EKCert: ekCert})
		return backend{
			open: func(ctx contextT) (tpmCloser, error) { return tpm.DialSWTPM(ctx, s.ServerAddr, 5*time.Second) },
			reboot: func(t *testing.T) {
				t.Helper()
				s.Stop(t)
				s.Start(t)
			},
			swtpm:    s,
			sha1Bank: !ekCert,
		}
	}
}

var backends = map[string]struct {
	factory backendFactory
	akAlgs  []string
}{
	"simulator": {simBackend, []string{tpm.AlgECC, tpm.AlgRSA}},
	"swtpm":     {swtpmBackend(true), []string{tpm.AlgECC, tpm.AlgRSA}},
	// No EK certificate, EK from the default template, all four banks.
	"swtpm-unmanufactured": {swtpmBackend(false), []string{tpm.AlgECC}},
}

// golden boots build A with two IMA measurements, enrolls, attests once
// and learns a profile from the result.
func golden(t *testing.T, b backend, akAlg string) (*host, *policy.Profile, time.Time) {
	t.Helper()
	h := newHost(t, b.open, akAlg)
	h.boot(bootseed.BuildA())
	h.measure(bootseed.IMAFile{Path: "/usr/bin/bash", Content: []byte("bash")}, bootseed.IMAFile{Path: "/usr/sbin/nova-compute", Content: []byte("nova")})
	h.enroll(t.Context())
	now := time.Now()
	res, err := h.attest(t.Context(), now)
	if err != nil {
		t.Fatalf("golden attestation: %v", err)
	}
	learned, err := policy.Learn("golden", policy.Input{PCRs: res.PCRs, Boot: res.Boot, IMA: res.IMA.New}, policy.LearnOptions{IMA: true})
	if err != nil {
		t.Fatal(err)
	}
	p := learned.Profile
	if r := p.Evaluate(policy.Input{PCRs: res.PCRs, Boot: res.Boot, IMA: res.IMA.New}); !r.Pass {
		t.Fatalf("golden host fails its own profile: %v", r.Reasons)
	}
	return h, p, now
}

func wantErr(t *testing.T, err, want error) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Fatalf("got %v, want %v", err, want)
	}
}

// TestAttacks runs enroll -> activate -> quote -> verify -> evaluate on
// every real TPM implementation, then each attack against the real TPM.
func TestAttacks(t *testing.T) {
	for name, b := range backends {
		t.Run(name, func(t *testing.T) {
			for _, akAlg := range b.akAlgs {
				t.Run(akAlg, func(t *testing.T) { runAttacks(t, b.factory, akAlg) })
			}
		})
	}
}

func runAttacks(t *testing.T, factory backendFactory, akAlg string) {
	t.Helper()
	ctx := t.Context()

	t.Run("pcr_extended_after_learning_unlogged", func(t *testing.T) {
		b := factory(t)
		h, _, now := golden(t, b, akAlg)
		c := h.raw()
		err := bootseed.Apply(c, []bootseed.Extend{{PCR: 9, Digests: sha256Digest("rootkit")}})
		c.Close()
		if err != nil {
			t.Fatal(err)
		}
		_, err = h.attest(ctx, now.Add(time.Second))
		wantErr(t, err, evidence.ErrReplay)
	})

	t.Run("pcr_extended_after_learning_logged_new_kernel", func(t *testing.T) {
		b := factory(t)
		h, p, now := golden(t, b, akAlg)
		b.reboot(t)
		h.boot(bootseed.BuildB())
		h.measure(bootseed.IMAFile{Path: "/usr/bin/bash", Content: []byte("bash")})
		res, err := h.attest(ctx, now.Add(time.Second))
		if err != nil {
			t.Fatalf("verify build B: %v", err)
		}
		if !res.Rebooted {
			t.Error("reboot not detected")
		}
		r := p.Evaluate(policy.Input{PCRs: res.PCRs, Boot: res.Boot, IMA: res.IMA.New})
		if r.Pass || !hasReason(r.Reasons, "fact kernel:") {
			t.Fatalf("build B under build A's profile: %+v", r)
		}
	})

	t.Run("tpm_restarted_reboot_detected", func(t *testing.T) {
		b := factory(t)
		h, p, now := golden(t, b, akAlg)
		prevReset := h.prev.Clock.ResetCount
		b.reboot(t)
		// Without a new boot PCRs 0-7 are empty: refused.
		_, err := h.attest(ctx, now.Add(time.Second))
		wantErr(t, err, evidence.ErrPCRNotExtended)
		// Same build booted again: trusted again, reboot flagged.
		h.boot(bootseed.BuildA())
		h.measure(bootseed.IMAFile{Path: "/usr/bin/bash", Content: []byte("bash")})
		res, err := h.attest(ctx, now.Add(2*time.Second))
		if err != nil {
			t.Fatalf("after reboot: %v", err)
		}
		if !res.Rebooted || res.Clock.ResetCount <= prevReset {
			t.Errorf("reboot not detected: rebooted=%v resetCount %d -> %d", res.Rebooted, prevReset, res.Clock.ResetCount)
		}
		if r := p.Evaluate(policy.Input{PCRs: res.PCRs, Boot: res.Boot, IMA: res.IMA.New}); !r.Pass {
			t.Errorf("same build after reboot: %v", r.Reasons)
		}
	})

	t.Run("wrong_nonce", func(t *testing.T) {
		b := factory(t)
		h, _, now := golden(t, b, akAlg)
		ch := challenge(t, now, bootPCRs)
		ev := h.collect(ctx, challenge(t, now, bootPCRs)) // quoted with another nonce
		_, err := evidence.Verify(h.binding, ch, ev, h.prev, evidence.Options{Now: now})
		wantErr(t, err, evidence.ErrNonceMismatch)
	})

	t.Run("reused_nonce", func(t *testing.T) {
		b := factory(t)
		h, _, now := golden(t, b, akAlg)
		ledger := evidence.NewLedger(time.Minute)
		issued, err := ledger.Issue(rand.Reader, now, "compute-1", bootPCRs)
		if err != nil {
			t.Fatal(err)
		}
		ev := h.collect(ctx, issued)
		ch, err := ledger.Consume("compute-1", issued.Nonce, now)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := evidence.Verify(h.binding, ch, ev, h.prev, evidence.Options{Now: now}); err != nil {
			t.Fatalf("first use: %v", err)
		}
		ch, err = ledger.Consume("compute-1", issued.Nonce, now)
		wantErr(t, err, evidence.ErrNonceReused)
		_, err = evidence.Verify(h.binding, ch, ev, h.prev, evidence.Options{Now: now})
		wantErr(t, err, evidence.ErrNonceReused)
	})

	t.Run("quote_signed_by_other_tpm_ak", func(t *testing.T) {
		b := factory(t)
		h, _, now := golden(t, b, akAlg)
		other := newHost(t, otherTPM(t), akAlg)
		other.boot(bootseed.BuildA())
		other.enroll(ctx)
		ch := challenge(t, now, bootPCRs)
		ev := other.collect(ctx, ch)
		_, err := evidence.Verify(h.binding, ch, ev, h.prev, evidence.Options{Now: now})
		wantErr(t, err, evidence.ErrSignature)
	})

	t.Run("ak_never_activated_for_this_ek", func(t *testing.T) {
		b := factory(t)
		h, _, now := golden(t, b, akAlg)
		// A relay: the attacker registers this host's EK with an AK from
		// another TPM. The credential names the foreign AK, so this TPM
		// cannot activate it, and the foreign TPM lacks the EK.
		other := newHost(t, otherTPM(t), akAlg)
		other.boot(bootseed.BuildA())
		foreignAK, err := other.agent.AK(ctx)
		if err != nil {
			t.Fatal(err)
		}
		akPub, err := evidence.ParseAKPublic(foreignAK.Public)
		if err != nil {
			t.Fatal(err)
		}
		secret, cred, err := evidence.MakeCredential(rand.Reader, h.binding.EK, akPub.Name)
		if err != nil {
			t.Fatal(err)
		}
		if got, err := h.agent.ActivateCredential(ctx, cred.IDObject, cred.EncryptedSecret); err == nil {
			wantErr(t, evidence.CheckActivation(secret, got), evidence.ErrActivation)
		}
		if got, err := other.agent.ActivateCredential(ctx, cred.IDObject, cred.EncryptedSecret); err == nil {
			wantErr(t, evidence.CheckActivation(secret, got), evidence.ErrActivation)
		}
		relay := evidence.Binding{EK: h.binding.EK, AK: akPub, Activated: false}
		ch := challenge(t, now, bootPCRs)
		_, err = evidence.Verify(relay, ch, other.collect(ctx, ch), nil, evidence.Options{Now: now})
		wantErr(t, err, evidence.ErrAKNotActivated)
	})

	t.Run("partial_pcr_selection", func(t *testing.T) {
		b := factory(t)
		h, _, now := golden(t, b, akAlg)
		ch := challenge(t, now, bootPCRs)
		q, err := h.agent.Quote(ctx, ch.Nonce, []int{0, 1, 2, 3, 4, 5, 6, 7})
		if err != nil {
			t.Fatal(err)
		}
		ev := h.collect(ctx, ch)
		ev.Attest, ev.Signature = q.Attest, q.Signature
		_, err = evidence.Verify(h.binding, ch, ev, h.prev, evidence.Options{Now: now})
		wantErr(t, err, evidence.ErrPCRSelection)
	})

	t.Run("sha1_only_selection", func(t *testing.T) {
		b := factory(t)
		h, _, now := golden(t, b, akAlg)
		ch := challenge(t, now, bootPCRs)
		q, err := h.agent.QuoteBank(ctx, ch.Nonce, uint16(tpm2.TPMAlgSHA1), bootPCRs)
		if err != nil {
			t.Fatalf("quote SHA-1 bank (allocated: %v): %v", b.sha1Bank, err)
		}
		ev := h.collect(ctx, ch)
		ev.Attest, ev.Signature, ev.PCRs = q.Attest, q.Signature, q.PCRs
		_, err = evidence.Verify(h.binding, ch, ev, h.prev, evidence.Options{Now: now})
		wantErr(t, err, evidence.ErrSHA256Missing)
	})

	t.Run("event_data_altered", func(t *testing.T) {
		b := factory(t)
		h, _, now := golden(t, b, akAlg)
		p := filepath.Join(h.dir, "binary_bios_measurements")
		log, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, bytes.ReplaceAll(log, []byte("ro quiet"), []byte("ro QUIET")), 0o600); err != nil {
			t.Fatal(err)
		}
		h.prev = nil // no steady-state shortcut: first attestation of this log
		_, err = h.attest(ctx, now.Add(time.Second))
		wantErr(t, err, evidence.ErrEventData)
	})

	t.Run("event_log_truncated_and_garbage", func(t *testing.T) {
		b := factory(t)
		h, _, now := golden(t, b, akAlg)
		p := filepath.Join(h.dir, "binary_bios_measurements")
		log, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		h.prev = nil
		for _, bad := range [][]byte{log[:len(log)/2], append(bytes.Clone(log), 0xde, 0xad, 0xbe, 0xef), bytes.Repeat([]byte{0xa5}, 512)} {
			if err := os.WriteFile(p, bad, 0o600); err != nil {
				t.Fatal(err)
			}
			_, err = h.attest(ctx, now.Add(time.Second))
			wantErr(t, err, evidence.ErrEventLog)
		}
	})
}

// otherTPM is a second, independent TPM (a private swtpm).
func otherTPM(t *testing.T) tpm.Opener {
	t.Helper()
	s := servicetest.SWTPM(t, servicetest.SWTPMOptions{})
	return func(ctx contextT) (tpmCloser, error) { return tpm.DialSWTPM(ctx, s.ServerAddr, 5*time.Second) }
}

func hasReason(rs []string, prefix string) bool {
	for _, r := range rs {
		if strings.HasPrefix(r, prefix) {
			return true
		}
	}
	return false
}

// TestSWTPMEKCertificateAndSharing checks the EK certificate swtpm_setup
// wrote against its private CA (and refuses another TPM's CA), and that the
// agent holds no connection between operations: tpm2-tools can use the
// same swtpm in between.
func TestSWTPMEKCertificateAndSharing(t *testing.T) {
	s := servicetest.SWTPM(t, servicetest.SWTPMOptions{EKCert: true})
	ctx := t.Context()
	for _, alg := range []string{tpm.AlgAuto, tpm.AlgRSA, tpm.AlgECC384} {
		t.Run(alg, func(t *testing.T) {
			agent, err := tpm.Open(tpm.Config{SWTPM: s.ServerAddr, EKAlgorithm: alg, StateDir: t.TempDir()})
			if err != nil {
				t.Fatal(err)
			}
			ek, err := agent.EK(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if ek.Certificate == nil || ek.Handle == 0 {
				t.Fatalf("EK %s: cert %d bytes, handle 0x%x", ek.Algorithm, len(ek.Certificate), ek.Handle)
			}
			pub, err := evidence.ParseEKPublic(ek.Public)
			if err != nil {
				t.Fatal(err)
			}
			roots, inter := certPool(t, s.CACertPath), certPool(t, s.IssuerCertPath)
			if err := evidence.CheckEKCertificate(pub, ek.Certificate, roots, inter, time.Now()); err != nil {
				t.Fatalf("EK %s certificate: %v", ek.Algorithm, err)
			}
			// tpm2-tools between two agent operations.
			out := s.Tool(t, "tpm2_pcrread", "sha256:0")
			if !strings.Contains(out, "sha256") {
				t.Fatalf("tpm2_pcrread: %q", out)
			}
			// Credential activation with this EK (RSA policy / P-384 password).
			h := &host{t: t, agent: agent}
			h.enroll(ctx)
		})
	}
	other := servicetest.SWTPM(t, servicetest.SWTPMOptions{EKCert: true})
	agent, err := tpm.Open(tpm.Config{SWTPM: s.ServerAddr})
	if err != nil {
		t.Fatal(err)
	}
	ek, err := agent.EK(ctx)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := evidence.ParseEKPublic(ek.Public)
	if err != nil {
		t.Fatal(err)
	}
	err = evidence.CheckEKCertificate(pub, ek.Certificate, certPool(t, other.CACertPath), certPool(t, other.IssuerCertPath), time.Now())
	wantErr(t, err, evidence.ErrEKCertChain)
	otherAgent, err := tpm.Open(tpm.Config{SWTPM: other.ServerAddr})
	if err != nil {
		t.Fatal(err)
	}
	otherEK, err := otherAgent.EK(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// A genuine certificate presented with another TPM's EK.
	otherPub, err := evidence.ParseEKPublic(otherEK.Public)
	if err != nil {
		t.Fatal(err)
	}
	err = evidence.CheckEKCertificate(otherPub, ek.Certificate, certPool(t, s.CACertPath), certPool(t, s.IssuerCertPath), time.Now())
	wantErr(t, err, evidence.ErrEKCertMismatch)
}

func certPool(t *testing.T, path string) *x509.CertPool {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	p := x509.NewCertPool()
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			break
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		p.AddCert(c)
	}
	return p
}
