// Package simtpm is a simulated TPM for fleet simulations and load tests:
// a software model that emits real TPM 2.0 structures (TPMT_PUBLIC,
// TPMS_ATTEST quotes, TPMT_SIGNATURE, TPM2_MakeCredential blobs) from keys
// held in process memory. It is NOT a TPM and proves nothing about any
// machine: whoever holds the process holds every key. It exists so one
// process can stand in for thousands of hosts, which the real-TPM paths
// (swtpm, the go-tpm-tools simulator) cannot do; those stay the tests of
// the agent's TPM code.
//
// What it models, per the TPM 2.0 specification (Part 1 "Credential
// Protection", Part 2 structures):
//
//   - an ECC P-256 endorsement key with the TCG default EK template and,
//     optionally, an X.509 EK certificate from a test CA ([CA]);
//   - an ECC P-256 restricted signing AK with the agent's AK template;
//   - TPM2_ActivateCredential in software: the seed is recovered by ECDH
//     with the EK (KDFe, label IDENTITY), the integrity HMAC over
//     encIdentity || AK name is checked (KDFa INTEGRITY) and the
//     credential decrypted (KDFa STORAGE, AES-128-CFB), so a credential
//     made for another EK or another AK name is refused;
//   - SHA-1 and SHA-256 PCR banks (24 PCRs), extended as a TPM extends;
//   - TPM2_Quote over the SHA-256 bank: a TPMS_ATTEST (magic, type
//     TPM_ST_ATTEST_QUOTE, qualified signer, extraData = nonce, clockInfo,
//     firmwareVersion, PCR selection and digest) signed by the AK
//     (ECDSA/SHA-256);
//   - a measured boot from package bootseed (a realistic crypto-agile event
//     log and the matching PCRs 0-9) and an IMA list (ima-ng,
//     binary_runtime_measurements_sha256 layout) extending PCR 10;
//   - reboots: PCRs reset, resetCount increases, a new log.
//
// The agent's interfaces are satisfied (EK, AK, ActivateCredential for
// enrollment; Quote, EventLog, IMALog for quoting), so the agent's own
// enrollment and quoting code runs against it unchanged.
package simtpm

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"slices"
	"sync"
	"time"

	"github.com/google/go-tpm/tpm2"

	"github.com/trustpool/trustpool/internal/bootseed"
	"github.com/trustpool/trustpool/internal/tpm"
)

// Errors.
var (
	// ErrActivation: TPM2_ActivateCredential refused the credential (it was
	// not made for this EK and this AK's name, or it is malformed).
	ErrActivation = errors.New("simulated TPM: credential activation failed")
	// ErrSelection: a quote asked for PCRs out of range or repeated.
	ErrSelection = errors.New("simulated TPM: bad PCR selection")
	// ErrNoIMA: the model has no IMA list (IMA disabled).
	ErrNoIMA = errors.New("simulated TPM: no IMA list")
)

// FirmwareVersion is what quotes report as firmwareVersion; the value says
// "simulated" in ASCII.
const FirmwareVersion uint64 = 0x53494d554c415444 // "SIMULATD"

// CA is a test certificate authority that issues EK certificates for
// simulated TPMs. Its certificate says "simulated" in its subject.
type CA struct {
	// Cert is the self-signed root; CertPEM is it in PEM, to put in the
	// service's ek_roots_dir.
	Cert    *x509.Certificate
	CertPEM []byte
	key     *ecdsa.PrivateKey
	mu      sync.Mutex
	serial  int64
}

// NewCA creates a self-signed ECDSA P-256 CA valid for ten years.
func NewCA(rand io.Reader, name string) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand)
	if err != nil {
		return nil, fmt.Errorf("simulated EK CA: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: name, Organization: []string{"Trustpool simulated TPM (not a TPM)"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.AddDate(10, 0, 0),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("simulated EK CA: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("simulated EK CA: %w", err)
	}
	return &CA{Cert: cert, CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), key: key, serial: 1}, nil
}

