package enroll_test

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/trustpool/trustpool/compute-agent/internal/attester"
	"github.com/trustpool/trustpool/compute-agent/internal/enroll"
	"github.com/trustpool/trustpool/internal/attestrpc"
	"github.com/trustpool/trustpool/internal/evidence"
	"github.com/trustpool/trustpool/internal/oslo"
	"github.com/trustpool/trustpool/internal/servicetest"
	"github.com/trustpool/trustpool/internal/tpm"
	"github.com/trustpool/trustpool/internal/tpm/tpmtest"
)

func TestMain(m *testing.M) { servicetest.Main(m) }

func TestBackoff(t *testing.T) {
	b := enroll.Backoff{Initial: time.Second, Max: 10 * time.Second, Rand: func() float64 { return 0 }}
	var got []time.Duration
	for i := range 6 {
		got = append(got, b.Delay(i))
	}
	want := []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 10 * time.Second, 10 * time.Second}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("delays (-want +got):\n%s", diff)
	}
	b.Rand = func() float64 { return 0.999999 }
	if d := b.Delay(100); d < 8*time.Second || d > 10*time.Second {
		t.Errorf("jittered delay %v outside [8s, 10s]", d)
	}
	if d := (enroll.Backoff{}).Delay(0); d < 800*time.Millisecond || d > time.Second {
		t.Errorf("default first delay %v", d)
	}
}

// script is what a service answers (see service).
type script struct{ script, activate []string }

// service plays the attestation service's enrollment half on the bus: it
// really makes credentials for the EK and checks the secret the agent
// recovers, so an agent that activates wrongly cannot enroll.
type service struct {
	t *testing.T
	// script says what register_host answers on each call (by index;
	// the last entry repeats): "challenge", "pending", "enrolled",
	// "wrong_ak" (a credential for another AK name), "refuse".
	script []string
	// activate says what activate_credential answers after a correct
	// secret: "enrolled" (default), "pending", "refuse" (by index).
	activate []string

	mu        sync.Mutex
	registers int
	activates int
	secrets   map[string][]byte
	good      int // activations with the right secret
	hosts     []string
}

func (s *service) endpoint() oslo.Endpoint {
	return oslo.Endpoint{Version: attestrpc.APIVersion, Methods: map[string]oslo.Handler{
		attestrpc.MethodRegisterHost:       s.register,
		attestrpc.MethodActivateCredential: s.activateCredential,
	}}
}

func pick(script []string, i int, def string) string {
	if len(script) == 0 {
		return def
	}
	return script[min(i, len(script)-1)]
}

