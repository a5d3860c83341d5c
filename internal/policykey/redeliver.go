package policykey

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/google/go-tpm/tpm2"

	"github.com/trustpool/trustpool/internal/attestrpc"
)

// ErrRedeliverSignature is wrapped when a redeliver_secret (or
// forget_secret) request's signature is not the policy-signing key's over
// its fields.
var ErrRedeliverSignature = errors.New("redeliver request not signed by the policy-signing key")

// redeliverDomain starts every signed redeliver request. An approval signs
// SHA-256(PolicyPCR digest ‖ importblob.PolicyRef): for a request's bytes
// to be taken for an approval, a PolicyPCR digest would have to start
// with these bytes.
const redeliverDomain = "trustpool-redeliver-v1\x00"

// RedeliverDigest is what the policy-signing key signs in a
// redeliver_secret request: SHA-256 over the domain string, then the
// launch and instance ids, the agent's nonce, the receipt and every
// approval (kid, PCRs, digest, signature), each length-prefixed.
func RedeliverDigest(a *attestrpc.RedeliverSecretArgs) []byte {
	h := sha256.New()
	h.Write([]byte(redeliverDomain))
	field := func(b []byte) {
		var n [4]byte
		binary.BigEndian.PutUint32(n[:], uint32(len(b)))
		h.Write(n[:])
		h.Write(b)
	}
	field([]byte(a.LaunchID))
	field([]byte(a.InstanceID))
	field(a.Nonce)
	field(a.Receipt)
	var n [4]byte
	binary.BigEndian.PutUint32(n[:], uint32(len(a.Approvals)))
	h.Write(n[:])
	for _, ap := range a.Approvals {
		field([]byte(ap.KID))
		pcrs := make([]byte, len(ap.PCRs))
		for i, p := range ap.PCRs {
			pcrs[i] = byte(p)
		}
		field(pcrs)
		field(ap.PolicyDigest)
		field(ap.Signature)
	}
	return h.Sum(nil)
}

// SignRedeliver sets a.Signature: the key's signature over
// RedeliverDigest(a).
func (k *PrivateKey) SignRedeliver(a *attestrpc.RedeliverSecretArgs) error {
	sig, err := ecdsa.SignASN1(rand.Reader, k.sk, RedeliverDigest(a))
	if err != nil {
		return fmt.Errorf("sign redeliver request: %w", err)
	}
	a.Signature = sig
	return nil
}

// VerifyRedeliver checks a.Signature against the policy-signing key whose
// TPMT_PUBLIC is tpmPublic (a kept blob's AuthorizeKey: the key the TPM
// will hold the blob's approvals to). It wraps ErrRedeliverSignature when
// the key is unusable or the signature does not verify.
func VerifyRedeliver(tpmPublic []byte, a *attestrpc.RedeliverSecretArgs) error {
	pk, err := publicFromTPM(tpmPublic)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrRedeliverSignature, err)
	}
	if !ecdsa.VerifyASN1(pk, RedeliverDigest(a), a.Signature) {
		return ErrRedeliverSignature
	}
	return nil
}

// publicFromTPM reads an ECDSA P-256 key from a TPMT_PUBLIC made by
// NewPublicKey (and nothing else: the re-encoding must match).
func publicFromTPM(b []byte) (*ecdsa.PublicKey, error) {
	pub, err := tpm2.Unmarshal[tpm2.TPMTPublic](b)
	if err != nil {
		return nil, fmt.Errorf("key: %w", err)
	}
	if pub.Type != tpm2.TPMAlgECC {
		return nil, errors.New("key: not an ECC key")
	}
	pt, err := pub.Unique.ECC()
	if err != nil {
		return nil, fmt.Errorf("key: %w", err)
	}
	if len(pt.X.Buffer) != 32 || len(pt.Y.Buffer) != 32 {
		return nil, errors.New("key: not a P-256 point")
	}
	pk, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), append(append([]byte{4}, pt.X.Buffer...), pt.Y.Buffer...))
	if err != nil {
		return nil, fmt.Errorf("key: %w", err)
	}
	p, err := NewPublicKey(pk)
	if err != nil {
		return nil, err
	}
	if !bytes.Equal(p.tpm, b) {
		return nil, errors.New("key: not a policy-signing key's TPMT_PUBLIC")
	}
	return pk, nil
}

// forgetDomain starts every signed forget_secret request.
const forgetDomain = "trustpool-forget-v1\x00"

// ForgetDigest is what the policy-signing key signs in a forget_secret
// request: SHA-256 over the domain string and the launch and instance
// ids, length-prefixed.
func ForgetDigest(a *attestrpc.ForgetSecretArgs) []byte {
	h := sha256.New()
	h.Write([]byte(forgetDomain))
	for _, f := range []string{a.LaunchID, a.InstanceID} {
		var n [4]byte
		binary.BigEndian.PutUint32(n[:], uint32(len(f)))
		h.Write(n[:])
		h.Write([]byte(f))
	}
	return h.Sum(nil)
}

// SignForget sets a.Signature.
func (k *PrivateKey) SignForget(a *attestrpc.ForgetSecretArgs) error {
	sig, err := ecdsa.SignASN1(rand.Reader, k.sk, ForgetDigest(a))
	if err != nil {
		return fmt.Errorf("sign forget request: %w", err)
	}
	a.Signature = sig
	return nil
}

// VerifyForget checks a.Signature against the key whose TPMT_PUBLIC is
// tpmPublic, wrapping ErrRedeliverSignature when it does not verify.
func VerifyForget(tpmPublic []byte, a *attestrpc.ForgetSecretArgs) error {
	pk, err := publicFromTPM(tpmPublic)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrRedeliverSignature, err)
	}
	if !ecdsa.VerifyASN1(pk, ForgetDigest(a), a.Signature) {
		return ErrRedeliverSignature
	}
	return nil
}
