package interop

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/trustpool/trustpool/internal/oslo"
	"github.com/trustpool/trustpool/internal/servicetest"
)

// amqpDial opens a raw AMQP connection to the test's vhost.
func amqpDial(t *testing.T, r *servicetest.Rabbit) *amqp.Connection {
	t.Helper()
	conn, err := amqp.Dial(r.AMQPURL)
	if err != nil {
		t.Fatalf("dial %s: %v", r.AMQPURL, err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

// oslo2 builds an oslo "2.0" envelope by hand (independently of the codec
// under test).
func oslo2(t *testing.T, inner map[string]any) []byte {
	t.Helper()
	b, err := json.Marshal(inner)
	if err != nil {
		t.Fatal(err)
	}
	body, err := json.Marshal(map[string]string{"oslo.version": "2.0", "oslo.message": string(b)})
	if err != nil {
		t.Fatal(err)
	}
	return body
}

// TestGoServerDropsDuplicateUniqueID publishes the same cast twice with one
// _unique_id (as a redelivery or a double publish would): the Go server runs
// it once, as oslo does.
func TestGoServerDropsDuplicateUniqueID(t *testing.T) {
	skipShort(t)
	r := servicetest.RabbitMQ(t)
	tr := newTransport(t, r.URL)
	ep, rec := peerEndpoint("1.0")
	startGoServer(t, tr, oslo.Target{Topic: "dedup_go", Server: "gohost"}, ep)

	ctx, cancel := context.WithTimeout(context.Background(), runTimeout)
	defer cancel()
	ch, err := amqpDial(t, r).Channel()
	if err != nil {
		t.Fatalf("channel: %v", err)
	}
	publish := func(value, uid string) {
		t.Helper()
		body := oslo2(t, map[string]any{
			"method": "record", "args": map[string]any{"value": value},
			"_unique_id": uid, "_context_user_id": "interop-user",
		})
		err := ch.PublishWithContext(ctx, exchange, "dedup_go", false, false, amqp.Publishing{
			ContentType: "application/json", ContentEncoding: "utf-8", DeliveryMode: amqp.Persistent, Body: body,
		})
		if err != nil {
			t.Fatalf("publish: %v", err)
		}
	}
	dup := oslo.NewUniqueID()
	publish("dup", dup)
	publish("dup", dup)
	publish("other", oslo.NewUniqueID()) // a different id is not a duplicate
	publish("marker", oslo.NewUniqueID())
	for {
		changed := rec.Changed()
		var vals []string
		for _, v := range rec.Values() {
			var s string
			_ = json.Unmarshal(v, &s)
			vals = append(vals, s)
		}
		count := map[string]int{}
		for _, v := range vals {
			count[v]++
		}
		if count["dup"] > 1 {
			t.Fatalf("recorded %v: the duplicate ran twice", vals)
		}
		if count["dup"] == 1 && count["other"] == 1 && count["marker"] == 1 {
			// The server decides on duplicates in queue order but runs
			// handlers concurrently, so a wrongly accepted second copy
			// could still be running: give it a moment to show up.
			select {
			case <-changed:
				continue
			case <-time.After(time.Second):
				return
			}
		}
		select {
		case <-changed:
		case <-ctx.Done():
			t.Fatalf("dup, other and marker never all recorded; recorded %v", vals)
		}
	}
}

// waitConsumedQueue waits until queue exists with a consumer (a server or
// listener re-declares its queues when it reconnects).
func waitConsumedQueue(t *testing.T, ctx context.Context, r *servicetest.Rabbit, queue string) {
	t.Helper()
	conn := amqpDial(t, r)
	for {
		ch, err := conn.Channel()
		if err != nil {
			t.Fatalf("channel: %v", err)
		}
		q, err := ch.QueueDeclarePassive(queue, false, false, false, false, nil)
		if err == nil {
			_ = ch.Close()
			if q.Consumers > 0 {
				return
			}
		}
		select {
		case <-ctx.Done():
			t.Fatalf("queue %s not consumed again: %v (last error %v)", queue, ctx.Err(), err)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// callerResult is one answer of py/caller.py.
type callerResult struct {
	OK     bool            `json:"ok"`
	Result json.RawMessage `json:"result"`
	Error  *pyError        `json:"error"`
}

func (p *pyProc) call(t *testing.T, ctx context.Context, method string, args map[string]any, timeout int) callerResult {
	t.Helper()
	p.send(t, map[string]any{"method": method, "args": args, "timeout": timeout})
	var res callerResult
	p.nextJSON(t, ctx, &res)
	return res
}

// TestBrokerRestart stops and starts the RabbitMQ application under running
// processes (a private node, so no other test is disturbed): an in-flight Go
// call fails with ErrConnection instead of hanging; after the restart the
// same Python caller process is served by the same Go server, the Go client
// works again and the Go listener receives notifications again, without
// restarting anything.
func TestBrokerRestart(t *testing.T) {
	skipShort(t)
	r := servicetest.NewRabbitMQ(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*runTimeout)
	defer cancel()

	// The server gives up on a vanished reply queue after 20 s instead of 60 s.
	srvURL := r.URL + "?kombu_missing_consumer_retry_timeout=20"
	srvTr := newTransport(t, srvURL)
	ep, _ := peerEndpoint("1.0")
	held := make(chan struct{}, 1)
	release := make(chan struct{})
	ep.Methods["hold"] = func(ctx context.Context, req *oslo.Request) (any, error) {
		held <- struct{}{}
		select {
		case <-release:
			return "released", nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	const topic, notifyTopic, listenQueue = "restart_go", "restart_notifications", "go-restart-pool"
	startGoServer(t, srvTr, oslo.Target{Topic: topic, Server: "gohost"}, ep)
	notes, _ := goListener(t, srvTr, notifyTopic, listenQueue, nil)

	cliTr := newTransport(t, r.URL)
	client := cliTr.Client(oslo.Target{Topic: topic})
	notifier := oslo.NewNotifier(cliTr, "interop:restart", notifyTopic)
	caller := startPy(t, "caller.py", "--transport-url", r.URL, "--exchange", exchange, "--topic", topic)
	caller.waitReady(t)

	// Everything works before the restart.
	if res := caller.call(t, ctx, "echo", map[string]any{"value": "before"}, 30); !res.OK || string(res.Result) != `"before"` {
		t.Fatalf("python call before restart: %+v", res)
	}
	var s string
	if err := client.Call(ctx, rctx, "echo", map[string]any{"value": "before"}, &s); err != nil || s != "before" {
		t.Fatalf("go call before restart: %q, %v", s, err)
	}
	if err := notifier.Notify(ctx, notifyCtx, "info", "restart.before", map[string]any{"n": 1}); err != nil {
		t.Fatalf("notify before restart: %v", err)
	}
	if got := collect(t, ctx, notes, 1); got[0].EventType != "restart.before" {
		t.Fatalf("listener before restart got %+v", got[0])
	}

	// A call in flight when the broker goes away fails with a connection
	// error well before its own (10 minute) timeout; the test's context
	// only guards against a hang.
	inflight := make(chan error, 1)
	go func() {
		inflight <- client.WithTimeout(10*time.Minute).Call(ctx, rctx, "hold", nil, nil)
	}()
	select {
	case <-held:
	case <-ctx.Done():
		t.Fatal("hold never reached the server")
	}
	r.StopApp(t)
	select {
	case err := <-inflight:
		if !errors.Is(err, oslo.ErrConnection) {
			t.Errorf("in-flight call when the broker stopped: got %v, want an error wrapping ErrConnection", err)
		} else {
			t.Logf("in-flight call failed as expected: %v", err)
		}
	case <-ctx.Done():
		t.Fatal("in-flight call hung after the broker stopped")
	}
	// A new call while the broker is down fails too (it must not hang or
	// succeed); with a 20 s timeout either error is acceptable.
	err := client.WithTimeout(20*time.Second).Call(ctx, rctx, "echo", map[string]any{"value": "down"}, nil)
	if !errors.Is(err, oslo.ErrConnection) && !errors.Is(err, oslo.ErrTimeout) {
		t.Errorf("call while the broker is down: got %v, want ErrConnection or ErrTimeout", err)
	} else {
		t.Logf("call while the broker is down: %v", err)
	}
	close(release)
	r.StartApp(t)

	// The Go server and listener come back by themselves.
	waitConsumedQueue(t, ctx, r, topic)
	waitConsumedQueue(t, ctx, r, topic+".gohost")
	waitConsumedQueue(t, ctx, r, listenQueue)

	// The same Python process is served again. Its first publish after the
	// outage also makes its own client reconnect; allow a retry if that
	// races with its reply queue coming back.
	served := false
	for attempt := 1; attempt <= 3 && !served; attempt++ {
		res := caller.call(t, ctx, "echo", map[string]any{"value": "after"}, 30)
		switch {
		case res.OK && string(res.Result) == `"after"`:
			served = true
		case res.OK:
			t.Fatalf("python call after restart returned %s", res.Result)
		default:
			t.Logf("python call after restart, attempt %d: %+v", attempt, res.Error)
		}
	}
	if !served {
		t.Fatal("python caller not served by the Go server after the broker came back")
	}
	select {
	case <-caller.exited:
		t.Fatal("python caller exited")
	default:
	}

	if err := client.WithTimeout(60*time.Second).Call(ctx, rctx, "echo", map[string]any{"value": "after"}, &s); err != nil || s != "after" {
		t.Errorf("go call after restart: %q, %v", s, err)
	}
	if err := notifier.Notify(ctx, notifyCtx, "info", "restart.after", map[string]any{"n": 2}); err != nil {
		t.Fatalf("notify after restart: %v", err)
	}
	if got := collect(t, ctx, notes, 1); got[0].EventType != "restart.after" {
		t.Errorf("listener after restart got %+v", got[0])
	}
}
