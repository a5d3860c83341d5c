package eventlogtest

import (
	"bytes"
	"crypto/sha1" //nolint:gosec // IMA's classic template-hash column is SHA-1
	"crypto/sha256"
	"encoding/binary"
	"hash"
)

// IMAWant is what a parser must find for one entry written by [IMAList].
type IMAWant struct {
	Template     string
	Path         string
	TemplateHash []byte // the template-hash column (all zero for a violation)
	Violation    bool
	FileAlg      string
	FileDigest   []byte
	Signature    []byte
	Size         int
}

// IMAList writes a binary IMA measurement list the way the kernel's
// ima_measurements_show (security/integrity/ima/ima_fs.c) does, written
// independently of package eventlog's encoder: per entry the PCR index,
// the template hash (SHA-1 in binary_runtime_measurements, SHA-256 in
// binary_runtime_measurements_sha256), the template name, the template
// data length (absent for the legacy "ima" template) and the template
// data (u32-length-prefixed fields). A violation (ToMToU, open-writers)
// has an all-zero template-hash column, a zero file digest, and extends
// 0xFF..FF into the PCR. It tracks the SHA-256 value of PCR 10.
type IMAList struct {
	// HashSize is the template-hash column size: 20 or 32.
	HashSize int
	// FileAlg is the file-digest algorithm of d-ng fields ("sha256" or
	// "sha1").
	FileAlg string
	Entries []IMAWant
	buf     bytes.Buffer
	pcr10   [][]byte // SHA-256 PCR 10 after each entry
}

// NewIMAList returns an empty list.
func NewIMAList(hashSize int, fileAlg string) *IMAList {
	return &IMAList{HashSize: hashSize, FileAlg: fileAlg}
}

func (l *IMAList) fileHash() hash.Hash {
	if l.FileAlg == "sha1" {
		return sha1.New() //nolint:gosec // IMA file digest algorithm under test
	}
	return sha256.New()
}

func u32le(v int) []byte { return binary.LittleEndian.AppendUint32(nil, uint32(v)) }

func field(v []byte) []byte { return append(u32le(len(v)), v...) }

func (l *IMAList) column(td []byte) []byte {
	if l.HashSize == 20 {
		s := sha1.Sum(td) //nolint:gosec // SHA-1 column
		return s[:]
	}
	s := sha256.Sum256(td)
	return s[:]
}

func (l *IMAList) prev() []byte {
	if len(l.pcr10) == 0 {
		return make([]byte, 32)
	}
	return l.pcr10[len(l.pcr10)-1]
}

func (l *IMAList) write(w IMAWant, name string, td []byte, withLen bool, extend []byte) {
	start := l.buf.Len()
	l.buf.Write(u32le(10))
	l.buf.Write(w.TemplateHash)
	l.buf.Write(field([]byte(name)))
	if withLen {
		l.buf.Write(field(td))
	} else {
		l.buf.Write(td)
	}
	w.Size = l.buf.Len() - start
	l.Entries = append(l.Entries, w)
	p := sha256.Sum256(append(bytes.Clone(l.prev()), extend...))
	l.pcr10 = append(l.pcr10, p[:])
}

func (l *IMAList) ngData(digest []byte, path string, template string, sig []byte) []byte {
	td := field(append([]byte(l.FileAlg+":\x00"), digest...))
	td = append(td, field(append([]byte(path), 0))...)
	if template == "ima-sig" {
		td = append(td, field(sig)...)
	}
	return td
}

// Add appends a measurement of content at path with template "ima-ng" or
// "ima-sig" (sig may be empty).
func (l *IMAList) Add(template, path string, content, sig []byte) {
	h := l.fileHash()
	h.Write(content)
	d := h.Sum(nil)
	td := l.ngData(d, path, template, sig)
	th := sha256.Sum256(td)
	w := IMAWant{Template: template, Path: path, TemplateHash: l.column(td), FileAlg: l.FileAlg, FileDigest: d}
	if template == "ima-sig" {
		w.Signature = sig
	}
	l.write(w, template, td, true, th[:])
}

// AddViolation appends a violation entry for path.
func (l *IMAList) AddViolation(template, path string) {
	d := make([]byte, l.fileHash().Size())
	td := l.ngData(d, path, template, nil)
	w := IMAWant{Template: template, Path: path, TemplateHash: make([]byte, l.HashSize), Violation: true, FileAlg: l.FileAlg, FileDigest: d}
	if template == "ima-sig" {
		w.Signature = []byte{}
	}
	l.write(w, template, td, true, bytes.Repeat([]byte{0xff}, 32))
}

// AddLegacy appends an entry with the legacy "ima" template: a bare SHA-1
// file digest and the file name in the old string format, no template data
// length; its template hash is SHA-1 over the digest and the name padded
// to 256 bytes. It cannot be recomputed in the SHA-256 bank.
func (l *IMAList) AddLegacy(path string, content []byte) {
	d := sha1.Sum(content) //nolint:gosec // legacy template
	td := append(d[:], field([]byte(path))...)
	padded := append(d[:], make([]byte, 256)...)
	copy(padded[20:], path)
	th := sha1.Sum(padded) //nolint:gosec // legacy template
	w := IMAWant{Template: "ima", Path: path, TemplateHash: th[:], FileAlg: "sha1", FileDigest: d[:]}
	l.write(w, "ima", td, false, th[:])
}

// Bytes returns the list.
func (l *IMAList) Bytes() []byte { return bytes.Clone(l.buf.Bytes()) }

// PCR10 returns the SHA-256 value of PCR 10 after the first n entries.
func (l *IMAList) PCR10(n int) []byte {
	if n == 0 {
		return make([]byte, 32)
	}
	return bytes.Clone(l.pcr10[n-1])
}

// Offset returns the byte offset after the first n entries.
func (l *IMAList) Offset(n int) int {
	off := 0
	for _, e := range l.Entries[:n] {
		off += e.Size
	}
	return off
}

// TinyIMAEntry is the smallest well-formed ima-ng entry in a list with a
// SHA-1 template-hash column (58 bytes: a 3-byte "sha1" file digest and
// the path "/x"): the worst case for memory per byte of a chunk. It also
// returns the SHA-256 template hash the kernel extends into PCR 10.
func TinyIMAEntry() (entry, sha256TemplateHash []byte) {
	td := append(field([]byte("sha1:\x00abc")), field([]byte("/x\x00"))...)
	th1 := sha1.Sum(td) //nolint:gosec // IMA's SHA-1 template-hash column
	e := append(u32le(10), th1[:]...)
	e = append(e, field([]byte("ima-ng"))...)
	e = append(e, field(td)...)
	th := sha256.Sum256(td)
	return e, th[:]
}
