package interop

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/trustpool/trustpool/internal/oslo"
	"github.com/trustpool/trustpool/internal/servicetest"
)

// sentNotification is one notification of the matrix.
type sentNotification struct {
	Priority  string          `json:"priority"`
	EventType string          `json:"event_type"`
	Payload   json.RawMessage `json:"payload"`
}

var notifications = []sentNotification{
	{"info", "trustpool.host.trusted", json.RawMessage(`{"host": "höst-1", "profiles": ["a", "b"], "seq": 12345678901234567890, "score": 0.5}`)},
	{"error", "trustpool.host.untrusted", json.RawMessage(`{"host": "host-2", "reasons": ["pcr 7 mismatch"], "nested": {"x": [null, true, 2.0]}}`)},
	{"warn", "trustpool.warn", json.RawMessage(`"just a string ✓"`)},
	{"audit", "trustpool.audit", json.RawMessage(`[1, 2, 3]`)},
	{"critical", "trustpool.critical", json.RawMessage(`null`)},
	{"debug", "trustpool.debug", json.RawMessage(`{}`)},
	{"sample", "trustpool.sample", json.RawMessage(`{"big": "` + strings.Repeat("y", 256<<10) + `"}`)},
}

// receivedNotification is what a listener saw (py/listener.py prints these
// keys; the Go listener's notifications are converted to it).
type receivedNotification struct {
	Priority    string          `json:"priority"`
	PublisherID string          `json:"publisher_id"`
	EventType   string          `json:"event_type"`
	Payload     json.RawMessage `json:"payload"`
	Metadata    struct {
		MessageID string `json:"message_id"`
		Timestamp string `json:"timestamp"`
	} `json:"metadata"`
	Ctxt map[string]any `json:"ctxt"`
}

var (
	messageIDRe = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)
	timestampRe = regexp.MustCompile(`^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6}$`)
)

// checkReceived compares received notifications with the matrix, in order
// (one publisher, one queue, one consumer: order is kept).
func checkReceived(t *testing.T, publisherID string, got []receivedNotification) {
	t.Helper()
	if len(got) != len(notifications) {
		t.Fatalf("received %d notifications, want %d: %+v", len(got), len(notifications), got)
	}
	for i, want := range notifications {
		g := got[i]
		type head struct{ Priority, PublisherID, EventType string }
		if diff := cmp.Diff(head{want.Priority, publisherID, want.EventType}, head{g.Priority, g.PublisherID, g.EventType}); diff != "" {
			t.Errorf("notification %d (-want +got):\n%s", i, diff)
		}
		if diff := jsonDiff(want.Payload, g.Payload); diff != "" {
			t.Errorf("notification %d payload (-sent +received):\n%s", i, diff)
		}
		if !messageIDRe.MatchString(g.Metadata.MessageID) {
			t.Errorf("notification %d message_id %q is not a dashed uuid4", i, g.Metadata.MessageID)
		}
		if !timestampRe.MatchString(g.Metadata.Timestamp) {
			t.Errorf("notification %d timestamp %q is not Python's str(datetime)", i, g.Metadata.Timestamp)
		}
		if g.Ctxt["user_id"] != "interop-user" {
			t.Errorf("notification %d context user_id = %v, want interop-user (context %v)", i, g.Ctxt["user_id"], g.Ctxt)
		}
		if tok, ok := g.Ctxt["auth_token"]; ok && tok != nil {
			t.Errorf("notification %d carries the auth token %v; oslo sanitises it", i, tok)
		}
	}
}

var notifyCtx = map[string]any{"user_id": "interop-user", "project_id": "interop-project", "auth_token": "secret-token"}

