package tpm

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"

	"github.com/google/go-tpm/tpm2"

	"github.com/trustpool/trustpool/internal/eventlog"
)

// ErrPCRsMoved means the PCRs kept changing between quote and read.
var ErrPCRsMoved = errors.New("PCRs changed while quoting")

// Quote is a signed TPM2_Quote plus the PCR values it covers.
type Quote struct {
	// Attest is the TPMS_ATTEST the TPM signed.
	Attest []byte
	// Signature is the marshalled TPMT_SIGNATURE.
	Signature []byte
	// PCRs are the SHA-256 values of the quoted PCRs.
	PCRs map[int][]byte
}

func pcrSelection(alg tpm2.TPMAlgID, pcrs []int) (tpm2.TPMLPCRSelection, error) {
	bm := make([]byte, 3)
	for _, i := range pcrs {
		if i < 0 || i > 23 {
			return tpm2.TPMLPCRSelection{}, fmt.Errorf("PCR %d out of range", i)
		}
		bm[i/8] |= 1 << (i % 8)
	}
	return tpm2.TPMLPCRSelection{PCRSelections: []tpm2.TPMSPCRSelection{{Hash: alg, PCRSelect: bm}}}, nil
}

// Quote signs the SHA-256 values of pcrs with the AK, binding nonce as
// qualifying data, and reads the values it covers. If the PCRs move between
// the quote and the read (the digests differ) it retries, up to 3 times.
func (t *TPM) Quote(ctx context.Context, nonce []byte, pcrs []int) (*Quote, error) {
	var q *Quote
	err := t.do(ctx, "quote", func(s *session) error {
		sel, err := pcrSelection(tpm2.TPMAlgSHA256, pcrs)
		if err != nil {
			return err
		}
		ak, err := t.loadAK(s)
		if err != nil {
			return err
		}
		for range 3 {
			rsp, err := tpm2.Quote{
				SignHandle:     tpm2.AuthHandle{Handle: ak.handle, Name: ak.name, Auth: tpm2.PasswordAuth(nil)},
				QualifyingData: tpm2.TPM2BData{Buffer: nonce},
				InScheme:       tpm2.TPMTSigScheme{Scheme: tpm2.TPMAlgNull},
				PCRSelect:      sel,
			}.Execute(s.tpm)
			if err != nil {
				return err
			}
			att, err := rsp.Quoted.Contents()
			if err != nil {
				return fmt.Errorf("decode attest: %w", err)
			}
			info, err := att.Attested.Quote()
			if err != nil {
				return fmt.Errorf("decode quote info: %w", err)
			}
			vals, err := s.readPCRs(tpm2.TPMAlgSHA256, pcrs)
			if err != nil {
				return err
			}
			h := sha256.New()
			sorted := slices.Clone(pcrs)
			slices.Sort(sorted)
			for _, i := range sorted {
				h.Write(vals[i])
			}
			if !bytes.Equal(h.Sum(nil), info.PCRDigest.Buffer) {
				continue
			}
			q = &Quote{Attest: rsp.Quoted.Bytes(), Signature: tpm2.Marshal(rsp.Signature), PCRs: vals}
			return nil
		}
		return ErrPCRsMoved
	})
	return q, err
}

// ReadPCRs reads pcrs from bank alg (a TPM_ALG_ID, e.g. 0x000B for SHA-256).
func (t *TPM) ReadPCRs(ctx context.Context, alg uint16, pcrs []int) (map[int][]byte, error) {
	var out map[int][]byte
	err := t.do(ctx, "read PCRs", func(s *session) error {
		var err error
		out, err = s.readPCRs(tpm2.TPMAlgID(alg), pcrs)
		return err
	})
	return out, err
}

