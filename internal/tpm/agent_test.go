package tpm_test

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/trustpool/trustpool/internal/eventlog"
	"github.com/trustpool/trustpool/internal/tpm"
	"github.com/trustpool/trustpool/internal/tpm/tpmtest"
)

// TestAKPersisted: the AK is created once, stored 0600, and the same key is
// loaded by a new agent and after a TPM reset.
func TestAKPersisted(t *testing.T) {
	sim := tpmtest.Simulator(t)
	ctx := t.Context()
	dir := t.TempDir()
	a1, err := tpm.New(sim.Opener(), tpm.Config{StateDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	k1, err := a1.AK(ctx)
	if err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(filepath.Join(dir, "ak.json"))
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("ak.json mode %v, want 0600", st.Mode().Perm())
	}
	sim.Reboot(t)
	a2, err := tpm.New(sim.Opener(), tpm.Config{StateDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	k2, err := a2.AK(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(k1.Public, k2.Public) || !bytes.Equal(k1.Name, k2.Name) {
		t.Error("AK changed across agent restart and TPM reset")
	}
	// A state file for another algorithm is refused, not silently replaced.
	a3, err := tpm.New(sim.Opener(), tpm.Config{StateDir: dir, AKAlgorithm: tpm.AlgRSA})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a3.AK(ctx); !errors.Is(err, tpm.ErrAKState) {
		t.Errorf("RSA agent on an ECC AK state: %v, want %v", err, tpm.ErrAKState)
	}
}

func TestConfigRejected(t *testing.T) {
	for _, c := range []tpm.Config{{AKAlgorithm: "dsa"}, {EKAlgorithm: "ecc521"}} {
		if _, err := tpm.Open(c); !errors.Is(err, tpm.ErrConfig) {
			t.Errorf("Open(%+v) = %v, want %v", c, err, tpm.ErrConfig)
		}
	}
}

// TestIMALogIncremental: reads stop at entry boundaries, prefer the
// _sha256 list, and continue from the returned offset.
func TestIMALogIncremental(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "binary_runtime_measurements")
	agent, err := tpm.New(nil, tpm.Config{IMALogPath: p})
	if err != nil {
		t.Fatal(err)
	}
	entry := func(path string, hs int) []byte {
		d := sha256.Sum256([]byte(path))
		e, _ := eventlog.IMAEntryBytes(10, d[:], path, nil, false, hs)
		return e
	}
	e1, e2 := entry("boot_aggregate", 20), entry("/usr/bin/bash", 20)
	// The kernel is in the middle of appending e2.
	if err := os.WriteFile(p, append(bytes.Clone(e1), e2[:10]...), 0o600); err != nil {
		t.Fatal(err)
	}
	data, hs, next, err := agent.IMALog(0)
	if err != nil || hs != 20 || !bytes.Equal(data, e1) || next != int64(len(e1)) {
		t.Fatalf("first read: %d bytes, hash size %d, next %d, %v", len(data), hs, next, err)
	}
	if err := os.WriteFile(p, append(bytes.Clone(e1), e2...), 0o600); err != nil {
		t.Fatal(err)
	}
	data, _, next, err = agent.IMALog(next)
	if err != nil || !bytes.Equal(data, e2) || next != int64(len(e1)+len(e2)) {
		t.Fatalf("second read: %d bytes, next %d, %v", len(data), next, err)
	}
	data, _, next2, err := agent.IMALog(next)
	if err != nil || len(data) != 0 || next2 != next {
		t.Fatalf("read at end: %d bytes, next %d, %v", len(data), next2, err)
	}
	// A kernel with a SHA-256 list: it wins.
	s1 := entry("boot_aggregate", 32)
	if err := os.WriteFile(p+"_sha256", s1, 0o600); err != nil {
		t.Fatal(err)
	}
	data, hs, _, err = agent.IMALog(0)
	if err != nil || hs != 32 || !bytes.Equal(data, s1) {
		t.Fatalf("sha256 list: %d bytes, hash size %d, %v", len(data), hs, err)
	}
}

func TestEventLogLimit(t *testing.T) {
	p := filepath.Join(t.TempDir(), "log")
	if err := os.WriteFile(p, make([]byte, eventlog.MaxLogSize+1), 0o600); err != nil {
		t.Fatal(err)
	}
	agent, err := tpm.New(nil, tpm.Config{EventLogPath: p})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := agent.EventLog(); !errors.Is(err, tpm.ErrLogLimit) {
		t.Errorf("oversized log: %v, want %v", err, tpm.ErrLogLimit)
	}
}

// TestEKTemplatesSimulator enrolls with EKs created from the default RSA
// and ECC P-256 templates (no persistent EK, no certificate).
func TestEKTemplatesSimulator(t *testing.T) {
	sim := tpmtest.Simulator(t)
	for _, alg := range []string{tpm.AlgRSA, tpm.AlgECC} {
		t.Run(alg, func(t *testing.T) {
			agent, err := tpm.New(sim.Opener(), tpm.Config{StateDir: t.TempDir(), EKAlgorithm: alg})
			if err != nil {
				t.Fatal(err)
			}
			ek, err := agent.EK(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			if ek.Algorithm != alg || ek.Handle != 0 || ek.Certificate != nil {
				t.Errorf("EK %+v", ek)
			}
			h := &host{t: t, agent: agent}
			h.enroll(t.Context())
		})
	}
}

// TestIMALogAllocatesWhatIsThere: reading a short IMA list (and reading at
// its end, as the watcher does every few seconds) allocates about the
// list's size, not the 16 MiB an incremental read may return at most.
func TestIMALogAllocatesWhatIsThere(t *testing.T) {
	p := filepath.Join(t.TempDir(), "binary_runtime_measurements")
	d := sha256.Sum256([]byte("boot_aggregate"))
	e, _ := eventlog.IMAEntryBytes(10, d[:], "boot_aggregate", nil, false, 20)
	list := bytes.Repeat(e, 5) // about 500 bytes, like the demo's list
	if err := os.WriteFile(p, list, 0o600); err != nil {
		t.Fatal(err)
	}
	agent, err := tpm.New(nil, tpm.Config{IMALogPath: p})
	if err != nil {
		t.Fatal(err)
	}
	const calls = 20
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for range calls {
		data, _, next, err := agent.IMALog(0)
		if err != nil || !bytes.Equal(data, list) {
			t.Fatalf("IMALog(0) = %d bytes, %v", len(data), err)
		}
		if data, _, _, err := agent.IMALog(next); err != nil || len(data) != 0 {
			t.Fatalf("IMALog(end) = %d bytes, %v", len(data), err)
		}
	}
	runtime.ReadMemStats(&after)
	if per := (after.TotalAlloc - before.TotalAlloc) / (2 * calls); per > 64<<10 {
		t.Errorf("IMALog allocates %d bytes per call for a %d-byte list, want far less than 64 KiB", per, len(list))
	}
}
