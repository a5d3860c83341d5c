package oslo

import (
	"bytes"
	"encoding/json"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/trustpool/trustpool/internal/servicetest"
)

// TestPythonAgrees feeds bodies written by the Go encoders to the installed
// Zed oslo.messaging (deserialize_msg, unpack_context,
// deserialize_remote_exception) and checks that Python reads the same
// message, raises the right exception classes, and agrees with
// VersionCompatible on every case of versionCases.
func TestPythonAgrees(t *testing.T) {
	py := servicetest.Python(t)

	text := "héllo ✓ 日本語 😀 <b>&amp;</b> \u2028 \"q\" \\"
	args := map[string]json.RawMessage{
		"text":   mustJSON(t, text),
		"big":    json.RawMessage(`12345678901234567890123`),
		"float":  json.RawMessage(`0.1`),
		"nested": json.RawMessage(`{"l": [1, "two", null, true, {"x": []}]}`),
	}
	ctx := map[string]any{"user_id": "jörg", "roles": []any{"member"}, "is_admin": false, "request_id": "req-1"}
	type msg struct {
		kind string
		body []byte
		// For replies with failures: the exception Python must raise.
		exception map[string]any
	}
	var msgs []msg
	add := func(kind string, body []byte, err error, exception map[string]any) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		msgs = append(msgs, msg{kind, body, exception})
	}
	b, err := EncodeRequest(&Request{Method: "echo", Args: args, Version: "1.1", Namespace: "trustpool",
		IsCall: true, MsgID: NewUniqueID(), ReplyQ: "reply_" + NewUniqueID(), UniqueID: NewUniqueID(), Timeout: ptr(30.0), Context: ctx})
	add("request", b, err, nil)
	b, err = EncodeRequest(&Request{Method: "note", UniqueID: NewUniqueID(), Context: ctx})
	add("request", b, err, nil)
	b, err = EncodeReply(&Reply{Result: mustJSON(t, map[string]any{"text": text}), Ending: true, MsgID: NewUniqueID(), UniqueID: NewUniqueID()})
	add("reply", b, err, nil)
	b, err = EncodeReply(&Reply{Ending: false, MsgID: NewUniqueID(), UniqueID: NewUniqueID()})
	add("reply", b, err, nil)
	b, err = EncodeReply(&Reply{Failure: &NewValueError("mauvaise valeur é").Failure, Ending: true, MsgID: NewUniqueID()})
	add("reply", b, err, map[string]any{"type": "builtins.ValueError", "str_first_line": "mauvaise valeur é", "is_value_error": true, "kwargs": nil})
	nova := NewRemoteError("nova.exception", "ComputeHostNotFound", "Compute host gohost1 could not be found.", map[string]any{"host": "gohost1", "code": 404})
	b, err = EncodeReply(&Reply{Failure: &nova.Failure, Ending: true, MsgID: NewUniqueID()})
	add("reply", b, err, map[string]any{"type": "nova.exception_Remote.ComputeHostNotFound_Remote",
		"str_first_line": "Compute host gohost1 could not be found.", "is_value_error": false,
		"kwargs": map[string]any{"host": "gohost1", "code": json.Number("404")}})
	b, err = EncodeReply(&Reply{Failure: FailureFromError(classedError{}), Ending: true, MsgID: NewUniqueID()})
	add("reply", b, err, map[string]any{"type": "oslo_messaging.rpc.client.RemoteError",
		"str_first_line": "Remote error: QuotaError quota exceeded", "is_value_error": false, "kwargs": nil})
	b, err = EncodeReply(&Reply{Failure: NoSuchMethod("nope"), Ending: true, MsgID: NewUniqueID()})
	add("reply", b, err, map[string]any{"type": "oslo_messaging.rpc.client.RemoteError",
		"str_first_line": "Remote error: NoSuchMethod Endpoint does not support RPC method nope", "is_value_error": false, "kwargs": nil})
	b, err = EncodeNotification(&Notification{MessageID: NewMessageID(), PublisherID: "trustpool:hôst", EventType: "trustpool.host.attested",
		Priority: "info", Payload: args["nested"], Timestamp: PythonTimestamp(time.Date(2026, 11, 25, 19, 47, 24, 208091000, time.UTC)), UniqueID: NewUniqueID(), Context: ctx})
	add("notification", b, err, nil)

	input := map[string]any{"messages": []map[string]string{}, "versions": [][2]string{}}
	for _, m := range msgs {
		input["messages"] = append(input["messages"].([]map[string]string), map[string]string{"kind": m.kind, "body": string(m.body)})
	}
	for _, v := range versionCases {
		input["versions"] = append(input["versions"].([][2]string), [2]string{v.endpoint, v.requested})
	}
	cmd := exec.Command(py, filepath.Join("testdata", "python", "check_go_messages.py"))
	cmd.Stdin = bytes.NewReader(mustJSON(t, input))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("python: %v\n%s", err, stderr.String())
	}
	var result struct {
		Messages []struct {
			Inner     json.RawMessage `json:"inner"`
			Context   map[string]any  `json:"context"`
			Remaining []string        `json:"remaining"`
			Exception map[string]any  `json:"exception"`
		} `json:"messages"`
		Versions []bool `json:"versions"`
	}
	dec := json.NewDecoder(bytes.NewReader(out))
	dec.UseNumber()
	if err := dec.Decode(&result); err != nil || len(result.Messages) != len(msgs) || len(result.Versions) != len(versionCases) {
		t.Fatalf("python output %.300s: %v", out, err)
	}
	for i, m := range msgs {
		got := result.Messages[i]
		if diff := cmp.Diff(innerOf(t, m.body), expandFailure(t, jsonAny(t, got.Inner).(map[string]any))); diff != "" {
			t.Errorf("message %d (%s): python reads it differently (-go +python):\n%s", i, m.kind, diff)
		}
		if m.kind == "request" {
			r, err := DecodeRequest(m.body)
			if err != nil {
				t.Fatal(err)
			}
			for k, v := range r.Context {
				if !cmp.Equal(jsonAny(t, mustJSON(t, v)), got.Context[k]) {
					t.Errorf("message %d: python context[%q] = %#v, want %#v", i, k, got.Context[k], v)
				}
			}
			if diff := cmp.Diff([]string{"args", "method"}, filterKnown(got.Remaining)); diff != "" {
				t.Errorf("message %d: keys left after unpack_context (-want +got):\n%s", i, diff)
			}
		}
		if diff := cmp.Diff(m.exception, got.Exception); diff != "" {
			t.Errorf("message %d: python exception (-want +got):\n%s", i, diff)
		}
	}
	for i, v := range versionCases {
		if result.Versions[i] != v.want {
			t.Errorf("oslo version_is_compatible(%q, %q) = %v, but versionCases says %v", v.endpoint, v.requested, result.Versions[i], v.want)
		}
	}
}

// filterKnown drops the optional keys a request may carry besides
// method and args.
func filterKnown(keys []string) []string {
	var out []string
	for _, k := range keys {
		switch k {
		case "version", "namespace", "_unique_id":
			continue
		}
		out = append(out, k)
	}
	return out
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := marshalJSONNoEscape(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
