package attestrpc

import (
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
)

// Trusted launch (API version 1.1): the service asks an agent whether an
// instance runs on its host, then delivers a secret sealed to the host's TPM.
// Both methods are on AgentTopic with server = the host name.
const (
	// MethodInstancePresent (call, InstancePresentArgs →
	// InstancePresentResult): does the instance run on this host?
	MethodInstancePresent = "instance_present"
	// MethodDeliverSecret (call, DeliverSecretArgs → DeliverSecretResult):
	// import and unseal the secret in the host's TPM and inject it, with
	// the receipt, into the instance.
	MethodDeliverSecret = "deliver_secret"
)

// Launch notification event types (payload: launch_id, project_id,
// instance_id, host, profile, state, reasons).
const (
	EventLaunchDelivered = "trustpool.launch.delivered"
	EventLaunchRefused   = "trustpool.launch.refused"
	EventLaunchFailed    = "trustpool.launch.failed"
)

// Reasons an agent gives in DeliverSecretResult.Reason. They are stable
// codes; the service copies them into the launch's reasons.
const (
	// ReasonPCRMismatch: the TPM refused to unseal: a PCR in the policy
	// changed since the quote the secret was sealed to.
	ReasonPCRMismatch = "pcr_mismatch"
	// ReasonInstanceNotPresent: the instance does not run on this host.
	ReasonInstanceNotPresent = "instance_not_present"
	// ReasonReplayed: this launch was delivered (or tried) on this host
	// before; a blob is used once.
	ReasonReplayed = "replayed"
	// ReasonImportFailed: the TPM refused the import blob (not made for
	// this TPM's EK, or corrupt).
	ReasonImportFailed = "import_failed"
	// ReasonInvalidBlob: the blob or payload does not decode, or does not
	// belong to this launch and instance.
	ReasonInvalidBlob = "invalid_blob"
	// ReasonInjectFailed: the secret could not be written into the
	// instance.
	ReasonInjectFailed = "inject_failed"
	// ReasonTPMUnavailable: the TPM could not be reached.
	ReasonTPMUnavailable = "tpm_unavailable"
)

// Limits of the launch methods' arguments.
const (
	// MaxBlobPart bounds each byte field of an ImportBlob (TPM structures
	// are far smaller; the payload holds a secret of at most MaxSecret).
	MaxBlobPart = 8 << 10
	// MaxSecret is the largest secret a launch carries (a LUKS key file or
	// a data key fits).
	MaxSecret = 4096
	// MaxReceipt bounds the signed receipt passed to the instance.
	MaxReceipt = 16 << 10
)

var uuidPattern = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)

// IsUUID reports whether s is a UUID in the canonical form (lower case,
// dashed) in which Nova and libvirt print instance ids and Trustpool
// launch ids.
func IsUUID(s string) bool { return uuidPattern.MatchString(s) }

// InstancePresentArgs are instance_present's keyword arguments.
type InstancePresentArgs struct {
	// InstanceID is Nova's instance UUID (the libvirt domain UUID).
	InstanceID string `json:"instance_id"`
}

// Validate checks shape.
func (a *InstancePresentArgs) Validate() error {
	if !IsUUID(a.InstanceID) {
		return wrap([]error{errors.New("instance_id must be a UUID")})
	}
	return nil
}

// InstancePresentResult is instance_present's result.
type InstancePresentResult struct {
	Present bool `json:"present"`
	// ProjectID is the instance's owner as the hypervisor records it
	// (libvirt's Nova metadata); "" when the host cannot tell.
	ProjectID string `json:"project_id,omitempty"`
	// Injector names the agent's injector ("qemu-guest-agent",
	// "directory"), which also answered the question.
	Injector string `json:"injector"`
}

// ImportBlob is a secret sealed to one TPM: a TPM2_Duplicate-format object
// (no inner wrapper) under the host's EK, whose authPolicy is a
// TPM2_PolicyPCR over PCRs, plus the payload that the unsealed key opens.
// Package importblob builds and checks it.
type ImportBlob struct {
	// Public is the sealed object's TPMT_PUBLIC.
	Public []byte `json:"public"`
	// Duplicate is the TPM2B_PRIVATE contents (outer wrapper: HMAC and
	// AES-CFB encrypted TPM2B_SENSITIVE).
	Duplicate []byte `json:"duplicate"`
	// InSymSeed is the duplication seed encrypted to the EK
	// (TPM2B_ENCRYPTED_SECRET contents).
	InSymSeed []byte `json:"in_sym_seed"`
	// PCRs is the SHA-256 PCR selection of the policy, ascending.
	PCRs []int `json:"pcrs"`
	// Payload is the secret, AES-256-GCM encrypted under the sealed key
	// (12-byte nonce first), bound to the launch and instance ids.
	Payload []byte `json:"payload"`
}

// DeliverSecretArgs are deliver_secret's keyword arguments.
type DeliverSecretArgs struct {
	LaunchID   string     `json:"launch_id"`
	InstanceID string     `json:"instance_id"`
	Blob       ImportBlob `json:"blob"`
	// Receipt is the service's signed receipt of the sealing (a JSON
	// object), written next to the secret for the instance to show.
	Receipt json.RawMessage `json:"receipt"`
}

// Validate checks shape.
func (a *DeliverSecretArgs) Validate() error {
	var errs []error
	if !IsUUID(a.LaunchID) {
		errs = append(errs, errors.New("launch_id must be a UUID"))
	}
	if !IsUUID(a.InstanceID) {
		errs = append(errs, errors.New("instance_id must be a UUID"))
	}
	b := a.Blob
	for _, f := range []struct {
		name string
		v    []byte
	}{{"blob.public", b.Public}, {"blob.duplicate", b.Duplicate}, {"blob.in_sym_seed", b.InSymSeed}, {"blob.payload", b.Payload}} {
		if len(f.v) == 0 || len(f.v) > MaxBlobPart {
			errs = append(errs, fmt.Errorf("%s must be 1..%d bytes", f.name, MaxBlobPart))
		}
	}
	if len(b.PCRs) == 0 || len(b.PCRs) > 24 {
		errs = append(errs, errors.New("blob.pcrs must list 1..24 PCRs"))
	}
	for i, p := range b.PCRs {
		if p < 0 || p > 23 || (i > 0 && p <= b.PCRs[i-1]) {
			errs = append(errs, fmt.Errorf("blob.pcrs: %d is out of range 0-23 or not ascending", p))
		}
	}
	if len(a.Receipt) == 0 || len(a.Receipt) > MaxReceipt || !json.Valid(a.Receipt) || a.Receipt[0] != '{' {
		errs = append(errs, fmt.Errorf("receipt must be a JSON object of at most %d bytes", MaxReceipt))
	}
	return wrap(errs)
}

// DeliverSecretResult is deliver_secret's result. A refusal is a result,
// not an RPC failure, so the service can record its Reason code.
type DeliverSecretResult struct {
	Delivered bool `json:"delivered"`
	// Reason is one of the Reason* codes when not delivered.
	Reason string `json:"reason,omitempty"`
	// Detail explains Reason (never secret material).
	Detail string `json:"detail,omitempty"`
	// Injector names the injector used.
	Injector string `json:"injector,omitempty"`
	// UnsealMS and InjectMS are the agent's TPM import+unseal and
	// injection times in milliseconds (for the launch's timing split).
	UnsealMS float64 `json:"unseal_ms,omitempty"`
	InjectMS float64 `json:"inject_ms,omitempty"`
}
