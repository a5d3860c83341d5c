package oslo_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/trustpool/trustpool/internal/oslo"
	"github.com/trustpool/trustpool/internal/servicetest"
)

func TestMain(m *testing.M) { servicetest.Main(m) }

func newTransport(t *testing.T, url string, opts *oslo.RabbitOptions) *oslo.Transport {
	t.Helper()
	tr, err := oslo.NewTransport(oslo.Config{
		TransportURL:    url,
		ControlExchange: "trustpool-test",
		Rabbit:          opts,
		Logger:          slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
	})
	if err != nil {
		t.Fatalf("NewTransport: %v", err)
	}
	t.Cleanup(func() { _ = tr.Close() })
	return tr
}

// startServer runs srv until the test ends and waits until it consumes.
func startServer(t *testing.T, run func(context.Context) error, ready <-chan struct{}) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	select {
	case <-ready:
	case err := <-done:
		t.Fatalf("server stopped before ready: %v", err)
	case <-time.After(60 * time.Second):
		t.Fatal("server not ready after 60s")
	}
}

// recorder collects cast values.
type recorder struct {
	mu     sync.Mutex
	values []string
	got    chan string
}

func newRecorder() *recorder { return &recorder{got: make(chan string, 100)} }

func (r *recorder) record(_ context.Context, req *oslo.Request) (any, error) {
	var v string
	if err := json.Unmarshal(req.Args["value"], &v); err != nil {
		return nil, oslo.NewValueError("value must be a string")
	}
	r.mu.Lock()
	r.values = append(r.values, v)
	r.mu.Unlock()
	r.got <- v
	return nil, nil
}

