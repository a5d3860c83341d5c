package attester_test

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/trustpool/trustpool/compute-agent/internal/attester"
	"github.com/trustpool/trustpool/internal/attestrpc"
	"github.com/trustpool/trustpool/internal/bootseed"
	"github.com/trustpool/trustpool/internal/evidence"
	"github.com/trustpool/trustpool/internal/oslo"
	"github.com/trustpool/trustpool/internal/tpm"
	"github.com/trustpool/trustpool/internal/tpm/tpmtest"
)

var quotePCRs = []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10}

// host is a simulator TPM booted with bootseed, its agent-side tpm.TPM and
// the verifier's binding.
type host struct {
	t       *testing.T
	sim     *tpmtest.Sim
	dir     string
	tpm     *tpm.TPM
	binding evidence.Binding
}

func newHost(t *testing.T) *host {
	t.Helper()
	sim := tpmtest.Simulator(t)
	dir := t.TempDir()
	tp, err := tpm.New(sim.Opener(), tpm.Config{
		StateDir:     filepath.Join(dir, "state"),
		EventLogPath: filepath.Join(dir, "binary_bios_measurements"),
		IMALogPath:   filepath.Join(dir, "binary_runtime_measurements"),
	})
	if err != nil {
		t.Fatal(err)
	}
	h := &host{t: t, sim: sim, dir: dir, tpm: tp}
	c, err := sim.Opener()(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	log, err := bootseed.Seed(t.Context(), c, bootseed.BuildA())
	c.Close()
	if err != nil {
		t.Fatal(err)
	}
	h.write("binary_bios_measurements", log)
	h.measure(true, bootseed.IMAFile{Path: "/usr/bin/bash", Content: []byte("bash")})
	h.enroll()
	return h
}

func (h *host) write(name string, b []byte) {
	h.t.Helper()
	f, err := os.OpenFile(filepath.Join(h.dir, name), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		h.t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write(b); err != nil {
		h.t.Fatal(err)
	}
}

func (h *host) measure(first bool, files ...bootseed.IMAFile) {
	h.t.Helper()
	c, err := h.sim.Opener()(h.t.Context())
	if err != nil {
		h.t.Fatal(err)
	}
	defer c.Close()
	logs, err := bootseed.AppendIMA(c, files, first)
	if err != nil {
		h.t.Fatal(err)
	}
	h.write("binary_runtime_measurements", logs.SHA1)
	h.write("binary_runtime_measurements_sha256", logs.SHA256)
}

func (h *host) enroll() {
	h.t.Helper()
	ctx := h.t.Context()
	ek, err := h.tpm.EK(ctx)
	if err != nil {
		h.t.Fatal(err)
	}
	ak, err := h.tpm.AK(ctx)
	if err != nil {
		h.t.Fatal(err)
	}
	ekPub, err := evidence.ParseEKPublic(ek.Public)
	if err != nil {
		h.t.Fatal(err)
	}
	akPub, err := evidence.ParseAKPublic(ak.Public)
	if err != nil {
		h.t.Fatal(err)
	}
	secret, cred, err := evidence.MakeCredential(rand.Reader, ekPub, akPub.Name)
	if err != nil {
		h.t.Fatal(err)
	}
	got, err := h.tpm.ActivateCredential(ctx, cred.IDObject, cred.EncryptedSecret)
	if err != nil {
		h.t.Fatal(err)
	}
	if err := evidence.CheckActivation(secret, got); err != nil {
		h.t.Fatal(err)
	}
	h.binding = evidence.Binding{EK: ekPub, AK: akPub, Activated: true}
}

// request builds the oslo request a service would send.
func request(t *testing.T, method string, args any) *oslo.Request {
	t.Helper()
	b, err := json.Marshal(args)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return &oslo.Request{Method: method, Args: m, IsCall: true}
}

// call dispatches through the endpoint, as the oslo server does, and
// round-trips the result through JSON, as the wire does.
func call(t *testing.T, a *attester.Attester, method string, args any, result any) error {
	t.Helper()
	h := a.Endpoint().Methods[method]
	if h == nil {
		t.Fatalf("no method %s", method)
	}
	res, err := h(t.Context(), request(t, method, args))
	if err != nil {
		return err
	}
	b, err := json.Marshal(res)
	if err != nil {
		t.Fatal(err)
	}
	return json.Unmarshal(b, result)
}

func toEvidence(r *attestrpc.QuoteResult) *evidence.Evidence {
	return &evidence.Evidence{
		Attest: r.Attest, Signature: r.Signature, PCRs: r.PCRs, EventLog: r.EventLog,
		IMALog: r.IMALog, IMAOffset: r.IMAOffset, IMAHashSize: r.IMAHashSize,
	}
}

// TestQuoteVerifies: the evidence the handler returns passes the verifier,
// first in full, then in steady state (event log left out because the
// verifier already has it, IMA continued from the verified offset).
func TestQuoteVerifies(t *testing.T) {
	h := newHost(t)
	a := attester.New(attester.Config{TPM: h.tpm, Host: "compute-1", IMA: true})
	now := time.Now()
	ch, err := evidence.NewChallenge(rand.Reader, now, "compute-1", quotePCRs)
	if err != nil {
		t.Fatal(err)
	}
	var r1 attestrpc.QuoteResult
	if err := call(t, a, "quote", &attestrpc.QuoteArgs{Nonce: ch.Nonce, PCRSelection: quotePCRs}, &r1); err != nil {
		t.Fatalf("quote: %v", err)
	}
	if len(r1.EventLog) == 0 || len(r1.IMALog) == 0 || r1.IMAHashSize != 32 || r1.IMAOffset != 0 {
		t.Fatalf("first quote: event log %d bytes, IMA %d bytes (hash size %d, offset %d)", len(r1.EventLog), len(r1.IMALog), r1.IMAHashSize, r1.IMAOffset)
	}
	res, err := evidence.Verify(h.binding, ch, toEvidence(&r1), nil, evidence.Options{Now: now})
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	if res.IMA == nil || len(res.IMA.New) != 2 {
		t.Fatalf("IMA result: %+v", res.IMA)
	}
	prev := &evidence.Previous{Clock: res.Clock, PCRs: res.PCRs, EventLogDigest: res.EventLogDigest, Boot: res.Boot, IMA: res.IMA.State}

	// Steady state: one more file measured; the verifier sends its digest
	// and IMA offset.
	h.measure(false, bootseed.IMAFile{Path: "/usr/bin/python3", Content: []byte("py")})
	now = now.Add(time.Second)
	ch2, err := evidence.NewChallenge(rand.Reader, now, "compute-1", quotePCRs)
	if err != nil {
		t.Fatal(err)
	}
	var r2 attestrpc.QuoteResult
	args := &attestrpc.QuoteArgs{Nonce: ch2.Nonce, PCRSelection: quotePCRs, LogOffsets: attestrpc.LogOffsets{
		IMA: res.IMA.State.Offset, EventLogDigest: hex.EncodeToString(res.EventLogDigest),
	}}
	if err := call(t, a, "quote", args, &r2); err != nil {
		t.Fatalf("quote: %v", err)
	}
	if r2.EventLog != nil {
		t.Errorf("event log sent although the verifier has it (%d bytes)", len(r2.EventLog))
	}
	if r2.IMAOffset != res.IMA.State.Offset || len(r2.IMALog) == 0 || len(r2.IMALog) >= len(r1.IMALog) {
		t.Errorf("IMA tail: offset %d (want %d), %d bytes", r2.IMAOffset, res.IMA.State.Offset, len(r2.IMALog))
	}
	res2, err := evidence.Verify(h.binding, ch2, toEvidence(&r2), prev, evidence.Options{Now: now})
	if err != nil {
		t.Fatalf("steady-state Verify: %v", err)
	}
	if len(res2.IMA.New) != 1 || res2.IMA.New[0].Path() != "/usr/bin/python3" {
		t.Errorf("incremental IMA: %+v", res2.IMA.New)
	}
}

// TestEventLogDigest: the event log is left out only when the digest is
// exactly its SHA-256.
func TestEventLogDigest(t *testing.T) {
	h := newHost(t)
	log, err := os.ReadFile(filepath.Join(h.dir, "binary_bios_measurements"))
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(log)
	other := sha256.Sum256(append(log, 0))
	a := attester.New(attester.Config{TPM: h.tpm})
	for _, tc := range []struct {
		name   string
		digest string
		sent   bool
	}{
		{"none", "", true},
		{"equal", hex.EncodeToString(sum[:]), false},
		{"equal upper case", strings.ToUpper(hex.EncodeToString(sum[:])), false},
		{"different", hex.EncodeToString(other[:]), true},
		{"not hex", "zz", true},
		{"prefix", hex.EncodeToString(sum[:4]), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var r attestrpc.QuoteResult
			nonce := make([]byte, 32)
			rand.Read(nonce)
			args := &attestrpc.QuoteArgs{Nonce: nonce, PCRSelection: []int{0, 7}, LogOffsets: attestrpc.LogOffsets{EventLogDigest: tc.digest}}
			if err := call(t, a, "quote", args, &r); err != nil {
				t.Fatal(err)
			}
			if got := r.EventLog != nil; got != tc.sent {
				t.Errorf("event log sent = %v, want %v", got, tc.sent)
			}
			if r.IMALog != nil {
				t.Error("IMA log sent with IMA off")
			}
		})
	}
}

// TestQuoteRejectsBadArguments: the shape checks answer ValueError, as a
// Python endpoint raising on bad keyword arguments would.
func TestQuoteRejectsBadArguments(t *testing.T) {
	a := attester.New(attester.Config{TPM: failTPM{}})
	nonce := make([]byte, 32)
	for _, tc := range []struct {
		name string
		args any
		msg  string
	}{
		{"short nonce", map[string]any{"nonce": []byte("short"), "pcr_selection": []int{0}}, "nonce"},
		{"no pcrs", map[string]any{"nonce": nonce}, "pcr"},
		{"pcr out of range", map[string]any{"nonce": nonce, "pcr_selection": []int{24}}, "24"},
		{"repeated pcr", map[string]any{"nonce": nonce, "pcr_selection": []int{1, 1}}, "1"},
		{"negative ima offset", map[string]any{"nonce": nonce, "pcr_selection": []int{1}, "log_offsets": map[string]any{"ima": -1}}, "ima"},
		{"unknown argument", map[string]any{"nonce": nonce, "pcr_selection": []int{1}, "pcrs": []int{1}}, `unknown field "pcrs"`},
		{"wrong type", map[string]any{"nonce": 42, "pcr_selection": []int{1}}, "nonce: want a base64 string, got a number"},
		{"wrong element type", map[string]any{"nonce": nonce, "pcr_selection": []string{"1"}}, "pcr_selection: want an integer, got a string"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var r attestrpc.QuoteResult
			err := call(t, a, "quote", tc.args, &r)
			var re *oslo.RemoteError
			if !errors.As(err, &re) || re.Class != "ValueError" {
				t.Fatalf("quote(%v) = %v, want a ValueError", tc.args, err)
			}
			// The message goes back to the caller: it says what was wrong and
			// names no Go type.
			if !strings.Contains(re.Message, tc.msg) || strings.Contains(re.Message, "Go ") || strings.Contains(re.Message, "[]") {
				t.Errorf("quote(%v) message %q, want it to contain %q and no Go type", tc.args, re.Message, tc.msg)
			}
		})
	}
}

