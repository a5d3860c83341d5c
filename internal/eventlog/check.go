package eventlog

import (
	"bytes"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
)

// Sentinel errors returned (wrapped in an [*EventError]) by [CheckEvents].
var (
	// ErrEventType: an unknown type, EV_UNUSED, or a type that is not
	// allowed in that PCR (retyping attack).
	ErrEventType = errors.New("event type not allowed")
	// ErrEventData: the event's data does not hash to its digest although
	// the type defines the digest as the hash of the data, or the data is
	// malformed for its type.
	ErrEventData = errors.New("event data inconsistent with digest")
	// ErrSeparator: a PCR in 0-7 has no EV_SEPARATOR, more than one, or a
	// malformed one.
	ErrSeparator = errors.New("bad separator events")
	// ErrEventOrder: an event a boot fact is read from comes after the end
	// of the boot phase that produces it (its PCR's separator, or
	// ExitBootServices): firmware does not log such events, a later extend
	// by the running OS does.
	ErrEventOrder = errors.New("event after the end of its boot phase")
)

// EventError describes the event that broke a rule.
type EventError struct {
	Seq    int
	PCR    uint32
	Type   EventType
	Reason string
	Err    error
}

func (e *EventError) Error() string {
	return fmt.Sprintf("event %d (PCR %d, %s): %v: %s", e.Seq, e.PCR, e.Type, e.Err, e.Reason)
}

func (e *EventError) Unwrap() error { return e.Err }

// BootPCRs is the number of PCRs (0..BootPCRs-1) holding firmware and
// bootloader measurements that [CheckEvents] applies its rules to.
const BootPCRs = 10

// Prefixes of the strings GRUB measures into PCR 8; their digest is the hash
// of the text after the prefix, without the terminating NUL.
var grubPrefixes = [][]byte{[]byte("grub_cmd: "), []byte("kernel_cmdline: "), []byte("module_cmdline: ")}

// pcrEventTypes are the event types allowed in the PCRs boot facts are read
// from (TCG PC Client Platform Firmware Profile, PCR usage and events, plus
// what shim, GRUB and the Linux EFI stub log). Event types are not covered
// by the PCRs, so a retyped event could otherwise hide from a fact (an EFI
// application logged as a driver) or feed another one. PCRs 1, 2, 3, 5
// and 6 feed no fact and accept every known type except EV_UNUSED.
var pcrEventTypes = map[uint32][]EventType{
	// S-CRTM, host platform firmware and its embedded drivers.
	0: {EvNoAction, EvSeparator, EvPostCode, EvPostCode2, EvSCRTMContents, EvSCRTMVersion, EvCPUMicrocode,
		EvNonhostCode, EvNonhostConfig, EvNonhostInfo, EvEFIPlatformFirmware, EvEFIPlatformFirmware2, EvEFIHCRTMEvent,
		EvEFISPDMFirmwareBlob, EvEFISPDMFirmwareConfig, EvEFIBootServicesDriver, EvEFIRuntimeServicesDrv,
		EvEFIHandoffTables, EvEFIHandoffTables2, EvTableOfDevices, EvPlatformConfigFlags, EvEventTag, EvCompactHash,
		EvEFIAction, EvAction},
	// Boot manager code: UEFI applications (legacy: the MBR as EV_IPL).
	4: {EvNoAction, EvSeparator, EvEFIBootServicesApp, EvEFIAction, EvAction, EvIPL, EvCompactHash, EvEventTag, EvOmitBootDeviceEvents},
	// Secure Boot policy.
	7: {EvNoAction, EvSeparator, EvEFIVariableDriverConf, EvEFIVariableAuthority, EvEFIAction, EvAction,
		EvEFISPDMDevicePolicy, EvEFISPDMDeviceAuthority},
	// The OS loader's own measurements (GRUB: commands in 8, files in 9;
	// the Linux EFI stub: initrd and load options in 9).
	8: {EvNoAction, EvIPL, EvEventTag},
	9: {EvNoAction, EvIPL, EvEventTag},
}

// typeAllowed reports whether t may appear in pcr (0-9).
func typeAllowed(pcr uint32, t EventType) bool {
	if !t.Known() || t == EvUnused {
		return false
	}
	allowed, ok := pcrEventTypes[pcr]
	return !ok || slices.Contains(allowed, t)
}

