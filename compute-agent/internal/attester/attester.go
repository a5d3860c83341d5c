// Package attester answers the attestation service's calls on the agent's
// RPC server (topic trustpool-agent, server = host): quote and ping.
//
// A quote is TPM2_Quote over the verifier's nonce and PCR selection with the
// AK, followed by the reads of the firmware event log and of the IMA list
// from the verifier's offset, in that order, so the logs cover at least what
// the quote covers (IMA entries appended after the quote are left for the
// verifier's next round). The firmware log is left out when its SHA-256
// equals log_offsets.event_log_digest (steady state).
//
// Nothing here judges the evidence: the agent is the attester, not the
// verifier, and everything it returns is untrusted by the service. The
// handlers check only the shape of the arguments (attestrpc's Validate) and
// refuse unknown keyword arguments, as Python's oslo dispatcher would.
// Nonces are never logged in full.
package attester

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"strings"
	"time"

	"github.com/trustpool/trustpool/internal/attestrpc"
	"github.com/trustpool/trustpool/internal/jsondecode"
	"github.com/trustpool/trustpool/internal/oslo"
	"github.com/trustpool/trustpool/internal/tpm"
)

// TPM is what the attester needs of the host's TPM (*tpm.TPM implements it).
type TPM interface {
	Quote(ctx context.Context, nonce []byte, pcrs []int) (*tpm.Quote, error)
	EventLog() ([]byte, error)
	IMALog(offset int64) (data []byte, hashSize int, next int64, err error)
}

var _ TPM = (*tpm.TPM)(nil)

// Config configures an Attester.
type Config struct {
	// TPM quotes and reads the logs (required).
	TPM TPM
	// Host is the agent's host name, returned by ping.
	Host string
	// Version is the agent version, returned by ping.
	Version string
	// IMA says the IMA list is configured; when false no IMA log is sent.
	IMA bool
	// Timeout bounds one quote (zero: 30s).
	Timeout time.Duration
	// Logger receives one debug line per call; nil discards.
	Logger *slog.Logger
}

// Attester serves quote and ping.
type Attester struct {
	cfg Config
	log *slog.Logger
}

// New returns an Attester.
func New(cfg Config) *Attester {
	if cfg.Timeout <= 0 {
		cfg.Timeout = 30 * time.Second
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Attester{cfg: cfg, log: log}
}

// Endpoint is the oslo endpoint (version attestrpc.APIVersion) with the
// agent's methods.
func (a *Attester) Endpoint() oslo.Endpoint {
	return oslo.Endpoint{
		Version: attestrpc.APIVersion,
		Methods: map[string]oslo.Handler{
			attestrpc.MethodQuote: a.handleQuote,
			attestrpc.MethodPing:  a.handlePing,
		},
	}
}

func (a *Attester) handleQuote(ctx context.Context, req *oslo.Request) (any, error) {
	var args attestrpc.QuoteArgs
	if err := DecodeArgs(req.Args, &args); err != nil {
		return nil, err
	}
	if err := args.Validate(); err != nil {
		return nil, oslo.NewValueError(err.Error())
	}
	return a.Quote(ctx, &args)
}

func (a *Attester) handlePing(_ context.Context, req *oslo.Request) (any, error) {
	var none struct{}
	if err := DecodeArgs(req.Args, &none); err != nil {
		return nil, err
	}
	return &attestrpc.PingResult{Host: a.cfg.Host, AgentVersion: a.cfg.Version}, nil
}

// Quote produces the evidence for args, which must have been validated.
func (a *Attester) Quote(ctx context.Context, args *attestrpc.QuoteArgs) (*attestrpc.QuoteResult, error) {
	ctx, cancel := context.WithTimeout(ctx, a.cfg.Timeout)
	defer cancel()
	q, err := a.cfg.TPM.Quote(ctx, args.Nonce, args.PCRSelection)
	if err != nil {
		a.log.Warn("quote failed", "nonce_prefix", NoncePrefix(args.Nonce), "error", err)
		return nil, fmt.Errorf("quote: %w", err)
	}
	res := &attestrpc.QuoteResult{Attest: q.Attest, Signature: q.Signature, PCRs: q.PCRs, IMAOffset: args.LogOffsets.IMA}

	evlog, err := a.cfg.TPM.EventLog()
	switch {
	case errors.Is(err, fs.ErrNotExist):
		// No firmware log on this host: the verifier decides (it refuses
		// unless configured otherwise).
		a.log.Warn("firmware event log missing; quoting without it", "error", err)
	case err != nil:
		return nil, fmt.Errorf("quote: %w", err)
	case !sameDigest(evlog, args.LogOffsets.EventLogDigest):
		res.EventLog = evlog
	}

	if a.cfg.IMA {
		data, hashSize, _, err := a.cfg.TPM.IMALog(args.LogOffsets.IMA)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			// IMA is not enabled on this host.
		case err != nil:
			return nil, fmt.Errorf("quote: %w", err)
		default:
			res.IMALog, res.IMAHashSize = data, hashSize
		}
	}
	a.log.Debug("quote answered", "nonce_prefix", NoncePrefix(args.Nonce), "pcrs", args.PCRSelection,
		"event_log_sent", res.EventLog != nil, "ima_offset", res.IMAOffset, "ima_bytes", len(res.IMALog))
	return res, nil
}

// sameDigest reports whether SHA-256 of log is the hex digest want.
func sameDigest(log []byte, want string) bool {
	if want == "" {
		return false
	}
	w, err := hex.DecodeString(strings.ToLower(want))
	if err != nil {
		return false
	}
	sum := sha256.Sum256(log)
	return bytes.Equal(sum[:], w)
}

// NoncePrefix is what may be logged of a nonce: its first 4 bytes in hex.
func NoncePrefix(nonce []byte) string {
	if len(nonce) > 4 {
		nonce = nonce[:4]
	}
	return hex.EncodeToString(nonce) + "…"
}

// DecodeArgs decodes an RPC request's keyword arguments into dst (a
// pointer to a struct with json tags). An unknown argument or one of the
// wrong type is a ValueError for the caller, as a Python endpoint would
// raise TypeError.
func DecodeArgs(args map[string]json.RawMessage, dst any) error {
	b, err := json.Marshal(args)
	if err != nil {
		return oslo.NewValueError(fmt.Sprintf("arguments: %v", err))
	}
	if err := jsondecode.Strict(b, dst); err != nil {
		return oslo.NewValueError(fmt.Sprintf("arguments: %v", err))
	}
	return nil
}
