package verdict

import (
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"

	"github.com/trustpool/trustpool/internal/keyfile"
)

// Key file errors.
var (
	// ErrKeyFile means a key file exists but is unusable.
	ErrKeyFile = errors.New("unusable key file")
	// ErrNoKey means the key file does not exist.
	ErrNoKey = errors.New("no key file")
)

const pemPrivate = "PRIVATE KEY"

// keyFile is the private key file: package keyfile's checks, this
// package's errors.
var keyFile = keyfile.Format{PEMType: pemPrivate, NoKey: ErrNoKey, Unusable: ErrKeyFile}

// MarshalPublicKeyPEM encodes pub as a PEM "PUBLIC KEY" (PKIX) block, the
// file shims pin.
func MarshalPublicKeyPEM(pub ed25519.PublicKey) ([]byte, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("marshal public key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), nil
}

// ParsePublicKeyPEM decodes an Ed25519 PEM "PUBLIC KEY".
func ParsePublicKeyPEM(b []byte) (ed25519.PublicKey, error) {
	block, _ := pem.Decode(b)
	if block == nil || block.Type != "PUBLIC KEY" {
		return nil, fmt.Errorf("%w: no PEM PUBLIC KEY block", ErrKeyFile)
	}
	k, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrKeyFile, err)
	}
	pub, ok := k.(ed25519.PublicKey)
	if !ok {
		return nil, fmt.Errorf("%w: public key is %s, want Ed25519", ErrKeyFile, keyAlgorithm(k))
	}
	return pub, nil
}

// ParsePrivateKeyPEM decodes an Ed25519 PEM "PRIVATE KEY" (PKCS #8).
func ParsePrivateKeyPEM(b []byte) (ed25519.PrivateKey, error) {
	block, _ := pem.Decode(b)
	if block == nil || block.Type != pemPrivate {
		return nil, fmt.Errorf("%w: no PEM PRIVATE KEY block", ErrKeyFile)
	}
	return parsePrivateKey(block.Bytes)
}

// parsePrivateKey decodes an Ed25519 PKCS #8 private key.
func parsePrivateKey(der []byte) (ed25519.PrivateKey, error) {
	k, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrKeyFile, err)
	}
	priv, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("%w: private key is %s, want Ed25519", ErrKeyFile, keyAlgorithm(k))
	}
	return priv, nil
}

// LoadKey reads the Ed25519 private key at path. A missing file is an error
// wrapping [ErrNoKey]: a new key is made only when asked ([CreateKey]),
// since shims pin the old one and would drop every verdict signed with a
// new one. A file that is readable by others or does not hold an Ed25519
// key wraps [ErrKeyFile].
func LoadKey(path string) (ed25519.PrivateKey, error) {
	der, err := keyFile.Read(path)
	if err != nil {
		return nil, err
	}
	defer clear(der)
	k, err := parsePrivateKey(der)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	return k, nil
}

// CreateKey generates an Ed25519 key and writes it to path (PKCS #8 PEM,
// mode 0600; missing directories are created with mode 0700). An existing
// file is never replaced: the error then wraps fs.ErrExist.
func CreateKey(path string) (ed25519.PrivateKey, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate key: %w", err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return nil, fmt.Errorf("marshal private key: %w", err)
	}
	defer clear(der)
	if err := keyFile.Create(path, der); err != nil {
		return nil, err
	}
	return priv, nil
}

// keyAlgorithm names a parsed key's algorithm for error messages.
func keyAlgorithm(k any) string {
	switch k.(type) {
	case *rsa.PublicKey, *rsa.PrivateKey:
		return "an RSA key"
	case *ecdsa.PublicKey, *ecdsa.PrivateKey:
		return "an ECDSA key"
	case *ecdh.PublicKey, *ecdh.PrivateKey:
		return "an ECDH (X25519) key"
	}
	return "not an Ed25519 key"
}
