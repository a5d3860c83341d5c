package importblob_test

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/google/go-tpm/tpm2"

	"github.com/trustpool/trustpool/internal/attestrpc"
	"github.com/trustpool/trustpool/internal/importblob"
	"github.com/trustpool/trustpool/internal/tpm/tpmtest"
)

const (
	launchID   = "0b6d1c3e-8f2a-4c55-9d0e-6a7b8c9d0e1f"
	instanceID = "178b0921-8f85-4257-88b6-2e743b5a975c"
)

// rsaEK is the public area of the simulator's RSA-2048 EK (TCG default
// template), as an agent enrolls it.
func rsaEK(t testing.TB) []byte {
	t.Helper()
	sim := tpmtest.Simulator(t)
	rsp, err := tpm2.CreatePrimary{PrimaryHandle: tpm2.TPMRHEndorsement, InPublic: tpm2.New2B(tpm2.RSAEKTemplate)}.Execute(sim)
	if err != nil {
		t.Fatal(err)
	}
	defer tpm2.FlushContext{FlushHandle: rsp.ObjectHandle}.Execute(sim) //nolint:errcheck // test cleanup
	return rsp.OutPublic.Bytes()
}

func pcrValues(sel ...int) map[int][]byte {
	m := map[int][]byte{}
	for _, i := range sel {
		d := sha256.Sum256([]byte{byte(i)})
		m[i] = d[:]
	}
	return m
}

// TestPCRPolicyMatchesTPM: the policy digest computed offline equals what
// the TPM computes in a trial session running PolicyPCR with the same
// values, for several selections.
func TestPCRPolicyMatchesTPM(t *testing.T) {
	sim := tpmtest.Simulator(t)
	for _, sel := range [][]int{{0}, {0, 7}, {0, 1, 2, 3, 4, 5, 6, 7}, {7, 16, 23}} {
		vals := pcrValues(sel...)
		got, err := importblob.PCRPolicy(sel, vals)
		if err != nil {
			t.Fatal(err)
		}
		sess, err := tpm2.StartAuthSession{TPMKey: tpm2.TPMRHNull, Bind: tpm2.TPMRHNull, NonceCaller: tpm2.TPM2BNonce{Buffer: make([]byte, 16)},
			SessionType: tpm2.TPMSETrial, Symmetric: tpm2.TPMTSymDef{Algorithm: tpm2.TPMAlgNull}, AuthHash: tpm2.TPMAlgSHA256}.Execute(sim)
		if err != nil {
			t.Fatal(err)
		}
		h := sha256.New()
		for _, i := range sel {
			h.Write(vals[i])
		}
		if _, err := (tpm2.PolicyPCR{PolicySession: sess.SessionHandle, PcrDigest: tpm2.TPM2BDigest{Buffer: h.Sum(nil)}, Pcrs: importblob.Selection(sel)}).Execute(sim); err != nil {
			t.Fatal(err)
		}
		want, err := tpm2.PolicyGetDigest{PolicySession: sess.SessionHandle}.Execute(sim)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := (tpm2.FlushContext{FlushHandle: sess.SessionHandle}).Execute(sim); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want.PolicyDigest.Buffer) {
			t.Errorf("PCRPolicy(%v) = %x, TPM trial session %x", sel, got, want.PolicyDigest.Buffer)
		}
	}
}

func TestCreateRejects(t *testing.T) {
	ek := rsaEK(t)
	vals := pcrValues(0, 7)
	for _, tc := range []struct {
		name   string
		ek     []byte
		sel    []int
		vals   map[int][]byte
		secret []byte
		want   error
	}{
		{"empty secret", ek, []int{0, 7}, vals, nil, importblob.ErrInvalid},
		{"huge secret", ek, []int{0, 7}, vals, make([]byte, attestrpc.MaxSecret+1), importblob.ErrInvalid},
		{"no pcrs", ek, nil, vals, []byte("s"), importblob.ErrInvalid},
		{"pcr without value", ek, []int{0, 8}, vals, []byte("s"), importblob.ErrInvalid},
		{"unsorted pcrs", ek, []int{7, 0}, vals, []byte("s"), importblob.ErrInvalid},
		{"pcr 24", ek, []int{24}, map[int][]byte{24: make([]byte, 32)}, []byte("s"), importblob.ErrInvalid},
		{"garbage ek", []byte{1, 2, 3}, []int{0, 7}, vals, []byte("s"), importblob.ErrEK},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := importblob.Create(rand.Reader, tc.ek, tc.sel, tc.vals, launchID, instanceID, tc.secret); !errors.Is(err, tc.want) {
				t.Errorf("Create = %v, want %v", err, tc.want)
			}
		})
	}
}

