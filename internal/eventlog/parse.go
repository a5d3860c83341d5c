package eventlog

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
)

// Limits applied to every parsed log.
const (
	// MaxLogSize caps the size of a firmware event log (real logs are
	// 20-100 KiB).
	MaxLogSize = 8 << 20
	// MaxEvents caps the number of events in one log.
	MaxEvents = 20000
	// maxAlgs caps numberOfAlgorithms in the Spec ID event.
	maxAlgs = 8
	// NumPCRs is the number of PCRs of a PC Client TPM.
	NumPCRs = 24
)

// Sentinel errors. Parse errors wrap ErrMalformed.
var (
	ErrMalformed = errors.New("malformed event log")
	ErrTooLarge  = errors.New("event log too large")
)

// Format is the binary format of a firmware event log.
type Format int

// Log formats.
const (
	FormatSHA1        Format = iota + 1 // legacy TCG_PCR_EVENT records (SHA-1 only)
	FormatCryptoAgile                   // Spec ID Event03 + TCG_PCR_EVENT2 records
)

// AlgSize is one entry of the Spec ID event's digest size table.
type AlgSize struct {
	Alg  Alg
	Size int
}

// SpecID is the content of the "Spec ID Event03" header event.
type SpecID struct {
	PlatformClass uint32
	VersionMinor  uint8
	VersionMajor  uint8
	Errata        uint8
	UintnSize     uint8
	Algs          []AlgSize
	VendorInfo    []byte
}

// Digest is one bank's digest of an event.
type Digest struct {
	Alg   Alg
	Value []byte
}

// Event is one measurement record. Data is a sub-slice of the parsed input.
type Event struct {
	// Seq is the 0-based position of the event in the log, header included.
	Seq int
	// Offset is the byte offset of the record in the log.
	Offset  int
	PCR     uint32
	Type    EventType
	Digests []Digest
	Data    []byte
}

// Digest returns the event's digest for alg.
func (e *Event) Digest(alg Alg) ([]byte, bool) {
	for _, d := range e.Digests {
		if d.Alg == alg {
			return d.Value, true
		}
	}
	return nil, false
}

// Log is a parsed firmware event log.
type Log struct {
	Format Format
	// SpecID is nil for FormatSHA1.
	SpecID *SpecID
	// Events are all records after the header (for FormatSHA1: all records).
	Events []Event
}

// Banks lists the banks the log carries digests for, in header order.
func (l *Log) Banks() []Alg {
	if l.SpecID == nil {
		return []Alg{SHA1}
	}
	out := make([]Alg, 0, len(l.SpecID.Algs))
	for _, a := range l.SpecID.Algs {
		out = append(out, a.Alg)
	}
	return out
}

// HasBank reports whether the log carries digests for alg.
func (l *Log) HasBank(alg Alg) bool {
	for _, a := range l.Banks() {
		if a == alg {
			return true
		}
	}
	return false
}

var specIDSignature = []byte("Spec ID Event03\x00")

type reader struct {
	b   []byte
	off int
}

func (r *reader) remaining() int { return len(r.b) - r.off }

func (r *reader) u32() (uint32, error) {
	if r.remaining() < 4 {
		return 0, fmt.Errorf("%w: truncated at offset %d", ErrMalformed, r.off)
	}
	v := binary.LittleEndian.Uint32(r.b[r.off:])
	r.off += 4
	return v, nil
}

func (r *reader) u16() (uint16, error) {
	if r.remaining() < 2 {
		return 0, fmt.Errorf("%w: truncated at offset %d", ErrMalformed, r.off)
	}
	v := binary.LittleEndian.Uint16(r.b[r.off:])
	r.off += 2
	return v, nil
}

func (r *reader) bytes(n int) ([]byte, error) {
	if n < 0 || r.remaining() < n {
		return nil, fmt.Errorf("%w: %d bytes needed at offset %d, %d left", ErrMalformed, n, r.off, r.remaining())
	}
	v := r.b[r.off : r.off+n : r.off+n]
	r.off += n
	return v, nil
}

