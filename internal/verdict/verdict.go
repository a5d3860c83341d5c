// Package verdict owns the signed-verdict contract between the attestation
// service and the filter shims (docs/ARCHITECTURE.md, "Verdicts"): the verdict JSON, its
// Ed25519 signature, key ids and the PEM form of the public key.
//
// What Verify checks: the envelope has a verdict string, a kid and a
// signature; the kid names a pinned public key; the Ed25519 signature over
// the exact UTF-8 bytes of the verdict string is valid; the verdict decodes
// strictly (no unknown fields) and is well formed (host, known status,
// timestamps, sorted profiles, no reasons when trusted) and, in format 2,
// names a positive version for exactly the profiles it lists.
//
// Two wire formats exist. Format 1 has no "format" field. Format 2 adds
// "format": 2 and "profile_versions" (profile → the version the host
// matched). A shim built before format 2 refuses format-2 verdicts (its
// strict decoding rejects the new fields), so the service can be pinned to
// format 1 ([Format1]) until every shim understands format 2. Any other
// format number is malformed: a relying party never guesses at a format it
// does not know.
//
// What it does not check: freshness and ordering. A verified verdict may be
// expired (use [Verdict.StatusAt], which reports anything past expires_at as
// unknown) or older than one already seen (callers compare [Verdict.Seq] per
// host). The package does no I/O except reading and creating key files
// ([LoadKey], [CreateKey]) and logs nothing.
package verdict

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"
)

// Status is a host's trust level.
type Status string

// The statuses. The legacy TrustedFilter compared trust:trusted_host
// values against exactly these strings.
const (
	// Trusted: fresh evidence verified and passed the host's profiles.
	Trusted Status = "trusted"
	// Untrusted: fresh evidence failed appraisal or was invalid.
	Untrusted Status = "untrusted"
	// Unknown: no usable evidence (never attested, unreachable, error).
	Unknown Status = "unknown"
)

// Valid reports whether s is one of the three statuses.
func (s Status) Valid() bool { return s == Trusted || s == Untrusted || s == Unknown }

// TimeFormat is how verdict timestamps are written: RFC 3339, UTC, with
// microseconds.
const TimeFormat = "2006-01-02T15:04:05.000000Z07:00"

// The wire formats.
const (
	// Format1 is the original verdict: no format field, no versions.
	Format1 = 1
	// Format2 adds "format": 2 and "profile_versions".
	Format2 = 2
	// FormatLatest is the format the service emits unless pinned.
	FormatLatest = Format2
)

// Verdict is the service's statement about one host.
type Verdict struct {
	// Format is the wire format: 0 or Format1 encodes format 1 (what
	// Unmarshal returns for it is 0), Format2 format 2.
	Format   int
	Host     string
	Status   Status
	Profiles []string // satisfied profiles, sorted
	// ProfileVersions maps each satisfied profile to the version the host
	// matched (format 2 only; keys exactly Profiles, versions positive).
	ProfileVersions map[string]int
	Reasons         []string // why not trusted; empty when trusted
	VerifiedAt      time.Time
	ExpiresAt       time.Time
	Seq             uint64 // per host, strictly increasing
	EvidenceDigest  string // hex SHA-256 of the quoted attest bytes, "" when none
	Issuer          string // service name
}

// wireVerdict is the JSON form. Format 1 encodes neither format nor
// profile_versions; both are raw on decoding so that their presence (even
// as null) is seen.
type wireVerdict struct {
	Format          json.RawMessage `json:"format,omitempty"`
	Host            string          `json:"host"`
	Status          Status          `json:"status"`
	Profiles        []string        `json:"profiles"`
	ProfileVersions json.RawMessage `json:"profile_versions,omitempty"`
	Reasons         []string        `json:"reasons"`
	VerifiedAt      string          `json:"verified_at"`
	ExpiresAt       string          `json:"expires_at"`
	Seq             uint64          `json:"seq"`
	EvidenceDigest  string          `json:"evidence_digest"`
	Issuer          string          `json:"issuer"`
}

// Errors Verify and Validate return; callers count drops by these.
var (
	ErrUnsigned     = errors.New("verdict is not signed")
	ErrUnknownKey   = errors.New("verdict signed with an unknown key")
	ErrBadSignature = errors.New("verdict signature is invalid")
	ErrMalformed    = errors.New("malformed verdict")
)

