// Package deliver is the agent's side of a trusted launch: the
// instance_present and deliver_secret RPC methods.
//
// instance_present answers whether the instance runs here and, as far as
// the hypervisor records it, which project owns it.
//
// deliver_secret, in order: the launch id must be new to this host (a blob
// is used once: the id is recorded, in the state directory, before
// anything else happens, so a replay is refused with reason replayed even
// after the first attempt failed or the agent restarted); the instance must
// run here (instance_not_present); the blob must parse (invalid_blob,
// package importblob); the TPM imports it under the endorsement key and
// unseals the key in a PCR policy session (pcr_mismatch when a PCR moved
// since the quote, import_failed when the blob was not made for this TPM,
// tpm_unavailable); for a blob sealed under PolicyAuthorize (API 1.2) the
// session also needs one of the call's approvals for the current PCRs
// (pcr_not_approved when none names them, approval_invalid when the TPM
// refuses its signature); the payload opens only for this launch and instance
// (invalid_blob); then the injector writes the secret and the receipt into
// the instance (inject_failed). Refusals are results with a reason code,
// never RPC failures, so the service can record them.
//
// A delivered blob sealed under PolicyAuthorize is kept for re-delivery
// (redeliver.go).
//
// The secret and the unsealed key are overwritten once injected or refused
// and never logged; logs carry launch and instance ids, sizes and reason
// codes only.
package deliver

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/trustpool/trustpool/compute-agent/internal/attester"
	"github.com/trustpool/trustpool/compute-agent/internal/inject"
	"github.com/trustpool/trustpool/internal/attestrpc"
	"github.com/trustpool/trustpool/internal/importblob"
	"github.com/trustpool/trustpool/internal/oslo"
	"github.com/trustpool/trustpool/internal/tpm"
)

// Unsealer imports and unseals a blob in the host's TPM (tpm.TPM).
type Unsealer interface {
	Unseal(ctx context.Context, p *importblob.Parsed, approvals []attestrpc.PolicyApproval) ([]byte, error)
}

// Config configures a Deliverer.
type Config struct {
	TPM      Unsealer
	Injector inject.Injector
	// StateDir keeps the ids of launches delivered or tried here
	// (launches.log).
	StateDir string
	// Timeout bounds one delivery (default 60 s).
	Timeout time.Duration
	// OnRedelivered, when set, is called with the launch id after a
	// redeliver_secret delivered (the agent's re-delivery asks then stop).
	OnRedelivered func(launchID string)
	Logger        *slog.Logger
}

// Deliverer serves the launch methods.
type Deliverer struct {
	cfg Config
	log *slog.Logger

	mu         sync.Mutex
	seen       map[string]bool
	challenges map[string]challenge
}

// maxSeen bounds the launch ids kept; the oldest are forgotten first. A
// forgotten id could be delivered again, into the same instance only (the
// payload is bound to it).
const maxSeen = 100000

const seenFile = "launches.log"

// New returns a Deliverer, reading the ids already used from StateDir.
func New(cfg Config) (*Deliverer, error) {
	if cfg.Timeout <= 0 {
		cfg.Timeout = 60 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	d := &Deliverer{cfg: cfg, log: cfg.Logger, seen: map[string]bool{}, challenges: map[string]challenge{}}
	f, err := os.Open(filepath.Join(cfg.StateDir, seenFile))
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return nil, fmt.Errorf("launch records: %w", err)
	default:
		defer f.Close()
		var ids []string
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if id := strings.TrimSpace(sc.Text()); attestrpc.IsUUID(id) {
				ids = append(ids, id)
			}
		}
		if err := sc.Err(); err != nil {
			return nil, fmt.Errorf("launch records: %w", err)
		}
		keep := ids[max(0, len(ids)-maxSeen):]
		for _, id := range keep {
			d.seen[id] = true
		}
		if len(keep) < len(ids) {
			// Keep the file as long as what is remembered.
			if err := writeSeen(cfg.StateDir, keep); err != nil {
				return nil, fmt.Errorf("launch records: %w", err)
			}
		}
	}
	return d, nil
}

