package eventlogtest

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"slices"
	"testing"

	"github.com/trustpool/trustpool/internal/bootseed"
	"github.com/trustpool/trustpool/internal/eventlog"
)

// Rec is one event record to encode.
type Rec struct {
	PCR     uint32
	Type    eventlog.EventType
	Digests []eventlog.Digest
	Data    []byte
}

// Recs returns the records of a parsed log (header excluded).
func Recs(l *eventlog.Log) []Rec {
	out := make([]Rec, 0, len(l.Events))
	for _, e := range l.Events {
		out = append(out, Rec{PCR: e.PCR, Type: e.Type, Digests: slices.Clone(e.Digests), Data: bytes.Clone(e.Data)})
	}
	return out
}

// Measure returns a record whose digest in every bank is H(measured).
// Banks this module cannot hash (SM3) get SHA-256(measured) instead: a
// stand-in that only the structure of the log depends on.
func Measure(banks []eventlog.AlgSize, pcr uint32, typ eventlog.EventType, measured, data []byte) Rec {
	r := Rec{PCR: pcr, Type: typ, Data: data}
	for _, b := range banks {
		var d []byte
		if _, ok := b.Alg.Hash(); ok {
			d = b.Alg.Sum(measured)
		} else {
			s := sha256.Sum256(measured)
			d = s[:]
		}
		r.Digests = append(r.Digests, eventlog.Digest{Alg: b.Alg, Value: d})
	}
	return r
}

// NoAction returns an EV_NO_ACTION record (all-zero digests).
func NoAction(banks []eventlog.AlgSize, pcr uint32, data []byte) Rec {
	r := Rec{PCR: pcr, Type: eventlog.EvNoAction, Data: data}
	for _, b := range banks {
		r.Digests = append(r.Digests, eventlog.Digest{Alg: b.Alg, Value: make([]byte, b.Size)})
	}
	return r
}

// StartupLocality is the data of a StartupLocality EV_NO_ACTION event.
func StartupLocality(loc byte) []byte { return append([]byte("StartupLocality\x00"), loc) }

func le32(b *bytes.Buffer, v uint32) { binary.Write(b, binary.LittleEndian, v) } //nolint:errcheck // bytes.Buffer
func le16(b *bytes.Buffer, v uint16) { binary.Write(b, binary.LittleEndian, v) } //nolint:errcheck // bytes.Buffer

// EncodeCryptoAgile encodes a TCG crypto-agile log: the Spec ID Event03
// header declaring banks (and vendorInfo), then one TCG_PCR_EVENT2 per
// record with its digests in the order given.
func EncodeCryptoAgile(banks []eventlog.AlgSize, vendorInfo []byte, recs []Rec) []byte {
	var spec bytes.Buffer
	spec.WriteString("Spec ID Event03\x00")
	le32(&spec, 0)                 // platformClass: client
	spec.Write([]byte{0, 2, 0, 2}) // version 2.0, errata 0, uintnSize 2
	le32(&spec, uint32(len(banks)))
	for _, b := range banks {
		le16(&spec, uint16(b.Alg))
		le16(&spec, uint16(b.Size))
	}
	spec.WriteByte(byte(len(vendorInfo)))
	spec.Write(vendorInfo)
	var out bytes.Buffer
	le32(&out, 0)
	le32(&out, uint32(eventlog.EvNoAction))
	out.Write(make([]byte, 20))
	le32(&out, uint32(spec.Len()))
	out.Write(spec.Bytes())
	for _, r := range recs {
		le32(&out, r.PCR)
		le32(&out, uint32(r.Type))
		le32(&out, uint32(len(r.Digests)))
		for _, d := range r.Digests {
			le16(&out, uint16(d.Alg))
			out.Write(d.Value)
		}
		le32(&out, uint32(len(r.Data)))
		out.Write(r.Data)
	}
	return out.Bytes()
}

// EncodeSHA1 encodes a legacy SHA-1 log (TCG_PCR_EVENT records, no header)
// from the records' SHA-1 digests.
func EncodeSHA1(recs []Rec) []byte {
	var out bytes.Buffer
	for _, r := range recs {
		le32(&out, r.PCR)
		le32(&out, uint32(r.Type))
		d := make([]byte, 20)
		for _, dd := range r.Digests {
			if dd.Alg == eventlog.SHA1 {
				d = dd.Value
			}
		}
		out.Write(d)
		le32(&out, uint32(len(r.Data)))
		out.Write(r.Data)
	}
	return out.Bytes()
}

// Case is one generated log and what the event rules make of it.
type Case struct {
	Name string
	Log  []byte
	// Want is the error eventlog.Parse followed by eventlog.CheckEvents in
	// every bank it can hash must return (errors.Is); nil: accepted.
	Want error
	// Boot marks a complete, accepted boot with a SHA-256 bank: a quote of
	// its replayed PCRs verifies.
	Boot bool
	// TPM2Eventlog marks logs tpm2_eventlog(1) reads and prints PCRs for.
	TPM2Eventlog bool
	// Why describes the edge case.
	Why string
}

