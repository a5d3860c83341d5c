// Package shimtest is test support for the filter shim: the golden verdict
// signing key of internal/verdict/testdata, helpers that sign verdicts, and
// a Feeder that plays the attestation service on the bus (answers
// get_verdicts, casts verdicts_changed on the fanout). Tests only.
package shimtest

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/trustpool/trustpool/internal/oslo"
	"github.com/trustpool/trustpool/internal/verdict"
)

// GoldenSeed is the seed of the golden test key of
// internal/verdict/testdata/vectors.json.
const GoldenSeed = "trustpool-verdict-golden-vector!"

// GoldenKey returns the golden test signing key.
func GoldenKey() ed25519.PrivateKey { return ed25519.NewKeyFromSeed([]byte(GoldenSeed)) }

// OtherKey returns a second fixed key that no shim pins.
func OtherKey() ed25519.PrivateKey {
	return ed25519.NewKeyFromSeed([]byte("trustpool-test-unpinned-key-0001"))
}

// WritePublicKey writes key's public half as PEM into dir and returns the path.
func WritePublicKey(t testing.TB, dir string, key ed25519.PrivateKey) string {
	t.Helper()
	pub, _ := key.Public().(ed25519.PublicKey)
	b, err := verdict.MarshalPublicKeyPEM(pub)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "verdict_public_key.pem")
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// Verdict returns a valid verdict for host: verified at now, expiring
// after validity.
func Verdict(host string, status verdict.Status, seq uint64, now time.Time, validity time.Duration, profiles ...string) verdict.Verdict {
	v := verdict.Verdict{
		Host: host, Status: status, Profiles: profiles, VerifiedAt: now, ExpiresAt: now.Add(validity),
		Seq: seq, Issuer: "trustpool-attestation",
	}
	if v.Profiles == nil {
		v.Profiles = []string{}
	}
	if status != verdict.Trusted {
		v.Reasons = []string{"test: " + string(status)}
	}
	return v
}

// Sign signs v with key and returns the wire JSON of the signed verdict.
func Sign(t testing.TB, key ed25519.PrivateKey, v verdict.Verdict) json.RawMessage {
	t.Helper()
	s, err := verdict.NewSigner(key).Sign(v)
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Forge signs v, then flips the status in the signed string, so the
// signature no longer matches.
func Forge(t testing.TB, key ed25519.PrivateKey, v verdict.Verdict, to verdict.Status) json.RawMessage {
	t.Helper()
	s, err := verdict.NewSigner(key).Sign(v)
	if err != nil {
		t.Fatal(err)
	}
	w := v
	w.Status = to
	w.Reasons = nil
	b, err := w.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	s.Verdict = string(b)
	out, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// Unsigned returns v in the signed envelope with no kid and no signature.
func Unsigned(t testing.TB, v verdict.Verdict) json.RawMessage {
	t.Helper()
	b, err := v.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	out, err := json.Marshal(verdict.Signed{Verdict: string(b)})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// Feeder plays the attestation service's side of the verdict contract.
type Feeder struct {
	tr *oslo.Transport

	mu       sync.Mutex
	snapshot []json.RawMessage
	calls    int
}

// NewFeeder returns a feeder on the broker at url (control exchange
// "trustpool"); its transport is closed when the test ends.
func NewFeeder(t testing.TB, url string) *Feeder {
	t.Helper()
	tr, err := oslo.NewTransport(oslo.Config{TransportURL: url})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tr.Close() })
	return &Feeder{tr: tr, snapshot: []json.RawMessage{}}
}

// SetSnapshot sets what get_verdicts returns.
func (f *Feeder) SetSnapshot(verdicts ...json.RawMessage) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.snapshot = append([]json.RawMessage{}, verdicts...)
}

// Calls is how many get_verdicts calls were answered.
func (f *Feeder) Calls() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls
}

// Serve starts answering get_verdicts on topic trustpool-attestation until
// the test ends, and waits until the server consumes.
func (f *Feeder) Serve(t testing.TB) {
	t.Helper()
	srv := oslo.NewServer(f.tr, oslo.Target{Topic: "trustpool-attestation", Server: "feeder"}, oslo.Endpoint{
		Version: "1.0",
		Methods: map[string]oslo.Handler{"get_verdicts": func(context.Context, *oslo.Request) (any, error) {
			f.mu.Lock()
			defer f.mu.Unlock()
			f.calls++
			return map[string]any{"verdicts": f.snapshot}, nil
		}},
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	select {
	case <-srv.Ready():
	case <-time.After(30 * time.Second):
		t.Fatal("feeder: get_verdicts server did not start")
	}
}

// Publish casts verdicts_changed(verdicts=...) on the trustpool-verdicts fanout.
func (f *Feeder) Publish(ctx context.Context, verdicts ...json.RawMessage) error {
	return f.tr.Client(oslo.Target{Topic: "trustpool-verdicts", Version: "1.0", Fanout: true}).
		Cast(ctx, nil, "verdicts_changed", map[string]any{"verdicts": verdicts})
}
