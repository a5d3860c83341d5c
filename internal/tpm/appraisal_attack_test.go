package tpm_test

import (
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/trustpool/trustpool/internal/bootseed"
	"github.com/trustpool/trustpool/internal/eventlog"
	"github.com/trustpool/trustpool/internal/evidence"
	"github.com/trustpool/trustpool/internal/policy"
	"github.com/trustpool/trustpool/internal/tpm"
)

// Appraisal attacks: a root user on a booted host (or one who edited the
// boot configuration and rebooted) makes the reported boot facts lie. Each
// case builds the boot the way the attack would produce it: the TPM's PCRs
// are really extended with every event the TPM would have seen (bootseed),
// the agent's own code quotes and reads the log, and only what no digest
// covers (event types, names, order across PCRs) is edited in the log file.
// An attack is accepted when Verify succeeds and the profile Learn builds
// by default from a golden host passes; a fact lies when it reports the
// golden host's value although the host booted something else.

// seed boots the host's TPM (which must be in its reset state) with evs and
// writes their log for the agent.
func (h *host) seed(evs []bootseed.Event) {
	h.t.Helper()
	c := h.raw()
	defer c.Close()
	if _, err := bootseed.SeedEvents(h.t.Context(), c, evs); err != nil {
		h.t.Fatalf("seed: %v", err)
	}
	h.writeLog(evs)
	for _, f := range []string{"binary_runtime_measurements", "binary_runtime_measurements_sha256"} {
		os.Remove(filepath.Join(h.dir, f))
	}
	h.imaOff = 0
}

// writeLog replaces the agent's event log file with evs, without touching
// the TPM (edits of what no digest covers).
func (h *host) writeLog(evs []bootseed.Event) {
	h.t.Helper()
	c := h.raw()
	algs, err := bootseed.ActiveBanks(c)
	c.Close()
	if err != nil {
		h.t.Fatal(err)
	}
	log, _, err := bootseed.EncodeLog(evs, algs)
	if err != nil {
		h.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(h.dir, "binary_bios_measurements"), log, 0o600); err != nil {
		h.t.Fatal(err)
	}
}

// extendAfterBoot extends the TPM with evs, as root can at any time.
func (h *host) extendAfterBoot(evs ...bootseed.Event) {
	h.t.Helper()
	c := h.raw()
	defer c.Close()
	algs, err := bootseed.ActiveBanks(c)
	if err != nil {
		h.t.Fatal(err)
	}
	_, exts, err := bootseed.EncodeLog(evs, algs)
	if err != nil {
		h.t.Fatal(err)
	}
	if err := bootseed.Apply(c, exts); err != nil {
		h.t.Fatal(err)
	}
}

// beforeEBS inserts evs before ExitBootServices: the order of events of
// different PCRs is not covered by any digest, so a careful attacker puts
// late extends where boot-time ones would be.
func beforeEBS(log []bootseed.Event, evs ...bootseed.Event) []bootseed.Event {
	i := slices.IndexFunc(log, func(e bootseed.Event) bool {
		return e.PCR == 5 && e.Type == eventlog.EvEFIAction && string(e.Data) == "Exit Boot Services Invocation"
	})
	return slices.Concat(log[:i], evs, log[i:])
}

// replaceFirst replaces the first event matching f with rs.
func replaceFirst(t *testing.T, log []bootseed.Event, f func(e bootseed.Event) bool, rs ...bootseed.Event) []bootseed.Event {
	t.Helper()
	i := slices.IndexFunc(log, f)
	if i < 0 {
		t.Fatal("no such event")
	}
	return slices.Concat(log[:i], rs, log[i+1:])
}

func isKernelFile(v bootseed.Variant) func(e bootseed.Event) bool {
	return func(e bootseed.Event) bool { return e.PCR == 9 && string(e.Data) == v.KernelPath+"\x00" }
}

func isGrubString(s string) func(e bootseed.Event) bool {
	return func(e bootseed.Event) bool { return e.PCR == 8 && string(e.Data) == s+"\x00" }
}

