package novanotify_test

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/trustpool/trustpool/internal/novanotify"
	"github.com/trustpool/trustpool/internal/oslo"
)

// captured is the AMQP body of a real instance.create.end: Nova 26's
// compute manager, through oslo.messaging's messagingv2 driver, captured
// from RabbitMQ by tests/integration's TestNovaLaunch
// (TRUSTPOOL_UPDATE_TESTDATA=1 rewrites it).
func captured(t testing.TB) *oslo.Notification {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "instance_create_end.json"))
	if err != nil {
		t.Fatal(err)
	}
	n, err := oslo.DecodeNotification(b)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func TestParseCaptured(t *testing.T) {
	n := captured(t)
	if n.EventType != novanotify.EventCreateEnd || !strings.HasPrefix(n.PublisherID, "nova-compute:") {
		t.Fatalf("captured %s from %s", n.EventType, n.PublisherID)
	}
	ev, err := novanotify.ParseCreateEnd(n.Payload)
	if err != nil {
		t.Fatal(err)
	}
	want := &novanotify.InstanceEvent{InstanceID: "1ab97906-da32-43a2-b6ce-951cabe5e46d", ProjectID: "f35e7ea22e954115883e3adeedc8e724",
		Host: "host1", LaunchID: "31ae440a-bfb1-4d3a-86a4-6be96038dd99", State: "active"}
	if diff := cmp.Diff(want, ev); diff != "" {
		t.Errorf("parsed (-want +got):\n%s", diff)
	}
}

// TestParseRejects: payloads that are not a usable InstanceCreatePayload
// are refused with ErrPayload; a payload without the launch metadata parses
// with an empty LaunchID.
func TestParseRejects(t *testing.T) {
	n := captured(t)
	var obj map[string]any
	if err := json.Unmarshal(n.Payload, &obj); err != nil {
		t.Fatal(err)
	}
	mod := func(f func(o, d map[string]any)) []byte {
		var c map[string]any
		b, _ := json.Marshal(obj)
		_ = json.Unmarshal(b, &c)
		f(c, c["nova_object.data"].(map[string]any))
		out, _ := json.Marshal(c)
		return out
	}
	for _, tc := range []struct {
		name    string
		payload []byte
	}{
		{"other object", mod(func(o, _ map[string]any) { o["nova_object.name"] = "InstanceActionPayload" })},
		{"other namespace", mod(func(o, _ map[string]any) { o["nova_object.namespace"] = "cinder" })},
		{"version 2", mod(func(o, _ map[string]any) { o["nova_object.version"] = "2.0" })},
		{"no uuid", mod(func(_, d map[string]any) { delete(d, "uuid") })},
		{"uuid not a uuid", mod(func(_, d map[string]any) { d["uuid"] = "../../etc" })},
		{"no tenant", mod(func(_, d map[string]any) { d["tenant_id"] = "" })},
		{"no host", mod(func(_, d map[string]any) { d["host"] = nil })},
		{"host with space", mod(func(_, d map[string]any) { d["host"] = "host 1" })},
		{"host a number", mod(func(_, d map[string]any) { d["host"] = 7 })},
		{"metadata not strings", mod(func(_, d map[string]any) { d["metadata"] = map[string]any{"trustpool_launch": 5} })},
		{"launch id not a uuid", mod(func(_, d map[string]any) { d["metadata"] = map[string]any{"trustpool_launch": "L1"} })},
		{"not an object", []byte(`[1, 2]`)},
		{"empty", nil},
		{"huge", []byte(`{"x": "` + strings.Repeat("a", novanotify.MaxPayload) + `"}`)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if ev, err := novanotify.ParseCreateEnd(tc.payload); !errors.Is(err, novanotify.ErrPayload) || ev != nil {
				t.Errorf("ParseCreateEnd = %+v, %v; want ErrPayload", ev, err)
			}
		})
	}
	ev, err := novanotify.ParseCreateEnd(mod(func(_, d map[string]any) { d["metadata"] = map[string]any{"other": "x"} }))
	if err != nil || ev.LaunchID != "" {
		t.Errorf("without trustpool_launch: %+v, %v", ev, err)
	}
}

// FuzzParseCreateEnd: notification payloads come from the bus (anyone with
// broker credentials); the parser never panics and what it accepts is
// well formed.
func FuzzParseCreateEnd(f *testing.F) {
	f.Add([]byte(captured(f).Payload))
	f.Add([]byte(`{"nova_object.name": "InstanceCreatePayload", "nova_object.namespace": "nova", "nova_object.version": "1.1", "nova_object.data": {}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		ev, err := novanotify.ParseCreateEnd(data)
		if err != nil {
			if !errors.Is(err, novanotify.ErrPayload) {
				t.Fatalf("error %v is not ErrPayload", err)
			}
			return
		}
		if ev.InstanceID == "" || ev.ProjectID == "" || ev.Host == "" || strings.ContainsAny(ev.Host, " \t\n") {
			t.Fatalf("accepted %+v", ev)
		}
	})
}
