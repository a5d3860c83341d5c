package simtpm

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/sha256"
	"fmt"
	"io/fs"
	"math/big"
	"slices"

	"github.com/google/go-tpm/tpm2"

	"github.com/trustpool/trustpool/internal/bootseed"
	"github.com/trustpool/trustpool/internal/eventlog"
	"github.com/trustpool/trustpool/internal/tpm"
)

const cryptoSHA256 = crypto.SHA256

// imaHashSize is the template-hash column of the list the model keeps
// (binary_runtime_measurements_sha256).
const imaHashSize = 32

// Boot is a measured boot computed once: its event log and the PCR
// extensions it records. Boots are immutable and shared by every TPM that
// boots them (bootseed builds the log).
type Boot struct {
	Variant bootseed.Variant
	log     []byte
	exts    []bootseed.Extend
}

// NewBoot builds the event log of v in the SHA-1 and SHA-256 banks.
func NewBoot(v bootseed.Variant) (*Boot, error) {
	log, exts, err := bootseed.BuildLog(v, []eventlog.Alg{eventlog.SHA1, eventlog.SHA256})
	if err != nil {
		return nil, fmt.Errorf("simulated TPM: boot %s: %w", v.Name, err)
	}
	return &Boot{Variant: v, log: log, exts: exts}, nil
}

// Log returns the boot's event log.
func (b *Boot) Log() []byte { return b.log }

// boot resets the PCRs and replays b (caller holds t.mu). With IMA on, the
// list starts over with its boot_aggregate entry.
func (t *TPM) boot(b *Boot) {
	for i := range t.sha256 {
		t.sha1[i] = make([]byte, 20)
		t.sha256[i] = make([]byte, 32)
	}
	for _, e := range b.exts {
		t.extendLocked(e.PCR, e.Digests[eventlog.SHA1], e.Digests[eventlog.SHA256])
	}
	t.eventLog = b.log
	t.current = b
	t.ima = nil
	if t.imaOn {
		var agg []byte
		for i := range 10 {
			agg = append(agg, t.sha256[i]...)
		}
		t.appendIMALocked([]bootseed.IMAFile{{Path: "boot_aggregate", Content: agg}})
	}
}

func (t *TPM) extendLocked(pcr int, d1, d256 []byte) {
	if d1 != nil {
		h := eventlog.SHA1.Sum(t.sha1[pcr], d1)
		t.sha1[pcr] = h
	}
	if d256 != nil {
		t.sha256[pcr] = eventlog.SHA256.Sum(t.sha256[pcr], d256)
	}
}

// Extend extends PCR pcr in both banks with the digests of data, as a
// measurement outside the event log would (an attacker's extend, or a
// component measured but not logged).
func (t *TPM) Extend(pcr int, data []byte) error {
	if pcr < 0 || pcr > 23 {
		return fmt.Errorf("%w: PCR %d", ErrSelection, pcr)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.extendLocked(pcr, eventlog.SHA1.Sum(data), eventlog.SHA256.Sum(data))
	return nil
}

// Reboot is a TPM reset followed by a boot of b (nil: the current boot
// again): PCRs start over, resetCount increases, the event log and the
// IMA list are the new boot's.
func (t *TPM) Reboot(b *Boot) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if b == nil {
		b = t.current
	}
	t.resetCount++
	t.restartCount = 0
	t.boot(b)
}

// AppendIMA records files in the IMA list (ima-ng entries, PCR 10) and
// extends PCR 10 in both banks with each entry's template hash.
func (t *TPM) AppendIMA(files []bootseed.IMAFile) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.imaOn {
		return ErrNoIMA
	}
	t.appendIMALocked(files)
	return nil
}

func (t *TPM) appendIMALocked(files []bootseed.IMAFile) {
	for _, f := range files {
		fd := eventlog.SHA256.Sum(f.Content)
		e256, th256 := eventlog.IMAEntryBytes(10, fd, f.Path, f.Signature, f.Signature != nil, imaHashSize)
		// The SHA-1 bank is extended with the SHA-1 template hash, as the
		// kernel does; only the SHA-256 list is kept.
		e1, _ := eventlog.IMAEntryBytes(10, fd, f.Path, f.Signature, f.Signature != nil, 20)
		t.ima = append(t.ima, e256...)
		t.extendLocked(10, e1[4:24], th256)
	}
}

// IMALen is the size of the IMA list in bytes.
func (t *TPM) IMALen() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.ima)
}

// PCR returns the SHA-256 value of PCR i.
func (t *TPM) PCR(i int) []byte {
	t.mu.Lock()
	defer t.mu.Unlock()
	return bytes.Clone(t.sha256[i])
}

