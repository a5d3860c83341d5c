package tpm

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
)

// EK is the endorsement key the agent enrolls with.
type EK struct {
	// Algorithm is "rsa", "ecc" or "ecc384".
	Algorithm string
	// Public is the marshalled TPMT_PUBLIC.
	Public []byte
	// Certificate is the DER EK certificate from NV, nil when absent.
	Certificate []byte
	// Handle is the persistent handle, 0 when the EK was created from the
	// default template.
	Handle uint32
}

type ekSpec struct {
	alg        string
	persistent tpm2.TPMHandle
	certIndex  tpm2.TPMHandle
	template   *tpm2.TPMTPublic
}

// EK locations from the TCG EK Credential Profile 2.5 (low range for RSA
// and ECC P-256, high range H-3 for ECC P-384 as swtpm_setup --ecc makes).
var ekSpecs = []ekSpec{
	{alg: AlgRSA, persistent: 0x81010001, certIndex: 0x01c00002, template: &tpm2.RSAEKTemplate},
	{alg: AlgECC, persistent: 0x81010002, certIndex: 0x01c0000a, template: &tpm2.ECCEKTemplate},
	{alg: AlgECC384, persistent: 0x81010016, certIndex: 0x01c00016},
}

// loadedKey is a key usable in this session.
type loadedKey struct {
	handle tpm2.TPMHandle
	name   tpm2.TPM2BName
	public tpm2.TPMTPublic
	raw    []byte // marshalled TPMT_PUBLIC
}

func (s *session) readPublic(h tpm2.TPMHandle) (*loadedKey, error) {
	rsp, err := tpm2.ReadPublic{ObjectHandle: h}.Execute(s.tpm)
	if err != nil {
		return nil, err
	}
	pub, err := rsp.OutPublic.Contents()
	if err != nil {
		return nil, fmt.Errorf("decode public of 0x%08x: %w", uint32(h), err)
	}
	return &loadedKey{handle: h, name: rsp.Name, public: *pub, raw: rsp.OutPublic.Bytes()}, nil
}

func isEK(p *tpm2.TPMTPublic) bool {
	a := p.ObjectAttributes
	return a.FixedTPM && a.FixedParent && a.SensitiveDataOrigin && a.Restricted && a.Decrypt && !a.SignEncrypt
}

// loadEK returns the EK of spec: the persistent one when present, else a
// primary created from the template (tracked for flushing).
func (s *session) loadEK(spec ekSpec) (*loadedKey, error) {
	if k, err := s.readPublic(spec.persistent); err == nil && isEK(&k.public) {
		return k, nil
	}
	if spec.template == nil {
		return nil, fmt.Errorf("%w: no %s EK at 0x%08x", ErrNoEK, spec.alg, uint32(spec.persistent))
	}
	rsp, err := tpm2.CreatePrimary{PrimaryHandle: tpm2.TPMRHEndorsement, InPublic: tpm2.New2B(*spec.template)}.Execute(s.tpm)
	if err != nil {
		return nil, fmt.Errorf("create %s EK: %w", spec.alg, err)
	}
	s.track(rsp.ObjectHandle)
	pub, err := rsp.OutPublic.Contents()
	if err != nil {
		return nil, fmt.Errorf("decode EK public: %w", err)
	}
	return &loadedKey{handle: rsp.ObjectHandle, name: rsp.Name, public: *pub, raw: rsp.OutPublic.Bytes()}, nil
}

// readNV reads a whole NV index, or returns (nil, nil) when it does not
// exist.
func (s *session) readNV(idx tpm2.TPMHandle) ([]byte, error) {
	pubRsp, err := tpm2.NVReadPublic{NVIndex: idx}.Execute(s.tpm)
	if err != nil {
		if errors.Is(err, tpm2.TPMRCHandle) {
			return nil, nil
		}
		return nil, fmt.Errorf("read NV public 0x%08x: %w", uint32(idx), err)
	}
	nvPub, err := pubRsp.NVPublic.Contents()
	if err != nil {
		return nil, fmt.Errorf("decode NV public 0x%08x: %w", uint32(idx), err)
	}
	var out []byte
	const chunk = 512
	for off := 0; off < int(nvPub.DataSize); off += chunk {
		n := min(chunk, int(nvPub.DataSize)-off)
		rsp, err := tpm2.NVRead{
			AuthHandle: tpm2.AuthHandle{Handle: idx, Name: pubRsp.NVName, Auth: tpm2.PasswordAuth(nil)},
			NVIndex:    tpm2.NamedHandle{Handle: idx, Name: pubRsp.NVName},
			Size:       uint16(n),
			Offset:     uint16(off),
		}.Execute(s.tpm)
		if err != nil {
			return nil, fmt.Errorf("read NV 0x%08x at %d: %w", uint32(idx), off, err)
		}
		out = append(out, rsp.Data.Buffer...)
	}
	return out, nil
}

