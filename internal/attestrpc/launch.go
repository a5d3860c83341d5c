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
	// EventLaunchRedelivered: a delivered launch's secret was unsealed
	// again after its instance restarted (1.3). A refused or failed
	// re-delivery is EventLaunchRefused or EventLaunchFailed with
	// "redelivery": true in the payload.
	EventLaunchRedelivered = "trustpool.launch.redelivered"
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
	// ReasonPCRNotApproved: the blob is sealed under PolicyAuthorize and
	// no approval sent names the host's current PCR values (1.2).
	ReasonPCRNotApproved = "pcr_not_approved"
	// ReasonApprovalInvalid: the TPM refused an approval's signature
	// (TPM2_VerifySignature): not made with the policy-signing key (1.2).
	ReasonApprovalInvalid = "approval_invalid"
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
	// MaxApprovals bounds DeliverSecretArgs.Approvals.
	MaxApprovals = 256
	// MaxApprovalSignature bounds an approval's DER ECDSA signature.
	MaxApprovalSignature = 160
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
	// AuthorizeKey (1.2), when set, is the TPMT_PUBLIC of the service's
	// policy-signing key: the object's authPolicy is then
	// TPM2_PolicyAuthorize by that key, and PCRs the selection its
	// approvals' PolicyPCR digests are over. Absent: authPolicy is the
	// PolicyPCR itself (1.1).
	AuthorizeKey []byte `json:"authorize_key,omitempty"`
}

// PolicyApproval (1.2) is the service's signed approval of one PCR state:
// the policy-signing key's ECDSA P-256 signature over
// SHA-256(PolicyDigest ‖ policyRef) (package importblob's PolicyRef), where
// PolicyDigest is TPM2_PolicyPCR over the SHA-256 PCRs with the approved
// values. The agent's TPM checks it (TPM2_VerifySignature) and only then
// lets TPM2_PolicyAuthorize accept a session whose PCRs reach that digest.
type PolicyApproval struct {
	// KID names the policy-signing key.
	KID string `json:"kid"`
	// PCRs is the SHA-256 PCR selection, ascending.
	PCRs []int `json:"pcrs"`
	// PolicyDigest is the approved PolicyPCR digest (32 bytes).
	PolicyDigest []byte `json:"policy_digest"`
	// Signature is the ASN.1 DER ECDSA signature.
	Signature []byte `json:"signature"`
}

// DeliverSecretArgs are deliver_secret's keyword arguments.
type DeliverSecretArgs struct {
	LaunchID   string     `json:"launch_id"`
	InstanceID string     `json:"instance_id"`
	Blob       ImportBlob `json:"blob"`
	// Receipt is the service's signed receipt of the sealing (a JSON
	// object), written next to the secret for the instance to show.
	Receipt json.RawMessage `json:"receipt"`
	// Approvals (1.2) are the approved PCR states that satisfy a blob
	// sealed under PolicyAuthorize; ignored for a PolicyPCR blob.
	Approvals []PolicyApproval `json:"approvals,omitempty"`
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
	if len(b.AuthorizeKey) > MaxBlobPart {
		errs = append(errs, fmt.Errorf("blob.authorize_key must be at most %d bytes", MaxBlobPart))
	}
	if len(a.Approvals) > MaxApprovals {
		errs = append(errs, fmt.Errorf("approvals: at most %d", MaxApprovals))
	} else {
		for i, ap := range a.Approvals {
			if err := ap.validate(); err != nil {
				errs = append(errs, fmt.Errorf("approvals[%d]: %w", i, err))
			}
		}
	}
	return wrap(errs)
}

