package launch

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/trustpool/trustpool/internal/attestrpc"
	"github.com/trustpool/trustpool/internal/jsondecode"
	"github.com/trustpool/trustpool/internal/verdict"
)

// Where an instance finds what the agent delivered: DefaultGuestDir (the
// agent's [launch] guest_dir) holds SecretFile (mode 0400) and ReceiptFile,
// the signed receipt of the sealing.
const (
	DefaultGuestDir = "/run/trustpool"
	SecretFile      = "launch-secret"
	ReceiptFile     = "launch-receipt.json"
)

// ReceiptType is every receipt's "type": it keeps a receipt from being
// taken for any other statement signed with the same key.
const ReceiptType = "trustpool.launch.receipt"

// Launch states. pending → bound → attested → sealed → delivered is the
// good path; refused (the service would not release the secret) and failed
// (it tried and delivery did not happen) are final, like delivered.
// redelivered is a delivered launch whose secret the host's agent unsealed
// again, after a fresh attestation, from the blob it kept (the instance
// restarted); it is final too, and can be redelivered again.
const (
	StatePending   = "pending"
	StateBound     = "bound"
	StateAttested  = "attested"
	StateSealed    = "sealed"
	StateDelivered = "delivered"
	StateRefused   = "refused"
	StateFailed    = "failed"
	// StateRedelivered: delivered, and delivered again after a restart.
	StateRedelivered = "redelivered"
)

// Who asked for a re-delivery (Receipt.Initiator, the launch history and
// the re-delivery notifications).
const (
	// InitiatorUser: a user, through the API (`trustpool launch
	// redeliver`).
	InitiatorUser = "user"
	// InitiatorAgent: the host's agent, which saw the instance start
	// (redelivery_wanted).
	InitiatorAgent = "agent"
)

// ValidInitiator reports whether s is an Initiator value or "".
func ValidInitiator(s string) bool { return s == "" || s == InitiatorUser || s == InitiatorAgent }

// Final reports whether state ends a launch.
func Final(state string) bool {
	return state == StateDelivered || state == StateRefused || state == StateFailed || state == StateRedelivered
}

// Delivered reports whether state is one in which the secret reached the
// instance (delivered or redelivered).
func Delivered(state string) bool { return state == StateDelivered || state == StateRedelivered }

// ValidState reports whether state is one of the states.
func ValidState(state string) bool {
	switch state {
	case StatePending, StateBound, StateAttested, StateSealed, StateDelivered, StateRefused, StateFailed, StateRedelivered:
		return true
	}
	return false
}

// Receipt is the service's signed statement about a launch. Timestamps
// that do not apply yet are empty.
type Receipt struct {
	Type       string `json:"type"`
	LaunchID   string `json:"launch_id"`
	ProjectID  string `json:"project_id"`
	InstanceID string `json:"instance_id"`
	// HostID is the host as Nova shows it to the tenant: hex
	// sha224(project_id + host). The host name itself is operator data,
	// which tenants do not see (Nova hides it from them too).
	HostID  string `json:"host_id"`
	Profile string `json:"profile"`
	// VerdictSeq, EvidenceDigest and VerifiedAt identify the fresh
	// attestation the secret was sealed after (package verdict's fields).
	VerdictSeq     uint64 `json:"verdict_seq"`
	EvidenceDigest string `json:"evidence_digest"`
	// PCRPolicyDigest is the sealed object's authPolicy (hex), PCRs its
	// SHA-256 PCR selection.
	PCRPolicyDigest string `json:"pcr_policy_digest"`
	PCRs            []int  `json:"pcrs"`
	VerifiedAt      string `json:"verified_at"`
	SealedAt        string `json:"sealed_at"`
	DeliveredAt     string `json:"delivered_at"`
	State           string `json:"state"`
	// Reasons say why a launch was refused or failed (reason code, then
	// ": " and detail).
	Reasons []string `json:"reasons"`
	// Initiator says who asked for the re-delivery a receipt reports
	// (InitiatorUser or InitiatorAgent); absent from the receipts of a
	// first delivery.
	Initiator string `json:"initiator,omitempty"`
	// PolicyKey is the key id of the policy-signing key whose approvals
	// the sealed secret needs (TPM2_PolicyAuthorize): pcr_policy_digest is
	// that key's authorize policy. Absent when the secret is sealed to
	// PCR values alone (PolicyPCR) or not sealed yet.
	PolicyKey string `json:"policy_key,omitempty"`
	Issuer    string `json:"issuer"`
	IssuedAt  string `json:"issued_at"`
}

// HostID is Nova's hostId of host for a project: hex sha224(project_id +
// host), what a tenant sees on their servers instead of the host name.
func HostID(projectID, host string) string {
	sum := sha256.Sum224([]byte(projectID + host))
	return hex.EncodeToString(sum[:])
}

// Time formats a receipt timestamp ("" for the zero time).
func Time(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(verdict.TimeFormat)
}

// ErrReceipt means a receipt is malformed, unsigned, badly signed or not
// the one expected.
var ErrReceipt = errors.New("invalid launch receipt")