func (s *service) register(_ context.Context, req *oslo.Request) (any, error) {
	var args attestrpc.RegisterHostArgs
	if err := attester.DecodeArgs(req.Args, &args); err != nil {
		return nil, err
	}
	if err := args.Validate(); err != nil {
		return nil, oslo.NewValueError(err.Error())
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	step := pick(s.script, s.registers, "challenge")
	s.registers++
	s.hosts = append(s.hosts, args.Host)
	switch step {
	case "pending":
		return &attestrpc.RegisterHostResult{State: attestrpc.StatePendingApproval, Reason: "new EK awaits approval"}, nil
	case "enrolled":
		return &attestrpc.RegisterHostResult{State: attestrpc.StateEnrolled}, nil
	case "refuse":
		return nil, oslo.NewValueError("host name taken")
	}
	ek, err := evidence.ParseEKPublic(args.EKPublic)
	if err != nil {
		return nil, oslo.NewValueError(err.Error())
	}
	ak, err := evidence.ParseAKPublic(args.AKPublic)
	if err != nil {
		return nil, oslo.NewValueError(err.Error())
	}
	name := ak.Name
	if step == "wrong_ak" {
		name = append([]byte(nil), name...)
		name[len(name)-1] ^= 1
	}
	secret, cred, err := evidence.MakeCredential(rand.Reader, ek, name)
	if err != nil {
		return nil, err
	}
	id := fmt.Sprintf("ch-%d", s.registers)
	if s.secrets == nil {
		s.secrets = map[string][]byte{}
	}
	s.secrets[id] = secret
	return &attestrpc.RegisterHostResult{
		State: attestrpc.StateChallenge, ChallengeID: id,
		Credential: &attestrpc.Credential{IDObject: cred.IDObject, EncryptedSecret: cred.EncryptedSecret},
	}, nil
}

func (s *service) activateCredential(_ context.Context, req *oslo.Request) (any, error) {
	var args attestrpc.ActivateCredentialArgs
	if err := attester.DecodeArgs(req.Args, &args); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	want, ok := s.secrets[args.ChallengeID]
	delete(s.secrets, args.ChallengeID) // single use
	if !ok {
		return nil, oslo.NewValueError("unknown challenge")
	}
	if err := evidence.CheckActivation(want, args.Secret); err != nil {
		return nil, oslo.NewValueError("activation failed")
	}
	s.good++
	step := pick(s.activate, s.activates, "enrolled")
	s.activates++
	switch step {
	case "pending":
		return &attestrpc.ActivateCredentialResult{State: attestrpc.StatePendingApproval, Reason: "approve me"}, nil
	case "refuse":
		return nil, oslo.NewRemoteError("trustpool.exception", "EKNotTrusted", "EK certificate required", nil)
	}
	return &attestrpc.ActivateCredentialResult{State: attestrpc.StateEnrolled}, nil
}

func (s *service) serve(t *testing.T, tr *oslo.Transport) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	srv := oslo.NewServer(tr, oslo.Target{Topic: attestrpc.ServiceTopic, Server: "service-1"}, s.endpoint())
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	select {
	case <-srv.Ready():
	case <-done:
		t.Fatal("service server stopped")
	case <-time.After(30 * time.Second):
		t.Fatal("service server not ready")
	}
}

func transport(t *testing.T, url string) *oslo.Transport {
	t.Helper()
	tr, err := oslo.NewTransport(oslo.Config{TransportURL: url})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tr.Close() })
	return tr
}

func simTPM(t *testing.T) *tpm.TPM {
	t.Helper()
	sim := tpmtest.Simulator(t)
	tp, err := tpm.New(sim.Opener(), tpm.Config{StateDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	return tp
}

// states records OnState calls.
type states struct {
	mu   sync.Mutex
	list []string
	ch   chan string
}

func newStates() *states { return &states{ch: make(chan string, 100)} }

func (s *states) on(state, _ string) {
	s.mu.Lock()
	s.list = append(s.list, state)
	s.mu.Unlock()
	s.ch <- state
}

func (s *states) get() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.list...)
}

func agentConfig(tp enroll.TPM, tr *oslo.Transport, st *states) enroll.Config {
	return enroll.Config{
		Host: "compute-1", Version: "test", TPM: tp,
		Service:     tr.Client(oslo.Target{Topic: attestrpc.ServiceTopic, Version: attestrpc.APIVersion}),
		CallTimeout: 5 * time.Second,
		Backoff:     enroll.Backoff{Initial: 5 * time.Millisecond, Max: 20 * time.Millisecond},
		OnState:     st.on,
	}
}

