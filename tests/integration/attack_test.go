package integration

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/trustpool/trustpool/internal/attestrpc"
	"github.com/trustpool/trustpool/internal/bootseed"
	"github.com/trustpool/trustpool/internal/oslo"
	"github.com/trustpool/trustpool/internal/tpm"
	"github.com/trustpool/trustpool/internal/verdict"
)

// rogue is a hand-driven agent over internal/tpm: it can enroll with an EK
// and an AK from different TPMs and replay old quotes.
type rogue struct {
	t      *testing.T
	name   string
	client *oslo.Client
	tr     *oslo.Transport
}

func newRogue(t *testing.T, e *env, name string) *rogue {
	t.Helper()
	tr, err := oslo.NewTransport(oslo.Config{TransportURL: e.rabbit.URL, ControlExchange: attestrpc.DefaultControlExchange})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tr.Close() })
	return &rogue{t: t, name: name, tr: tr, client: tr.Client(oslo.Target{Topic: attestrpc.ServiceTopic}).WithTimeout(20 * time.Second)}
}

func (r *rogue) register(ctx context.Context, ekTPM, akTPM *tpm.TPM) (*attestrpc.RegisterHostResult, error) {
	ek, err := ekTPM.EK(ctx)
	if err != nil {
		r.t.Fatal(err)
	}
	ak, err := akTPM.AK(ctx)
	if err != nil {
		r.t.Fatal(err)
	}
	var res attestrpc.RegisterHostResult
	err = r.client.Call(ctx, nil, attestrpc.MethodRegisterHost, attestrpc.RegisterHostArgs{
		Host: r.name, EKPublic: ek.Public, EKCertificate: ek.Certificate, AKPublic: ak.Public, AgentVersion: "rogue"}, &res)
	return &res, err
}

// enroll registers r's host with tp's EK and AK and activates the
// credential in tp, as a genuine agent would.
func (r *rogue) enroll(ctx context.Context, tp *tpm.TPM) {
	r.t.Helper()
	res, err := r.register(ctx, tp, tp)
	if err != nil || res.State != attestrpc.StateChallenge {
		r.t.Fatalf("register_host = %+v, %v", res, err)
	}
	secret, err := tp.ActivateCredential(ctx, res.Credential.IDObject, res.Credential.EncryptedSecret)
	if err != nil {
		r.t.Fatal(err)
	}
	if ar, err := r.activate(ctx, res.ChallengeID, secret); err != nil || ar.State != attestrpc.StateEnrolled {
		r.t.Fatalf("activate_credential = %+v, %v", ar, err)
	}
}

// serveQuotes answers quote calls to r's host with fn until the test ends.
func (r *rogue) serveQuotes(fn func(ctx context.Context, a *attestrpc.QuoteArgs) (any, error)) {
	r.t.Helper()
	srv := oslo.NewServer(r.tr, oslo.Target{Topic: attestrpc.AgentTopic, Server: r.name}, oslo.Endpoint{
		Version: attestrpc.APIVersion,
		Methods: map[string]oslo.Handler{attestrpc.MethodQuote: func(ctx context.Context, req *oslo.Request) (any, error) {
			var a attestrpc.QuoteArgs
			b, _ := json.Marshal(req.Args)
			if err := json.Unmarshal(b, &a); err != nil {
				return nil, err
			}
			return fn(ctx, &a)
		}},
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = srv.Run(ctx); close(done) }()
	r.t.Cleanup(func() { cancel(); <-done })
	<-srv.Ready()
}

// genuineQuote answers a with tp, as trustpool-agent would (without IMA).
func genuineQuote(ctx context.Context, tp *tpm.TPM, a *attestrpc.QuoteArgs) (*attestrpc.QuoteResult, error) {
	q, err := tp.Quote(ctx, a.Nonce, a.PCRSelection)
	if err != nil {
		return nil, err
	}
	log, err := tp.EventLog()
	if err != nil {
		return nil, err
	}
	return &attestrpc.QuoteResult{Attest: q.Attest, Signature: q.Signature, PCRs: q.PCRs, EventLog: log}, nil
}

func (r *rogue) activate(ctx context.Context, id string, secret []byte) (*attestrpc.ActivateCredentialResult, error) {
	var res attestrpc.ActivateCredentialResult
	err := r.client.Call(ctx, nil, attestrpc.MethodActivateCredential, attestrpc.ActivateCredentialArgs{Host: r.name, ChallengeID: id, Secret: secret}, &res)
	return &res, err
}

// TestForeignAKFailsActivation: an agent presenting the EK of one TPM and
// an AK of another cannot activate the credential (the EK's TPM does not
// hold the AK); guessing the secret is refused and the host never enrolls.
func TestForeignAKFailsActivation(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test")
	}
	e := newEnv(t, 2*time.Second)
	h1, h2 := e.newHost("victim", bootseed.BuildA()), e.newHost("attacker", bootseed.BuildA())
	e.startService()
	ctx := t.Context()
	tpm1, err := tpm.Open(h1.tpmConfig())
	if err != nil {
		t.Fatal(err)
	}
	tpm2, err := tpm.Open(h2.tpmConfig())
	if err != nil {
		t.Fatal(err)
	}
	r := newRogue(t, e, "victim")
	res, err := r.register(ctx, tpm1, tpm2)
	if err != nil || res.State != attestrpc.StateChallenge {
		t.Fatalf("register_host = %+v, %v; want a challenge", res, err)
	}
	// Neither TPM can recover the secret: the EK's TPM does not hold the AK,
	// the AK's TPM does not hold the EK.
	for name, tp := range map[string]*tpm.TPM{"ek tpm": tpm1, "ak tpm": tpm2} {
		if got, err := tp.ActivateCredential(ctx, res.Credential.IDObject, res.Credential.EncryptedSecret); err == nil {
			if _, err := r.activate(ctx, res.ChallengeID, got); err == nil {
				t.Fatalf("activation through the %s succeeded", name)
			}
		}
	}
	res, err = r.register(ctx, tpm1, tpm2)
	if err != nil {
		t.Fatal(err)
	}
	guess := make([]byte, 32)
	rand.Read(guess)
	_, err = r.activate(ctx, res.ChallengeID, guess)
	var re *oslo.RemoteError
	if !errors.As(err, &re) || !strings.Contains(re.Message, "credential activation failed") {
		t.Fatalf("activate_credential with a guessed secret = %v, want a ValueError", err)
	}
	// The challenge is single use.
	if _, err := r.activate(ctx, res.ChallengeID, guess); err == nil || !strings.Contains(err.Error(), "unknown or expired challenge") {
		t.Errorf("second activate_credential = %v, want unknown challenge", err)
	}
	if code, body := e.api("GET", "/v1/hosts/victim", e.admin, nil); code != http.StatusNotFound {
		t.Errorf("GET /v1/hosts/victim = %d %v, want 404 (never enrolled)", code, body)
	}
}

