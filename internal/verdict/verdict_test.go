package verdict

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

var update = flag.Bool("update", false, "rewrite testdata/vectors.json")

// The golden key: a fixed seed, so the vectors are reproducible (Ed25519
// signatures are deterministic). Never use it outside tests.
var goldenSeed = []byte("trustpool-verdict-golden-vector!")

func goldenKey() ed25519.PrivateKey { return ed25519.NewKeyFromSeed(goldenSeed) }

var t0 = time.Date(2026, 11, 25, 12, 0, 0, 123456000, time.UTC)

func trustedVerdict() Verdict {
	return Verdict{
		Host: "compute-1", Status: Trusted, Profiles: []string{"baseline", "gpu-2026"}, Reasons: []string{},
		VerifiedAt: t0, ExpiresAt: t0.Add(3 * time.Minute), Seq: 7,
		EvidenceDigest: strings.Repeat("ab", 32), Issuer: "trustpool-attestation",
	}
}

// vector is one golden case shared by Go and Python tests.
type vector struct {
	Name    string         `json:"name"`
	Signed  Signed         `json:"signed"`
	Valid   bool           `json:"valid"`
	Error   string         `json:"error,omitempty"`
	Verdict map[string]any `json:"verdict,omitempty"`
}

type vectorFile struct {
	Comment      string   `json:"comment"`
	PublicKeyPEM string   `json:"public_key_pem"`
	KID          string   `json:"kid"`
	Vectors      []vector `json:"vectors"`
}

func errName(err error) string {
	for _, e := range []struct {
		err  error
		name string
	}{{ErrUnsigned, "unsigned"}, {ErrUnknownKey, "unknown_key"}, {ErrBadSignature, "bad_signature"}, {ErrMalformed, "malformed"}} {
		if errors.Is(err, e.err) {
			return e.name
		}
	}
	return "other"
}

func buildVectors(t *testing.T) vectorFile {
	t.Helper()
	s := NewSigner(goldenKey())
	pem, err := MarshalPublicKeyPEM(s.Public())
	if err != nil {
		t.Fatal(err)
	}
	sign := func(v Verdict) Signed {
		t.Helper()
		sv, err := s.Sign(v)
		if err != nil {
			t.Fatal(err)
		}
		return sv
	}
	untrusted := trustedVerdict()
	untrusted.Status, untrusted.Profiles, untrusted.Reasons, untrusted.Seq = Untrusted, []string{}, []string{"pcr 7: value not in profile baseline"}, 8
	unknown := trustedVerdict()
	unknown.Host, unknown.Status, unknown.Profiles, unknown.Reasons, unknown.EvidenceDigest, unknown.Seq = "compute-2", Unknown, []string{}, []string{"unreachable: no reply within 30s"}, "", 1

	good := sign(trustedVerdict())
	tamperedStatus := good
	tamperedStatus.Verdict = strings.Replace(good.Verdict, `"trusted"`, `"untrusted"`, 1)
	tamperedHost := good
	tamperedHost.Verdict = strings.Replace(good.Verdict, "compute-1", "compute-9", 1)
	reencoded := good // same JSON, other spacing: the signature covers bytes
	reencoded.Verdict = strings.Replace(good.Verdict, `,"status"`, `, "status"`, 1)
	badSig := good
	sig, _ := base64.StdEncoding.DecodeString(good.Sig)
	sig[0] ^= 1
	badSig.Sig = base64.StdEncoding.EncodeToString(sig)
	otherSigner := NewSigner(ed25519.NewKeyFromSeed([]byte("another-key-that-shims-dont-pin!")))
	unknownKid, err := otherSigner.Sign(trustedVerdict())
	if err != nil {
		t.Fatal(err)
	}
	unsigned := Signed{Verdict: good.Verdict}
	wrongKidRightSig := good
	wrongKidRightSig.KID = otherSigner.KID()

	cases := []struct {
		name string
		s    Signed
	}{
		{"trusted", good},
		{"untrusted", sign(untrusted)},
		{"unknown_unreachable", sign(unknown)},
		{"tampered_status", tamperedStatus},
		{"tampered_host", tamperedHost},
		{"reencoded_verdict", reencoded},
		{"bad_signature", badSig},
		{"unknown_kid", unknownKid},
		{"kid_of_other_key", wrongKidRightSig},
		{"unsigned", unsigned},
	}
	vf := vectorFile{
		Comment:      "Golden signed verdicts (package verdict's format). Key: Ed25519 from the 32-byte seed 'trustpool-verdict-golden-vector!' (tests only). Regenerate: go test ./internal/verdict -run TestGoldenVectors -update",
		PublicKeyPEM: string(pem), KID: s.KID(),
	}
	vr := NewVerifier(s.Public())
	for _, c := range cases {
		vec := vector{Name: c.name, Signed: c.s}
		if _, err := vr.Verify(c.s); err != nil {
			vec.Error = errName(err)
		} else {
			vec.Valid = true
			if err := json.Unmarshal([]byte(c.s.Verdict), &vec.Verdict); err != nil {
				t.Fatal(err)
			}
		}
		vf.Vectors = append(vf.Vectors, vec)
	}
	return vf
}