// TestEnrollment runs the state machine against the service over a real
// RabbitMQ with the simulator TPM.
func TestEnrollment(t *testing.T) {
	tp := simTPM(t)
	const (
		enrolled = attestrpc.StateEnrolled
		pending  = attestrpc.StatePendingApproval
		refused  = enroll.StateRefused
	)
	tests := []struct {
		name       string
		svc        script
		wantStates []string
		wantGood   int
	}{
		{"challenge then enrolled", script{}, []string{enrolled}, 1},
		{"already enrolled", script{script: []string{"enrolled"}}, []string{enrolled}, 0},
		{"approval pending at registration", script{script: []string{"pending", "pending", "challenge"}},
			[]string{pending, pending, enrolled}, 1},
		{"approval pending after activation", script{activate: []string{"pending", "enrolled"}},
			[]string{pending, enrolled}, 2},
		// A credential for another AK cannot be activated by this TPM; the
		// agent starts over with a fresh registration.
		{"credential for another AK", script{script: []string{"wrong_ak", "challenge"}},
			[]string{enroll.StateActivationFailed, enrolled}, 1},
		{"refused, then accepted", script{script: []string{"refuse", "challenge"}, activate: []string{"refuse", "enrolled"}},
			[]string{refused, refused, enrolled}, 2},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			svc := &service{t: t, script: tc.svc.script, activate: tc.svc.activate}
			// A fresh vhost, so a previous subtest's server cannot answer.
			r := servicetest.RabbitMQ(t)
			tr := transport(t, r.URL)
			svc.serve(t, transport(t, r.URL))
			st := newStates()
			ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
			defer cancel()
			if err := enroll.Run(ctx, agentConfig(tp, tr, st)); err != nil {
				t.Fatalf("Run() = %v", err)
			}
			if diff := cmp.Diff(tc.wantStates, st.get()); diff != "" {
				t.Errorf("states (-want +got):\n%s", diff)
			}
			svc.mu.Lock()
			defer svc.mu.Unlock()
			if svc.good != tc.wantGood {
				t.Errorf("correct activations = %d, want %d", svc.good, tc.wantGood)
			}
			for _, h := range svc.hosts {
				if h != "compute-1" {
					t.Errorf("registered as %q", h)
				}
			}
		})
	}
}

// TestServiceAway: with no service consuming, calls time out and the agent
// keeps retrying; once the service starts the agent enrolls.
func TestServiceAway(t *testing.T) {
	tp := simTPM(t)
	r := servicetest.RabbitMQ(t)
	st := newStates()
	cfg := agentConfig(tp, transport(t, r.URL), st)
	cfg.CallTimeout = 300 * time.Millisecond
	done := make(chan error, 1)
	go func() { done <- enroll.Run(t.Context(), cfg) }()
	// Two failed attempts, then the service appears.
	for range 2 {
		if s := waitState(t, st); s != enroll.StateUnreachable {
			t.Fatalf("state %q, want %q", s, enroll.StateUnreachable)
		}
	}
	svc := &service{t: t}
	svc.serve(t, transport(t, r.URL))
	if err := <-done; err != nil {
		t.Fatalf("Run() = %v", err)
	}
	got := st.get()
	if got[len(got)-1] != attestrpc.StateEnrolled {
		t.Errorf("states %v, want enrolled last", got)
	}
}

// TestBrokerAway: the broker stops while the agent registers; calls fail
// with connection errors and the agent enrolls once the broker is back.
func TestBrokerAway(t *testing.T) {
	tp := simTPM(t)
	r := servicetest.NewRabbitMQ(t)
	svc := &service{t: t}
	svc.serve(t, transport(t, r.URL))
	r.StopApp(t)
	st := newStates()
	cfg := agentConfig(tp, transport(t, r.URL), st)
	done := make(chan error, 1)
	go func() { done <- enroll.Run(t.Context(), cfg) }()
	for range 2 {
		if s := waitState(t, st); s != enroll.StateUnreachable {
			t.Fatalf("state %q, want %q", s, enroll.StateUnreachable)
		}
	}
	r.StartApp(t)
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run() = %v", err)
		}
	case <-time.After(2 * time.Minute):
		t.Fatal("not enrolled after the broker came back")
	}
	if svc.good != 1 {
		t.Errorf("correct activations = %d, want 1", svc.good)
	}
}

// TestCancel: Run returns the context's error while approval is pending.
func TestCancel(t *testing.T) {
	tp := simTPM(t)
	r := servicetest.RabbitMQ(t)
	svc := &service{t: t, script: []string{"pending"}}
	svc.serve(t, transport(t, r.URL))
	st := newStates()
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- enroll.Run(ctx, agentConfig(tp, transport(t, r.URL), st)) }()
	waitState(t, st)
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("Run() = %v, want context.Canceled", err)
	}
}

func waitState(t *testing.T, st *states) string {
	t.Helper()
	select {
	case s := <-st.ch:
		return s
	case <-time.After(time.Minute):
		t.Fatal("no state change")
		return ""
	}
}