func (r *recorder) wait(t *testing.T, want string) {
	t.Helper()
	select {
	case v := <-r.got:
		if v != want {
			t.Fatalf("recorded %q, want %q", v, want)
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("cast %q never arrived", want)
	}
}

func testEndpoint(rec *recorder) oslo.Endpoint {
	return oslo.Endpoint{
		Version: "1.3",
		Methods: map[string]oslo.Handler{
			"echo": func(_ context.Context, req *oslo.Request) (any, error) {
				return req.Args["value"], nil
			},
			"context": func(_ context.Context, req *oslo.Request) (any, error) {
				return req.Context, nil
			},
			"fail": func(_ context.Context, req *oslo.Request) (any, error) {
				var msg string
				_ = json.Unmarshal(req.Args["message"], &msg)
				return nil, oslo.NewValueError(msg)
			},
			"crash": func(_ context.Context, _ *oslo.Request) (any, error) {
				return nil, errors.New("agent exploded")
			},
			"sleep": func(ctx context.Context, req *oslo.Request) (any, error) {
				var s float64
				_ = json.Unmarshal(req.Args["seconds"], &s)
				select {
				case <-time.After(time.Duration(s * float64(time.Second))):
				case <-ctx.Done():
				}
				return "slept", nil
			},
			"record":  rec.record,
			"_secret": func(context.Context, *oslo.Request) (any, error) { return "leaked", nil },
		},
	}
}

func TestCallCastFanout(t *testing.T) {
	if testing.Short() {
		t.Skip("needs RabbitMQ")
	}
	rabbit := servicetest.RabbitMQ(t)
	serverTr := newTransport(t, rabbit.URL, nil)
	rec1, rec2 := newRecorder(), newRecorder()
	s1 := oslo.NewServer(serverTr, oslo.Target{Topic: "demo", Server: "host1"}, testEndpoint(rec1))
	s2 := oslo.NewServer(newTransport(t, rabbit.URL, nil), oslo.Target{Topic: "demo", Server: "host2"}, testEndpoint(rec2))
	startServer(t, s1.Run, s1.Ready())
	startServer(t, s2.Run, s2.Ready())

	client := newTransport(t, rabbit.URL, nil).Client(oslo.Target{Topic: "demo", Version: "1.2"}).WithTimeout(20 * time.Second)
	ctx := t.Context()

	values := []any{
		"ascii", "grüße, 日本語 ✓", float64(42), float64(-1.5), true, false, nil,
		[]any{"a", float64(1), []any{}}, map[string]any{"nested": map[string]any{"k": []any{true, nil}}},
		strings.Repeat("x", 1<<20),
	}
	for i, v := range values {
		t.Run(fmt.Sprintf("echo/%d", i), func(t *testing.T) {
			var got any
			if err := client.Call(ctx, map[string]any{"request_id": "req-1"}, "echo", map[string]any{"value": v}, &got); err != nil {
				t.Fatalf("Call: %v", err)
			}
			if diff := cmp.Diff(v, got); diff != "" {
				t.Errorf("echo mismatch (-want +got):\n%s", diff)
			}
		})
	}

	t.Run("context", func(t *testing.T) {
		var got map[string]any
		rctx := map[string]any{"request_id": "req-abc", "roles": []any{"admin"}, "auth_token": "tok"}
		if err := client.Call(ctx, rctx, "context", nil, &got); err != nil {
			t.Fatalf("Call: %v", err)
		}
		if diff := cmp.Diff(rctx, got); diff != "" {
			t.Errorf("context mismatch (-want +got):\n%s", diff)
		}
	})

	t.Run("directed", func(t *testing.T) {
		c := client.WithTarget(func(tg *oslo.Target) { tg.Server = "host2" })
		if err := c.Cast(ctx, nil, "record", map[string]any{"value": "to-host2"}); err != nil {
			t.Fatalf("Cast: %v", err)
		}
		rec2.wait(t, "to-host2")
	})

	t.Run("fanout", func(t *testing.T) {
		c := client.WithTarget(func(tg *oslo.Target) { tg.Fanout = true })
		if err := c.Cast(ctx, nil, "record", map[string]any{"value": "everyone"}); err != nil {
			t.Fatalf("Cast: %v", err)
		}
		rec1.wait(t, "everyone")
		rec2.wait(t, "everyone")
		if err := c.Call(ctx, nil, "echo", nil, nil); err == nil {
			t.Error("Call on a fanout target succeeded, want error")
		}
	})

	failures := []struct {
		name          string
		client        *oslo.Client
		method        string
		args          map[string]any
		class, module string
	}{
		{"value error", client, "fail", map[string]any{"message": "bad value"}, "ValueError", "builtins"},
		{"own error", client, "crash", nil, "TrustpoolError", "trustpool.exception"},
		{"no such method", client, "nope", nil, "NoSuchMethod", "oslo_messaging.rpc.dispatcher"},
		{"private method", client, "_secret", nil, "NoSuchMethod", "oslo_messaging.rpc.dispatcher"},
		{"newer minor", client.WithTarget(func(tg *oslo.Target) { tg.Version = "1.4" }), "echo", nil, "UnsupportedVersion", "oslo_messaging.rpc.dispatcher"},
		{"other major", client.WithTarget(func(tg *oslo.Target) { tg.Version = "2.0" }), "echo", nil, "UnsupportedVersion", "oslo_messaging.rpc.dispatcher"},
		{"wrong namespace", client.WithTarget(func(tg *oslo.Target) { tg.Namespace = "other" }), "echo", nil, "UnsupportedVersion", "oslo_messaging.rpc.dispatcher"},
	}
	for _, tc := range failures {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.client.Call(ctx, nil, tc.method, tc.args, nil)
			var re *oslo.RemoteError
			if !errors.As(err, &re) {
				t.Fatalf("Call error = %v, want *oslo.RemoteError", err)
			}
			if re.Class != tc.class || re.Module != tc.module {
				t.Errorf("failure = %s.%s, want %s.%s", re.Module, re.Class, tc.module, tc.class)
			}
		})
	}
}

