package service

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/trustpool/trustpool/attestation-service/internal/engine"
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
