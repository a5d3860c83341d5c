package launch

import (
	"bytes"
	"crypto/ed25519"
	"crypto/hpke"
	"crypto/rand"
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/trustpool/trustpool/internal/verdict"
)

const project = "6f70656e737461636b20342065766572"

func TestKeyFiles(t *testing.T) {
	for _, kem := range []string{KEMMLKEM768X25519, KEMX25519} {
		t.Run(kem, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "keys", "launch.key")
			k, err := CreateKey(path, kem)
			if err != nil {
				t.Fatal(err)
			}
			fi, err := os.Stat(path)
			if err != nil || fi.Mode().Perm() != 0o600 {
				t.Fatalf("key file mode %v, %v; want 0600", fi.Mode().Perm(), err)
			}
			if _, err := CreateKey(path, kem); !errors.Is(err, fs.ErrExist) {
				t.Errorf("CreateKey over an existing key = %v, want fs.ErrExist", err)
			}
			l, err := LoadKey(path)
			if err != nil {
				t.Fatal(err)
			}
			if l.Public().Fingerprint() != k.Public().Fingerprint() {
				t.Error("loaded key differs from the created one")
			}
			p, err := ParsePublicKeyPEM(k.Public().MarshalPEM())
			if err != nil || p.Fingerprint() != k.Public().Fingerprint() {
				t.Errorf("public PEM round trip: %v", err)
			}
			// A request sealed to the public PEM opens with the loaded key.
			req := newReq(t, time.Now().Add(time.Hour))
			sealed, err := Seal(p, req)
			if err != nil {
				t.Fatal(err)
			}
			got, err := Open(l, sealed)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(req, got); diff != "" {
				t.Errorf("opened request (-sealed +opened):\n%s", diff)
			}
			if err := os.Chmod(path, 0o644); err != nil {
				t.Fatal(err)
			}
			if _, err := LoadKey(path); !errors.Is(err, ErrKeyFile) {
				t.Errorf("LoadKey of a 0644 file = %v, want ErrKeyFile", err)
			}
		})
	}
	if _, err := LoadKey(filepath.Join(t.TempDir(), "none")); !errors.Is(err, ErrNoKey) {
		t.Errorf("LoadKey(missing) = %v, want ErrNoKey", err)
	}
	if _, err := CreateKey(filepath.Join(t.TempDir(), "k"), "rsa"); !errors.Is(err, ErrKEM) {
		t.Errorf("CreateKey(rsa) = %v, want ErrKEM", err)
	}
	vk := filepath.Join(t.TempDir(), "verdict.key")
	if _, err := verdict.CreateKey(vk); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadKey(vk); !errors.Is(err, ErrKeyFile) {
		t.Errorf("LoadKey(a verdict key) = %v, want ErrKeyFile", err)
	}
}

