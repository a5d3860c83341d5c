package policy

import (
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"

	"github.com/trustpool/trustpool/internal/eventlog"
)

// factWords name boot facts as an operator says them; digests say so.
var factWords = map[string]string{
	eventlog.FactSecureBoot:       "Secure Boot",
	eventlog.FactCRTMVersion:      "CRTM version",
	eventlog.FactFirmwareBlobs:    "firmware blobs",
	eventlog.FactBootApplications: "boot applications",
	eventlog.FactBootloader:       "boot loader digest",
	eventlog.FactKernel:           "kernel digest",
	eventlog.FactKernelPath:       "kernel",
	eventlog.FactKernelCmdline:    "cmdline",
	eventlog.FactInitrd:           "initrd digest",
	eventlog.FactInitrdPath:       "initrd",
}

// factOrder is the boot order the facts are listed in; other facts (the
// Secure Boot variables) follow by name.
var factOrder = []string{eventlog.FactCRTMVersion, eventlog.FactFirmwareBlobs, eventlog.FactSecureBoot, eventlog.FactBootloader,
	eventlog.FactBootApplications, eventlog.FactKernelPath, eventlog.FactKernel, eventlog.FactKernelCmdline,
	eventlog.FactInitrdPath, eventlog.FactInitrd}

// Diff says what changed from profile a to profile b, one line per item,
// in the words of the boot: each boot fact either profile checks
// (unchanged, changed with its old and new value when that is short
// text, or checked by one only), then the PCRs (which differ, which are
// unchanged, which only one pins), then IMA appraisal. It compares the
// accepted values as sets.
func Diff(a, b *Profile) []string {
	var out []string
	names := map[string]bool{}
	for k := range a.Facts {
		names[k] = true
	}
	for k := range b.Facts {
		names[k] = true
	}
	ordered := slices.DeleteFunc(slices.Clone(factOrder), func(k string) bool { return !names[k] })
	for _, k := range slices.Sorted(maps.Keys(names)) {
		if !slices.Contains(factOrder, k) {
			ordered = append(ordered, k)
		}
	}
	for _, k := range ordered {
		word := factWords[k]
		if word == "" {
			word = k
		}
		va, ina := a.Facts[k]
		vb, inb := b.Facts[k]
		switch {
		case !inb:
			out = append(out, word+" no longer checked")
		case !ina:
			out = append(out, word+" now checked")
		case sameSet(va, vb):
			out = append(out, word+" unchanged")
		case k == eventlog.FactKernel && kernelsFromCmdline(a, b) != "":
			// Profiles learned with the default facts pin the kernel's
			// digest, not its path; the command line GRUB measured
			// starts with that path, which names the version.
			out = append(out, kernelsFromCmdline(a, b), word+" changed")
		case k == eventlog.FactKernelCmdline && len(va) == 1 && len(vb) == 1 && cmdlineArgs(va[0]) == cmdlineArgs(vb[0]):
			out = append(out, word+" unchanged apart from the kernel's path")
		case len(va) == 1 && len(vb) == 1 && readable(va[0]) && readable(vb[0]):
			out = append(out, fmt.Sprintf("%s %s → %s", word, shortPath(k, va[0]), shortPath(k, vb[0])))
		default:
			out = append(out, word+" changed")
		}
	}
	var differ, same, gone, added []string
	pcrs := map[int]bool{}
	for k := range a.PCRs {
		i, _ := strconv.Atoi(k)
		pcrs[i] = true
	}
	for k := range b.PCRs {
		i, _ := strconv.Atoi(k)
		pcrs[i] = true
	}
	for _, i := range slices.Sorted(maps.Keys(pcrs)) {
		k := strconv.Itoa(i)
		va, ina := a.PCRs[k]
		vb, inb := b.PCRs[k]
		switch {
		case !inb:
			gone = append(gone, k)
		case !ina:
			added = append(added, k)
		case sameSet(va, vb):
			same = append(same, k)
		default:
			differ = append(differ, k)
		}
	}
	if len(differ) > 0 {
		out = append(out, pcrList(differ)+" differ")
	}
	if len(same) > 0 {
		out = append(out, pcrList(same)+" unchanged")
	}
	if len(added) > 0 {
		out = append(out, pcrList(added)+" now pinned")
	}
	if len(gone) > 0 {
		out = append(out, pcrList(gone)+" no longer pinned")
	}
	return append(out, imaDiff(a.IMA, b.IMA)...)
}