// failTPM fails every operation; the handler must not reach it on bad
// arguments, and must pass its errors on otherwise.
type failTPM struct{ logErr, imaErr error }

var errTPM = errors.New("tpm on fire")

func (failTPM) Quote(context.Context, []byte, []int) (*tpm.Quote, error) {
	return &tpm.Quote{Attest: []byte("a"), Signature: []byte("s"), PCRs: map[int][]byte{0: make([]byte, 32)}}, nil
}
func (f failTPM) EventLog() ([]byte, error) { return []byte("log"), f.logErr }
func (f failTPM) IMALog(off int64) ([]byte, int, int64, error) {
	return []byte("ima"), 32, off + 3, f.imaErr
}

type quoteFails struct{ failTPM }

func (quoteFails) Quote(context.Context, []byte, []int) (*tpm.Quote, error) { return nil, errTPM }

func TestQuoteErrors(t *testing.T) {
	nonce := make([]byte, 32)
	args := &attestrpc.QuoteArgs{Nonce: nonce, PCRSelection: []int{0}, LogOffsets: attestrpc.LogOffsets{IMA: 7}}
	for _, tc := range []struct {
		name             string
		tpm              attester.TPM
		wantErr          error
		wantLog, wantIMA bool
	}{
		{"all there", failTPM{}, nil, true, true},
		{"quote fails", quoteFails{}, errTPM, false, false},
		{"no event log file", failTPM{logErr: fs.ErrNotExist}, nil, false, true},
		{"event log unreadable", failTPM{logErr: fs.ErrPermission}, fs.ErrPermission, false, false},
		{"no IMA list", failTPM{imaErr: fs.ErrNotExist}, nil, true, false},
		{"IMA unreadable", failTPM{imaErr: fs.ErrPermission}, fs.ErrPermission, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := attester.New(attester.Config{TPM: tc.tpm, IMA: true})
			r, err := a.Quote(t.Context(), args)
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("Quote() error = %v, want %v", err, tc.wantErr)
			}
			if err != nil {
				return
			}
			if (r.EventLog != nil) != tc.wantLog || (r.IMALog != nil) != tc.wantIMA || r.IMAOffset != 7 {
				t.Errorf("Quote() = event log %q, IMA %q at %d", r.EventLog, r.IMALog, r.IMAOffset)
			}
		})
	}
}

func TestPing(t *testing.T) {
	a := attester.New(attester.Config{TPM: failTPM{}, Host: "compute-1", Version: "9.9"})
	var r attestrpc.PingResult
	if err := call(t, a, "ping", map[string]any{}, &r); err != nil {
		t.Fatal(err)
	}
	if r.Host != "compute-1" || r.AgentVersion != "9.9" {
		t.Errorf("ping = %+v", r)
	}
	var re *oslo.RemoteError
	if err := call(t, a, "ping", map[string]any{"x": 1}, &r); !errors.As(err, &re) {
		t.Errorf("ping(x=1) = %v, want ValueError", err)
	}
}

func TestNoncePrefix(t *testing.T) {
	if got := attester.NoncePrefix([]byte{1, 2, 3, 4, 5, 6}); got != "01020304…" {
		t.Errorf("NoncePrefix = %q", got)
	}
}
