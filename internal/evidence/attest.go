package evidence

import (
	"encoding/binary"
	"fmt"

	"github.com/google/go-tpm/tpm2"
)

// Hand-written decoders for the two structures of every quote. They are
// strict (sizes checked before use, no trailing bytes, TPMI_YES_NO only 0
// or 1) and several times faster than go-tpm's reflection-based Unmarshal,
// which matters for the steady-state cost (see BenchmarkSteadyState).

type quoteAttest struct {
	magic        uint32
	typ          uint16
	extraData    []byte
	clock        ClockInfo
	firmware     uint64
	selections   []pcrSelection
	pcrDigest    []byte
	qualifiedSig []byte
}

type pcrSelection struct {
	hash   tpm2.TPMAlgID
	bitmap []byte
}

type be struct {
	b   []byte
	off int
	err error
}

func (r *be) need(n int) bool {
	if r.err != nil {
		return false
	}
	if n < 0 || len(r.b)-r.off < n {
		r.err = fmt.Errorf("%w: truncated at byte %d", ErrMalformed, r.off)
		return false
	}
	return true
}

func (r *be) u8() uint8 {
	if !r.need(1) {
		return 0
	}
	v := r.b[r.off]
	r.off++
	return v
}

func (r *be) u16() uint16 {
	if !r.need(2) {
		return 0
	}
	v := binary.BigEndian.Uint16(r.b[r.off:])
	r.off += 2
	return v
}

func (r *be) u32() uint32 {
	if !r.need(4) {
		return 0
	}
	v := binary.BigEndian.Uint32(r.b[r.off:])
	r.off += 4
	return v
}

func (r *be) u64() uint64 {
	if !r.need(8) {
		return 0
	}
	v := binary.BigEndian.Uint64(r.b[r.off:])
	r.off += 8
	return v
}

func (r *be) bytes(n int) []byte {
	if !r.need(n) {
		return nil
	}
	v := r.b[r.off : r.off+n : r.off+n]
	r.off += n
	return v
}

// tpm2b reads a TPM2B: u16 size, then size bytes (at most max).
func (r *be) tpm2b(max int) []byte {
	n := int(r.u16())
	if r.err == nil && n > max {
		r.err = fmt.Errorf("%w: %d-byte field at byte %d (max %d)", ErrMalformed, n, r.off-2, max)
		return nil
	}
	return r.bytes(n)
}

func (r *be) end() error {
	if r.err == nil && r.off != len(r.b) {
		r.err = fmt.Errorf("%w: %d trailing bytes", ErrMalformed, len(r.b)-r.off)
	}
	return r.err
}

// parseQuoteAttest decodes a TPMS_ATTEST whose type must be
// TPM_ST_ATTEST_QUOTE. Magic and type are returned, not judged, except
// that any other type cannot be decoded further.
func parseQuoteAttest(b []byte) (*quoteAttest, error) {
	r := &be{b: b}
	a := &quoteAttest{}
	a.magic = r.u32()
	a.typ = r.u16()
	if r.err != nil {
		return nil, r.err
	}
	if a.magic != tpmGeneratedValue {
		return a, fmt.Errorf("%w: 0x%08x", ErrMagic, a.magic)
	}
	if tpm2.TPMST(a.typ) != tpm2.TPMSTAttestQuote {
		return a, fmt.Errorf("%w: 0x%04x", ErrAttestType, a.typ)
	}
	a.qualifiedSig = r.tpm2b(2 + 64)
	a.extraData = r.tpm2b(64)
	a.clock.Clock = r.u64()
	a.clock.ResetCount = r.u32()
	a.clock.RestartCount = r.u32()
	switch safe := r.u8(); safe {
	case 0, 1:
		a.clock.Safe = safe == 1
	default:
		if r.err == nil {
			r.err = fmt.Errorf("%w: clockInfo.safe = %d", ErrMalformed, safe)
		}
	}
	a.firmware = r.u64()
	n := r.u32()
	if r.err == nil && n > 16 {
		r.err = fmt.Errorf("%w: %d PCR selections", ErrMalformed, n)
	}
	for i := 0; r.err == nil && i < int(n); i++ {
		h := tpm2.TPMAlgID(r.u16())
		sz := int(r.u8())
		if r.err == nil && sz > 8 {
			r.err = fmt.Errorf("%w: PCR bitmap of %d bytes", ErrMalformed, sz)
		}
		a.selections = append(a.selections, pcrSelection{hash: h, bitmap: r.bytes(sz)})
	}
	a.pcrDigest = r.tpm2b(64)
	if err := r.end(); err != nil {
		return nil, err
	}
	return a, nil
}

type signature struct {
	alg  tpm2.TPMAlgID
	hash tpm2.TPMAlgID
	r, s []byte // ECDSA
	sig  []byte // RSA
}

// parseSignature decodes a TPMT_SIGNATURE of the ECDSA, RSASSA or RSAPSS
// kind.
func parseSignature(b []byte) (*signature, error) {
	r := &be{b: b}
	s := &signature{alg: tpm2.TPMAlgID(r.u16()), hash: tpm2.TPMAlgID(r.u16())}
	switch s.alg {
	case tpm2.TPMAlgECDSA:
		s.r = r.tpm2b(66)
		s.s = r.tpm2b(66)
	case tpm2.TPMAlgRSASSA, tpm2.TPMAlgRSAPSS:
		s.sig = r.tpm2b(512)
	default:
		if r.err == nil {
			return nil, fmt.Errorf("%w: signature algorithm 0x%04x", ErrMalformed, uint16(s.alg))
		}
	}
	if err := r.end(); err != nil {
		return nil, err
	}
	return s, nil
}
