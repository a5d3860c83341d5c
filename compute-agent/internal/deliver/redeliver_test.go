package deliver_test

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-tpm/tpm2"

	"github.com/trustpool/trustpool/compute-agent/internal/attester"
	"github.com/trustpool/trustpool/compute-agent/internal/deliver"
	"github.com/trustpool/trustpool/compute-agent/internal/inject"
	"github.com/trustpool/trustpool/internal/attestrpc"
	"github.com/trustpool/trustpool/internal/eventlog"
	"github.com/trustpool/trustpool/internal/importblob"
	"github.com/trustpool/trustpool/internal/policykey"
)

func TestRedeliver(t *testing.T) {
	ctx := t.Context()
	h := newHost(t)
	key, err := policykey.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	forger, err := policykey.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	ek, err := h.tpm.EK(ctx)
	if err != nil {
		t.Fatal(err)
	}
	sel := []int{0, 7}
	pcrs, err := h.tpm.ReadPCRs(ctx, uint16(tpm2.TPMAlgSHA256), sel)
	if err != nil {
		t.Fatal(err)
	}
	good, err := key.Approve(sel, pcrs)
	if err != nil {
		t.Fatal(err)
	}
	elsewhere, err := key.Approve(sel, map[int][]byte{0: pcrs[0], 7: eventlog.SHA256.Sum([]byte("another build"))})
	if err != nil {
		t.Fatal(err)
	}
	secret := []byte("kept secret")
	s, err := importblob.CreateAuthorized(rand.Reader, ek.Public, sel, key.Public().TPMPublic(), launchID, instance, secret)
	if err != nil {
		t.Fatal(err)
	}
	if res := h.d.DeliverSecret(ctx, &attestrpc.DeliverSecretArgs{LaunchID: launchID, InstanceID: instance, Blob: s.Blob,
		Receipt: json.RawMessage(`{"receipt":"first"}`), Approvals: []attestrpc.PolicyApproval{good}}); !res.Delivered {
		t.Fatalf("DeliverSecret = %+v", res)
	}
	keptFile := filepath.Join(h.state, "kept", launchID+".json")
	fi, err := os.Stat(keptFile)
	if err != nil {
		t.Fatalf("blob not kept: %v", err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("kept blob mode %v, want 0600", fi.Mode().Perm())
	}
	if b, _ := os.ReadFile(keptFile); bytes.Contains(b, secret) {
		t.Error("the kept file holds the secret")
	}
	secretFile := filepath.Join(h.root, instance, inject.SecretFile)
	reboot := func() {
		t.Helper()
		// The instance restarted: its tmpfs is empty.
		if err := os.Remove(secretFile); err != nil {
			t.Fatal(err)
		}
		h.d = h.restart(t) // and so did the agent
	}
	reboot()

	challenge := func(launch string) []byte {
		t.Helper()
		c, err := h.d.RedeliverChallenge(ctx, &attestrpc.RedeliverChallengeArgs{LaunchID: launch, InstanceID: instance})
		if err != nil {
			t.Fatal(err)
		}
		if c.Kept != (c.Nonce != nil) {
			t.Fatalf("challenge %+v", c)
		}
		return c.Nonce
	}
	request := func(nonce []byte, signer *policykey.PrivateKey, approvals ...attestrpc.PolicyApproval) *attestrpc.RedeliverSecretArgs {
		t.Helper()
		if nonce == nil {
			nonce = make([]byte, attestrpc.RedeliverNonceSize)
		}
		a := &attestrpc.RedeliverSecretArgs{LaunchID: launchID, InstanceID: instance, Nonce: nonce,
			Receipt: json.RawMessage(`{"receipt":"redelivered"}`), Approvals: approvals}
		if err := signer.SignRedeliver(a); err != nil {
			t.Fatal(err)
		}
		if err := a.Validate(); err != nil {
			t.Fatal(err)
		}
		return a
	}
	refused := func(name string, a *attestrpc.RedeliverSecretArgs, want string) {
		t.Helper()
		if res := h.d.RedeliverSecret(ctx, a); res.Delivered || res.Reason != want {
			t.Errorf("%s: RedeliverSecret = %+v, want reason %s", name, res, want)
		}
		if _, err := os.Stat(secretFile); err == nil {
			t.Errorf("%s: a secret file was written", name)
		}
	}

	refused("no challenge asked", request(nil, key, good), attestrpc.ReasonRequestInvalid)
	refused("another nonce", request(append(challenge(launchID)[:0:0], make([]byte, 32)...), key, good), attestrpc.ReasonRequestInvalid)
	forged := request(challenge(launchID), forger, good)
	refused("forged signature", forged, attestrpc.ReasonRequestInvalid)
	// The forged attempt used the nonce up: signing it properly now is a replay.
	refused("nonce used by a forged request", request(forged.Nonce, key, good), attestrpc.ReasonRequestInvalid)
	refused("another state approved", request(challenge(launchID), key, elsewhere), attestrpc.ReasonPCRNotApproved)

	if len(h.redelivered) != 0 {
		t.Errorf("OnRedelivered called for refused requests: %v", h.redelivered)
	}
	if got, err := h.d.Kept(); err != nil || len(got) != 1 || got[0] != (deliver.KeptBlob{LaunchID: launchID, InstanceID: instance}) {
		t.Errorf("Kept = %v, %v; want the launch's blob", got, err)
	}
	ok := request(challenge(launchID), key, good)
	if res := h.d.RedeliverSecret(ctx, ok); !res.Delivered {
		t.Fatalf("RedeliverSecret = %+v", res)
	}
	if len(h.redelivered) != 1 || h.redelivered[0] != launchID {
		t.Errorf("OnRedelivered calls %v, want the launch once", h.redelivered)
	}
	if got, err := os.ReadFile(secretFile); err != nil || !bytes.Equal(got, secret) {
		t.Errorf("secret in the instance: %q, %v", got, err)
	}
	if got, err := os.ReadFile(filepath.Join(h.root, instance, inject.ReceiptFile)); err != nil || string(got) != `{"receipt":"redelivered"}` {
		t.Errorf("receipt in the instance: %q, %v", got, err)
	}
	reboot()
	refused("replayed request", ok, attestrpc.ReasonRequestInvalid)

	const other = "1b6d1c3e-8f2a-4c55-9d0e-6a7b8c9d0e1f"
	if n := challenge(other); n != nil {
		t.Error("a challenge for a launch not kept")
	}
	a := request(challenge(launchID), key, good)
	a.LaunchID = other
	if err := key.SignRedeliver(a); err != nil {
		t.Fatal(err)
	}
	refused("launch not kept", a, attestrpc.ReasonNotKept)

	// forget_secret: only the blob's policy-signing key makes it drop it.
	forget := &attestrpc.ForgetSecretArgs{LaunchID: launchID, InstanceID: instance}
	if err := forger.SignForget(forget); err != nil {
		t.Fatal(err)
	}
	if err := h.d.ForgetSecret(forget); err == nil {
		t.Error("forget_secret signed by another key accepted")
	}
	if _, err := os.Stat(keptFile); err != nil {
		t.Fatalf("a forged forget_secret dropped the blob: %v", err)
	}
	if err := key.SignForget(forget); err != nil {
		t.Fatal(err)
	}
	if err := h.d.ForgetSecret(forget); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(keptFile); err == nil {
		t.Error("forget_secret left the blob")
	}
	if n := challenge(launchID); n != nil {
		t.Error("a challenge for a forgotten launch")
	}

	// A blob sealed to a bare PolicyPCR is not kept.
	const plain = "2b6d1c3e-8f2a-4c55-9d0e-6a7b8c9d0e1f"
	if res := h.d.DeliverSecret(ctx, h.seal(t, plain, instance, nil, secret)); !res.Delivered {
		t.Fatalf("DeliverSecret (PolicyPCR) = %+v", res)
	}
	if _, err := os.Stat(filepath.Join(h.state, "kept", plain+".json")); err == nil {
		t.Error("a PolicyPCR blob was kept")
	}
}

// FuzzRedeliverArgs: redeliver_secret arguments (anyone on the bus can
// send them) decode and validate without panicking; what validates reaches
// the signature check against a policy-signing key, which must refuse it.
func FuzzRedeliverArgs(f *testing.F) {
	key, err := policykey.GenerateKey()
	if err != nil {
		f.Fatal(err)
	}
	ap, err := key.Approve([]int{0, 7}, map[int][]byte{0: make([]byte, 32), 7: make([]byte, 32)})
	if err != nil {
		f.Fatal(err)
	}
	a := &attestrpc.RedeliverSecretArgs{LaunchID: launchID, InstanceID: instance, Nonce: make([]byte, attestrpc.RedeliverNonceSize),
		Receipt: json.RawMessage(`{"receipt":"x"}`), Approvals: []attestrpc.PolicyApproval{ap}}
	if err := key.SignRedeliver(a); err != nil {
		f.Fatal(err)
	}
	seed, err := json.Marshal(a)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(seed)
	other, err := policykey.GenerateKey()
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var m map[string]json.RawMessage
		if json.Unmarshal(data, &m) != nil {
			return
		}
		var a attestrpc.RedeliverSecretArgs
		if attester.DecodeArgs(m, &a) != nil || a.Validate() != nil {
			return
		}
		if policykey.VerifyRedeliver(other.Public().TPMPublic(), &a) == nil {
			t.Error("a request verified against a key that never signed it")
		}
	})
}