// TestGoNotifierPythonListener: notifications sent by the Go notifier
// arrive in a Python oslo listener with payload, event type, priority and
// publisher id preserved.
func TestGoNotifierPythonListener(t *testing.T) {
	skipShort(t)
	r := servicetest.RabbitMQ(t)
	const topic = "interop_notifications"
	lis := startPy(t, "listener.py", "--transport-url", r.URL, "--exchange", exchange,
		"--topic", topic, "--pool", "py-listener-pool", "--count", fmt.Sprint(len(notifications)))
	lis.waitReady(t)

	tr := newTransport(t, r.URL)
	ctx, cancel := context.WithTimeout(context.Background(), runTimeout)
	defer cancel()
	n := oslo.NewNotifier(tr, "trustpool-attestation:ctl1", topic)
	for _, s := range notifications {
		if err := n.Notify(ctx, notifyCtx, s.Priority, s.EventType, s.Payload); err != nil {
			t.Fatalf("notify %s: %v", s.EventType, err)
		}
	}
	var got []receivedNotification
	for range notifications {
		var g receivedNotification
		lis.nextJSON(t, ctx, &g)
		got = append(got, g)
	}
	checkReceived(t, "trustpool-attestation:ctl1", got)
	lis.wait(t, ctx) // it exits by itself after --count notifications
}

// goListener runs a Go listener on its own queue and forwards what the
// handler accepted. fail decides, per delivery attempt, whether the
// handler returns an error (the notification must come back).
func goListener(t *testing.T, tr *oslo.Transport, topic, queue string, fail func(n *oslo.Notification, attempt int) error) (<-chan receivedNotification, *attempts) {
	t.Helper()
	out := make(chan receivedNotification, 1024)
	att := &attempts{m: map[string]int{}}
	l := oslo.NewListener(tr, oslo.ListenerConfig{Topic: topic, Queue: queue}, func(ctx context.Context, n *oslo.Notification) error {
		k := att.inc(n.MessageID)
		if fail != nil {
			if err := fail(n, k); err != nil {
				return err
			}
		}
		var g receivedNotification
		g.Priority, g.PublisherID, g.EventType, g.Payload = n.Priority, n.PublisherID, n.EventType, n.Payload
		if g.Payload == nil {
			g.Payload = json.RawMessage("null") // the decoder's nil means a JSON null
		}
		g.Metadata.MessageID, g.Metadata.Timestamp = n.MessageID, n.Timestamp
		g.Ctxt = n.Context
		out <- g
		return nil
	})
	done := runInBackground(t, "go listener", l.Run)
	select {
	case <-l.Ready():
	case err := <-done:
		t.Fatalf("go listener stopped before it was ready: %v", err)
	case <-time.After(readyTimeout):
		t.Fatalf("go listener not ready after %s", readyTimeout)
	}
	return out, att
}

// attempts counts handler invocations per message id.
type attempts struct {
	mu sync.Mutex
	m  map[string]int
}

func (a *attempts) inc(id string) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.m[id]++
	return a.m[id]
}

func (a *attempts) snapshot() map[string]int {
	a.mu.Lock()
	defer a.mu.Unlock()
	c := make(map[string]int, len(a.m))
	for k, v := range a.m {
		c[k] = v
	}
	return c
}

func collect(t *testing.T, ctx context.Context, ch <-chan receivedNotification, n int) []receivedNotification {
	t.Helper()
	var got []receivedNotification
	for len(got) < n {
		select {
		case g := <-ch:
			got = append(got, g)
		case <-ctx.Done():
			t.Fatalf("received %d of %d notifications: %v", len(got), n, ctx.Err())
		}
	}
	return got
}

func pyNotify(t *testing.T, url, topic, publisherID string) {
	t.Helper()
	items, err := json.Marshal(notifications)
	if err != nil {
		t.Fatal(err)
	}
	c, err := json.Marshal(notifyCtx)
	if err != nil {
		t.Fatal(err)
	}
	runPyInput(t, items, "notifier.py", "--transport-url", url, "--exchange", exchange, "--topic", topic,
		"--publisher-id", publisherID, "--context", string(c), "--notifications", "-")
}

// normalizePriority lower-cases Go-listener priorities (the decoder
// returns them upper case, as oslo writes them) to compare with the matrix.
func normalizePriority(got []receivedNotification) {
	for i := range got {
		got[i].Priority = strings.ToLower(got[i].Priority)
	}
}

