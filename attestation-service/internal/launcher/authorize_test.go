package launcher

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2"

	"github.com/trustpool/trustpool/attestation-service/internal/cloud"
	"github.com/trustpool/trustpool/attestation-service/internal/engine"
	"github.com/trustpool/trustpool/attestation-service/internal/store"
	"github.com/trustpool/trustpool/internal/attestrpc"
	"github.com/trustpool/trustpool/internal/importblob"
	"github.com/trustpool/trustpool/internal/launch"
	"github.com/trustpool/trustpool/internal/policykey"
	"github.com/trustpool/trustpool/internal/tpm/tpmtest"
	"github.com/trustpool/trustpool/internal/verdict"
)

// trustedAttester answers a fresh attestation: trusted, satisfying
// baseline, with pcrs.
type trustedAttester struct {
	ek   []byte
	pcrs map[int][]byte
}

func (a trustedAttester) AttestFresh(context.Context, string) (*engine.Fresh, error) {
	return &engine.Fresh{Verdict: verdict.Verdict{Host: "compute-1", Status: verdict.Trusted, Profiles: []string{"baseline"}, Seq: 1},
		Verified: true, PCRs: a.pcrs, EKPublic: a.ek}, nil
}

// oldAgent records deliver_secret calls; with refuseAuthorized it answers a
// blob sealed under PolicyAuthorize as an agent before API 1.2 does (the
// service side maps oslo's UnsupportedVersion to ErrAgentTooOld): the
// fault only such an agent shows.
type oldAgent struct {
	mu               sync.Mutex
	refuseAuthorized bool
	calls            []*attestrpc.DeliverSecretArgs
}

func (a *oldAgent) InstancePresent(context.Context, string, *attestrpc.InstancePresentArgs) (*attestrpc.InstancePresentResult, error) {
	return &attestrpc.InstancePresentResult{Present: true, ProjectID: "tenant", Injector: "directory"}, nil
}

func (a *oldAgent) DeliverSecret(_ context.Context, _ string, args *attestrpc.DeliverSecretArgs) (*attestrpc.DeliverSecretResult, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.calls = append(a.calls, args)
	if a.refuseAuthorized && len(args.Blob.AuthorizeKey) > 0 {
		return nil, fmt.Errorf("%w 1.2: remote oslo_messaging.rpc.dispatcher.UnsupportedVersion", ErrAgentTooOld)
	}
	return &attestrpc.DeliverSecretResult{Delivered: true, Injector: "directory"}, nil
}

type projectNova struct{}

func (projectNova) Server(_ context.Context, id string) (*cloud.Server, error) {
	return &cloud.Server{ID: id, ProjectID: "tenant", Host: "compute-1"}, nil
}

func hexSum(s string) string {
	d := sha256.Sum256([]byte(s))
	return hex.EncodeToString(d[:])
}

