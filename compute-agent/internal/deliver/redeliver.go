package deliver

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/trustpool/trustpool/compute-agent/internal/inject"
	"github.com/trustpool/trustpool/internal/attestrpc"
	"github.com/trustpool/trustpool/internal/importblob"
	"github.com/trustpool/trustpool/internal/policykey"
)

// Kept blobs (re-delivery, RPC API 1.3). After delivering a blob sealed
// under PolicyAuthorize, the agent keeps it (TPM-sealed: useless off this
// TPM, and on it without an approval of the current PCRs) in
// <StateDir>/kept/<launch_id>.json, mode 0600, with the launch and
// instance ids; never the secret. At most MaxKept are kept (the oldest
// are dropped). A blob sealed to a bare PolicyPCR is not kept: a request
// to redeliver it could not be authenticated (no key in the blob).
//
// redeliver_challenge hands out a random nonce for a kept launch, valid
// once and for ChallengeTTL. redeliver_secret acts only when its nonce
// is that launch's outstanding one (consumed whatever follows, so a
// replayed request finds none) and the policy-signing key named in the
// kept blob signed the request (a forged one is refused); then, as
// deliver_secret: the instance must run here, the TPM unseals with the
// request's approvals, the payload opens for this launch and instance
// only, and the secret and the new receipt are injected.

// MaxKept bounds the blobs kept for re-delivery.
const MaxKept = 256

// ChallengeTTL is how long a redeliver_challenge nonce stays valid.
const ChallengeTTL = 2 * time.Minute

const keptDir = "kept"

// kept is one kept blob's file.
type kept struct {
	LaunchID   string               `json:"launch_id"`
	InstanceID string               `json:"instance_id"`
	Blob       attestrpc.ImportBlob `json:"blob"`
	KeptAt     time.Time            `json:"kept_at"`
}

type challenge struct {
	nonce   []byte
	expires time.Time
}

func (d *Deliverer) keptPath(launchID string) string {
	return filepath.Join(d.cfg.StateDir, keptDir, launchID+".json")
}

// keep stores a delivered blob for re-delivery and drops the oldest ones
// beyond MaxKept.
func (d *Deliverer) keep(launchID, instanceID string, blob *attestrpc.ImportBlob) error {
	dir := filepath.Join(d.cfg.StateDir, keptDir)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	b, err := json.Marshal(kept{LaunchID: launchID, InstanceID: instanceID, Blob: *blob, KeptAt: time.Now().UTC()})
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(dir, ".kept-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), d.keptPath(launchID)); err != nil {
		return err
	}
	return d.pruneKept(dir)
}