func TestCallMonitorKeepAlive(t *testing.T) {
	if testing.Short() {
		t.Skip("needs RabbitMQ")
	}
	rabbit := servicetest.RabbitMQ(t)
	s := oslo.NewServer(newTransport(t, rabbit.URL, nil), oslo.Target{Topic: "slow", Server: "h"}, testEndpoint(newRecorder()))
	startServer(t, s.Run, s.Ready())
	client := newTransport(t, rabbit.URL, nil).Client(oslo.Target{Topic: "slow"}).WithTimeout(30 * time.Second)

	// The method runs three times longer than the monitor interval: only
	// keep-alives from the server keep the call going.
	var got string
	if err := client.WithCallMonitor(time.Second).Call(t.Context(), nil, "sleep", map[string]any{"seconds": 3}, &got); err != nil {
		t.Fatalf("Call with call monitor: %v", err)
	}
	if got != "slept" {
		t.Errorf("result = %q, want slept", got)
	}
}

func TestCallTimeoutWithoutServer(t *testing.T) {
	if testing.Short() {
		t.Skip("needs RabbitMQ")
	}
	rabbit := servicetest.RabbitMQ(t)
	client := newTransport(t, rabbit.URL, nil).Client(oslo.Target{Topic: "nobody-listens"}).WithTimeout(2 * time.Second)
	err := client.Call(t.Context(), nil, "echo", nil, nil)
	if !errors.Is(err, oslo.ErrTimeout) {
		t.Fatalf("Call error = %v, want ErrTimeout", err)
	}
}

func TestServerDropsDuplicatesAndBadMessages(t *testing.T) {
	if testing.Short() {
		t.Skip("needs RabbitMQ")
	}
	rabbit := servicetest.RabbitMQ(t)
	rec := newRecorder()
	s := oslo.NewServer(newTransport(t, rabbit.URL, nil), oslo.Target{Topic: "dups", Server: "h"}, testEndpoint(rec))
	startServer(t, s.Run, s.Ready())

	ch := rawChannel(t, rabbit)
	publish := func(contentType string, req *oslo.Request) {
		t.Helper()
		body, err := oslo.EncodeRequest(req)
		if err != nil {
			t.Fatalf("EncodeRequest: %v", err)
		}
		if err := ch.PublishWithContext(t.Context(), "trustpool-test", "dups", false, false, amqp.Publishing{ContentType: contentType, Body: body}); err != nil {
			t.Fatalf("publish: %v", err)
		}
	}
	cast := func(v, uid string) *oslo.Request {
		return &oslo.Request{Method: "record", Args: map[string]json.RawMessage{"value": json.RawMessage(`"` + v + `"`)}, UniqueID: uid}
	}
	publish("application/json", cast("first", "u1"))
	publish("application/json", cast("duplicate", "u1"))
	publish("", cast("no-content-type", "u2"))
	publish("application/json", cast("last", "u3"))
	// Handlers run concurrently, so the two accepted casts may be recorded
	// in either order; after both, nothing else may arrive.
	got := map[string]bool{}
	for range 2 {
		select {
		case v := <-rec.got:
			got[v] = true
		case <-time.After(30 * time.Second):
			t.Fatalf("recorded only %v", got)
		}
	}
	if !got["first"] || !got["last"] {
		t.Fatalf("recorded %v, want first and last", got)
	}
	select {
	case v := <-rec.got:
		t.Errorf("dropped message %q was dispatched", v)
	case <-time.After(time.Second):
	}
}

