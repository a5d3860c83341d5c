package eventlog_test

import (
	"bytes"
	"crypto/sha1" //nolint:gosec // the classic IMA template-hash column is SHA-1
	"crypto/sha256"
	"errors"
	"fmt"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/trustpool/trustpool/internal/eventlog"
	"github.com/trustpool/trustpool/internal/eventlog/eventlogtest"
)

var imaFiles = []string{
	"/init",
	"/usr/bin/sh",
	"/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
	"/etc/ld.so.cache",
	"/usr/lib/x86_64-linux-gnu/libc.so.6",
	"/conf/arch.conf",
	"/conf/initramfs.conf",
	"/scripts/functions",
}

type imaListCase struct {
	name string
	list *eventlogtest.IMAList
}

// imaLists builds the lists the IMA tests run on: ima-ng and ima-sig
// templates, SHA-1 and SHA-256 template-hash columns, SHA-256 and SHA-1
// file digests, with and without violations ("invalidated" entries, as
// the kernel writes on ToMToU / open-writers).
func imaLists() []imaListCase {
	var out []imaListCase
	for _, hs := range []int{20, 32} {
		for _, tmpl := range []string{"ima-ng", "ima-sig"} {
			for _, fileAlg := range []string{"sha256", "sha1"} {
				for _, violations := range []bool{false, true} {
					l := eventlogtest.NewIMAList(hs, fileAlg)
					l.Add(tmpl, "boot_aggregate", []byte("PCRs 0-9"), nil)
					for i, f := range imaFiles {
						switch {
						case violations && i%3 == 1:
							l.AddViolation(tmpl, f)
						case tmpl == "ima-sig" && i%2 == 0:
							l.Add(tmpl, f, []byte("contents of "+f), append([]byte{3, 2}, f...)) // a signature
						default:
							l.Add(tmpl, f, []byte("contents of "+f), nil)
						}
					}
					name := fmt.Sprintf("%s/%s-column/%s-files", tmpl, map[int]string{20: "sha1", 32: "sha256"}[hs], fileAlg)
					if violations {
						name += "/invalidated"
					}
					out = append(out, imaListCase{name, l})
				}
			}
		}
	}
	return out
}

// TestIMALists parses lists written by an independent writer
// (eventlogtest.IMAList) and replays them incrementally.
func TestIMALists(t *testing.T) {
	for _, c := range imaLists() {
		t.Run(c.name, func(t *testing.T) {
			l := c.list
			n := len(l.Entries)
			// The list was read while the kernel appended: the first bytes
			// of a next entry follow; they must be left unconsumed.
			b := append(l.Bytes(), 10, 0, 0, 0, 0xaa, 0xbb, 0xcc)
			entries, used, err := eventlog.ParseIMA(b, l.HashSize)
			if err != nil || used != l.Offset(n) {
				t.Fatalf("ParseIMA: %d of %d bytes, %v", used, len(b), err)
			}
			var got []eventlogtest.IMAWant
			for _, e := range entries {
				got = append(got, eventlogtest.IMAWant{Template: e.Template(), Path: e.Path(), TemplateHash: e.TemplateHash(), Violation: e.Violation(),
					FileAlg: e.FileHashAlg(), FileDigest: e.FileDigest(), Signature: e.Signature(), Size: e.Size()})
				if e.Violation() {
					continue
				}
				// The column is the hash of exactly the template data we
				// extracted, so the SHA-256 recomputation hashes what the
				// kernel hashed.
				var th []byte
				if l.HashSize == 20 {
					s := sha1.Sum(e.TemplateData()) //nolint:gosec // SHA-1 column
					th = s[:]
				} else {
					s := sha256.Sum256(e.TemplateData())
					th = s[:]
				}
				if !bytes.Equal(th, e.TemplateHash()) {
					t.Errorf("%s: H(template data) != template hash", e.Path())
				}
			}
			if diff := cmp.Diff(l.Entries, got, cmpopts.EquateEmpty()); diff != "" {
				t.Fatalf("entries (-written +parsed):\n%s", diff)
			}

			// Replay up to the 4th entry (a quote taken then), then continue.
			done, st, err := eventlog.ReplayIMA(eventlog.IMAState{}, entries, 10, l.PCR10(4))
			if err != nil || len(done) != 4 || st.Entries != 4 || st.Offset != int64(l.Offset(4)) {
				t.Fatalf("ReplayIMA: %d entries, state %+v, %v", len(done), st, err)
			}
			done, st, err = eventlog.ReplayIMA(st, entries[4:], 10, l.PCR10(n))
			if err != nil || len(done) != n-4 || st.Entries != int64(n) || st.Offset != int64(used) {
				t.Fatalf("second ReplayIMA: %d entries, state %+v, %v", len(done), st, err)
			}
			if !bytes.Equal(st.PCR(10), l.PCR10(n)) {
				t.Errorf("state PCR 10 %x, want %x", st.PCR(10), l.PCR10(n))
			}
			// A wrong target matches no prefix, and the state is unchanged.
			prev := eventlog.IMAState{Offset: 7, Entries: 1}
			if _, st, err := eventlog.ReplayIMA(prev, entries, 10, bytes.Repeat([]byte{1}, 32)); !errors.Is(err, eventlog.ErrIMAReplay) || st.Offset != 7 || st.Entries != 1 {
				t.Errorf("wrong target: state %+v, %v", st, err)
			}
		})
	}
}