func newReq(t testing.TB, notAfter time.Time) *Request {
	t.Helper()
	r, err := NewRequest([]byte("correct horse battery staple"), "baseline", project, notAfter)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestOpenRefuses(t *testing.T) {
	k, err := GenerateKey("")
	if err != nil {
		t.Fatal(err)
	}
	other, err := GenerateKey("")
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	sealed, err := Seal(k.Public(), newReq(t, now.Add(time.Hour)))
	if err != nil {
		t.Fatal(err)
	}
	sealRaw := func(info string, pt string) []byte {
		b, err := hpke.Seal(k.Public().pk, hpke.HKDFSHA256(), hpke.AES256GCM(), []byte(info), []byte(pt))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	good := `{"secret":"c2VjcmV0","profile":"baseline","project_id":"p","not_after":"2099-01-01T00:00:00Z","nonce":"AAAAAAAAAAAAAAAAAAAAAA=="}`
	if _, err := Open(k, sealRaw(Info, good)); err != nil {
		t.Fatalf("hand-made request: %v", err)
	}
	flipped := bytes.Clone(sealed)
	flipped[len(flipped)-1] ^= 1
	for _, tc := range []struct {
		name   string
		key    *PrivateKey
		sealed []byte
		want   error
	}{
		{"other key", other, sealed, ErrSealed},
		{"altered", k, flipped, ErrSealed},
		{"truncated", k, sealed[:100], ErrSealed},
		{"empty", k, nil, ErrSealed},
		{"other purpose", k, sealRaw("trustpool-launch-v2", good), ErrSealed},
		{"unknown field", k, sealRaw(Info, strings.Replace(good, `"nonce"`, `"host":"h","nonce"`, 1)), ErrRequest},
		{"trailing data", k, sealRaw(Info, good+"{}"), ErrRequest},
		{"short nonce", k, sealRaw(Info, strings.Replace(good, "AAAAAAAAAAAAAAAAAAAAAA==", "AAAA", 1)), ErrRequest},
		{"no secret", k, sealRaw(Info, strings.Replace(good, `"c2VjcmV0"`, `""`, 1)), ErrRequest},
		{"bad profile", k, sealRaw(Info, strings.Replace(good, "baseline", "Base Line", 1)), ErrRequest},
		{"bad time", k, sealRaw(Info, strings.Replace(good, "2099-01-01T00:00:00Z", "tomorrow", 1)), ErrRequest},
		{"not json", k, sealRaw(Info, "secret=1"), ErrRequest},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := Open(tc.key, tc.sealed)
			if !errors.Is(err, tc.want) {
				t.Fatalf("Open = %v, want %v", err, tc.want)
			}
			if r != nil {
				t.Error("Open returned a request with its error")
			}
			if strings.Contains(err.Error(), "c2VjcmV0") || strings.Contains(err.Error(), "secret\"") {
				t.Errorf("error shows plaintext: %v", err)
			}
		})
	}
	r, err := Open(k, sealed)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Check(project, now); err != nil {
		t.Errorf("Check(own project, now) = %v", err)
	}
	if err := r.Check("another-project", now); !errors.Is(err, ErrProject) || Reason(err) != ReasonProjectMismatch {
		t.Errorf("Check(another project) = %v (%s), want ErrProject", err, Reason(err))
	}
	if err := r.Check(project, now.Add(2*time.Hour)); !errors.Is(err, ErrExpired) || Reason(err) != ReasonExpired {
		t.Errorf("Check(after not_after) = %v, want ErrExpired", err)
	}
}

func testSigner(t testing.TB) (*verdict.Signer, *verdict.Verifier) {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	s := verdict.NewSigner(priv)
	return s, verdict.NewVerifier(s.Public())
}

func deliveredReceipt() *Receipt {
	now := time.Now()
	return &Receipt{LaunchID: "0b6d1c3e-8f2a-4c55-9d0e-6a7b8c9d0e1f", ProjectID: project,
		InstanceID: "178b0921-8f85-4257-88b6-2e743b5a975c", HostID: HostID(project, "compute-1"), Profile: "baseline",
		VerdictSeq: 7, EvidenceDigest: strings.Repeat("ab", 32), PCRPolicyDigest: strings.Repeat("cd", 32), PCRs: []int{0, 7},
		VerifiedAt: Time(now), SealedAt: Time(now), DeliveredAt: Time(now), State: StateDelivered, Issuer: "trustpool-attestation", IssuedAt: Time(now)}
}

