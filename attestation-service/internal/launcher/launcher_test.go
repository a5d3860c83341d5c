package launcher

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/trustpool/trustpool/attestation-service/internal/cloud"
	"github.com/trustpool/trustpool/attestation-service/internal/engine"
	"github.com/trustpool/trustpool/attestation-service/internal/store"
	"github.com/trustpool/trustpool/internal/attestrpc"
	"github.com/trustpool/trustpool/internal/launch"
	"github.com/trustpool/trustpool/internal/verdict"
)

// The whole flow runs against real agents in tests/integration (TestLaunch,
// TestNovaLaunch); here are the parts a real deployment cannot be made to
// show on demand: the sweeper's expiry and the end of launches a restart
// left behind, and Nova's API answering for another project.

type notes struct {
	mu       sync.Mutex
	events   []string
	payloads []map[string]any
}

func (n *notes) Notify(_ context.Context, ev string, payload any) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	p, _ := payload.(map[string]any)
	n.events = append(n.events, ev+" "+p["launch_id"].(string))
	n.payloads = append(n.payloads, p)
	return nil
}

// failAttester and failAgents fail the test if a launch gets that far.
type failAttester struct{ t *testing.T }

func (f failAttester) AttestFresh(context.Context, string) (*engine.Fresh, error) {
	f.t.Error("a refused launch was attested")
	return nil, errors.New("unexpected")
}

type presentAgents struct{ t *testing.T }

func (a presentAgents) InstancePresent(context.Context, string, *attestrpc.InstancePresentArgs) (*attestrpc.InstancePresentResult, error) {
	return &attestrpc.InstancePresentResult{Present: true, Injector: "directory"}, nil
}

func (a presentAgents) DeliverSecret(context.Context, string, *attestrpc.DeliverSecretArgs) (*attestrpc.DeliverSecretResult, error) {
	a.t.Error("a refused launch was delivered")
	return nil, errors.New("unexpected")
}

type otherProjectNova struct{}

func (otherProjectNova) Server(_ context.Context, id string) (*cloud.Server, error) {
	return &cloud.Server{ID: id, ProjectID: "someone-else", Host: "compute-1"}, nil
}

