package launch

import (
	"crypto/hpke"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"time"

	"github.com/trustpool/trustpool/internal/attestrpc"
	"github.com/trustpool/trustpool/internal/jsondecode"
)

// Info is the HPKE info string of sealed launch requests: a request sealed
// for another purpose or version does not open.
const Info = "trustpool-launch-v1"

// Limits of a request.
const (
	// MaxSealed bounds the sealed request (enc + ciphertext + tag).
	MaxSealed = 16 << 10
	// NonceSize is the size of the nonce Seal draws.
	NonceSize = 32
	// MaxProjectID bounds project ids (Keystone's are 32 hex characters).
	MaxProjectID = 64
)

// Request errors. Each has a stable reason code (Reason).
var (
	// ErrSealed: the sealed request does not open with this key (another
	// key, another purpose, or altered).
	ErrSealed = errors.New("sealed request does not open")
	// ErrRequest: it opened but its content is not a valid request.
	ErrRequest = errors.New("invalid launch request")
	// ErrProject: it was sealed for another project.
	ErrProject = errors.New("launch request sealed for another project")
	// ErrExpired: its not_after has passed.
	ErrExpired = errors.New("launch request expired")
)

// Reason codes of the request errors, as launches record them.
const (
	ReasonSealed          = "sealed_request_invalid"
	ReasonRequest         = "request_invalid"
	ReasonProjectMismatch = "project_mismatch"
	ReasonExpired         = "expired"
)

// Reason returns the reason code of a request error ("" if none).
func Reason(err error) string {
	switch {
	case errors.Is(err, ErrSealed):
		return ReasonSealed
	case errors.Is(err, ErrProject):
		return ReasonProjectMismatch
	case errors.Is(err, ErrExpired):
		return ReasonExpired
	case errors.Is(err, ErrRequest):
		return ReasonRequest
	}
	return ""
}

// ProfilePattern is what a profile name looks like (package policy's rule).
var ProfilePattern = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,63}$`)

// Request is what a tenant seals: the secret and the conditions under which
// the service may release it.
type Request struct {
	// Secret is delivered to the instance (1..attestrpc.MaxSecret bytes).
	Secret []byte `json:"secret"`
	// Profile the host must satisfy in a fresh attestation.
	Profile string `json:"profile"`
	// ProjectID is the tenant's project: only a launch created by a
	// member of it is served.
	ProjectID string `json:"project_id"`
	// NotAfter: the request is refused from then on.
	NotAfter time.Time `json:"not_after"`
	// Nonce makes every request unique (replays are refused).
	Nonce []byte `json:"nonce"`
}

// Validate checks the fields' shape.
func (r *Request) Validate() error {
	var errs []error
	if len(r.Secret) == 0 || len(r.Secret) > attestrpc.MaxSecret {
		errs = append(errs, fmt.Errorf("secret must be 1..%d bytes", attestrpc.MaxSecret))
	}
	if !ProfilePattern.MatchString(r.Profile) {
		errs = append(errs, fmt.Errorf("profile %q is not a profile name", r.Profile))
	}
	if r.ProjectID == "" || len(r.ProjectID) > MaxProjectID {
		errs = append(errs, fmt.Errorf("project_id must be 1..%d characters", MaxProjectID))
	}
	if r.NotAfter.IsZero() {
		errs = append(errs, errors.New("not_after is required"))
	}
	if len(r.Nonce) < 16 || len(r.Nonce) > 64 {
		errs = append(errs, errors.New("nonce must be 16..64 bytes"))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("%w: %w", ErrRequest, err)
	}
	return nil
}

// Wipe overwrites the secret.
func (r *Request) Wipe() { clear(r.Secret) }

// NewRequest builds a request with a fresh nonce.
func NewRequest(secret []byte, profile, projectID string, notAfter time.Time) (*Request, error) {
	r := &Request{Secret: secret, Profile: profile, ProjectID: projectID, NotAfter: notAfter.UTC().Truncate(time.Second), Nonce: make([]byte, NonceSize)}
	if _, err := rand.Read(r.Nonce); err != nil {
		return nil, err
	}
	return r, r.Validate()
}

// Seal encrypts r to the service's launch key (HPKE base mode, the key's
// KEM, HKDF-SHA256, AES-256-GCM, info Info): the output is enc ‖
// ciphertext, what POST /v1/launches takes base64-encoded as "sealed".
func Seal(pub *PublicKey, r *Request) ([]byte, error) {
	if err := r.Validate(); err != nil {
		return nil, err
	}
	// The plaintext is sealed right away; marshalling the secret is the point.
	pt, err := json.Marshal(r) //nolint:gosec // G117: encrypted to the launch key below
	if err != nil {
		return nil, fmt.Errorf("encode request: %w", err)
	}
	defer clear(pt)
	out, err := hpke.Seal(pub.pk, hpke.HKDFSHA256(), hpke.AES256GCM(), []byte(Info), pt)
	if err != nil {
		return nil, fmt.Errorf("seal request: %w", err)
	}
	return out, nil
}

// Open decrypts and strictly decodes a sealed request; it does not check
// the project or expiry (Check does). Errors wrap ErrSealed or ErrRequest
// and never carry plaintext.
func Open(k *PrivateKey, sealed []byte) (*Request, error) {
	if len(sealed) == 0 || len(sealed) > MaxSealed {
		return nil, fmt.Errorf("%w: must be 1..%d bytes", ErrSealed, MaxSealed)
	}
	pt, err := hpke.Open(k.sk, hpke.HKDFSHA256(), hpke.AES256GCM(), []byte(Info), sealed)
	if err != nil {
		return nil, ErrSealed
	}
	defer clear(pt)
	return decodeRequest(pt)
}

// decodeRequest decodes an opened request's plaintext.
func decodeRequest(pt []byte) (*Request, error) {
	var r Request
	if err := jsondecode.Strict(pt, &r); err != nil {
		r.Wipe()
		return nil, fmt.Errorf("%w: %w", ErrRequest, err)
	}
	if err := r.Validate(); err != nil {
		r.Wipe()
		return nil, err
	}
	r.NotAfter = r.NotAfter.UTC()
	return &r, nil
}

// Check refuses a request sealed for another project than projectID, or
// whose not_after is not after now.
func (r *Request) Check(projectID string, now time.Time) error {
	if r.ProjectID != projectID {
		return ErrProject
	}
	if !now.Before(r.NotAfter) {
		return fmt.Errorf("%w: not_after %s", ErrExpired, r.NotAfter.Format(time.RFC3339))
	}
	return nil
}
