package oslo_test

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/trustpool/trustpool/internal/oslo"
	"github.com/trustpool/trustpool/internal/servicetest"
)

// limitedTransport is newTransport with a maximum message size.
func limitedTransport(t *testing.T, url string, maxSize int) *oslo.Transport {
	t.Helper()
	tr, err := oslo.NewTransport(oslo.Config{
		TransportURL: url, ControlExchange: "trustpool-test", MaxMessageSize: maxSize,
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError})),
	})
	if err != nil {
		t.Fatalf("NewTransport: %v", err)
	}
	t.Cleanup(func() { _ = tr.Close() })
	return tr
}

const testLimit = 64 << 10

// rawChannel is a plain amqp091 channel on rabbit (as guest), closed when
// the test ends: for messages no oslo client would send.
func rawChannel(t *testing.T, rabbit *servicetest.Rabbit) *amqp.Channel {
	t.Helper()
	conn, err := amqp.Dial(rabbit.AMQPURL)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	return ch
}

// TestServerRefusesOversizedRequest: a request larger than the server's
// max_message_size never reaches a handler; a caller whose reply address
// is readable gets a ValueError instead of waiting for its timeout.
func TestServerRefusesOversizedRequest(t *testing.T) {
	if testing.Short() {
		t.Skip("needs RabbitMQ")
	}
	rabbit := servicetest.RabbitMQ(t)
	rec := newRecorder()
	s := oslo.NewServer(limitedTransport(t, rabbit.URL, testLimit), oslo.Target{Topic: "big", Server: "h"}, testEndpoint(rec))
	startServer(t, s.Run, s.Ready())
	client := newTransport(t, rabbit.URL, nil).Client(oslo.Target{Topic: "big"}).WithTimeout(30 * time.Second)
	ctx := t.Context()

	big := strings.Repeat("x", testLimit)
	err := client.Call(ctx, nil, "echo", map[string]any{"value": big}, nil)
	var re *oslo.RemoteError
	if !errors.As(err, &re) || re.Class != "ValueError" || !strings.Contains(re.Message, "message too large") {
		t.Fatalf("oversized call = %v, want a ValueError saying the message is too large", err)
	}
	if err := client.Cast(ctx, nil, "record", map[string]any{"value": big}); err != nil {
		t.Fatal(err)
	}
	if err := client.Cast(ctx, nil, "record", map[string]any{"value": "small"}); err != nil {
		t.Fatal(err)
	}
	// Casts are handled in order of arrival by one consumer: once the
	// small one is recorded, the big one has been dropped.
	rec.wait(t, "small")
	var got string
	if err := client.Call(ctx, nil, "echo", map[string]any{"value": "fits"}, &got); err != nil || got != "fits" {
		t.Errorf("call within the limit = %q, %v", got, err)
	}
}

// TestOversizedReplyIsInvalidReply: a reply larger than the caller's
// max_message_size fails the call at once with ErrInvalidReply (the server
// answered), not with a timeout.
func TestOversizedReplyIsInvalidReply(t *testing.T) {
	if testing.Short() {
		t.Skip("needs RabbitMQ")
	}
	rabbit := servicetest.RabbitMQ(t)
	s := oslo.NewServer(newTransport(t, rabbit.URL, nil), oslo.Target{Topic: "bigreply", Server: "h"}, testEndpoint(newRecorder()))
	startServer(t, s.Run, s.Ready())
	client := limitedTransport(t, rabbit.URL, testLimit).Client(oslo.Target{Topic: "bigreply"}).WithTimeout(time.Minute)

	err := client.Call(t.Context(), nil, "echo", map[string]any{"value": strings.Repeat("y", testLimit)}, nil)
	if !errors.Is(err, oslo.ErrInvalidReply) || !errors.Is(err, oslo.ErrMessageTooLarge) || errors.Is(err, oslo.ErrTimeout) {
		t.Fatalf("call with an oversized reply = %v, want ErrInvalidReply and ErrMessageTooLarge", err)
	}
	var got string
	if err := client.Call(t.Context(), nil, "echo", map[string]any{"value": "ok"}, &got); err != nil || got != "ok" {
		t.Errorf("next call = %q, %v", got, err)
	}
}