func TestNotifierListener(t *testing.T) {
	if testing.Short() {
		t.Skip("needs RabbitMQ")
	}
	rabbit := servicetest.RabbitMQ(t)
	tr := newTransport(t, rabbit.URL, nil)
	got := make(chan *oslo.Notification, 10)
	failOnce := true
	var mu sync.Mutex
	l := oslo.NewListener(newTransport(t, rabbit.URL, nil), oslo.ListenerConfig{Topic: "trustpool_notifications", Queue: "test-listener", Priorities: []string{"info", "error"}},
		func(_ context.Context, n *oslo.Notification) error {
			mu.Lock()
			defer mu.Unlock()
			if n.EventType == "host.flaky" && failOnce {
				failOnce = false
				return errors.New("transient failure")
			}
			got <- n
			return nil
		})
	startServer(t, l.Run, l.Ready())

	n := oslo.NewNotifier(tr, "trustpool-attestation:ctl1", "trustpool_notifications")
	payload := map[string]any{"host": "compute-1", "status": "trusted"}
	rctx := map[string]any{"request_id": "req-9", "auth_token": "secret-token"}
	if err := n.Notify(t.Context(), rctx, "info", "trustpool.host.trusted", payload); err != nil {
		t.Fatalf("Notify: %v", err)
	}
	if err := n.Notify(t.Context(), nil, "ERROR", "host.flaky", payload); err != nil {
		t.Fatalf("Notify: %v", err)
	}
	if err := n.Notify(t.Context(), nil, "loud", "x", payload); !errors.Is(err, oslo.ErrUnknownPriority) {
		t.Errorf("Notify with bad priority = %v, want ErrInvalidPriority", err)
	}
	for _, want := range []struct{ event, prio string }{{"trustpool.host.trusted", "INFO"}, {"host.flaky", "ERROR"}} {
		select {
		case n := <-got:
			if n.EventType != want.event || n.Priority != want.prio || n.PublisherID != "trustpool-attestation:ctl1" {
				t.Errorf("got %s/%s from %s, want %s/%s", n.EventType, n.Priority, n.PublisherID, want.event, want.prio)
			}
			var p map[string]any
			if err := json.Unmarshal(n.Payload, &p); err != nil {
				t.Fatalf("payload: %v", err)
			}
			if diff := cmp.Diff(payload, p); diff != "" {
				t.Errorf("payload mismatch (-want +got):\n%s", diff)
			}
			if tok := n.Context["auth_token"]; tok != nil {
				t.Errorf("auth_token leaked into notification context: %v", tok)
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("notification %s never arrived (a failed handler must lead to redelivery)", want.event)
		}
	}
}

func TestListenerRefusesSharedQueue(t *testing.T) {
	tr := newTransport(t, "rabbit://guest:guest@127.0.0.1:1/", nil)
	l := oslo.NewListener(tr, oslo.ListenerConfig{Exchange: "nova", Topic: "versioned_notifications", Queue: "versioned_notifications.info"},
		func(context.Context, *oslo.Notification) error { return nil })
	if err := l.Run(t.Context()); err == nil {
		t.Fatal("listener consuming versioned_notifications.info started, want refusal")
	}
}

func TestQuorumQueues(t *testing.T) {
	if testing.Short() {
		t.Skip("needs RabbitMQ")
	}
	rabbit := servicetest.RabbitMQ(t)
	opts := oslo.DefaultRabbitOptions()
	opts.RabbitQuorumQueue = true
	s := oslo.NewServer(newTransport(t, rabbit.URL, &opts), oslo.Target{Topic: "quorum", Server: "h"}, testEndpoint(newRecorder()))
	startServer(t, s.Run, s.Ready())
	out := rabbit.Ctl(t, "list_queues", "-p", rabbit.VHost, "name", "durable", "type")
	for _, q := range []string{"quorum", "quorum.h"} {
		found := false
		for _, line := range strings.Split(out, "\n") {
			f := strings.Fields(line)
			if len(f) == 3 && f[0] == q {
				found = true
				if f[1] != "true" || f[2] != "quorum" {
					t.Errorf("queue %s: durable=%s type=%s, want true quorum", q, f[1], f[2])
				}
			}
		}
		if !found {
			t.Errorf("queue %s not declared:\n%s", q, out)
		}
	}
	// A client on the same settings can call it.
	client := newTransport(t, rabbit.URL, &opts).Client(oslo.Target{Topic: "quorum"})
	var got string
	if err := client.Call(t.Context(), nil, "echo", map[string]any{"value": "q"}, &got); err != nil || got != "q" {
		t.Fatalf("Call = %q, %v", got, err)
	}
}

func TestBrokerRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("needs RabbitMQ")
	}
	rabbit := servicetest.NewRabbitMQ(t)
	rec := newRecorder()
	opts := oslo.DefaultRabbitOptions()
	opts.RabbitRetryInterval = 1
	opts.RabbitRetryBackoff = 1
	opts.RabbitIntervalMax = 2
	ep := testEndpoint(rec)
	// hold tells the test that a call reached the handler, then holds it until
	// the test ends.
	entered, release := make(chan struct{}, 1), make(chan struct{})
	ep.Methods["hold"] = func(ctx context.Context, _ *oslo.Request) (any, error) {
		entered <- struct{}{}
		select {
		case <-release:
		case <-ctx.Done():
		}
		return "held", nil
	}
	s := oslo.NewServer(newTransport(t, rabbit.URL, &opts), oslo.Target{Topic: "restart", Server: "h"}, ep)
	startServer(t, s.Run, s.Ready())
	t.Cleanup(func() { close(release) })
	client := newTransport(t, rabbit.URL, &opts).Client(oslo.Target{Topic: "restart"}).WithTimeout(5 * time.Minute)

	var got string
	if err := client.Call(t.Context(), nil, "echo", map[string]any{"value": "before"}, &got); err != nil {
		t.Fatalf("Call before restart: %v", err)
	}

	// A call in flight when the broker goes away fails with ErrConnection
	// well before its 5-minute timeout.
	inflight := make(chan error, 1)
	go func() { inflight <- client.Call(t.Context(), nil, "hold", nil, nil) }()
	select {
	case <-entered:
	case err := <-inflight:
		t.Fatalf("call ended before the broker stopped: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("the call did not reach the server within 30s")
	}
	rabbit.StopApp(t)
	select {
	case err := <-inflight:
		if !errors.Is(err, oslo.ErrConnection) {
			t.Errorf("in-flight call error = %v, want ErrConnection", err)
		}
	case <-time.After(2 * time.Minute):
		t.Fatal("in-flight call still hanging 2 minutes after the broker stopped")
	}
	if err := client.Call(t.Context(), nil, "echo", map[string]any{"value": "down"}, nil); !errors.Is(err, oslo.ErrConnection) {
		t.Errorf("call while broker down = %v, want ErrConnection", err)
	}
	rabbit.StartApp(t)

	// The server reconnects by itself; the client's next calls succeed
	// once it has.
	deadline := time.Now().Add(2 * time.Minute)
	for {
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		err := client.Call(ctx, nil, "echo", map[string]any{"value": "after"}, &got)
		cancel()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no successful call 2 minutes after the broker came back: %v", err)
		}
		time.Sleep(500 * time.Millisecond)
	}
	if got != "after" {
		t.Errorf("after restart got %q", got)
	}
}

