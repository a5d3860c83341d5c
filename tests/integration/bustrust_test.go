package integration

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"slices"
	"sync"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/trustpool/trustpool/internal/attestrpc"
	"github.com/trustpool/trustpool/internal/bootseed"
	"github.com/trustpool/trustpool/internal/oslo"
	"github.com/trustpool/trustpool/internal/servicetest"
	"github.com/trustpool/trustpool/internal/verdict"
)

// TestComputeBrokerPermissions proves the recipe of docs/bus-trust.md
// (scripts/rabbitmq-compute-user.sh) on a private RabbitMQ node: with the
// permissions it grants, a real trustpool-agent enrolls and is attested,
// and another host's agent serves its own topic; while with one compute
// node's credentials nothing of another host can be consumed, bound,
// declared or published to, nor the attestation service's queue read or
// the verdict fanout written.
func TestComputeBrokerPermissions(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test")
	}
	rabbit := servicetest.NewRabbitMQ(t)
	account := func(user, host string) string {
		rabbit.Ctl(t, "add_user", user, user+"-pw")
		cmd := exec.CommandContext(t.Context(), "../../scripts/rabbitmq-compute-user.sh", "-p", rabbit.VHost, user, host)
		cmd.Env = rabbit.CtlEnv()
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("rabbitmq-compute-user.sh %s %s: %v\n%s", user, host, err, out)
		}
		return fmt.Sprintf("rabbit://%s:%s-pw@127.0.0.1:%d/", user, user, rabbit.AMQPPort)
	}
	urlA, urlB := account("agent-a", "compute-a"), account("agent-b", "compute-b")

	// The real service (as guest, with every permission) and the real
	// agent of compute-a on its own account: enrollment and attestation
	// work with what the recipe grants.
	e := newEnvOn(t, 2*time.Second, rabbit)
	h := e.newHost("compute-a", bootseed.BuildA())
	h.transportURL = urlA
	e.startService()
	e.startAgent(h)
	e.verdicts.wait(t, "compute-a", 0, time.Minute, "compute-a attested", func(v verdict.Verdict) bool {
		return v.Status != verdict.Unknown
	})

	// compute-b's agent (a recording stand-in) serves its own topic.
	var mu sync.Mutex
	var served []string
	trB, err := oslo.NewTransport(oslo.Config{TransportURL: urlB})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = trB.Close() })
	srvB := oslo.NewServer(trB, oslo.Target{Topic: attestrpc.AgentTopic, Server: "compute-b"}, oslo.Endpoint{
		Version: attestrpc.APIVersion,
		Methods: map[string]oslo.Handler{attestrpc.MethodQuote: func(_ context.Context, req *oslo.Request) (any, error) {
			var who string
			_ = json.Unmarshal(req.Args["from"], &who)
			mu.Lock()
			served = append(served, who)
			mu.Unlock()
			return map[string]any{}, nil
		}},
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = srvB.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	select {
	case <-srvB.Ready():
	case <-time.After(time.Minute):
		t.Fatal("compute-b's agent cannot serve its own topic with the recipe's permissions")
	}
	trSvc, err := oslo.NewTransport(oslo.Config{TransportURL: rabbit.URL})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = trSvc.Close() })
	callB := trSvc.Client(oslo.Target{Topic: attestrpc.AgentTopic, Server: "compute-b", Version: attestrpc.APIVersion}).WithTimeout(30 * time.Second)
	if err := callB.Call(t.Context(), nil, attestrpc.MethodQuote, map[string]any{"from": "service"}, nil); err != nil {
		t.Fatalf("the service's call to compute-b: %v", err)
	}

	// With compute-a's credentials, nothing of compute-b.
	connA, err := amqp.Dial(fmt.Sprintf("amqp://agent-a:agent-a-pw@127.0.0.1:%d/", rabbit.AMQPPort))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = connA.Close() })
	own := "reply_" + oslo.NewUniqueID()
	withChannel(t, connA, "declare a reply queue of its own", func(ch *amqp.Channel) error {
		_, err := ch.QueueDeclare(own, false, true, false, false, nil)
		return err
	}, false)
	refused := []struct {
		what string
		op   func(ch *amqp.Channel) error
	}{
		{"consume compute-b's queue (read its quote requests)", func(ch *amqp.Channel) error {
			_, err := ch.Consume("trustpool-agent.compute-b", "", true, false, false, false, nil)
			return err
		}},
		{"declare compute-b's queue", func(ch *amqp.Channel) error {
			_, err := ch.QueueDeclare("trustpool-agent.compute-b", false, false, false, false, nil)
			return err
		}},
		{"bind its own queue to compute-b's routing key", func(ch *amqp.Channel) error {
			return ch.QueueBind(own, "trustpool-agent.compute-b", "trustpool", false, nil)
		}},
		{"bind its own queue to the attestation service's routing key (read enrollments)", func(ch *amqp.Channel) error {
			return ch.QueueBind(own, attestrpc.ServiceTopic, "trustpool", false, nil)
		}},
		{"consume the attestation service's queue", func(ch *amqp.Channel) error {
			_, err := ch.Consume(attestrpc.ServiceTopic, "", true, false, false, false, nil)
			return err
		}},
		{"publish a request to compute-b as the service", publishOp("trustpool", "trustpool-agent.compute-b")},
		{"publish to every agent's fanout", publishOp("trustpool-agent_fanout", "")},
		{"publish verdicts on the verdict fanout", publishOp(attestrpc.VerdictsTopic+"_fanout", "")},
	}
	for _, r := range refused {
		withChannel(t, connA, r.what, r.op, true)
	}
	// What it may do: call the service's topic.
	withChannel(t, connA, "publish to the attestation service's topic", publishOp("trustpool", attestrpc.ServiceTopic), false)

	// The default exchange reaches compute-b's queue by name (the broker
	// checks only the write permission on amq.default, which replies
	// need), but the agent's server drops requests that come that way.
	injected, _ := oslo.EncodeRequest(&oslo.Request{Method: attestrpc.MethodQuote, Version: attestrpc.APIVersion,
		Args: map[string]json.RawMessage{"from": json.RawMessage(`"compute-a"`)}, UniqueID: oslo.NewUniqueID()})
	withChannel(t, connA, "publish through the default exchange", func(ch *amqp.Channel) error {
		return ch.PublishWithContext(t.Context(), "", "trustpool-agent.compute-b", false, false,
			amqp.Publishing{ContentType: "application/json", Body: injected})
	}, false)
	if err := callB.Call(t.Context(), nil, attestrpc.MethodQuote, map[string]any{"from": "service"}, nil); err != nil {
		t.Fatalf("the service's second call to compute-b: %v", err)
	}
	time.Sleep(300 * time.Millisecond) // handlers run concurrently
	mu.Lock()
	defer mu.Unlock()
	if slices.Contains(served, "compute-a") || len(served) != 2 {
		t.Errorf("compute-b served %v, want only the service's two calls", served)
	}
}

