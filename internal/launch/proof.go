package launch

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
)

// ProofLabel prefixes the challenge in a proof.
const ProofLabel = "trustpool-launch-proof"

// ErrProof means a proof does not match the secret and challenge.
var ErrProof = errors.New("proof does not match")

// MaxChallenge bounds a challenge.
const MaxChallenge = 1024

// Prove is what `trustpool launch prove` prints inside the instance: hex
// HMAC-SHA256(secret, ProofLabel ‖ challenge). Only a holder of the secret
// can answer a challenge the tenant just chose.
func Prove(secret, challenge []byte) (string, error) {
	if len(secret) == 0 {
		return "", errors.New("prove: empty secret")
	}
	if len(challenge) == 0 || len(challenge) > MaxChallenge {
		return "", fmt.Errorf("prove: challenge must be 1..%d bytes", MaxChallenge)
	}
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(ProofLabel))
	m.Write(challenge)
	return hex.EncodeToString(m.Sum(nil)), nil
}

// CheckProof is `trustpool launch check`: it compares proof with the
// expected one in constant time.
func CheckProof(secret, challenge []byte, proof string) error {
	want, err := Prove(secret, challenge)
	if err != nil {
		return err
	}
	got, err := hex.DecodeString(strings.TrimSpace(strings.ToLower(proof)))
	if err != nil || len(got) != sha256.Size {
		return fmt.Errorf("%w: not %d hexadecimal bytes", ErrProof, sha256.Size)
	}
	w, _ := hex.DecodeString(want)
	if !hmac.Equal(got, w) {
		return ErrProof
	}
	return nil
}