// KeyPEM returns the CA's private key (PKCS #8 PEM), so that a simulator
// can keep issuing from one CA across runs (its certificate is in a
// service's EK roots).
func (ca *CA) KeyPEM() ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(ca.key)
	if err != nil {
		return nil, fmt.Errorf("simulated EK CA key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// ParseCA loads a CA from its certificate and key (PEM, as CertPEM and
// KeyPEM return them).
func ParseCA(certPEM, keyPEM []byte) (*CA, error) {
	cb, _ := pem.Decode(certPEM)
	kb, _ := pem.Decode(keyPEM)
	if cb == nil || kb == nil {
		return nil, errors.New("simulated EK CA: no PEM block")
	}
	cert, err := x509.ParseCertificate(cb.Bytes)
	if err != nil {
		return nil, fmt.Errorf("simulated EK CA: %w", err)
	}
	k, err := x509.ParsePKCS8PrivateKey(kb.Bytes)
	if err != nil {
		return nil, fmt.Errorf("simulated EK CA: %w", err)
	}
	key, ok := k.(*ecdsa.PrivateKey)
	if !ok || !key.PublicKey.Equal(cert.PublicKey) {
		return nil, errors.New("simulated EK CA: key does not match the certificate")
	}
	return &CA{Cert: cert, CertPEM: pem.EncodeToMemory(cb), key: key, serial: time.Now().UnixNano()}, nil
}

func (ca *CA) issue(rand io.Reader, pub *ecdsa.PublicKey, label string) ([]byte, error) {
	ca.mu.Lock()
	ca.serial++
	serial := ca.serial
	ca.mu.Unlock()
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial),
		Subject:      pkix.Name{CommonName: "simulated TPM EK " + label, Organization: []string{"Trustpool simulated TPM (not a TPM)"}},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.AddDate(10, 0, 0),
		KeyUsage:     x509.KeyUsageKeyAgreement,
	}
	der, err := x509.CreateCertificate(rand, tmpl, ca.Cert, pub, ca.key)
	if err != nil {
		return nil, fmt.Errorf("issue simulated EK certificate: %w", err)
	}
	return der, nil
}

// Config configures a simulated TPM.
type Config struct {
	// Rand is the entropy source for keys and signatures (required).
	Rand io.Reader
	// CA issues the EK certificate; nil: no certificate.
	CA *CA
	// Label names the TPM in its EK certificate (e.g. the host name).
	Label string
	// Boot is the measured boot the TPM starts with (nil: a boot of
	// bootseed.BuildA()).
	Boot *Boot
	// IMA enables the IMA list (with its boot_aggregate entry).
	IMA bool
	// Now is the clock behind TPMS_CLOCK_INFO (time.Now when nil).
	Now func() time.Time
}

// TPM is one simulated TPM. It is safe for concurrent use; operations are
// serialised as a TPM serialises commands.
type TPM struct {
	rand io.Reader
	now  func() time.Time

	ekPriv *ecdh.PrivateKey
	ekPub  []byte // marshalled TPMT_PUBLIC
	ekCert []byte
	akPriv *ecdsa.PrivateKey
	akPub  []byte
	akName []byte

	mu           sync.Mutex
	sha1         [24][]byte
	sha256       [24][]byte
	eventLog     []byte
	ima          []byte // nil: IMA disabled
	imaOn        bool
	current      *Boot
	resetCount   uint32
	restartCount uint32
	born         time.Time
}

