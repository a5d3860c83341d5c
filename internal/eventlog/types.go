package eventlog

import (
	"crypto"
	_ "crypto/sha1" // register SHA-1 for crypto.Hash
	_ "crypto/sha256"
	_ "crypto/sha512"
	"fmt"
)

// Alg is a TPM_ALG_ID naming a PCR bank's hash algorithm.
type Alg uint16

// Hash algorithms that may appear as PCR banks.
const (
	SHA1   Alg = 0x0004
	SHA256 Alg = 0x000B
	SHA384 Alg = 0x000C
	SHA512 Alg = 0x000D
	SM3256 Alg = 0x0012
)

// String returns the lowercase name tpm2-tools uses ("sha256").
func (a Alg) String() string {
	switch a {
	case SHA1:
		return "sha1"
	case SHA256:
		return "sha256"
	case SHA384:
		return "sha384"
	case SHA512:
		return "sha512"
	case SM3256:
		return "sm3_256"
	}
	return fmt.Sprintf("alg_0x%04x", uint16(a))
}

// Size is the digest size of a, or 0 when unknown.
func (a Alg) Size() int {
	switch a {
	case SHA1:
		return 20
	case SHA256, SM3256:
		return 32
	case SHA384:
		return 48
	case SHA512:
		return 64
	}
	return 0
}

// Hash returns the Go hash for a; ok is false for algorithms this package
// cannot compute (SM3 and unknown ones), whose banks cannot be replayed.
func (a Alg) Hash() (crypto.Hash, bool) {
	switch a {
	case SHA1:
		return crypto.SHA1, true
	case SHA256:
		return crypto.SHA256, true
	case SHA384:
		return crypto.SHA384, true
	case SHA512:
		return crypto.SHA512, true
	}
	return 0, false
}

// Sum hashes data with a. It panics for algorithms [Alg.Hash] rejects.
func (a Alg) Sum(data ...[]byte) []byte {
	h, ok := a.Hash()
	if !ok {
		panic("eventlog: no hash for " + a.String())
	}
	hh := h.New()
	for _, d := range data {
		hh.Write(d)
	}
	return hh.Sum(nil)
}

// EventType is a TCG PC Client event type.
type EventType uint32

// Event types from the TCG PC Client Platform Firmware Profile (section 10.4.1).
const (
	EvPrebootCert            EventType = 0x00000000
	EvPostCode               EventType = 0x00000001
	EvUnused                 EventType = 0x00000002
	EvNoAction               EventType = 0x00000003
	EvSeparator              EventType = 0x00000004
	EvAction                 EventType = 0x00000005
	EvEventTag               EventType = 0x00000006
	EvSCRTMContents          EventType = 0x00000007
	EvSCRTMVersion           EventType = 0x00000008
	EvCPUMicrocode           EventType = 0x00000009
	EvPlatformConfigFlags    EventType = 0x0000000A
	EvTableOfDevices         EventType = 0x0000000B
	EvCompactHash            EventType = 0x0000000C
	EvIPL                    EventType = 0x0000000D
	EvIPLPartitionData       EventType = 0x0000000E
	EvNonhostCode            EventType = 0x0000000F
	EvNonhostConfig          EventType = 0x00000010
	EvNonhostInfo            EventType = 0x00000011
	EvOmitBootDeviceEvents   EventType = 0x00000012
	EvPostCode2              EventType = 0x00000013
	EvEFIVariableDriverConf  EventType = 0x80000001
	EvEFIVariableBoot        EventType = 0x80000002
	EvEFIBootServicesApp     EventType = 0x80000003
	EvEFIBootServicesDriver  EventType = 0x80000004
	EvEFIRuntimeServicesDrv  EventType = 0x80000005
	EvEFIGPTEvent            EventType = 0x80000006
	EvEFIAction              EventType = 0x80000007
	EvEFIPlatformFirmware    EventType = 0x80000008
	EvEFIHandoffTables       EventType = 0x80000009
	EvEFIPlatformFirmware2   EventType = 0x8000000A
	EvEFIHandoffTables2      EventType = 0x8000000B
	EvEFIVariableBoot2       EventType = 0x8000000C
	EvEFIGPTEvent2           EventType = 0x8000000D
	EvEFIHCRTMEvent          EventType = 0x80000010
	EvEFIVariableAuthority   EventType = 0x800000E0
	EvEFISPDMFirmwareBlob    EventType = 0x800000E1
	EvEFISPDMFirmwareConfig  EventType = 0x800000E2
	EvEFISPDMDevicePolicy    EventType = 0x800000E3
	EvEFISPDMDeviceAuthority EventType = 0x800000E4
)