type appraisalAttack struct {
	name string
	// boot builds the attacked host: seeds h (in its reset state) and
	// edits its log.
	boot func(t *testing.T, h *host)
	// lies are facts that must not report the golden value after the
	// attack (their true value differs). Facts only trustworthy under
	// pinned PCRs are not listed.
	lies []string
	// verify is the eventlog rule Verify must reject with (wrapped in
	// evidence.ErrEventData); nil: Verify accepts and the profile must
	// fail with reasons starting with each of reasons.
	verify  error
	reasons []string
}

// evilKernel is build A with a different kernel at the same path.
func evilKernel() bootseed.Variant {
	v := bootseed.BuildA()
	v.Kernel = []byte("rootkit vmlinuz")
	return v
}

func appraisalAttacks() []appraisalAttack {
	a := bootseed.BuildA()
	goldenCmdline := bootseed.GrubString("kernel_cmdline: " + a.KernelPath + " " + a.Cmdline)
	return []appraisalAttack{
		{
			// Booted with init=/bin/sh; root then extends PCR 8 with the
			// golden command line and appends its event to the log.
			name:   "cmdline_extended_after_boot",
			verify: eventlog.ErrEventOrder,
			boot: func(t *testing.T, h *host) {
				t.Helper()
				evs := bootseed.Events(bootseed.Drifted())
				h.seed(evs)
				h.extendAfterBoot(goldenCmdline)
				h.writeLog(append(evs, goldenCmdline))
			},
			lies: []string{eventlog.FactKernelCmdline},
		},
		{
			// The same, with the late event moved before ExitBootServices.
			name:    "cmdline_extended_after_boot_logged_before_ebs",
			reasons: []string{"pcr 8:", "fact kernel_cmdline: not established"},
			boot: func(t *testing.T, h *host) {
				t.Helper()
				evs := bootseed.Events(bootseed.Drifted())
				h.seed(evs)
				h.extendAfterBoot(goldenCmdline)
				h.writeLog(beforeEBS(evs, goldenCmdline))
			},
			lies: []string{eventlog.FactKernelCmdline},
		},
		{
			// Booted an evil kernel; root extends PCR 9 with the golden
			// kernel's digest under the kernel's file name.
			name:    "kernel_extended_after_boot",
			reasons: []string{"pcr 9:", "fact kernel: not established"},
			boot: func(t *testing.T, h *host) {
				t.Helper()
				evs := bootseed.Events(evilKernel())
				h.seed(evs)
				golden := bootseed.GrubFile(a.KernelPath, a.Kernel)
				h.extendAfterBoot(golden)
				h.writeLog(beforeEBS(evs, golden))
			},
			lies: []string{eventlog.FactKernel},
		},
		{
			// grub.cfg loads a golden copy of the kernel, then the evil
			// kernel from another partition under the same path, with the
			// golden command line; the evil kernel's PCR 9 event is renamed
			// in the log (names are not covered by any digest).
			name:    "grub_cfg_loads_golden_copy_first",
			reasons: []string{"pcr 8:", "pcr 9:", "fact kernel: not established", "fact kernel_cmdline: not established"},
			boot: func(t *testing.T, h *host) {
				t.Helper()
				evil := evilKernel()
				linux := "linux " + a.KernelPath + " " + a.Cmdline
				evs := replaceFirst(t, bootseed.Events(evil), isGrubString("grub_cmd: "+linux),
					bootseed.GrubCommand(linux),
					bootseed.GrubFile(a.KernelPath, a.Kernel),
					goldenCmdline,
					bootseed.GrubCommand("set root=hd0,gpt3"),
					bootseed.GrubCommand(linux))
				h.seed(evs)
				i := slices.IndexFunc(evs, func(e bootseed.Event) bool { return e.PCR == 9 && string(e.Measured) == string(evil.Kernel) })
				evs[i].Data = []byte("(hd0,gpt2)/boot/grub/x86_64-efi/normal.mod\x00")
				h.writeLog(evs)
			},
			lies: []string{eventlog.FactKernel},
		},
		{
			// One linux command, but grub.cfg also reads a golden copy of
			// the kernel with another command; the names of the two PCR 9
			// events are swapped in the log. Which PCR 9 event is the
			// kernel rests on unhashed names: only a pinned PCR 9 (which
			// Learn adds by default) catches this.
			name:    "pcr9_names_swapped",
			reasons: []string{"pcr 8:", "pcr 9:"},
			boot: func(t *testing.T, h *host) {
				t.Helper()
				evil := evilKernel()
				evs := replaceFirst(t, bootseed.Events(evil), isKernelFile(evil),
					bootseed.GrubFile(a.KernelPath, evil.Kernel))
				evs = replaceFirst(t, evs, isGrubString("grub_cmd: set root=hd0,gpt2"),
					bootseed.GrubCommand("set root=hd0,gpt2"),
					bootseed.GrubCommand("cat /boot/vmlinuz-6.1.0-13-amd64.bak"),
					bootseed.GrubFile("/boot/vmlinuz-6.1.0-13-amd64.bak", a.Kernel))
				h.seed(evs)
				for i := range evs {
					switch {
					case evs[i].PCR == 9 && string(evs[i].Measured) == string(a.Kernel):
						evs[i].Data = []byte(a.KernelPath + "\x00")
					case evs[i].PCR == 9 && string(evs[i].Measured) == string(evil.Kernel):
						evs[i].Data = []byte("/boot/vmlinuz-6.1.0-13-amd64.bak\x00")
					}
				}
				h.writeLog(evs)
			},
		},
		{
			// The genuine kernel_cmdline event is relabelled (GRUB's digest
			// covers only the text after the prefix) and the golden one
			// extended after boot: only a pinned PCR 8 catches this.
			name:    "cmdline_relabelled_and_extended_after_boot",
			reasons: []string{"pcr 8:"},
			boot: func(t *testing.T, h *host) {
				t.Helper()
				d := bootseed.Drifted()
				evs := bootseed.Events(d)
				h.seed(evs)
				h.extendAfterBoot(goldenCmdline)
				real := "kernel_cmdline: " + d.KernelPath + " " + d.Cmdline
				evs = replaceFirst(t, evs, isGrubString(real), bootseed.GrubString("grub_cmd: "+d.KernelPath+" "+d.Cmdline))
				h.writeLog(beforeEBS(evs, goldenCmdline))
			},
		},
		{
			// An evil EFI application runs before shim and chain-loads it;
			// its PCR 4 event is retyped as a boot-services driver.
			name:   "efi_app_retyped_as_driver",
			verify: eventlog.ErrEventType,
			boot: func(t *testing.T, h *host) {
				t.Helper()
				evs := bootseed.Events(a)
				i := slices.IndexFunc(evs, func(e bootseed.Event) bool { return e.PCR == 4 && string(e.Measured) == string(a.Shim) })
				evil := bootseed.Event{PCR: 4, Type: eventlog.EvEFIBootServicesApp, Measured: []byte("evil.efi"), Data: bootseed.ImageLoadEvent(`\EFI\BOOT\BOOTX64.EFI`)}
				evs = slices.Insert(evs, i, evil)
				h.seed(evs)
				evs[i].Type = eventlog.EvEFIBootServicesDriver
				h.writeLog(evs)
			},
			lies: []string{eventlog.FactBootloader, eventlog.FactBootApplications},
		},
		{
			// An extra (evil) firmware volume, logged as EV_NONHOST_INFO.
			name:    "firmware_volume_retyped_as_nonhost_info",
			reasons: []string{"pcr 0:"},
			boot: func(t *testing.T, h *host) {
				t.Helper()
				evilFV := []byte("DXE volume with an implant")
				evs := bootseed.Events(a)
				i := slices.IndexFunc(evs, func(e bootseed.Event) bool { return e.Type == eventlog.EvEFIPlatformFirmware }) + 1
				evs = slices.Insert(evs, i, bootseed.Event{PCR: 0, Type: eventlog.EvEFIPlatformFirmware, Measured: evilFV, Data: bootseed.FirmwareBlobData(7, evilFV)})
				h.seed(evs)
				evs[i].Type = eventlog.EvNonhostInfo
				h.writeLog(evs)
			},
			lies: []string{eventlog.FactFirmwareBlobs},
		},
		{
			// Secure Boot off; root extends PCR 7 with SecureBoot=1 and
			// appends its event after PCR 7's separator.
			name:   "secureboot_variable_after_separator",
			verify: eventlog.ErrEventOrder,
			boot: func(t *testing.T, h *host) {
				t.Helper()
				evs := bootseed.Events(bootseed.SecureBootOff())
				h.seed(evs)
				sb := bootseed.VariableData(bootseed.EFIGlobalVariable, "SecureBoot", []byte{1})
				late := bootseed.Event{PCR: 7, Type: eventlog.EvEFIVariableDriverConf, Measured: sb, Data: sb}
				h.extendAfterBoot(late)
				h.writeLog(beforeEBS(evs, late))
			},
			lies: []string{eventlog.FactSecureBoot},
		},
	}
}

