package service

import (
	"bytes"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/trustpool/trustpool/internal/policykey"
)

// TestPolicyKey: without its file the service seals to PolicyPCR (no key,
// a warning), creates it only when asked, refuses a file others can read;
// create-policy-key writes a 0600 key once and never replaces it.
func TestPolicyKey(t *testing.T) {
	dir := t.TempDir()
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	k := KeysSection{PolicySigningKey: filepath.Join(dir, "policy-signing.key")}
	if key, err := loadPolicyKey(k, log); err != nil || key != nil {
		t.Fatalf("missing key = %v, %v; want none and no error", key, err)
	}
	if !strings.Contains(logs.String(), "create-policy-key") {
		t.Errorf("no warning naming create-policy-key: %s", logs.String())
	}
	if _, err := os.Stat(k.PolicySigningKey); err == nil {
		t.Fatal("a key was created without create_policy_signing_key")
	}
	k.CreatePolicySigningKey = true
	created, err := loadPolicyKey(k, log)
	if err != nil || created == nil {
		t.Fatalf("create at start = %v, %v", created, err)
	}
	again, err := loadPolicyKey(k, log)
	if err != nil || again.Public().Fingerprint() != created.Public().Fingerprint() {
		t.Fatalf("second start = %v, %v; want the same key", again, err)
	}
	if err := os.Chmod(k.PolicySigningKey, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := loadPolicyKey(k, log); err == nil || !strings.Contains(err.Error(), "keys.policy_signing_key") {
		t.Errorf("world-readable key = %v, want an error naming keys.policy_signing_key", err)
	}

	path := filepath.Join(dir, "cmd", "policy.key")
	var out, errOut bytes.Buffer
	if code := CreatePolicyKeyMain([]string{path}, &out, &errOut); code != 0 {
		t.Fatalf("create-policy-key: exit %d: %s", code, errOut.String())
	}
	key, err := policykey.LoadKey(path)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "kid "+key.Public().KID()) || !strings.Contains(out.String(), "BEGIN PUBLIC KEY") {
		t.Errorf("create-policy-key printed %q", out.String())
	}
	errOut.Reset()
	if code := CreatePolicyKeyMain([]string{path}, io.Discard, &errOut); code != 1 || !strings.Contains(errOut.String(), "not replacing it") {
		t.Errorf("second create-policy-key: exit %d, %q", code, errOut.String())
	}
	if code := CreatePolicyKeyMain(nil, io.Discard, io.Discard); code != 2 {
		t.Errorf("create-policy-key without a path: exit %d, want 2", code)
	}
}