// Endpoint is the oslo endpoint with the launch methods, at
// attestrpc.APIVersion (1.3: redeliver_challenge and redeliver_secret;
// 1.2: deliver_secret takes authorized blobs; calls asking for 1.1 and
// 1.2 are served too).
func (d *Deliverer) Endpoint() oslo.Endpoint {
	return oslo.Endpoint{Version: attestrpc.APIVersion, Methods: map[string]oslo.Handler{
		attestrpc.MethodInstancePresent: func(ctx context.Context, req *oslo.Request) (any, error) {
			var a attestrpc.InstancePresentArgs
			if err := attester.DecodeArgs(req.Args, &a); err != nil {
				return nil, err
			}
			if err := a.Validate(); err != nil {
				return nil, oslo.NewValueError(err.Error())
			}
			return d.InstancePresent(ctx, &a)
		},
		attestrpc.MethodDeliverSecret: func(ctx context.Context, req *oslo.Request) (any, error) {
			var a attestrpc.DeliverSecretArgs
			if err := attester.DecodeArgs(req.Args, &a); err != nil {
				return nil, err
			}
			if err := a.Validate(); err != nil {
				return nil, oslo.NewValueError(err.Error())
			}
			return d.DeliverSecret(ctx, &a), nil
		},
		attestrpc.MethodRedeliverChallenge: func(ctx context.Context, req *oslo.Request) (any, error) {
			var a attestrpc.RedeliverChallengeArgs
			if err := attester.DecodeArgs(req.Args, &a); err != nil {
				return nil, err
			}
			if err := a.Validate(); err != nil {
				return nil, oslo.NewValueError(err.Error())
			}
			return d.RedeliverChallenge(ctx, &a)
		},
		attestrpc.MethodRedeliverSecret: func(ctx context.Context, req *oslo.Request) (any, error) {
			var a attestrpc.RedeliverSecretArgs
			if err := attester.DecodeArgs(req.Args, &a); err != nil {
				return nil, err
			}
			if err := a.Validate(); err != nil {
				return nil, oslo.NewValueError(err.Error())
			}
			return d.RedeliverSecret(ctx, &a), nil
		},
		attestrpc.MethodForgetSecret: func(_ context.Context, req *oslo.Request) (any, error) {
			var a attestrpc.ForgetSecretArgs
			if err := attester.DecodeArgs(req.Args, &a); err != nil {
				return nil, err
			}
			if err := a.Validate(); err != nil {
				return nil, oslo.NewValueError(err.Error())
			}
			return nil, d.ForgetSecret(&a)
		},
	}}
}

// InstancePresent answers instance_present.
func (d *Deliverer) InstancePresent(ctx context.Context, a *attestrpc.InstancePresentArgs) (*attestrpc.InstancePresentResult, error) {
	ok, err := d.cfg.Injector.Present(ctx, a.InstanceID)
	if err != nil {
		d.log.Warn("instance_present failed", "instance_id", a.InstanceID, "injector", d.cfg.Injector.Name(), "error", err)
		return nil, fmt.Errorf("instance_present: %w", err)
	}
	res := &attestrpc.InstancePresentResult{Present: ok, Injector: d.cfg.Injector.Name()}
	if ok {
		if res.ProjectID, err = d.cfg.Injector.Owner(ctx, a.InstanceID); err != nil {
			d.log.Warn("instance owner unknown", "instance_id", a.InstanceID, "injector", d.cfg.Injector.Name(), "error", err)
			res.ProjectID = ""
		}
	}
	return res, nil
}

