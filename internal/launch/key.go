package launch

import (
	"crypto/ecdh"
	"crypto/hpke"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"

	"github.com/trustpool/trustpool/internal/keyfile"
)

// KEM names accepted in configuration and on the command line.
const (
	// KEMMLKEM768X25519 is the default: the ML-KEM-768 + X25519 hybrid
	// (post-quantum, and at least as strong as X25519 alone).
	KEMMLKEM768X25519 = "mlkem768x25519"
	// KEMX25519 is DHKEM(X25519, HKDF-SHA256).
	KEMX25519 = "x25519"
)

// The HPKE suite besides the KEM: HKDF-SHA256 and AES-256-GCM.
const (
	KDFID  = 0x0001
	AEADID = 0x0002
)

// KEM ids (RFC 9180 registry).
const (
	kemIDMLKEM768X25519 = 0x647a
	kemIDX25519         = 0x0020
)

// PEM block types of launch key files.
const (
	pemPrivate = "TRUSTPOOL LAUNCH PRIVATE KEY"
	pemPublic  = "TRUSTPOOL LAUNCH PUBLIC KEY"
)

// Key errors.
var (
	// ErrKeyFile: a key file exists but is unusable.
	ErrKeyFile = errors.New("unusable launch key file")
	// ErrNoKey: the key file does not exist.
	ErrNoKey = errors.New("no launch key file")
	// ErrKEM: an unknown or unsupported KEM.
	ErrKEM = errors.New("unsupported KEM")
)

// keyFile is the launch private key file: package keyfile's checks, this
// package's errors. The block holds the KEM id (2 bytes, big endian) and
// the serialized private key.
var keyFile = keyfile.Format{PEMType: pemPrivate, NoKey: ErrNoKey, Unusable: ErrKeyFile}

func kemByName(name string) (hpke.KEM, error) {
	switch name {
	case KEMMLKEM768X25519, "":
		return hpke.MLKEM768X25519(), nil
	case KEMX25519:
		return hpke.DHKEM(ecdh.X25519()), nil
	}
	return nil, fmt.Errorf("%w: %q (want %s or %s)", ErrKEM, name, KEMMLKEM768X25519, KEMX25519)
}

func kemByID(id uint16) (hpke.KEM, error) {
	switch id {
	case kemIDMLKEM768X25519, kemIDX25519:
		return hpke.NewKEM(id)
	}
	return nil, fmt.Errorf("%w: id %#04x (want ML-KEM-768+X25519 %#04x or DHKEM(X25519) %#04x)", ErrKEM, id, kemIDMLKEM768X25519, kemIDX25519)
}

// KEMName is the suite name of a KEM id for humans ("ML-KEM-768+X25519").
func KEMName(id uint16) string {
	switch id {
	case kemIDMLKEM768X25519:
		return "ML-KEM-768+X25519"
	case kemIDX25519:
		return "DHKEM(X25519, HKDF-SHA256)"
	}
	return fmt.Sprintf("KEM %#04x", id)
}

// ValidKEMName reports whether name is a KEM this package supports.
func ValidKEMName(name string) bool {
	_, err := kemByName(name)
	return err == nil
}

// PublicKey is the service's launch key as tenants pin it.
type PublicKey struct {
	pk hpke.PublicKey
}

// KEMID is the key's HPKE KEM id.
func (p *PublicKey) KEMID() uint16 { return p.pk.KEM().ID() }

// Bytes is the serialized public key (RFC 9180 SerializePublicKey).
func (p *PublicKey) Bytes() []byte { return p.pk.Bytes() }

// Fingerprint is the hex SHA-256 of the KEM id (2 bytes, big endian)
// followed by the serialized public key: what `trustpool key list` prints
// and a tenant pins.
func (p *PublicKey) Fingerprint() string {
	h := sha256.New()
	_ = binary.Write(h, binary.BigEndian, p.KEMID())
	h.Write(p.Bytes())
	return hex.EncodeToString(h.Sum(nil))
}

// KID is the first 16 hex characters of the fingerprint.
func (p *PublicKey) KID() string { return p.Fingerprint()[:16] }