func newTestLauncher(t *testing.T, now *time.Time) (*Launcher, *store.Store, *notes, *verdict.Verifier) {
	t.Helper()
	st, err := store.Open(t.Context(), "sqlite:///"+filepath.Join(t.TempDir(), "a.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	key, err := launch.GenerateKey("")
	if err != nil {
		t.Fatal(err)
	}
	_, priv, _ := ed25519.GenerateKey(nil)
	signer := verdict.NewSigner(priv)
	n := &notes{}
	l := New(Config{Store: st, Key: key, Signer: signer, Issuer: "test", Attester: failAttester{t}, Agents: presentAgents{t},
		Servers: otherProjectNova{}, Notifier: n, Now: func() time.Time { return *now }})
	return l, st, n, verdict.NewVerifier(signer.Public())
}

func (l *Launcher) sealed(t *testing.T, project string, notAfter time.Time) []byte {
	t.Helper()
	r, err := launch.NewRequest([]byte("s"), "baseline", project, notAfter)
	if err != nil {
		t.Fatal(err)
	}
	b, err := launch.Seal(l.PublicKey(), r)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// ended returns a launch's state, reasons and verified receipt.
func ended(t *testing.T, st *store.Store, vf *verdict.Verifier, id string) (*store.Launch, *launch.Receipt) {
	t.Helper()
	rec, err := st.GetLaunch(t.Context(), id)
	if err != nil {
		t.Fatal(err)
	}
	var sr launch.SignedReceipt
	if err := json.Unmarshal(rec.Receipt, &sr); err != nil {
		t.Fatalf("launch %s (%s) has no receipt: %v", id, rec.State, err)
	}
	r, err := launch.VerifyReceipt(vf, sr)
	if err != nil {
		t.Fatal(err)
	}
	return rec, r
}

func TestSweep(t *testing.T) {
	now := time.Now()
	l, st, n, vf := newTestLauncher(t, &now)
	ctx := t.Context()
	c := Caller{UserID: "u", ProjectID: "p"}
	pending, err := l.Create(ctx, c, CreateRequest{KID: l.PublicKey().KID(), Sealed: l.sealed(t, "p", now.Add(time.Minute))})
	if err != nil {
		t.Fatal(err)
	}
	// Another launch stuck in bound and one in sealed, as a restart leaves them.
	stuck := map[string]string{}
	for _, state := range []string{launch.StateBound, launch.StateSealed} {
		rec, err := l.Create(ctx, c, CreateRequest{KID: l.PublicKey().KID(), Sealed: l.sealed(t, "p", now.Add(time.Hour))})
		if err != nil {
			t.Fatal(err)
		}
		rec.State = state
		if err := st.TransitionLaunch(ctx, rec, launch.StatePending); err != nil {
			t.Fatal(err)
		}
		stuck[state] = rec.ID
	}
	l.sweep(ctx)
	if rec, _ := st.GetLaunch(ctx, pending.ID); rec.State != launch.StatePending {
		t.Fatalf("a pending launch before its not_after was swept: %s", rec.State)
	}
	now = now.Add(time.Hour + 2*time.Minute)
	l.sweep(ctx)
	rec, r := ended(t, st, vf, pending.ID)
	if rec.State != launch.StateRefused || !strings.HasPrefix(rec.Reasons[0], launch.ReasonExpired) || rec.Sealed != nil || r.State != launch.StateRefused {
		t.Errorf("expired launch: %s %v (sealed request kept: %v), receipt %s", rec.State, rec.Reasons, rec.Sealed != nil, r.State)
	}
	for state, want := range map[string]string{launch.StateBound: launch.StateRefused, launch.StateSealed: launch.StateFailed} {
		rec, _ := ended(t, st, vf, stuck[state])
		if rec.State != want || !strings.HasPrefix(rec.Reasons[0], ReasonInterrupted) {
			t.Errorf("launch left %s: %s %v, want %s interrupted", state, rec.State, rec.Reasons, want)
		}
	}
	if len(n.events) != 3 {
		t.Errorf("notifications %v, want one per ended launch", n.events)
	}
}

// TestServerOfAnotherProject: Nova placing the server in another project
// refuses the launch (the tenant named a server that is not theirs).
func TestServerOfAnotherProject(t *testing.T) {
	now := time.Now()
	l, st, _, vf := newTestLauncher(t, &now)
	ctx := t.Context()
	rec, err := l.Create(ctx, Caller{UserID: "u", ProjectID: "p"}, CreateRequest{KID: l.PublicKey().KID(),
		Sealed: l.sealed(t, "p", now.Add(time.Hour)), InstanceID: "178b0921-8f85-4257-88b6-2e743b5a975c"})
	if err != nil {
		t.Fatal(err)
	}
	l.process(ctx, <-l.jobs)
	got, _ := ended(t, st, vf, rec.ID)
	if got.State != launch.StateRefused || !strings.HasPrefix(got.Reasons[0], ReasonServerNotProject) {
		t.Errorf("launch %s %v, want refused %s", got.State, got.Reasons, ReasonServerNotProject)
	}
}

// TestSweepRebindsOrphans: a launch created with an instance id whose
// binding job was lost (a restart) is bound again by the sweeper.
func TestSweepRebindsOrphans(t *testing.T) {
	now := time.Now()
	l, st, _, _ := newTestLauncher(t, &now)
	ctx := t.Context()
	rec := &store.Launch{ID: "0b6d1c3e-8f2a-4c55-9d0e-6a7b8c9d0e1f", ProjectID: "p", UserID: "u", State: launch.StatePending, Profile: "baseline",
		KID: "k", Sealed: []byte("s"), NonceDigest: "n", InstanceID: "178b0921-8f85-4257-88b6-2e743b5a975c", HostID: "h", NotAfter: now.Add(time.Hour)}
	if err := st.CreateLaunch(ctx, rec); err != nil {
		t.Fatal(err)
	}
	l.sweep(ctx)
	select {
	case j := <-l.jobs:
		t.Fatalf("a fresh launch was resubmitted: %+v", j)
	default:
	}
	now = now.Add(2 * time.Minute)
	l.sweep(ctx)
	select {
	case j := <-l.jobs:
		if j.id != rec.ID || j.instanceID != rec.InstanceID || j.hostID != "h" {
			t.Errorf("resubmitted %+v", j)
		}
	default:
		t.Fatal("the orphaned launch was not resubmitted")
	}
}

func (a presentAgents) RedeliverChallenge(context.Context, string, *attestrpc.RedeliverChallengeArgs) (*attestrpc.RedeliverChallengeResult, error) {
	return nil, ErrAgentTooOld
}

func (a presentAgents) RedeliverSecret(context.Context, string, *attestrpc.RedeliverSecretArgs) (*attestrpc.DeliverSecretResult, error) {
	return nil, ErrAgentTooOld
}

func (a presentAgents) ForgetSecret(context.Context, string, *attestrpc.ForgetSecretArgs) error {
	return ErrAgentTooOld
}