// TestParseRejects: the agent refuses blobs whose object is not exactly
// the sealed-data shape Create makes.
func TestParseRejects(t *testing.T) {
	s, err := importblob.Create(rand.Reader, rsaEK(t), []int{0, 7}, pcrValues(0, 7), launchID, instanceID, []byte("secret"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := importblob.Parse(&s.Blob); err != nil {
		t.Fatalf("Parse(Create()) = %v", err)
	}
	pub, err := tpm2.Unmarshal[tpm2.TPMTPublic](s.Blob.Public)
	if err != nil {
		t.Fatal(err)
	}
	withPub := func(f func(p *tpm2.TPMTPublic)) func(b *attestrpc.ImportBlob) {
		return func(b *attestrpc.ImportBlob) {
			p := *pub
			f(&p)
			b.Public = tpm2.Marshal(p)
		}
	}
	for _, tc := range []struct {
		name string
		mod  func(b *attestrpc.ImportBlob)
	}{
		{"user with auth", withPub(func(p *tpm2.TPMTPublic) { p.ObjectAttributes.UserWithAuth = true })},
		{"fixed tpm", withPub(func(p *tpm2.TPMTPublic) { p.ObjectAttributes.FixedTPM = true })},
		{"no policy", withPub(func(p *tpm2.TPMTPublic) { p.AuthPolicy = tpm2.TPM2BDigest{} })},
		{"sha1 name", withPub(func(p *tpm2.TPMTPublic) { p.NameAlg = tpm2.TPMAlgSHA1 })},
		{"signing scheme", withPub(func(p *tpm2.TPMTPublic) {
			p.Parameters = tpm2.NewTPMUPublicParms(tpm2.TPMAlgKeyedHash, &tpm2.TPMSKeyedHashParms{Scheme: tpm2.TPMTKeyedHashScheme{
				Scheme: tpm2.TPMAlgHMAC, Details: tpm2.NewTPMUSchemeKeyedHash(tpm2.TPMAlgHMAC, &tpm2.TPMSSchemeHMAC{HashAlg: tpm2.TPMAlgSHA256})}})
		})},
		{"trailing bytes", func(b *attestrpc.ImportBlob) { b.Public = append(slices.Clone(b.Public), 0) }},
		{"truncated", func(b *attestrpc.ImportBlob) { b.Public = b.Public[:len(b.Public)-1] }},
		{"rsa key", func(b *attestrpc.ImportBlob) { b.Public = tpm2.Marshal(tpm2.RSAEKTemplate) }},
		{"empty duplicate", func(b *attestrpc.ImportBlob) { b.Duplicate = nil }},
		{"huge seed", func(b *attestrpc.ImportBlob) { b.InSymSeed = make([]byte, attestrpc.MaxBlobPart+1) }},
		{"short payload", func(b *attestrpc.ImportBlob) { b.Payload = b.Payload[:28] }},
		{"no pcrs", func(b *attestrpc.ImportBlob) { b.PCRs = nil }},
		{"repeated pcr", func(b *attestrpc.ImportBlob) { b.PCRs = []int{7, 7} }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := s.Blob
			tc.mod(&b)
			if _, err := importblob.Parse(&b); !errors.Is(err, importblob.ErrInvalid) {
				t.Errorf("Parse = %v, want %v", err, importblob.ErrInvalid)
			}
		})
	}
}

// TestOpenBinding: the payload opens only with the sealed key and for the
// launch and instance it was made for. (That the TPM hands out the key only
// under the PCR policy is tested on TPMs in package tpm.)
func TestOpenBinding(t *testing.T) {
	secret := []byte("data volume key")
	zero := make([]byte, importblob.KeySize)
	s, err := importblob.Create(&keyReader{key: zero}, rsaEK(t), []int{0}, pcrValues(0), launchID, instanceID, secret)
	if err != nil {
		t.Fatal(err)
	}
	p, err := importblob.Parse(&s.Blob)
	if err != nil {
		t.Fatal(err)
	}
	got, err := p.Open(zero, launchID, instanceID)
	if err != nil || !bytes.Equal(got, secret) {
		t.Fatalf("Open = %q, %v", got, err)
	}
	other := bytes.Repeat([]byte{1}, importblob.KeySize)
	for _, tc := range []struct {
		name             string
		key              []byte
		launch, instance string
	}{
		{"wrong key", other, launchID, instanceID},
		{"short key", zero[:16], launchID, instanceID},
		{"other launch", zero, "11111111-1111-1111-1111-111111111111", instanceID},
		{"other instance", zero, launchID, "22222222-2222-2222-2222-222222222222"},
	} {
		if _, err := p.Open(tc.key, tc.launch, tc.instance); !errors.Is(err, importblob.ErrPayload) {
			t.Errorf("%s: Open = %v, want %v", tc.name, err, importblob.ErrPayload)
		}
	}
}

// keyReader yields key first (Create's first draw is the sealed key), then
// random bytes.
type keyReader struct {
	key  []byte
	done bool
}

func (r *keyReader) Read(p []byte) (int, error) {
	if !r.done {
		r.done = true
		return copy(p, r.key), nil
	}
	return rand.Read(p)
}

// TestWriteSeed (TRUSTPOOL_UPDATE_TESTDATA=1) writes testdata/blob.json, a
// blob sealed to the simulator's RSA EK, the fuzz target's seed.
func TestWriteSeed(t *testing.T) {
	if os.Getenv("TRUSTPOOL_UPDATE_TESTDATA") == "" {
		t.Skip("set TRUSTPOOL_UPDATE_TESTDATA=1 to regenerate testdata/blob.json")
	}
	s, err := importblob.Create(rand.Reader, rsaEK(t), []int{0, 1, 2, 3, 4, 5, 6, 7}, pcrValues(0, 1, 2, 3, 4, 5, 6, 7), launchID, instanceID, []byte("fuzz seed secret"))
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.MarshalIndent(s.Blob, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join("testdata", "blob.json"), append(b, '\n'), 0o644); err != nil {
		t.Fatal(err)
	}
}

// FuzzParse: the agent's parser of untrusted blobs never panics, and what
// it accepts has the one object shape Create makes.
func FuzzParse(f *testing.F) {
	seed, err := os.ReadFile(filepath.Join("testdata", "blob.json"))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(seed)
	var b attestrpc.ImportBlob
	if err := json.Unmarshal(seed, &b); err != nil {
		f.Fatal(err)
	}
	f.Add(append([]byte(nil), b.Public...))
	f.Fuzz(func(t *testing.T, data []byte) {
		var in attestrpc.ImportBlob
		if json.Unmarshal(data, &in) != nil {
			// Raw bytes: try them as the public area of the seed blob.
			in = b
			in.Public = data
		}
		p, err := importblob.Parse(&in)
		if err != nil {
			if !errors.Is(err, importblob.ErrInvalid) {
				t.Fatalf("Parse error %v does not wrap ErrInvalid", err)
			}
			return
		}
		if p.Public.Type != tpm2.TPMAlgKeyedHash || p.Public.ObjectAttributes.UserWithAuth || len(p.Public.AuthPolicy.Buffer) != 32 {
			t.Fatalf("Parse accepted %+v", p.Public)
		}
		if _, err := p.Open(make([]byte, importblob.KeySize), launchID, instanceID); err == nil {
			t.Fatal("a payload opened with a zero key")
		}
	})
}