// ParsePublicKey decodes a serialized public key of the KEM id.
func ParsePublicKey(kemID uint16, b []byte) (*PublicKey, error) {
	kem, err := kemByID(kemID)
	if err != nil {
		return nil, err
	}
	pk, err := kem.NewPublicKey(b)
	if err != nil {
		return nil, fmt.Errorf("%w: %s public key: %w", ErrKeyFile, KEMName(kemID), err)
	}
	return &PublicKey{pk: pk}, nil
}

// MarshalPEM encodes the public key as a PEM block (KEM id, then the key),
// the file a tenant may pin.
func (p *PublicKey) MarshalPEM() []byte {
	b := binary.BigEndian.AppendUint16(nil, p.KEMID())
	return pem.EncodeToMemory(&pem.Block{Type: pemPublic, Headers: map[string]string{"Suite": p.Suite()}, Bytes: append(b, p.Bytes()...)})
}

// Suite names the whole HPKE suite.
func (p *PublicKey) Suite() string { return KEMName(p.KEMID()) + ", HKDF-SHA256, AES-256-GCM" }

// ParsePublicKeyPEM decodes MarshalPEM's output.
func ParsePublicKeyPEM(b []byte) (*PublicKey, error) {
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != pemPublic || len(blk.Bytes) < 3 {
		return nil, fmt.Errorf("%w: no PEM %s block", ErrKeyFile, pemPublic)
	}
	return ParsePublicKey(binary.BigEndian.Uint16(blk.Bytes), blk.Bytes[2:])
}

// PrivateKey is the service's launch key.
type PrivateKey struct {
	sk  hpke.PrivateKey
	pub *PublicKey
}

// Public is the key's public half.
func (k *PrivateKey) Public() *PublicKey { return k.pub }

func newPrivate(sk hpke.PrivateKey) *PrivateKey {
	return &PrivateKey{sk: sk, pub: &PublicKey{pk: sk.PublicKey()}}
}

// LoadKey reads the launch private key at path. A missing file wraps
// ErrNoKey: a key is created only when asked (CreateKey), since tenants pin
// the public key. A file readable by others or not holding a launch key
// wraps ErrKeyFile.
func LoadKey(path string) (*PrivateKey, error) {
	body, err := keyFile.Read(path)
	if err != nil {
		return nil, err
	}
	defer clear(body)
	if len(body) < 3 {
		return nil, fmt.Errorf("%w: %s: no PEM %s block", ErrKeyFile, path, pemPrivate)
	}
	kem, err := kemByID(binary.BigEndian.Uint16(body))
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrKeyFile, path, err)
	}
	sk, err := kem.NewPrivateKey(body[2:])
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrKeyFile, path, err)
	}
	return newPrivate(sk), nil
}

// CreateKey generates a launch key of the named KEM and writes it to path
// (PEM, mode 0600; missing directories are created 0700). An existing file
// is never replaced: the error then wraps fs.ErrExist.
func CreateKey(path, kemName string) (*PrivateKey, error) {
	kem, err := kemByName(strings.ToLower(kemName))
	if err != nil {
		return nil, err
	}
	sk, err := kem.GenerateKey()
	if err != nil {
		return nil, fmt.Errorf("generate launch key: %w", err)
	}
	raw, err := sk.Bytes()
	if err != nil {
		return nil, fmt.Errorf("serialize launch key: %w", err)
	}
	body := binary.BigEndian.AppendUint16(nil, kem.ID())
	body = append(body, raw...)
	defer clear(body)
	clear(raw)
	if err := keyFile.Create(path, body); err != nil {
		return nil, err
	}
	return newPrivate(sk), nil
}

// GenerateKey makes a launch key in memory (tests, benchmarks).
func GenerateKey(kemName string) (*PrivateKey, error) {
	kem, err := kemByName(kemName)
	if err != nil {
		return nil, err
	}
	sk, err := kem.GenerateKey()
	if err != nil {
		return nil, err
	}
	return newPrivate(sk), nil
}
