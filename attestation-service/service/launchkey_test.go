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
	"github.com/trustpool/trustpool/internal/launch"
	"github.com/trustpool/trustpool/internal/verdict"
)

// TestMissingLaunchKeyStopsTheService: with trusted launches on, a missing
// launch key stops the service with an error naming the path and how to
// create it; nothing is created behind the operator's back. With launches
// off no launch key is needed.
func TestMissingLaunchKeyStopsTheService(t *testing.T) {
	dir := t.TempDir()
	cfg := startConfig(t, filepath.Join(dir, "verdict.key"))
	if _, err := verdict.CreateKey(cfg.Keys.VerdictSigningKey); err != nil {
		t.Fatal(err)
	}
	cfg.Keys.LaunchKey = filepath.Join(dir, "lost", "launch.key")
	s, err := service.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	err = s.Run(ctx)
	if !errors.Is(err, launch.ErrNoKey) || !strings.Contains(err.Error(), cfg.Keys.LaunchKey) ||
		!strings.Contains(err.Error(), "create-launch-key") || !strings.Contains(err.Error(), "keys.create_launch_key") {
		t.Fatalf("Run() = %v, want a missing-key error naming the path, create-launch-key and keys.create_launch_key", err)
	}
	if _, err := os.Stat(filepath.Dir(cfg.Keys.LaunchKey)); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the service created %s: %v", filepath.Dir(cfg.Keys.LaunchKey), err)
	}
	cfg.Launch.Enabled, cfg.Keys.LaunchKey = false, ""
	if err := cfg.Validate(); err != nil {
		t.Errorf("launches off without a launch key: %v", err)
	}
}

// TestCreateLaunchKeyCommand: create-launch-key writes a key of the KEM
// asked, prints its fingerprint and public key, and never replaces a file.
func TestCreateLaunchKeyCommand(t *testing.T) {
	for _, kem := range []string{"", launch.KEMX25519} {
		t.Run("kem="+kem, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "keys", "launch.key")
			args := []string{path}
			if kem != "" {
				args = []string{"-kem", kem, path}
			}
			var out, errOut bytes.Buffer
			if code := service.CreateLaunchKeyMain(args, &out, &errOut); code != 0 {
				t.Fatalf("create-launch-key = %d: %s", code, errOut.String())
			}
			key, err := launch.LoadKey(path)
			if err != nil {
				t.Fatal(err)
			}
			pub, err := launch.ParsePublicKeyPEM(out.Bytes()[bytes.Index(out.Bytes(), []byte("-----BEGIN")):])
			if err != nil || pub.Fingerprint() != key.Public().Fingerprint() || !strings.Contains(out.String(), "fingerprint "+pub.Fingerprint()) {
				t.Errorf("output %q does not show the key written (%v)", out.String(), err)
			}
			if want := map[string]string{"": "ML-KEM-768+X25519", launch.KEMX25519: "DHKEM(X25519"}[kem]; !strings.Contains(pub.Suite(), want) {
				t.Errorf("suite %s, want %s", pub.Suite(), want)
			}
			before, _ := os.ReadFile(path)
			errOut.Reset()
			if code := service.CreateLaunchKeyMain([]string{path}, &out, &errOut); code != 1 || !strings.Contains(errOut.String(), "already exists") {
				t.Errorf("second create-launch-key = %d %q, want 1 and already exists", code, errOut.String())
			}
			if after, _ := os.ReadFile(path); !bytes.Equal(before, after) {
				t.Error("the existing key was replaced")
			}
		})
	}
	var out, errOut bytes.Buffer
	if code := service.CreateLaunchKeyMain([]string{"-kem", "rsa", filepath.Join(t.TempDir(), "k")}, &out, &errOut); code != 1 ||
		!strings.Contains(errOut.String(), "unsupported KEM") {
		t.Errorf("-kem rsa = %d %q", code, errOut.String())
	}
	if code := service.CreateLaunchKeyMain(nil, &out, &errOut); code != 2 {
		t.Errorf("no path = %d, want 2", code)
	}
}
