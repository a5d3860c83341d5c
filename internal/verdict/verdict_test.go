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

// trustedV2 is trustedVerdict in format 2.
func trustedV2() Verdict {
	v := trustedVerdict()
	v.Format, v.ProfileVersions = Format2, map[string]int{"baseline": 3, "gpu-2026": 1}
	return v
}

// resign signs body (already-encoded verdict JSON, not checked) with key.
func resign(key ed25519.PrivateKey, body string) Signed {
	return Signed{Verdict: body, KID: KeyID(key.Public().(ed25519.PublicKey)), Sig: base64.StdEncoding.EncodeToString(ed25519.Sign(key, []byte(body)))}
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

	// Format 2: valid ones come from the signer, malformed ones are edits
	// of a valid one, signed again, so only the decoding can refuse them.
	untrustedV2 := untrusted
	untrustedV2.Format, untrustedV2.ProfileVersions = Format2, map[string]int{}
	untrustedSomeV2 := untrustedV2 // a profile passed, a required one did not
	untrustedSomeV2.Profiles, untrustedSomeV2.ProfileVersions = []string{"baseline"}, map[string]int{"baseline": 2}
	unknownV2 := unknown
	unknownV2.Format = Format2
	goodV2 := sign(trustedV2())
	edit := func(from, to string) Signed {
		t.Helper()
		if !strings.Contains(goodV2.Verdict, from) {
			t.Fatalf("format-2 verdict has no %s: %s", from, goodV2.Verdict)
		}
		return resign(goldenKey(), strings.Replace(goodV2.Verdict, from, to, 1))
	}
	goodUnknownV2 := sign(unknownV2)
	unknownWithVersions := resign(goldenKey(), strings.Replace(strings.Replace(goodUnknownV2.Verdict,
		`"profiles":[]`, `"profiles":["baseline"]`, 1), `"profile_versions":{}`, `"profile_versions":{"baseline":1}`, 1))
	untrustedExtra := resign(goldenKey(), strings.Replace(sign(untrustedV2).Verdict, `"profile_versions":{}`, `"profile_versions":{"baseline":1}`, 1))
	v1WithVersions := resign(goldenKey(), strings.Replace(good.Verdict, `"reasons"`, `"profile_versions":{"baseline":3,"gpu-2026":1},"reasons"`, 1))

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
		{"trusted_format2", goodV2},
		{"untrusted_format2", sign(untrustedV2)},
		{"untrusted_format2_some_profiles", sign(untrustedSomeV2)},
		{"unknown_format2", goodUnknownV2},
		{"format2_tampered_version", func() Signed {
			s := goodV2
			s.Verdict = strings.Replace(s.Verdict, `"baseline":3`, `"baseline":4`, 1)
			return s
		}()},
		{"format3", edit(`"format":2`, `"format":3`)},
		{"format1_explicit", edit(`"format":2`, `"format":1`)},
		{"format_as_string", edit(`"format":2`, `"format":"2"`)},
		{"format2_without_profile_versions", edit(`"profile_versions":{"baseline":3,"gpu-2026":1},`, ``)},
		{"format2_null_profile_versions", resign(goldenKey(), strings.Replace(sign(untrustedV2).Verdict, `"profile_versions":{}`, `"profile_versions":null`, 1))},
		{"format2_missing_version", edit(`{"baseline":3,"gpu-2026":1}`, `{"baseline":3}`)},
		{"format2_extra_version", edit(`{"baseline":3,"gpu-2026":1}`, `{"baseline":3,"gpu-2026":1,"legacy":2}`)},
		{"format2_zero_version", edit(`"gpu-2026":1`, `"gpu-2026":0`)},
		{"format2_negative_version", edit(`"gpu-2026":1`, `"gpu-2026":-1`)},
		{"format2_fractional_version", edit(`"gpu-2026":1`, `"gpu-2026":1.5`)},
		{"format2_trusted_without_profiles", edit(`"profiles":["baseline","gpu-2026"],"profile_versions":{"baseline":3,"gpu-2026":1}`, `"profiles":[],"profile_versions":{}`)},
		{"format2_versions_on_untrusted", untrustedExtra},
		{"format2_versions_on_unknown", unknownWithVersions},
		{"format1_with_profile_versions", v1WithVersions},
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
		"trusted_format2": "", "untrusted_format2": "", "untrusted_format2_some_profiles": "", "unknown_format2": "",
		"format2_tampered_version": "bad_signature",
		"format3":                  "malformed", "format1_explicit": "malformed", "format_as_string": "malformed",
		"format2_without_profile_versions": "malformed", "format2_null_profile_versions": "malformed",
		"format2_missing_version": "malformed", "format2_extra_version": "malformed", "format2_zero_version": "malformed",
		"format2_negative_version": "malformed", "format2_fractional_version": "malformed",
		"format2_trusted_without_profiles": "malformed", "format2_versions_on_untrusted": "malformed",
		"format2_versions_on_unknown": "malformed", "format1_with_profile_versions": "malformed",
	}
	// Verify the file's vectors with the key parsed from the file's PEM,
	// the way a shim does.
	pub, err := ParsePublicKeyPEM([]byte(want.PublicKeyPEM))
	if err != nil {
		t.Fatal(err)
	}
	vr := NewVerifier(pub)
	if len(want.Vectors) != len(wantOutcome) {
		t.Errorf("%d vectors, %d expected outcomes", len(want.Vectors), len(wantOutcome))
	}
	for _, vec := range want.Vectors {
		if _, ok := wantOutcome[vec.Name]; !ok {
			t.Errorf("vector %s has no expected outcome", vec.Name)
		}
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

// TestFormats pins what each format looks like on the wire: format 1 is
// the bytes a pre-format-2 service signed (a shim of that time decodes
// nothing else), format 2 adds exactly format and profile_versions; both
// round-trip.
func TestFormats(t *testing.T) {
	const v1 = `{"host":"compute-1","status":"trusted","profiles":["baseline","gpu-2026"],"reasons":[],"verified_at":"2026-11-25T12:00:00.123456Z","expires_at":"2026-11-25T12:03:00.123456Z","seq":7,"evidence_digest":"abababababababababababababababababababababababababababababababab","issuer":"trustpool-attestation"}`
	const v2 = `{"format":2,"host":"compute-1","status":"trusted","profiles":["baseline","gpu-2026"],"profile_versions":{"baseline":3,"gpu-2026":1},"reasons":[],"verified_at":"2026-11-25T12:00:00.123456Z","expires_at":"2026-11-25T12:03:00.123456Z","seq":7,"evidence_digest":"abababababababababababababababababababababababababababababababab","issuer":"trustpool-attestation"}`
	explicit1 := trustedVerdict()
	explicit1.Format = Format1
	untrusted2 := trustedV2()
	untrusted2.Status, untrusted2.Profiles, untrusted2.ProfileVersions, untrusted2.Reasons = Untrusted, []string{}, nil, []string{"r"}
	for _, tc := range []struct {
		name string
		v    Verdict
		want string
		back Verdict // what Unmarshal returns
	}{
		{"format 1 (zero value)", trustedVerdict(), v1, trustedVerdict()},
		{"format 1 (explicit)", explicit1, v1, trustedVerdict()},
		{"format 2", trustedV2(), v2, trustedV2()},
		{"format 2 untrusted, nil versions", untrusted2, strings.NewReplacer(`"trusted"`, `"untrusted"`, `["baseline","gpu-2026"]`, `[]`,
			`{"baseline":3,"gpu-2026":1}`, `{}`, `"reasons":[]`, `"reasons":["r"]`).Replace(v2),
			func() Verdict { u := untrusted2; u.ProfileVersions = map[string]int{}; return u }()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := tc.v.Marshal()
			if err != nil {
				t.Fatal(err)
			}
			if string(b) != tc.want {
				t.Errorf("Marshal =\n%s\nwant\n%s", b, tc.want)
			}
			got, err := Unmarshal(b)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.back, got); diff != "" {
				t.Errorf("round trip (-want +got):\n%s", diff)
			}
		})
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
		// Versions that would make them valid format-2 verdicts.
		{"unknown format", func(v *Verdict) { v.Format, v.ProfileVersions = 3, map[string]int{"baseline": 1, "gpu-2026": 1} }},
		{"negative format", func(v *Verdict) { v.Format, v.ProfileVersions = -1, map[string]int{"baseline": 1, "gpu-2026": 1} }},
		{"format 1 with versions", func(v *Verdict) { v.ProfileVersions = map[string]int{"baseline": 1, "gpu-2026": 1} }},
		{"format 2 missing version", func(v *Verdict) { v.Format, v.ProfileVersions = Format2, map[string]int{"baseline": 1} }},
		{"format 2 nil versions", func(v *Verdict) { v.Format = Format2 }},
		{"format 2 extra version", func(v *Verdict) {
			v.Format, v.ProfileVersions = Format2, map[string]int{"baseline": 1, "gpu-2026": 1, "x": 1}
		}},
		{"format 2 zero version", func(v *Verdict) { v.Format, v.ProfileVersions = Format2, map[string]int{"baseline": 1, "gpu-2026": 0} }},
		{"format 2 trusted without profiles", func(v *Verdict) { v.Format, v.Profiles, v.ProfileVersions = Format2, []string{}, map[string]int{} }},
		{"format 2 versions on untrusted", func(v *Verdict) {
			v.Format, v.Status, v.Reasons, v.Profiles, v.ProfileVersions = Format2, Untrusted, []string{"r"}, []string{}, map[string]int{"baseline": 1}
		}},
		{"format 2 unknown with profiles", func(v *Verdict) {
			v.Format, v.Status, v.Reasons, v.ProfileVersions = Format2, Unknown, []string{"r"}, map[string]int{"baseline": 1, "gpu-2026": 1}
		}},
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

// readVectors reads testdata/vectors.json, the fuzz targets' seeds.
func readVectors(f *testing.F) vectorFile {
	f.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "vectors.json"))
	if err != nil {
		f.Fatal(err)
	}
	var vf vectorFile
	if err := json.Unmarshal(b, &vf); err != nil {
		f.Fatal(err)
	}
	return vf
}

