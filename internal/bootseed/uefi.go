package bootseed

import (
	"bytes"
	"crypto/sha256"
	_ "embed" // the Secure Boot certificates
	"hash/crc32"
)

// The X.509 certificates in the Secure Boot variables of the virtual
// firmware: RSA-2048, sha256WithRSAEncryption, self-signed, made once with
//
//	openssl req -x509 -newkey rsa:2048 -nodes -keyout /dev/null -days 7300 -sha256 \
//	    -subj "/O=Trustpool Virtual Firmware/CN=<name>" -set_serial <n> \
//	    -addext basicConstraints=critical,CA:TRUE -outform DER -out certs/<var>.der
//
// (names "Trustpool Virtual Firmware Platform Key", "... KEK CA" and
// "Trustpool Test Secure Boot CA"; the private keys were discarded: nothing
// is ever signed with them). Real firmware carries the OEM's and
// Microsoft's certificates in the same structures.
var (
	//go:embed certs/pk.der
	pkCert []byte
	//go:embed certs/kek.der
	kekCert []byte
	//go:embed certs/db.der
	dbCert []byte
)

// GUIDs of EFI_SIGNATURE_LIST types (UEFI 2.10, 32.4.1), in their
// mixed-endian wire form.
var (
	EFICertX509   = []byte{0xa1, 0x59, 0xc0, 0xa5, 0xe4, 0x94, 0xa7, 0x4a, 0x87, 0xb5, 0xab, 0x15, 0x5c, 0x2b, 0xf0, 0x72}
	EFICertSHA256 = []byte{0x26, 0x16, 0xc4, 0xc1, 0x4c, 0x50, 0x92, 0x40, 0xac, 0xa9, 0x41, 0xf9, 0x36, 0x93, 0x43, 0x28}
)

// OwnerGUID is the SignatureOwner of every entry the virtual firmware
// ships (9f3c2e51-6a7b-4d28-b1e4-5c0a7d93e2f6).
var OwnerGUID = []byte{0x51, 0x2e, 0x3c, 0x9f, 0x7b, 0x6a, 0x28, 0x4d, 0xb1, 0xe4, 0x5c, 0x0a, 0x7d, 0x93, 0xe2, 0xf6}

// SignatureData is an EFI_SIGNATURE_DATA: the owner GUID, then the
// signature (a DER certificate, a SHA-256 digest).
func SignatureData(owner, data []byte) []byte {
	return append(bytes.Clone(owner), data...)
}

// SignatureList is one EFI_SIGNATURE_LIST of type typ holding entries
// (EFI_SIGNATURE_DATA each, all of the same size, as the structure
// requires), with no signature header.
func SignatureList(typ []byte, entries ...[]byte) []byte {
	size := 0
	if len(entries) > 0 {
		size = len(entries[0])
	}
	var b bytes.Buffer
	b.Write(typ)
	le32(&b, uint32(28+size*len(entries))) // SignatureListSize
	le32(&b, 0)                            // SignatureHeaderSize
	le32(&b, uint32(size))                 // SignatureSize
	for _, e := range entries {
		b.Write(e)
	}
	return b.Bytes()
}

// X509List is a signature list of one X.509 certificate.
func X509List(cert []byte) []byte {
	return SignatureList(EFICertX509, SignatureData(OwnerGUID, cert))
}

// SHA256List is a signature list of SHA-256 image digests, one per name
// (the digest of the name stands for the digest of an image).
func SHA256List(names ...string) []byte {
	entries := make([][]byte, 0, len(names))
	for _, n := range names {
		d := sha256.Sum256([]byte(n))
		entries = append(entries, SignatureData(OwnerGUID, d[:]))
	}
	return SignatureList(EFICertSHA256, entries...)
}

// Device path nodes (UEFI 2.10, chapter 10).
func acpiNode(hid, uid uint32) []byte {
	var b bytes.Buffer
	b.Write([]byte{0x02, 0x01, 12, 0})
	le32(&b, hid)
	le32(&b, uid)
	return b.Bytes()
}

func pciNode(dev, fn byte) []byte { return []byte{0x01, 0x01, 6, 0, fn, dev} }

func hdNode(part uint32, start, size uint64, sig []byte) []byte {
	var b bytes.Buffer
	b.Write([]byte{0x04, 0x01, 42, 0})
	le32(&b, part)
	le64(&b, start)
	le64(&b, size)
	b.Write(sig)
	b.Write([]byte{0x02, 0x02}) // GPT, GUID signature
	return b.Bytes()
}

func fileNode(path string) []byte {
	p := append(ucs2(path), 0, 0)
	var b bytes.Buffer
	b.Write([]byte{0x04, 0x04})
	le16(&b, uint16(4+len(p)))
	b.Write(p)
	return b.Bytes()
}

var endNode = []byte{0x7f, 0xff, 0x04, 0x00}