// TestReplayedQuoteRejected: an enrolled agent that answers a later
// challenge with an earlier (genuine, correctly signed) quote is untrusted
// with a nonce reason.
func TestReplayedQuoteRejected(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test")
	}
	e := newEnv(t, 2*time.Second)
	h := e.newHost("replayer", bootseed.BuildA())
	e.startService()
	ctx := t.Context()
	tp, err := tpm.Open(h.tpmConfig())
	if err != nil {
		t.Fatal(err)
	}
	r := newRogue(t, e, "replayer")

	var (
		mu       sync.Mutex
		recorded *attestrpc.QuoteResult
	)
	r.serveQuotes(func(ctx context.Context, a *attestrpc.QuoteArgs) (any, error) {
		mu.Lock()
		defer mu.Unlock()
		if recorded != nil {
			return recorded, nil // replay
		}
		q, err := genuineQuote(ctx, tp, a)
		recorded = q
		return q, err
	})

	// A profile so that genuine evidence is trusted.
	imp := `[[profile]]
name = "boot"
[profile.facts]
secure_boot = ["enabled"]
`
	if code, body := e.api("POST", "/v1/profiles/import", e.admin, imp); code != http.StatusOK {
		t.Fatalf("import = %d %v", code, body)
	}
	r.enroll(ctx, tp)
	first := e.verdicts.wait(t, "replayer", 0, 30*time.Second, "trusted from the genuine quote", status(verdict.Trusted))
	v := e.verdicts.wait(t, "replayer", first.Seq, 30*time.Second, "untrusted from the replayed quote", status(verdict.Untrusted))
	if !slices.ContainsFunc(v.Reasons, func(r string) bool { return strings.Contains(r, "nonce") }) {
		t.Errorf("replayed quote untrusted for %v, want a nonce reason", v.Reasons)
	}
}

// TestHostileQuoteReplies: an enrolled host's agent that answers a quote
// with a reply larger than the service's max_message_size, or with one that
// does not decode into a quote, gave no evidence: the host becomes unknown
// with reason invalid_reply, not unreachable, and the service keeps
// attesting it.
func TestHostileQuoteReplies(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test")
	}
	e := newEnv(t, 2*time.Second)
	e.cfg.Default.MaxMessageSize = 1 << 20
	h := e.newHost("hostile", bootseed.BuildA())
	e.startService()
	ctx := t.Context()
	tp, err := tpm.Open(h.tpmConfig())
	if err != nil {
		t.Fatal(err)
	}
	r := newRogue(t, e, "hostile")
	var mode atomic.Value // "genuine", "huge" or "garbled"
	mode.Store("genuine")
	r.serveQuotes(func(ctx context.Context, a *attestrpc.QuoteArgs) (any, error) {
		switch mode.Load() {
		case "huge":
			return map[string]any{"attest": make([]byte, 2<<20)}, nil
		case "garbled":
			return map[string]any{"attest": "not base64 !"}, nil
		}
		return genuineQuote(ctx, tp, a)
	})
	r.enroll(ctx, tp)
	last := e.verdicts.wait(t, "hostile", 0, 30*time.Second, "attested from a genuine quote", status(verdict.Untrusted))
	for _, m := range []string{"huge", "garbled"} {
		mode.Store(m)
		last = e.verdicts.wait(t, "hostile", last.Seq, 30*time.Second, m+" reply: unknown with reason invalid_reply", func(v verdict.Verdict) bool {
			return v.Status == verdict.Unknown && len(v.Reasons) == 1 && strings.HasPrefix(v.Reasons[0], "invalid_reply: ")
		})
		t.Logf("%s reply: %s", m, last.Reasons[0])
		mode.Store("genuine")
		last = e.verdicts.wait(t, "hostile", last.Seq, 30*time.Second, "attested again", status(verdict.Untrusted))
	}
}
