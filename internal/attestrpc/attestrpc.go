// Package attestrpc is the wire contract between the compute agent, the
// attestation service and the filter shims on the message bus
// (docs/ARCHITECTURE.md, "Components and how they talk"): topic and method names, the RPC API version and
// the JSON argument and result types of every method. It imports only the
// standard library and package verdict and holds no logic beyond shape
// checks, so both sides (and tests in other languages) build against one
// definition.
//
// Byte fields are base64 in JSON (encoding/json's []byte). Everything a peer
// sends is untrusted: Validate checks shape only; the verifier checks
// meaning.
package attestrpc

import (
	"errors"
	"fmt"

	"github.com/trustpool/trustpool/internal/verdict"
)

// APIVersion is the RPC API version every Trustpool endpoint implements.
// Bump the minor version for additive changes; callers ask for the lowest
// version that has the method they call, so a newer peer keeps working with
// an older one.
//
// History:
//   - 1.0 (BaseVersion): register_host, activate_credential,
//     measurements_changed, get_verdicts (service); quote, ping (agent);
//     verdicts_changed (fanout).
//   - 1.1 (LaunchVersion): the agent's instance_present and deliver_secret
//     (trusted launch, launch.go). An agent that implements only 1.0 answers
//     them with oslo's UnsupportedVersion, which the service records as a
//     failed launch.
//   - 1.2 (AuthorizeVersion): deliver_secret also takes blobs sealed under
//     TPM2_PolicyAuthorize (ImportBlob.AuthorizeKey) and the signed
//     approvals that satisfy them (DeliverSecretArgs.Approvals). A 1.2
//     agent still takes 1.1 calls (PolicyPCR blobs, no approvals); the
//     service asks for 1.2 only when it sends an authorized blob, and an
//     agent that implements only 1.1 answers with UnsupportedVersion, after
//     which the service seals to PolicyPCR and calls with 1.1.
//   - 1.3 (RedeliverVersion): the agent's redeliver_challenge,
//     redeliver_secret (re-delivery of a kept blob after the instance
//     restarted, launch.go) and forget_secret (cast: drop a deleted
//     launch's kept blob; an older agent drops the cast). The service asks for 1.3 only to redeliver;
//     an agent that implements only 1.2 answers with UnsupportedVersion,
//     which the service records as a refused re-delivery (agent_too_old).
//   - 1.4 (RedeliveryWantedVersion): the service's redelivery_wanted
//     (cast, launch.go): an agent saw a kept blob's instance start and
//     asks the service to run a re-delivery. A service that implements
//     only 1.3 drops the cast (casts get no reply), so the agent cannot
//     tell; it keeps asking with backoff and the tenant can still run
//     `trustpool launch redeliver`.
const APIVersion = RedeliveryWantedVersion

// Versions callers ask for.
const (
	// BaseVersion has every method of 1.0.
	BaseVersion = "1.0"
	// LaunchVersion adds instance_present and deliver_secret.
	LaunchVersion = "1.1"
	// AuthorizeVersion adds PolicyAuthorize blobs and approvals to
	// deliver_secret.
	AuthorizeVersion = "1.2"
	// RedeliverVersion adds redeliver_challenge and redeliver_secret.
	RedeliverVersion = "1.3"
	// RedeliveryWantedVersion adds the service's redelivery_wanted.
	RedeliveryWantedVersion = "1.4"
)

// Bus names.
const (
	// DefaultControlExchange is [DEFAULT] control_exchange's default.
	DefaultControlExchange = "trustpool"
	// ServiceTopic is the attestation service's RPC topic.
	ServiceTopic = "trustpool-attestation"
	// AgentTopic is the agents' RPC topic; the server is the host name.
	AgentTopic = "trustpool-agent"
	// VerdictsTopic carries signed verdicts to shims by fanout cast.
	VerdictsTopic = "trustpool-verdicts"
	// NotificationTopic is where the service's oslo notifications go.
	NotificationTopic = "notifications"
)

// Methods of the attestation service (ServiceTopic).
const (
	MethodRegisterHost        = "register_host"
	MethodActivateCredential  = "activate_credential"
	MethodMeasurementsChanged = "measurements_changed" // cast
	MethodGetVerdicts         = "get_verdicts"
)

// Methods of the agent (AgentTopic, server = host).
const (
	MethodQuote = "quote"
	MethodPing  = "ping"
)

// MethodVerdictsChanged is the fanout cast on VerdictsTopic.
const MethodVerdictsChanged = "verdicts_changed"

