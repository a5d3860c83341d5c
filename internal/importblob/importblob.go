// Package importblob seals a launch secret to one TPM in one state, and
// checks such a blob on the receiving side. The service creates blobs
// ([Create]); the agent parses them ([Parse]), has its TPM import and unseal
// the key (package tpm), then opens the payload ([Opened.Open]).
//
// # Format
//
// A blob (attestrpc.ImportBlob) holds a KEYEDHASH sealed-data object in
// TPM2_Duplicate format with an outer wrapper only (TPM 2.0 Part 1,
// "Duplication"; Part 3, TPM2_Import), made for the host's endorsement key as
// the new parent:
//
//   - the object's public area: nameAlg SHA-256, attributes noDA and
//     adminWithPolicy and nothing else (not fixedTPM or fixedParent, which
//     an imported object must not have; not userWithAuth, so unsealing
//     needs the policy), authPolicy = TPM2_PolicyPCR over the SHA-256 PCRs
//     the service verified in a fresh quote, computed from a zero digest,
//     and unique = SHA-256(seedValue ‖ data);
//   - its sensitive area holds a random 32-byte key and a random 32-byte
//     seedValue, encrypted and HMACed with keys derived from a random seed
//     (go-tpm's tpm2.CreateDuplicate: KDFa "STORAGE"/"INTEGRITY" with the
//     object's name), and the seed is encrypted to the EK (RSA-OAEP with
//     label "DUPLICATE", or ECDH + KDFe for ECC EKs), using the EK's own
//     name algorithm and symmetric parameters, so SHA-384/AES-256 EKs work
//     as well as the SHA-256/AES-128 ones;
//   - the payload: the secret under AES-256-GCM with that key, a random
//     12-byte nonce, and the launch id and instance id as additional data.
//
// The secret does not sit in the TPM object itself because a sealed-data
// object holds at most 128 bytes (MAX_SYM_DATA) and because the ids must be
// bound to it: the EK is public, so anyone can make a blob for it, and a
// blob copied from the bus and re-sent for another instance must not open.
//
// # What is checked, and what is not
//
// The TPM checks the outer HMAC (the blob was made for this EK and not
// altered) on TPM2_Import, and the PCR policy on TPM2_Unseal. [Parse] checks
// everything the agent relies on before the TPM sees it: sizes, that the
// public area is exactly the shape [Create] makes (so a blob cannot smuggle
// userWithAuth, an empty policy or another object type). The PCR selection
// is not compared with the authPolicy here: a session over other PCRs
// reaches another digest, and the TPM refuses to unseal. [Parsed.Open]
// checks the AEAD (wrong key, launch or instance: no plaintext).
//
// Not checked here: who made the blob. Anyone holding the EK's public key
// can make one, so a blob that imports and opens proves only that its
// maker knew the payload; the agent delivers it to the instance named, and
// the tenant's proof (package launch) shows whether the secret is theirs.
//
// Choice of library: go-tpm's TPMDirect tpm2.CreateDuplicate, which the
// project already uses for credential activation, rather than go-tpm-tools'
// server.CreateImportBlob: the latter pulls in several modules
// (confidential-space, SEV and TDX libraries, go-eventlog) and rebuilds the
// EK public area from its default templates, so it cannot seal to EKs with
// other parameters, such as swtpm's P-384 EK.
//
// The package is pure: no I/O, no logging.
package importblob

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"slices"

	"github.com/google/go-tpm/tpm2"

	"github.com/trustpool/trustpool/internal/attestrpc"
)

// Errors.
var (
	// ErrInvalid: the blob (or an input to Create) is malformed.
	ErrInvalid = errors.New("invalid import blob")
	// ErrPayload: the payload does not open with this key for this launch
	// and instance.
	ErrPayload = errors.New("payload does not open")
	// ErrEK: the EK public area cannot be sealed to.
	ErrEK = errors.New("unusable endorsement key")
)

// KeySize is the size of the sealed key.
const KeySize = 32

const payloadLabel = "trustpool-launch-payload-v1"

// Attributes of the sealed object.
var objectAttributes = tpm2.TPMAObject{NoDA: true, AdminWithPolicy: true}

// PCRPolicy returns the policy digest of TPM2_PolicyPCR over the SHA-256
// PCRs sel with the given values (every PCR in sel must have a 32-byte
// value), computed from a zero digest: what the sealed object's authPolicy
// is and what a policy session running PolicyPCR on the same PCR values
// reaches.
func PCRPolicy(sel []int, values map[int][]byte) ([]byte, error) {
	if err := checkSelection(sel); err != nil {
		return nil, err
	}
	h := sha256.New()
	for _, i := range sel {
		v, ok := values[i]
		if !ok || len(v) != sha256.Size {
			return nil, fmt.Errorf("%w: PCR %d has no SHA-256 value", ErrInvalid, i)
		}
		h.Write(v)
	}
	pc, err := tpm2.NewPolicyCalculator(tpm2.TPMAlgSHA256)
	if err != nil {
		return nil, err
	}
	if err := (tpm2.PolicyPCR{PcrDigest: tpm2.TPM2BDigest{Buffer: h.Sum(nil)}, Pcrs: Selection(sel)}).Update(pc); err != nil {
		return nil, fmt.Errorf("policy digest: %w", err)
	}
	return pc.Hash().Digest, nil
}

