package commands_test

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/trustpool/trustpool/cli/commands"
	"github.com/trustpool/trustpool/internal/importblob"
	"github.com/trustpool/trustpool/internal/launch"
	"github.com/trustpool/trustpool/internal/policykey"
	"github.com/trustpool/trustpool/internal/verdict"
)

// The online launch commands run against the real service in
// tests/integration (TestLaunch*); these are the offline ones and the
// usage errors.

func writeFile(t *testing.T, name string, b []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestLaunchProveCheck(t *testing.T) {
	clearOS(t)
	secret := writeFile(t, "secret", []byte("correct horse battery staple"))
	other := writeFile(t, "other", []byte("another secret"))
	r := runCLI(t, commands.Config{}, "launch", "prove", "--secret-file", secret, "--challenge", "c-1")
	if r.code != 0 || len(strings.TrimSpace(r.stdout)) != 64 {
		t.Fatalf("prove: exit %d %q %q", r.code, r.stdout, r.stderr)
	}
	proof := strings.TrimSpace(r.stdout)
	if r := runCLI(t, commands.Config{}, "launch", "check", "--secret-file", secret, "--challenge", "c-1", "--proof", proof); r.code != 0 ||
		!strings.Contains(r.stdout, "proof matches") {
		t.Errorf("check: exit %d %q %q", r.code, r.stdout, r.stderr)
	}
	for _, args := range [][]string{
		{"--secret-file", other, "--challenge", "c-1", "--proof", proof},
		{"--secret-file", secret, "--challenge", "c-2", "--proof", proof},
		{"--secret-file", secret, "--challenge", "c-1", "--proof", "zz"},
	} {
		if r := runCLI(t, commands.Config{}, append([]string{"launch", "check"}, args...)...); r.code != commands.ExitError ||
			!strings.Contains(r.stderr, "does not hold this secret") {
			t.Errorf("check %v: exit %d %q, want 1", args, r.code, r.stderr)
		}
	}
	// A secret piped on stdin.
	cfg := commands.Config{Stdin: strings.NewReader("correct horse battery staple")}
	if r := runCLI(t, cfg, "launch", "check", "--secret-file", "-", "--challenge", "c-1", "--proof", proof); r.code != 0 {
		t.Errorf("check from stdin: exit %d %q", r.code, r.stderr)
	}
	if r := runCLI(t, commands.Config{}, "launch", "prove", "--secret-file", filepath.Join(t.TempDir(), "none"), "--challenge", "c"); r.code != commands.ExitError {
		t.Errorf("prove without the secret: exit %d %q, want 1", r.code, r.stderr)
	}
}

// TestLaunchVerifyReceiptFile: the receipt an instance received verifies
// offline against the pinned verdict key; altered, or checked against
// another key or expectation, it does not.
func TestLaunchVerifyReceiptFile(t *testing.T) {
	clearOS(t)
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	s := verdict.NewSigner(priv)
	pemBytes, _ := verdict.MarshalPublicKeyPEM(s.Public())
	key := writeFile(t, "verdict.pem", pemBytes)
	_, other, _ := ed25519.GenerateKey(rand.Reader)
	otherPEM, _ := verdict.MarshalPublicKeyPEM(other.Public().(ed25519.PublicKey))
	otherKey := writeFile(t, "other.pem", otherPEM)
	now := launch.Time(time.Now())
	rc := &launch.Receipt{LaunchID: "0b6d1c3e-8f2a-4c55-9d0e-6a7b8c9d0e1f", ProjectID: "p1", InstanceID: "178b0921-8f85-4257-88b6-2e743b5a975c",
		HostID: launch.HostID("p1", "compute-1"), Profile: "baseline", VerdictSeq: 4, EvidenceDigest: strings.Repeat("a", 64),
		PCRPolicyDigest: strings.Repeat("b", 64), PCRs: []int{0, 7}, VerifiedAt: now, SealedAt: now, State: launch.StateSealed,
		Issuer: "trustpool-attestation", IssuedAt: now}
	sr, err := launch.SignReceipt(s, rc)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(sr)
	file := writeFile(t, launch.ReceiptFile, b)
	r := runCLI(t, commands.Config{}, "launch", "verify", "--receipt-file", file, "--public-key", key,
		"--server", rc.InstanceID, "--profile", "baseline", "-f", "json")
	var out map[string]any
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &out) != nil || out["signature"] != "valid" || out["state"] != "sealed" {
		t.Fatalf("verify: exit %d %q %q", r.code, r.stdout, r.stderr)
	}
	tampered := strings.Replace(string(b), `\"verdict_seq\":4`, `\"verdict_seq\":5`, 1)
	if tampered == string(b) {
		t.Fatal("tampering changed nothing")
	}
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"altered", []string{"--receipt-file", writeFile(t, "t.json", []byte(tampered)), "--public-key", key}, "signature is invalid"},
		{"unpinned key", []string{"--receipt-file", file, "--public-key", otherKey}, "unknown key"},
		{"other instance", []string{"--receipt-file", file, "--public-key", key, "--server", "00000000-0000-4000-8000-000000000000"}, "instance_id"},
		{"not delivered", []string{"--receipt-file", file, "--public-key", key, "--state", "delivered"}, "state"},
	} {
		if r := runCLI(t, commands.Config{}, append([]string{"launch", "verify"}, tc.args...)...); r.code != commands.ExitError ||
			!strings.Contains(r.stderr, tc.want) {
			t.Errorf("%s: exit %d %q, want 1 mentioning %q", tc.name, r.code, r.stderr, tc.want)
		}
	}
}