// EK returns the configured endorsement key and its certificate when one
// is stored in NV.
func (t *TPM) EK(ctx context.Context) (*EK, error) {
	var ek *EK
	err := t.do(ctx, "read EK", func(s *session) error {
		spec, cert, err := s.chooseEK(t.cfg.EKAlgorithm)
		if err != nil {
			return err
		}
		k, err := s.loadEK(spec)
		if err != nil {
			return err
		}
		ek = &EK{Algorithm: spec.alg, Public: k.raw, Certificate: cert}
		if k.handle == spec.persistent {
			ek.Handle = uint32(k.handle)
		}
		return nil
	})
	return ek, err
}

// chooseEK picks the EK spec for alg and reads its certificate.
func (s *session) chooseEK(alg string) (ekSpec, []byte, error) {
	if alg != AlgAuto {
		for _, spec := range ekSpecs {
			if spec.alg == alg {
				cert, err := s.readNV(spec.certIndex)
				return spec, cert, err
			}
		}
		return ekSpec{}, nil, fmt.Errorf("%w: ek algorithm %q", ErrConfig, alg)
	}
	for _, spec := range ekSpecs {
		cert, err := s.readNV(spec.certIndex)
		if err != nil {
			return ekSpec{}, nil, err
		}
		if cert != nil {
			return spec, cert, nil
		}
	}
	return ekSpecs[0], nil, nil
}

// AK is the attestation key's public part.
type AK struct {
	Algorithm string
	// Public is the marshalled TPMT_PUBLIC.
	Public []byte
	// Name is the TPM name the verifier's credential is keyed on.
	Name []byte
}

type akState struct {
	Algorithm string `json:"algorithm"`
	Public    []byte `json:"public"`
	Private   []byte `json:"private"`
}

const akStateFile = "ak.json"

func akTemplate(alg string) tpm2.TPMTPublic {
	attrs := tpm2.TPMAObject{
		FixedTPM: true, FixedParent: true, SensitiveDataOrigin: true,
		UserWithAuth: true, Restricted: true, SignEncrypt: true, NoDA: true,
	}
	if alg == AlgRSA {
		return tpm2.TPMTPublic{
			Type: tpm2.TPMAlgRSA, NameAlg: tpm2.TPMAlgSHA256, ObjectAttributes: attrs,
			Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgRSA, &tpm2.TPMSRSAParms{
				Scheme: tpm2.TPMTRSAScheme{
					Scheme:  tpm2.TPMAlgRSASSA,
					Details: tpm2.NewTPMUAsymScheme(tpm2.TPMAlgRSASSA, &tpm2.TPMSSigSchemeRSASSA{HashAlg: tpm2.TPMAlgSHA256}),
				},
				KeyBits: 2048,
			}),
			Unique: tpm2.NewTPMUPublicID(tpm2.TPMAlgRSA, &tpm2.TPM2BPublicKeyRSA{}),
		}
	}
	return tpm2.TPMTPublic{
		Type: tpm2.TPMAlgECC, NameAlg: tpm2.TPMAlgSHA256, ObjectAttributes: attrs,
		Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgECC, &tpm2.TPMSECCParms{
			Scheme: tpm2.TPMTECCScheme{
				Scheme:  tpm2.TPMAlgECDSA,
				Details: tpm2.NewTPMUAsymScheme(tpm2.TPMAlgECDSA, &tpm2.TPMSSigSchemeECDSA{HashAlg: tpm2.TPMAlgSHA256}),
			},
			CurveID: tpm2.TPMECCNistP256,
		}),
		Unique: tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{}),
	}
}

func (s *session) createSRK() (*loadedKey, error) {
	rsp, err := tpm2.CreatePrimary{PrimaryHandle: tpm2.TPMRHOwner, InPublic: tpm2.New2B(tpm2.ECCSRKTemplate)}.Execute(s.tpm)
	if err != nil {
		return nil, fmt.Errorf("create SRK: %w", err)
	}
	s.track(rsp.ObjectHandle)
	return &loadedKey{handle: rsp.ObjectHandle, name: rsp.Name}, nil
}

func (t *TPM) statePath() (string, error) {
	if t.cfg.StateDir == "" {
		return "", fmt.Errorf("%w: state directory not set", ErrConfig)
	}
	return filepath.Join(t.cfg.StateDir, akStateFile), nil
}

func (t *TPM) loadState() (*akState, error) {
	p, err := t.statePath()
	if err != nil {
		return nil, err
	}
	b, err := os.ReadFile(p)
	if err != nil {
		return nil, err
	}
	var st akState
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrAKState, p, err)
	}
	if st.Algorithm != t.cfg.AKAlgorithm {
		return nil, fmt.Errorf("%w: %s holds a %s AK, configuration asks for %s", ErrAKState, p, st.Algorithm, t.cfg.AKAlgorithm)
	}
	return &st, nil
}

