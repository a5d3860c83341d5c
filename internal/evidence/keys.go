package evidence

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/subtle"
	"crypto/x509"
	"encoding/asn1"
	"fmt"
	"io"
	"time"

	"github.com/google/go-tpm/tpm2"
)

// maxPublicSize caps a marshalled TPMT_PUBLIC (a 4096-bit RSA key with a
// SHA-512 policy is well under 1 KiB).
const maxPublicSize = 2048

// AKPublic is a parsed and checked attestation key.
type AKPublic struct {
	// Public is the raw TPMT_PUBLIC as the agent sent it.
	Public []byte
	// Name is the TPM name (nameAlg || H(TPMT_PUBLIC)), the value
	// credential activation is keyed on.
	Name []byte
	Key  crypto.PublicKey
	// SigAlg is tpm2.TPMAlgECDSA, tpm2.TPMAlgRSASSA or tpm2.TPMAlgRSAPSS.
	SigAlg tpm2.TPMAlgID
	pub    tpm2.TPMTPublic
	// checked is set by ParseAKPublic only: Verify re-checks any AKPublic
	// built otherwise.
	checked bool
}

func parsePublic(b []byte) (*tpm2.TPMTPublic, []byte, error) {
	if len(b) == 0 || len(b) > maxPublicSize {
		return nil, nil, fmt.Errorf("%w: public area of %d bytes", ErrMalformed, len(b))
	}
	p, err := tpm2.Unmarshal[tpm2.TPMTPublic](b)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: TPMT_PUBLIC: %w", ErrMalformed, err)
	}
	if !bytes.Equal(tpm2.Marshal(p), b) {
		return nil, nil, fmt.Errorf("%w: TPMT_PUBLIC has trailing or non-canonical bytes", ErrMalformed)
	}
	name, err := tpm2.ObjectName(p)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: name: %w", ErrMalformed, err)
	}
	return p, name.Buffer, nil
}