// New creates a simulated TPM with fresh keys and boots it.
func New(cfg Config) (*TPM, error) {
	if cfg.Rand == nil {
		return nil, errors.New("simulated TPM: no entropy source")
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Boot == nil {
		b, err := NewBoot(bootseed.BuildA())
		if err != nil {
			return nil, err
		}
		cfg.Boot = b
	}
	t := &TPM{rand: cfg.Rand, now: cfg.Now, imaOn: cfg.IMA}
	if err := t.newEK(cfg.CA, cfg.Label); err != nil {
		return nil, err
	}
	if err := t.newAK(); err != nil {
		return nil, err
	}
	t.born = cfg.Now()
	t.boot(cfg.Boot)
	return t, nil
}

func (t *TPM) newEK(ca *CA, label string) error {
	k, err := ecdsa.GenerateKey(elliptic.P256(), t.rand)
	if err != nil {
		return fmt.Errorf("simulated TPM: EK: %w", err)
	}
	priv, err := k.ECDH()
	if err != nil {
		return fmt.Errorf("simulated TPM: EK: %w", err)
	}
	x, y := coords(priv.PublicKey())
	p := tpm2.ECCEKTemplate
	p.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{
		X: tpm2.TPM2BECCParameter{Buffer: x}, Y: tpm2.TPM2BECCParameter{Buffer: y}})
	var cert []byte
	if ca != nil {
		if cert, err = ca.issue(t.rand, &k.PublicKey, label); err != nil {
			return err
		}
	}
	t.ekPriv, t.ekPub, t.ekCert = priv, tpm2.Marshal(p), cert
	return nil
}

func (t *TPM) newAK() error {
	k, err := ecdsa.GenerateKey(elliptic.P256(), t.rand)
	if err != nil {
		return fmt.Errorf("simulated TPM: AK: %w", err)
	}
	pub, err := k.PublicKey.ECDH()
	if err != nil {
		return fmt.Errorf("simulated TPM: AK: %w", err)
	}
	x, y := coords(pub)
	p := tpm2.TPMTPublic{
		Type: tpm2.TPMAlgECC, NameAlg: tpm2.TPMAlgSHA256,
		ObjectAttributes: tpm2.TPMAObject{FixedTPM: true, FixedParent: true, SensitiveDataOrigin: true,
			UserWithAuth: true, Restricted: true, SignEncrypt: true, NoDA: true},
		Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgECC, &tpm2.TPMSECCParms{
			Scheme: tpm2.TPMTECCScheme{Scheme: tpm2.TPMAlgECDSA,
				Details: tpm2.NewTPMUAsymScheme(tpm2.TPMAlgECDSA, &tpm2.TPMSSigSchemeECDSA{HashAlg: tpm2.TPMAlgSHA256})},
			CurveID: tpm2.TPMECCNistP256,
		}),
		Unique: tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{
			X: tpm2.TPM2BECCParameter{Buffer: x}, Y: tpm2.TPM2BECCParameter{Buffer: y}}),
	}
	name, err := tpm2.ObjectName(&p)
	if err != nil {
		return fmt.Errorf("simulated TPM: AK name: %w", err)
	}
	t.akPriv, t.akPub, t.akName = k, tpm2.Marshal(p), name.Buffer
	return nil
}

// coords returns the big-endian X and Y of an uncompressed P-256 point.
func coords(pub *ecdh.PublicKey) (x, y []byte) {
	raw := pub.Bytes()[1:]
	return raw[:len(raw)/2], raw[len(raw)/2:]
}

// EK returns the endorsement key (enroll.TPM).
func (t *TPM) EK(context.Context) (*tpm.EK, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return &tpm.EK{Algorithm: tpm.AlgECC, Public: bytes.Clone(t.ekPub), Certificate: bytes.Clone(t.ekCert)}, nil
}

// AK returns the attestation key (enroll.TPM).
func (t *TPM) AK(context.Context) (*tpm.AK, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return &tpm.AK{Algorithm: tpm.AlgECC, Public: bytes.Clone(t.akPub), Name: bytes.Clone(t.akName)}, nil
}

// ReplaceKeys gives the TPM a new EK (certified by ca when not nil) and a
// new AK, as a replaced motherboard would: the host then re-registers
// with keys the service has not bound.
func (t *TPM) ReplaceKeys(ca *CA, label string) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if err := t.newEK(ca, label); err != nil {
		return err
	}
	return t.newAK()
}