// Notification event types.
const (
	EventHostTrusted   = "trustpool.host.trusted"
	EventHostUntrusted = "trustpool.host.untrusted"
	EventHostEnrolled  = "trustpool.host.enrolled"
	// EventHostEKChangeRequested: a host asked for an EK binding that
	// needs an administrator's approval (payload: host, reason,
	// ek_fingerprint, pending_ek_fingerprint, bound_to, pending_since,
	// agent_version).
	EventHostEKChangeRequested = "trustpool.host.ek_change_requested"
	// EventComputeDisabled / EventComputeEnabled: the service disabled or
	// re-enabled a host's nova-compute service ([revocation]
	// disable_compute_service; payload: host, service_id, reason).
	EventComputeDisabled = "trustpool.host.compute_disabled"
	EventComputeEnabled  = "trustpool.host.compute_enabled"
	// EventBrakeEngaged (priority ERROR): more hosts turned untrusted
	// within [revocation] brake_window than brake_percent allows; the
	// service stops disabling compute services (payload: hosts_untrusted,
	// hosts_total, percent, window_seconds, hosts). EventBrakeReleased
	// (INFO): it acts again (payload adds skipped_hosts, the hosts it did
	// not act on meanwhile).
	EventBrakeEngaged  = "trustpool.revocation.brake_engaged"
	EventBrakeReleased = "trustpool.revocation.brake_released"
	// EventProfileVersionCreated: a profile version was stored (a
	// candidate, or approved when written through the flat profile API;
	// payload: profile, version, state, source).
	// EventProfileVersionStateChanged: a version's rollout state changed
	// (payload: profile, version, from, state, hosts, fraction), also
	// when a flat profile update retires the version it replaces.
	EventProfileVersionCreated      = "trustpool.profile.version_created"
	EventProfileVersionStateChanged = "trustpool.profile.version_state_changed"
)

// Limits on untrusted input sizes.
const (
	MaxHostLen   = 255
	MaxKeyBytes  = 2048
	MaxCertBytes = 16 << 10
)

// ErrInvalid is wrapped by every Validate error.
var ErrInvalid = errors.New("invalid rpc arguments")

// RegisterHostArgs are register_host's keyword arguments.
type RegisterHostArgs struct {
	Host string `json:"host"`
	// EKPublic is the marshalled TPMT_PUBLIC of the endorsement key.
	EKPublic []byte `json:"ek_public"`
	// EKCertificate is the DER EK certificate, when the TPM has one.
	EKCertificate []byte `json:"ek_certificate,omitempty"`
	// AKPublic is the marshalled TPMT_PUBLIC of the attestation key.
	AKPublic []byte `json:"ak_public"`
	// AgentVersion is informational.
	AgentVersion string `json:"agent_version,omitempty"`
}

// Validate checks shape.
func (a *RegisterHostArgs) Validate() error {
	var errs []error
	if err := checkHost(a.Host); err != nil {
		errs = append(errs, err)
	}
	if len(a.EKPublic) == 0 || len(a.EKPublic) > MaxKeyBytes {
		errs = append(errs, fmt.Errorf("ek_public must be 1..%d bytes", MaxKeyBytes))
	}
	if len(a.EKCertificate) > MaxCertBytes {
		errs = append(errs, fmt.Errorf("ek_certificate exceeds %d bytes", MaxCertBytes))
	}
	if len(a.AKPublic) == 0 || len(a.AKPublic) > MaxKeyBytes {
		errs = append(errs, fmt.Errorf("ak_public must be 1..%d bytes", MaxKeyBytes))
	}
	return wrap(errs)
}

// Registration states returned to the agent.
const (
	// StateChallenge: activate Credential and call activate_credential.
	StateChallenge = "challenge"
	// StatePendingApproval: an admin must approve this EK first; retry later.
	StatePendingApproval = "pending_approval"
	// StateEnrolled: the AK is bound; wait for quote calls.
	StateEnrolled = "enrolled"
)

// RegisterHostResult is register_host's result.
type RegisterHostResult struct {
	State string `json:"state"`
	// ChallengeID names the credential challenge (StateChallenge only).
	ChallengeID string `json:"challenge_id,omitempty"`
	// Credential is the TPM2_MakeCredential output (StateChallenge only).
	Credential *Credential `json:"credential,omitempty"`
	// Reason explains StatePendingApproval.
	Reason string `json:"reason,omitempty"`
}

// Credential is a MakeCredential result for TPM2_ActivateCredential.
type Credential struct {
	IDObject        []byte `json:"id_object"`
	EncryptedSecret []byte `json:"encrypted_secret"`
}

// ActivateCredentialArgs are activate_credential's keyword arguments.
type ActivateCredentialArgs struct {
	Host        string `json:"host"`
	ChallengeID string `json:"challenge_id"`
	// Secret is what TPM2_ActivateCredential returned.
	Secret []byte `json:"secret"`
}

