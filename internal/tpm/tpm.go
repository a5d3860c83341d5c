// Package tpm is the agent-side TPM layer: it opens the host's TPM
// (/dev/tpmrm0, a swtpm socket, or an injected transport such as the
// go-tpm-tools simulator in tests), reads the EK and its certificate,
// creates and persists the AK, answers credential-activation challenges,
// quotes PCRs with a verifier's nonce and reads the measured-boot and IMA
// logs.
//
// It uses go-tpm's TPMDirect API (github.com/google/go-tpm/tpm2) only; see
// package evidence for why that library pair (go-tpm + go-tpm-tools'
// simulator for tests) was chosen.
//
// # Connections
//
// Every exported operation opens the TPM, runs, flushes every transient
// object and session it created, and closes the connection again. swtpm
// serves one connection at a time and has no resource manager, so holding
// the connection only per operation lets other clients (tpm2-tools in tests
// and demos) use the same TPM in between, and flushing keeps libtpms' three
// transient slots free. Operations of one *TPM are serialised.
//
// # What is trusted
//
// Nothing this package returns is trusted by the verifier: quotes are
// verified by package evidence. The AK is created under an ECC P-256 SRK in
// the owner hierarchy (so resetCount/restartCount in quotes carry a
// per-key offset, see evidence) and stored as a public/private blob in the
// state directory (mode 0600); a TPM whose owner seed changed can no longer
// load it and the agent must re-enroll.
package tpm

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
	"github.com/google/go-tpm/tpm2/transport/linuxtpm"
)

// Defaults for [Config].
const (
	DefaultDevice       = "/dev/tpmrm0"
	DefaultEventLogPath = "/sys/kernel/security/tpm0/binary_bios_measurements"
	DefaultIMALogPath   = "/sys/kernel/security/ima/binary_runtime_measurements"
)

// Key algorithm names accepted in [Config].
const (
	AlgECC    = "ecc"
	AlgRSA    = "rsa"
	AlgECC384 = "ecc384"
	AlgAuto   = "auto"
)

// Errors.
var (
	ErrConfig   = errors.New("invalid TPM configuration")
	ErrNoEK     = errors.New("no usable endorsement key")
	ErrAKState  = errors.New("AK state unusable")
	ErrLogLimit = errors.New("log larger than the limit")
)

// Config selects and describes the TPM. Exactly one of Device and SWTPM is
// used; SWTPM wins when both are set.
type Config struct {
	// Device is the TPM character device (default /dev/tpmrm0).
	Device string
	// SWTPM is host:port of a swtpm server (data) port, e.g.
	// "127.0.0.1:2321". Raw TPM command framing is used, so no control
	// channel is needed (start swtpm with --flags not-need-init,startup-clear).
	SWTPM string
	// EventLogPath is the TCG firmware event log (default
	// /sys/kernel/security/tpm0/binary_bios_measurements).
	EventLogPath string
	// IMALogPath is the classic binary IMA list; when a sibling
	// "<path>_sha256" exists it is preferred (SHA-256 template-hash column).
	IMALogPath string
	// StateDir holds the AK blob (required for AK operations).
	StateDir string
	// AKAlgorithm is "ecc" (P-256, default) or "rsa" (2048).
	AKAlgorithm string
	// EKAlgorithm is "auto" (default: first EK that has a certificate, else
	// RSA), "rsa", "ecc" (P-256) or "ecc384" (P-384, high range, as
	// swtpm_setup --ecc makes).
	EKAlgorithm string
	// DialTimeout bounds connecting to swtpm (default 5s).
	DialTimeout time.Duration
}

// Opener opens a connection to the TPM for one operation.
type Opener func(ctx context.Context) (transport.TPMCloser, error)

// TPM is a handle on the host's TPM. It holds no connection between
// operations.
type TPM struct {
	open Opener
	cfg  Config
	mu   sync.Mutex
}

func (c *Config) setDefaults() {
	if c.EventLogPath == "" {
		c.EventLogPath = DefaultEventLogPath
	}
	if c.IMALogPath == "" {
		c.IMALogPath = DefaultIMALogPath
	}
	if c.AKAlgorithm == "" {
		c.AKAlgorithm = AlgECC
	}
	if c.EKAlgorithm == "" {
		c.EKAlgorithm = AlgAuto
	}
	if c.DialTimeout <= 0 {
		c.DialTimeout = 5 * time.Second
	}
}