// ParseAKPublic parses a TPMT_PUBLIC and checks that it is acceptable as an
// AK: fixedTPM, fixedParent, sensitiveDataOrigin, restricted, sign, not
// decrypt, nameAlg SHA-256 or stronger, and a SHA-256 signing scheme
// (ECDSA on P-256/P-384, RSASSA or RSAPSS with >= 2048 bits).
func ParseAKPublic(b []byte) (*AKPublic, error) {
	p, name, err := parsePublic(b)
	if err != nil {
		return nil, fmt.Errorf("parse AK public: %w", err)
	}
	a := p.ObjectAttributes
	if !a.FixedTPM || !a.FixedParent || !a.SensitiveDataOrigin || !a.Restricted || !a.SignEncrypt || a.Decrypt {
		return nil, fmt.Errorf("parse AK public: %w: need fixedTPM, fixedParent, sensitiveDataOrigin, restricted, sign and not decrypt", ErrAKAttributes)
	}
	if p.NameAlg != tpm2.TPMAlgSHA256 && p.NameAlg != tpm2.TPMAlgSHA384 && p.NameAlg != tpm2.TPMAlgSHA512 {
		return nil, fmt.Errorf("parse AK public: %w: nameAlg 0x%04x", ErrAKAttributes, uint16(p.NameAlg))
	}
	ak := &AKPublic{Public: bytes.Clone(b), Name: name, pub: *p, checked: true}
	switch p.Type {
	case tpm2.TPMAlgECC:
		parms, err := p.Parameters.ECCDetail()
		if err != nil {
			return nil, fmt.Errorf("parse AK public: %w: %w", ErrMalformed, err)
		}
		if parms.CurveID != tpm2.TPMECCNistP256 && parms.CurveID != tpm2.TPMECCNistP384 {
			return nil, fmt.Errorf("parse AK public: %w: curve 0x%04x", ErrAKAttributes, uint16(parms.CurveID))
		}
		if parms.Scheme.Scheme != tpm2.TPMAlgECDSA {
			return nil, fmt.Errorf("parse AK public: %w: ECC scheme 0x%04x, want ECDSA", ErrAKAttributes, uint16(parms.Scheme.Scheme))
		}
		s, err := parms.Scheme.Details.ECDSA()
		if err != nil || s.HashAlg != tpm2.TPMAlgSHA256 {
			return nil, fmt.Errorf("parse AK public: %w: ECDSA scheme hash is not SHA-256", ErrAKAttributes)
		}
		pt, err := p.Unique.ECC()
		if err != nil {
			return nil, fmt.Errorf("parse AK public: %w: %w", ErrMalformed, err)
		}
		k, err := tpm2.ECDSAPub(parms, pt)
		if err != nil {
			return nil, fmt.Errorf("parse AK public: %w: %w", ErrMalformed, err)
		}
		ak.Key, ak.SigAlg = k, tpm2.TPMAlgECDSA
	case tpm2.TPMAlgRSA:
		parms, err := p.Parameters.RSADetail()
		if err != nil {
			return nil, fmt.Errorf("parse AK public: %w: %w", ErrMalformed, err)
		}
		if parms.KeyBits < 2048 {
			return nil, fmt.Errorf("parse AK public: %w: RSA %d bits", ErrAKAttributes, parms.KeyBits)
		}
		var hash tpm2.TPMIAlgHash
		switch parms.Scheme.Scheme {
		case tpm2.TPMAlgRSASSA:
			s, err := parms.Scheme.Details.RSASSA()
			if err != nil {
				return nil, fmt.Errorf("parse AK public: %w: %w", ErrMalformed, err)
			}
			hash = s.HashAlg
		case tpm2.TPMAlgRSAPSS:
			s, err := parms.Scheme.Details.RSAPSS()
			if err != nil {
				return nil, fmt.Errorf("parse AK public: %w: %w", ErrMalformed, err)
			}
			hash = s.HashAlg
		default:
			return nil, fmt.Errorf("parse AK public: %w: RSA scheme 0x%04x, want RSASSA or RSAPSS", ErrAKAttributes, uint16(parms.Scheme.Scheme))
		}
		if hash != tpm2.TPMAlgSHA256 {
			return nil, fmt.Errorf("parse AK public: %w: RSA scheme hash is not SHA-256", ErrAKAttributes)
		}
		n, err := p.Unique.RSA()
		if err != nil {
			return nil, fmt.Errorf("parse AK public: %w: %w", ErrMalformed, err)
		}
		k, err := tpm2.RSAPub(parms, n)
		if err != nil {
			return nil, fmt.Errorf("parse AK public: %w: %w", ErrMalformed, err)
		}
		ak.Key, ak.SigAlg = k, parms.Scheme.Scheme
	default:
		return nil, fmt.Errorf("parse AK public: %w: key type 0x%04x", ErrAKAttributes, uint16(p.Type))
	}
	return ak, nil
}

// EKPublic is a parsed endorsement key.
type EKPublic struct {
	Public []byte
	Name   []byte
	Key    crypto.PublicKey
	pub    tpm2.TPMTPublic
}

// ParseEKPublic parses a TPMT_PUBLIC and checks that it can be an EK: a
// restricted decryption key (fixedTPM, fixedParent, sensitiveDataOrigin,
// restricted, decrypt, not sign), RSA >= 2048 or ECC P-256/P-384.
func ParseEKPublic(b []byte) (*EKPublic, error) {
	p, name, err := parsePublic(b)
	if err != nil {
		return nil, fmt.Errorf("parse EK public: %w", err)
	}
	a := p.ObjectAttributes
	if !a.FixedTPM || !a.FixedParent || !a.SensitiveDataOrigin || !a.Restricted || !a.Decrypt || a.SignEncrypt {
		return nil, fmt.Errorf("parse EK public: %w: not a restricted decryption key", ErrEKPublic)
	}
	k, err := tpm2.Pub(*p)
	if err != nil {
		return nil, fmt.Errorf("parse EK public: %w: %w", ErrEKPublic, err)
	}
	switch kk := k.(type) {
	case *rsa.PublicKey:
		if kk.N.BitLen() < 2048 {
			return nil, fmt.Errorf("parse EK public: %w: RSA %d bits", ErrEKPublic, kk.N.BitLen())
		}
	case *ecdsa.PublicKey:
		if kk.Curve != elliptic.P256() && kk.Curve != elliptic.P384() {
			return nil, fmt.Errorf("parse EK public: %w: curve %s", ErrEKPublic, kk.Curve.Params().Name)
		}
	default:
		return nil, fmt.Errorf("parse EK public: %w: neither an RSA nor an ECC key", ErrEKPublic)
	}
	if _, err := tpm2.ImportEncapsulationKey(p); err != nil {
		return nil, fmt.Errorf("parse EK public: %w: %w", ErrEKPublic, err)
	}
	return &EKPublic{Public: bytes.Clone(b), Name: name, Key: k, pub: *p}, nil
}