// TestAppraisalAttacks: no attack is accepted, and no fact listed as
// trustworthy without pinning reports the golden value.
func TestAppraisalAttacks(t *testing.T) {
	for _, at := range appraisalAttacks() {
		t.Run(at.name, func(t *testing.T) {
			b := simBackend(t)
			h, p, now := golden(t, b, tpm.AlgECC)
			goldenFacts := h.prev.Boot.Map()
			b.reboot(t)
			at.boot(t, h)
			res, err := h.attest(t.Context(), now.Add(time.Second))
			if err != nil {
				t.Logf("rejected by Verify: %s: %v", evidence.Reason(err), err)
				if at.verify == nil || !errors.Is(err, evidence.ErrEventData) || !errors.Is(err, at.verify) {
					t.Errorf("Verify = %v, want %v", err, at.verify)
				}
				return
			}
			if at.verify != nil {
				t.Errorf("Verify accepted, want %v", at.verify)
			}
			facts := res.Boot.Map()
			for _, f := range at.lies {
				if v, ok := facts[f]; ok && v == goldenFacts[f] {
					t.Errorf("fact %s reports the golden value %q", f, short(v))
				}
			}
			r := p.Evaluate(policy.Input{PCRs: res.PCRs, Boot: res.Boot, IMA: res.IMA.New})
			if r.Pass {
				t.Errorf("accepted: Verify succeeded and the learned profile passed")
			}
			for _, want := range at.reasons {
				if !hasReason(r.Reasons, want) {
					t.Errorf("profile reasons %q lack %q", r.Reasons, want)
				}
			}
		})
	}
}

