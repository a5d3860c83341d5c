package evidence

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/binary"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2"

	"github.com/trustpool/trustpool/internal/bootseed"
	"github.com/trustpool/trustpool/internal/eventlog"
)

// fakeAK is a software key with an AK's public area, so tests can forge
// every kind of TPMS_ATTEST a real TPM never produces.
type fakeAK struct {
	ecc  *ecdsa.PrivateKey
	rsa  *rsa.PrivateKey
	pub  tpm2.TPMTPublic
	bind Binding
}

func akAttrs() tpm2.TPMAObject {
	return tpm2.TPMAObject{FixedTPM: true, FixedParent: true, SensitiveDataOrigin: true, UserWithAuth: true, Restricted: true, SignEncrypt: true}
}

func newFakeAK(t testing.TB, alg tpm2.TPMAlgID) *fakeAK {
	t.Helper()
	k := &fakeAK{}
	switch alg {
	case tpm2.TPMAlgECC:
		priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		k.ecc = priv
		k.pub = tpm2.TPMTPublic{
			Type: tpm2.TPMAlgECC, NameAlg: tpm2.TPMAlgSHA256, ObjectAttributes: akAttrs(),
			Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgECC, &tpm2.TPMSECCParms{
				Scheme:  tpm2.TPMTECCScheme{Scheme: tpm2.TPMAlgECDSA, Details: tpm2.NewTPMUAsymScheme(tpm2.TPMAlgECDSA, &tpm2.TPMSSigSchemeECDSA{HashAlg: tpm2.TPMAlgSHA256})},
				CurveID: tpm2.TPMECCNistP256,
			}),
			Unique: tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{
				X: tpm2.TPM2BECCParameter{Buffer: priv.X.FillBytes(make([]byte, 32))},
				Y: tpm2.TPM2BECCParameter{Buffer: priv.Y.FillBytes(make([]byte, 32))},
			}),
		}
	case tpm2.TPMAlgRSA:
		priv, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			t.Fatal(err)
		}
		k.rsa = priv
		k.pub = tpm2.TPMTPublic{
			Type: tpm2.TPMAlgRSA, NameAlg: tpm2.TPMAlgSHA256, ObjectAttributes: akAttrs(),
			Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgRSA, &tpm2.TPMSRSAParms{
				Scheme:  tpm2.TPMTRSAScheme{Scheme: tpm2.TPMAlgRSASSA, Details: tpm2.NewTPMUAsymScheme(tpm2.TPMAlgRSASSA, &tpm2.TPMSSigSchemeRSASSA{HashAlg: tpm2.TPMAlgSHA256})},
				KeyBits: 2048,
			}),
			Unique: tpm2.NewTPMUPublicID(tpm2.TPMAlgRSA, &tpm2.TPM2BPublicKeyRSA{Buffer: priv.N.Bytes()}),
		}
	}
	ak, err := ParseAKPublic(tpm2.Marshal(k.pub))
	if err != nil {
		t.Fatalf("ParseAKPublic: %v", err)
	}
	k.bind = Binding{EK: &EKPublic{}, AK: ak, Activated: true}
	return k
}

func (k *fakeAK) sign(t testing.TB, msg []byte) []byte {
	t.Helper()
	d := sha256.Sum256(msg)
	if k.ecc != nil {
		r, s, err := ecdsa.Sign(rand.Reader, k.ecc, d[:])
		if err != nil {
			t.Fatal(err)
		}
		return tpm2.Marshal(tpm2.TPMTSignature{SigAlg: tpm2.TPMAlgECDSA, Signature: tpm2.NewTPMUSignature(tpm2.TPMAlgECDSA, &tpm2.TPMSSignatureECC{
			Hash: tpm2.TPMAlgSHA256, SignatureR: tpm2.TPM2BECCParameter{Buffer: r.Bytes()}, SignatureS: tpm2.TPM2BECCParameter{Buffer: s.Bytes()},
		})})
	}
	sig, err := rsa.SignPKCS1v15(rand.Reader, k.rsa, crypto.SHA256, d[:])
	if err != nil {
		t.Fatal(err)
	}
	return tpm2.Marshal(tpm2.TPMTSignature{SigAlg: tpm2.TPMAlgRSASSA, Signature: tpm2.NewTPMUSignature(tpm2.TPMAlgRSASSA, &tpm2.TPMSSignatureRSA{
		Hash: tpm2.TPMAlgSHA256, Sig: tpm2.TPM2BPublicKeyRSA{Buffer: sig},
	})})
}

// scenario is one quote the fake TPM makes, with every knob a test may turn.
type scenario struct {
	nonce    []byte
	sel      []tpm2.TPMSPCRSelection
	pcrs     map[int][]byte // values the "TPM" has (digest computed from them)
	reported map[int][]byte // values sent to the verifier (default: pcrs)
	clock    tpm2.TPMSClockInfo
	log      []byte
	ima      []byte
	imaOff   int64
	// rawAttest, when set, mutates the marshalled attest before signing.
	rawAttest func([]byte) []byte
}

func bitmap(pcrs ...int) []byte {
	bm := make([]byte, 3)
	for _, i := range pcrs {
		bm[i/8] |= 1 << (i % 8)
	}
	return bm
}