// unseal imports and unseals the blob and opens its payload for the launch
// and instance, returning the secret or a reason code and detail.
func (d *Deliverer) unseal(ctx context.Context, p *importblob.Parsed, approvals []attestrpc.PolicyApproval, launchID, instanceID string,
	res *attestrpc.DeliverSecretResult) ([]byte, string, string) {
	t0 := time.Now()
	key, err := d.cfg.TPM.Unseal(ctx, p, approvals)
	if err == nil {
		defer clear(key)
	}
	var secret []byte
	if err == nil {
		secret, err = p.Open(key, launchID, instanceID)
	}
	res.UnsealMS = float64(time.Since(t0).Microseconds()) / 1000
	switch {
	case errors.Is(err, tpm.ErrNotApproved):
		return nil, attestrpc.ReasonPCRNotApproved, "no approval the service sent names this host's current PCR values"
	case errors.Is(err, tpm.ErrApproval):
		return nil, attestrpc.ReasonApprovalInvalid, "the TPM refused the approval's signature: not made with the policy-signing key the secret is sealed to"
	case errors.Is(err, tpm.ErrPolicy):
		return nil, attestrpc.ReasonPCRMismatch, "the TPM refused to unseal: a PCR changed since the quote the secret was sealed to"
	case errors.Is(err, tpm.ErrImport):
		return nil, attestrpc.ReasonImportFailed, "the TPM refused the blob: not made for this TPM's endorsement key, or altered"
	case errors.Is(err, importblob.ErrPayload):
		return nil, attestrpc.ReasonInvalidBlob, "the payload is not for this launch and instance"
	case err != nil:
		return nil, attestrpc.ReasonTPMUnavailable, err.Error()
	}
	return secret, "", ""
}

// writeSeen replaces launches.log with ids.
func writeSeen(dir string, ids []string) error {
	tmp, err := os.CreateTemp(dir, ".launches-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	w := bufio.NewWriter(tmp)
	for _, id := range ids {
		_, _ = w.WriteString(id + "\n")
	}
	if err := w.Flush(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), filepath.Join(dir, seenFile))
}

// use records a launch id, reporting false when it was used before.
func (d *Deliverer) use(id string) (bool, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.seen[id] {
		return false, nil
	}
	if err := os.MkdirAll(d.cfg.StateDir, 0o700); err != nil {
		return false, err
	}
	f, err := os.OpenFile(filepath.Join(d.cfg.StateDir, seenFile), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		return false, err
	}
	_, err = f.WriteString(id + "\n")
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return false, err
	}
	d.seen[id] = true
	return true, nil
}

// DeliverSecret answers deliver_secret (args validated).
func (d *Deliverer) DeliverSecret(ctx context.Context, a *attestrpc.DeliverSecretArgs) *attestrpc.DeliverSecretResult {
	ctx, cancel := context.WithTimeout(ctx, d.cfg.Timeout)
	defer cancel()
	res := &attestrpc.DeliverSecretResult{Injector: d.cfg.Injector.Name()}
	log := d.log.With("launch_id", a.LaunchID, "instance_id", a.InstanceID)
	refuse := func(reason, detail string) *attestrpc.DeliverSecretResult {
		res.Reason, res.Detail = reason, detail
		log.Warn("secret not delivered", "reason", reason, "detail", detail)
		return res
	}
	fresh, err := d.use(a.LaunchID)
	if err != nil {
		return refuse(attestrpc.ReasonInjectFailed, "cannot record the launch: "+err.Error())
	}
	if !fresh {
		return refuse(attestrpc.ReasonReplayed, "this launch was delivered to this host before")
	}
	n, code, detail := d.release(ctx, &a.Blob, a.Approvals, a.LaunchID, a.InstanceID, a.Receipt, res)
	if code != "" {
		return refuse(code, detail)
	}
	if len(a.Blob.AuthorizeKey) > 0 {
		// Kept for re-delivery after a restart; a failure costs only that.
		if err := d.keep(a.LaunchID, a.InstanceID, &a.Blob); err != nil {
			log.Warn("blob not kept for re-delivery", "error", err)
		}
	}
	res.Delivered = true
	log.Info("secret delivered", "injector", res.Injector, "bytes", n, "unseal_ms", res.UnsealMS, "inject_ms", res.InjectMS)
	return res
}