// TestLaunchVerifyPolicyKey: with --policy-key, a receipt verifies only
// when it names that key and its policy digest is the key's authorize
// policy (computed from the pinned PEM), not for another key or a secret
// sealed to PCR values alone.
func TestLaunchVerifyPolicyKey(t *testing.T) {
	clearOS(t)
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	s := verdict.NewSigner(priv)
	pemBytes, _ := verdict.MarshalPublicKeyPEM(s.Public())
	vkey := writeFile(t, "verdict.pem", pemBytes)
	pk, err := policykey.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	other, err := policykey.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	pkFile := writeFile(t, "policy.pem", pk.Public().MarshalPEM())
	otherFile := writeFile(t, "other-policy.pem", other.Public().MarshalPEM())
	digest := func(p *policykey.PublicKey) string {
		d, err := importblob.AuthorizePolicy(p.TPMName())
		if err != nil {
			t.Fatal(err)
		}
		return hex.EncodeToString(d)
	}
	now := launch.Time(time.Now())
	receipt := func(policyKey, policyDigest string) string {
		rc := &launch.Receipt{LaunchID: "0b6d1c3e-8f2a-4c55-9d0e-6a7b8c9d0e1f", ProjectID: "p1", InstanceID: "178b0921-8f85-4257-88b6-2e743b5a975c",
			HostID: launch.HostID("p1", "compute-1"), Profile: "baseline", VerdictSeq: 4, EvidenceDigest: strings.Repeat("a", 64),
			PCRPolicyDigest: policyDigest, PolicyKey: policyKey, PCRs: []int{0, 7}, VerifiedAt: now, SealedAt: now, State: launch.StateSealed,
			Issuer: "trustpool-attestation", IssuedAt: now}
		sr, err := launch.SignReceipt(s, rc)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := json.Marshal(sr)
		return writeFile(t, "receipt.json", b)
	}
	good := receipt(pk.Public().KID(), digest(pk.Public()))
	r := runCLI(t, commands.Config{}, "launch", "verify", "--receipt-file", good, "--public-key", vkey, "--policy-key", pkFile, "-f", "json")
	var out map[string]any
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &out) != nil || out["policy_key"] != pk.Public().KID() {
		t.Fatalf("verify: exit %d %q %q", r.code, r.stdout, r.stderr)
	}
	for _, tc := range []struct {
		name    string
		receipt string
		key     string
	}{
		{"another pinned key", good, otherFile},
		{"sealed to PCR values alone", receipt("", strings.Repeat("b", 64)), pkFile},
		{"names the key, another digest", receipt(pk.Public().KID(), strings.Repeat("b", 64)), pkFile},
		{"the key's digest, names another", receipt(other.Public().KID(), digest(pk.Public())), pkFile},
	} {
		if r := runCLI(t, commands.Config{}, "launch", "verify", "--receipt-file", tc.receipt, "--public-key", vkey, "--policy-key", tc.key); r.code != commands.ExitError ||
			!strings.Contains(r.stderr, "not sealed under the pinned policy key") {
			t.Errorf("%s: exit %d %q, want 1 saying it is not sealed under the key", tc.name, r.code, r.stderr)
		}
	}
	if r := runCLI(t, commands.Config{}, "launch", "verify", "--receipt-file", good, "--public-key", vkey, "--policy-key", vkey); r.code != commands.ExitUsage {
		t.Errorf("--policy-key with a verdict key: exit %d %q, want a usage error", r.code, r.stderr)
	}
}