// The disk of the virtual host: a virtio disk at PCI 00:04.0 with a GPT
// whose first partition is the EFI system partition.
var (
	diskGUID = []byte{0x3d, 0x1a, 0x7c, 0x52, 0x8e, 0x0b, 0x41, 0x4f, 0x9c, 0x26, 0x6e, 0x15, 0xb3, 0x84, 0x07, 0xda}
	espGUID  = []byte{0xe4, 0x0c, 0x8b, 0x6f, 0x2d, 0x95, 0x3a, 0x46, 0xa1, 0x7f, 0x0e, 0x58, 0xc2, 0x9d, 0x41, 0xb3}
	rootGUID = []byte{0x71, 0xb5, 0x2f, 0x08, 0xc6, 0x1e, 0x7d, 0x4b, 0x85, 0x3a, 0xd9, 0x60, 0x24, 0xfe, 0x5c, 0x97}
)

const (
	espFirst, espLast   = 2048, 1050623
	rootFirst, rootLast = 1050624, 20969471
)

// espFilePath is the device path of a file on the EFI system partition, as
// the firmware builds it for a boot option.
func espFilePath(path string) []byte {
	var b bytes.Buffer
	b.Write(acpiNode(0x0a0341d0, 0)) // PciRoot(0x0): PNP0A03
	b.Write(pciNode(4, 0))
	b.Write(hdNode(1, espFirst, espLast-espFirst+1, espGUID))
	b.Write(fileNode(path))
	b.Write(endNode)
	return b.Bytes()
}

// LoadOption is an EFI_LOAD_OPTION (the content of a Boot#### variable):
// active, with its description and device path.
func LoadOption(desc string, devicePath []byte) []byte {
	var b bytes.Buffer
	le32(&b, 1) // LOAD_OPTION_ACTIVE
	le16(&b, uint16(len(devicePath)))
	b.Write(append(ucs2(desc), 0, 0))
	b.Write(devicePath)
	return b.Bytes()
}

// imageLoadEvent is a UEFI_IMAGE_LOAD_EVENT.
func imageLoadEvent(location, length uint64, devicePath []byte) []byte {
	var b bytes.Buffer
	le64(&b, location)
	le64(&b, length)
	le64(&b, 0) // ImageLinkTimeAddress
	le64(&b, uint64(len(devicePath)))
	b.Write(devicePath)
	return b.Bytes()
}

// gptData is a UEFI_GPT_DATA: the disk's GPT header (with its CRCs) and its
// two partitions (EFI system partition and a Linux root), as the firmware
// measures them.
func gptData() []byte {
	const entries, entrySize = 128, 128
	esp := []byte{0x28, 0x73, 0x2a, 0xc1, 0x1f, 0xf8, 0xd2, 0x11, 0xba, 0x4b, 0x00, 0xa0, 0xc9, 0x3e, 0xc9, 0x3b}
	linux := []byte{0xaf, 0x3d, 0xc6, 0x0f, 0x83, 0x84, 0x72, 0x47, 0x8e, 0x79, 0x3d, 0x69, 0xd8, 0x47, 0x7d, 0xe4}
	part := func(typeGUID, uniq []byte, first, last uint64, name string) []byte {
		var e bytes.Buffer
		e.Write(typeGUID)
		e.Write(uniq)
		le64(&e, first)
		le64(&e, last)
		le64(&e, 0) // attributes
		n := ucs2(name)
		e.Write(n)
		e.Write(make([]byte, 72-len(n)))
		return e.Bytes()
	}
	parts := [][]byte{part(esp, espGUID, espFirst, espLast, "EFI System"), part(linux, rootGUID, rootFirst, rootLast, "root")}
	array := make([]byte, entries*entrySize)
	for i, p := range parts {
		copy(array[i*entrySize:], p)
	}
	var h bytes.Buffer
	h.WriteString("EFI PART")
	le32(&h, 0x00010000) // revision 1.0
	le32(&h, 92)         // header size
	le32(&h, 0)          // header CRC32, set below
	le32(&h, 0)          // reserved
	le64(&h, 1)          // MyLBA
	le64(&h, 20971519)   // AlternateLBA
	le64(&h, 34)         // FirstUsableLBA
	le64(&h, 20971486)   // LastUsableLBA
	h.Write(diskGUID)
	le64(&h, 2) // PartitionEntryLBA
	le32(&h, entries)
	le32(&h, entrySize)
	le32(&h, crc32.ChecksumIEEE(array))
	hdr := h.Bytes()
	crc := crc32.ChecksumIEEE(hdr)
	hdr[16], hdr[17], hdr[18], hdr[19] = byte(crc), byte(crc>>8), byte(crc>>16), byte(crc>>24)
	var b bytes.Buffer
	b.Write(hdr)
	le64(&b, uint64(len(parts))) // NumberOfPartitions in this event
	for _, p := range parts {
		b.Write(p)
	}
	return b.Bytes()
}
