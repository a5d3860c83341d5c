package policykey_test

import (
	"errors"
	"testing"

	"github.com/trustpool/trustpool/internal/attestrpc"
	"github.com/trustpool/trustpool/internal/policykey"
)

func TestRedeliverSignature(t *testing.T) {
	k, err := policykey.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	other, err := policykey.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	ap, err := k.Approve([]int{0, 7}, map[int][]byte{0: make([]byte, 32), 7: make([]byte, 32)})
	if err != nil {
		t.Fatal(err)
	}
	newArgs := func() *attestrpc.RedeliverSecretArgs {
		a := &attestrpc.RedeliverSecretArgs{LaunchID: "0b6d1c3e-8f2a-4c55-9d0e-6a7b8c9d0e1f", InstanceID: "178b0921-8f85-4257-88b6-2e743b5a975c",
			Nonce: make([]byte, attestrpc.RedeliverNonceSize), Receipt: []byte(`{"receipt":"x"}`), Approvals: []attestrpc.PolicyApproval{ap}}
		if err := k.SignRedeliver(a); err != nil {
			t.Fatal(err)
		}
		return a
	}
	if err := policykey.VerifyRedeliver(k.Public().TPMPublic(), newArgs()); err != nil {
		t.Fatalf("signed request: %v", err)
	}
	tests := []struct {
		name   string
		key    []byte
		change func(a *attestrpc.RedeliverSecretArgs)
	}{
		{"other key", other.Public().TPMPublic(), func(*attestrpc.RedeliverSecretArgs) {}},
		{"not a key", []byte{1, 2, 3}, func(*attestrpc.RedeliverSecretArgs) {}},
		{"launch", nil, func(a *attestrpc.RedeliverSecretArgs) { a.LaunchID = "1b6d1c3e-8f2a-4c55-9d0e-6a7b8c9d0e1f" }},
		{"instance", nil, func(a *attestrpc.RedeliverSecretArgs) { a.InstanceID = "278b0921-8f85-4257-88b6-2e743b5a975c" }},
		{"nonce", nil, func(a *attestrpc.RedeliverSecretArgs) { a.Nonce[0] ^= 1 }},
		{"receipt", nil, func(a *attestrpc.RedeliverSecretArgs) { a.Receipt = []byte(`{"receipt":"y"}`) }},
		{"approval digest", nil, func(a *attestrpc.RedeliverSecretArgs) { a.Approvals[0].PolicyDigest[0] ^= 1 }},
		{"approval dropped", nil, func(a *attestrpc.RedeliverSecretArgs) { a.Approvals = nil }},
		{"signature", nil, func(a *attestrpc.RedeliverSecretArgs) { a.Signature[len(a.Signature)-1] ^= 1 }},
		{"approval as signature", nil, func(a *attestrpc.RedeliverSecretArgs) { a.Signature = ap.Signature }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := newArgs()
			a.Approvals[0].PolicyDigest = append([]byte(nil), ap.PolicyDigest...)
			tt.change(a)
			key := tt.key
			if key == nil {
				key = k.Public().TPMPublic()
			}
			if err := policykey.VerifyRedeliver(key, a); !errors.Is(err, policykey.ErrRedeliverSignature) {
				t.Fatalf("VerifyRedeliver = %v, want ErrRedeliverSignature", err)
			}
		})
	}
}