// TestIMAViolations checks violations extend 0xFF..FF: the same list
// replayed as if violations extended their template hash (or zeros, the
// column's value) matches nothing.
func TestIMAViolations(t *testing.T) {
	l := eventlogtest.NewIMAList(20, "sha256")
	l.Add("ima-ng", "boot_aggregate", []byte("PCRs"), nil)
	l.AddViolation("ima-ng", "/var/log/app.log")
	l.Add("ima-ng", "/usr/bin/app", []byte("app"), nil)
	entries, _, err := eventlog.ParseIMA(l.Bytes(), 20)
	if err != nil || len(entries) != 3 || !entries[1].Violation() || entries[0].Violation() || entries[2].Violation() {
		t.Fatalf("ParseIMA: %+v, %v", entries, err)
	}
	if _, _, err := eventlog.ReplayIMA(eventlog.IMAState{}, entries, 10, l.PCR10(3)); err != nil {
		t.Fatalf("replay with the violation as 0xFF..FF: %v", err)
	}
	for name, ext := range map[string][]byte{
		"template_hash": sha256Sum(entries[1].TemplateData()),
		"zero_column":   make([]byte, 32),
	} {
		pcr := make([]byte, 32)
		for i, e := range entries {
			th := sha256Sum(e.TemplateData())
			if i == 1 {
				th = ext
			}
			pcr = sha256Sum(pcr, th)
		}
		if _, _, err := eventlog.ReplayIMA(eventlog.IMAState{}, entries, 10, pcr); !errors.Is(err, eventlog.ErrIMAReplay) {
			t.Errorf("violation extended as %s: %v, want %v", name, err, eventlog.ErrIMAReplay)
		}
	}
}

func sha256Sum(b ...[]byte) []byte {
	h := sha256.New()
	for _, x := range b {
		h.Write(x)
	}
	return h.Sum(nil)
}

// TestIMATruncated: every prefix of a list parses to the complete entries
// it holds, never an error (the kernel may append while the agent reads);
// a single violation entry one byte short yields nothing.
func TestIMATruncated(t *testing.T) {
	l := eventlogtest.NewIMAList(20, "sha1")
	l.AddViolation("ima-ng", "/tmp/written-while-open")
	b := l.Bytes()
	if entries, n, err := eventlog.ParseIMA(b[:len(b)-1], 20); err != nil || len(entries) != 0 || n != 0 {
		t.Errorf("violation entry one byte short: %d entries, %d bytes, %v", len(entries), n, err)
	}
	l = imaLists()[len(imaLists())-1].list
	b = l.Bytes()
	complete := 0
	for cut := 0; cut <= len(b); cut++ {
		for complete < len(l.Entries) && l.Offset(complete+1) <= cut {
			complete++
		}
		entries, n, err := eventlog.ParseIMA(b[:cut], l.HashSize)
		if err != nil || len(entries) != complete || n != l.Offset(complete) {
			t.Fatalf("prefix of %d bytes: %d entries, %d bytes, %v; want %d entries", cut, len(entries), n, err, complete)
		}
	}
}

// TestIMALegacyTemplate: the legacy "ima" template has no template data
// length and is SHA-1 only; a list containing it is refused.
func TestIMALegacyTemplate(t *testing.T) {
	l := eventlogtest.NewIMAList(20, "sha1")
	l.AddLegacy("boot_aggregate", []byte("PCRs"))
	l.AddLegacy("/init", []byte("init"))
	if _, _, err := eventlog.ParseIMA(l.Bytes(), 20); !errors.Is(err, eventlog.ErrIMATemplate) {
		t.Errorf("legacy ima template: %v, want %v", err, eventlog.ErrIMATemplate)
	}
	mixed := eventlogtest.NewIMAList(20, "sha256")
	mixed.Add("ima-ng", "boot_aggregate", []byte("PCRs"), nil)
	mixed.AddLegacy("/init", []byte("init"))
	if _, _, err := eventlog.ParseIMA(mixed.Bytes(), 20); !errors.Is(err, eventlog.ErrIMATemplate) {
		t.Errorf("ima-ng then legacy ima: %v, want %v", err, eventlog.ErrIMATemplate)
	}
}