// Banks returns AlgSize entries for algs.
func Banks(algs ...eventlog.Alg) []eventlog.AlgSize {
	out := make([]eventlog.AlgSize, 0, len(algs))
	for _, a := range algs {
		out = append(out, eventlog.AlgSize{Alg: a, Size: a.Size()})
	}
	return out
}

// baseRecs returns the records of bootseed's BuildA in banks (hashable
// ones only).
func baseRecs(t testing.TB, algs ...eventlog.Alg) []Rec {
	t.Helper()
	log, _, err := bootseed.BuildLog(bootseed.BuildA(), algs)
	if err != nil {
		t.Fatal(err)
	}
	l, err := eventlog.Parse(log)
	if err != nil {
		t.Fatal(err)
	}
	return Recs(l)
}

func isEBS(r Rec) bool {
	return r.Type == eventlog.EvEFIAction && bytes.HasPrefix(r.Data, []byte("Exit Boot Services"))
}

// withSM3 keeps the SHA-256 digest of every record and adds an SM3-256
// one. SM3 is not computable here, so the SM3 digests are stand-ins
// (SHA-256 of the SHA-256 digest); nothing may replay or check that bank.
func withSM3(recs []Rec) []Rec {
	out := make([]Rec, 0, len(recs))
	for _, r := range recs {
		var sha []byte
		for _, d := range r.Digests {
			if d.Alg == eventlog.SHA256 {
				sha = d.Value
			}
		}
		sm3 := sha256.Sum256(append([]byte("sm3 stand-in:"), sha...))
		r.Digests = []eventlog.Digest{{Alg: eventlog.SHA256, Value: sha}, {Alg: eventlog.SM3256, Value: sm3[:]}}
		out = append(out, r)
	}
	return out
}

