package service

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/trustpool/trustpool/attestation-service/internal/engine"
	"github.com/trustpool/trustpool/attestation-service/internal/launcher"
	"github.com/trustpool/trustpool/internal/attestrpc"
	"github.com/trustpool/trustpool/internal/oslo"
	"github.com/trustpool/trustpool/internal/servicetest"
)

func TestMain(m *testing.M) { servicetest.Main(m) }

// A quote answer that arrives but cannot be used (larger than
// max_message_size, or not a quote result) is ErrInvalidReply for the
// engine, which keeps it apart from an agent that does not answer.
func TestAgentClientInvalidReply(t *testing.T) {
	if testing.Short() {
		t.Skip("needs RabbitMQ")
	}
	rabbit := servicetest.RabbitMQ(t)
	agentTr, err := oslo.NewTransport(oslo.Config{TransportURL: rabbit.URL})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = agentTr.Close() })
	srv := oslo.NewServer(agentTr, oslo.Target{Topic: attestrpc.AgentTopic, Server: "hostile"}, oslo.Endpoint{
		Version: attestrpc.APIVersion,
		Methods: map[string]oslo.Handler{attestrpc.MethodQuote: func(_ context.Context, req *oslo.Request) (any, error) {
			// An all-zero nonce (base64 "AAAA...") asks for an oversized reply.
			if strings.Contains(string(req.Args["nonce"]), "AAAA") {
				return map[string]any{"attest": strings.Repeat("A", 200<<10)}, nil
			}
			return map[string]any{"attest": 42}, nil
		}},
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = srv.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	select {
	case <-srv.Ready():
	case <-time.After(time.Minute):
		t.Fatal("agent server not ready")
	}
	tr, err := oslo.NewTransport(oslo.Config{TransportURL: rabbit.URL, MaxMessageSize: 64 << 10})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tr.Close() })
	ac := &agentClient{c: tr.Client(oslo.Target{Topic: attestrpc.AgentTopic}).WithTimeout(30 * time.Second)}
	for name, nonce := range map[string][]byte{"too large": make([]byte, 32), "wrong type": []byte("not zeros, not zeros, not zeros!")} {
		_, err := ac.Quote(t.Context(), "hostile", &attestrpc.QuoteArgs{Nonce: nonce, PCRSelection: []int{0}})
		if !errors.Is(err, engine.ErrInvalidReply) || !errors.Is(err, oslo.ErrInvalidReply) {
			t.Errorf("%s: Quote = %v, want engine.ErrInvalidReply", name, err)
		}
	}
}

// An agent that implements RPC API 1.1 only (before sealing to signed
// policies) answers a deliver_secret asking for 1.2 with oslo's
// UnsupportedVersion, which launchAgents reports as
// launcher.ErrAgentTooOld (the launcher then seals to PolicyPCR and calls
// with 1.1, which this agent takes).
func TestDeliverSecretToA11Agent(t *testing.T) {
	if testing.Short() {
		t.Skip("needs RabbitMQ")
	}
	rabbit := servicetest.RabbitMQ(t)
	agentTr, err := oslo.NewTransport(oslo.Config{TransportURL: rabbit.URL})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = agentTr.Close() })
	var delivered atomic.Int32
	srv := oslo.NewServer(agentTr, oslo.Target{Topic: attestrpc.AgentTopic, Server: "old"}, oslo.Endpoint{
		Version: attestrpc.LaunchVersion,
		Methods: map[string]oslo.Handler{attestrpc.MethodDeliverSecret: func(context.Context, *oslo.Request) (any, error) {
			delivered.Add(1)
			return attestrpc.DeliverSecretResult{Delivered: true, Injector: "directory"}, nil
		}},
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = srv.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	select {
	case <-srv.Ready():
	case <-time.After(time.Minute):
		t.Fatal("agent server not ready")
	}
	tr, err := oslo.NewTransport(oslo.Config{TransportURL: rabbit.URL})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tr.Close() })
	la := &launchAgents{c: tr.Client(oslo.Target{Topic: attestrpc.AgentTopic, Version: attestrpc.LaunchVersion}), deliverTimeout: 30 * time.Second}
	args := &attestrpc.DeliverSecretArgs{LaunchID: "0b6d1c3e-8f2a-4c55-9d0e-6a7b8c9d0e1f", InstanceID: "178b0921-8f85-4257-88b6-2e743b5a975c",
		Blob:    attestrpc.ImportBlob{Public: []byte{1}, Duplicate: []byte{1}, InSymSeed: []byte{1}, Payload: []byte{1}, PCRs: []int{0}, AuthorizeKey: []byte{1}},
		Receipt: []byte(`{}`)}
	if _, err := la.DeliverSecret(t.Context(), "old", args); !errors.Is(err, launcher.ErrAgentTooOld) {
		t.Fatalf("authorized blob to a 1.1 agent: %v, want launcher.ErrAgentTooOld", err)
	}
	if delivered.Load() != 0 {
		t.Fatal("the 1.1 agent's handler ran for a 1.2 call")
	}
	args.Blob.AuthorizeKey = nil
	if res, err := la.DeliverSecret(t.Context(), "old", args); err != nil || !res.Delivered || delivered.Load() != 1 {
		t.Errorf("PolicyPCR blob to a 1.1 agent: %+v, %v", res, err)
	}
}
