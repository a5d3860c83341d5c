package eventlog

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func realLogs(t testing.TB) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	for _, dir := range []string{"testdata/go-tpm-tools", "testdata/go-attestation", "testdata/tpm2-tss"} {
		ents, err := os.ReadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range ents {
			if e.Name() == "LICENSE" || filepath.Ext(e.Name()) == ".json" || strings.HasPrefix(e.Name(), "sml-ima") {
				continue
			}
			b, err := os.ReadFile(filepath.Join(dir, e.Name()))
			if err != nil {
				t.Fatal(err)
			}
			out[filepath.Join(filepath.Base(dir), e.Name())] = b
		}
	}
	return out
}

// Real logs that must be rejected, and why.
var rejectedRealLogs = map[string]error{
	// Windows log with trailing bytes after the last event (PCR index
	// 0xFFFFFFFF); tpm2_eventlog crashes on it.
	"go-attestation/option_rom_eventlog": ErrMalformed,
	// A fixture holding a few PCR 7 events only: no separators.
	"go-attestation/sb_cert_eventlog": ErrSeparator,
}

func TestCheckEventsRealLogs(t *testing.T) {
	for name, raw := range realLogs(t) {
		t.Run(name, func(t *testing.T) {
			var err error
			l, err := Parse(raw)
			if err == nil {
				for _, alg := range l.Banks() {
					if _, ok := alg.Hash(); ok && err == nil {
						err = CheckEvents(l, alg)
					}
				}
			}
			if want := rejectedRealLogs[name]; !errors.Is(err, want) || (want == nil && err != nil) {
				t.Errorf("Parse+CheckEvents: %v, want %v", err, want)
			}
		})
	}
}

func TestBootFactsUbuntu(t *testing.T) {
	raw, err := os.ReadFile("testdata/go-tpm-tools/ubuntu-2104-no-dbx.bin")
	if err != nil {
		t.Fatal(err)
	}
	l, err := Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	f, err := ExtractBootFacts(l, SHA256, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%+v", f)
}