// Parse parses a firmware event log in either the crypto-agile or the legacy
// SHA-1 format. It checks structure only; see [CheckEvents] for content
// rules and [Log.Replay] for PCR values.
func Parse(b []byte) (*Log, error) {
	if len(b) > MaxLogSize {
		return nil, fmt.Errorf("parse event log: %w: %d bytes (max %d)", ErrTooLarge, len(b), MaxLogSize)
	}
	if len(b) == 0 {
		return nil, fmt.Errorf("parse event log: %w: empty", ErrMalformed)
	}
	r := &reader{b: b}
	first, err := readTCGPCREvent(r, 0)
	if err != nil {
		return nil, fmt.Errorf("parse event log: %w", err)
	}
	if first.PCR == 0 && first.Type == EvNoAction && bytes.HasPrefix(first.Data, specIDSignature) {
		spec, err := parseSpecID(first.Data)
		if err != nil {
			return nil, fmt.Errorf("parse event log: %w", err)
		}
		l := &Log{Format: FormatCryptoAgile, SpecID: spec}
		for seq := 1; r.remaining() > 0; seq++ {
			if len(l.Events) >= MaxEvents {
				return nil, fmt.Errorf("parse event log: %w: more than %d events", ErrTooLarge, MaxEvents)
			}
			ev, err := readTCGPCREvent2(r, seq, spec)
			if err != nil {
				return nil, fmt.Errorf("parse event log: event %d: %w", seq, err)
			}
			l.Events = append(l.Events, ev)
		}
		return l, nil
	}
	l := &Log{Format: FormatSHA1, Events: []Event{first}}
	for seq := 1; r.remaining() > 0; seq++ {
		if len(l.Events) >= MaxEvents {
			return nil, fmt.Errorf("parse event log: %w: more than %d events", ErrTooLarge, MaxEvents)
		}
		ev, err := readTCGPCREvent(r, seq)
		if err != nil {
			return nil, fmt.Errorf("parse event log: event %d: %w", seq, err)
		}
		l.Events = append(l.Events, ev)
	}
	return l, nil
}

func readPCRIndex(r *reader) (uint32, error) {
	pcr, err := r.u32()
	if err != nil {
		return 0, err
	}
	if pcr >= NumPCRs {
		return 0, fmt.Errorf("%w: PCR index %d out of range", ErrMalformed, pcr)
	}
	return pcr, nil
}

// readTCGPCREvent reads a legacy TCG_PCR_EVENT: pcr, type, SHA-1 digest, data.
func readTCGPCREvent(r *reader, seq int) (Event, error) {
	ev := Event{Seq: seq, Offset: r.off}
	var err error
	if ev.PCR, err = readPCRIndex(r); err != nil {
		return ev, err
	}
	t, err := r.u32()
	if err != nil {
		return ev, err
	}
	ev.Type = EventType(t)
	d, err := r.bytes(20)
	if err != nil {
		return ev, err
	}
	ev.Digests = []Digest{{Alg: SHA1, Value: d}}
	n, err := r.u32()
	if err != nil {
		return ev, err
	}
	if ev.Data, err = r.bytes(int(n)); err != nil {
		return ev, err
	}
	return ev, nil
}

func readTCGPCREvent2(r *reader, seq int, spec *SpecID) (Event, error) {
	ev := Event{Seq: seq, Offset: r.off}
	var err error
	if ev.PCR, err = readPCRIndex(r); err != nil {
		return ev, err
	}
	t, err := r.u32()
	if err != nil {
		return ev, err
	}
	ev.Type = EventType(t)
	count, err := r.u32()
	if err != nil {
		return ev, err
	}
	if int(count) != len(spec.Algs) {
		return ev, fmt.Errorf("%w: %d digests, header declares %d banks", ErrMalformed, count, len(spec.Algs))
	}
	ev.Digests = make([]Digest, 0, count)
	for i := 0; i < int(count); i++ {
		a, err := r.u16()
		if err != nil {
			return ev, err
		}
		size := 0
		for _, as := range spec.Algs {
			if as.Alg == Alg(a) {
				size = as.Size
			}
		}
		if size == 0 {
			return ev, fmt.Errorf("%w: digest algorithm 0x%04x not declared in header", ErrMalformed, a)
		}
		if _, dup := ev.Digest(Alg(a)); dup {
			return ev, fmt.Errorf("%w: duplicate %s digest", ErrMalformed, Alg(a))
		}
		v, err := r.bytes(size)
		if err != nil {
			return ev, err
		}
		ev.Digests = append(ev.Digests, Digest{Alg: Alg(a), Value: v})
	}
	n, err := r.u32()
	if err != nil {
		return ev, err
	}
	if ev.Data, err = r.bytes(int(n)); err != nil {
		return ev, err
	}
	return ev, nil
}

