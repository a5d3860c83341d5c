package eventlog

import (
	"bytes"
	"crypto/subtle"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
)

// IMA limits.
const (
	// MaxIMAChunk caps one incremental IMA read.
	MaxIMAChunk = 16 << 20
	// MaxIMAField caps the template name and template data of one entry.
	maxIMAName = 255
	maxIMAData = 1 << 20
)

// IMA errors.
var (
	ErrIMAMalformed = errors.New("malformed IMA log")
	// ErrIMATemplate: a template this package cannot recompute in the
	// SHA-256 bank (the legacy "ima" template is SHA-1 only).
	ErrIMATemplate = errors.New("unsupported IMA template")
	// ErrIMATemplateHash: the template-hash column does not match the
	// template data (only checked when the column is SHA-256).
	ErrIMATemplateHash = errors.New("IMA template hash does not match template data")
)

// IMAEntry is one IMA measurement.
type IMAEntry struct {
	PCR uint32
	// TemplateHash is the log's template-hash column (SHA-1 in the classic
	// list, SHA-256 in binary_runtime_measurements_sha256); all zero for a
	// violation (ToMToU / open-writers).
	TemplateHash []byte
	Template     string
	// TemplateData is the raw template data that the kernel hashed.
	TemplateData []byte
	// Violation is true when the entry records a measurement violation.
	Violation bool
	// FileHashAlg and FileDigest come from the d-ng field ("sha256").
	FileHashAlg string
	FileDigest  []byte
	// Path comes from the n-ng field.
	Path string
	// Signature is the sig field of ima-sig (may be empty).
	Signature []byte
	// Size is the entry's size in bytes in the log.
	Size int
}

// FileDigestHex returns "alg:hex" of the file digest ("sha256:ab12...").
func (e *IMAEntry) FileDigestHex() string {
	return e.FileHashAlg + ":" + hex.EncodeToString(e.FileDigest)
}

// ParseIMA parses complete entries of a binary IMA measurement list. hashSize
// is the size of the template-hash column: 20 for the classic list, 32 for
// binary_runtime_measurements_sha256. It returns the entries and the number
// of bytes they occupy; a truncated final entry is not an error (the log was
// read while the kernel appended), its bytes are simply not consumed.
func ParseIMA(b []byte, hashSize int) ([]IMAEntry, int, error) {
	if hashSize != 20 && hashSize != 32 {
		return nil, 0, fmt.Errorf("parse IMA log: template hash size %d", hashSize)
	}
	if len(b) > MaxIMAChunk {
		return nil, 0, fmt.Errorf("parse IMA log: %w: %d bytes (max %d)", ErrTooLarge, len(b), MaxIMAChunk)
	}
	var out []IMAEntry
	off := 0
	for off < len(b) {
		e, n, err := parseIMAEntry(b[off:], hashSize)
		if errors.Is(err, errShort) {
			break
		}
		if err != nil {
			return nil, 0, fmt.Errorf("parse IMA log: entry %d at offset %d: %w", len(out), off, err)
		}
		e.Size = n
		out = append(out, e)
		off += n
	}
	return out, off, nil
}

var errShort = errors.New("short entry")

func parseIMAEntry(b []byte, hashSize int) (IMAEntry, int, error) {
	var e IMAEntry
	r := &reader{b: b}
	u32 := func() (uint32, error) {
		v, err := r.u32()
		if err != nil {
			return 0, errShort
		}
		return v, nil
	}
	take := func(n int) ([]byte, error) {
		v, err := r.bytes(n)
		if err != nil {
			return nil, errShort
		}
		return v, nil
	}
	var err error
	if e.PCR, err = u32(); err != nil {
		return e, 0, err
	}
	if e.PCR >= NumPCRs {
		return e, 0, fmt.Errorf("%w: PCR %d", ErrIMAMalformed, e.PCR)
	}
	if e.TemplateHash, err = take(hashSize); err != nil {
		return e, 0, err
	}
	nl, err := u32()
	if err != nil {
		return e, 0, err
	}
	if nl == 0 || nl > maxIMAName {
		return e, 0, fmt.Errorf("%w: template name length %d", ErrIMAMalformed, nl)
	}
	name, err := take(int(nl))
	if err != nil {
		return e, 0, err
	}
	e.Template = string(name)
	if e.Template == "ima" {
		return e, 0, fmt.Errorf("%w: %q (SHA-1 only, no template data length)", ErrIMATemplate, e.Template)
	}
	dl, err := u32()
	if err != nil {
		return e, 0, err
	}
	if dl > maxIMAData {
		return e, 0, fmt.Errorf("%w: template data length %d", ErrIMAMalformed, dl)
	}
	if e.TemplateData, err = take(int(dl)); err != nil {
		return e, 0, err
	}
	e.Violation = allBytes(e.TemplateHash, 0)
	if err := e.parseFields(); err != nil {
		return e, 0, err
	}
	return e, r.off, nil
}

