package eventlog

import (
	"bytes"
	"crypto/subtle"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Secure boot states reported in [BootFacts.SecureBoot].
const (
	SecureBootEnabled  = "enabled"
	SecureBootDisabled = "disabled"
	SecureBootUnknown  = "unknown"
)

var efiGlobalVariable = [16]byte{0x61, 0xdf, 0xe4, 0x8b, 0xca, 0x93, 0xd2, 0x11, 0xaa, 0x0d, 0x00, 0xe0, 0x98, 0x03, 0x2b, 0x8c}
var efiImageSecurityDatabase = [16]byte{0xcb, 0xb2, 0x19, 0xd7, 0x3a, 0x3d, 0x96, 0x45, 0xa3, 0xbc, 0xda, 0xd0, 0x0e, 0x67, 0x65, 0x6f}

// maxCRTMVersion caps the data of the EV_S_CRTM_VERSION event reported as
// crtm_version: a version string, not a firmware volume relabelled as one.
const maxCRTMVersion = 256

// FactsVersion identifies the rules [ExtractBootFacts] derives facts by.
// Facts stored with another version were derived by other rules and must
// be derived again from the log (package evidence does so).
const FactsVersion = 2

// BootFacts are the properties of a boot that policies reason about, read
// from the events of one bank. Digests are lowercase hex. The package doc
// says which event each fact comes from and under which pinned PCRs it can
// be trusted.
type BootFacts struct {
	// Version is the [FactsVersion] of the rules that derived the facts.
	Version              int               `json:"version,omitempty"`
	Bank                 string            `json:"bank"`
	SecureBoot           string            `json:"secure_boot"`
	SecureBootVariables  map[string]string `json:"secure_boot_variables,omitempty"`
	CRTMVersion          string            `json:"crtm_version,omitempty"`
	FirmwareBlobs        []string          `json:"firmware_blobs,omitempty"`
	BootApplications     []string          `json:"boot_applications,omitempty"`
	BootApplicationPaths []string          `json:"boot_application_paths,omitempty"`
	Bootloader           string            `json:"bootloader,omitempty"`
	Kernel               string            `json:"kernel,omitempty"`
	KernelPath           string            `json:"kernel_path,omitempty"`
	KernelCmdline        string            `json:"kernel_cmdline,omitempty"`
	Initrd               string            `json:"initrd,omitempty"`
	InitrdPath           string            `json:"initrd_path,omitempty"`
	// Withheld names facts the log mentions but does not establish (fact
	// name -> why), for instance a kernel command line measured twice.
	// A withheld fact is absent from the other fields and from [BootFacts.Map].
	Withheld map[string]string `json:"withheld,omitempty"`
}

// Fact names used by [BootFacts.Map] (and policy files).
const (
	FactSecureBoot       = "secure_boot"
	FactCRTMVersion      = "crtm_version"
	FactFirmwareBlobs    = "firmware_blobs"
	FactBootApplications = "boot_applications"
	FactBootloader       = "bootloader"
	FactKernel           = "kernel"
	FactKernelPath       = "kernel_path"
	FactKernelCmdline    = "kernel_cmdline"
	FactInitrd           = "initrd"
	FactInitrdPath       = "initrd_path"
	// FactSecureBootVariablePrefix + variable name ("secure_boot_var.db").
	FactSecureBootVariablePrefix = "secure_boot_var."
)

// FactPCRs returns the PCRs whose events fact is read from (nil for an
// unknown fact), and whether the fact is trustworthy only when a profile
// also pins their values (see the package doc): true for the GRUB facts.
func FactPCRs(fact string) (pcrs []int, mustPin bool) {
	switch fact {
	case FactCRTMVersion, FactFirmwareBlobs:
		return []int{0}, false
	case FactBootApplications, FactBootloader:
		return []int{4}, false
	case FactSecureBoot:
		return []int{7}, false
	case FactKernelCmdline, FactKernelPath, FactInitrdPath:
		return []int{8}, true
	case FactKernel, FactInitrd:
		return []int{8, 9}, true
	}
	if strings.HasPrefix(fact, FactSecureBootVariablePrefix) {
		return []int{7}, false
	}
	return nil, false
}

// Map flattens the facts into name -> value; lists are joined with ",".
// Empty and withheld facts are omitted.
func (f *BootFacts) Map() map[string]string {
	m := map[string]string{FactSecureBoot: f.SecureBoot}
	set := func(k, v string) {
		if v != "" {
			m[k] = v
		}
	}
	set(FactCRTMVersion, f.CRTMVersion)
	set(FactFirmwareBlobs, strings.Join(f.FirmwareBlobs, ","))
	set(FactBootApplications, strings.Join(f.BootApplications, ","))
	set(FactBootloader, f.Bootloader)
	set(FactKernel, f.Kernel)
	set(FactKernelPath, f.KernelPath)
	set(FactKernelCmdline, f.KernelCmdline)
	set(FactInitrd, f.Initrd)
	set(FactInitrdPath, f.InitrdPath)
	for k, v := range f.SecureBootVariables {
		set(FactSecureBootVariablePrefix+k, v)
	}
	for k := range f.Withheld {
		delete(m, k)
	}
	return m
}

func (f *BootFacts) withhold(fact, format string, a ...any) {
	if f.Withheld == nil {
		f.Withheld = map[string]string{}
	}
	if _, ok := f.Withheld[fact]; !ok {
		f.Withheld[fact] = fmt.Sprintf(format, a...)
	}
}

// ExtractBootFacts reads [BootFacts] from the events of bank alg in PCRs
// included by use (nil: all PCRs), following the rules of the package doc:
// each fact comes from the boot phase that produces it, and a fact the
// events do not establish unambiguously is withheld. Callers verifying
// evidence pass only the PCRs whose replay matched a verified quote, and
// must have run [CheckEvents] first (it rejects the events after their
// boot phase that this function ignores).
func ExtractBootFacts(l *Log, alg Alg, use func(pcr uint32) bool) (*BootFacts, error) {
	if !l.HasBank(alg) {
		return nil, fmt.Errorf("extract boot facts: %w: no %s bank", ErrMalformed, alg)
	}
	f := &BootFacts{Version: FactsVersion, Bank: alg.String(), SecureBoot: SecureBootUnknown}
	used := func(pcr uint32) bool { return use == nil || use(pcr) }
	_, canHash := alg.Hash()
	hashOf := func(data, d []byte) bool {
		return canHash && subtle.ConstantTimeCompare(alg.Sum(data), d) == 1
	}
	ebs := exitBootServices(l)
	var sep [8]bool
	var grub grubEvents
	seenVar := map[string]bool{}
	for i := range l.Events[:ebs] {
		e := &l.Events[i]
		if e.Type == EvNoAction || !used(e.PCR) {
			continue
		}
		d, ok := e.Digest(alg)
		if !ok {
			continue
		}
		if e.Type == EvSeparator && e.PCR < 8 {
			sep[e.PCR] = true
			continue
		}
		dh := hex.EncodeToString(d)
		switch e.PCR {
		case 0:
			// Everything PCR 0 measures before its separator is firmware,
			// whatever the (unhashed) event type claims, except one
			// version string that hashes to its digest.
			if sep[0] {
				continue
			}
			if e.Type == EvSCRTMVersion && f.CRTMVersion == "" && len(e.Data) <= maxCRTMVersion && hashOf(e.Data, d) {
				f.CRTMVersion = printable(e.Data)
				continue
			}
			f.FirmwareBlobs = append(f.FirmwareBlobs, dh)
		case 4:
			// Every PCR 4 measurement is boot code except the action
			// strings that hash to their digest.
			if (e.Type == EvEFIAction || e.Type == EvAction) && isActionString(e.Data) && hashOf(e.Data, d) {
				continue
			}
			f.BootApplications = append(f.BootApplications, dh)
			path := ""
			if e.Type == EvEFIBootServicesApp {
				path = imagePath(e.Data)
			}
			f.BootApplicationPaths = append(f.BootApplicationPaths, path)
			if sep[4] && f.Bootloader == "" {
				f.Bootloader = dh
			}
		case 7:
			if e.Type != EvEFIVariableDriverConf || sep[7] {
				continue
			}
			v, err := ParseVariableData(e.Data)
			if err != nil {
				return nil, fmt.Errorf("extract boot facts: event %d: %w", e.Seq, err)
			}
			known := v.GUID == efiGlobalVariable && (v.Name == "SecureBoot" || v.Name == "PK" || v.Name == "KEK") ||
				v.GUID == efiImageSecurityDatabase && (v.Name == "db" || v.Name == "dbx" || v.Name == "dbt" || v.Name == "dbr")
			if !known || seenVar[v.Name] {
				continue // the first measurement of a variable is the boot's
			}
			seenVar[v.Name] = true
			if v.Name == "SecureBoot" {
				f.SecureBoot = SecureBootDisabled
				if len(v.Data) == 1 && v.Data[0] == 1 {
					f.SecureBoot = SecureBootEnabled
				}
			}
			f.addVar(v.Name, dh)
		case 8:
			grub.pcr8(e, d, canHash, alg)
		case 9:
			if e.Type == EvIPL {
				grub.files = append(grub.files, grubFile{path: stripGrubDevice(string(bytes.TrimSuffix(e.Data, []byte{0}))), digest: dh})
			}
		}
	}
	if used(8) {
		grub.facts(f, used(9))
	}
	return f, nil
}

// grubEvents collects GRUB's PCR 8 strings and PCR 9 files before
// ExitBootServices.
type grubEvents struct {
	opaque      int      // PCR 8 events whose data is not covered by their digest
	firstOpaque int      // Seq of the first one
	linux       []string // paths of linux commands
	initrd      []string // first paths of initrd commands
	cmdlines    []string
	files       []grubFile
}

type grubFile struct{ path, digest string }

// grubEncodings are the ways GRUB measures a string into PCR 8: upstream
// GRUB hashes the text after the prefix; RHEL's older patches use other
// prefixes and hash a command with its NUL.
var grubEncodings = []struct {
	prefix  string
	kind    byte // 'c' command, 'k' kernel command line, 'm' module command line
	withNUL bool
}{
	{"grub_cmd: ", 'c', false}, {"kernel_cmdline: ", 'k', false}, {"module_cmdline: ", 'm', false},
	{"grub_cmd ", 'c', true}, {"grub_kernel_cmdline ", 'k', false}, {"grub_module_cmdline ", 'm', false},
}

func (g *grubEvents) pcr8(e *Event, d []byte, canHash bool, alg Alg) {
	s := bytes.TrimSuffix(e.Data, []byte{0})
	for _, enc := range grubEncodings {
		if e.Type != EvIPL || !canHash || !bytes.HasPrefix(s, []byte(enc.prefix)) {
			continue
		}
		text := s[len(enc.prefix):]
		measured := text
		if enc.withNUL {
			measured = append(bytes.Clone(text), 0)
		}
		if subtle.ConstantTimeCompare(alg.Sum(measured), d) != 1 {
			continue
		}
		switch enc.kind {
		case 'c':
			fs := strings.Fields(string(text))
			if len(fs) > 1 && (fs[0] == "linux" || fs[0] == "linuxefi" || fs[0] == "linux16") {
				g.linux = append(g.linux, stripGrubDevice(fs[1]))
			}
			if len(fs) > 1 && (fs[0] == "initrd" || fs[0] == "initrdefi" || fs[0] == "initrd16") {
				g.initrd = append(g.initrd, stripGrubDevice(fs[1]))
			}
		case 'k':
			g.cmdlines = append(g.cmdlines, string(text))
		}
		return
	}
	if g.opaque == 0 {
		g.firstOpaque = e.Seq
	}
	g.opaque++
}

// facts sets the kernel and command line facts, or withholds them.
func (g *grubEvents) facts(f *BootFacts, withFiles bool) {
	pcr8Facts := []string{FactKernelCmdline, FactKernelPath, FactInitrdPath, FactKernel, FactInitrd}
	if g.opaque > 0 {
		for _, k := range pcr8Facts {
			f.withhold(k, "PCR 8 has %d event(s) whose data no digest covers (first: event %d)", g.opaque, g.firstOpaque)
		}
		return
	}
	one := func(vals []string, what string, facts ...string) (string, bool) {
		if len(vals) > 1 {
			for _, k := range facts {
				f.withhold(k, "%d %s measured in PCR 8", len(vals), what)
			}
			return "", false
		}
		if len(vals) == 0 {
			return "", false
		}
		return vals[0], true
	}
	if c, ok := one(g.cmdlines, "kernel command lines", FactKernelCmdline); ok {
		f.KernelCmdline = c
	}
	file := func(path, fact string) (string, string) {
		if !withFiles {
			return path, ""
		}
		var found []string
		for _, fl := range g.files {
			if fl.path == path {
				found = append(found, fl.digest)
			}
		}
		switch len(found) {
		case 0:
			f.withhold(fact, "no PCR 9 measurement is named %s", path)
			return path, ""
		case 1:
			return path, found[0]
		}
		f.withhold(fact, "%d PCR 9 measurements are named %s", len(found), path)
		return path, ""
	}
	if p, ok := one(g.linux, "linux commands", FactKernelPath, FactKernel); ok {
		f.KernelPath, f.Kernel = file(p, FactKernel)
	}
	if p, ok := one(g.initrd, "initrd commands", FactInitrdPath, FactInitrd); ok {
		f.InitrdPath, f.Initrd = file(p, FactInitrd)
	}
}

func (f *BootFacts) addVar(name, digest string) {
	if f.SecureBootVariables == nil {
		f.SecureBootVariables = map[string]string{}
	}
	f.SecureBootVariables[name] = digest
}

// stripGrubDevice removes a leading GRUB device "(hd0,gpt1)".
func stripGrubDevice(p string) string {
	if strings.HasPrefix(p, "(") {
		if i := strings.Index(p, ")"); i >= 0 {
			return p[i+1:]
		}
	}
	return p
}

// printable renders CRTM version data: UTF-16LE text when it decodes to
// printable characters, otherwise ASCII/UTF-8 text, otherwise hex.
func printable(b []byte) string {
	if len(b)%2 == 0 {
		s := utf16String(b)
		if s != "" && isPrintable(s) {
			return s
		}
	}
	if s := string(bytes.TrimRight(b, "\x00")); s != "" && utf8.ValidString(s) && isPrintable(s) {
		return s
	}
	return hex.EncodeToString(b)
}

// isActionString reports whether b is an EV_EFI_ACTION / EV_ACTION string:
// short printable ASCII, optionally NUL-terminated.
func isActionString(b []byte) bool {
	b = bytes.TrimRight(b, "\x00")
	if len(b) == 0 || len(b) > 256 {
		return false
	}
	for _, c := range b {
		if c < 0x20 || c > 0x7e {
			return false
		}
	}
	return true
}

func isPrintable(s string) bool {
	for _, r := range s {
		if !unicode.IsPrint(r) {
			return false
		}
	}
	return true
}

// imagePath returns the file path of a UEFI_IMAGE_LOAD_EVENT's device path,
// or "" when there is none.
func imagePath(b []byte) string {
	if len(b) < 32 {
		return ""
	}
	n := binary.LittleEndian.Uint64(b[24:])
	if n > uint64(len(b)-32) {
		return ""
	}
	dp := b[32 : 32+n]
	var parts []string
	for len(dp) >= 4 {
		typ, sub := dp[0], dp[1]
		l := int(binary.LittleEndian.Uint16(dp[2:]))
		if l < 4 || l > len(dp) {
			break
		}
		if typ == 0x04 && sub == 0x04 { // media device path, file path
			parts = append(parts, utf16String(dp[4:l]))
		}
		if typ == 0x7f {
			break
		}
		dp = dp[l:]
	}
	return strings.Join(parts, "")
}