func TestFailoverToSecondHost(t *testing.T) {
	if testing.Short() {
		t.Skip("needs RabbitMQ")
	}
	rabbit := servicetest.RabbitMQ(t)
	// Port 1 on loopback refuses connections: every connection must fail
	// over to the live broker, whichever host the shuffle put first.
	live := strings.TrimPrefix(rabbit.URL, "rabbit://")
	url := "rabbit://guest:guest@127.0.0.1:1," + live
	s := oslo.NewServer(newTransport(t, url, nil), oslo.Target{Topic: "failover", Server: "h"}, testEndpoint(newRecorder()))
	startServer(t, s.Run, s.Ready())
	client := newTransport(t, url, nil).Client(oslo.Target{Topic: "failover"}).WithTimeout(30 * time.Second)
	for i := range 3 {
		var got float64
		if err := client.Call(t.Context(), nil, "echo", map[string]any{"value": i}, &got); err != nil {
			t.Fatalf("Call %d: %v", i, err)
		}
		if got != float64(i) {
			t.Errorf("Call %d returned %v", i, got)
		}
	}
}

func TestUnreachableBrokerFailsFast(t *testing.T) {
	client := newTransport(t, "rabbit://guest:guest@127.0.0.1:1/", nil).Client(oslo.Target{Topic: "x"})
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	if err := client.Call(ctx, nil, "echo", nil, nil); !errors.Is(err, oslo.ErrConnection) {
		t.Errorf("Call = %v, want ErrConnection", err)
	}
	if err := client.Cast(ctx, nil, "echo", nil); !errors.Is(err, oslo.ErrConnection) {
		t.Errorf("Cast = %v, want ErrConnection", err)
	}
	if ctx.Err() != nil {
		t.Error("calls to an unreachable broker waited for the whole deadline")
	}
}