// TestPythonNotifierGoListener: notifications sent by Python's messagingv2
// notifier arrive in the Go listener intact.
func TestPythonNotifierGoListener(t *testing.T) {
	skipShort(t)
	r := servicetest.RabbitMQ(t)
	const topic = "interop_notifications"
	tr := newTransport(t, r.URL)
	ch, _ := goListener(t, tr, topic, "go-listener-pool", nil)
	pyNotify(t, r.URL, topic, "nova-compute:host1")
	ctx, cancel := context.WithTimeout(context.Background(), runTimeout)
	defer cancel()
	got := collect(t, ctx, ch, len(notifications))
	normalizePriority(got)
	checkReceived(t, "nova-compute:host1", got)
}

// TestGoListenerRequeuesOnHandlerError: the Go listener acknowledges only
// after its handler succeeds, so a failing handler gets every notification
// again and none is lost.
func TestGoListenerRequeuesOnHandlerError(t *testing.T) {
	skipShort(t)
	r := servicetest.RabbitMQ(t)
	const topic = "interop_requeue"
	tr := newTransport(t, r.URL)
	errTransient := errors.New("transient handler failure")
	ch, att := goListener(t, tr, topic, "go-requeue-pool", func(n *oslo.Notification, attempt int) error {
		if attempt <= 2 {
			return errTransient
		}
		return nil
	})
	pyNotify(t, r.URL, topic, "nova-compute:host1")
	ctx, cancel := context.WithTimeout(context.Background(), runTimeout)
	defer cancel()
	got := collect(t, ctx, ch, len(notifications))
	// Order may change with requeueing; compare by event type.
	byType := map[string]receivedNotification{}
	for _, g := range got {
		byType[g.EventType] = g
	}
	ordered := make([]receivedNotification, 0, len(notifications))
	for _, s := range notifications {
		ordered = append(ordered, byType[s.EventType])
	}
	normalizePriority(ordered)
	checkReceived(t, "nova-compute:host1", ordered)
	for id, n := range att.snapshot() {
		if n != 3 {
			t.Errorf("notification %s handled %d times, want 3 (two failures, one success)", id, n)
		}
	}
}

// TestGoListenerStopMidHandlerLosesNothing: a listener stopped while its
// handler runs has not acknowledged the notification; the next listener on
// the same queue receives it.
func TestGoListenerStopMidHandlerLosesNothing(t *testing.T) {
	skipShort(t)
	r := servicetest.RabbitMQ(t)
	const topic, queue = "interop_stop", "go-stop-pool"
	tr := newTransport(t, r.URL)
	ctx, cancel := context.WithTimeout(context.Background(), runTimeout)
	defer cancel()

	entered := make(chan string, 16)
	lctx, stop := context.WithCancel(ctx)
	l := oslo.NewListener(tr, oslo.ListenerConfig{Topic: topic, Queue: queue}, func(hctx context.Context, n *oslo.Notification) error {
		entered <- n.EventType
		<-hctx.Done() // never finishes on its own
		return hctx.Err()
	})
	done := make(chan error, 1)
	go func() { done <- l.Run(lctx) }()
	select {
	case <-l.Ready():
	case <-ctx.Done():
		t.Fatal("first listener not ready")
	}
	n := oslo.NewNotifier(tr, "interop", topic)
	if err := n.Notify(ctx, notifyCtx, "info", "stop.me", json.RawMessage(`{"k": "v"}`)); err != nil {
		t.Fatalf("notify: %v", err)
	}
	select {
	case et := <-entered:
		if et != "stop.me" {
			t.Fatalf("handler got %q", et)
		}
	case <-ctx.Done():
		t.Fatal("first listener never got the notification")
	}
	stop()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("first listener Run: %v", err)
		}
	case <-ctx.Done():
		t.Fatal("first listener did not stop")
	}

	ch, _ := goListener(t, tr, topic, queue, nil)
	got := collect(t, ctx, ch, 1)
	if got[0].EventType != "stop.me" || jsonDiff([]byte(`{"k": "v"}`), got[0].Payload) != "" {
		t.Errorf("second listener got %+v, want the stop.me notification", got[0])
	}
}
