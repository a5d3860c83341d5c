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

// BootFacts are the properties of a boot that policies reason about, read
// from the events of one bank. Digests are lowercase hex.
//
// Which fields are backed by the PCRs: every digest is (it is what the PCR
// extends); SecureBoot and SecureBootVariables are (their digest is checked
// to be the hash of the data by [CheckEvents]); KernelCmdline, KernelPath
// and InitrdPath are (GRUB's PCR 8 strings are checked the same way);
// CRTMVersion only when its digest is the hash of its data (otherwise it is
// left empty). Not backed: which PCR 9 file is the kernel is decided by
// matching the file name in the (unhashed) PCR 9 event data with the
// verified PCR 8 command, so Kernel and Initrd inherit that weakness; pin
// the PCR 9 value itself when that matters. BootApplicationPaths are
// informational only.
type BootFacts struct {
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

// Map flattens the facts into name -> value; lists are joined with ",".
// Empty facts are omitted.
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
	return m
}

// ExtractBootFacts reads [BootFacts] from the events of bank alg in PCRs
// included by use (nil: all PCRs). Callers verifying evidence pass only the
// PCRs whose replay matched a verified quote, and must have run
// [CheckEvents] first.
func ExtractBootFacts(l *Log, alg Alg, use func(pcr uint32) bool) (*BootFacts, error) {
	if !l.HasBank(alg) {
		return nil, fmt.Errorf("extract boot facts: %w: no %s bank", ErrMalformed, alg)
	}
	f := &BootFacts{Bank: alg.String(), SecureBoot: SecureBootUnknown}
	type file struct{ path, digest string }
	var pcr9 []file
	var linuxCmd, initrdCmd string
	for i := range l.Events {
		e := &l.Events[i]
		if use != nil && !use(e.PCR) {
			continue
		}
		d, ok := e.Digest(alg)
		if !ok {
			continue
		}
		dh := hex.EncodeToString(d)
		switch {
		case e.PCR == 0 && e.Type == EvSCRTMVersion:
			if _, ok := alg.Hash(); ok && subtle.ConstantTimeCompare(alg.Sum(e.Data), d) == 1 {
				f.CRTMVersion = printable(e.Data)
			}
		case e.PCR == 0 && (e.Type == EvEFIPlatformFirmware || e.Type == EvEFIPlatformFirmware2 || e.Type == EvPostCode):
			f.FirmwareBlobs = append(f.FirmwareBlobs, dh)
		case e.PCR == 7 && e.Type == EvEFIVariableDriverConf:
			v, err := ParseVariableData(e.Data)
			if err != nil {
				return nil, fmt.Errorf("extract boot facts: event %d: %w", e.Seq, err)
			}
			switch {
			case v.GUID == efiGlobalVariable && v.Name == "SecureBoot":
				f.SecureBoot = SecureBootDisabled
				if len(v.Data) == 1 && v.Data[0] == 1 {
					f.SecureBoot = SecureBootEnabled
				}
				f.addVar(v.Name, dh)
			case v.GUID == efiGlobalVariable && (v.Name == "PK" || v.Name == "KEK"),
				v.GUID == efiImageSecurityDatabase && (v.Name == "db" || v.Name == "dbx" || v.Name == "dbt" || v.Name == "dbr"):
				f.addVar(v.Name, dh)
			}
		case e.PCR == 4 && e.Type == EvEFIBootServicesApp:
			f.BootApplications = append(f.BootApplications, dh)
			f.BootApplicationPaths = append(f.BootApplicationPaths, imagePath(e.Data))
		case e.PCR == 8 && e.Type == EvIPL:
			s := string(bytes.TrimSuffix(e.Data, []byte{0}))
			switch {
			case strings.HasPrefix(s, "grub_cmd: linux "), strings.HasPrefix(s, "grub_cmd: linuxefi "):
				linuxCmd = secondField(s)
			case strings.HasPrefix(s, "grub_cmd: initrd "), strings.HasPrefix(s, "grub_cmd: initrdefi "):
				initrdCmd = secondField(s)
			case strings.HasPrefix(s, "kernel_cmdline: "):
				f.KernelCmdline = strings.TrimPrefix(s, "kernel_cmdline: ")
			}
		case e.PCR == 9 && e.Type == EvIPL:
			pcr9 = append(pcr9, file{path: string(bytes.TrimSuffix(e.Data, []byte{0})), digest: dh})
		}
	}
	if len(f.BootApplications) > 0 {
		f.Bootloader = f.BootApplications[0]
	}
	match := func(cmdPath string) (string, string) {
		if cmdPath == "" {
			return "", ""
		}
		p := stripGrubDevice(cmdPath)
		for i := len(pcr9) - 1; i >= 0; i-- {
			if stripGrubDevice(pcr9[i].path) == p {
				return p, pcr9[i].digest
			}
		}
		return p, ""
	}
	f.KernelPath, f.Kernel = match(linuxCmd)
	f.InitrdPath, f.Initrd = match(initrdCmd)
	return f, nil
}

func (f *BootFacts) addVar(name, digest string) {
	if f.SecureBootVariables == nil {
		f.SecureBootVariables = map[string]string{}
	}
	f.SecureBootVariables[name] = digest
}

// secondField returns the argument of a "grub_cmd: <cmd> <arg> ..." string.
func secondField(s string) string {
	if fs := strings.Fields(strings.TrimPrefix(s, "grub_cmd: ")); len(fs) > 1 {
		return fs[1]
	}
	return ""
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
// printable characters, otherwise hex.
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