func TestGoldenVectors(t *testing.T) {
	path := filepath.Join("testdata", "vectors.json")
	got := buildVectors(t)
	if *update {
		b, err := json.MarshalIndent(got, "", "  ")
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read golden vectors (run with -update to create): %v", err)
	}
	var want vectorFile
	if err := json.Unmarshal(b, &want); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("vectors changed (-file +built); the wire contract must not drift:\n%s", diff)
	}
	wantOutcome := map[string]string{
		"trusted": "", "untrusted": "", "unknown_unreachable": "",
		"tampered_status": "bad_signature", "tampered_host": "bad_signature", "reencoded_verdict": "bad_signature",
		"bad_signature": "bad_signature", "unknown_kid": "unknown_key", "kid_of_other_key": "unknown_key", "unsigned": "unsigned",
	}
	// Verify the file's vectors with the key parsed from the file's PEM,
	// the way a shim does.
	pub, err := ParsePublicKeyPEM([]byte(want.PublicKeyPEM))
	if err != nil {
		t.Fatal(err)
	}
	vr := NewVerifier(pub)
	for _, vec := range want.Vectors {
		_, err := vr.Verify(vec.Signed)
		outcome := ""
		if err != nil {
			outcome = errName(err)
		}
		if outcome != wantOutcome[vec.Name] {
			t.Errorf("%s: outcome %q, want %q", vec.Name, outcome, wantOutcome[vec.Name])
		}
	}
}

func TestSignVerifyRoundTrip(t *testing.T) {
	s := NewSigner(goldenKey())
	want := trustedVerdict()
	sv, err := s.Sign(want)
	if err != nil {
		t.Fatal(err)
	}
	got, err := NewVerifier(s.Public()).Verify(sv)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("round trip mismatch (-want +got):\n%s", diff)
	}
	if !strings.Contains(sv.Verdict, `"verified_at":"2026-11-25T12:00:00.123456Z"`) {
		t.Errorf("timestamp not RFC 3339 UTC with fractional seconds: %s", sv.Verdict)
	}
	if len(sv.KID) != 16 || sv.KID != KeyID(s.Public()) {
		t.Errorf("kid = %q", sv.KID)
	}
}

func TestValidateRejects(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*Verdict)
	}{
		{"no host", func(v *Verdict) { v.Host = "" }},
		{"bad status", func(v *Verdict) { v.Status = "TRUSTED" }},
		{"trusted with reasons", func(v *Verdict) { v.Reasons = []string{"x"} }},
		{"unsorted profiles", func(v *Verdict) { v.Profiles = []string{"b", "a"} }},
		{"no times", func(v *Verdict) { v.VerifiedAt = time.Time{} }},
		{"expires before verified", func(v *Verdict) { v.ExpiresAt = v.VerifiedAt.Add(-time.Second) }},
		{"zero seq", func(v *Verdict) { v.Seq = 0 }},
		{"bad digest", func(v *Verdict) { v.EvidenceDigest = "xyz" }},
		{"short digest", func(v *Verdict) { v.EvidenceDigest = "abcd" }},
		{"no issuer", func(v *Verdict) { v.Issuer = "" }},
	}
	s := NewSigner(goldenKey())
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v := trustedVerdict()
			tc.mutate(&v)
			if err := v.Validate(); !errors.Is(err, ErrMalformed) {
				t.Errorf("Validate = %v, want ErrMalformed", err)
			}
			if _, err := s.Sign(v); !errors.Is(err, ErrMalformed) {
				t.Errorf("Sign = %v, want ErrMalformed", err)
			}
		})
	}
}

func TestVerifyRejectsSignedButMalformed(t *testing.T) {
	key := goldenKey()
	vr := NewVerifier(key.Public().(ed25519.PublicKey))
	for name, body := range map[string]string{
		"unknown field":  `{"host":"h","status":"trusted","profiles":[],"reasons":[],"verified_at":"2026-11-25T12:00:00Z","expires_at":"2026-11-25T12:03:00Z","seq":1,"evidence_digest":"","issuer":"i","admin":true}`,
		"bad time":       `{"host":"h","status":"trusted","profiles":[],"reasons":[],"verified_at":"yesterday","expires_at":"2026-11-25T12:03:00Z","seq":1,"evidence_digest":"","issuer":"i"}`,
		"trailing data":  `{"host":"h","status":"trusted","profiles":[],"reasons":[],"verified_at":"2026-11-25T12:00:00Z","expires_at":"2026-11-25T12:03:00Z","seq":1,"evidence_digest":"","issuer":"i"} {}`,
		"not an object":  `"trusted"`,
		"status unknown": `{"host":"h","status":"maybe","profiles":[],"reasons":[],"verified_at":"2026-11-25T12:00:00Z","expires_at":"2026-11-25T12:03:00Z","seq":1,"evidence_digest":"","issuer":"i"}`,
	} {
		t.Run(name, func(t *testing.T) {
			s := Signed{Verdict: body, KID: KeyID(key.Public().(ed25519.PublicKey)), Sig: base64.StdEncoding.EncodeToString(ed25519.Sign(key, []byte(body)))}
			if _, err := vr.Verify(s); !errors.Is(err, ErrMalformed) {
				t.Errorf("Verify = %v, want ErrMalformed", err)
			}
		})
	}
}