// exitBootServices returns the index in l.Events of the first
// "Exit Boot Services Invocation" EV_EFI_ACTION in PCR 5, or len(l.Events)
// when the log has none (some firmware does not log it).
func exitBootServices(l *Log) int {
	for i := range l.Events {
		e := &l.Events[i]
		if e.PCR == 5 && e.Type == EvEFIAction && bytes.Equal(bytes.TrimRight(e.Data, "\x00"), []byte("Exit Boot Services Invocation")) {
			return i
		}
	}
	return len(l.Events)
}

// CheckEvents applies the consistency rules (see the package doc) to the
// events of PCRs 0-9, using the digests of bank alg. It returns the first
// violation as an [*EventError] wrapping [ErrEventType], [ErrEventData],
// [ErrSeparator] or [ErrEventOrder].
func CheckEvents(l *Log, alg Alg) error {
	if !l.HasBank(alg) {
		return fmt.Errorf("check events: %w: no %s bank", ErrMalformed, alg)
	}
	if _, ok := alg.Hash(); !ok {
		return fmt.Errorf("check events: unsupported hash algorithm %s", alg)
	}
	var separators [8]int
	var touched [8]bool
	ebs := exitBootServices(l)
	for i := range l.Events {
		e := &l.Events[i]
		if e.PCR >= BootPCRs {
			continue
		}
		fail := func(err error, format string, a ...any) error {
			return &EventError{Seq: e.Seq, PCR: e.PCR, Type: e.Type, Err: err, Reason: fmt.Sprintf(format, a...)}
		}
		d, ok := e.Digest(alg)
		if !ok {
			return fail(ErrMalformed, "no %s digest", alg)
		}
		if !e.Type.Known() || e.Type == EvUnused {
			return fail(ErrEventType, "unknown or unused event type in boot PCR")
		}
		if !typeAllowed(e.PCR, e.Type) {
			return fail(ErrEventType, "%s is not an event type of PCR %d", e.Type, e.PCR)
		}
		// Boot phases. Within one PCR the log order is the extend order
		// the PCR value proves; the firmware logs nothing in PCRs 0-9
		// after ExitBootServices but ExitBootServices' own PCR 5 actions.
		switch {
		case e.Type == EvNoAction:
		case i > ebs && (e.PCR != 5 || e.Type != EvEFIAction):
			return fail(ErrEventOrder, "measured after ExitBootServices")
		case e.PCR == 0 && e.Type != EvSeparator && separators[0] > 0:
			return fail(ErrEventOrder, "firmware measurement after PCR 0's separator")
		case e.PCR == 7 && e.Type == EvEFIVariableDriverConf && separators[7] > 0:
			return fail(ErrEventOrder, "Secure Boot configuration after PCR 7's separator")
		}
		if e.PCR < 8 && e.Type != EvNoAction {
			touched[e.PCR] = true
		}
		hashOfData := func() error {
			if subtle.ConstantTimeCompare(alg.Sum(e.Data), d) != 1 {
				return fail(ErrEventData, "%s digest is not the hash of the event data", alg)
			}
			return nil
		}
		switch e.Type {
		case EvNoAction:
			for _, dd := range e.Digests {
				if !allBytes(dd.Value, 0) {
					return fail(ErrEventData, "EV_NO_ACTION with a non-zero %s digest", dd.Alg)
				}
			}
		case EvSeparator:
			if e.PCR < 8 {
				separators[e.PCR]++
			}
			if len(e.Data) != 4 {
				return fail(ErrSeparator, "separator data is %d bytes, want 4", len(e.Data))
			}
			v := binary.LittleEndian.Uint32(e.Data)
			if v != 0 && v != 0xFFFFFFFF {
				return fail(ErrSeparator, "separator value 0x%08x", v)
			}
			if err := hashOfData(); err != nil {
				return err
			}
		case EvAction, EvEFIAction, EvEFIVariableDriverConf, EvEFIGPTEvent, EvEFIGPTEvent2:
			if err := hashOfData(); err != nil {
				return err
			}
			if e.Type == EvEFIVariableDriverConf {
				if _, err := ParseVariableData(e.Data); err != nil {
					return fail(ErrEventData, "%v", err)
				}
			}
		case EvEFIVariableBoot, EvEFIVariableBoot2:
			// Firmware differs: most hash the whole UEFI_VARIABLE_DATA,
			// EDK2 hashes only VariableData for Boot####.
			v, err := ParseVariableData(e.Data)
			if err != nil {
				return fail(ErrEventData, "%v", err)
			}
			if subtle.ConstantTimeCompare(alg.Sum(e.Data), d) != 1 && subtle.ConstantTimeCompare(alg.Sum(v.Data), d) != 1 {
				return fail(ErrEventData, "%s digest is neither the hash of the variable nor of its data", alg)
			}
		case EvEFIVariableAuthority:
			// What the digest covers differs between firmware (the whole
			// UEFI_VARIABLE_DATA) and shim (the EFI_SIGNATURE_DATA it
			// matched, which the event does not carry completely), so only
			// the structure is checked; facts never use these events.
			if _, err := parseVariableData(e.Data, true); err != nil {
				return fail(ErrEventData, "%v", err)
			}
		case EvIPL:
			if e.PCR == 8 {
				s := bytes.TrimSuffix(e.Data, []byte{0})
				for _, p := range grubPrefixes {
					if bytes.HasPrefix(s, p) {
						if subtle.ConstantTimeCompare(alg.Sum(s[len(p):]), d) != 1 {
							return fail(ErrEventData, "%s digest is not the hash of the measured string", alg)
						}
					}
				}
			}
		}
	}
	for pcr := range 8 {
		if touched[pcr] && separators[pcr] != 1 {
			return &EventError{Seq: -1, PCR: uint32(pcr), Type: EvSeparator, Err: ErrSeparator,
				Reason: fmt.Sprintf("%d separators, want exactly 1", separators[pcr])}
		}
	}
	return nil
}