// TestUndecodableReplyIsInvalidReply: a server that answers with something
// that does not decode (here NaN, which Python's json writes) fails the
// call at once with ErrInvalidReply; so does a result of the wrong type.
func TestUndecodableReplyIsInvalidReply(t *testing.T) {
	if testing.Short() {
		t.Skip("needs RabbitMQ")
	}
	rabbit := servicetest.RabbitMQ(t)
	ch := rawChannel(t, rabbit)
	if err := ch.ExchangeDeclare("trustpool-test", "topic", false, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := ch.QueueDeclare("garbled", false, true, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if err := ch.QueueBind("garbled", "garbled", "trustpool-test", false, nil); err != nil {
		t.Fatal(err)
	}
	reqs, err := ch.Consume("garbled", "", true, false, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for d := range reqs {
			req, err := oslo.DecodeRequest(d.Body)
			if err != nil {
				continue
			}
			inner := `{"result": NaN, "failure": null, "ending": true, "_msg_id": "` + req.MsgID + `"}`
			if req.Method == "wrong_type" {
				inner = `{"result": {"not": "a string"}, "failure": null, "ending": true, "_msg_id": "` + req.MsgID + `"}`
			}
			body, _ := json.Marshal(map[string]string{"oslo.version": "2.0", "oslo.message": inner})
			_ = ch.PublishWithContext(context.Background(), "", req.ReplyQ, false, false, amqp.Publishing{ContentType: "application/json", Body: body})
		}
	}()
	client := newTransport(t, rabbit.URL, nil).Client(oslo.Target{Topic: "garbled"}).WithTimeout(20 * time.Second)
	for _, method := range []string{"nan", "wrong_type"} {
		var got string
		err := client.Call(t.Context(), nil, method, nil, &got)
		if !errors.Is(err, oslo.ErrInvalidReply) || errors.Is(err, oslo.ErrTimeout) {
			t.Errorf("%s: call = %v, want ErrInvalidReply", method, err)
		}
	}
}

// TestListenerDropsOversizedNotification: a notification larger than the
// listener's max_message_size is dropped before decoding; the next one is
// delivered.
func TestListenerDropsOversizedNotification(t *testing.T) {
	if testing.Short() {
		t.Skip("needs RabbitMQ")
	}
	rabbit := servicetest.RabbitMQ(t)
	got := make(chan string, 10)
	l := oslo.NewListener(limitedTransport(t, rabbit.URL, testLimit), oslo.ListenerConfig{Topic: "limited_notifications", Queue: "limited-listener"},
		func(_ context.Context, n *oslo.Notification) error {
			got <- n.EventType
			return nil
		})
	startServer(t, l.Run, l.Ready())
	n := oslo.NewNotifier(newTransport(t, rabbit.URL, nil), "test", "limited_notifications")
	if err := n.Notify(t.Context(), nil, "info", "big", map[string]string{"v": strings.Repeat("z", testLimit)}); err != nil {
		t.Fatal(err)
	}
	if err := n.Notify(t.Context(), nil, "info", "small", map[string]string{"v": "z"}); err != nil {
		t.Fatal(err)
	}
	select {
	case ev := <-got:
		if ev != "small" {
			t.Fatalf("first notification handled: %q, want small (big must be dropped)", ev)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("small notification never arrived")
	}
}

// TestUnusableCallsStayBounded: a flood of calls that cannot be decoded,
// each naming a reply queue that does not exist, does not leave work
// behind: every failure reply runs under the server's executor and Run
// waits for it, so once Run has returned no server goroutine is left (they
// used to retry each reply for about 65 s on their own).
func TestUnusableCallsStayBounded(t *testing.T) {
	if testing.Short() {
		t.Skip("needs RabbitMQ")
	}
	rabbit := servicetest.RabbitMQ(t)
	s := oslo.NewServer(newTransport(t, rabbit.URL, nil), oslo.Target{Topic: "flood", Server: "h"}, testEndpoint(newRecorder()))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(cancel)
	select {
	case <-s.Ready():
	case <-time.After(time.Minute):
		t.Fatal("server not ready")
	}
	ch := rawChannel(t, rabbit)
	for i := range 200 {
		inner := `{"method": "echo", "args": {"value": NaN}, "_msg_id": "m` + string(rune('a'+i%26)) + `", "_reply_q": "reply_nobody_` + string(rune('a'+i%26)) + `"}`
		body, _ := json.Marshal(map[string]string{"oslo.version": "2.0", "oslo.message": inner})
		if err := ch.PublishWithContext(t.Context(), "trustpool-test", "flood", false, false, amqp.Publishing{ContentType: "application/json", Body: body}); err != nil {
			t.Fatal(err)
		}
	}
	// The server consumes in order: once this call is answered, every
	// message of the flood has been accepted or dropped.
	client := newTransport(t, rabbit.URL, nil).Client(oslo.Target{Topic: "flood"}).WithTimeout(time.Minute)
	if err := client.Call(t.Context(), nil, "echo", map[string]any{"value": 1}, nil); err != nil {
		t.Fatalf("call after the flood: %v", err)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(2 * time.Minute):
		t.Fatal("Run did not return")
	}
	// Goroutines that are ending when Run returns (the merger closing its
	// channel once the consumers' deliveries close) may need a moment; one
	// that is still there after the bound is a leak.
	var left string
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		left = serverGoroutine()
		if left == "" || time.Now().After(deadline) {
			break
		}
	}
	if left != "" {
		t.Fatalf("server goroutine still running 10 s after Run returned:\n%s", left)
	}
}

// serverGoroutine returns the stack of a goroutine running Server code, or "".
func serverGoroutine() string {
	buf := make([]byte, 1<<22)
	stacks := string(buf[:runtime.Stack(buf, true)])
	for _, g := range strings.Split(stacks, "\n\n") {
		if strings.Contains(g, "oslo.(*Server)") {
			return g
		}
	}
	return ""
}

// TestReplyQueueIsExclusive: servers learn the caller's reply queue name
// from every request, but no other connection can consume from it (or
// purge or delete it): the replies to a service's calls cannot be stolen
// by a peer it calls.
func TestReplyQueueIsExclusive(t *testing.T) {
	if testing.Short() {
		t.Skip("needs RabbitMQ")
	}
	rabbit := servicetest.RabbitMQ(t)
	replyQ := make(chan string, 1)
	s := oslo.NewServer(newTransport(t, rabbit.URL, nil), oslo.Target{Topic: "curious", Server: "h"}, oslo.Endpoint{
		Methods: map[string]oslo.Handler{"echo": func(_ context.Context, req *oslo.Request) (any, error) {
			select {
			case replyQ <- req.ReplyQ:
			default:
			}
			return "x", nil
		}},
	})
	startServer(t, s.Run, s.Ready())
	client := newTransport(t, rabbit.URL, nil).Client(oslo.Target{Topic: "curious"}).WithTimeout(30 * time.Second)
	if err := client.Call(t.Context(), nil, "echo", nil, nil); err != nil {
		t.Fatal(err)
	}
	q := <-replyQ
	conn, err := amqp.Dial(rabbit.AMQPURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	for name, op := range map[string]func(ch *amqp.Channel) error{
		"consume": func(ch *amqp.Channel) error { _, err := ch.Consume(q, "", true, false, false, false, nil); return err },
		"purge":   func(ch *amqp.Channel) error { _, err := ch.QueuePurge(q, false); return err },
		"delete":  func(ch *amqp.Channel) error { _, err := ch.QueueDelete(q, false, false, false); return err },
	} {
		ch, err := conn.Channel()
		if err != nil {
			t.Fatal(err)
		}
		var amqpErr *amqp.Error
		if err := op(ch); !errors.As(err, &amqpErr) || amqpErr.Code != amqp.ResourceLocked {
			t.Errorf("%s %s from another connection = %v, want RESOURCE_LOCKED", name, q, err)
		}
	}
	// The caller still gets its replies.
	if err := client.Call(t.Context(), nil, "echo", nil, nil); err != nil {
		t.Errorf("call after the attempts: %v", err)
	}
}

// TestServerDropsRequestsViaDefaultExchange: the default exchange reaches
// any queue by its name, past RabbitMQ's topic permissions on the topic
// exchange; oslo clients never send requests that way, so servers drop
// them.
func TestServerDropsRequestsViaDefaultExchange(t *testing.T) {
	if testing.Short() {
		t.Skip("needs RabbitMQ")
	}
	rabbit := servicetest.RabbitMQ(t)
	rec := newRecorder()
	s := oslo.NewServer(newTransport(t, rabbit.URL, nil), oslo.Target{Topic: "direct", Server: "h"}, testEndpoint(rec))
	startServer(t, s.Run, s.Ready())
	ch := rawChannel(t, rabbit)
	cast := func(exchange, key, v string) {
		t.Helper()
		body, err := oslo.EncodeRequest(&oslo.Request{Method: "record", Args: map[string]json.RawMessage{"value": json.RawMessage(`"` + v + `"`)}, UniqueID: v})
		if err != nil {
			t.Fatal(err)
		}
		if err := ch.PublishWithContext(t.Context(), exchange, key, false, false, amqp.Publishing{ContentType: "application/json", Body: body}); err != nil {
			t.Fatal(err)
		}
	}
	cast("", "direct.h", "via-default")
	cast("", "direct", "via-default-topic-queue")
	cast("trustpool-test", "direct.h", "via-topic")
	cast("trustpool-test", "direct", "via-topic-shared")
	// Each queue is consumed in order: once both requests sent the right
	// way are handled, the others have been seen (and must have been
	// dropped); handlers run concurrently, so allow a moment for a late one.
	got := map[string]bool{}
	deadline := time.After(30 * time.Second)
	for !got["via-topic"] || !got["via-topic-shared"] {
		select {
		case v := <-rec.got:
			got[v] = true
		case <-deadline:
			t.Fatalf("recorded only %v", got)
		}
	}
	select {
	case v := <-rec.got:
		got[v] = true
	case <-time.After(500 * time.Millisecond):
	}
	for _, v := range []string{"via-default", "via-default-topic-queue"} {
		if got[v] {
			t.Errorf("request %q through the default exchange was dispatched", v)
		}
	}
}

// TestConsumersRedeclareDeletedExchange: every oslo client of an exchange
// may declare it, so it may also delete it, and with it every binding. A
// server and a listener declare and bind again periodically, so traffic
// comes back without a reconnect.
func TestConsumersRedeclareDeletedExchange(t *testing.T) {
	if testing.Short() {
		t.Skip("needs RabbitMQ")
	}
	defer oslo.SetDeclarationRefresh(300 * time.Millisecond)()
	rabbit := servicetest.RabbitMQ(t)
	s := oslo.NewServer(newTransport(t, rabbit.URL, nil), oslo.Target{Topic: "deleted", Server: "h"}, testEndpoint(newRecorder()))
	startServer(t, s.Run, s.Ready())
	got := make(chan string, 100)
	l := oslo.NewListener(newTransport(t, rabbit.URL, nil), oslo.ListenerConfig{Topic: "deleted_notifications", Queue: "deleted-listener"},
		func(_ context.Context, n *oslo.Notification) error { got <- n.EventType; return nil })
	startServer(t, l.Run, l.Ready())
	tr := newTransport(t, rabbit.URL, nil)
	client := tr.Client(oslo.Target{Topic: "deleted"})
	notifier := oslo.NewNotifier(tr, "test", "deleted_notifications")
	works := func() bool {
		ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
		defer cancel()
		if err := client.Call(ctx, nil, "echo", map[string]any{"value": 1}, nil); err != nil {
			return false
		}
		if err := notifier.Notify(ctx, nil, "info", "probe", map[string]any{}); err != nil {
			return false
		}
		select {
		case <-got:
			return true
		case <-ctx.Done():
			return false
		}
	}
	if !works() {
		t.Fatal("calls or notifications fail before the exchange is deleted")
	}
	ch := rawChannel(t, rabbit)
	if err := ch.ExchangeDelete("trustpool-test", false, false); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for !works() {
		if time.Now().After(deadline) {
			t.Fatal("calls and notifications still fail 30 s after the exchange was deleted")
		}
	}
}
