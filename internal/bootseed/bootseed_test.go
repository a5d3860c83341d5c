package bootseed

import (
	"bytes"
	"context"
	"encoding/hex"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2/transport"

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

// TestSeedAgain: a second run against a TPM that has booted already leaves
// it alone when the log records that boot (a DevStack re-stack while the
// swtpm kept running), and fails, extending nothing, when the log is
// missing or records another boot: PCRs extended twice would replay to
// nothing.
func TestSeedAgain(t *testing.T) {
	s := servicetest.SWTPM(t, servicetest.SWTPMOptions{})
	dir := t.TempDir()
	logPath := filepath.Join(dir, "binary_bios_measurements")
	seed := func(args ...string) (int, string, string) {
		var out, errb bytes.Buffer
		code := Main(t.Context(), append([]string{"-swtpm", s.ServerAddr}, args...), tpm.DialSWTPM, &out, &errb)
		return code, out.String(), errb.String()
	}
	code, out, errs := seed("-log", logPath)
	if code != 0 {
		t.Fatalf("first run: exit %d: %s%s", code, out, errs)
	}
	if want := "simulated measured boot of " + s.ServerAddr + " as build-a (for tests and development clouds, never production)"; !strings.Contains(out, want) {
		t.Errorf("first run says %q, want %q", out, want)
	}
	booted := readPCR(t, s, "sha256", 4)
	logBefore, err := os.ReadFile(logPath)
	if err != nil {
		t.Fatal(err)
	}
	if code, out, errs := seed("-log", logPath); code != 0 || !strings.Contains(out, "has booted already, as "+logPath+" records: left alone") {
		t.Errorf("second run with the log of that boot: exit %d: %s%s", code, out, errs)
	}
	// A log of another build, as a different boot would have left.
	other := filepath.Join(dir, "other")
	b, _, err := BuildLog(BuildB(), []eventlog.Alg{eventlog.SHA1, eventlog.SHA256, eventlog.SHA384, eventlog.SHA512})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(other, b, 0o600); err != nil {
		t.Fatal(err)
	}
	for name, path := range map[string]string{"missing log": filepath.Join(dir, "missing"), "other boot": other} {
		if code, _, errs := seed("-log", path); code != 1 || !strings.Contains(errs, "has booted already (PCRs 0-9 are extended)") {
			t.Errorf("%s: exit %d, stderr %q; want 1 and that the TPM has booted", name, code, errs)
		}
	}
	if got := readPCR(t, s, "sha256", 4); !bytes.Equal(got, booted) {
		t.Errorf("PCR 4 moved from %x to %x: a later run extended it", booted, got)
	}
	if got, _ := os.ReadFile(logPath); !bytes.Equal(got, logBefore) {
		t.Error("the log of the boot was rewritten")
	}
}

// TestDeviceMustBeVirtual: -device takes only a TPM that sysfs shows under
// devices/virtual (the vtpm proxy's); a hardware TPM, a device that is no
// TPM and sysfs without the chip are refused before the device is opened.
func TestDeviceMustBeVirtual(t *testing.T) {
	sysfs := t.TempDir()
	for n, where := range map[string]string{"0": "devices/platform/MSFT0101:00/tpm/tpm0", "1": "devices/virtual/tpm/tpm1"} {
		if err := os.MkdirAll(filepath.Join(sysfs, where), 0o750); err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(filepath.Join(sysfs, "class", "tpm"), 0o750); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(filepath.Join("..", "..", where), filepath.Join(sysfs, "class", "tpm", "tpm"+n)); err != nil {
			t.Fatal(err)
		}
	}
	dev := t.TempDir()
	tests := []struct {
		name string
		args []string
		code int
		want string
	}{
		{"hardware TPM", []string{"-device", "/dev/tpmrm0"}, 1, "is a hardware TPM"},
		{"hardware TPM, raw device", []string{"-device", "/dev/tpm0"}, 1, "is a hardware TPM"},
		{"no such chip", []string{"-device", "/dev/tpmrm7"}, 1, "cannot tell whether it is virtual"},
		{"not a TPM", []string{"-device", "/dev/sda"}, 1, "want /dev/tpmN or /dev/tpmrmN"},
		{"both", []string{"-device", "/dev/tpmrm1", "-swtpm", "127.0.0.1:1"}, 2, "exclude each other"},
		// Virtual: accepted, then opened (nothing there on this machine).
		{"virtual", []string{"-device", filepath.Join(dev, "tpmrm1"), "-wait", "0s"}, 1, filepath.Join(dev, "tpmrm1")},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			dial := func(context.Context, string, time.Duration) (transport.TPMCloser, error) {
				t.Error("dialled a swtpm")
				return nil, os.ErrInvalid
			}
			args := append([]string{"-sysfs", sysfs, "-log", filepath.Join(t.TempDir(), "log")}, tc.args...)
			code := Main(t.Context(), args, dial, &out, &errb)
			if code != tc.code || !strings.Contains(errb.String(), tc.want) {
				t.Errorf("exit %d, stderr %q; want %d containing %q", code, errb.String(), tc.code, tc.want)
			}
			if tc.name == "virtual" && strings.Contains(errb.String(), "virtual") {
				t.Errorf("the virtual TPM was refused: %s", errb.String())
			}
		})
	}
}