// checkReencodes fails t unless accepted v survives a re-encoding in its
// format (format 2's versions included). Timestamps are re-encoded to
// microseconds; the rest must not move.
func checkReencodes(t *testing.T, v Verdict) {
	t.Helper()
	b, err := v.Marshal()
	if err != nil {
		t.Fatalf("re-encode an accepted verdict: %v", err)
	}
	back, err := Unmarshal(b)
	if err != nil {
		t.Fatalf("decode a re-encoded verdict: %v", err)
	}
	v.VerifiedAt, v.ExpiresAt, back.VerifiedAt, back.ExpiresAt = time.Time{}, time.Time{}, time.Time{}, time.Time{}
	if diff := cmp.Diff(v, back); diff != "" {
		t.Fatalf("re-encoding changed the verdict (-accepted +re-decoded):\n%s", diff)
	}
}

func FuzzVerify(f *testing.F) {
	vf := readVectors(f)
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
		checkReencodes(t, v)
	})
}

// FuzzUnmarshal feeds verdict JSON straight to the decoder (the part behind
// the signature check, which FuzzVerify's mutations rarely get past),
// seeded with every vector's verdict, both formats and each malformed one.
func FuzzUnmarshal(f *testing.F) {
	for _, v := range readVectors(f).Vectors {
		f.Add([]byte(v.Signed.Verdict))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		v, err := Unmarshal(data)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("Unmarshal error %v is not ErrMalformed", err)
			}
			return
		}
		if v.Format != 0 && v.Format != Format2 {
			t.Fatalf("Unmarshal returned format %d", v.Format)
		}
		checkReencodes(t, v)
	})
}