func TestReceiptSignVerify(t *testing.T) {
	s, vf := testSigner(t)
	r := deliveredReceipt()
	sr, err := SignReceipt(s, r)
	if err != nil {
		t.Fatal(err)
	}
	got, err := VerifyReceipt(vf, sr)
	if err != nil {
		t.Fatal(err)
	}
	r.Type, r.Reasons = ReceiptType, []string{}
	if diff := cmp.Diff(r, got); diff != "" {
		t.Errorf("verified receipt (-signed +verified):\n%s", diff)
	}
	if err := got.Check(Expect{LaunchID: r.LaunchID, InstanceID: r.InstanceID, Profile: "baseline", State: StateDelivered, HostID: r.HostID}); err != nil {
		t.Errorf("Check = %v", err)
	}
	if err := got.Check(Expect{InstanceID: "00000000-0000-0000-0000-000000000000"}); !errors.Is(err, ErrReceipt) {
		t.Errorf("Check(other instance) = %v, want ErrReceipt", err)
	}

	// Altered after signing: any byte of the receipt string.
	altered := sr
	altered.Receipt = strings.Replace(sr.Receipt, `"state":"delivered"`, `"state":"delivered" `, 1)
	alteredState := sr
	alteredState.Receipt = strings.Replace(sr.Receipt, `"verdict_seq":7`, `"verdict_seq":8`, 1)
	_, otherVF := testSigner(t)
	sigOf := func(m func(*SignedReceipt)) SignedReceipt { c := sr; m(&c); return c }
	for _, tc := range []struct {
		name string
		s    SignedReceipt
		vf   *verdict.Verifier
		want error
	}{
		{"whitespace added", altered, vf, verdict.ErrBadSignature},
		{"seq changed", alteredState, vf, verdict.ErrBadSignature},
		{"unpinned key", sr, otherVF, verdict.ErrUnknownKey},
		{"no signature", sigOf(func(c *SignedReceipt) { c.Sig = "" }), vf, verdict.ErrUnsigned},
		{"garbage signature", sigOf(func(c *SignedReceipt) { c.Sig = "!!" }), vf, verdict.ErrBadSignature},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := VerifyReceipt(tc.vf, tc.s); !errors.Is(err, tc.want) || !errors.Is(err, ErrReceipt) {
				t.Errorf("VerifyReceipt = %v, want %v and ErrReceipt", err, tc.want)
			}
		})
	}

	// A signed verdict is no receipt, and a receipt no verdict.
	v := verdict.Verdict{Host: "compute-1", Status: verdict.Trusted, Profiles: []string{}, VerifiedAt: time.Now(), ExpiresAt: time.Now().Add(time.Minute), Seq: 1, Issuer: "x"}
	sv, err := s.Sign(v)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := VerifyReceipt(vf, SignedReceipt{Receipt: sv.Verdict, KID: sv.KID, Sig: sv.Sig}); !errors.Is(err, ErrReceipt) {
		t.Errorf("a verdict verified as a receipt: %v", err)
	}
	if _, err := vf.Verify(verdict.Signed{Verdict: sr.Receipt, KID: sr.KID, Sig: sr.Sig}); !errors.Is(err, verdict.ErrMalformed) {
		t.Errorf("a receipt verified as a verdict: %v", err)
	}
}

func TestReceiptShape(t *testing.T) {
	s, _ := testSigner(t)
	for _, tc := range []struct {
		name string
		mod  func(r *Receipt)
	}{
		{"refused without reasons", func(r *Receipt) { r.State = StateRefused }},
		{"unknown state", func(r *Receipt) { r.State = "done" }},
		{"delivered without time", func(r *Receipt) { r.DeliveredAt = "" }},
		{"bad time", func(r *Receipt) { r.SealedAt = "yesterday" }},
		{"launch id", func(r *Receipt) { r.LaunchID = "l1" }},
		{"no issuer", func(r *Receipt) { r.Issuer = "" }},
		{"unknown initiator", func(r *Receipt) { r.Initiator = "nova" }},
		{"policy key not a key id", func(r *Receipt) { r.PolicyKey = "policy-key-1" }},
		{"policy key without a digest", func(r *Receipt) { r.PolicyKey, r.State, r.PCRPolicyDigest = "0123456789abcdef", StateBound, "" }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := deliveredReceipt()
			tc.mod(r)
			if _, err := SignReceipt(s, r); !errors.Is(err, ErrReceipt) {
				t.Errorf("SignReceipt = %v, want ErrReceipt", err)
			}
		})
	}
}

func TestProof(t *testing.T) {
	secret := []byte("correct horse battery staple")
	p, err := Prove(secret, []byte("challenge-1"))
	if err != nil {
		t.Fatal(err)
	}
	if err := CheckProof(secret, []byte("challenge-1"), p); err != nil {
		t.Errorf("CheckProof(own proof) = %v", err)
	}
	if err := CheckProof(secret, []byte("challenge-1"), strings.ToUpper(p)+"\n"); err != nil {
		t.Errorf("CheckProof(upper case, newline) = %v", err)
	}
	for _, tc := range []struct {
		name, challenge, proof string
		secret                 []byte
	}{
		{"other challenge", "challenge-2", p, secret},
		{"other secret", "challenge-1", p, []byte("another secret")},
		{"not hex", "challenge-1", "xyz", secret},
		{"truncated", "challenge-1", p[:32], secret},
	} {
		if err := CheckProof(tc.secret, []byte(tc.challenge), tc.proof); !errors.Is(err, ErrProof) {
			t.Errorf("%s: CheckProof = %v, want ErrProof", tc.name, err)
		}
	}
	// A known answer (Python: hmac.new(b"k", b"trustpool-launch-proof" + b"c",
	// hashlib.sha256).hexdigest()), so a change of label or construction is
	// noticed.
	const want = "e811e3b4c9a38316e174cf28725256881ba327e17a6c6d26f097aaa92f132c42"
	if got, _ := Prove([]byte("k"), []byte("c")); got != want {
		t.Errorf("Prove(k, c) = %s, want %s", got, want)
	}
}