var eventTypeNames = map[EventType]string{
	EvPrebootCert:            "EV_PREBOOT_CERT",
	EvPostCode:               "EV_POST_CODE",
	EvUnused:                 "EV_UNUSED",
	EvNoAction:               "EV_NO_ACTION",
	EvSeparator:              "EV_SEPARATOR",
	EvAction:                 "EV_ACTION",
	EvEventTag:               "EV_EVENT_TAG",
	EvSCRTMContents:          "EV_S_CRTM_CONTENTS",
	EvSCRTMVersion:           "EV_S_CRTM_VERSION",
	EvCPUMicrocode:           "EV_CPU_MICROCODE",
	EvPlatformConfigFlags:    "EV_PLATFORM_CONFIG_FLAGS",
	EvTableOfDevices:         "EV_TABLE_OF_DEVICES",
	EvCompactHash:            "EV_COMPACT_HASH",
	EvIPL:                    "EV_IPL",
	EvIPLPartitionData:       "EV_IPL_PARTITION_DATA",
	EvNonhostCode:            "EV_NONHOST_CODE",
	EvNonhostConfig:          "EV_NONHOST_CONFIG",
	EvNonhostInfo:            "EV_NONHOST_INFO",
	EvOmitBootDeviceEvents:   "EV_OMIT_BOOT_DEVICE_EVENTS",
	EvPostCode2:              "EV_POST_CODE2",
	EvEFIVariableDriverConf:  "EV_EFI_VARIABLE_DRIVER_CONFIG",
	EvEFIVariableBoot:        "EV_EFI_VARIABLE_BOOT",
	EvEFIBootServicesApp:     "EV_EFI_BOOT_SERVICES_APPLICATION",
	EvEFIBootServicesDriver:  "EV_EFI_BOOT_SERVICES_DRIVER",
	EvEFIRuntimeServicesDrv:  "EV_EFI_RUNTIME_SERVICES_DRIVER",
	EvEFIGPTEvent:            "EV_EFI_GPT_EVENT",
	EvEFIAction:              "EV_EFI_ACTION",
	EvEFIPlatformFirmware:    "EV_EFI_PLATFORM_FIRMWARE_BLOB",
	EvEFIHandoffTables:       "EV_EFI_HANDOFF_TABLES",
	EvEFIPlatformFirmware2:   "EV_EFI_PLATFORM_FIRMWARE_BLOB2",
	EvEFIHandoffTables2:      "EV_EFI_HANDOFF_TABLES2",
	EvEFIVariableBoot2:       "EV_EFI_VARIABLE_BOOT2",
	EvEFIGPTEvent2:           "EV_EFI_GPT_EVENT2",
	EvEFIHCRTMEvent:          "EV_EFI_HCRTM_EVENT",
	EvEFIVariableAuthority:   "EV_EFI_VARIABLE_AUTHORITY",
	EvEFISPDMFirmwareBlob:    "EV_EFI_SPDM_FIRMWARE_BLOB",
	EvEFISPDMFirmwareConfig:  "EV_EFI_SPDM_FIRMWARE_CONFIG",
	EvEFISPDMDevicePolicy:    "EV_EFI_SPDM_DEVICE_POLICY",
	EvEFISPDMDeviceAuthority: "EV_EFI_SPDM_DEVICE_AUTHORITY",
}

// String returns the TCG name of t ("EV_SEPARATOR").
func (t EventType) String() string {
	if n, ok := eventTypeNames[t]; ok {
		return n
	}
	return fmt.Sprintf("EV_UNKNOWN_0x%08x", uint32(t))
}

// Known reports whether t is an event type defined by the TCG PC Client
// Platform Firmware Profile.
func (t EventType) Known() bool {
	_, ok := eventTypeNames[t]
	return ok
}