func (c *Config) validate() error {
	var errs []error
	if c.AKAlgorithm != AlgECC && c.AKAlgorithm != AlgRSA {
		errs = append(errs, fmt.Errorf("%w: ak algorithm %q (want ecc or rsa)", ErrConfig, c.AKAlgorithm))
	}
	switch c.EKAlgorithm {
	case AlgAuto, AlgRSA, AlgECC, AlgECC384:
	default:
		errs = append(errs, fmt.Errorf("%w: ek algorithm %q (want auto, rsa, ecc or ecc384)", ErrConfig, c.EKAlgorithm))
	}
	return errors.Join(errs...)
}

// Open returns a TPM for the device or swtpm socket in cfg. It does not
// connect yet.
func Open(cfg Config) (*TPM, error) {
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("open TPM: %w", err)
	}
	if cfg.SWTPM != "" {
		addr, timeout := cfg.SWTPM, cfg.DialTimeout
		return New(func(ctx context.Context) (transport.TPMCloser, error) { return DialSWTPM(ctx, addr, timeout) }, cfg)
	}
	dev := cfg.Device
	if dev == "" {
		dev = DefaultDevice
	}
	return New(func(context.Context) (transport.TPMCloser, error) {
		t, err := linuxtpm.Open(dev)
		if err != nil {
			return nil, fmt.Errorf("open %s: %w", dev, err)
		}
		return t, nil
	}, cfg)
}

// New returns a TPM that uses open for every operation (tests inject the
// simulator this way).
func New(open Opener, cfg Config) (*TPM, error) {
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("new TPM: %w", err)
	}
	return &TPM{open: open, cfg: cfg}, nil
}

// session is one operation's connection plus the transient handles to
// flush before closing it.
type session struct {
	tpm   transport.TPM
	flush []tpm2.TPMHandle
}

func (s *session) track(h tpm2.TPMHandle) { s.flush = append(s.flush, h) }

// do runs f with a fresh connection and flushes what f tracked.
func (t *TPM) do(ctx context.Context, op string, f func(s *session) error) (err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	conn, err := t.open(ctx)
	if err != nil {
		return fmt.Errorf("%s: open TPM: %w", op, err)
	}
	s := &session{tpm: retrying{conn}}
	defer func() {
		for i := len(s.flush) - 1; i >= 0; i-- {
			if _, ferr := (tpm2.FlushContext{FlushHandle: s.flush[i]}).Execute(conn); ferr != nil && err == nil {
				err = fmt.Errorf("%s: flush 0x%08x: %w", op, uint32(s.flush[i]), ferr)
			}
		}
		if cerr := conn.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("%s: close TPM: %w", op, cerr)
		}
	}()
	if err := f(s); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	return nil
}

// Response codes after which a command is sent again unchanged: the TPM
// did not start it (Part 2, 6.6.3 warnings).
const (
	rcRetry   = 0x922
	rcYielded = 0x908
	rcTesting = 0x90A
)

// retrying resends a command the TPM answered with TPM_RC_RETRY, _YIELDED
// or _TESTING (libtpms returns RETRY for some ECC P-384 operations).
type retrying struct{ t transport.TPM }

func (r retrying) Send(cmd []byte) ([]byte, error) {
	for i := 0; ; i++ {
		rsp, err := r.t.Send(cmd)
		if err != nil || len(rsp) < 10 || i == 20 {
			return rsp, err
		}
		switch binary.BigEndian.Uint32(rsp[6:10]) {
		case rcRetry, rcYielded, rcTesting:
			time.Sleep(time.Duration(i+1) * 5 * time.Millisecond)
			continue
		}
		return rsp, nil
	}
}

// readFileLimited reads at most limit bytes of path starting at offset.
func readFileLimited(path string, offset int64, limit int) ([]byte, error) {
	f, err := os.Open(filepath.Clean(path))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if offset > 0 {
		if _, err := f.Seek(offset, io.SeekStart); err != nil {
			return nil, err
		}
	}
	b, err := io.ReadAll(io.LimitReader(f, int64(limit)+1))
	if err != nil {
		return nil, err
	}
	if len(b) > limit {
		return nil, fmt.Errorf("%s: %w (%d bytes)", path, ErrLogLimit, limit)
	}
	return b, nil
}