// FuzzRequestPlaintext: the service's decoder of opened launch requests
// (tenant-controlled bytes) never panics and returns either a valid request
// or an ErrRequest.
func FuzzRequestPlaintext(f *testing.F) {
	seed, err := os.ReadFile(filepath.Join("testdata", "request.json"))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(seed)
	f.Add([]byte(`{"secret":"","profile":"","project_id":"","not_after":"","nonce":""}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := decodeRequest(data)
		if err != nil {
			if !errors.Is(err, ErrRequest) || r != nil {
				t.Fatalf("decodeRequest = %v, %v", r, err)
			}
			return
		}
		if err := r.Validate(); err != nil {
			t.Fatalf("accepted an invalid request: %v", err)
		}
	})
}

// FuzzOpen: sealed requests (what POST /v1/launches carries) never panic
// Open; the seed is a request sealed to testdata/launch.key.
func FuzzOpen(f *testing.F) {
	k, err := loadTestKey()
	if err != nil {
		f.Fatal(err)
	}
	seed, err := os.ReadFile(filepath.Join("testdata", "sealed_request.bin"))
	if err != nil {
		f.Fatal(err)
	}
	if _, err := Open(k, seed); err != nil {
		f.Fatalf("seed does not open: %v", err)
	}
	f.Add(seed)
	f.Add(seed[:1120])
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := Open(k, data)
		if err == nil && r.Validate() != nil {
			t.Fatal("opened an invalid request")
		}
		if err != nil && !errors.Is(err, ErrSealed) && !errors.Is(err, ErrRequest) {
			t.Fatalf("Open error %v wraps neither ErrSealed nor ErrRequest", err)
		}
	})
}

// FuzzReceipt: a receipt file in an instance or an API answer (untrusted
// until verified) never panics the parser or the verifier.
func FuzzReceipt(f *testing.F) {
	seed, err := os.ReadFile(filepath.Join("testdata", "receipt.json"))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(seed)
	var sr SignedReceipt
	if err := json.Unmarshal(seed, &sr); err != nil {
		f.Fatal(err)
	}
	f.Add([]byte(sr.Receipt))
	_, vf := testSigner(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		// The inner receipt JSON, as if its signature had verified.
		if r, err := parseReceipt(data); err == nil {
			if r.Validate() != nil {
				t.Fatal("parsed an invalid receipt")
			}
			_ = r.Check(Expect{State: StateDelivered})
		}
		sr, err := ParseSignedReceipt(data)
		if err != nil {
			return
		}
		if r, err := VerifyReceipt(vf, sr); err == nil {
			_ = r.Check(Expect{State: StateDelivered})
		}
	})
}

func loadTestKey() (*PrivateKey, error) {
	p := filepath.Join("testdata", "launch.key")
	// Git does not keep file modes beyond the executable bit.
	if err := os.Chmod(p, 0o600); err != nil {
		return nil, err
	}
	return LoadKey(p)
}

// TestWriteTestdata (TRUSTPOOL_UPDATE_TESTDATA=1) writes the fuzz seeds:
// a launch key, a request, the request sealed to the key, and a signed
// receipt.
func TestWriteTestdata(t *testing.T) {
	if os.Getenv("TRUSTPOOL_UPDATE_TESTDATA") == "" {
		t.Skip("set TRUSTPOOL_UPDATE_TESTDATA=1 to regenerate testdata/")
	}
	dir := "testdata"
	os.Remove(filepath.Join(dir, "launch.key"))
	k, err := CreateKey(filepath.Join(dir, "launch.key"), KEMMLKEM768X25519)
	if err != nil {
		t.Fatal(err)
	}
	req := newReq(t, time.Date(2099, 1, 1, 0, 0, 0, 0, time.UTC))
	b, _ := json.Marshal(req) //nolint:gosec // G117: a test secret, written as a fuzz seed
	sealed, err := Seal(k.Public(), req)
	if err != nil {
		t.Fatal(err)
	}
	s, _ := testSigner(t)
	sr, err := SignReceipt(s, deliveredReceipt())
	if err != nil {
		t.Fatal(err)
	}
	rb, _ := json.MarshalIndent(sr, "", "  ")
	for name, data := range map[string][]byte{"request.json": b, "sealed_request.bin": sealed, "receipt.json": rb} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
