package importblob_test

import (
	"crypto/rand"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-tpm/tpm2"

	"github.com/trustpool/trustpool/internal/importblob"
	"github.com/trustpool/trustpool/internal/policykey"
)

// TestAuthorizedBlob: a blob sealed under PolicyAuthorize carries the
// policy-signing key, its authPolicy is PolicyAuthorize by that key (as
// the TPM computes it, checked on the simulator and swtpm by package tpm's
// tests), and Parse refuses a blob whose key or policy was swapped, and
// keys of any other shape; approval signatures convert only from DER
// ECDSA.
func TestAuthorizedBlob(t *testing.T) {
	ek := rsaEK(t)
	key, err := policykey.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	other, err := policykey.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	sel := []int{0, 4, 7, 8, 9}
	s, err := importblob.CreateAuthorized(rand.Reader, ek, sel, key.Public().TPMPublic(), launchID, instanceID, []byte("secret"))
	if err != nil {
		t.Fatal(err)
	}
	want, err := importblob.AuthorizePolicy(key.Public().TPMName())
	if err != nil {
		t.Fatal(err)
	}
	if string(s.PolicyDigest) != string(want) {
		t.Errorf("policy digest %x, want %x", s.PolicyDigest, want)
	}
	p, err := importblob.Parse(&s.Blob)
	if err != nil || p.AuthorizeKey == nil {
		t.Fatalf("Parse = %+v, %v", p, err)
	}
	if os.Getenv("TRUSTPOOL_UPDATE_TESTDATA") != "" {
		b, err := json.MarshalIndent(s.Blob, "", "  ")
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join("testdata", "blob_authorized.json"), append(b, '\n'), 0o644); err != nil { //nolint:gosec // public test data
			t.Fatal(err)
		}
	}

	bare, err := importblob.Create(rand.Reader, ek, sel, pcrValues(sel...), launchID, instanceID, []byte("secret"))
	if err != nil {
		t.Fatal(err)
	}
	notSigning := key.Public().TPMPublic()
	pub, _, err := importblob.CheckAuthorizeKey(notSigning)
	if err != nil {
		t.Fatal(err)
	}
	pub.ObjectAttributes.Decrypt = true
	decrypting := tpm2.Marshal(*pub)
	for _, tc := range []struct {
		name string
		edit func(b *importblob.Sealed)
	}{
		{"another key", func(b *importblob.Sealed) { b.Blob.AuthorizeKey = other.Public().TPMPublic() }},
		{"PolicyPCR blob claiming a key", func(b *importblob.Sealed) {
			b.Blob = bare.Blob
			b.Blob.AuthorizeKey = key.Public().TPMPublic()
		}},
		{"decrypting key", func(b *importblob.Sealed) { b.Blob.AuthorizeKey = decrypting }},
		{"RSA EK as key", func(b *importblob.Sealed) { b.Blob.AuthorizeKey = ek }},
		{"trailing bytes", func(b *importblob.Sealed) { b.Blob.AuthorizeKey = append(key.Public().TPMPublic(), 0) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := *s
			tc.edit(&c)
			if _, err := importblob.Parse(&c.Blob); !errors.Is(err, importblob.ErrInvalid) {
				t.Errorf("Parse = %v, want %v", err, importblob.ErrInvalid)
			}
		})
	}
	if _, err := importblob.CreateAuthorized(rand.Reader, ek, sel, decrypting, launchID, instanceID, []byte("secret")); !errors.Is(err, importblob.ErrInvalid) {
		t.Errorf("CreateAuthorized with a decrypting key: %v", err)
	}
	for _, der := range [][]byte{nil, []byte("not DER"), {0x30, 0x06, 0x02, 0x01, 0x00, 0x02, 0x01, 0x01}} {
		if _, err := importblob.ApprovalSignature(der); !errors.Is(err, importblob.ErrInvalid) {
			t.Errorf("ApprovalSignature(%x) = %v, want %v", der, err, importblob.ErrInvalid)
		}
	}
}

// FuzzApprovalSignature: the agent's converter of untrusted approval
// signatures never panics and yields 32-byte r and s.
func FuzzApprovalSignature(f *testing.F) {
	key, err := policykey.GenerateKey()
	if err != nil {
		f.Fatal(err)
	}
	a, err := key.Approve([]int{0}, pcrValues(0))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(a.Signature)
	f.Fuzz(func(t *testing.T, der []byte) {
		sig, err := importblob.ApprovalSignature(der)
		if err != nil {
			return
		}
		ecc, err := sig.Signature.ECDSA()
		if err != nil || len(ecc.SignatureR.Buffer) != 32 || len(ecc.SignatureS.Buffer) != 32 {
			t.Fatalf("converted %x to %+v", der, sig)
		}
	})
}