// Python's json writes NaN and Infinity, which are not JSON. A server that
// cannot decode a call still answers it, with a ValueError, when the reply
// address is readable, instead of leaving the caller to time out.
func TestUndecodableCallGetsValueError(t *testing.T) {
	if testing.Short() {
		t.Skip("needs RabbitMQ")
	}
	rabbit := servicetest.RabbitMQ(t)
	s := oslo.NewServer(newTransport(t, rabbit.URL, nil), oslo.Target{Topic: "nan", Server: "h"}, testEndpoint(newRecorder()))
	startServer(t, s.Run, s.Ready())

	ch := rawChannel(t, rabbit)
	q, err := ch.QueueDeclare("reply_nan_test", false, true, false, false, nil)
	if err != nil {
		t.Fatalf("declare: %v", err)
	}
	replies, err := ch.Consume(q.Name, "", true, false, false, false, nil)
	if err != nil {
		t.Fatalf("consume: %v", err)
	}
	inner := `{"method": "echo", "args": {"value": NaN}, "_msg_id": "abc123", "_reply_q": "reply_nan_test", "_timeout": null, "_unique_id": "u-nan"}`
	env, err := json.Marshal(map[string]string{"oslo.version": "2.0", "oslo.message": inner})
	if err != nil {
		t.Fatal(err)
	}
	if err := ch.PublishWithContext(t.Context(), "trustpool-test", "nan", false, false, amqp.Publishing{ContentType: "application/json", Body: env}); err != nil {
		t.Fatalf("publish: %v", err)
	}
	select {
	case d := <-replies:
		r, err := oslo.DecodeReply(d.Body)
		if err != nil {
			t.Fatalf("DecodeReply: %v", err)
		}
		if r.MsgID != "abc123" || !r.Ending || r.Failure == nil || r.Failure.Class != "ValueError" || r.Failure.Module != "builtins" {
			t.Errorf("reply = %+v, want a final ValueError failure for abc123", r)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("no reply to an undecodable call")
	}
}

// TestStopDropsRepliesToMissingQueues: a reply whose queue is missing (its
// caller killed) is retried for kombu_missing_consumer_retry_timeout, but
// not past the server's stop: Run returns long before that timeout.
func TestStopDropsRepliesToMissingQueues(t *testing.T) {
	if testing.Short() {
		t.Skip("needs RabbitMQ")
	}
	rabbit := servicetest.RabbitMQ(t)
	rec := newRecorder()
	opts := oslo.DefaultRabbitOptions()
	opts.KombuMissingConsumerRetryTimeout = 600
	s := oslo.NewServer(newTransport(t, rabbit.URL, &opts), oslo.Target{Topic: "gone-caller", Server: "h"}, testEndpoint(rec))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(cancel)
	select {
	case <-s.Ready():
	case err := <-done:
		t.Fatalf("server stopped before ready: %v", err)
	}

	ch := rawChannel(t, rabbit)
	timeout := 60.0
	body, err := oslo.EncodeRequest(&oslo.Request{Method: "record", Args: map[string]json.RawMessage{"value": json.RawMessage(`"v"`)},
		MsgID: "m1", ReplyQ: "reply_of_a_killed_caller", UniqueID: "u1", Timeout: &timeout, IsCall: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := ch.PublishWithContext(t.Context(), "trustpool-test", "gone-caller.h", false, false,
		amqp.Publishing{ContentType: "application/json", Body: body}); err != nil {
		t.Fatalf("publish: %v", err)
	}
	rec.wait(t, "v")
	time.Sleep(time.Second) // the reply is returned unroutable, then retried
	cancel()
	// A bound against a hang, not a timing criterion: without the fix Run
	// waits out the 600 s retry.
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run: %v", err)
		}
	case <-time.After(120 * time.Second):
		t.Fatal("Run still waiting for a missing reply queue 120 s after the stop")
	}
}