var oidSubjectAltName = asn1.ObjectIdentifier{2, 5, 29, 17}

// CheckEKCertificate checks that certDER chains to one of roots (through
// intermediates, which may be nil) at time now, and that its public key is
// the EK's. TCG EK certificates mark their directoryName SAN critical,
// which Go does not handle; only that extension is tolerated.
func CheckEKCertificate(ek *EKPublic, certDER []byte, roots, intermediates *x509.CertPool, now time.Time) error {
	if len(certDER) == 0 {
		return fmt.Errorf("check EK certificate: %w: no certificate", ErrEKCertChain)
	}
	cert, err := x509.ParseCertificate(certDER)
	if err != nil {
		return fmt.Errorf("check EK certificate: %w: %w", ErrEKCertChain, err)
	}
	var unhandled []asn1.ObjectIdentifier
	for _, o := range cert.UnhandledCriticalExtensions {
		if !o.Equal(oidSubjectAltName) {
			unhandled = append(unhandled, o)
		}
	}
	cert.UnhandledCriticalExtensions = unhandled
	if roots == nil {
		return fmt.Errorf("check EK certificate: %w: no trusted roots configured", ErrEKCertChain)
	}
	if _, err := cert.Verify(x509.VerifyOptions{
		Roots: roots, Intermediates: intermediates, CurrentTime: now,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	}); err != nil {
		return fmt.Errorf("check EK certificate: %w: %w", ErrEKCertChain, err)
	}
	eq, ok := cert.PublicKey.(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !eq.Equal(ek.Key) {
		return fmt.Errorf("check EK certificate: %w", ErrEKCertMismatch)
	}
	return nil
}

// Credential is a TPM2_MakeCredential result: the agent passes both fields
// to TPM2_ActivateCredential.
type Credential struct {
	// IDObject is the TPM2B_ID_OBJECT contents (credentialBlob).
	IDObject []byte `json:"id_object"`
	// EncryptedSecret is the TPM2B_ENCRYPTED_SECRET contents (secret).
	EncryptedSecret []byte `json:"encrypted_secret"`
}

// MakeCredential is the verifier half of credential activation: it draws a
// 32-byte secret from rand and encrypts it so that only the TPM holding
// ek's private key can recover it, and only into a key whose name is
// akName. It returns the secret to keep (never send) and the credential.
func MakeCredential(rand io.Reader, ek *EKPublic, akName []byte) (secret []byte, cred *Credential, err error) {
	if len(akName) < 2+32 {
		return nil, nil, fmt.Errorf("make credential: %w: AK name of %d bytes", ErrMalformed, len(akName))
	}
	key, err := tpm2.ImportEncapsulationKey(&ek.pub)
	if err != nil {
		return nil, nil, fmt.Errorf("make credential: %w: %w", ErrEKPublic, err)
	}
	secret = make([]byte, 32)
	if _, err := io.ReadFull(rand, secret); err != nil {
		return nil, nil, fmt.Errorf("make credential: read random: %w", err)
	}
	id, enc, err := tpm2.CreateCredential(rand, key, akName, secret)
	if err != nil {
		return nil, nil, fmt.Errorf("make credential: %w", err)
	}
	return secret, &Credential{IDObject: id, EncryptedSecret: enc}, nil
}

// CheckActivation compares the secret the agent returned with the one
// [MakeCredential] produced, in constant time.
func CheckActivation(want, got []byte) error {
	if len(want) == 0 || subtle.ConstantTimeCompare(want, got) != 1 {
		return fmt.Errorf("check activation: %w", ErrActivation)
	}
	return nil
}

// Binding ties an AK to a host's EK. The service sets Activated only after
// [CheckActivation] succeeded for a credential made with this EK and this
// AK's name, and persists it; [Verify] refuses quotes otherwise.
type Binding struct {
	EK        *EKPublic
	AK        *AKPublic
	Activated bool
}
