package service

import (
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"github.com/trustpool/trustpool/internal/verdict"
)

// TestLoadSigningKeyCreatesOnlyWhenAsked: with keys.create_verdict_signing_key
// the key is created once and then reused; without it a missing key is an
// error.
func TestLoadSigningKeyCreatesOnlyWhenAsked(t *testing.T) {
	path := filepath.Join(t.TempDir(), "keys", "verdict.key")
	log := slog.New(slog.DiscardHandler)
	if _, err := loadSigningKey(KeysSection{VerdictSigningKey: path}, log); !errors.Is(err, verdict.ErrNoKey) {
		t.Fatalf("switch off, no key: %v, want ErrNoKey", err)
	}
	k1, err := loadSigningKey(KeysSection{VerdictSigningKey: path, CreateVerdictSigningKey: true}, log)
	if err != nil {
		t.Fatal(err)
	}
	k2, err := loadSigningKey(KeysSection{VerdictSigningKey: path, CreateVerdictSigningKey: true}, log)
	if err != nil || !k1.Equal(k2) {
		t.Fatalf("second start with the switch on: %v, same key %v", err, k1.Equal(k2))
	}
	k3, err := loadSigningKey(KeysSection{VerdictSigningKey: path}, log)
	if err != nil || !k1.Equal(k3) {
		t.Fatalf("switch off, key present: %v", err)
	}
	if err := os.Chmod(path, 0o640); err != nil {
		t.Fatal(err)
	}
	if _, err := loadSigningKey(KeysSection{VerdictSigningKey: path, CreateVerdictSigningKey: true}, log); !errors.Is(err, verdict.ErrKeyFile) {
		t.Errorf("group-readable key with the switch on: %v, want ErrKeyFile (never replaced)", err)
	}
}