// Validate checks the verdict is well formed.
func (v Verdict) Validate() error {
	var errs []error
	if v.Host == "" {
		errs = append(errs, errors.New("host is empty"))
	}
	if !v.Status.Valid() {
		errs = append(errs, fmt.Errorf("status %q is not trusted, untrusted or unknown", v.Status))
	}
	if v.Status == Trusted && len(v.Reasons) > 0 {
		errs = append(errs, errors.New("a trusted verdict has reasons"))
	}
	if !slices.IsSorted(v.Profiles) {
		errs = append(errs, errors.New("profiles are not sorted"))
	}
	if v.VerifiedAt.IsZero() || v.ExpiresAt.IsZero() {
		errs = append(errs, errors.New("verified_at and expires_at are required"))
	} else if v.ExpiresAt.Before(v.VerifiedAt) {
		errs = append(errs, errors.New("expires_at is before verified_at"))
	}
	if v.Seq == 0 {
		errs = append(errs, errors.New("seq must be positive"))
	}
	if v.EvidenceDigest != "" {
		if b, err := hex.DecodeString(v.EvidenceDigest); err != nil || len(b) != sha256.Size {
			errs = append(errs, errors.New("evidence_digest is not a hex SHA-256"))
		}
	}
	if v.Issuer == "" {
		errs = append(errs, errors.New("issuer is empty"))
	}
	errs = append(errs, v.validateVersions()...)
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	return nil
}

// validateVersions checks ProfileVersions against the format: none in
// format 1; in format 2 a positive version for each listed profile and no
// other key, at least one profile when trusted (a trusted verdict names
// what it matched) and none when unknown (nothing was appraised).
func (v Verdict) validateVersions() []error {
	switch v.Format {
	case 0, Format1:
		if len(v.ProfileVersions) > 0 {
			return []error{errors.New("profile_versions needs format 2")}
		}
		return nil
	case Format2:
	default:
		return []error{fmt.Errorf("format %d is not 1 or 2", v.Format)}
	}
	var errs []error
	for _, p := range v.Profiles {
		n, ok := v.ProfileVersions[p]
		switch {
		case !ok:
			errs = append(errs, fmt.Errorf("profile_versions has no version for profile %q", p))
		case n < 1:
			errs = append(errs, fmt.Errorf("profile_versions: version %d of profile %q is not positive", n, p))
		}
	}
	for _, p := range slices.Sorted(maps.Keys(v.ProfileVersions)) {
		if !slices.Contains(v.Profiles, p) {
			errs = append(errs, fmt.Errorf("profile_versions names profile %q, which the verdict does not list", p))
		}
	}
	if v.Status == Trusted && len(v.Profiles) == 0 {
		errs = append(errs, errors.New("a trusted format-2 verdict names no profile"))
	}
	if v.Status == Unknown && len(v.Profiles) > 0 {
		errs = append(errs, errors.New("an unknown verdict lists profiles"))
	}
	return errs
}

// StatusAt is the status a relying party acts on at now: the verdict's
// status while it is unexpired, Unknown from expires_at on.
func (v Verdict) StatusAt(now time.Time) Status {
	if !now.Before(v.ExpiresAt) {
		return Unknown
	}
	return v.Status
}

