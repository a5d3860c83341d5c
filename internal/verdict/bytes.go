package verdict

import (
	"crypto/ed25519"
	"encoding/base64"
	"fmt"
)

// SignBytes signs another statement of the service (a launch receipt) the
// way verdicts are signed: Ed25519 over the exact bytes, with the signer's
// kid. The statement's own format must keep it from parsing as a verdict
// (Unmarshal refuses unknown fields) and vice versa.
func (s *Signer) SignBytes(b []byte) (kid, sig string) {
	return s.kid, base64.StdEncoding.EncodeToString(ed25519.Sign(s.key, b))
}

// VerifyBytes checks a kid and base64 signature over b against the pinned
// keys; errors wrap ErrUnsigned, ErrUnknownKey or ErrBadSignature.
func (vf *Verifier) VerifyBytes(kid, sig string, b []byte) error {
	if len(b) == 0 || sig == "" || kid == "" {
		return ErrUnsigned
	}
	key, ok := vf.keys[kid]
	if !ok {
		return fmt.Errorf("%w: kid %q", ErrUnknownKey, kid)
	}
	raw, err := base64.StdEncoding.DecodeString(sig)
	if err != nil || len(raw) != ed25519.SignatureSize {
		return fmt.Errorf("%w: signature is not %d base64 bytes", ErrBadSignature, ed25519.SignatureSize)
	}
	if !ed25519.Verify(key, b, raw) {
		return ErrBadSignature
	}
	return nil
}