func parseSpecID(data []byte) (*SpecID, error) {
	r := &reader{b: data, off: len(specIDSignature)}
	var s SpecID
	var err error
	if s.PlatformClass, err = r.u32(); err != nil {
		return nil, err
	}
	hdr, err := r.bytes(4)
	if err != nil {
		return nil, err
	}
	s.VersionMinor, s.VersionMajor, s.Errata, s.UintnSize = hdr[0], hdr[1], hdr[2], hdr[3]
	n, err := r.u32()
	if err != nil {
		return nil, err
	}
	if n == 0 || n > maxAlgs {
		return nil, fmt.Errorf("%w: spec id event declares %d algorithms", ErrMalformed, n)
	}
	for i := 0; i < int(n); i++ {
		a, err := r.u16()
		if err != nil {
			return nil, err
		}
		sz, err := r.u16()
		if err != nil {
			return nil, err
		}
		alg := Alg(a)
		if want := alg.Size(); want != 0 && want != int(sz) {
			return nil, fmt.Errorf("%w: spec id event: %s digest size %d, want %d", ErrMalformed, alg, sz, want)
		}
		if sz == 0 || sz > 64 {
			return nil, fmt.Errorf("%w: spec id event: digest size %d for 0x%04x", ErrMalformed, sz, a)
		}
		for _, prev := range s.Algs {
			if prev.Alg == alg {
				return nil, fmt.Errorf("%w: spec id event: %s declared twice", ErrMalformed, alg)
			}
		}
		s.Algs = append(s.Algs, AlgSize{Alg: alg, Size: int(sz)})
	}
	vlen, err := r.bytes(1)
	if err != nil {
		return nil, err
	}
	if s.VendorInfo, err = r.bytes(int(vlen[0])); err != nil {
		return nil, err
	}
	if r.remaining() != 0 {
		return nil, fmt.Errorf("%w: spec id event: %d trailing bytes", ErrMalformed, r.remaining())
	}
	return &s, nil
}

// StartupLocality returns the locality from a StartupLocality EV_NO_ACTION
// event in PCR 0, or 0 when there is none.
func (l *Log) StartupLocality() byte {
	for i := range l.Events {
		e := &l.Events[i]
		if e.PCR == 0 && e.Type == EvNoAction && len(e.Data) == 17 && bytes.HasPrefix(e.Data, []byte("StartupLocality\x00")) {
			return e.Data[16]
		}
	}
	return 0
}

// Replay recomputes the PCR values of bank alg from the log. The result has
// an entry for every PCR that at least one extending event names. PCR 0
// starts from the StartupLocality value when the log carries that event.
func (l *Log) Replay(alg Alg) (map[uint32][]byte, error) {
	if !l.HasBank(alg) {
		return nil, fmt.Errorf("replay %s: %w: bank not in log", alg, ErrMalformed)
	}
	if _, ok := alg.Hash(); !ok {
		return nil, fmt.Errorf("replay %s: unsupported hash algorithm", alg)
	}
	loc := l.StartupLocality()
	out := make(map[uint32][]byte)
	for i := range l.Events {
		e := &l.Events[i]
		if e.Type == EvNoAction {
			continue
		}
		d, ok := e.Digest(alg)
		if !ok {
			return nil, fmt.Errorf("replay %s: event %d: %w: no digest", alg, e.Seq, ErrMalformed)
		}
		cur, ok := out[e.PCR]
		if !ok {
			cur = make([]byte, alg.Size())
			if e.PCR == 0 {
				cur[len(cur)-1] = loc
			}
		}
		out[e.PCR] = alg.Sum(cur, d)
	}
	return out, nil
}
