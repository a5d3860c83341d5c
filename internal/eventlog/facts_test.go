package eventlog_test

import (
	"encoding/hex"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/trustpool/trustpool/internal/bootseed"
	"github.com/trustpool/trustpool/internal/eventlog"
)

func hexSum(b []byte) string { return hex.EncodeToString(eventlog.SHA256.Sum(b)) }

// factsOf encodes evs (SHA-1 and SHA-256 banks) and extracts the facts of
// the PCRs in use (nil: all).
func factsOf(t *testing.T, evs []bootseed.Event, use func(uint32) bool) *eventlog.BootFacts {
	t.Helper()
	log, _, err := bootseed.EncodeLog(evs, []eventlog.Alg{eventlog.SHA1, eventlog.SHA256})
	if err != nil {
		t.Fatal(err)
	}
	l, err := eventlog.Parse(log)
	if err != nil {
		t.Fatal(err)
	}
	f, err := eventlog.ExtractBootFacts(l, eventlog.SHA256, use)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func insertAt(evs []bootseed.Event, f func(e bootseed.Event) bool, ins ...bootseed.Event) []bootseed.Event {
	i := slices.IndexFunc(evs, f)
	if i < 0 {
		panic("no such event")
	}
	return slices.Insert(slices.Clone(evs), i, ins...)
}

func isEBS(e bootseed.Event) bool {
	return e.PCR == 5 && string(e.Data) == "Exit Boot Services Invocation"
}

func isType(pcr int, typ eventlog.EventType) func(e bootseed.Event) bool {
	return func(e bootseed.Event) bool { return e.PCR == pcr && e.Type == typ }
}

// TestExtractBootFactsRules: each fact comes from the boot phase that
// produces it, every measurement of PCRs 0 and 4 is accounted for
// whatever its type says, and a fact the events do not establish
// unambiguously is withheld with a reason.
func TestExtractBootFactsRules(t *testing.T) {
	a := bootseed.BuildA()
	base := bootseed.Events(a)
	golden := factsOf(t, base, nil)
	want := &eventlog.BootFacts{
		Version: eventlog.FactsVersion, Bank: "sha256", SecureBoot: eventlog.SecureBootEnabled,
		CRTMVersion:   a.CRTMVersion,
		FirmwareBlobs: []string{hexSum(a.Firmware[0]), hexSum(a.Firmware[1])},
		Bootloader:    hexSum(a.Shim), BootApplications: []string{hexSum(a.Shim), hexSum(a.Grub)},
		BootApplicationPaths: []string{`\EFI\debian\shimx64.efi`, `\EFI\debian\grubx64.efi`},
		Kernel:               hexSum(a.Kernel), KernelPath: a.KernelPath, KernelCmdline: a.KernelPath + " " + a.Cmdline,
		Initrd: hexSum(a.Initrd), InitrdPath: a.InitrdPath,
	}
	want.SecureBootVariables = golden.SecureBootVariables
	if diff := cmp.Diff(want, golden); diff != "" || len(golden.SecureBootVariables) != 5 {
		t.Fatalf("build-a facts (-want +got):\n%s", diff)
	}
	sbVar := func(on byte) bootseed.Event {
		d := bootseed.VariableData(bootseed.EFIGlobalVariable, "SecureBoot", []byte{on})
		return bootseed.Event{PCR: 7, Type: eventlog.EvEFIVariableDriverConf, Measured: d, Data: d}
	}
	cmdline := bootseed.GrubString("kernel_cmdline: " + a.KernelPath + " quiet")
	otherKernel := bootseed.GrubFile(a.KernelPath, []byte("another kernel"))
	cases := []struct {
		name string
		evs  []bootseed.Event
		use  func(uint32) bool
		// check returns what is wrong with f.
		check func(f *eventlog.BootFacts) string
	}{
		{"second_kernel_cmdline_withheld", insertAt(base, isEBS, cmdline), nil, withheld(eventlog.FactKernelCmdline)},
		{"second_linux_command_withheld", insertAt(base, isEBS, bootseed.GrubCommand("linux /boot/evil quiet")), nil,
			withheld(eventlog.FactKernelPath, eventlog.FactKernel)},
		{"second_kernel_file_withheld", insertAt(base, isEBS, otherKernel), nil, withheld(eventlog.FactKernel)},
		{"kernel_file_renamed_withheld", renameKernel(base, a), nil, withheld(eventlog.FactKernel)},
		{"second_initrd_command_withheld", insertAt(base, isEBS, bootseed.GrubCommand("initrd /boot/other")), nil,
			withheld(eventlog.FactInitrdPath, eventlog.FactInitrd)},
		{"opaque_pcr8_event_withholds_grub_facts", insertAt(base, isEBS, bootseed.Event{PCR: 8, Type: eventlog.EvIPL, Measured: []byte("x"), Data: []byte("kernel_cmdline is elsewhere\x00")}), nil,
			withheld(eventlog.FactKernelCmdline, eventlog.FactKernelPath, eventlog.FactKernel, eventlog.FactInitrdPath, eventlog.FactInitrd)},
		{"relabelled_grub_string_is_opaque", relabel(base, "kernel_cmdline: ", "kernel_cmdlinx: "), nil, withheld(eventlog.FactKernelCmdline)},
		{"late_events_after_exit_boot_services_ignored", append(slices.Clone(base), cmdline, otherKernel, sbVar(0)), nil, same(golden)},
		{"pcr9_not_verified_no_kernel_digest", base, func(p uint32) bool { return p != 9 }, func(f *eventlog.BootFacts) string {
			if f.Kernel != "" || f.Initrd != "" || f.KernelPath != a.KernelPath || len(f.Withheld) != 0 {
				return "kernel digest from an unverified PCR 9"
			}
			return ""
		}},
		{"pcr8_not_verified_no_grub_facts", base, func(p uint32) bool { return p != 8 }, func(f *eventlog.BootFacts) string {
			if f.Kernel != "" || f.KernelPath != "" || f.KernelCmdline != "" {
				return "GRUB facts from an unverified PCR 8"
			}
			return ""
		}},
		{"secure_boot_first_variable_wins", insertAt(base, isType(7, eventlog.EvSeparator), sbVar(0)), nil, func(f *eventlog.BootFacts) string {
			if f.SecureBoot != eventlog.SecureBootEnabled || f.SecureBootVariables["SecureBoot"] != golden.SecureBootVariables["SecureBoot"] {
				return "a second SecureBoot measurement replaced the first"
			}
			return ""
		}},
		{"secure_boot_after_separator_ignored", insertAt(bootseed.Events(bootseed.SecureBootOff()), isEBS, sbVar(1)), nil, func(f *eventlog.BootFacts) string {
			if f.SecureBoot != eventlog.SecureBootDisabled {
				return "SecureBoot read after PCR 7's separator"
			}
			return ""
		}},
		{"retyped_firmware_volume_still_a_blob", retype(insertAt(base, isType(0, eventlog.EvEFIPlatformFirmware),
			bootseed.Event{PCR: 0, Type: eventlog.EvEFIPlatformFirmware, Measured: []byte("implant"), Data: make([]byte, 16)}), "implant", eventlog.EvNonhostInfo), nil,
			blobs(hexSum([]byte("implant")), hexSum(a.Firmware[0]), hexSum(a.Firmware[1]))},
		{"firmware_blob_as_crtm_version_still_a_blob", insertAt(base, isType(0, eventlog.EvEFIPlatformFirmware),
			bootseed.Event{PCR: 0, Type: eventlog.EvSCRTMVersion, Measured: make([]byte, 300), Data: make([]byte, 300)}), nil,
			blobs(hexSum(make([]byte, 300)), hexSum(a.Firmware[0]), hexSum(a.Firmware[1]))},
		{"unverified_crtm_version_is_a_blob", retypeData(base, isType(0, eventlog.EvSCRTMVersion), []byte("v9\x00")), nil, func(f *eventlog.BootFacts) string {
			if f.CRTMVersion != "" || len(f.FirmwareBlobs) != 3 {
				return "a CRTM version that does not hash to its digest was reported"
			}
			return ""
		}},
		{"app_before_pcr4_separator_is_not_the_bootloader", insertAt(base, isType(4, eventlog.EvEFIAction),
			bootseed.Event{PCR: 4, Type: eventlog.EvEFIBootServicesApp, Measured: []byte("firmware setup app"), Data: bootseed.ImageLoadEvent(`\Setup.efi`)}), nil,
			func(f *eventlog.BootFacts) string {
				if f.Bootloader != hexSum(a.Shim) || len(f.BootApplications) != 3 || f.BootApplications[0] != hexSum([]byte("firmware setup app")) {
					return "bootloader is not the first application after PCR 4's separator"
				}
				return ""
			}},
		{"unprintable_action_is_boot_code", insertAt(base, isType(4, eventlog.EvEFIBootServicesApp),
			bootseed.Event{PCR: 4, Type: eventlog.EvEFIAction, Measured: []byte("MZ\x90\x00code"), Data: []byte("MZ\x90\x00code")}), nil,
			func(f *eventlog.BootFacts) string {
				if f.Bootloader != hexSum([]byte("MZ\x90\x00code")) || len(f.BootApplications) != 3 {
					return "code logged as an action is hidden from the boot applications"
				}
				return ""
			}},
		{"rhel_grub_encodings", rhelGrub(base), nil, func(f *eventlog.BootFacts) string {
			if f.KernelCmdline != a.KernelPath+" "+a.Cmdline || f.KernelPath != a.KernelPath || f.Kernel != golden.Kernel || len(f.Withheld) != 0 {
				return "RHEL-style GRUB strings not read"
			}
			return ""
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := factsOf(t, c.evs, c.use)
			if msg := c.check(f); msg != "" {
				t.Errorf("%s: facts %+v", msg, f)
			}
			for k := range f.Withheld {
				if _, ok := f.Map()[k]; ok {
					t.Errorf("withheld fact %s is in Map()", k)
				}
			}
		})
	}
}

func withheld(facts ...string) func(f *eventlog.BootFacts) string {
	return func(f *eventlog.BootFacts) string {
		m := f.Map()
		for _, k := range facts {
			if _, ok := f.Withheld[k]; !ok {
				return k + " not withheld"
			}
			if _, ok := m[k]; ok {
				return k + " reported"
			}
		}
		return ""
	}
}

func same(want *eventlog.BootFacts) func(f *eventlog.BootFacts) string {
	return func(f *eventlog.BootFacts) string {
		if diff := cmp.Diff(want, f); diff != "" {
			return "facts changed:\n" + diff
		}
		return ""
	}
}

func blobs(want ...string) func(f *eventlog.BootFacts) string {
	return func(f *eventlog.BootFacts) string {
		if diff := cmp.Diff(want, f.FirmwareBlobs); diff != "" {
			return "firmware blobs:\n" + diff
		}
		return ""
	}
}

func retype(evs []bootseed.Event, measured string, typ eventlog.EventType) []bootseed.Event {
	evs = slices.Clone(evs)
	for i := range evs {
		if string(evs[i].Measured) == measured {
			evs[i].Type = typ
		}
	}
	return evs
}

func retypeData(evs []bootseed.Event, f func(e bootseed.Event) bool, data []byte) []bootseed.Event {
	evs = slices.Clone(evs)
	evs[slices.IndexFunc(evs, f)].Data = data
	return evs
}

func renameKernel(evs []bootseed.Event, v bootseed.Variant) []bootseed.Event {
	evs = slices.Clone(evs)
	for i := range evs {
		if evs[i].PCR == 9 && string(evs[i].Measured) == string(v.Kernel) {
			evs[i].Data = []byte("/boot/grub/grubenv\x00")
		}
	}
	return evs
}

// relabel changes the prefix of a GRUB string, keeping its digest.
func relabel(evs []bootseed.Event, from, to string) []bootseed.Event {
	evs = slices.Clone(evs)
	for i := range evs {
		if evs[i].PCR == 8 && strings.HasPrefix(string(evs[i].Data), from) {
			evs[i].Data = []byte(to + strings.TrimPrefix(string(evs[i].Data), from))
		}
	}
	return evs
}

// rhelGrub rewrites GRUB's PCR 8 strings the way RHEL 8's GRUB measures
// them: "grub_cmd X" hashed with its NUL, "grub_kernel_cmdline X".
func rhelGrub(evs []bootseed.Event) []bootseed.Event {
	evs = slices.Clone(evs)
	for i := range evs {
		if evs[i].PCR != 8 {
			continue
		}
		s := strings.TrimSuffix(string(evs[i].Data), "\x00")
		switch {
		case strings.HasPrefix(s, "grub_cmd: "):
			text := strings.TrimPrefix(s, "grub_cmd: ")
			evs[i].Data, evs[i].Measured = []byte("grub_cmd "+text+"\x00"), []byte(text+"\x00")
		case strings.HasPrefix(s, "kernel_cmdline: "):
			text := strings.TrimPrefix(s, "kernel_cmdline: ")
			evs[i].Data, evs[i].Measured = []byte("grub_kernel_cmdline "+text+"\x00"), []byte(text)
		}
	}
	return evs
}
