package service_test

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/trustpool/trustpool/attestation-service/service"
	"github.com/trustpool/trustpool/internal/verdict"
)

// startConfig is a configuration that gets as far as loading the signing key
// without a broker or Keystone (nothing connects before the key is loaded).
func startConfig(t *testing.T, keyPath string) service.Config {
	t.Helper()
	dir := t.TempDir()
	cfg := service.DefaultConfig()
	cfg.Default.TransportURL = "rabbit://guest:guest@127.0.0.1:1/"
	cfg.Default.Host = "controller"
	cfg.Database.Connection = "sqlite:///" + filepath.Join(dir, "a.db")
	cfg.API.Listen = "127.0.0.1:0"
	cfg.Enrollment.RequireEKCert = false
	cfg.Keystone.AuthURL, cfg.Keystone.WWWAuthenticateURI = "http://127.0.0.1:1/v3", "http://127.0.0.1:1/v3"
	cfg.Keystone.Username, cfg.Keystone.Password, cfg.Keystone.UserDomainName = "trustpool", "pw", "Default"
	cfg.Keystone.ProjectName, cfg.Keystone.ProjectDomainName = "service", "Default"
	cfg.Keys.VerdictSigningKey = keyPath
	return cfg
}

// TestMissingSigningKeyStopsTheService: a key path that does not exist (in a
// directory that does not exist) stops the service with an error naming the
// path and how to create the key; nothing is created behind the operator's
// back.
func TestMissingSigningKeyStopsTheService(t *testing.T) {
	path := filepath.Join(t.TempDir(), "lost", "verdict-signing.key")
	s, err := service.New(startConfig(t, path))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	err = s.Run(ctx)
	if !errors.Is(err, verdict.ErrNoKey) || !strings.Contains(err.Error(), path) ||
		!strings.Contains(err.Error(), "create-key") || !strings.Contains(err.Error(), "keys.create_verdict_signing_key") {
		t.Fatalf("Run() = %v, want a missing-key error naming %s, create-key and keys.create_verdict_signing_key", err, path)
	}
	if _, err := os.Stat(filepath.Dir(path)); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the service created %s: %v", filepath.Dir(path), err)
	}
}

// TestCreateKeyCommand: create-key writes a key the service then loads,
// prints the public key shims pin, and never replaces an existing key.
func TestCreateKeyCommand(t *testing.T) {
	path := filepath.Join(t.TempDir(), "keys", "verdict-signing.key")
	var out, errOut bytes.Buffer
	if code := service.CreateKeyMain([]string{path}, &out, &errOut); code != 0 {
		t.Fatalf("create-key = %d: %s", code, errOut.String())
	}
	key, err := verdict.LoadKey(path)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := verdict.ParsePublicKeyPEM(out.Bytes()[bytes.Index(out.Bytes(), []byte("-----BEGIN")):])
	if err != nil || !pub.Equal(key.Public()) {
		t.Errorf("printed public key %v does not match the key written: %s", err, out.String())
	}
	if !strings.Contains(out.String(), verdict.KeyID(pub)) {
		t.Errorf("output %q lacks the kid", out.String())
	}
	before, _ := os.ReadFile(path)
	out.Reset()
	errOut.Reset()
	if code := service.CreateKeyMain([]string{path}, &out, &errOut); code != 1 || !strings.Contains(errOut.String(), "already exists") {
		t.Errorf("create-key over an existing key = %d %q, want 1 and 'already exists'", code, errOut.String())
	}
	if after, _ := os.ReadFile(path); !bytes.Equal(before, after) {
		t.Error("create-key replaced an existing key")
	}
	for _, args := range [][]string{nil, {"a", "b"}, {"-h"}} {
		if code := service.CreateKeyMain(args, &out, &errOut); code != 2 {
			t.Errorf("create-key %v = %d, want 2 (usage)", args, code)
		}
	}
}
