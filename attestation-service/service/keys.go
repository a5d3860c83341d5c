package service

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"

	"github.com/trustpool/trustpool/internal/verdict"
)

// loadSigningKey reads the verdict signing key. Every filter shim pins its
// public key, so a new key is created only when asked: with [keys]
// create_verdict_signing_key (DevStack sets it) or the create-key command.
// A missing key is otherwise a start-up error naming the path.
func loadSigningKey(k KeysSection, log *slog.Logger) (ed25519.PrivateKey, error) {
	path := k.VerdictSigningKey
	key, err := verdict.LoadKey(path)
	switch {
	case err == nil:
		return key, nil
	case !errors.Is(err, verdict.ErrNoKey):
		return nil, fmt.Errorf("keys.verdict_signing_key: %w", err)
	case !k.CreateVerdictSigningKey:
		return nil, fmt.Errorf("keys.verdict_signing_key: %w; create it with `trustpool-attestation create-key %s` "+
			"(or set keys.create_verdict_signing_key = true to create it at start); filter shims must then pin its public key "+
			"(GET /v1/keys), as they drop verdicts signed by a key they do not pin", err, path)
	}
	key, err = verdict.CreateKey(path)
	if err != nil {
		return nil, fmt.Errorf("keys.verdict_signing_key: %w", err)
	}
	log.Warn("created a new verdict signing key (keys.create_verdict_signing_key is set); filter shims must pin its public key",
		"path", path, "kid", verdict.KeyID(key.Public().(ed25519.PublicKey)))
	return key, nil
}

// CreateKeyMain is `trustpool-attestation create-key PATH`: it creates a
// verdict signing key at PATH (mode 0600, never replacing an existing file)
// and prints its key id and public key, the PEM that filter shims pin.
func CreateKeyMain(args []string, stdout, stderr io.Writer) int {
	if len(args) != 1 || args[0] == "" || args[0][0] == '-' {
		fmt.Fprintln(stderr, "usage: trustpool-attestation create-key PATH\n\n"+
			"Creates the Ed25519 verdict signing key at PATH ([keys] verdict_signing_key) and prints its public key.\n"+
			"Run it as the user the service runs as. An existing file is never replaced.")
		return 2
	}
	path := args[0]
	key, err := verdict.CreateKey(path)
	if errors.Is(err, fs.ErrExist) {
		fmt.Fprintf(stderr, "trustpool-attestation create-key: %s already exists; not replacing it (filter shims pin its public key)\n", path)
		return 1
	}
	if err != nil {
		fmt.Fprintf(stderr, "trustpool-attestation create-key: %v\n", err)
		return 1
	}
	pub := key.Public().(ed25519.PublicKey)
	pemBytes, err := verdict.MarshalPublicKeyPEM(pub)
	if err != nil {
		fmt.Fprintf(stderr, "trustpool-attestation create-key: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "created verdict signing key %s (kid %s); filter shims pin this public key:\n%s", path, verdict.KeyID(pub), pemBytes)
	return 0
}
