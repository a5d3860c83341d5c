package attestapi

// The trusted-launch routes (/v1/launches) and the launch keys of /v1/keys.

import (
	"net/url"
	"time"

	"github.com/trustpool/trustpool/internal/launch"
)

// PathLaunches is the launch collection.
const PathLaunches = "/v1/launches"

// LaunchPath returns /v1/launches/{id} with id escaped.
func LaunchPath(id string) string { return PathLaunches + "/" + url.PathEscape(id) }

// Query parameters of GET /v1/launches.
const (
	// QueryAllProjects (true|false) lists every project's launches
	// (administrators).
	QueryAllProjects = "all_projects"
)

// Reasons of the errors of POST and DELETE /v1/launches (Error.Reason): a
// refused request names its launch reason code, as the message starts with
// it.
const (
	// ReasonLaunchSealed (400): sealed to another key, or not a sealed
	// request this service can open.
	ReasonLaunchSealed = launch.ReasonSealed
	// ReasonLaunchRequest (400): the opened request, or instance_id /
	// host_id beside it, is malformed.
	ReasonLaunchRequest = launch.ReasonRequest
	// ReasonLaunchProjectMismatch (400): sealed for another project than
	// the caller's token's.
	ReasonLaunchProjectMismatch = launch.ReasonProjectMismatch
	// ReasonLaunchExpired (400): past its not_after.
	ReasonLaunchExpired = launch.ReasonExpired
	// ReasonLaunchReplayed (409): this sealed request was already used.
	ReasonLaunchReplayed = "replayed"
	// ReasonLaunchInProgress (409 on delete): the launch is bound,
	// attested or sealed; delete it once it has ended.
	ReasonLaunchInProgress = "launch_in_progress"
	// ReasonLaunchNotDelivered (409 on redeliver): the launch's secret
	// never reached its instance; there is nothing to deliver again.
	ReasonLaunchNotDelivered = "launch_not_delivered"
	// ReasonRedeliveryOff (409 on redeliver): the service has no
	// policy-signing key, so no host keeps a blob it could redeliver.
	ReasonRedeliveryOff = "redelivery_unavailable"
	// ReasonRedeliveryTooSoon (429 on redeliver): a re-delivery of the
	// launch was asked for less than the service's [launch]
	// redelivery_user_interval ago; Retry-After says when to ask again.
	ReasonRedeliveryTooSoon = "redelivery_too_soon"
)

// LaunchKey is the service's HPKE launch key as GET /v1/keys lists it
// ("launch_keys"). Tenants pin its Fingerprint.
type LaunchKey struct {
	KID string `json:"kid"`
	// Suite names the HPKE suite ("ML-KEM-768+X25519, HKDF-SHA256,
	// AES-256-GCM"); KEMID, KDFID and AEADID are its RFC 9180 ids.
	Suite  string `json:"suite"`
	KEMID  uint16 `json:"kem_id"`
	KDFID  uint16 `json:"kdf_id"`
	AEADID uint16 `json:"aead_id"`
	// PublicKey is the serialized public key; PublicKeyPEM the same with
	// its KEM id, the file a tenant may pin.
	PublicKey    []byte `json:"public_key"`
	PublicKeyPEM string `json:"public_key_pem"`
	// Fingerprint is hex SHA-256(KEM id ‖ public key).
	Fingerprint string `json:"fingerprint"`
}

// NewLaunchKey describes pub.
func NewLaunchKey(pub *launch.PublicKey) LaunchKey {
	return LaunchKey{KID: pub.KID(), Suite: pub.Suite(), KEMID: pub.KEMID(), KDFID: launch.KDFID, AEADID: launch.AEADID,
		PublicKey: pub.Bytes(), PublicKeyPEM: string(pub.MarshalPEM()), Fingerprint: pub.Fingerprint()}
}

// LaunchCreate is the body of POST /v1/launches.
type LaunchCreate struct {
	// KID names the launch key Sealed was sealed to.
	KID string `json:"kid"`
	// Sealed is the HPKE-sealed launch request (package launch).
	Sealed []byte `json:"sealed"`
	// InstanceID binds the launch to a server now; without it Nova's
	// instance.create.end for a server with metadata trustpool_launch=<id>
	// binds it.
	InstanceID string `json:"instance_id,omitempty"`
	// HostID is the server's hostId, for a service without Nova access.
	HostID string `json:"host_id,omitempty"`
}

// Launch is a launch as the API shows it (in {"launch": ...} and
// {"launches": [...]}).
type Launch struct {
	ID         string `json:"id"`
	ProjectID  string `json:"project_id"`
	UserID     string `json:"user_id"`
	State      string `json:"state"`
	Profile    string `json:"profile"`
	InstanceID string `json:"instance_id"`
	HostID     string `json:"host_id"`
	// Host is the compute host; administrators only (operator data).
	Host     string    `json:"host,omitempty"`
	NotAfter time.Time `json:"not_after"`
	Reasons  []string  `json:"reasons"`
	// Receipt is the latest signed receipt (null before sealing or a
	// refusal).
	Receipt   *launch.SignedReceipt `json:"receipt"`
	CreatedAt time.Time             `json:"created_at"`
	UpdatedAt time.Time             `json:"updated_at"`
	// History is the launch's state changes (show only).
	History []LaunchEvent `json:"history,omitempty"`
}

// LaunchEvent is one state change.
type LaunchEvent struct {
	At      time.Time `json:"at"`
	State   string    `json:"state"`
	Reasons []string  `json:"reasons"`
	// Initiator says who asked for a re-delivery (package launch's
	// InitiatorUser or InitiatorAgent); absent on other entries.
	Initiator string `json:"initiator,omitempty"`
}

// LaunchEnvelope is the body of a single launch.
type LaunchEnvelope struct {
	Launch Launch `json:"launch"`
}

// LaunchRedelivery is the body of POST /v1/launches/{id}/redeliver: the
// launch as it then is, and the outcome of this re-delivery (state
// redelivered, refused or failed, with reasons).
type LaunchRedelivery struct {
	Launch     Launch      `json:"launch"`
	Redelivery LaunchEvent `json:"redelivery"`
}

// LaunchRedeliverPath returns /v1/launches/{id}/redeliver with id escaped.
func LaunchRedeliverPath(id string) string { return LaunchPath(id) + "/redeliver" }

// LaunchList is the body of GET /v1/launches.
type LaunchList struct {
	Launches []Launch `json:"launches"`
}