// TestSealedToSignedPolicies: with a policy-signing key the secret is
// sealed under PolicyAuthorize by it and deliver_secret carries a valid
// approval of every PCR state the profile accepts (each combination of its
// values, the quoted one among them) and of no other; an agent before RPC
// API 1.2 gets the secret sealed to the quoted PCR values instead, and the
// receipt names that policy. Without a key, PolicyPCR as before.
func TestSealedToSignedPolicies(t *testing.T) {
	sim := tpmtest.Simulator(t)
	ekRsp, err := tpm2.CreatePrimary{PrimaryHandle: tpm2.TPMRHEndorsement, InPublic: tpm2.New2B(tpm2.RSAEKTemplate)}.Execute(sim)
	if err != nil {
		t.Fatal(err)
	}
	defer tpm2.FlushContext{FlushHandle: ekRsp.ObjectHandle}.Execute(sim) //nolint:errcheck // test cleanup
	ek := ekRsp.OutPublic.Bytes()
	key, err := policykey.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	a8, b8, a9, b9 := hexSum("a8"), hexSum("b8"), hexSum("a9"), hexSum("b9")
	profile := fmt.Sprintf("[[profile]]\nname = \"baseline\"\n[profile.pcrs]\n8 = [%q, %q]\n9 = [%q, %q]\n", a8, b8, a9, b9)
	quoted := map[int][]byte{}
	for i, h := range map[int]string{8: a8, 9: b9, 0: hexSum("pcr0")} {
		quoted[i], _ = hex.DecodeString(h)
	}
	sel := []int{8, 9}
	for _, tc := range []struct {
		name       string
		key        *policykey.PrivateKey
		oldAgent   bool
		authorized bool
	}{
		{"signed policies", key, false, true},
		{"agent before API 1.2", key, true, false},
		{"no policy-signing key", nil, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			now := time.Now()
			st, err := store.Open(t.Context(), "sqlite:///"+filepath.Join(t.TempDir(), "a.db"))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { st.Close() })
			ctx := t.Context()
			if err := st.PutProfile(ctx, store.Profile{Name: "baseline", Body: profile}, store.Create); err != nil {
				t.Fatal(err)
			}
			if err := st.PutHost(ctx, &store.Host{Name: "compute-1", EKPublic: ek, AKPublic: []byte("ak"), Activated: true}); err != nil {
				t.Fatal(err)
			}
			lkey, err := launch.GenerateKey("")
			if err != nil {
				t.Fatal(err)
			}
			_, priv, _ := ed25519.GenerateKey(nil)
			signer := verdict.NewSigner(priv)
			ag := &oldAgent{refuseAuthorized: tc.oldAgent}
			l := New(Config{Store: st, Key: lkey, Signer: signer, Issuer: "test", Attester: trustedAttester{ek: ek, pcrs: quoted},
				Agents: ag, Servers: projectNova{}, Notifier: &notes{}, Now: func() time.Time { return now }, PolicyKey: tc.key})
			rec, err := l.Create(ctx, Caller{UserID: "u", ProjectID: "tenant"}, CreateRequest{KID: l.PublicKey().KID(),
				Sealed: l.sealed(t, "tenant", now.Add(time.Hour)), InstanceID: "178b0921-8f85-4257-88b6-2e743b5a975c"})
			if err != nil {
				t.Fatal(err)
			}
			l.process(ctx, <-l.jobs)
			got, receipt := ended(t, st, verdict.NewVerifier(signer.Public()), rec.ID)
			if got.State != launch.StateDelivered {
				t.Fatalf("launch %s %v", got.State, got.Reasons)
			}
			last := ag.calls[len(ag.calls)-1]
			if wantCalls := map[bool]int{true: 2, false: 1}[tc.oldAgent]; len(ag.calls) != wantCalls {
				t.Errorf("%d deliver_secret calls, want %d", len(ag.calls), wantCalls)
			}
			if !slices.Equal(last.Blob.PCRs, sel) || !slices.Equal(receipt.PCRs, sel) {
				t.Errorf("sealed to PCRs %v (receipt %v), want %v", last.Blob.PCRs, receipt.PCRs, sel)
			}
			var want []byte
			if tc.authorized {
				want, _ = importblob.AuthorizePolicy(key.Public().TPMName())
				if string(last.Blob.AuthorizeKey) != string(key.Public().TPMPublic()) {
					t.Error("blob does not carry the policy-signing key")
				}
				var approved []string
				for i := range last.Approvals {
					a := &last.Approvals[i]
					if !key.Public().Verify(a) {
						t.Errorf("approval %d does not verify", i)
					}
					approved = append(approved, hex.EncodeToString(a.PolicyDigest))
				}
				var wantApproved []string
				for _, v8 := range []string{a8, b8} {
					for _, v9 := range []string{a9, b9} {
						x, _ := hex.DecodeString(v8)
						y, _ := hex.DecodeString(v9)
						d, err := importblob.PCRPolicy(sel, map[int][]byte{8: x, 9: y})
						if err != nil {
							t.Fatal(err)
						}
						wantApproved = append(wantApproved, hex.EncodeToString(d))
					}
				}
				slices.Sort(approved)
				slices.Sort(wantApproved)
				if !slices.Equal(approved, wantApproved) {
					t.Errorf("approved %v, want the profile's 4 states %v", approved, wantApproved)
				}
			} else {
				want, _ = importblob.PCRPolicy(sel, quoted)
				if len(last.Blob.AuthorizeKey) != 0 || len(last.Approvals) != 0 {
					t.Error("a PolicyPCR delivery carries a key or approvals")
				}
			}
			if receipt.PCRPolicyDigest != hex.EncodeToString(want) {
				t.Errorf("receipt pcr_policy_digest %s, want %x", receipt.PCRPolicyDigest, want)
			}
			// The receipt names the policy key exactly when the secret
			// needs its approvals (an old agent's PolicyPCR blob does not).
			wantKey := map[bool]string{true: key.Public().KID()}[tc.authorized]
			if receipt.PolicyKey != wantKey {
				t.Errorf("receipt policy_key %q, want %q", receipt.PolicyKey, wantKey)
			}
		})
	}
}

func (a *oldAgent) RedeliverChallenge(context.Context, string, *attestrpc.RedeliverChallengeArgs) (*attestrpc.RedeliverChallengeResult, error) {
	return nil, ErrAgentTooOld
}

func (a *oldAgent) RedeliverSecret(context.Context, string, *attestrpc.RedeliverSecretArgs) (*attestrpc.DeliverSecretResult, error) {
	return nil, ErrAgentTooOld
}

func (a *oldAgent) ForgetSecret(context.Context, string, *attestrpc.ForgetSecretArgs) error {
	return ErrAgentTooOld
}