// Generated returns logs generated from bootseed's BuildA and re-encoded
// with edge cases seen in real firmware logs. Cases with Want == nil are
// valid logs.
func Generated(t testing.TB) []Case {
	t.Helper()
	two := Banks(eventlog.SHA1, eventlog.SHA256)
	base := baseRecs(t, eventlog.SHA1, eventlog.SHA256)
	var cases []Case
	add := func(c Case) { cases = append(cases, c) }

	add(Case{Name: "base-sha1-sha256", Log: EncodeCryptoAgile(two, nil, base), Boot: true, TPM2Eventlog: true,
		Why: "bootseed build-a re-encoded (checks the encoder)"})

	legacy := EncodeSHA1(base)
	add(Case{Name: "legacy-sha1", Log: legacy, TPM2Eventlog: true,
		Why: "legacy SHA-1 format (TCG_PCR_EVENT records, no Spec ID header), as old BIOS and some UEFI firmware write"})

	noEBS := slices.DeleteFunc(slices.Clone(base), isEBS)
	add(Case{Name: "no-exit-boot-services", Log: EncodeCryptoAgile(two, nil, noEBS), Boot: true, TPM2Eventlog: true,
		Why: "no ExitBootServices EV_EFI_ACTION events (firmware that does not log them, or a log read before ExitBootServices)"})
	add(Case{Name: "legacy-sha1-no-exit-boot-services", Log: EncodeSHA1(noEBS), TPM2Eventlog: true,
		Why: "legacy SHA-1 format without the ExitBootServices events"})

	trailing := append(EncodeCryptoAgile(two, nil, base), 0xff, 0xff, 0xff, 0xff, 0x07, 0, 0, 0, 1, 2, 3)
	add(Case{Name: "trailing-bytes", Log: trailing, Want: eventlog.ErrMalformed,
		Why: "bytes after the last event starting with PCR index 0xFFFFFFFF, as in a Windows log with option ROMs; tpm2_eventlog fails on it"})

	add(Case{Name: "startup-locality-only", Log: EncodeSHA1([]Rec{NoAction(Banks(eventlog.SHA1), 0, StartupLocality(3))}),
		Why: "a single short EV_NO_ACTION record (StartupLocality) that is not a Spec ID header: legacy format, nothing extended; tpm2_eventlog refuses it"})

	noSep := slices.DeleteFunc(slices.Clone(base), func(r Rec) bool { return r.Type == eventlog.EvSeparator && r.PCR != 7 })
	add(Case{Name: "only-pcr7-separator", Log: EncodeCryptoAgile(two, nil, noSep), Want: eventlog.ErrSeparator, TPM2Eventlog: true,
		Why: "PCRs 0-6 extended but only PCR 7 has a separator, as in a Secure Boot certificate fixture"})

	hcrtm := append([]Rec{
		NoAction(two, 0, StartupLocality(4)),
		Measure(two, 0, eventlog.EvEFIHCRTMEvent, []byte("H-CRTM measured code"), []byte("HCRTM")),
	}, base...)
	add(Case{Name: "hcrtm-locality-4", Log: EncodeCryptoAgile(two, nil, hcrtm), Boot: true, TPM2Eventlog: true,
		Why: "H-CRTM: StartupLocality 4 (PCR 0 starts at 00..04) and an EV_EFI_HCRTM_EVENT, unknown to tpm2-tools 5.4"})

	loc3 := append([]Rec{NoAction(two, 0, StartupLocality(3))}, base...)
	add(Case{Name: "locality-3", Log: EncodeCryptoAgile(two, nil, loc3), Boot: true, TPM2Eventlog: true,
		Why: "StartupLocality 3 (PCR 0 starts at 00..03)"})

	vendor := []byte{0xde, 0xad, 0xbe, 0xef}
	add(Case{Name: "specid-vendor-info", Log: EncodeCryptoAgile(two, vendor, base), Boot: true, TPM2Eventlog: true,
		Why: "vendorInfo bytes at the end of the Spec ID Event03"})
	add(Case{Name: "header-only", Log: EncodeCryptoAgile(two, vendor, nil),
		Why: "a Spec ID header with vendor info and no event; tpm2_eventlog prints no PCRs"})

	// Firmware events bootseed does not write, in the PCRs PC Client
	// firmware uses for them.
	var zoo []Rec
	for _, r := range base {
		zoo = append(zoo, r)
		if r.Type == eventlog.EvSCRTMVersion {
			zoo = append(zoo,
				Measure(two, 0, eventlog.EvSCRTMContents, []byte("S-CRTM contents"), []byte("S-CRTM blob descriptor\x00")),
				Measure(two, 0, eventlog.EvPostCode, []byte("POST code"), []byte("ACPI DATA")),
				Measure(two, 0, eventlog.EvNonhostInfo, []byte("nonhost"), []byte("GCE NonHostInfo\x00\x01\x00\x00\x00")),
				Measure(two, 1, eventlog.EvCPUMicrocode, []byte("microcode update"), []byte("microcode descriptor")),
				Measure(two, 1, eventlog.EvPlatformConfigFlags, []byte("config flags"), []byte{1, 0, 0, 0}),
				Measure(two, 1, eventlog.EvEFIHandoffTables, []byte("SMBIOS tables"), make([]byte, 24)),
				Measure(two, 2, eventlog.EvEFIBootServicesDriver, []byte("option ROM driver"), make([]byte, 32)),
				Measure(two, 2, eventlog.EvEFIPlatformFirmware2, []byte("firmware volume 2"), append([]byte{4}, "FV2\x00"...)),
				Measure(two, 6, eventlog.EvCompactHash, []byte("compact hash"), []byte{0, 0, 0, 0}),
				Measure(two, 3, eventlog.EvEventTag, []byte("tagged event"), []byte{1, 0, 0, 0, 4, 0, 0, 0, 't', 'a', 'g', 0}),
			)
		}
		if r.Type == eventlog.EvEFIVariableBoot && r.PCR == 1 {
			// EDK2 measures Boot#### as the hash of VariableData only.
			v, err := eventlog.ParseVariableData(r.Data)
			if err != nil {
				t.Fatal(err)
			}
			zoo = append(zoo, Measure(two, 1, eventlog.EvEFIVariableBoot, v.Data, r.Data))
		}
	}
	zooIdx := slices.IndexFunc(zoo, func(r Rec) bool { return r.Type == eventlog.EvEFIBootServicesApp })
	zoo = slices.Insert(zoo, zooIdx, NoAction(two, 0, append([]byte("SP800-155 Event3"), make([]byte, 20)...)))
	add(Case{Name: "firmware-event-zoo", Log: EncodeCryptoAgile(two, nil, zoo), Boot: true, TPM2Eventlog: true,
		Why: "EV_S_CRTM_CONTENTS, EV_POST_CODE, EV_NONHOST_INFO, EV_CPU_MICROCODE, EV_PLATFORM_CONFIG_FLAGS, EV_EFI_HANDOFF_TABLES, " +
			"EV_EFI_BOOT_SERVICES_DRIVER, EV_EFI_PLATFORM_FIRMWARE_BLOB2, EV_COMPACT_HASH, EV_EVENT_TAG, an EDK2-style Boot#### digest " +
			"and an SP800-155 EV_NO_ACTION in the middle of the log"})

	sm3 := withSM3(baseRecs(t, eventlog.SHA256))
	add(Case{Name: "sm3-bank", Log: EncodeCryptoAgile(Banks(eventlog.SHA256, eventlog.SM3256), nil, sm3), Boot: true, TPM2Eventlog: true,
		Why: "an SM3-256 bank next to SHA-256: parsed, not replayable here (stand-in digests), SHA-256 still usable"})

	four := baseRecs(t, eventlog.SHA1, eventlog.SHA256, eventlog.SHA384, eventlog.SHA512)
	add(Case{Name: "four-banks", Log: EncodeCryptoAgile(Banks(eventlog.SHA1, eventlog.SHA256, eventlog.SHA384, eventlog.SHA512), nil, four),
		Boot: true, TPM2Eventlog: true, Why: "SHA-1, SHA-256, SHA-384 and SHA-512 banks"})
	return cases
}
