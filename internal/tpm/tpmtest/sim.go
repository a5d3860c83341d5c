// Package tpmtest provides TPMs for tests: the go-tpm-tools in-process
// reference simulator (one per process, shared) behind a tpm.Opener. Test
// code only; production code must not import it (it links the cgo
// simulator).
package tpmtest

import (
	"context"
	"sync"
	"testing"

	"github.com/google/go-tpm-tools/simulator"
	"github.com/google/go-tpm/tpm2/transport"
	"github.com/google/go-tpm/tpmutil"
)

var (
	simMu   sync.Mutex
	sim     *simulator.Simulator
	simLock sync.Mutex // held by the test currently using the simulator
)

// Sim is the process-wide simulator.
type Sim struct {
	s *simulator.Simulator
}

// Send implements transport.TPM.
func (s *Sim) Send(cmd []byte) ([]byte, error) { return tpmutil.RunCommandRaw(s.s, cmd) }

// Close is a no-op: the simulator lives for the whole test process.
func (s *Sim) Close() error { return nil }

// Opener returns connections to the simulator for tpm.New.
func (s *Sim) Opener() func(context.Context) (transport.TPMCloser, error) {
	return func(context.Context) (transport.TPMCloser, error) { return s, nil }
}

// Reboot performs a TPM reset (power cycle + Startup(CLEAR)): PCRs return
// to their reset values and resetCount increases.
func (s *Sim) Reboot(t testing.TB) {
	t.Helper()
	if err := s.s.Reset(); err != nil {
		t.Fatalf("reset simulator: %v", err)
	}
}

// Simulator returns the process-wide simulator, reset to a fresh boot, and
// holds it exclusively until the test ends (the simulator allows one
// instance per process, so its tests cannot run in parallel).
func Simulator(t testing.TB) *Sim {
	t.Helper()
	simLock.Lock()
	t.Cleanup(simLock.Unlock)
	simMu.Lock()
	defer simMu.Unlock()
	if sim == nil {
		s, err := simulator.Get()
		if err != nil {
			t.Fatalf("start simulator: %v", err)
		}
		sim = s
	}
	st := &Sim{s: sim}
	st.Reboot(t)
	return st
}

var _ transport.TPMCloser = (*Sim)(nil)