// Selection is the TPML_PCR_SELECTION of SHA-256 PCRs sel.
func Selection(sel []int) tpm2.TPMLPCRSelection {
	u := make([]uint, len(sel))
	for i, p := range sel {
		u[i] = uint(p)
	}
	return tpm2.TPMLPCRSelection{PCRSelections: []tpm2.TPMSPCRSelection{{
		Hash: tpm2.TPMAlgSHA256, PCRSelect: tpm2.PCClientCompatible.PCRs(u...),
	}}}
}

func checkSelection(sel []int) error {
	if len(sel) == 0 || len(sel) > 24 {
		return fmt.Errorf("%w: PCR selection must list 1..24 PCRs", ErrInvalid)
	}
	for i, p := range sel {
		if p < 0 || p > 23 || (i > 0 && p <= sel[i-1]) {
			return fmt.Errorf("%w: PCR selection must be ascending PCRs 0-23", ErrInvalid)
		}
	}
	return nil
}

// Sealed is what Create made.
type Sealed struct {
	Blob attestrpc.ImportBlob
	// PolicyDigest is the sealed object's authPolicy (hex in receipts).
	PolicyDigest []byte
}

// Create seals secret for the TPM whose EK public area (TPMT_PUBLIC, as
// enrolled) is ekPublic, under a PolicyPCR over the SHA-256 PCRs sel with
// the given values, for one launch and instance. rand supplies the key,
// seeds and nonce.
func Create(rand io.Reader, ekPublic []byte, sel []int, values map[int][]byte, launchID, instanceID string, secret []byte) (*Sealed, error) {
	if len(secret) == 0 || len(secret) > attestrpc.MaxSecret {
		return nil, fmt.Errorf("%w: secret must be 1..%d bytes", ErrInvalid, attestrpc.MaxSecret)
	}
	policy, err := PCRPolicy(sel, values)
	if err != nil {
		return nil, err
	}
	ek, err := tpm2.Unmarshal[tpm2.TPMTPublic](ekPublic)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrEK, err)
	}
	encap, err := tpm2.ImportEncapsulationKey(ek)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrEK, err)
	}
	key := make([]byte, KeySize)
	seedValue := make([]byte, sha256.Size)
	if _, err := io.ReadFull(rand, key); err != nil {
		return nil, fmt.Errorf("random key: %w", err)
	}
	defer clear(key)
	if _, err := io.ReadFull(rand, seedValue); err != nil {
		return nil, fmt.Errorf("random seed value: %w", err)
	}
	unique := sha256.Sum256(append(slices.Clone(seedValue), key...))
	pub := objectPublic(policy, unique[:])
	name, err := tpm2.ObjectName(&pub)
	if err != nil {
		return nil, fmt.Errorf("object name: %w", err)
	}
	sens := tpm2.Marshal(tpm2.TPMTSensitive{
		SensitiveType: tpm2.TPMAlgKeyedHash,
		SeedValue:     tpm2.TPM2BDigest{Buffer: seedValue},
		Sensitive:     tpm2.NewTPMUSensitiveComposite(tpm2.TPMAlgKeyedHash, &tpm2.TPM2BSensitiveData{Buffer: key}),
	})
	defer clear(sens)
	dup, seed, err := tpm2.CreateDuplicate(rand, encap, name.Buffer, sens)
	if err != nil {
		return nil, fmt.Errorf("%w: duplicate: %w", ErrEK, err)
	}
	payload, err := seal(rand, key, launchID, instanceID, secret)
	if err != nil {
		return nil, err
	}
	return &Sealed{
		Blob:         attestrpc.ImportBlob{Public: tpm2.Marshal(pub), Duplicate: dup, InSymSeed: seed, PCRs: slices.Clone(sel), Payload: payload},
		PolicyDigest: policy,
	}, nil
}

