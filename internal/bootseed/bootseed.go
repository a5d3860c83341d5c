// Package bootseed "boots" a software TPM for tests and demos: it writes a
// realistic TCG crypto-agile firmware event log (CRTM version, firmware
// blobs, Secure Boot variables, boot variables, separators, GPT, shim and
// GRUB as boot applications, GRUB's PCR 8 command strings and PCR 9 files
// for kernel and initrd, ExitBootServices) and extends the TPM's PCRs to
// match in every active bank it can hash. It can also append IMA entries
// (ima-ng / ima-sig) and extend PCR 10 accordingly.
//
// [Events] exposes a boot as an event list and [EncodeLog] / [SeedEvents]
// turn an edited list into a log and matching PCRs, so attack tests can
// build the boots a compromised host would produce (edited GRUB
// configurations, retyped or renamed events, extends after boot).
//
// swtpm and the go-tpm-tools simulator start with PCRs 0-9 empty and no
// log, which a strict verifier rejects; seeding gives them a boot the
// verifier can replay. The verifier's checks stay exactly as strict for
// seeded TPMs. Never used by the agent: this package extends PCRs, which
// on a real host would be an attack.
//
// [Main] is the tpm-boot-seed command (tests/cmd/tpm-boot-seed), which the
// demo and the DevStack plugin run to give a swtpm a simulated measured
// boot. It reaches the TPM only through a swtpm's socket or a device that
// sysfs shows as virtual (the kernel's vtpm proxy), never a hardware TPM,
// and it never extends a TPM that has booted already.
package bootseed

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"maps"
	"slices"
	"unicode/utf16"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"

	"github.com/trustpool/trustpool/internal/eventlog"
)

// Variant describes one host build.
type Variant struct {
	Name        string
	CRTMVersion string
	// Firmware are the platform firmware volumes (their digests go to PCR 0).
	Firmware   [][]byte
	SecureBoot bool
	// PK, KEK, DB, DBX are the Secure Boot variable contents.
	PK, KEK, DB, DBX []byte
	Shim, Grub       []byte
	Kernel, Initrd   []byte
	KernelPath       string
	InitrdPath       string
	// Cmdline is the kernel command line after the kernel path.
	Cmdline string
}

func blob(s string, n int) []byte { return bytes.Repeat([]byte(s), n) }

// BuildA is the reference build: Secure Boot on, kernel 6.1.0-13.
func BuildA() Variant {
	return Variant{
		Name:        "build-a",
		CRTMVersion: "Trustpool Virtual Firmware v1.0",
		Firmware:    [][]byte{blob("PEI volume 1.0|", 64), blob("DXE volume 1.0|", 128)},
		SecureBoot:  true,
		PK:          blob("platform key|", 40),
		KEK:         blob("key exchange key|", 60),
		DB:          blob("db: Debian Secure Boot CA|", 50),
		DBX:         blob("dbx: revoked hashes|", 30),
		Shim:        blob("shimx64.efi 15.7|", 500),
		Grub:        blob("grubx64.efi 2.06|", 900),
		Kernel:      blob("vmlinuz-6.1.0-13-amd64|", 2000),
		Initrd:      blob("initrd.img-6.1.0-13-amd64|", 3000),
		KernelPath:  "/boot/vmlinuz-6.1.0-13-amd64",
		InitrdPath:  "/boot/initrd.img-6.1.0-13-amd64",
		Cmdline:     "root=UUID=0b6f7a4e-4c1a-4f6b-9a55-8f1d2e3c4b5a ro quiet ima_hash=sha256",
	}
}

// BuildB is a second trusted build (new kernel), as during a rollout.
func BuildB() Variant {
	v := BuildA()
	v.Name = "build-b"
	v.Kernel = blob("vmlinuz-6.1.0-17-amd64|", 2000)
	v.Initrd = blob("initrd.img-6.1.0-17-amd64|", 3000)
	v.KernelPath = "/boot/vmlinuz-6.1.0-17-amd64"
	v.InitrdPath = "/boot/initrd.img-6.1.0-17-amd64"
	return v
}

// SecureBootOff is BuildA with Secure Boot disabled.
func SecureBootOff() Variant {
	v := BuildA()
	v.Name = "secureboot-off"
	v.SecureBoot = false
	return v
}

// Drifted is BuildA booted with an edited command line.
func Drifted() Variant {
	v := BuildA()
	v.Name = "drifted"
	v.Cmdline += " init=/bin/sh"
	return v
}

// Variants returns the named variants.
func Variants() map[string]Variant {
	return map[string]Variant{"build-a": BuildA(), "build-b": BuildB(), "secureboot-off": SecureBootOff(), "drifted": Drifted()}
}