// readPCRs loops over TPM2_PCR_Read, which returns at most 8 digests per call.
func (s *session) readPCRs(alg tpm2.TPMAlgID, pcrs []int) (map[int][]byte, error) {
	out := make(map[int][]byte, len(pcrs))
	remaining := slices.Clone(pcrs)
	for len(remaining) > 0 {
		sel, err := pcrSelection(alg, remaining)
		if err != nil {
			return nil, err
		}
		rsp, err := tpm2.PCRRead{PCRSelectionIn: sel}.Execute(s.tpm)
		if err != nil {
			return nil, fmt.Errorf("read PCRs: %w", err)
		}
		var got []int
		for _, ps := range rsp.PCRSelectionOut.PCRSelections {
			if ps.Hash != alg {
				continue
			}
			for i := 0; i < len(ps.PCRSelect)*8; i++ {
				if ps.PCRSelect[i/8]&(1<<(i%8)) != 0 {
					got = append(got, i)
				}
			}
		}
		if len(got) == 0 || len(got) != len(rsp.PCRValues.Digests) {
			return nil, fmt.Errorf("read PCRs: bank 0x%04x not available", uint16(alg))
		}
		for j, i := range got {
			out[i] = bytes.Clone(rsp.PCRValues.Digests[j].Buffer)
		}
		remaining = slices.DeleteFunc(remaining, func(i int) bool { _, ok := out[i]; return ok })
	}
	return out, nil
}

// EventLog reads the firmware event log.
func (t *TPM) EventLog() ([]byte, error) {
	b, err := readFileLimited(t.cfg.EventLogPath, 0, eventlog.MaxLogSize)
	if err != nil {
		return nil, fmt.Errorf("read event log: %w", err)
	}
	return b, nil
}

// IMALog reads complete IMA entries starting at byte offset of the list.
// It prefers the kernel's per-bank "<path>_sha256" list (SHA-256
// template-hash column); hashSize tells which column size was read (20 or
// 32). The returned bytes end on an entry boundary; next is the offset to
// ask for next time.
func (t *TPM) IMALog(offset int64) (data []byte, hashSize int, next int64, err error) {
	path, hashSize := t.cfg.IMALogPath, 20
	if _, serr := os.Stat(path + "_sha256"); serr == nil {
		path, hashSize = path+"_sha256", 32
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, 0, offset, fmt.Errorf("read IMA log: %w", err)
	}
	defer f.Close()
	// Size the buffer to what there is (securityfs reports size 0: then
	// start small and grow), never eventlog.MaxIMAChunk up front: the
	// watcher reads the list every few seconds.
	hint := imaReadHint
	if fi, err := f.Stat(); err == nil && fi.Size() > offset {
		hint = int(min(fi.Size()-offset+1, eventlog.MaxIMAChunk))
	}
	buf, err := readUpTo(io.NewSectionReader(f, offset, eventlog.MaxIMAChunk), hint, eventlog.MaxIMAChunk)
	if err != nil {
		return nil, 0, offset, fmt.Errorf("read IMA log: %w", err)
	}
	_, consumed, perr := eventlog.ParseIMA(buf, hashSize)
	if perr != nil {
		// Let the verifier judge (and reject) a log we cannot parse.
		return buf, hashSize, offset + int64(len(buf)), nil
	}
	return buf[:consumed], hashSize, offset + int64(consumed), nil
}

// imaReadHint is the first buffer size when the list's size is unknown.
const imaReadHint = 4 << 10

// readUpTo reads r to its end or to limit bytes, starting with a buffer of
// hint bytes and growing it as needed.
func readUpTo(r io.Reader, hint, limit int) ([]byte, error) {
	buf := make([]byte, 0, min(max(hint, 512), limit))
	for len(buf) < limit {
		if len(buf) == cap(buf) {
			buf = slices.Grow(buf, min(cap(buf), limit-len(buf)))
		}
		n, err := r.Read(buf[len(buf):min(cap(buf), limit)])
		buf = buf[:len(buf)+n]
		if errors.Is(err, io.EOF) {
			return buf, nil
		}
		if err != nil {
			return nil, err
		}
	}
	return buf, nil
}
