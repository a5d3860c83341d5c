package policykey_test

import (
	"crypto/sha256"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"

	"github.com/trustpool/trustpool/internal/importblob"
	"github.com/trustpool/trustpool/internal/policykey"
)

func values(b byte) map[int][]byte {
	v := map[int][]byte{}
	for i := range 10 {
		d := sha256.Sum256([]byte{b, byte(i)})
		v[i] = d[:]
	}
	return v
}

var sel = []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}

// TestKeyFile: a created key loads back with the same public key, is 0600
// and never replaced; a missing file, a file others can read and a file
// that holds no P-256 key are refused with the sentinel to branch on.
func TestKeyFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "sub", "policy-signing.key")
	k, err := policykey.CreateKey(path)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode %v, %v", fi.Mode(), err)
	}
	l, err := policykey.LoadKey(path)
	if err != nil {
		t.Fatal(err)
	}
	if l.Public().Fingerprint() != k.Public().Fingerprint() || len(k.Public().KID()) != 16 {
		t.Errorf("loaded %s, created %s", l.Public().Fingerprint(), k.Public().Fingerprint())
	}
	if _, err := policykey.CreateKey(path); !errors.Is(err, fs.ErrExist) {
		t.Errorf("CreateKey over an existing file: %v, want fs.ErrExist", err)
	}
	if _, err := policykey.LoadKey(filepath.Join(dir, "missing")); !errors.Is(err, policykey.ErrNoKey) {
		t.Errorf("missing file: %v", err)
	}
	open := filepath.Join(dir, "open.key")
	b, _ := os.ReadFile(path)
	if err := os.WriteFile(open, b, 0o644); err != nil { //nolint:gosec // the test's point
		t.Fatal(err)
	}
	if _, err := policykey.LoadKey(open); !errors.Is(err, policykey.ErrKeyFile) {
		t.Errorf("world-readable file: %v", err)
	}
	junk := filepath.Join(dir, "junk.key")
	if err := os.WriteFile(junk, []byte("-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := policykey.LoadKey(junk); !errors.Is(err, policykey.ErrKeyFile) {
		t.Errorf("junk: %v", err)
	}
}

// TestApprove: an approval verifies with its key only, for the digest it
// names only; the key's TPM public area is what importblob accepts as a
// blob's authorize key, and its name is what the blob's policy names.
func TestApprove(t *testing.T) {
	k, err := policykey.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	other, err := policykey.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	a, err := k.Approve(sel, values(1))
	if err != nil {
		t.Fatal(err)
	}
	want, err := importblob.PCRPolicy(sel, values(1))
	if err != nil {
		t.Fatal(err)
	}
	if string(a.PolicyDigest) != string(want) || a.KID != k.Public().KID() {
		t.Errorf("approval %+v", a)
	}
	if !k.Public().Verify(&a) {
		t.Error("approval does not verify")
	}
	if other.Public().Verify(&a) {
		t.Error("approval verifies with another key")
	}
	b, _ := k.Approve(sel, values(2))
	swapped := a
	swapped.PolicyDigest = b.PolicyDigest
	if k.Public().Verify(&swapped) {
		t.Error("approval verifies for another digest")
	}
	if _, err := k.Approve(sel, map[int][]byte{0: make([]byte, 32)}); err == nil {
		t.Error("approved a state missing PCRs")
	}
	_, name, err := importblob.CheckAuthorizeKey(k.Public().TPMPublic())
	if err != nil {
		t.Fatal(err)
	}
	if string(name) != string(k.Public().TPMName()) {
		t.Error("TPM name differs from the checked key's")
	}
	if _, err := importblob.ApprovalSignature(a.Signature); err != nil {
		t.Errorf("approval signature does not convert: %v", err)
	}
}

// BenchmarkApprove is the service's cost of one approval (one PCR state of
// a profile): a PolicyPCR digest and an ECDSA P-256 signature. Approvals
// are per state, not per host: 1,000 hosts on 3 approved builds need 3.
//
//	go test -run '^$' -bench BenchmarkApprove ./internal/policykey/
func BenchmarkApprove(b *testing.B) {
	k, err := policykey.GenerateKey()
	if err != nil {
		b.Fatal(err)
	}
	v := values(1)
	for b.Loop() {
		if _, err := k.Approve(sel, v); err != nil {
			b.Fatal(err)
		}
	}
}