// Extend is one PCR extension (one digest per bank).
type Extend struct {
	PCR     int
	Digests map[eventlog.Alg][]byte
}

// Event is one firmware event log record: Measured is what the firmware
// hashed (its digest goes into every bank), Data is the event data the log
// carries. For most types Data describes Measured without being covered by
// its digest, which is what lets tests edit a log without changing the PCRs.
type Event struct {
	PCR      int
	Type     eventlog.EventType
	Measured []byte
	Data     []byte
}

func le32(b *bytes.Buffer, v uint32) { binary.Write(b, binary.LittleEndian, v) } //nolint:errcheck // bytes.Buffer
func le16(b *bytes.Buffer, v uint16) { binary.Write(b, binary.LittleEndian, v) } //nolint:errcheck // bytes.Buffer
func le64(b *bytes.Buffer, v uint64) { binary.Write(b, binary.LittleEndian, v) } //nolint:errcheck // bytes.Buffer

func header(log *bytes.Buffer, algs []eventlog.Alg) {
	var spec bytes.Buffer
	spec.WriteString("Spec ID Event03\x00")
	le32(&spec, 0)                 // platformClass: client
	spec.Write([]byte{0, 2, 0, 2}) // version 2.0, errata 0, uintnSize 2 (64-bit)
	le32(&spec, uint32(len(algs)))
	for _, a := range algs {
		le16(&spec, uint16(a))
		le16(&spec, uint16(a.Size()))
	}
	spec.WriteByte(0)
	le32(log, 0)
	le32(log, uint32(eventlog.EvNoAction))
	log.Write(make([]byte, 20))
	le32(log, uint32(spec.Len()))
	log.Write(spec.Bytes())
}

// EncodeLog writes events as a TCG crypto-agile log with digests in banks
// algs (SHA-1, SHA-256, SHA-384, SHA-512 only), and returns the PCR
// extensions a firmware writing it would have made (none for EV_NO_ACTION,
// whose digests are zero).
func EncodeLog(events []Event, algs []eventlog.Alg) ([]byte, []Extend, error) {
	if len(algs) == 0 {
		return nil, nil, fmt.Errorf("encode event log: no banks")
	}
	for _, a := range algs {
		if _, ok := a.Hash(); !ok {
			return nil, nil, fmt.Errorf("encode event log: cannot hash bank %s", a)
		}
	}
	var log bytes.Buffer
	header(&log, algs)
	var exts []Extend
	for _, e := range events {
		ds := make(map[eventlog.Alg][]byte, len(algs))
		le32(&log, uint32(e.PCR))
		le32(&log, uint32(e.Type))
		le32(&log, uint32(len(algs)))
		for _, a := range algs {
			d := a.Sum(e.Measured)
			if e.Type == eventlog.EvNoAction {
				d = make([]byte, a.Size())
			}
			ds[a] = d
			le16(&log, uint16(a))
			log.Write(d)
		}
		le32(&log, uint32(len(e.Data)))
		log.Write(e.Data)
		if e.Type != eventlog.EvNoAction {
			exts = append(exts, Extend{PCR: e.PCR, Digests: ds})
		}
	}
	return log.Bytes(), exts, nil
}

func ucs2(s string) []byte {
	var b bytes.Buffer
	for _, r := range utf16.Encode([]rune(s)) {
		le16(&b, r)
	}
	return b.Bytes()
}

// GUIDs of the UEFI global variables (SecureBoot, PK, KEK, Boot####) and
// of the image security database (db, dbx).
var (
	EFIGlobalVariable        = []byte{0x61, 0xdf, 0xe4, 0x8b, 0xca, 0x93, 0xd2, 0x11, 0xaa, 0x0d, 0x00, 0xe0, 0x98, 0x03, 0x2b, 0x8c}
	EFIImageSecurityDatabase = []byte{0xcb, 0xb2, 0x19, 0xd7, 0x3a, 0x3d, 0x96, 0x45, 0xa3, 0xbc, 0xda, 0xd0, 0x0e, 0x67, 0x65, 0x6f}
)

// VariableData is a UEFI_VARIABLE_DATA structure.
func VariableData(guid []byte, name string, data []byte) []byte {
	var b bytes.Buffer
	b.Write(guid)
	le64(&b, uint64(len([]rune(name))))
	le64(&b, uint64(len(data)))
	b.Write(ucs2(name))
	b.Write(data)
	return b.Bytes()
}

