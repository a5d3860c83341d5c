package bootseed

import (
	"bytes"
	"encoding/hex"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/trustpool/trustpool/internal/eventlog"
	"github.com/trustpool/trustpool/internal/servicetest"
	"github.com/trustpool/trustpool/internal/tpm"
)

func TestMain(m *testing.M) { servicetest.Main(m) }

func TestVariantsAreConsistentLogs(t *testing.T) {
	want := map[string]struct{ sb, kernel, cmdlineSuffix string }{
		"build-a":        {eventlog.SecureBootEnabled, "/boot/vmlinuz-6.1.0-13-amd64", "ima_hash=sha256"},
		"build-b":        {eventlog.SecureBootEnabled, "/boot/vmlinuz-6.1.0-17-amd64", "ima_hash=sha256"},
		"secureboot-off": {eventlog.SecureBootDisabled, "/boot/vmlinuz-6.1.0-13-amd64", "ima_hash=sha256"},
		"drifted":        {eventlog.SecureBootEnabled, "/boot/vmlinuz-6.1.0-13-amd64", "init=/bin/sh"},
	}
	pcr9 := map[string]string{}
	for name, v := range Variants() {
		t.Run(name, func(t *testing.T) {
			log, exts, err := BuildLog(v, []eventlog.Alg{eventlog.SHA1, eventlog.SHA256, eventlog.SHA384})
			if err != nil {
				t.Fatal(err)
			}
			l, err := eventlog.Parse(log)
			if err != nil {
				t.Fatal(err)
			}
			if len(exts) != len(l.Events) {
				t.Errorf("%d extensions for %d events", len(exts), len(l.Events))
			}
			for _, alg := range l.Banks() {
				if err := eventlog.CheckEvents(l, alg); err != nil {
					t.Errorf("CheckEvents(%s): %v", alg, err)
				}
			}
			f, err := eventlog.ExtractBootFacts(l, eventlog.SHA256, nil)
			if err != nil {
				t.Fatal(err)
			}
			w := want[name]
			if f.SecureBoot != w.sb || f.KernelPath != w.kernel || !strings.HasSuffix(f.KernelCmdline, w.cmdlineSuffix) ||
				f.Kernel != hex.EncodeToString(eventlog.SHA256.Sum(v.Kernel)) || len(f.BootApplications) != 2 || f.Initrd == "" {
				t.Errorf("facts %+v", f)
			}
			rep, err := l.Replay(eventlog.SHA256)
			if err != nil {
				t.Fatal(err)
			}
			pcr9[name] = hex.EncodeToString(rep[9])
		})
	}
	if pcr9["build-a"] == pcr9["build-b"] || pcr9["build-a"] != pcr9["secureboot-off"] {
		t.Errorf("PCR 9 per variant: %v", pcr9)
	}
}

// TestSeedSWTPM boots a real swtpm with the command and checks, with
// tpm2-tools, that the TPM's PCRs equal the log's replay.
func TestSeedSWTPM(t *testing.T) {
	s := servicetest.SWTPM(t, servicetest.SWTPMOptions{})
	dir := t.TempDir()
	logPath, imaPath := filepath.Join(dir, "binary_bios_measurements"), filepath.Join(dir, "binary_runtime_measurements")
	var out, errb bytes.Buffer
	if code := Main(t.Context(), []string{"-swtpm", s.ServerAddr, "-variant", "build-b", "-log", logPath, "-ima", imaPath, "-ima-files", "3"}, tpm.DialSWTPM, &out, &errb); code != 0 {
		t.Fatalf("tpm-boot-seed: exit %d: %s", code, errb.String())
	}
	raw, err := os.ReadFile(logPath)
	if err != nil {
		t.Fatal(err)
	}
	l, err := eventlog.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	if len(l.Banks()) != 4 {
		t.Errorf("unmanufactured swtpm has 4 banks, log has %v", l.Banks())
	}
	ima, err := os.ReadFile(imaPath + "_sha256")
	if err != nil {
		t.Fatal(err)
	}
	entries, _, err := eventlog.ParseIMA(ima, 32)
	if err != nil || len(entries) != 4 {
		t.Fatalf("IMA log: %d entries, %v", len(entries), err)
	}
	_, st, err := eventlog.ReplayIMA(eventlog.IMAState{}, entries, 10, readPCR(t, s, "sha256", 10))
	if err != nil || st.Entries != 4 {
		t.Fatalf("IMA replay against the TPM's PCR 10: %v", err)
	}
	for _, alg := range []eventlog.Alg{eventlog.SHA1, eventlog.SHA256, eventlog.SHA384, eventlog.SHA512} {
		rep, err := l.Replay(alg)
		if err != nil {
			t.Fatal(err)
		}
		for pcr := uint32(0); pcr < 10; pcr++ {
			if got := readPCR(t, s, alg.String(), int(pcr)); !bytes.Equal(got, rep[pcr]) {
				t.Errorf("%s PCR %d: TPM %x, log %x", alg, pcr, got, rep[pcr])
			}
		}
	}
}

func readPCR(t *testing.T, s *servicetest.SWTPMServer, bank string, pcr int) []byte {
	t.Helper()
	s.Tool(t, "tpm2_pcrread", bank+":"+strconv.Itoa(pcr), "-o", "pcr.bin")
	b, err := os.ReadFile(filepath.Join(s.Dir, "pcr.bin"))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestEncodeLogEditedEvents: edits of event data or type keep the digests
// (what a log-editing attacker relies on), and EV_NO_ACTION events extend
// nothing and carry zero digests.
func TestEncodeLogEditedEvents(t *testing.T) {
	algs := []eventlog.Alg{eventlog.SHA1, eventlog.SHA256}
	evs := Events(BuildA())
	_, exts, err := EncodeLog(evs, algs)
	if err != nil {
		t.Fatal(err)
	}
	edited := append([]Event(nil), evs...)
	for i := range edited {
		if edited[i].PCR == 9 {
			edited[i].Data = []byte("renamed\x00")
		}
	}
	edited = append(edited, Event{PCR: 0, Type: eventlog.EvNoAction, Measured: []byte("x"), Data: []byte("StartupLocality\x00\x03")})
	log, exts2, err := EncodeLog(edited, algs)
	if err != nil {
		t.Fatal(err)
	}
	if len(exts2) != len(exts) {
		t.Fatalf("%d extensions after the edit, want %d", len(exts2), len(exts))
	}
	for i := range exts {
		if exts[i].PCR != exts2[i].PCR || !bytes.Equal(exts[i].Digests[eventlog.SHA256], exts2[i].Digests[eventlog.SHA256]) {
			t.Errorf("extension %d changed", i)
		}
	}
	l, err := eventlog.Parse(log)
	if err != nil {
		t.Fatal(err)
	}
	last := l.Events[len(l.Events)-1]
	if d, _ := last.Digest(eventlog.SHA256); last.Type != eventlog.EvNoAction || !bytes.Equal(d, make([]byte, 32)) {
		t.Errorf("EV_NO_ACTION encoded as %s with digest %x", last.Type, d)
	}
	if _, _, err := EncodeLog(evs, nil); err == nil {
		t.Error("EncodeLog without banks succeeded")
	}
}