// Marshal encodes the verdict JSON (the bytes that get signed).
func (v Verdict) Marshal() ([]byte, error) {
	if err := v.Validate(); err != nil {
		return nil, err
	}
	w := wireVerdict{
		Host: v.Host, Status: v.Status,
		Profiles: nonNil(v.Profiles), Reasons: nonNil(v.Reasons),
		VerifiedAt: v.VerifiedAt.UTC().Format(TimeFormat), ExpiresAt: v.ExpiresAt.UTC().Format(TimeFormat),
		Seq: v.Seq, EvidenceDigest: v.EvidenceDigest, Issuer: v.Issuer,
	}
	if v.Format == Format2 {
		pv := v.ProfileVersions
		if pv == nil {
			pv = map[string]int{}
		}
		var pb bytes.Buffer
		enc := json.NewEncoder(&pb) // map keys come out sorted
		enc.SetEscapeHTML(false)
		if err := enc.Encode(pv); err != nil {
			return nil, fmt.Errorf("encode profile versions: %w", err)
		}
		w.Format, w.ProfileVersions = json.RawMessage("2"), bytes.TrimRight(pb.Bytes(), "\n")
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(w); err != nil {
		return nil, fmt.Errorf("encode verdict: %w", err)
	}
	return bytes.TrimRight(buf.Bytes(), "\n"), nil
}

// Unmarshal decodes and validates verdict JSON strictly.
func Unmarshal(b []byte) (Verdict, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var w wireVerdict
	if err := dec.Decode(&w); err != nil {
		return Verdict{}, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	if dec.More() {
		return Verdict{}, fmt.Errorf("%w: trailing data", ErrMalformed)
	}
	verified, err := time.Parse(time.RFC3339Nano, w.VerifiedAt)
	if err != nil {
		return Verdict{}, fmt.Errorf("%w: verified_at: %w", ErrMalformed, err)
	}
	expires, err := time.Parse(time.RFC3339Nano, w.ExpiresAt)
	if err != nil {
		return Verdict{}, fmt.Errorf("%w: expires_at: %w", ErrMalformed, err)
	}
	v := Verdict{
		Host: w.Host, Status: w.Status, Profiles: nonNil(w.Profiles), Reasons: nonNil(w.Reasons),
		VerifiedAt: verified.UTC(), ExpiresAt: expires.UTC(), Seq: w.Seq,
		EvidenceDigest: w.EvidenceDigest, Issuer: w.Issuer,
	}
	if err := decodeVersions(&v, w); err != nil {
		return Verdict{}, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	if err := v.Validate(); err != nil {
		return Verdict{}, err
	}
	return v, nil
}

// decodeVersions reads format and profile_versions: both absent is format
// 1; otherwise format must be the number 2 and profile_versions an object
// of integers (Validate checks them against the profiles).
func decodeVersions(v *Verdict, w wireVerdict) error {
	if w.Format == nil {
		if w.ProfileVersions != nil {
			return errors.New("profile_versions without format 2")
		}
		return nil
	}
	if string(w.Format) != "2" {
		return fmt.Errorf("format %s is not 2 (format 1 has no format field)", w.Format)
	}
	if w.ProfileVersions == nil || string(w.ProfileVersions) == "null" {
		return errors.New("format 2 without profile_versions")
	}
	dec := json.NewDecoder(bytes.NewReader(w.ProfileVersions))
	var pv map[string]int
	if err := dec.Decode(&pv); err != nil {
		return fmt.Errorf("profile_versions: %w", err)
	}
	v.Format, v.ProfileVersions = Format2, pv
	return nil
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// Signed is a verdict as it travels: the verdict JSON as a string, the key
// id and the base64 Ed25519 signature over that string's UTF-8 bytes.
// Signing the bytes, not a re-encoding, avoids canonicalisation bugs.
type Signed struct {
	Verdict string `json:"verdict"`
	KID     string `json:"kid"`
	Sig     string `json:"sig"`
}

// KeyID is the first 16 hex characters of the SHA-256 of the raw public key.
func KeyID(pub ed25519.PublicKey) string {
	sum := sha256.Sum256(pub)
	return hex.EncodeToString(sum[:])[:16]
}

// Signer signs verdicts with one private key.
type Signer struct {
	key ed25519.PrivateKey
	kid string
}

// NewSigner returns a signer for key.
func NewSigner(key ed25519.PrivateKey) *Signer {
	pub, _ := key.Public().(ed25519.PublicKey)
	return &Signer{key: key, kid: KeyID(pub)}
}

// KID is the signer's key id.
func (s *Signer) KID() string { return s.kid }

// Public is the signer's public key.
func (s *Signer) Public() ed25519.PublicKey {
	pub, _ := s.key.Public().(ed25519.PublicKey)
	return pub
}

// Sign encodes and signs v.
func (s *Signer) Sign(v Verdict) (Signed, error) {
	b, err := v.Marshal()
	if err != nil {
		return Signed{}, fmt.Errorf("sign verdict for %q: %w", v.Host, err)
	}
	return Signed{Verdict: string(b), KID: s.kid, Sig: base64.StdEncoding.EncodeToString(ed25519.Sign(s.key, b))}, nil
}

// Verifier checks signed verdicts against pinned public keys.
type Verifier struct {
	keys map[string]ed25519.PublicKey
}

// NewVerifier pins keys (several during a key rotation).
func NewVerifier(keys ...ed25519.PublicKey) *Verifier {
	m := make(map[string]ed25519.PublicKey, len(keys))
	for _, k := range keys {
		m[KeyID(k)] = k
	}
	return &Verifier{keys: m}
}

// Verify checks s and returns the verdict it carries. See the package doc
// for what is and is not checked.
func (vf *Verifier) Verify(s Signed) (Verdict, error) {
	if s.Verdict == "" || s.Sig == "" || s.KID == "" {
		return Verdict{}, ErrUnsigned
	}
	key, ok := vf.keys[s.KID]
	if !ok {
		return Verdict{}, fmt.Errorf("%w: kid %q", ErrUnknownKey, s.KID)
	}
	sig, err := base64.StdEncoding.DecodeString(s.Sig)
	if err != nil || len(sig) != ed25519.SignatureSize {
		return Verdict{}, fmt.Errorf("%w: signature is not %d base64 bytes", ErrBadSignature, ed25519.SignatureSize)
	}
	if !ed25519.Verify(key, []byte(s.Verdict), sig) {
		return Verdict{}, ErrBadSignature
	}
	return Unmarshal([]byte(s.Verdict))
}

// VerifyJSON decodes one signed verdict as it travels (the JSON envelope)
// strictly and verifies it: the check every relying party runs, the filter
// shim's trust cache and the trustpool CLI alike. Errors wrap ErrMalformed,
// ErrUnsigned, ErrUnknownKey or ErrBadSignature.
func (vf *Verifier) VerifyJSON(raw []byte) (Verdict, error) {
	s, err := ParseSigned(raw)
	if err != nil {
		return Verdict{}, err
	}
	return vf.Verify(s)
}

// ParseSigned decodes one signed verdict from JSON (e.g. an element of
// verdicts_changed's list), strictly.
func ParseSigned(b []byte) (Signed, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var s Signed
	if err := dec.Decode(&s); err != nil {
		return Signed{}, fmt.Errorf("%w: signed envelope: %w", ErrMalformed, err)
	}
	return s, nil
}