func (t *TPM) saveState(st *akState) error {
	p, err := t.statePath()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		return err
	}
	b, err := json.Marshal(st)
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(p), ".ak-*.json")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), p)
}

// loadAK loads the persisted AK (creating and persisting it first when the
// state directory has none) into this session.
func (t *TPM) loadAK(s *session) (*loadedKey, error) {
	st, err := t.loadState()
	if errors.Is(err, os.ErrNotExist) {
		st, err = t.createAK(s)
	}
	if err != nil {
		return nil, err
	}
	srk, err := s.createSRK()
	if err != nil {
		return nil, err
	}
	pub, err := tpm2.Unmarshal[tpm2.TPMTPublic](st.Public)
	if err != nil {
		return nil, fmt.Errorf("%w: public: %w", ErrAKState, err)
	}
	rsp, err := tpm2.Load{
		ParentHandle: tpm2.AuthHandle{Handle: srk.handle, Name: srk.name, Auth: tpm2.PasswordAuth(nil)},
		InPrivate:    tpm2.TPM2BPrivate{Buffer: st.Private},
		InPublic:     tpm2.New2B(*pub),
	}.Execute(s.tpm)
	if err != nil {
		return nil, fmt.Errorf("%w: load AK: %w", ErrAKState, err)
	}
	s.track(rsp.ObjectHandle)
	return &loadedKey{handle: rsp.ObjectHandle, name: rsp.Name, public: *pub, raw: st.Public}, nil
}

func (t *TPM) createAK(s *session) (*akState, error) {
	srk, err := s.createSRK()
	if err != nil {
		return nil, err
	}
	rsp, err := tpm2.Create{
		ParentHandle: tpm2.AuthHandle{Handle: srk.handle, Name: srk.name, Auth: tpm2.PasswordAuth(nil)},
		InPublic:     tpm2.New2B(akTemplate(t.cfg.AKAlgorithm)),
	}.Execute(s.tpm)
	if err != nil {
		return nil, fmt.Errorf("create AK: %w", err)
	}
	st := &akState{Algorithm: t.cfg.AKAlgorithm, Public: rsp.OutPublic.Bytes(), Private: rsp.OutPrivate.Buffer}
	if err := t.saveState(st); err != nil {
		return nil, fmt.Errorf("save AK state: %w", err)
	}
	return st, nil
}

// AK returns the attestation key, creating and persisting it on first use.
func (t *TPM) AK(ctx context.Context) (*AK, error) {
	var ak *AK
	err := t.do(ctx, "load AK", func(s *session) error {
		k, err := t.loadAK(s)
		if err != nil {
			return err
		}
		ak = &AK{Algorithm: t.cfg.AKAlgorithm, Public: k.raw, Name: k.name.Buffer}
		return nil
	})
	return ak, err
}

// ActivateCredential is the agent half of credential activation: it
// recovers the verifier's secret with the EK, which the TPM releases only
// if the credential names this TPM's loaded AK.
func (t *TPM) ActivateCredential(ctx context.Context, idObject, encSecret []byte) ([]byte, error) {
	var secret []byte
	err := t.do(ctx, "activate credential", func(s *session) error {
		spec, _, err := s.chooseEK(t.cfg.EKAlgorithm)
		if err != nil {
			return err
		}
		ek, err := s.loadEK(spec)
		if err != nil {
			return err
		}
		ak, err := t.loadAK(s)
		if err != nil {
			return err
		}
		rsp, err := tpm2.ActivateCredential{
			ActivateHandle: tpm2.AuthHandle{Handle: ak.handle, Name: ak.name, Auth: tpm2.PasswordAuth(nil)},
			KeyHandle:      tpm2.AuthHandle{Handle: ek.handle, Name: ek.name, Auth: ekAuth(&ek.public)},
			CredentialBlob: tpm2.TPM2BIDObject{Buffer: idObject},
			Secret:         tpm2.TPM2BEncryptedSecret{Buffer: encSecret},
		}.Execute(s.tpm)
		if err != nil {
			return err
		}
		secret = rsp.CertInfo.Buffer
		return nil
	})
	return secret, err
}

// ekAuth authorises use of the EK: password when userWithAuth is set (the
// P-384 EK swtpm_setup makes), else PolicySecret(TPM_RH_ENDORSEMENT), the
// TCG default EK policy, in the EK's name algorithm.
func ekAuth(p *tpm2.TPMTPublic) tpm2.Session {
	if p.ObjectAttributes.UserWithAuth {
		return tpm2.PasswordAuth(nil)
	}
	return tpm2.Policy(p.NameAlg, 16, func(tp transport.TPM, h tpm2.TPMISHPolicy, _ tpm2.TPM2BNonce) error {
		_, err := tpm2.PolicySecret{
			AuthHandle:    tpm2.AuthHandle{Handle: tpm2.TPMRHEndorsement, Auth: tpm2.PasswordAuth(nil)},
			PolicySession: h,
		}.Execute(tp)
		return err
	})
}