// pruneKept removes the oldest kept blobs beyond MaxKept.
func (d *Deliverer) pruneKept(dir string) error {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	type file struct {
		name string
		mod  time.Time
	}
	var files []file
	for _, e := range ents {
		if !strings.HasSuffix(e.Name(), ".json") {
			continue
		}
		if fi, err := e.Info(); err == nil {
			files = append(files, file{e.Name(), fi.ModTime()})
		}
	}
	if len(files) <= MaxKept {
		return nil
	}
	slices.SortFunc(files, func(a, b file) int { return a.mod.Compare(b.mod) })
	for _, f := range files[:len(files)-MaxKept] {
		if err := os.Remove(filepath.Join(dir, f.name)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
		d.log.Info("kept launch blob dropped (too many kept)", "launch_id", strings.TrimSuffix(f.name, ".json"))
	}
	return nil
}

// loadKept reads the kept blob of a launch for instanceID (nil when none).
func (d *Deliverer) loadKept(launchID, instanceID string) (*kept, error) {
	b, err := os.ReadFile(d.keptPath(launchID))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var k kept
	if err := json.Unmarshal(b, &k); err != nil {
		return nil, fmt.Errorf("kept blob %s: %w", launchID, err)
	}
	if k.LaunchID != launchID || k.InstanceID != instanceID || len(k.Blob.AuthorizeKey) == 0 {
		return nil, nil
	}
	return &k, nil
}

// ForgetSecret answers forget_secret (args validated): the kept blob goes
// when the policy-signing key it is sealed under signed the request.
func (d *Deliverer) ForgetSecret(a *attestrpc.ForgetSecretArgs) error {
	k, err := d.loadKept(a.LaunchID, a.InstanceID)
	if err != nil || k == nil {
		return err
	}
	if err := policykey.VerifyForget(k.Blob.AuthorizeKey, a); err != nil {
		d.log.Warn("forget_secret not signed by the blob's policy-signing key ignored", "launch_id", a.LaunchID)
		return fmt.Errorf("forget_secret: %w", err)
	}
	if err := d.Forget(a.LaunchID); err != nil {
		return fmt.Errorf("forget_secret: %w", err)
	}
	d.log.Info("kept launch blob dropped (launch deleted)", "launch_id", a.LaunchID, "instance_id", a.InstanceID)
	return nil
}

// KeptBlob names one kept blob.
type KeptBlob struct {
	LaunchID, InstanceID string
}

// Kept lists the kept blobs (at most MaxKept), ignoring files that do not
// decode as one.
func (d *Deliverer) Kept() ([]KeptBlob, error) {
	ents, err := os.ReadDir(filepath.Join(d.cfg.StateDir, keptDir))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("kept blobs: %w", err)
	}
	var out []KeptBlob
	for _, e := range ents {
		id, ok := strings.CutSuffix(e.Name(), ".json")
		if !ok || !attestrpc.IsUUID(id) {
			continue
		}
		b, err := os.ReadFile(filepath.Join(d.cfg.StateDir, keptDir, e.Name()))
		if err != nil {
			continue // dropped meanwhile
		}
		var k kept
		if json.Unmarshal(b, &k) != nil || k.LaunchID != id || !attestrpc.IsUUID(k.InstanceID) {
			continue
		}
		out = append(out, KeptBlob{LaunchID: id, InstanceID: k.InstanceID})
		if len(out) == MaxKept {
			break // files put there by hand or an older agent: the bound holds anyway
		}
	}
	return out, nil
}

// Forget removes a launch's kept blob.
func (d *Deliverer) Forget(launchID string) error {
	err := os.Remove(d.keptPath(launchID))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	return err
}

// RedeliverChallenge answers redeliver_challenge (args validated).
func (d *Deliverer) RedeliverChallenge(_ context.Context, a *attestrpc.RedeliverChallengeArgs) (*attestrpc.RedeliverChallengeResult, error) {
	k, err := d.loadKept(a.LaunchID, a.InstanceID)
	if err != nil {
		d.log.Warn("kept blob unreadable", "launch_id", a.LaunchID, "error", err)
		return nil, fmt.Errorf("redeliver_challenge: %w", err)
	}
	if k == nil {
		return &attestrpc.RedeliverChallengeResult{}, nil
	}
	nonce := make([]byte, attestrpc.RedeliverNonceSize)
	if _, err := rand.Read(nonce); err != nil {
		return nil, fmt.Errorf("redeliver_challenge: %w", err)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	now := time.Now()
	for id, c := range d.challenges {
		if now.After(c.expires) {
			delete(d.challenges, id)
		}
	}
	// One outstanding nonce per launch: a new challenge replaces it.
	d.challenges[a.LaunchID] = challenge{nonce: nonce, expires: now.Add(ChallengeTTL)}
	return &attestrpc.RedeliverChallengeResult{Kept: true, Nonce: nonce}, nil
}

// takeChallenge consumes the launch's outstanding nonce, reporting
// whether it is nonce and still valid.
func (d *Deliverer) takeChallenge(launchID string, nonce []byte) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	c, ok := d.challenges[launchID]
	delete(d.challenges, launchID)
	return ok && time.Now().Before(c.expires) && subtle.ConstantTimeCompare(c.nonce, nonce) == 1
}