func TestStatusAt(t *testing.T) {
	v := trustedVerdict()
	for _, tc := range []struct {
		at   time.Time
		want Status
	}{
		{v.VerifiedAt, Trusted},
		{v.ExpiresAt.Add(-time.Nanosecond), Trusted},
		{v.ExpiresAt, Unknown},
		{v.ExpiresAt.Add(time.Hour), Unknown},
	} {
		if got := v.StatusAt(tc.at); got != tc.want {
			t.Errorf("StatusAt(%v) = %s, want %s", tc.at, got, tc.want)
		}
	}
	u := v
	u.Status = Untrusted
	if got := u.StatusAt(u.ExpiresAt.Add(time.Hour)); got != Unknown {
		t.Errorf("expired untrusted = %s, want unknown", got)
	}
}

func TestLoadAndCreateKey(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "keys", "verdict.key")
	// A missing key is an error naming the path, never a new key.
	if _, err := LoadKey(path); !errors.Is(err, ErrNoKey) || !strings.Contains(err.Error(), path) {
		t.Fatalf("LoadKey(missing) = %v, want ErrNoKey naming %s", err, path)
	}
	if _, err := os.Stat(filepath.Dir(path)); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("LoadKey created %s: %v", filepath.Dir(path), err)
	}
	k1, err := CreateKey(path)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("key mode %04o, want 0600", fi.Mode().Perm())
	}
	if _, err := CreateKey(path); !errors.Is(err, fs.ErrExist) {
		t.Errorf("CreateKey over an existing key = %v, want fs.ErrExist", err)
	}
	k2, err := LoadKey(path)
	if err != nil {
		t.Fatal(err)
	}
	if !k1.Equal(k2) {
		t.Error("LoadKey returned a different key than CreateKey wrote")
	}
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadKey(path); !errors.Is(err, ErrKeyFile) {
		t.Errorf("world-readable key: %v, want ErrKeyFile", err)
	}
	garbage := filepath.Join(dir, "garbage.key")
	if err := os.WriteFile(garbage, []byte("not a key"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadKey(garbage); !errors.Is(err, ErrKeyFile) {
		t.Errorf("garbage key: %v, want ErrKeyFile", err)
	}
	// A key of another algorithm is named in key terms, not Go types.
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalPKCS8PrivateKey(rsaKey)
	rsaPath := filepath.Join(dir, "rsa.key")
	if err := os.WriteFile(rsaPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadKey(rsaPath); !errors.Is(err, ErrKeyFile) || !strings.Contains(err.Error(), "private key is an RSA key, want Ed25519") {
		t.Errorf("RSA key: %v, want ErrKeyFile saying it is an RSA key", err)
	}
	pemBytes, err := MarshalPublicKeyPEM(k1.Public().(ed25519.PublicKey))
	if err != nil {
		t.Fatal(err)
	}
	pub, err := ParsePublicKeyPEM(pemBytes)
	if err != nil || !pub.Equal(k1.Public()) {
		t.Errorf("public key PEM round trip: %v", err)
	}
}

func FuzzVerify(f *testing.F) {
	b, err := os.ReadFile(filepath.Join("testdata", "vectors.json"))
	if err != nil {
		f.Fatal(err)
	}
	var vf vectorFile
	if err := json.Unmarshal(b, &vf); err != nil {
		f.Fatal(err)
	}
	for _, v := range vf.Vectors {
		b, err := json.Marshal(v.Signed)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	pub, err := ParsePublicKeyPEM([]byte(vf.PublicKeyPEM))
	if err != nil {
		f.Fatal(err)
	}
	vr := NewVerifier(pub)
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := ParseSigned(data)
		if err != nil {
			return
		}
		v, err := vr.Verify(s)
		if err != nil {
			return
		}
		// Anything accepted must be well formed and re-encode to the
		// exact bytes that were signed only if it came from the signer.
		if err := v.Validate(); err != nil {
			t.Fatalf("Verify accepted a malformed verdict: %v", err)
		}
	})
}
