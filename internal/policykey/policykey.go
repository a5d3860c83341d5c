// Package policykey is the attestation service's policy-signing key: an
// ECDSA P-256 key, separate from the verdict and launch keys, that approves
// PCR states for secrets sealed under TPM2_PolicyAuthorize (package
// importblob's CreateAuthorized).
//
// An approval ([PrivateKey.Approve]) is the key's signature over
// importblob.ApprovalDigest of the TPM2_PolicyPCR digest of one set of
// SHA-256 PCR values. An agent's TPM verifies it (TPM2_VerifySignature,
// with the public key loaded from the blob) and lets TPM2_PolicyAuthorize
// accept a policy session whose PolicyPCR reached that digest. So the TPM
// itself refuses a state nobody approved and an approval the key did not
// sign; which states the service approves is its policy (the accepted
// values of the launch's profile).
//
// Key files are PEM "EC PRIVATE KEY" (SEC 1), mode 0600; [LoadKey] never
// creates one and [CreateKey] never replaces one, since agents' sealed
// blobs name the key: a new key orphans every blob sealed under the old
// one. The package does no logging.
package policykey

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"slices"

	"github.com/google/go-tpm/tpm2"

	"github.com/trustpool/trustpool/internal/attestrpc"
	"github.com/trustpool/trustpool/internal/importblob"
	"github.com/trustpool/trustpool/internal/keyfile"
)

// Algorithm names the key's algorithm for humans and GET /v1/keys.
const Algorithm = "ECDSA P-256 SHA-256"

const pemPrivate = "EC PRIVATE KEY"

// Errors.
var (
	// ErrNoKey: the key file does not exist.
	ErrNoKey = errors.New("no policy-signing key file")
	// ErrKeyFile: a key file exists but is unusable.
	ErrKeyFile = errors.New("unusable policy-signing key file")
)

// keyFile is the key file: package keyfile's checks, this package's
// errors.
var keyFile = keyfile.Format{PEMType: pemPrivate, NoKey: ErrNoKey, Unusable: ErrKeyFile}

// PrivateKey is the policy-signing key.
type PrivateKey struct {
	sk  *ecdsa.PrivateKey
	pub *PublicKey
}

// PublicKey is its public half.
type PublicKey struct {
	pk   *ecdsa.PublicKey
	tpm  []byte // TPMT_PUBLIC
	name []byte // TPM name
}

func newPrivate(sk *ecdsa.PrivateKey) (*PrivateKey, error) {
	pub, err := NewPublicKey(&sk.PublicKey)
	if err != nil {
		return nil, err
	}
	return &PrivateKey{sk: sk, pub: pub}, nil
}

// NewPublicKey wraps an ECDSA P-256 public key.
func NewPublicKey(pk *ecdsa.PublicKey) (*PublicKey, error) {
	if pk.Curve != elliptic.P256() {
		return nil, fmt.Errorf("%w: not a P-256 key", ErrKeyFile)
	}
	ecdhKey, err := pk.ECDH()
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrKeyFile, err)
	}
	raw := ecdhKey.Bytes() // 0x04 ‖ X ‖ Y
	pub := tpm2.TPMTPublic{
		Type:             tpm2.TPMAlgECC,
		NameAlg:          tpm2.TPMAlgSHA256,
		ObjectAttributes: tpm2.TPMAObject{SignEncrypt: true, UserWithAuth: true},
		Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgECC, &tpm2.TPMSECCParms{
			Symmetric: tpm2.TPMTSymDefObject{Algorithm: tpm2.TPMAlgNull},
			Scheme: tpm2.TPMTECCScheme{Scheme: tpm2.TPMAlgECDSA,
				Details: tpm2.NewTPMUAsymScheme(tpm2.TPMAlgECDSA, &tpm2.TPMSSigSchemeECDSA{HashAlg: tpm2.TPMAlgSHA256})},
			CurveID: tpm2.TPMECCNistP256,
			KDF:     tpm2.TPMTKDFScheme{Scheme: tpm2.TPMAlgNull},
		}),
		Unique: tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{
			X: tpm2.TPM2BECCParameter{Buffer: raw[1:33]},
			Y: tpm2.TPM2BECCParameter{Buffer: raw[33:]},
		}),
	}
	name, err := tpm2.ObjectName(&pub)
	if err != nil {
		return nil, fmt.Errorf("policy-signing key name: %w", err)
	}
	return &PublicKey{pk: pk, tpm: tpm2.Marshal(pub), name: name.Buffer}, nil
}