// RedeliverSecret answers redeliver_secret (args validated).
func (d *Deliverer) RedeliverSecret(ctx context.Context, a *attestrpc.RedeliverSecretArgs) *attestrpc.DeliverSecretResult {
	ctx, cancel := context.WithTimeout(ctx, d.cfg.Timeout)
	defer cancel()
	res := &attestrpc.DeliverSecretResult{Injector: d.cfg.Injector.Name()}
	log := d.log.With("launch_id", a.LaunchID, "instance_id", a.InstanceID)
	refuse := func(reason, detail string) *attestrpc.DeliverSecretResult {
		res.Reason, res.Detail = reason, detail
		log.Warn("secret not redelivered", "reason", reason, "detail", detail)
		return res
	}
	fresh := d.takeChallenge(a.LaunchID, a.Nonce)
	k, err := d.loadKept(a.LaunchID, a.InstanceID)
	switch {
	case err != nil:
		return refuse(attestrpc.ReasonTPMUnavailable, "cannot read the kept blob: "+err.Error())
	case k == nil:
		return refuse(attestrpc.ReasonNotKept, "this host keeps no blob of the launch for the instance")
	case !fresh:
		return refuse(attestrpc.ReasonRequestInvalid, "the request does not carry this agent's outstanding nonce for the launch (replayed or stale)")
	}
	if err := policykey.VerifyRedeliver(k.Blob.AuthorizeKey, a); err != nil {
		return refuse(attestrpc.ReasonRequestInvalid, "the request is not signed by the policy-signing key the blob is sealed under")
	}
	n, code, detail := d.release(ctx, &k.Blob, a.Approvals, a.LaunchID, a.InstanceID, a.Receipt, res)
	if code != "" {
		return refuse(code, detail)
	}
	res.Delivered = true
	log.Info("secret redelivered", "injector", res.Injector, "bytes", n, "unseal_ms", res.UnsealMS, "inject_ms", res.InjectMS)
	if d.cfg.OnRedelivered != nil {
		d.cfg.OnRedelivered(a.LaunchID)
	}
	return res
}

// release is what a delivery and a re-delivery share once the request is
// accepted: the instance must run here, then the blob is unsealed in the
// TPM and the secret injected with the receipt (and wiped). It returns the
// secret's length, or a reason code and detail.
func (d *Deliverer) release(ctx context.Context, blob *attestrpc.ImportBlob, approvals []attestrpc.PolicyApproval, launchID, instanceID string,
	receipt []byte, res *attestrpc.DeliverSecretResult) (int, string, string) {
	ok, err := d.cfg.Injector.Present(ctx, instanceID)
	if err != nil {
		return 0, attestrpc.ReasonInjectFailed, "cannot tell whether the instance runs here: " + err.Error()
	}
	if !ok {
		return 0, attestrpc.ReasonInstanceNotPresent, "the instance does not run on this host"
	}
	p, err := importblob.Parse(blob)
	if err != nil {
		return 0, attestrpc.ReasonInvalidBlob, err.Error()
	}
	secret, code, detail := d.unseal(ctx, p, approvals, launchID, instanceID, res)
	if code != "" {
		return 0, code, detail
	}
	defer clear(secret)
	if code, detail := d.inject(ctx, instanceID, secret, receipt, res); code != "" {
		return 0, code, detail
	}
	return len(secret), "", ""
}

// inject writes the secret and the receipt into the instance, returning a
// reason code on failure.
func (d *Deliverer) inject(ctx context.Context, instanceID string, secret, receipt []byte, res *attestrpc.DeliverSecretResult) (string, string) {
	t0 := time.Now()
	err := d.cfg.Injector.Inject(ctx, instanceID, []inject.File{
		{Name: inject.SecretFile, Data: secret, Mode: 0o400},
		{Name: inject.ReceiptFile, Data: receipt, Mode: 0o644},
	})
	res.InjectMS = float64(time.Since(t0).Microseconds()) / 1000
	if errors.Is(err, inject.ErrNoInstance) {
		return attestrpc.ReasonInstanceNotPresent, "the instance is no longer on this host"
	}
	if err != nil {
		return attestrpc.ReasonInjectFailed, err.Error()
	}
	return "", ""
}
