package eventlog

import (
	"bytes"
	"crypto/sha256"
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
	// MaxIMAEntries caps the entries of one chunk. Real entries are at
	// least ~75 bytes (a SHA-1 digest and a one-character path), so a full
	// chunk of real entries holds fewer than 230,000; the cap bounds what
	// a chunk of artificially tiny entries costs (one [IMAEntry] each).
	MaxIMAEntries = 1 << 18
	// maxIMAName and maxIMAData cap the template name and template data of
	// one entry.
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

// Templates this package parses, with their fields in order.
var imaTemplates = []struct {
	name   string
	fields []string
}{
	{"ima-ng", []string{"d-ng", "n-ng"}},
	{"ima-sig", []string{"d-ng", "n-ng", "sig"}},
	{"ima-buf", []string{"d-ng", "n-ng", "buf"}},
	{"ima-modsig", []string{"d-ng", "n-ng", "sig", "d-modsig", "modsig"}},
}

// IMAEntry is one IMA measurement. It is a compact view into the bytes it
// was parsed from (which it keeps alive and never copies): offsets instead
// of slices and strings, 64 bytes per entry whatever its size, so
// the entries of a chunk cost about the chunk again in the worst case
// (tiny entries) and much less for real ones. Accessors return sub-slices
// of those bytes; callers must not modify them.
type IMAEntry struct {
	raw              []byte
	seq              int64
	digOff, digLen   uint32
	pathOff, pathLen uint32
	sigOff, sigLen   uint32
	pcr              uint8
	hashSize         uint8
	nameLen          uint8 // the template data follows the name and its length
	algLen           uint8 // 0: the d-ng field has no "alg:" prefix (SHA-1)
	tmpl             uint8 // index in imaTemplates
	hasSig           bool
	violation        bool
}

func (e *IMAEntry) dataOff() int { return 4 + int(e.hashSize) + 4 + int(e.nameLen) + 4 }

func (e *IMAEntry) sub(off, n uint32) []byte {
	if e.raw == nil {
		return nil
	}
	return e.raw[off : off+n : off+n]
}

// PCR is the PCR the entry extended.
func (e *IMAEntry) PCR() uint32 { return uint32(e.pcr) }

// Seq is the entry's position in the host's measurement list since boot
// (0 is the first entry, boot_aggregate). [ParseIMA] numbers entries from
// 0 within its input; [ReplayIMA] renumbers the entries it verifies from
// the number already verified.
func (e *IMAEntry) Seq() int64 { return e.seq }

// TemplateHash is the log's template-hash column (SHA-1 in the classic
// list, SHA-256 in binary_runtime_measurements_sha256); all zero for a
// violation (ToMToU / open-writers).
func (e *IMAEntry) TemplateHash() []byte { return e.sub(4, uint32(e.hashSize)) }

// Template is the template name ("ima-ng").
func (e *IMAEntry) Template() string { return imaTemplates[e.tmpl].name }

// TemplateData is the raw template data that the kernel hashed.
func (e *IMAEntry) TemplateData() []byte {
	if e.raw == nil {
		return nil
	}
	return e.raw[e.dataOff():len(e.raw):len(e.raw)]
}

// Violation is true when the entry records a measurement violation.
func (e *IMAEntry) Violation() bool { return e.violation }

// FileHashAlg is the file digest algorithm of the d-ng field ("sha256";
// "sha1" when the field has no algorithm prefix).
func (e *IMAEntry) FileHashAlg() string {
	if e.algLen == 0 {
		return "sha1"
	}
	b := e.raw[e.digOff-2-uint32(e.algLen) : e.digOff-2]
	// Known names without allocating.
	for _, a := range []string{"sha256", "sha1", "sha384", "sha512", "sha224", "md5", "sm3-256"} {
		if string(b) == a {
			return a
		}
	}
	return string(b)
}

// FileDigest is the file digest of the d-ng field.
func (e *IMAEntry) FileDigest() []byte { return e.sub(e.digOff, e.digLen) }

// FileDigestHex returns "alg:hex" of the file digest ("sha256:ab12...").
func (e *IMAEntry) FileDigestHex() string {
	return e.FileHashAlg() + ":" + hex.EncodeToString(e.FileDigest())
}

// Path is the file name of the n-ng field, without its NUL.
func (e *IMAEntry) Path() string { return string(e.sub(e.pathOff, e.pathLen)) }

// Signature is the sig field of ima-sig and ima-modsig (may be empty);
// nil for templates without one.
func (e *IMAEntry) Signature() []byte {
	if !e.hasSig {
		return nil
	}
	return e.sub(e.sigOff, e.sigLen)
}

// Size is the entry's size in bytes in the log.
func (e *IMAEntry) Size() int { return len(e.raw) }

// ParseIMA parses complete entries of a binary IMA measurement list. hashSize
// is the size of the template-hash column: 20 for the classic list, 32 for
// binary_runtime_measurements_sha256. It returns the entries and the number
// of bytes they occupy; a truncated final entry is not an error (the log was
// read while the kernel appended), its bytes are simply not consumed. More
// than [MaxIMAEntries] complete entries wrap [ErrTooLarge]. The entries
// point into b.
func ParseIMA(b []byte, hashSize int) ([]IMAEntry, int, error) {
	if hashSize != 20 && hashSize != 32 {
		return nil, 0, fmt.Errorf("parse IMA log: template hash size %d", hashSize)
	}
	if len(b) > MaxIMAChunk {
		return nil, 0, fmt.Errorf("parse IMA log: %w: %d bytes (max %d)", ErrTooLarge, len(b), MaxIMAChunk)
	}
	// Count first so that the entries are allocated once, at their size.
	n := 0
	for off := 0; off < len(b); n++ {
		size, ok := imaEntrySize(b[off:], hashSize)
		if !ok {
			break
		}
		if n == MaxIMAEntries {
			return nil, 0, fmt.Errorf("parse IMA log: %w: more than %d entries", ErrTooLarge, MaxIMAEntries)
		}
		off += size
	}
	out := make([]IMAEntry, 0, n)
	off := 0
	for off < len(b) {
		e, err := parseIMAEntry(b[off:], hashSize)
		if errors.Is(err, errShort) {
			break
		}
		if err != nil {
			return nil, 0, fmt.Errorf("parse IMA log: entry %d at offset %d: %w", len(out), off, err)
		}
		e.seq = int64(len(out))
		out = append(out, e)
		off += len(e.raw)
	}
	return out, off, nil
}

var errShort = errors.New("short entry")

// imaEntrySize returns the size of the entry at the start of b from its
// length fields only; ok is false when they are truncated or out of range
// (parseIMAEntry then says which).
func imaEntrySize(b []byte, hashSize int) (int, bool) {
	off := 4 + hashSize
	if len(b) < off+4 {
		return 0, false
	}
	nl := binary.LittleEndian.Uint32(b[off:])
	if nl == 0 || nl > maxIMAName || uint64(len(b)) < uint64(off)+4+uint64(nl)+4 {
		return 0, false
	}
	off += 4 + int(nl)
	dl := binary.LittleEndian.Uint32(b[off:])
	if dl > maxIMAData || uint64(len(b)) < uint64(off)+4+uint64(dl) {
		return 0, false
	}
	return off + 4 + int(dl), true
}

func parseIMAEntry(b []byte, hashSize int) (IMAEntry, error) {
	e := IMAEntry{hashSize: uint8(hashSize)}
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
	pcr, err := u32()
	if err != nil {
		return e, err
	}
	if pcr >= NumPCRs {
		return e, fmt.Errorf("%w: PCR %d", ErrIMAMalformed, pcr)
	}
	e.pcr = uint8(pcr)
	th, err := take(hashSize)
	if err != nil {
		return e, err
	}
	nl, err := u32()
	if err != nil {
		return e, err
	}
	if nl == 0 || nl > maxIMAName {
		return e, fmt.Errorf("%w: template name length %d", ErrIMAMalformed, nl)
	}
	name, err := take(int(nl))
	if err != nil {
		return e, err
	}
	if string(name) == "ima" {
		return e, fmt.Errorf("%w: %q (SHA-1 only, no template data length)", ErrIMATemplate, name)
	}
	tmpl := -1
	for i, t := range imaTemplates {
		if string(name) == t.name {
			tmpl = i
		}
	}
	dl, err := u32()
	if err != nil {
		return e, err
	}
	if dl > maxIMAData {
		return e, fmt.Errorf("%w: template data length %d", ErrIMAMalformed, dl)
	}
	e.nameLen = uint8(nl)
	if _, err := take(int(dl)); err != nil {
		return e, err
	}
	if tmpl < 0 {
		return e, fmt.Errorf("%w: %q", ErrIMATemplate, name)
	}
	e.tmpl = uint8(tmpl)
	e.raw = b[:r.off:r.off]
	e.violation = allBytes(th, 0)
	if err := e.parseFields(); err != nil {
		return e, err
	}
	return e, nil
}

// parseFields decodes the template fields of the entry's template. Fields
// are (u32 length, bytes) pairs and must fill the template data exactly.
func (e *IMAEntry) parseFields() error {
	r := &reader{b: e.raw, off: e.dataOff()}
	for _, f := range imaTemplates[e.tmpl].fields {
		n, err := r.u32()
		if err != nil {
			return fmt.Errorf("%w: field %s: %w", ErrIMAMalformed, f, err)
		}
		start := uint32(r.off)
		v, err := r.bytes(int(n))
		if err != nil {
			return fmt.Errorf("%w: field %s: %w", ErrIMAMalformed, f, err)
		}
		switch f {
		case "d-ng":
			// Kernels write "alg:\0digest", except for md5/sha1 legacy
			// digests without the prefix.
			e.digOff, e.digLen = start, n
			if alg, _, ok := bytes.Cut(v, []byte{':', 0}); ok {
				if len(alg) > 64 {
					return fmt.Errorf("%w: d-ng algorithm name of %d bytes", ErrIMAMalformed, len(alg))
				}
				e.algLen = uint8(len(alg))
				e.digOff, e.digLen = start+uint32(len(alg))+2, n-uint32(len(alg))-2
			}
		case "n-ng":
			e.pathOff, e.pathLen = start, uint32(len(bytes.TrimSuffix(v, []byte{0})))
		case "sig":
			e.hasSig, e.sigOff, e.sigLen = true, start, n
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
// after which PCR target equals want, and the state after that prefix; the
// entries of the prefix are renumbered ([IMAEntry.Seq]) from prev.Entries.
// Entries after the prefix were appended after the quote; they are left
// for the next round. If no prefix (including the empty one) matches, the
// error wraps [ErrIMAReplay]. When the template-hash column is SHA-256 (32
// bytes) it must equal the recomputed hash ([ErrIMATemplateHash]). It does
// not allocate per entry.
func ReplayIMA(prev IMAState, entries []IMAEntry, target uint32, want []byte) ([]IMAEntry, IMAState, error) {
	st := prev.clone()
	if subtle.ConstantTimeCompare(st.PCR(target), want) == 1 {
		return nil, st, nil
	}
	var pcrs [NumPCRs]*[sha256.Size]byte
	cur := func(pcr uint32) *[sha256.Size]byte {
		if pcrs[pcr] == nil {
			pcrs[pcr] = new([sha256.Size]byte)
			copy(pcrs[pcr][:], st.PCR(pcr))
		}
		return pcrs[pcr]
	}
	var buf [2 * sha256.Size]byte
	ff := [sha256.Size]byte{}
	for i := range ff {
		ff[i] = 0xff
	}
	for i := range entries {
		e := &entries[i]
		th := ff
		if !e.violation {
			th = sha256.Sum256(e.TemplateData())
			if e.hashSize == sha256.Size && subtle.ConstantTimeCompare(th[:], e.TemplateHash()) != 1 {
				return nil, prev, fmt.Errorf("replay IMA: entry %d: %w", prev.Entries+int64(i), ErrIMATemplateHash)
			}
		}
		p := cur(uint32(e.pcr))
		copy(buf[:], p[:])
		copy(buf[sha256.Size:], th[:])
		*p = sha256.Sum256(buf[:])
		if uint32(e.pcr) == target && subtle.ConstantTimeCompare(p[:], want) == 1 {
			for j := range i + 1 {
				entries[j].seq = prev.Entries + int64(j)
			}
			for k, v := range pcrs {
				if v != nil {
					st.PCRs[uint32(k)] = bytes.Clone(v[:])
				}
			}
			st.Entries += int64(i + 1)
			for j := range i + 1 {
				st.Offset += int64(len(entries[j].raw))
			}
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