// Counters returns resetCount and restartCount.
func (t *TPM) Counters() (reset, restart uint32) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.resetCount, t.restartCount
}

// Quote is TPM2_Quote with the AK over the SHA-256 bank: the TPMS_ATTEST
// bytes, its ECDSA signature as a TPMT_SIGNATURE, and the quoted values
// (as the agent reads them after the quote).
func (t *TPM) Quote(_ context.Context, nonce []byte, pcrs []int) (*tpm.Quote, error) {
	if len(nonce) > 64 {
		return nil, fmt.Errorf("%w: qualifying data of %d bytes", ErrSelection, len(nonce))
	}
	bm := make([]byte, 3)
	for _, i := range pcrs {
		if i < 0 || i > 23 || bm[i/8]&(1<<(i%8)) != 0 {
			return nil, fmt.Errorf("%w: PCR %d", ErrSelection, i)
		}
		bm[i/8] |= 1 << (i % 8)
	}
	sorted := slices.Sorted(slices.Values(pcrs))
	vals := make(map[int][]byte, len(sorted))
	h := sha256.New()
	t.mu.Lock()
	for _, i := range sorted {
		vals[i] = bytes.Clone(t.sha256[i])
		h.Write(t.sha256[i])
	}
	clock := uint64(t.now().Sub(t.born).Milliseconds()) + 1_000_000 //nolint:gosec // G115: positive, far below 2^63
	reset, restart := t.resetCount, t.restartCount
	akName, ak := t.akName, t.akPriv
	t.mu.Unlock()

	att := tpm2.TPMSAttest{
		Magic:           tpm2.TPMGeneratedValue,
		Type:            tpm2.TPMSTAttestQuote,
		QualifiedSigner: tpm2.TPM2BName{Buffer: akName},
		ExtraData:       tpm2.TPM2BData{Buffer: nonce},
		ClockInfo:       tpm2.TPMSClockInfo{Clock: clock, ResetCount: reset, RestartCount: restart, Safe: true},
		FirmwareVersion: FirmwareVersion,
		Attested: tpm2.NewTPMUAttest(tpm2.TPMSTAttestQuote, &tpm2.TPMSQuoteInfo{
			PCRSelect: tpm2.TPMLPCRSelection{PCRSelections: []tpm2.TPMSPCRSelection{{Hash: tpm2.TPMAlgSHA256, PCRSelect: bm}}},
			PCRDigest: tpm2.TPM2BDigest{Buffer: h.Sum(nil)},
		}),
	}
	raw := tpm2.Marshal(att)
	d := sha256.Sum256(raw)
	r, s, err := ecdsa.Sign(t.rand, ak, d[:])
	if err != nil {
		return nil, fmt.Errorf("simulated TPM: sign quote: %w", err)
	}
	sig := tpm2.TPMTSignature{SigAlg: tpm2.TPMAlgECDSA, Signature: tpm2.NewTPMUSignature(tpm2.TPMAlgECDSA, &tpm2.TPMSSignatureECC{
		Hash: tpm2.TPMAlgSHA256, SignatureR: tpm2.TPM2BECCParameter{Buffer: pad32(r)}, SignatureS: tpm2.TPM2BECCParameter{Buffer: pad32(s)},
	})}
	return &tpm.Quote{Attest: raw, Signature: tpm2.Marshal(sig), PCRs: vals}, nil
}

func pad32(v *big.Int) []byte { return v.FillBytes(make([]byte, 32)) }

// EventLog returns the firmware event log of the current boot.
func (t *TPM) EventLog() ([]byte, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.eventLog, nil
}

// IMALog returns whole IMA entries from byte offset of the list (at most
// eventlog.MaxIMAChunk bytes), as the agent reads the kernel's list.
func (t *TPM) IMALog(offset int64) (data []byte, hashSize int, next int64, err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.imaOn {
		return nil, 0, offset, fmt.Errorf("read IMA log: %w", fs.ErrNotExist)
	}
	if offset < 0 || offset > int64(len(t.ima)) {
		return nil, imaHashSize, offset, nil
	}
	buf := t.ima[offset:]
	if len(buf) > eventlog.MaxIMAChunk {
		buf = buf[:eventlog.MaxIMAChunk]
	}
	_, consumed, perr := eventlog.ParseIMA(buf, imaHashSize)
	if perr != nil {
		return bytes.Clone(buf), imaHashSize, offset + int64(len(buf)), nil
	}
	return bytes.Clone(buf[:consumed]), imaHashSize, offset + int64(consumed), nil
}