// Validate checks shape.
func (a *ActivateCredentialArgs) Validate() error {
	var errs []error
	if err := checkHost(a.Host); err != nil {
		errs = append(errs, err)
	}
	if a.ChallengeID == "" || len(a.ChallengeID) > 128 {
		errs = append(errs, errors.New("challenge_id must be 1..128 characters"))
	}
	if len(a.Secret) == 0 || len(a.Secret) > 128 {
		errs = append(errs, errors.New("secret must be 1..128 bytes"))
	}
	return wrap(errs)
}

// ActivateCredentialResult is activate_credential's result: State is
// StateEnrolled or StatePendingApproval.
type ActivateCredentialResult struct {
	State  string `json:"state"`
	Reason string `json:"reason,omitempty"`
}

// MeasurementsChangedArgs are measurements_changed's keyword arguments.
type MeasurementsChangedArgs struct {
	Host string `json:"host"`
	// Reason is informational, e.g. "ima_log_grew" or "pcr_changed".
	Reason string `json:"reason,omitempty"`
}

// Validate checks shape.
func (a *MeasurementsChangedArgs) Validate() error { return wrap(nonNil(checkHost(a.Host))) }

// QuoteArgs are the agent's quote keyword arguments.
type QuoteArgs struct {
	// Nonce is the verifier's fresh single-use nonce (≥ 16 bytes).
	Nonce []byte `json:"nonce"`
	// PCRSelection lists the SHA-256 PCRs to quote.
	PCRSelection []int `json:"pcr_selection"`
	// LogOffsets says how much of the logs the verifier already has.
	LogOffsets LogOffsets `json:"log_offsets"`
}

// LogOffsets tells the agent which log parts to send.
type LogOffsets struct {
	// IMA is the byte offset in the IMA log to send from.
	IMA int64 `json:"ima"`
	// EventLogDigest is the hex SHA-256 of the firmware event log the
	// verifier last verified; when the agent's log has that digest it may
	// omit the log.
	EventLogDigest string `json:"event_log_digest,omitempty"`
}

// Validate checks shape.
func (a *QuoteArgs) Validate() error {
	var errs []error
	if len(a.Nonce) < 16 || len(a.Nonce) > 64 {
		errs = append(errs, errors.New("nonce must be 16..64 bytes"))
	}
	if len(a.PCRSelection) == 0 || len(a.PCRSelection) > 24 {
		errs = append(errs, errors.New("pcr_selection must list 1..24 PCRs"))
	}
	seen := map[int]bool{}
	for _, p := range a.PCRSelection {
		if p < 0 || p > 23 || seen[p] {
			errs = append(errs, fmt.Errorf("pcr_selection: %d is out of range or repeated", p))
		}
		seen[p] = true
	}
	if a.LogOffsets.IMA < 0 {
		errs = append(errs, errors.New("log_offsets.ima must not be negative"))
	}
	return wrap(errs)
}

// QuoteResult is the agent's quote result; all of it is untrusted.
type QuoteResult struct {
	Attest    []byte         `json:"attest"`
	Signature []byte         `json:"signature"`
	PCRs      map[int][]byte `json:"pcrs"`
	// EventLog is omitted when its digest equals LogOffsets.EventLogDigest.
	EventLog []byte `json:"event_log,omitempty"`
	// IMALog holds whole entries from IMAOffset; IMAHashSize is the
	// template-hash column size of the list they came from.
	IMALog      []byte `json:"ima_log,omitempty"`
	IMAOffset   int64  `json:"ima_offset"`
	IMAHashSize int    `json:"ima_hash_size,omitempty"`
}

// PingResult is the agent's ping result.
type PingResult struct {
	Host         string `json:"host"`
	AgentVersion string `json:"agent_version,omitempty"`
}

// GetVerdictsResult is get_verdicts' result: the current verdict of every
// host, each signed on its own.
type GetVerdictsResult struct {
	Verdicts []verdict.Signed `json:"verdicts"`
}

// VerdictsChangedArgs are verdicts_changed's keyword arguments.
type VerdictsChangedArgs struct {
	Verdicts []verdict.Signed `json:"verdicts"`
}

func checkHost(h string) error {
	if h == "" || len(h) > MaxHostLen {
		return fmt.Errorf("host must be 1..%d characters", MaxHostLen)
	}
	for _, r := range h {
		if r <= ' ' || r == 0x7f {
			return errors.New("host must not contain spaces or control characters")
		}
	}
	return nil
}

func nonNil(err error) []error {
	if err == nil {
		return nil
	}
	return []error{err}
}

func wrap(errs []error) error {
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	return nil
}
