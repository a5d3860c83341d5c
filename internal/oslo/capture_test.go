package oslo

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// capture is one message of testdata/captures (recorded from the real
// Python oslo.messaging on RabbitMQ; each file's "note" says how): the
// exact AMQP body and oslo's own decoding of it.
type capture struct {
	Note        string          `json:"note"`
	BodyRaw     string          `json:"body_raw"`
	OsloMessage json.RawMessage `json:"oslo_message"`
	// BodyDecodedNoEnvelope is set instead of OsloMessage for v1 bodies.
	BodyDecodedNoEnvelope json.RawMessage `json:"body_decoded_no_envelope"`
	FailureDecoded        json.RawMessage `json:"failure_decoded"`
	Call                  *capture        `json:"call"`
	RepliesInOrder        []capture       `json:"replies_in_order"`
	Replies               []capture       `json:"replies"`
}

// wireSample is a body with the inner message oslo decoded from it.
type wireSample struct {
	name    string
	body    []byte
	inner   json.RawMessage // what oslo's deserialize_msg returned
	failure json.RawMessage // failure_decoded, if any
}

func loadCapture(t testing.TB, file string) capture {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "captures", file))
	if err != nil {
		t.Fatal(err)
	}
	var c capture
	if err := json.Unmarshal(b, &c); err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	return c
}

func (c capture) sample(name string) wireSample {
	inner := c.OsloMessage
	if inner == nil {
		inner = c.BodyDecodedNoEnvelope
	}
	return wireSample{name: name, body: []byte(c.BodyRaw), inner: inner, failure: c.FailureDecoded}
}

func requestSamples(t testing.TB) []wireSample {
	t.Helper()
	var out []wireSample
	for _, f := range []string{
		"rpc_call_topic.json",
		"rpc_call_topic_server.json",
		"rpc_cast.json",
		"rpc_fanout_cast.json",
		"rpc_call_with_nova_object_arg.json",
		"interop_raw_client_minimal_call.json",
	} {
		out = append(out, loadCapture(t, f).sample(f))
	}
	hb := loadCapture(t, "rpc_reply_call_monitor_heartbeat.json")
	out = append(out, hb.Call.sample("rpc_reply_call_monitor_heartbeat.json/call"))
	return append(out, pythonSamples(t, "request")...)
}

func replySamples(t testing.TB) []wireSample {
	t.Helper()
	var out []wireSample
	for _, f := range []string{
		"rpc_reply_success.json",
		"rpc_reply_with_dict_result.json",
		"rpc_reply_failure_builtin.json",
		"rpc_reply_failure_nova_exception.json",
		"rpc_reply_failure_no_such_method.json",
		"rpc_reply_failure_unsupported_version.json",
	} {
		out = append(out, loadCapture(t, f).sample(f))
	}
	for i, r := range loadCapture(t, "rpc_reply_call_monitor_heartbeat.json").RepliesInOrder {
		out = append(out, r.sample("rpc_reply_call_monitor_heartbeat.json/"+string(rune('0'+i))))
	}
	for i, r := range loadCapture(t, "interop_raw_server_replies.json").Replies {
		out = append(out, r.sample("interop_raw_server_replies.json/"+string(rune('0'+i))))
	}
	return append(out, pythonSamples(t, "reply")...)
}

func notificationSamples(t testing.TB) []wireSample {
	t.Helper()
	var out []wireSample
	for _, f := range []string{
		"notification_messagingv2_info.json",
		"notification_messagingv2_versioned_topic_info.json",
		"notification_messagingv2_error.json",
		"notification_messaging_v1_no_envelope.json",
		"nova_versioned_notification_service_update.json",
		"nova_legacy_notification.json",
	} {
		out = append(out, loadCapture(t, f).sample(f))
	}
	return append(out, pythonSamples(t, "notification")...)
}

// pythonSamples are testdata/python/samples.json, written by the real
// oslo.messaging serialisers (gen_samples.py).
func pythonSamples(t testing.TB, kind string) []wireSample {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "python", "samples.json"))
	if err != nil {
		t.Fatal(err)
	}
	var all []struct {
		Name  string          `json:"name"`
		Kind  string          `json:"kind"`
		Body  string          `json:"body"`
		Inner json.RawMessage `json:"inner"`
	}
	if err := json.Unmarshal(b, &all); err != nil {
		t.Fatal(err)
	}
	var out []wireSample
	for _, s := range all {
		if s.Kind == kind {
			out = append(out, wireSample{name: "python/" + s.Name, body: []byte(s.Body), inner: s.Inner})
		}
	}
	if len(out) == 0 {
		t.Fatalf("no python samples of kind %s", kind)
	}
	return out
}

// jsonAny decodes JSON keeping numbers exact.
func jsonAny(t testing.TB, b []byte) any {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		t.Fatalf("decode %q: %v", b, err)
	}
	return v
}

// rawJSON compares json.RawMessage by meaning, not by formatting.
var rawJSON = cmp.Options{
	cmp.Transformer("json", func(r json.RawMessage) any {
		if r == nil {
			return nil
		}
		dec := json.NewDecoder(bytes.NewReader(r))
		dec.UseNumber()
		var v any
		if err := dec.Decode(&v); err != nil {
			return "invalid JSON: " + string(r)
		}
		return v
	}),
}

// innerOf unwraps body and decodes it, with the "failure" string (if any)
// decoded too, so that formatting differences do not matter.
func innerOf(t testing.TB, body []byte) map[string]any {
	t.Helper()
	inner, err := Unwrap(body)
	if err != nil {
		t.Fatalf("unwrap: %v", err)
	}
	m, ok := jsonAny(t, inner).(map[string]any)
	if !ok {
		t.Fatalf("inner message is not an object: %s", inner)
	}
	return expandFailure(t, m)
}

func expandFailure(t testing.TB, m map[string]any) map[string]any {
	t.Helper()
	if s, ok := m["failure"].(string); ok {
		m["failure"] = jsonAny(t, []byte(s))
	}
	return m
}