// publishOp publishes an empty request with publisher confirms.
func publishOp(exchange, key string) func(ch *amqp.Channel) error {
	return func(ch *amqp.Channel) error {
		if err := ch.Confirm(false); err != nil {
			return err
		}
		dc, err := ch.PublishWithDeferredConfirm(exchange, key, false, false, amqp.Publishing{ContentType: "application/json", Body: []byte("{}")})
		if err != nil {
			return err
		}
		if !dc.Wait() {
			return errors.New("not confirmed")
		}
		return nil
	}
}

// withChannel runs op on a fresh channel of conn. When wantRefused, op
// must fail with ACCESS_REFUSED (the broker closes the channel: for a
// publish that comes asynchronously); otherwise it must succeed.
func withChannel(t *testing.T, conn *amqp.Connection, what string, op func(ch *amqp.Channel) error, wantRefused bool) {
	t.Helper()
	ch, err := conn.Channel()
	if err != nil {
		t.Fatalf("%s: open channel: %v", what, err)
	}
	closed := ch.NotifyClose(make(chan *amqp.Error, 1))
	opErr := op(ch)
	var amqpErr *amqp.Error
	if opErr != nil && !errors.As(opErr, &amqpErr) {
		select {
		case amqpErr = <-closed:
		case <-time.After(10 * time.Second):
		}
	}
	if !wantRefused {
		if opErr != nil {
			t.Errorf("%s: %v, want it allowed", what, opErr)
		}
		_ = ch.Close()
		return
	}
	if amqpErr == nil || amqpErr.Code != amqp.AccessRefused {
		t.Errorf("%s: %v (channel closed with %v), want ACCESS_REFUSED", what, opErr, amqpErr)
		_ = ch.Close()
	}
}