// parseFields decodes the template fields of the templates we know. Fields
// are (u32 length, bytes) pairs.
func (e *IMAEntry) parseFields() error {
	var fields []string
	switch e.Template {
	case "ima-ng":
		fields = []string{"d-ng", "n-ng"}
	case "ima-sig":
		fields = []string{"d-ng", "n-ng", "sig"}
	case "ima-buf":
		fields = []string{"d-ng", "n-ng", "buf"}
	case "ima-modsig":
		fields = []string{"d-ng", "n-ng", "sig", "d-modsig", "modsig"}
	default:
		return fmt.Errorf("%w: %q", ErrIMATemplate, e.Template)
	}
	r := &reader{b: e.TemplateData}
	for _, f := range fields {
		n, err := r.u32()
		if err != nil {
			return fmt.Errorf("%w: field %s: %w", ErrIMAMalformed, f, err)
		}
		v, err := r.bytes(int(n))
		if err != nil {
			return fmt.Errorf("%w: field %s: %w", ErrIMAMalformed, f, err)
		}
		switch f {
		case "d-ng":
			alg, dig, ok := bytes.Cut(v, []byte{':', 0})
			if !ok {
				// Kernels write "sha1:\0" ... except for md5/sha1 legacy
				// digests without the prefix.
				e.FileHashAlg, e.FileDigest = "sha1", v
			} else {
				e.FileHashAlg, e.FileDigest = string(alg), dig
			}
		case "n-ng":
			e.Path = string(bytes.TrimSuffix(v, []byte{0}))
		case "sig":
			e.Signature = v
		}
	}
	if r.remaining() != 0 {
		return fmt.Errorf("%w: %d bytes after the template fields", ErrIMAMalformed, r.remaining())
	}
	return nil
}

// IMAState is where a verifier's IMA replay stands: the next byte offset to
// read from the agent's log, the number of entries consumed and the
// running SHA-256 value of every PCR the log extends. The zero value is
// the state right after boot.
type IMAState struct {
	Offset  int64             `json:"offset"`
	Entries int64             `json:"entries"`
	PCRs    map[uint32][]byte `json:"pcrs,omitempty"`
}

// PCR returns the running SHA-256 value of pcr (all zero when untouched).
func (s IMAState) PCR(pcr uint32) []byte {
	if v, ok := s.PCRs[pcr]; ok {
		return v
	}
	return make([]byte, 32)
}

func (s IMAState) clone() IMAState {
	c := s
	c.PCRs = make(map[uint32][]byte, len(s.PCRs))
	for k, v := range s.PCRs {
		c.PCRs[k] = bytes.Clone(v)
	}
	return c
}

// ErrIMAReplay means no prefix of the new entries replays to the target.
var ErrIMAReplay = errors.New("IMA log does not replay to the quoted PCR")

// ReplayIMA extends prev with entries (parsed by [ParseIMA] from the log
// bytes starting at prev.Offset) into the SHA-256 bank, recomputing each
// template hash as SHA-256 of the template data; a violation extends
// 0xFF..FF, as the kernel does. It returns the shortest prefix of entries
// after which PCR target equals want, and the state after that prefix.
// Entries after the prefix were appended after the quote; they are left for
// the next round. If no prefix (including the empty one) matches, the error
// wraps [ErrIMAReplay]. When the template-hash column is SHA-256 (32 bytes)
// it must equal the recomputed hash ([ErrIMATemplateHash]).
func ReplayIMA(prev IMAState, entries []IMAEntry, target uint32, want []byte) ([]IMAEntry, IMAState, error) {
	st := prev.clone()
	if subtle.ConstantTimeCompare(st.PCR(target), want) == 1 {
		return nil, st, nil
	}
	ff := bytes.Repeat([]byte{0xff}, 32)
	for i := range entries {
		e := &entries[i]
		var th []byte
		if e.Violation {
			th = ff
		} else {
			th = SHA256.Sum(e.TemplateData)
			if len(e.TemplateHash) == 32 && subtle.ConstantTimeCompare(th, e.TemplateHash) != 1 {
				return nil, prev, fmt.Errorf("replay IMA: entry %d: %w", prev.Entries+int64(i), ErrIMATemplateHash)
			}
		}
		st.PCRs[e.PCR] = SHA256.Sum(st.PCR(e.PCR), th)
		st.Entries++
		st.Offset += int64(e.Size)
		if e.PCR == target && subtle.ConstantTimeCompare(st.PCRs[target], want) == 1 {
			return entries[:i+1], st, nil
		}
	}
	return nil, prev, fmt.Errorf("replay IMA: %w (PCR %d, %d new entries)", ErrIMAReplay, target, len(entries))
}

// imaTemplateData builds ima-ng/ima-sig template data; used by tests and by
// the boot seeding tool.
func imaTemplateData(fileAlg string, fileDigest []byte, path string, sig []byte, withSig bool) []byte {
	var b bytes.Buffer
	field := func(v []byte) {
		binary.Write(&b, binary.LittleEndian, uint32(len(v))) //nolint:errcheck // bytes.Buffer
		b.Write(v)
	}
	d := append([]byte(fileAlg+":\x00"), fileDigest...)
	field(d)
	field(append([]byte(path), 0))
	if withSig {
		field(sig)
	}
	return b.Bytes()
}

// IMAEntryBytes encodes one binary IMA log entry (template ima-ng, or
// ima-sig when withSig), with a SHA-1 template-hash column when hashSize is
// 20 or a SHA-256 one when 32. It returns the entry and the SHA-256
// template hash to extend into PCR 10. Test and demo helper.
func IMAEntryBytes(pcr uint32, fileDigest []byte, path string, sig []byte, withSig bool, hashSize int) (entry, sha256TemplateHash []byte) {
	td := imaTemplateData("sha256", fileDigest, path, sig, withSig)
	name := "ima-ng"
	if withSig {
		name = "ima-sig"
	}
	var th []byte
	if hashSize == 20 {
		th = SHA1.Sum(td)
	} else {
		th = SHA256.Sum(td)
	}
	var b bytes.Buffer
	binary.Write(&b, binary.LittleEndian, pcr) //nolint:errcheck // bytes.Buffer
	b.Write(th)
	binary.Write(&b, binary.LittleEndian, uint32(len(name))) //nolint:errcheck // bytes.Buffer
	b.WriteString(name)
	binary.Write(&b, binary.LittleEndian, uint32(len(td))) //nolint:errcheck // bytes.Buffer
	b.Write(td)
	return b.Bytes(), SHA256.Sum(td)
}