func (ap *PolicyApproval) validate() error {
	switch {
	case ap.KID == "" || len(ap.KID) > 64:
		return errors.New("kid must be 1..64 characters")
	case len(ap.PolicyDigest) != 32:
		return errors.New("policy_digest must be 32 bytes")
	case len(ap.Signature) == 0 || len(ap.Signature) > MaxApprovalSignature:
		return fmt.Errorf("signature must be 1..%d bytes", MaxApprovalSignature)
	case len(ap.PCRs) == 0 || len(ap.PCRs) > 24:
		return errors.New("pcrs must list 1..24 PCRs")
	}
	for i, p := range ap.PCRs {
		if p < 0 || p > 23 || (i > 0 && p <= ap.PCRs[i-1]) {
			return fmt.Errorf("pcrs: %d is out of range 0-23 or not ascending", p)
		}
	}
	return nil
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

// Re-delivery (API version 1.3): after a delivered launch's instance
// restarted (a host reboot), the service has the agent unseal again the
// blob it kept. The agent acts only on a request the service signed with
// its policy-signing key (the key the kept blob is sealed under), over a
// nonce the agent issued for that one request.
const (
	// MethodRedeliverChallenge (call, RedeliverChallengeArgs →
	// RedeliverChallengeResult): does the agent keep the launch's blob,
	// and a fresh single-use nonce for the request to redeliver it.
	MethodRedeliverChallenge = "redeliver_challenge"
	// MethodRedeliverSecret (call, RedeliverSecretArgs →
	// DeliverSecretResult): unseal the kept blob with the fresh approvals
	// and inject the secret and the new receipt into the instance.
	MethodRedeliverSecret = "redeliver_secret"
)

// Reasons of redeliver_secret (1.3), besides the deliver_secret ones.
const (
	// ReasonNotKept: the agent keeps no blob of this launch and
	// instance (never delivered here, sealed without a policy-signing
	// key, forgotten, or the agent's state directory was lost).
	ReasonNotKept = "not_kept"
	// ReasonRequestInvalid: the request does not carry the agent's
	// outstanding nonce (replayed or stale) or its signature is not the
	// policy-signing key's.
	ReasonRequestInvalid = "request_invalid"
)

// RedeliverNonceSize is the size of a redeliver_challenge nonce.
const RedeliverNonceSize = 32

// RedeliverChallengeArgs are redeliver_challenge's keyword arguments.
type RedeliverChallengeArgs struct {
	LaunchID   string `json:"launch_id"`
	InstanceID string `json:"instance_id"`
}

// Validate checks shape.
func (a *RedeliverChallengeArgs) Validate() error {
	var errs []error
	if !IsUUID(a.LaunchID) {
		errs = append(errs, errors.New("launch_id must be a UUID"))
	}
	if !IsUUID(a.InstanceID) {
		errs = append(errs, errors.New("instance_id must be a UUID"))
	}
	return wrap(errs)
}

// RedeliverChallengeResult is redeliver_challenge's result.
type RedeliverChallengeResult struct {
	// Kept: the agent keeps a blob of the launch for the instance.
	Kept bool `json:"kept"`
	// Nonce (when Kept) is what the service signs in RedeliverSecretArgs;
	// the agent accepts it once, for a short time.
	Nonce []byte `json:"nonce,omitempty"`
}

// RedeliverSecretArgs are redeliver_secret's keyword arguments.
type RedeliverSecretArgs struct {
	LaunchID   string `json:"launch_id"`
	InstanceID string `json:"instance_id"`
	// Nonce is the agent's redeliver_challenge nonce.
	Nonce []byte `json:"nonce"`
	// Receipt is the service's signed receipt of the re-delivery.
	Receipt json.RawMessage `json:"receipt"`
	// Approvals approve the host's current PCR state (the fresh quote's).
	Approvals []PolicyApproval `json:"approvals"`
	// Signature is the policy-signing key's ASN.1 DER ECDSA signature
	// over package policykey's RedeliverDigest of the other fields.
	Signature []byte `json:"signature"`
}

// Validate checks shape.
func (a *RedeliverSecretArgs) Validate() error {
	var errs []error
	if !IsUUID(a.LaunchID) {
		errs = append(errs, errors.New("launch_id must be a UUID"))
	}
	if !IsUUID(a.InstanceID) {
		errs = append(errs, errors.New("instance_id must be a UUID"))
	}
	if len(a.Nonce) != RedeliverNonceSize {
		errs = append(errs, fmt.Errorf("nonce must be %d bytes", RedeliverNonceSize))
	}
	if len(a.Receipt) == 0 || len(a.Receipt) > MaxReceipt || !json.Valid(a.Receipt) || a.Receipt[0] != '{' {
		errs = append(errs, fmt.Errorf("receipt must be a JSON object of at most %d bytes", MaxReceipt))
	}
	if len(a.Approvals) == 0 || len(a.Approvals) > MaxApprovals {
		errs = append(errs, fmt.Errorf("approvals: 1..%d", MaxApprovals))
	} else {
		for i, ap := range a.Approvals {
			if err := ap.validate(); err != nil {
				errs = append(errs, fmt.Errorf("approvals[%d]: %w", i, err))
			}
		}
	}
	if len(a.Signature) == 0 || len(a.Signature) > MaxApprovalSignature {
		errs = append(errs, fmt.Errorf("signature must be 1..%d bytes", MaxApprovalSignature))
	}
	return wrap(errs)
}

// MethodForgetSecret (1.3, cast, ForgetSecretArgs): the launch was
// deleted; drop its kept blob. Signed like redeliver_secret (a replay only
// drops a blob already dropped).
const MethodForgetSecret = "forget_secret"

// ForgetSecretArgs are forget_secret's keyword arguments.
type ForgetSecretArgs struct {
	LaunchID   string `json:"launch_id"`
	InstanceID string `json:"instance_id"`
	// Signature is the policy-signing key's ASN.1 DER ECDSA signature
	// over package policykey's ForgetDigest.
	Signature []byte `json:"signature"`
}

// Validate checks shape.
func (a *ForgetSecretArgs) Validate() error {
	var errs []error
	if !IsUUID(a.LaunchID) {
		errs = append(errs, errors.New("launch_id must be a UUID"))
	}
	if !IsUUID(a.InstanceID) {
		errs = append(errs, errors.New("instance_id must be a UUID"))
	}
	if len(a.Signature) == 0 || len(a.Signature) > MaxApprovalSignature {
		errs = append(errs, fmt.Errorf("signature must be 1..%d bytes", MaxApprovalSignature))
	}
	return wrap(errs)
}

// MethodRedeliveryWanted (1.4, cast on ServiceTopic, RedeliveryWantedArgs):
// the agent saw the instance of a blob it keeps start (absent before, or
// present when the agent started after a host reboot) and asks the service
// to run a re-delivery. It is only a trigger: anyone on the bus can send
// it, so the service acts only for a delivered launch recorded on that
// host and instance, at most once per launch per interval, and runs the
// same checks as for a tenant's request.
const MethodRedeliveryWanted = "redelivery_wanted"

// RedeliveryWantedArgs are redelivery_wanted's keyword arguments.
type RedeliveryWantedArgs struct {
	Host       string `json:"host"`
	LaunchID   string `json:"launch_id"`
	InstanceID string `json:"instance_id"`
}

// Validate checks shape.
func (a *RedeliveryWantedArgs) Validate() error {
	errs := nonNil(checkHost(a.Host))
	if !IsUUID(a.LaunchID) {
		errs = append(errs, errors.New("launch_id must be a UUID"))
	}
	if !IsUUID(a.InstanceID) {
		errs = append(errs, errors.New("instance_id must be a UUID"))
	}
	return wrap(errs)
}