// Validate checks the receipt's shape.
func (r *Receipt) Validate() error {
	var errs []error
	if r.Type != ReceiptType {
		errs = append(errs, fmt.Errorf("type is %q, want %q", r.Type, ReceiptType))
	}
	if !attestrpc.IsUUID(r.LaunchID) {
		errs = append(errs, errors.New("launch_id is not a UUID"))
	}
	if r.ProjectID == "" {
		errs = append(errs, errors.New("project_id is empty"))
	}
	if !ValidState(r.State) {
		errs = append(errs, fmt.Errorf("state %q is not a launch state", r.State))
	}
	if (r.State == StateRefused || r.State == StateFailed) && len(r.Reasons) == 0 {
		errs = append(errs, fmt.Errorf("a %s receipt has no reasons", r.State))
	}
	if Delivered(r.State) && (r.DeliveredAt == "" || r.InstanceID == "" || r.HostID == "" || r.PCRPolicyDigest == "") {
		errs = append(errs, fmt.Errorf("a %s receipt lacks delivered_at, instance_id, host_id or pcr_policy_digest", r.State))
	}
	for name, v := range map[string]string{"verified_at": r.VerifiedAt, "sealed_at": r.SealedAt, "delivered_at": r.DeliveredAt, "issued_at": r.IssuedAt} {
		if v == "" && name != "issued_at" {
			continue
		}
		if _, err := time.Parse(time.RFC3339Nano, v); err != nil {
			errs = append(errs, fmt.Errorf("%s is not an RFC 3339 time", name))
		}
	}
	if !ValidInitiator(r.Initiator) {
		errs = append(errs, fmt.Errorf("initiator %q is not %s or %s", r.Initiator, InitiatorUser, InitiatorAgent))
	}
	if r.PolicyKey != "" {
		if b, err := hex.DecodeString(r.PolicyKey); err != nil || len(b) != 8 || r.PCRPolicyDigest == "" {
			errs = append(errs, errors.New("policy_key is not 16 hex digits naming the key of a pcr_policy_digest"))
		}
	}
	if r.Issuer == "" {
		errs = append(errs, errors.New("issuer is empty"))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("%w: %w", ErrReceipt, err)
	}
	return nil
}

// Marshal encodes the receipt (the bytes that get signed).
func (r *Receipt) Marshal() ([]byte, error) {
	c := *r
	c.Type = ReceiptType
	if c.Reasons == nil {
		c.Reasons = []string{}
	}
	if c.PCRs == nil {
		c.PCRs = []int{}
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(c); err != nil {
		return nil, fmt.Errorf("encode receipt: %w", err)
	}
	return bytes.TrimRight(buf.Bytes(), "\n"), nil
}

// SignedReceipt is a receipt as it travels: the receipt JSON as a string,
// the signing key's kid and the base64 Ed25519 signature over the string's
// bytes, exactly as package verdict signs verdicts (with the verdict key).
type SignedReceipt struct {
	Receipt string `json:"receipt"`
	KID     string `json:"kid"`
	Sig     string `json:"sig"`
}

// SignReceipt encodes and signs r with the service's verdict signer.
func SignReceipt(s *verdict.Signer, r *Receipt) (SignedReceipt, error) {
	b, err := r.Marshal()
	if err != nil {
		return SignedReceipt{}, err
	}
	kid, sig := s.SignBytes(b)
	return SignedReceipt{Receipt: string(b), KID: kid, Sig: sig}, nil
}

// VerifyReceipt checks a signed receipt against the pinned verdict keys and
// decodes it strictly.
func VerifyReceipt(vf *verdict.Verifier, s SignedReceipt) (*Receipt, error) {
	if err := vf.VerifyBytes(s.KID, s.Sig, []byte(s.Receipt)); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrReceipt, err)
	}
	return parseReceipt([]byte(s.Receipt))
}

// parseReceipt decodes and checks a receipt's JSON.
func parseReceipt(b []byte) (*Receipt, error) {
	var r Receipt
	if err := jsondecode.Strict(b, &r); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrReceipt, err)
	}
	if err := r.Validate(); err != nil {
		return nil, err
	}
	return &r, nil
}

// ParseSignedReceipt decodes a signed receipt envelope strictly (e.g. the
// launch-receipt.json file in an instance).
func ParseSignedReceipt(b []byte) (SignedReceipt, error) {
	var s SignedReceipt
	if err := jsondecode.Strict(b, &s); err != nil {
		return s, fmt.Errorf("%w: %w", ErrReceipt, err)
	}
	return s, nil
}

// Expect is what a tenant checks a verified receipt against; empty fields
// are not checked.
type Expect struct {
	LaunchID, ProjectID, InstanceID, Profile string
	// HostID is the server's hostId as Nova shows it to the tenant.
	HostID string
	// State is the state wanted (e.g. delivered).
	State string
}

// Check compares r with e and reports every difference.
func (r *Receipt) Check(e Expect) error {
	var errs []error
	for _, c := range []struct{ name, got, want string }{
		{"launch_id", r.LaunchID, e.LaunchID}, {"project_id", r.ProjectID, e.ProjectID},
		{"instance_id", r.InstanceID, e.InstanceID}, {"host_id", r.HostID, e.HostID}, {"profile", r.Profile, e.Profile},
		{"state", r.State, e.State},
	} {
		if c.want != "" && c.got != c.want {
			errs = append(errs, fmt.Errorf("%s is %q, want %q", c.name, c.got, c.want))
		}
	}
	if Delivered(r.State) && !slices.IsSorted(r.PCRs) {
		errs = append(errs, errors.New("pcrs are not sorted"))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("%w: %w", ErrReceipt, err)
	}
	return nil
}