func objectPublic(policy, unique []byte) tpm2.TPMTPublic {
	return tpm2.TPMTPublic{
		Type:             tpm2.TPMAlgKeyedHash,
		NameAlg:          tpm2.TPMAlgSHA256,
		ObjectAttributes: objectAttributes,
		AuthPolicy:       tpm2.TPM2BDigest{Buffer: policy},
		Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgKeyedHash, &tpm2.TPMSKeyedHashParms{
			Scheme: tpm2.TPMTKeyedHashScheme{Scheme: tpm2.TPMAlgNull},
		}),
		Unique: tpm2.NewTPMUPublicID(tpm2.TPMAlgKeyedHash, &tpm2.TPM2BDigest{Buffer: unique}),
	}
}

func aad(launchID, instanceID string) []byte {
	var b bytes.Buffer
	b.WriteString(payloadLabel)
	b.WriteByte(0)
	b.WriteString(launchID)
	b.WriteByte(0)
	b.WriteString(instanceID)
	return b.Bytes()
}

func seal(rand io.Reader, key []byte, launchID, instanceID string, secret []byte) ([]byte, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	gcm, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	nonce := make([]byte, gcm.NonceSize())
	if _, err := io.ReadFull(rand, nonce); err != nil {
		return nil, fmt.Errorf("random nonce: %w", err)
	}
	return gcm.Seal(nonce, nonce, secret, aad(launchID, instanceID)), nil
}

// Parsed is a blob that passed Parse: the TPM structures to import.
type Parsed struct {
	// Public is the sealed object's public area.
	Public tpm2.TPMTPublic
	// Duplicate and InSymSeed go to TPM2_Import as they are.
	Duplicate, InSymSeed []byte
	// PCRs is the policy's SHA-256 PCR selection.
	PCRs []int

	payload []byte
}

// Parse checks an untrusted blob's shape (see the package doc) and decodes
// it.
func Parse(b *attestrpc.ImportBlob) (*Parsed, error) {
	for _, f := range []struct {
		name string
		v    []byte
	}{{"public", b.Public}, {"duplicate", b.Duplicate}, {"in_sym_seed", b.InSymSeed}, {"payload", b.Payload}} {
		if len(f.v) == 0 || len(f.v) > attestrpc.MaxBlobPart {
			return nil, fmt.Errorf("%w: %s must be 1..%d bytes", ErrInvalid, f.name, attestrpc.MaxBlobPart)
		}
	}
	if err := checkSelection(b.PCRs); err != nil {
		return nil, err
	}
	pub, err := tpm2.Unmarshal[tpm2.TPMTPublic](b.Public)
	if err != nil {
		return nil, fmt.Errorf("%w: public area: %w", ErrInvalid, err)
	}
	if !bytes.Equal(tpm2.Marshal(*pub), b.Public) {
		return nil, fmt.Errorf("%w: public area has trailing or non-canonical bytes", ErrInvalid)
	}
	if pub.Type != tpm2.TPMAlgKeyedHash || pub.NameAlg != tpm2.TPMAlgSHA256 {
		return nil, fmt.Errorf("%w: not a SHA-256 keyed-hash object", ErrInvalid)
	}
	if pub.ObjectAttributes != objectAttributes {
		return nil, fmt.Errorf("%w: object attributes must be noDA|adminWithPolicy only", ErrInvalid)
	}
	if len(pub.AuthPolicy.Buffer) != sha256.Size {
		return nil, fmt.Errorf("%w: no SHA-256 authorization policy", ErrInvalid)
	}
	parms, err := pub.Parameters.KeyedHashDetail()
	if err != nil || parms.Scheme.Scheme != tpm2.TPMAlgNull {
		return nil, fmt.Errorf("%w: a sealed-data object has no keyed-hash scheme", ErrInvalid)
	}
	uniq, err := pub.Unique.KeyedHash()
	if err != nil || len(uniq.Buffer) != sha256.Size {
		return nil, fmt.Errorf("%w: unique is not a SHA-256 digest", ErrInvalid)
	}
	if len(b.Payload) < 12+16+1 {
		return nil, fmt.Errorf("%w: payload too short", ErrInvalid)
	}
	return &Parsed{Public: *pub, Duplicate: slices.Clone(b.Duplicate), InSymSeed: slices.Clone(b.InSymSeed),
		PCRs: slices.Clone(b.PCRs), payload: slices.Clone(b.Payload)}, nil
}

// Open decrypts the payload with the unsealed key for launchID and
// instanceID; any mismatch is ErrPayload. The caller wipes the result
// after use.
func (p *Parsed) Open(key []byte, launchID, instanceID string) ([]byte, error) {
	if len(key) != KeySize {
		return nil, fmt.Errorf("%w: unsealed key is %d bytes, want %d", ErrPayload, len(key), KeySize)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrPayload, err)
	}
	gcm, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrPayload, err)
	}
	n := gcm.NonceSize()
	out, err := gcm.Open(nil, p.payload[:n], p.payload[n:], aad(launchID, instanceID))
	if err != nil {
		return nil, ErrPayload
	}
	return out, nil
}