// ImageLoadEvent is a UEFI_IMAGE_LOAD_EVENT for a file path.
func ImageLoadEvent(path string) []byte {
	var dp bytes.Buffer
	p := append(ucs2(path), 0, 0)
	dp.Write([]byte{0x04, 0x04})
	le16(&dp, uint16(4+len(p)))
	dp.Write(p)
	dp.Write([]byte{0x7f, 0xff, 0x04, 0x00})
	var b bytes.Buffer
	le64(&b, 0x7e000000) // ImageLocationInMemory
	le64(&b, 0x100000)   // ImageLengthInMemory
	le64(&b, 0)          // ImageLinkTimeAddress
	le64(&b, uint64(dp.Len()))
	b.Write(dp.Bytes())
	return b.Bytes()
}

// BuildLog returns the event log of v with digests in banks algs (SHA-1,
// SHA-256, SHA-384, SHA-512 only), and the PCR extensions it records.
func BuildLog(v Variant, algs []eventlog.Alg) ([]byte, []Extend, error) {
	return EncodeLog(Events(v), algs)
}

// Events returns the firmware events of a boot of v, in log order: what a
// UEFI firmware, shim and GRUB 2 measure up to ExitBootServices.
func Events(v Variant) []Event {
	var evs []Event
	ev := func(pcr int, typ eventlog.EventType, measured, data []byte) {
		evs = append(evs, Event{PCR: pcr, Type: typ, Measured: measured, Data: data})
	}
	crtm := append(ucs2(v.CRTMVersion), 0, 0)
	ev(0, eventlog.EvSCRTMVersion, crtm, crtm)
	for i, fw := range v.Firmware {
		ev(0, eventlog.EvEFIPlatformFirmware, fw, FirmwareBlobData(i, fw))
	}
	sb := byte(0)
	if v.SecureBoot {
		sb = 1
	}
	for _, vv := range []struct {
		guid []byte
		name string
		data []byte
	}{{EFIGlobalVariable, "SecureBoot", []byte{sb}}, {EFIGlobalVariable, "PK", v.PK}, {EFIGlobalVariable, "KEK", v.KEK}, {EFIImageSecurityDatabase, "db", v.DB}, {EFIImageSecurityDatabase, "dbx", v.DBX}} {
		d := VariableData(vv.guid, vv.name, vv.data)
		ev(7, eventlog.EvEFIVariableDriverConf, d, d)
	}
	sep := []byte{0, 0, 0, 0}
	ev(7, eventlog.EvSeparator, sep, sep)
	bootOrder := VariableData(EFIGlobalVariable, "BootOrder", []byte{1, 0})
	ev(1, eventlog.EvEFIVariableBoot, bootOrder, bootOrder)
	boot0001 := VariableData(EFIGlobalVariable, "Boot0001", append([]byte{1, 0, 0, 0, 0x2c, 0}, ucs2("debian\x00")...))
	ev(1, eventlog.EvEFIVariableBoot, boot0001, boot0001)
	act := []byte("Calling EFI Application from Boot Option")
	ev(4, eventlog.EvEFIAction, act, act)
	for pcr := 0; pcr <= 6; pcr++ {
		ev(pcr, eventlog.EvSeparator, sep, sep)
	}
	gpt := gptData()
	ev(5, eventlog.EvEFIGPTEvent, gpt, gpt)
	ev(4, eventlog.EvEFIBootServicesApp, v.Shim, ImageLoadEvent(`\EFI\debian\shimx64.efi`))
	if v.SecureBoot {
		auth := VariableData(EFIImageSecurityDatabase, "db", v.DB)
		ev(7, eventlog.EvEFIVariableAuthority, auth, auth)
	}
	ev(4, eventlog.EvEFIBootServicesApp, v.Grub, ImageLoadEvent(`\EFI\debian\grubx64.efi`))
	ev(9, eventlog.EvIPL, []byte("grub.cfg contents"), []byte("(hd0,gpt2)/boot/grub/grub.cfg\x00"))
	evs = append(evs, GrubCommand("set root=hd0,gpt2"), GrubCommand("linux "+v.KernelPath+" "+v.Cmdline))
	evs = append(evs, GrubFile(v.KernelPath, v.Kernel), GrubString("kernel_cmdline: "+v.KernelPath+" "+v.Cmdline))
	evs = append(evs, GrubCommand("initrd "+v.InitrdPath), GrubFile(v.InitrdPath, v.Initrd))
	evs = append(evs, ExitBootServices()...)
	return evs
}