// TestIMASHA256Column: a SHA-256 template-hash column must equal the hash
// recomputed from the template data.
func TestIMASHA256Column(t *testing.T) {
	l := eventlogtest.NewIMAList(32, "sha256")
	l.Add("ima-ng", "boot_aggregate", []byte("PCRs"), nil)
	l.Add("ima-sig", "/bin/true", []byte("true"), []byte{3, 2, 1})
	b := l.Bytes()
	entries, _, err := eventlog.ParseIMA(b, 32)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := eventlog.ReplayIMA(eventlog.IMAState{}, entries, 10, l.PCR10(2)); err != nil {
		t.Fatal(err)
	}
	bad := bytes.Clone(b)
	bad[l.Offset(1)+4] ^= 1 // second entry's template-hash column
	entries, _, err = eventlog.ParseIMA(bad, 32)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := eventlog.ReplayIMA(eventlog.IMAState{}, entries, 10, l.PCR10(2)); !errors.Is(err, eventlog.ErrIMATemplateHash) {
		t.Errorf("altered SHA-256 column: %v, want %v", err, eventlog.ErrIMATemplateHash)
	}
}

// TestIMAEntryBytes: the package's own encoder (used by bootseed and the
// verifier tests) writes what the independent writer writes.
func TestIMAEntryBytes(t *testing.T) {
	for _, hs := range []int{20, 32} {
		for _, sig := range [][]byte{nil, {}, {3, 2, 1}} {
			l := eventlogtest.NewIMAList(hs, "sha256")
			tmpl := "ima-ng"
			if sig != nil {
				tmpl = "ima-sig"
			}
			l.Add(tmpl, "/usr/bin/bash", []byte("bash"), sig)
			d := sha256.Sum256([]byte("bash"))
			e, th := eventlog.IMAEntryBytes(10, d[:], "/usr/bin/bash", sig, sig != nil, hs)
			if !bytes.Equal(e, l.Bytes()) {
				t.Errorf("column %d, %s: IMAEntryBytes differs from the writer", hs, tmpl)
			}
			if want := sha256Sum(make([]byte, 32), th); !bytes.Equal(want, l.PCR10(1)) {
				t.Errorf("column %d, %s: SHA-256 template hash differs", hs, tmpl)
			}
		}
	}
}

// TestIMAEntryNumberingAndCap: ParseIMA numbers entries within its input,
// ReplayIMA renumbers the verified ones from the state, and more than
// MaxIMAEntries entries in one chunk are refused as too large.
func TestIMAEntryNumberingAndCap(t *testing.T) {
	l := eventlogtest.NewIMAList(20, "sha256")
	for _, f := range imaFiles {
		l.Add("ima-ng", f, []byte(f), nil)
	}
	entries, _, err := eventlog.ParseIMA(l.Bytes()[l.Offset(2):], 20)
	if err != nil {
		t.Fatal(err)
	}
	if entries[0].Seq() != 0 || entries[1].Seq() != 1 {
		t.Errorf("ParseIMA numbered %d, %d", entries[0].Seq(), entries[1].Seq())
	}
	prev := eventlog.IMAState{Offset: int64(l.Offset(2)), Entries: 2, PCRs: map[uint32][]byte{10: l.PCR10(2)}}
	done, st, err := eventlog.ReplayIMA(prev, entries, 10, l.PCR10(5))
	if err != nil || len(done) != 3 || st.Entries != 5 {
		t.Fatalf("ReplayIMA: %d entries, %+v, %v", len(done), st, err)
	}
	for i, e := range done {
		if e.Seq() != int64(2+i) || e.Path() != imaFiles[2+i] {
			t.Errorf("verified entry %d: seq %d path %s", i, e.Seq(), e.Path())
		}
	}

	// The smallest entries fit the cap into MaxIMAChunk.
	one, _ := eventlogtest.TinyIMAEntry()
	full := bytes.Repeat(one, eventlog.MaxIMAEntries)
	if got, _, err := eventlog.ParseIMA(full, 20); err != nil || len(got) != eventlog.MaxIMAEntries {
		t.Fatalf("ParseIMA at the cap: %d entries, %v", len(got), err)
	}
	if _, _, err := eventlog.ParseIMA(append(full, one...), 20); !errors.Is(err, eventlog.ErrTooLarge) {
		t.Errorf("ParseIMA over the cap: %v, want %v", err, eventlog.ErrTooLarge)
	}
	// A truncated entry after the cap is not counted.
	if got, _, err := eventlog.ParseIMA(append(full, one[:10]...), 20); err != nil || len(got) != eventlog.MaxIMAEntries {
		t.Errorf("ParseIMA at the cap with a partial entry: %d entries, %v", len(got), err)
	}

	var zero eventlog.IMAEntry
	if zero.Path() != "" || zero.TemplateHash() != nil || zero.TemplateData() != nil || zero.Signature() != nil || zero.Size() != 0 {
		t.Error("zero IMAEntry is not empty")
	}
}
