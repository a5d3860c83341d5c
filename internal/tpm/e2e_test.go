package tpm_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2/transport"

	"github.com/trustpool/trustpool/internal/bootseed"
	"github.com/trustpool/trustpool/internal/eventlog"
	"github.com/trustpool/trustpool/internal/evidence"
	"github.com/trustpool/trustpool/internal/tpm"
	"github.com/trustpool/trustpool/internal/tpm/tpmtest"
)

type (
	contextT  = context.Context
	tpmCloser = transport.TPMCloser
)

func sha256Digest(s string) map[eventlog.Alg][]byte {
	return map[eventlog.Alg][]byte{eventlog.SHA256: eventlog.SHA256.Sum([]byte(s))}
}

var bootPCRs = []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10}

// host is one attested machine in a test: a TPM (simulator or swtpm), the
// agent's tpm.TPM and the verifier's binding.
type host struct {
	t       testing.TB
	raw     func() transport.TPMCloser // direct access for seeding
	agent   *tpm.TPM
	dir     string
	binding evidence.Binding
	prev    *evidence.Previous
	imaOff  int64
}

func newHost(t testing.TB, open tpm.Opener, akAlg string) *host {
	t.Helper()
	dir := t.TempDir()
	agent, err := tpm.New(open, tpm.Config{
		StateDir:     filepath.Join(dir, "state"),
		EventLogPath: filepath.Join(dir, "binary_bios_measurements"),
		IMALogPath:   filepath.Join(dir, "binary_runtime_measurements"),
		AKAlgorithm:  akAlg,
	})
	if err != nil {
		t.Fatal(err)
	}
	return &host{t: t, agent: agent, dir: dir, raw: func() transport.TPMCloser {
		c, err := open(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		return c
	}}
}

// boot seeds the TPM with variant v and writes the agent's event log file.
func (h *host) boot(v bootseed.Variant) {
	h.t.Helper()
	c := h.raw()
	defer c.Close()
	log, err := bootseed.Seed(context.Background(), c, v)
	if err != nil {
		h.t.Fatalf("seed %s: %v", v.Name, err)
	}
	if err := os.WriteFile(filepath.Join(h.dir, "binary_bios_measurements"), log, 0o600); err != nil {
		h.t.Fatal(err)
	}
	for _, f := range []string{"binary_runtime_measurements", "binary_runtime_measurements_sha256"} {
		os.Remove(filepath.Join(h.dir, f))
	}
	h.imaOff = 0
}

// measure appends IMA entries (boot_aggregate first when the log is new).
func (h *host) measure(files ...bootseed.IMAFile) {
	h.t.Helper()
	c := h.raw()
	defer c.Close()
	p := filepath.Join(h.dir, "binary_runtime_measurements")
	_, err := os.Stat(p)
	logs, err := bootseed.AppendIMA(c, files, errors.Is(err, os.ErrNotExist))
	if err != nil {
		h.t.Fatal(err)
	}
	appendFile(h.t, p, logs.SHA1)
	appendFile(h.t, p+"_sha256", logs.SHA256)
}

func appendFile(t testing.TB, p string, b []byte) {
	t.Helper()
	f, err := os.OpenFile(p, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write(b); err != nil {
		t.Fatal(err)
	}
}

// enroll runs the enrollment protocol: EK, AK, MakeCredential,
// ActivateCredential, CheckActivation.
func (h *host) enroll(ctx context.Context) {
	h.t.Helper()
	ek, err := h.agent.EK(ctx)
	if err != nil {
		h.t.Fatalf("EK: %v", err)
	}
	ak, err := h.agent.AK(ctx)
	if err != nil {
		h.t.Fatalf("AK: %v", err)
	}
	ekPub, err := evidence.ParseEKPublic(ek.Public)
	if err != nil {
		h.t.Fatal(err)
	}
	akPub, err := evidence.ParseAKPublic(ak.Public)
	if err != nil {
		h.t.Fatal(err)
	}
	if !bytes.Equal(akPub.Name, ak.Name) {
		h.t.Fatalf("AK name: verifier computed %x, TPM says %x", akPub.Name, ak.Name)
	}
	secret, cred, err := evidence.MakeCredential(rand.Reader, ekPub, akPub.Name)
	if err != nil {
		h.t.Fatal(err)
	}
	got, err := h.agent.ActivateCredential(ctx, cred.IDObject, cred.EncryptedSecret)
	if err != nil {
		h.t.Fatalf("ActivateCredential: %v", err)
	}
	if err := evidence.CheckActivation(secret, got); err != nil {
		h.t.Fatal(err)
	}
	h.binding = evidence.Binding{EK: ekPub, AK: akPub, Activated: true}
}

// collect asks the agent for evidence for ch.
func (h *host) collect(ctx context.Context, ch evidence.Challenge) *evidence.Evidence {
	h.t.Helper()
	q, err := h.agent.Quote(ctx, ch.Nonce, ch.PCRs)
	if err != nil {
		h.t.Fatalf("Quote: %v", err)
	}
	log, err := h.agent.EventLog()
	if err != nil {
		h.t.Fatalf("EventLog: %v", err)
	}
	ev := &evidence.Evidence{Attest: q.Attest, Signature: q.Signature, PCRs: q.PCRs, EventLog: log, IMAOffset: h.imaOff}
	if _, err := os.Stat(filepath.Join(h.dir, "binary_runtime_measurements")); err == nil {
		data, hs, _, err := h.agent.IMALog(h.imaOff)
		if err != nil {
			h.t.Fatal(err)
		}
		ev.IMALog, ev.IMAHashSize = data, hs
	}
	return ev
}

func challenge(t testing.TB, now time.Time, pcrs []int) evidence.Challenge {
	t.Helper()
	ch, err := evidence.NewChallenge(rand.Reader, now, "compute-1", pcrs)
	if err != nil {
		t.Fatal(err)
	}
	return ch
}

// attest runs one full round and, on success, advances the host's verified
// state like the service would.
func (h *host) attest(ctx context.Context, now time.Time) (*evidence.Result, error) {
	h.t.Helper()
	ch := challenge(h.t, now, bootPCRs)
	ev := h.collect(ctx, ch)
	res, err := evidence.Verify(h.binding, ch, ev, h.prev, evidence.Options{Now: now})
	if err != nil {
		return nil, err
	}
	h.accept(res)
	return res, nil
}

func (h *host) accept(res *evidence.Result) {
	h.prev = &evidence.Previous{Clock: res.Clock, PCRs: res.PCRs, EventLogDigest: res.EventLogDigest, Boot: res.Boot}
	if res.IMA != nil {
		h.prev.IMA = res.IMA.State
		h.imaOff = res.IMA.State.Offset
	}
}

func TestSimulatorEndToEnd(t *testing.T) {
	for _, alg := range []string{tpm.AlgECC, tpm.AlgRSA} {
		t.Run(alg, func(t *testing.T) {
			sim := tpmtest.Simulator(t)
			ctx := t.Context()
			h := newHost(t, sim.Opener(), alg)
			h.boot(bootseed.BuildA())
			h.measure(bootseed.IMAFile{Path: "/usr/bin/bash", Content: []byte("bash")})
			h.enroll(ctx)
			now := time.Now()
			res, err := h.attest(ctx, now)
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			if res.Boot == nil || res.Boot.SecureBoot != eventlog.SecureBootEnabled || res.Boot.KernelPath != bootseed.BuildA().KernelPath {
				t.Fatalf("boot facts: %+v", res.Boot)
			}
			if res.IMA == nil || len(res.IMA.New) != 2 || res.IMA.New[1].Path() != "/usr/bin/bash" {
				t.Fatalf("IMA: %+v", res.IMA)
			}
			// Incremental IMA: one more file, only it is new.
			h.measure(bootseed.IMAFile{Path: "/usr/bin/python3", Content: []byte("py"), Signature: []byte{}})
			res, err = h.attest(ctx, now.Add(time.Second))
			if err != nil {
				t.Fatalf("second Verify: %v", err)
			}
			if res.IMA == nil || len(res.IMA.New) != 1 || res.IMA.New[0].Template() != "ima-sig" {
				t.Fatalf("incremental IMA: %+v", res.IMA)
			}
		})
	}
}