// TestIMALaterBootAggregate: only the first IMA entry is boot_aggregate; a
// later entry with that name and an unknown digest must fail the profile.
func TestIMALaterBootAggregate(t *testing.T) {
	b := simBackend(t)
	h, p, now := golden(t, b, tpm.AlgECC)
	h.measure(bootseed.IMAFile{Path: "boot_aggregate", Content: []byte("an implant named boot_aggregate")})
	res, err := h.attest(t.Context(), now.Add(time.Second))
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	if r := p.Evaluate(policy.Input{PCRs: res.PCRs, Boot: res.Boot, IMA: res.IMA.New}); r.Pass || !hasReason(r.Reasons, "ima: boot_aggregate not in allowlist") {
		t.Errorf("a later boot_aggregate entry with an unknown digest: %+v", r)
	}
}

// TestNonceRelayedFromAnotherHost: a nonce issued to compute-1, answered
// by compute-2's TPM (a relay), is refused when presented for compute-2,
// and is then used up for compute-1 too.
func TestNonceRelayedFromAnotherHost(t *testing.T) {
	other := newHost(t, simBackend(t).open, tpm.AlgECC)
	other.boot(bootseed.BuildA())
	other.enroll(t.Context())
	now := time.Now()
	ledger := evidence.NewLedger(time.Minute)
	issued, err := ledger.Issue(rand.Reader, now, "compute-1", bootPCRs)
	if err != nil {
		t.Fatal(err)
	}
	ev := other.collect(t.Context(), issued)
	if len(ev.Attest) == 0 {
		t.Fatal("no quote")
	}
	_, err = ledger.Consume("compute-2", issued.Nonce, now)
	wantErr(t, err, evidence.ErrNonceHost)
	_, err = ledger.Consume("compute-1", issued.Nonce, now)
	wantErr(t, err, evidence.ErrNonceReused)
}

func short(s string) string {
	if len(s) > 24 {
		return s[:24] + "…"
	}
	return s
}