func (k *fakeAK) evidence(t testing.TB, s scenario) *Evidence {
	t.Helper()
	var idx []int
	for _, ps := range s.sel {
		if ps.Hash != tpm2.TPMAlgSHA256 {
			continue
		}
		for i := 0; i < 24; i++ {
			if ps.PCRSelect[i/8]&(1<<(i%8)) != 0 {
				idx = append(idx, i)
			}
		}
	}
	h := sha256.New()
	for _, i := range idx {
		h.Write(s.pcrs[i])
	}
	att := tpm2.TPMSAttest{
		Magic: tpm2.TPMGeneratedValue, Type: tpm2.TPMSTAttestQuote,
		QualifiedSigner: tpm2.TPM2BName{Buffer: k.bind.AK.Name},
		ExtraData:       tpm2.TPM2BData{Buffer: s.nonce},
		ClockInfo:       s.clock, FirmwareVersion: 0x2000000000001,
		Attested: tpm2.NewTPMUAttest(tpm2.TPMSTAttestQuote, &tpm2.TPMSQuoteInfo{
			PCRSelect: tpm2.TPMLPCRSelection{PCRSelections: s.sel},
			PCRDigest: tpm2.TPM2BDigest{Buffer: h.Sum(nil)},
		}),
	}
	raw := tpm2.Marshal(att)
	if s.rawAttest != nil {
		raw = s.rawAttest(raw)
	}
	rep := s.reported
	if rep == nil {
		rep = map[int][]byte{}
		for _, i := range idx {
			rep[i] = s.pcrs[i]
		}
	}
	return &Evidence{Attest: raw, Signature: k.sign(t, raw), PCRs: rep, EventLog: s.log, IMALog: s.ima, IMAOffset: s.imaOff, IMAHashSize: 20}
}

var testPCRs = []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10}

// testHost is the host the tests' challenges are issued to.
const testHost = "compute-1"

// goodBoot returns a seeded log and the SHA-256 PCR values it replays to,
// with PCR 10 holding an IMA log of two entries.
func goodBoot(t testing.TB) (log []byte, pcrs map[int][]byte, ima []byte) {
	t.Helper()
	log, _, err := bootseed.BuildLog(bootseed.BuildA(), []eventlog.Alg{eventlog.SHA1, eventlog.SHA256})
	if err != nil {
		t.Fatal(err)
	}
	l, err := eventlog.Parse(log)
	if err != nil {
		t.Fatal(err)
	}
	rep, err := l.Replay(eventlog.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	pcrs = map[int][]byte{}
	for i := range 24 {
		pcrs[i] = make([]byte, 32)
	}
	for i, v := range rep {
		pcrs[int(i)] = v
	}
	ima, pcr10 := imaLog(t, []string{"boot_aggregate", "/usr/bin/bash"}, nil, bootAggregate(pcrs))
	pcrs[10] = pcr10
	return log, pcrs, ima
}

// bootAggregate is IMA's boot_aggregate digest for SHA-256 PCRs 0-9.
func bootAggregate(pcrs map[int][]byte) []byte {
	h := sha256.New()
	for i := range 10 {
		h.Write(pcrs[i])
	}
	return h.Sum(nil)
}

// imaLog builds an IMA log (SHA-1 column) of paths, extending from start
// (nil: zero), and returns it with the resulting SHA-256 PCR 10. The
// boot_aggregate entry gets digest agg.
func imaLog(t testing.TB, paths []string, start, agg []byte) ([]byte, []byte) {
	t.Helper()
	pcr := start
	if pcr == nil {
		pcr = make([]byte, 32)
	}
	var out []byte
	for _, p := range paths {
		fd := sha256.Sum256([]byte("content of " + p))
		d := fd[:]
		if p == "boot_aggregate" && agg != nil {
			d = agg
		}
		e, th := eventlog.IMAEntryBytes(10, d, p, nil, false, 20)
		out = append(out, e...)
		pcr = eventlog.SHA256.Sum(pcr, th)
	}
	return out, pcr
}

func sha256Sel(pcrs ...int) []tpm2.TPMSPCRSelection {
	return []tpm2.TPMSPCRSelection{{Hash: tpm2.TPMAlgSHA256, PCRSelect: bitmap(pcrs...)}}
}

var t0 = time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)

func baseScenario(t testing.TB) (scenario, Challenge) {
	t.Helper()
	log, pcrs, ima := goodBoot(t)
	ch, err := NewChallenge(rand.Reader, t0, testHost, testPCRs)
	if err != nil {
		t.Fatal(err)
	}
	return scenario{
		nonce: ch.Nonce,
		sel:   sha256Sel(testPCRs...),
		pcrs:  pcrs,
		clock: tpm2.TPMSClockInfo{Clock: 1000, ResetCount: 5, RestartCount: 0, Safe: true},
		log:   log,
		ima:   ima,
	}, ch
}

func clonePCRs(m map[int][]byte) map[int][]byte {
	out := make(map[int][]byte, len(m))
	for k, v := range m {
		out[k] = bytes.Clone(v)
	}
	return out
}

func putU32(b []byte, off int, v uint32) []byte {
	c := bytes.Clone(b)
	binary.BigEndian.PutUint32(c[off:], v)
	return c
}