// ActivateCredential is TPM2_ActivateCredential with the AK as the
// activated object and the EK as the key (enroll.TPM).
func (t *TPM) ActivateCredential(_ context.Context, idObject, encSecret []byte) ([]byte, error) {
	t.mu.Lock()
	ek, name := t.ekPriv, t.akName
	t.mu.Unlock()
	return activate(ek, name, idObject, encSecret)
}

// labelIdentity is the KDFe label of credential protection (Part 1, 24.4).
const labelIdentity = "IDENTITY"

func activate(ek *ecdh.PrivateKey, name, idObject, encSecret []byte) ([]byte, error) {
	// The secret is a TPMS_ECC_POINT: the verifier's ephemeral key.
	pt, err := tpm2.Unmarshal[tpm2.TPMSECCPoint](encSecret)
	if err != nil || len(pt.X.Buffer) != 32 || len(pt.Y.Buffer) != 32 {
		return nil, fmt.Errorf("%w: encrypted secret is not a P-256 point", ErrActivation)
	}
	eph, err := ecdh.P256().NewPublicKey(slices.Concat([]byte{4}, pt.X.Buffer, pt.Y.Buffer))
	if err != nil {
		return nil, fmt.Errorf("%w: ephemeral point: %w", ErrActivation, err)
	}
	z, err := ek.ECDH(eph)
	if err != nil {
		return nil, fmt.Errorf("%w: ECDH: %w", ErrActivation, err)
	}
	ekX, _ := coords(ek.PublicKey())
	seed := tpm2.KDFe(cryptoSHA256, z, labelIdentity, pt.X.Buffer, ekX, 256)
	// credentialBlob = TPM2B_DIGEST integrityHMAC || encIdentity.
	if len(idObject) < 2 {
		return nil, fmt.Errorf("%w: credential blob too short", ErrActivation)
	}
	hlen := int(idObject[0])<<8 | int(idObject[1])
	if hlen != sha256.Size || len(idObject) < 2+hlen+2 {
		return nil, fmt.Errorf("%w: credential blob malformed", ErrActivation)
	}
	integrity, encIdentity := idObject[2:2+hlen], idObject[2+hlen:]
	mac := hmac.New(sha256.New, tpm2.KDFa(cryptoSHA256, seed, "INTEGRITY", nil, nil, 256))
	mac.Write(encIdentity)
	mac.Write(name)
	if subtle.ConstantTimeCompare(mac.Sum(nil), integrity) != 1 {
		return nil, fmt.Errorf("%w: integrity check failed (another EK or another AK name)", ErrActivation)
	}
	block, err := aes.NewCipher(tpm2.KDFa(cryptoSHA256, seed, "STORAGE", name, nil, 128))
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrActivation, err)
	}
	plain := make([]byte, len(encIdentity))
	cfbDecrypt(block, plain, encIdentity)
	// The plaintext is a TPM2B_DIGEST.
	n := int(plain[0])<<8 | int(plain[1])
	if n == 0 || n != len(plain)-2 {
		return nil, fmt.Errorf("%w: credential size", ErrActivation)
	}
	return plain[2:], nil
}

// cfbDecrypt is AES-CFB decryption with a zero IV, as the TPM's
// credential protection uses (Part 1, 24.5): the keystream block is the
// encryption of the previous ciphertext block.
func cfbDecrypt(b cipher.Block, dst, src []byte) {
	prev := make([]byte, b.BlockSize())
	ks := make([]byte, b.BlockSize())
	for off := 0; off < len(src); off += b.BlockSize() {
		b.Encrypt(ks, prev)
		end := min(off+b.BlockSize(), len(src))
		for i := off; i < end; i++ {
			dst[i] = src[i] ^ ks[i-off]
		}
		if end-off == b.BlockSize() {
			copy(prev, src[off:end])
		}
	}
}