// TestLaunchUsage: launch command line mistakes exit 2 before anything is
// contacted.
func TestLaunchUsage(t *testing.T) {
	clearOS(t)
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { hits.Add(1) }))
	defer srv.Close()
	secret := writeFile(t, "secret", []byte("s"))
	url := []string{"--os-attestation-url", srv.URL}
	create := append(url, "launch", "create", "--profile", "baseline", "--secret-file", secret)
	for _, args := range [][]string{
		create, // no pinned launch key
		append(create, "--launch-key-fingerprint", "ab", "--launch-key", secret),
		append(create, "--launch-key-fingerprint", "ab", "--server", "i-1"),
		append(create, "--launch-key-fingerprint", "ab", "--host-id", "ab"),
		append(create, "--launch-key-fingerprint", "ab", "--not-after", "yesterday"),
		append(create, "--launch-key-fingerprint", "ab", "--not-after", "-1h"),
		append(url, "launch", "create", "--profile", "Bad Name", "--secret-file", secret, "--launch-key-fingerprint", "ab"),
		append(url, "launch", "verify", "id", "--receipt-file", secret, "--public-key", secret),
		append(url, "launch", "verify", "--public-key", secret),
		append(url, "launch", "verify", "id"),
		append(url, "launch", "verify", "--receipt-file", secret, "--public-key", secret, "--state", "done"),
		append(url, "launch", "list", "--limit", "0"),
		{"launch", "prove"}, {"launch", "check", "--challenge", "c"}, {"launch", "show"}, {"launch", "delete"},
	} {
		r := runCLI(t, commands.Config{}, args...)
		if r.code != commands.ExitUsage || strings.Count(r.stderr, "\n") != 1 {
			t.Errorf("%v: exit %d, stderr %q; want 2 and one line", args, r.code, r.stderr)
		}
	}
	if n := hits.Load(); n != 0 {
		t.Errorf("usage errors reached the service %d times", n)
	}
}

// TestLaunchRedeliverTooSoon: the service's 429 (redelivery_too_soon)
// is printed on one line with its message (when to ask again), the status
// and the request id, exit 1, nothing on stdout.
func TestLaunchRedeliverTooSoon(t *testing.T) {
	asAdmin(t)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.URL.Path != "/v1/launches/l-1/redeliver" {
			envelope(w, http.StatusNotFound, "no such resource")
			return
		}
		w.Header().Set("Retry-After", "7")
		envelope(w, http.StatusTooManyRequests, "redelivery_too_soon: a re-delivery of this launch was started less than 10s ago; ask again in 7s")
	}))
	defer srv.Close()
	r := runCLI(t, commands.Config{}, "--os-attestation-url", srv.URL, "launch", "redeliver", "l-1")
	want := "trustpool: redelivery_too_soon: a re-delivery of this launch was started less than 10s ago; ask again in 7s (HTTP 429) " +
		"(Request-ID: req-00000000-0000-0000-0000-000000000001)\n"
	if r.code != commands.ExitError || r.stderr != want || r.stdout != "" {
		t.Errorf("exit %d, stderr %q, stdout %q; want exit %d, stderr %q", r.code, r.stderr, r.stdout, commands.ExitError, want)
	}
}