// FirmwareBlobData is the UEFI_PLATFORM_FIRMWARE_BLOB (base, length) of
// the i-th firmware volume.
func FirmwareBlobData(i int, fw []byte) []byte {
	var d bytes.Buffer
	le64(&d, 0xffc00000+uint64(i)*0x100000)
	le64(&d, uint64(len(fw)))
	return d.Bytes()
}

// GrubString is a PCR 8 string as GRUB measures it ("grub_cmd: ...",
// "kernel_cmdline: ..."): the digest covers the text after the prefix, the
// data is the whole string with its NUL.
func GrubString(s string) Event {
	return Event{PCR: 8, Type: eventlog.EvIPL, Measured: []byte(s[indexAfterPrefix(s):]), Data: append([]byte(s), 0)}
}

// GrubCommand is the PCR 8 event of a GRUB command line.
func GrubCommand(cmd string) Event { return GrubString("grub_cmd: " + cmd) }

// GrubFile is the PCR 9 event of a file GRUB read: the digest covers the
// content, the data (the file name) is not covered by anything.
func GrubFile(name string, content []byte) Event {
	return Event{PCR: 9, Type: eventlog.EvIPL, Measured: content, Data: append([]byte(name), 0)}
}

// ExitBootServices are the two PCR 5 events of ExitBootServices.
func ExitBootServices() []Event {
	ebs := []byte("Exit Boot Services Invocation")
	ok := []byte("Exit Boot Services Returned with Success")
	return []Event{{PCR: 5, Type: eventlog.EvEFIAction, Measured: ebs, Data: ebs}, {PCR: 5, Type: eventlog.EvEFIAction, Measured: ok, Data: ok}}
}

// gptData is a UEFI_GPT_DATA: the GPT header and two partition entries
// (EFI system partition and a Linux root).
func gptData() []byte {
	var b bytes.Buffer
	b.WriteString("EFI PART")
	le32(&b, 0x00010000) // revision
	le32(&b, 92)         // header size
	le32(&b, 0)          // header CRC32 (not checked by anyone reading the log)
	le32(&b, 0)          // reserved
	le64(&b, 1)          // MyLBA
	le64(&b, 20971519)   // AlternateLBA
	le64(&b, 34)         // FirstUsableLBA
	le64(&b, 20971486)   // LastUsableLBA
	b.Write(blob("\x5a", 16))
	le64(&b, 2)   // PartitionEntryLBA
	le32(&b, 128) // NumberOfPartitionEntries
	le32(&b, 128) // SizeOfPartitionEntry
	le32(&b, 0)   // PartitionEntryArrayCRC32
	le64(&b, 2)   // NumberOfPartitions in this event
	part := func(typeGUID []byte, first, last uint64, name string) {
		var e bytes.Buffer
		e.Write(typeGUID)
		e.Write(blob(name[:1], 16))
		le64(&e, first)
		le64(&e, last)
		le64(&e, 0)
		n := ucs2(name)
		e.Write(n)
		e.Write(make([]byte, 72-len(n)))
		b.Write(e.Bytes())
	}
	esp := []byte{0x28, 0x73, 0x2a, 0xc1, 0x1f, 0xf8, 0xd2, 0x11, 0xba, 0x4b, 0x00, 0xa0, 0xc9, 0x3e, 0xc9, 0x3b}
	linux := []byte{0xaf, 0x3d, 0xc6, 0x0f, 0x83, 0x84, 0x72, 0x47, 0x8e, 0x79, 0x3d, 0x69, 0xd8, 0x47, 0x7d, 0xe4}
	part(esp, 2048, 1050623, "EFI System")
	part(linux, 1050624, 20969471, "root")
	return b.Bytes()
}

// indexAfterPrefix returns where the measured text of a GRUB string starts.
func indexAfterPrefix(s string) int {
	for _, p := range []string{"grub_cmd: ", "kernel_cmdline: "} {
		if len(s) >= len(p) && s[:len(p)] == p {
			return len(p)
		}
	}
	return 0
}