// Public returns the public half.
func (k *PrivateKey) Public() *PublicKey { return k.pub }

// TPMPublic is the key's TPMT_PUBLIC (what blobs carry as
// attestrpc.ImportBlob.AuthorizeKey and agents load with
// TPM2_LoadExternal).
func (p *PublicKey) TPMPublic() []byte { return slices.Clone(p.tpm) }

// TPMName is the key's TPM name (nameAlg SHA-256): what a blob's
// TPM2_PolicyAuthorize names.
func (p *PublicKey) TPMName() []byte { return slices.Clone(p.name) }

// Fingerprint is the hex SHA-256 of the key's PKIX DER encoding.
func (p *PublicKey) Fingerprint() string {
	der, err := x509.MarshalPKIXPublicKey(p.pk)
	if err != nil {
		return ""
	}
	d := sha256.Sum256(der)
	return hex.EncodeToString(d[:])
}

// KID is the key id: the first 16 hex digits of the fingerprint.
func (p *PublicKey) KID() string { return p.Fingerprint()[:16] }

// MarshalPEM is the PEM "PUBLIC KEY" (PKIX) block of the key.
func (p *PublicKey) MarshalPEM() []byte {
	der, err := x509.MarshalPKIXPublicKey(p.pk)
	if err != nil {
		return nil
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

// Verify checks an approval against the key in Go (the service's own check
// and tests'; agents leave it to their TPM).
func (p *PublicKey) Verify(a *attestrpc.PolicyApproval) bool {
	return a.KID == p.KID() && ecdsa.VerifyASN1(p.pk, importblob.ApprovalDigest(a.PolicyDigest), a.Signature)
}

// Approve signs the PCR state values over the SHA-256 PCRs sel: an approval
// that lets a blob sealed under this key's PolicyAuthorize unseal while
// the TPM's PCRs sel hold exactly these values.
func (k *PrivateKey) Approve(sel []int, values map[int][]byte) (attestrpc.PolicyApproval, error) {
	digest, err := importblob.PCRPolicy(sel, values)
	if err != nil {
		return attestrpc.PolicyApproval{}, err
	}
	sig, err := ecdsa.SignASN1(rand.Reader, k.sk, importblob.ApprovalDigest(digest))
	if err != nil {
		return attestrpc.PolicyApproval{}, fmt.Errorf("sign approval: %w", err)
	}
	return attestrpc.PolicyApproval{KID: k.pub.KID(), PCRs: slices.Clone(sel), PolicyDigest: digest, Signature: sig}, nil
}

// GenerateKey makes a key in memory (tests, benchmarks).
func GenerateKey() (*PrivateKey, error) {
	sk, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate policy-signing key: %w", err)
	}
	return newPrivate(sk)
}

// LoadKey reads the key at path. A missing file wraps ErrNoKey; a file
// readable by others or not holding a P-256 key wraps ErrKeyFile.
func LoadKey(path string) (*PrivateKey, error) {
	der, err := keyFile.Read(path)
	if err != nil {
		return nil, err
	}
	defer clear(der)
	sk, err := x509.ParseECPrivateKey(der)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrKeyFile, path, err)
	}
	k, err := newPrivate(sk)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrKeyFile, path, err)
	}
	return k, nil
}

// CreateKey generates a key and writes it to path (PEM, mode 0600; missing
// directories are created 0700). An existing file is never replaced: the
// error then wraps fs.ErrExist.
func CreateKey(path string) (*PrivateKey, error) {
	k, err := GenerateKey()
	if err != nil {
		return nil, err
	}
	der, err := x509.MarshalECPrivateKey(k.sk)
	if err != nil {
		return nil, fmt.Errorf("serialize policy-signing key: %w", err)
	}
	defer clear(der)
	if err := keyFile.Create(path, der); err != nil {
		return nil, err
	}
	return k, nil
}