func allBytes(b []byte, v byte) bool {
	for _, c := range b {
		if c != v {
			return false
		}
	}
	return true
}

// VariableData is a parsed UEFI_VARIABLE_DATA structure.
type VariableData struct {
	GUID [16]byte
	Name string
	Data []byte
}

// ParseVariableData parses the UEFI_VARIABLE_DATA carried by EV_EFI_VARIABLE_*
// events. The whole input must be consumed.
func ParseVariableData(b []byte) (*VariableData, error) {
	return parseVariableData(b, false)
}

// parseVariableData parses UEFI_VARIABLE_DATA. With trailing, bytes after
// VariableData are tolerated (and kept in Data): OVMF's EV_EFI_VARIABLE_AUTHORITY
// events carry a whole EFI_SIGNATURE_DATA while VariableDataLength counts the
// certificate only. Such events are checked as the hash of the whole data.
func parseVariableData(b []byte, trailing bool) (*VariableData, error) {
	if len(b) < 32 {
		return nil, fmt.Errorf("%w: UEFI_VARIABLE_DATA of %d bytes", ErrMalformed, len(b))
	}
	var v VariableData
	copy(v.GUID[:], b[:16])
	nameLen := binary.LittleEndian.Uint64(b[16:])
	dataLen := binary.LittleEndian.Uint64(b[24:])
	rest := uint64(len(b) - 32)
	if nameLen > rest/2 || dataLen > rest || nameLen*2+dataLen > rest || (!trailing && nameLen*2+dataLen != rest) {
		return nil, fmt.Errorf("%w: UEFI_VARIABLE_DATA lengths (%d, %d) do not match %d bytes", ErrMalformed, nameLen, dataLen, rest)
	}
	v.Name = utf16String(b[32 : 32+nameLen*2])
	v.Data = b[32+nameLen*2:]
	return &v, nil
}

// utf16String decodes little-endian UTF-16 (BMP only, as UEFI uses UCS-2),
// stopping at the first NUL.
func utf16String(b []byte) string {
	rs := make([]rune, 0, len(b)/2)
	for i := 0; i+1 < len(b); i += 2 {
		c := rune(binary.LittleEndian.Uint16(b[i:]))
		if c == 0 {
			break
		}
		rs = append(rs, c)
	}
	return string(rs)
}
