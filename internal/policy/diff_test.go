package policy_test

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/trustpool/trustpool/internal/policy"
)

func TestDiff(t *testing.T) {
	hex := func(c string) string { return strings.Repeat(c, 64) }
	a := &policy.Profile{Name: "p",
		Facts: map[string][]string{"kernel": {hex("a")}, "kernel_path": {"/boot/vmlinuz-6.1.0-18-amd64"},
			"kernel_cmdline": {"root=/dev/sda1 ro"}, "secure_boot": {"enabled"}, "initrd": {hex("1")}},
		PCRs: map[string][]string{"0": {hex("0")}, "4": {hex("4")}, "7": {hex("7")}, "9": {hex("9")}, "10": {hex("b")}},
		IMA:  &policy.IMARules{Allowlist: map[string][]string{"/bin/a": {"sha256:aa"}, "/bin/b": {"sha256:bb"}}},
	}
	b := &policy.Profile{Name: "p",
		Facts: map[string][]string{"kernel": {hex("c")}, "kernel_path": {"/boot/vmlinuz-6.1.0-21-amd64"},
			"kernel_cmdline": {"root=/dev/sda1 ro"}, "secure_boot": {"enabled"}, "bootloader": {hex("2")}},
		PCRs: map[string][]string{"0": {hex("0")}, "4": {hex("5")}, "7": {hex("7")}, "9": {hex("8"), hex("9")}, "8": {hex("8")}},
		IMA:  &policy.IMARules{Allowlist: map[string][]string{"/bin/a": {"sha256:ab"}, "/bin/c": {"sha256:cc"}}},
	}
	want := []string{
		"Secure Boot unchanged",
		"boot loader digest now checked",
		"kernel vmlinuz-6.1.0-18-amd64 → vmlinuz-6.1.0-21-amd64",
		"kernel digest changed",
		"cmdline unchanged",
		"initrd digest no longer checked",
		"PCRs 4 and 9 differ",
		"PCRs 0 and 7 unchanged",
		"PCR 8 now pinned",
		"PCR 10 no longer pinned",
		"IMA allowlist: 1 file added, 1 removed, 1 with other digests",
	}
	if d := cmp.Diff(want, policy.Diff(a, b)); d != "" {
		t.Errorf("Diff (-want +got):\n%s", d)
	}
	for _, line := range policy.Diff(a, a) {
		if !strings.HasSuffix(line, "unchanged") {
			t.Errorf("Diff(a, a): %q", line)
		}
	}
	// Profiles learned with the default facts have no kernel path: the
	// kernel's name comes from the measured command line, which is
	// otherwise unchanged.
	cmdA := &policy.Profile{Facts: map[string][]string{"kernel": {hex("a")},
		"kernel_cmdline": {"/boot/vmlinuz-6.1.0-18-amd64 root=/dev/sda1 ro"}}}
	cmdB := &policy.Profile{Facts: map[string][]string{"kernel": {hex("c")},
		"kernel_cmdline": {"/boot/vmlinuz-6.1.0-21-amd64 root=/dev/sda1 ro"}}}
	cmdC := &policy.Profile{Facts: map[string][]string{"kernel": {hex("c")},
		"kernel_cmdline": {"/boot/vmlinuz-6.1.0-21-amd64 root=/dev/sda1 ro quiet"}}}
	for _, tc := range []struct {
		a, b *policy.Profile
		want []string
	}{
		{cmdA, cmdB, []string{"kernel vmlinuz-6.1.0-18-amd64 → vmlinuz-6.1.0-21-amd64", "kernel digest changed",
			"cmdline unchanged apart from the kernel's path"}},
		{cmdA, cmdC, []string{"kernel vmlinuz-6.1.0-18-amd64 → vmlinuz-6.1.0-21-amd64", "kernel digest changed", "cmdline changed"}},
		{cmdB, cmdC, []string{"kernel digest unchanged", "cmdline changed"}},
	} {
		if d := cmp.Diff(tc.want, policy.Diff(tc.a, tc.b)); d != "" {
			t.Errorf("Diff from the command line (-want +got):\n%s", d)
		}
	}
	if got := policy.Diff(&policy.Profile{PCRs: a.PCRs}, &policy.Profile{PCRs: a.PCRs, IMA: a.IMA}); got[len(got)-1] != "IMA appraisal added (2 files allowed)" {
		t.Errorf("Diff adding IMA = %q", got)
	}
}