// ActiveBanks returns the TPM's allocated PCR banks this package can hash.
func ActiveBanks(t transport.TPM) ([]eventlog.Alg, error) {
	rsp, err := tpm2.GetCapability{Capability: tpm2.TPMCapPCRs, PropertyCount: 1}.Execute(t)
	if err != nil {
		return nil, fmt.Errorf("get PCR banks: %w", err)
	}
	sel, err := rsp.CapabilityData.Data.AssignedPCR()
	if err != nil {
		return nil, fmt.Errorf("get PCR banks: %w", err)
	}
	var out []eventlog.Alg
	for _, s := range sel.PCRSelections {
		a := eventlog.Alg(s.Hash)
		if _, ok := a.Hash(); !ok {
			continue
		}
		for _, c := range s.PCRSelect {
			if c != 0 {
				out = append(out, a)
				break
			}
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("get PCR banks: no usable bank")
	}
	return out, nil
}

// Apply extends the TPM with exts.
func Apply(t transport.TPM, exts []Extend) error {
	for _, e := range exts {
		var dv tpm2.TPMLDigestValues
		for _, a := range slices.Sorted(maps.Keys(e.Digests)) {
			dv.Digests = append(dv.Digests, tpm2.TPMTHA{HashAlg: tpm2.TPMIAlgHash(a), Digest: e.Digests[a]})
		}
		_, err := tpm2.PCRExtend{
			PCRHandle: tpm2.AuthHandle{Handle: tpm2.TPMHandle(e.PCR), Auth: tpm2.PasswordAuth(nil)},
			Digests:   dv,
		}.Execute(t)
		if err != nil {
			return fmt.Errorf("extend PCR %d: %w", e.PCR, err)
		}
	}
	return nil
}

// Seed writes v's event log for the TPM's active banks, extends the PCRs
// and returns the log. PCRs 0-9 must be in their reset state (a fresh or
// restarted TPM) for the log to replay.
func Seed(ctx context.Context, t transport.TPM, v Variant) ([]byte, error) {
	return SeedEvents(ctx, t, Events(v))
}

// SeedEvents is [Seed] for an arbitrary event list (tests build edited
// boots from [Events]): it extends the PCRs with every event and returns
// the log, encoded for the TPM's active banks.
func SeedEvents(ctx context.Context, t transport.TPM, events []Event) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	algs, err := ActiveBanks(t)
	if err != nil {
		return nil, err
	}
	log, exts, err := EncodeLog(events, algs)
	if err != nil {
		return nil, err
	}
	if err := Apply(t, exts); err != nil {
		return nil, err
	}
	return log, nil
}

// IMAFile is one file to record in the IMA log.
type IMAFile struct {
	Path    string
	Content []byte
	// Signature makes the entry ima-sig (may be empty for ima-sig without
	// a signature); nil makes it ima-ng.
	Signature []byte
}

// IMALogs are the two binary lists the kernel exposes.
type IMALogs struct {
	// SHA1 is binary_runtime_measurements (SHA-1 template-hash column).
	SHA1 []byte
	// SHA256 is binary_runtime_measurements_sha256.
	SHA256 []byte
}

// AppendIMA extends PCR 10 for files (SHA-1 bank with the SHA-1 template
// hash and SHA-256 bank with the SHA-256 one, as a kernel does) and returns
// the log bytes to append. With bootAggregate, a boot_aggregate entry comes
// first (its digest is SHA-256 over the current SHA-256 PCRs 0-9).
func AppendIMA(t transport.TPM, files []IMAFile, bootAggregate bool) (IMALogs, error) {
	var out IMALogs
	if bootAggregate {
		sel := tpm2.TPMLPCRSelection{PCRSelections: []tpm2.TPMSPCRSelection{{Hash: tpm2.TPMAlgSHA256, PCRSelect: []byte{0xff, 0x03, 0}}}}
		var agg []byte
		for range 2 { // PCR_Read returns at most 8 digests
			rsp, err := tpm2.PCRRead{PCRSelectionIn: sel}.Execute(t)
			if err != nil {
				return out, fmt.Errorf("read PCRs for boot_aggregate: %w", err)
			}
			for _, d := range rsp.PCRValues.Digests {
				agg = append(agg, d.Buffer...)
			}
			sel.PCRSelections[0].PCRSelect = []byte{0, 0x03, 0}
		}
		// Real kernels record SHA-256(PCR 0-9) as boot_aggregate's digest;
		// here the file content is the concatenation, so its SHA-256 is.
		files = append([]IMAFile{{Path: "boot_aggregate", Content: agg}}, files...)
	}
	for _, f := range files {
		fd := eventlog.SHA256.Sum(f.Content)
		e1, th256 := eventlog.IMAEntryBytes(10, fd, f.Path, f.Signature, f.Signature != nil, 20)
		e2, _ := eventlog.IMAEntryBytes(10, fd, f.Path, f.Signature, f.Signature != nil, 32)
		out.SHA1 = append(out.SHA1, e1...)
		out.SHA256 = append(out.SHA256, e2...)
		th1 := e1[4:24]
		if err := Apply(t, []Extend{{PCR: 10, Digests: map[eventlog.Alg][]byte{eventlog.SHA1: th1, eventlog.SHA256: th256}}}); err != nil {
			return out, err
		}
	}
	return out, nil
}