func imaDiff(a, b *IMARules) []string {
	switch {
	case a == nil && b == nil:
		return nil
	case a == nil:
		return []string{fmt.Sprintf("IMA appraisal added (%s allowed)", files(len(b.Allowlist)))}
	case b == nil:
		return []string{"IMA appraisal removed"}
	}
	var added, removed, changed int
	for f, ds := range b.Allowlist {
		old, ok := a.Allowlist[f]
		switch {
		case !ok:
			added++
		case !sameSet(old, ds):
			changed++
		}
	}
	for f := range a.Allowlist {
		if _, ok := b.Allowlist[f]; !ok {
			removed++
		}
	}
	var out []string
	if added+removed+changed == 0 {
		out = append(out, "IMA allowlist unchanged")
	} else {
		out = append(out, fmt.Sprintf("IMA allowlist: %s added, %d removed, %d with other digests", files(added), removed, changed))
	}
	if !sameSet(a.Exclude, b.Exclude) {
		out = append(out, "IMA exclusions changed")
	}
	if a.AllowViolations != b.AllowViolations {
		out = append(out, fmt.Sprintf("IMA violations allowed: %v → %v", a.AllowViolations, b.AllowViolations))
	}
	return out
}

func sameSet(a, b []string) bool {
	x, y := slices.Clone(a), slices.Clone(b)
	slices.Sort(x)
	slices.Sort(y)
	return slices.Equal(slices.Compact(x), slices.Compact(y))
}

// cmdlineImage splits a measured kernel command line into the kernel
// image GRUB names first ("/boot/vmlinuz-6.1.0-18-amd64 root=…") and the
// rest; image is "" when the line does not start with a path.
func cmdlineImage(c string) (image, args string) {
	first, rest, _ := strings.Cut(c, " ")
	if strings.HasPrefix(first, "/") || strings.HasPrefix(first, "(") {
		return first, rest
	}
	return "", c
}

func cmdlineArgs(c string) string { _, args := cmdlineImage(c); return args }

// kernelsFromCmdline is "kernel A → B" from the image paths at the start
// of a's and b's single command lines, when neither profile pins the
// kernel's path itself (that line says it) and the paths differ; else "".
func kernelsFromCmdline(a, b *Profile) string {
	_, pa := a.Facts[eventlog.FactKernelPath]
	_, pb := b.Facts[eventlog.FactKernelPath]
	ca, cb := a.Facts[eventlog.FactKernelCmdline], b.Facts[eventlog.FactKernelCmdline]
	if pa && pb || len(ca) != 1 || len(cb) != 1 {
		return ""
	}
	ia, _ := cmdlineImage(ca[0])
	ib, _ := cmdlineImage(cb[0])
	if ia == "" || ib == "" || ia == ib {
		return ""
	}
	return fmt.Sprintf("kernel %s → %s", shortPath(eventlog.FactKernelPath, ia), shortPath(eventlog.FactKernelPath, ib))
}

// readable reports a value worth showing whole: short text, not a digest.
func readable(v string) bool {
	if len(v) > 48 || len(v) == 0 {
		return false
	}
	return strings.Trim(strings.ToLower(v), "0123456789abcdef") != ""
}

// shortPath shows a kernel or initrd path by its file name, which carries
// the version ("vmlinuz-6.1.0-18-amd64").
func shortPath(fact, v string) string {
	if fact == eventlog.FactKernelPath || fact == eventlog.FactInitrdPath {
		if i := strings.LastIndex(v, "/"); i >= 0 && i < len(v)-1 {
			return v[i+1:]
		}
	}
	return v
}

func pcrList(idx []string) string {
	if len(idx) == 1 {
		return "PCR " + idx[0]
	}
	return "PCRs " + strings.Join(idx[:len(idx)-1], ", ") + " and " + idx[len(idx)-1]
}

func files(n int) string {
	if n == 1 {
		return "1 file"
	}
	return strconv.Itoa(n) + " files"
}
