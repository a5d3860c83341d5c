package eventlog_test

import (
	"bytes"
	"crypto/sha256"
	"slices"
	"testing"

	"github.com/trustpool/trustpool/internal/bootseed"
	"github.com/trustpool/trustpool/internal/eventlog"
	"github.com/trustpool/trustpool/internal/eventlog/eventlogtest"
)

// FuzzParse feeds arbitrary bytes to the firmware event log parser and
// everything a verifier runs on its result. Seeds: the generated logs of
// eventlogtest.Generated only (our own bytes: a failing input the fuzzer
// writes to testdata/fuzz is then never derived from a third-party file).
func FuzzParse(f *testing.F) {
	for _, c := range eventlogtest.Generated(f) {
		f.Add(c.Log)
	}
	// Logs with the shapes the fact rules look at: GRUB strings measured
	// twice, RHEL's encodings, late and retyped events.
	a := bootseed.BuildA()
	base := bootseed.Events(a)
	for _, evs := range [][]bootseed.Event{
		insertAt(base, isEBS, bootseed.GrubString("kernel_cmdline: /boot/vmlinuz quiet"), bootseed.GrubCommand("linux (hd0,gpt3)/boot/vmlinuz quiet")),
		rhelGrub(base),
		append(slices.Clone(base), bootseed.GrubFile(a.KernelPath, []byte("late"))),
		retype(base, string(a.Shim), eventlog.EvEFIBootServicesDriver),
	} {
		log, _, err := bootseed.EncodeLog(evs, []eventlog.Alg{eventlog.SHA1, eventlog.SHA256})
		if err != nil {
			f.Fatal(err)
		}
		f.Add(log)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		l, err := eventlog.Parse(b)
		if err != nil {
			return
		}
		for _, alg := range l.Banks() {
			if _, ok := alg.Hash(); !ok {
				continue
			}
			if _, err := l.Replay(alg); err != nil {
				t.Fatalf("Replay(%s) failed on a parsed log: %v", alg, err)
			}
			_ = eventlog.CheckEvents(l, alg)
			facts, err := eventlog.ExtractBootFacts(l, alg, nil)
			if err != nil {
				continue
			}
			m := facts.Map()
			for k := range facts.Withheld {
				if _, ok := m[k]; ok {
					t.Fatalf("withheld fact %s reported", k)
				}
			}
		}
	})
}

func imaSeed() []byte {
	var b []byte
	for _, p := range []string{"boot_aggregate", "/usr/bin/bash", "/etc/passwd"} {
		d := sha256.Sum256([]byte(p))
		e, _ := eventlog.IMAEntryBytes(10, d[:], p, nil, false, 20)
		b = append(b, e...)
	}
	e, _ := eventlog.IMAEntryBytes(10, bytes.Repeat([]byte{1}, 32), "/usr/bin/signed", []byte{3, 2, 1}, true, 20)
	return append(b, e...)
}

// FuzzParseIMA checks the IMA parser and replay on arbitrary bytes.
func FuzzParseIMA(f *testing.F) {
	f.Add(imaSeed(), true)
	f.Add(imaSeed()[:50], false)
	for _, c := range imaLists() {
		f.Add(c.list.Bytes(), c.list.HashSize == 20)
	}
	f.Fuzz(func(t *testing.T, b []byte, sha1Column bool) {
		hs := 32
		if sha1Column {
			hs = 20
		}
		entries, n, err := eventlog.ParseIMA(b, hs)
		if err != nil {
			return
		}
		if n > len(b) {
			t.Fatalf("consumed %d of %d bytes", n, len(b))
		}
		total := 0
		for i := range entries {
			e := &entries[i]
			total += e.Size()
			if e.Seq() != int64(i) {
				t.Fatalf("entry %d numbered %d", i, e.Seq())
			}
			// Every accessor stays within the entry.
			_, _, _ = e.Path(), e.FileDigestHex(), e.Template()
			if len(e.TemplateHash())+len(e.TemplateData()) > e.Size() || len(e.Signature()) > e.Size() || e.PCR() >= eventlog.NumPCRs {
				t.Fatalf("entry %d: fields larger than the entry", i)
			}
		}
		if total != n {
			t.Fatalf("entry sizes sum to %d, consumed %d", total, n)
		}
		_, _, _ = eventlog.ReplayIMA(eventlog.IMAState{}, entries, 10, make([]byte, 32))
	})
}

// FuzzParseVariableData checks the UEFI_VARIABLE_DATA parser.
func FuzzParseVariableData(f *testing.F) {
	f.Add(append(append(make([]byte, 16), 2, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0), 'd', 0, 'b', 0, 7))
	f.Fuzz(func(t *testing.T, b []byte) {
		v, err := eventlog.ParseVariableData(b)
		if err == nil && len(v.Data) > len(b) {
			t.Fatal("data longer than input")
		}
	})
}
