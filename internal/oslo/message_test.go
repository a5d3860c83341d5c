package oslo

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// The golden tests decode every captured message, check the decoding
// against what oslo itself decoded, re-encode it and check that the result
// means the same as the original (formatting and key order aside).

func TestGoldenRequests(t *testing.T) {
	for _, s := range requestSamples(t) {
		t.Run(s.name, func(t *testing.T) {
			want := expandFailure(t, jsonAny(t, s.inner).(map[string]any))
			if diff := cmp.Diff(want, innerOf(t, s.body)); diff != "" {
				t.Fatalf("Unwrap differs from oslo's decoding (-oslo +ours):\n%s", diff)
			}
			r, err := DecodeRequest(s.body)
			if err != nil {
				t.Fatalf("DecodeRequest: %v", err)
			}
			enc, err := EncodeRequest(r)
			if err != nil {
				t.Fatalf("EncodeRequest: %v", err)
			}
			if _, ok := want["_timeout"]; !ok && r.IsCall {
				want["_timeout"] = nil // Go, like oslo, always sends the key on calls
			}
			if diff := cmp.Diff(want, innerOf(t, enc)); diff != "" {
				t.Errorf("re-encoded message differs (-captured +ours):\n%s", diff)
			}
			r2, err := DecodeRequest(enc)
			if err != nil {
				t.Fatalf("DecodeRequest(re-encoded): %v", err)
			}
			if diff := cmp.Diff(r, r2, rawJSON); diff != "" {
				t.Errorf("decode(encode(r)) != r (-first +second):\n%s", diff)
			}
		})
	}
}

func TestGoldenReplies(t *testing.T) {
	for _, s := range replySamples(t) {
		t.Run(s.name, func(t *testing.T) {
			want := expandFailure(t, jsonAny(t, s.inner).(map[string]any))
			if diff := cmp.Diff(want, innerOf(t, s.body)); diff != "" {
				t.Fatalf("Unwrap differs from oslo's decoding (-oslo +ours):\n%s", diff)
			}
			r, err := DecodeReply(s.body)
			if err != nil {
				t.Fatalf("DecodeReply: %v", err)
			}
			if s.failure != nil {
				if r.Failure == nil {
					t.Fatal("failure not decoded")
				}
				got := jsonAny(t, mustMarshalFailure(t, r.Failure))
				if diff := cmp.Diff(jsonAny(t, s.failure), got); diff != "" {
					t.Errorf("failure differs from failure_decoded (-oslo +ours):\n%s", diff)
				}
			}
			enc, err := EncodeReply(r)
			if err != nil {
				t.Fatalf("EncodeReply: %v", err)
			}
			if _, ok := want["ending"]; !ok {
				want["ending"] = false // a legacy reply without "ending" means false
			}
			if diff := cmp.Diff(want, innerOf(t, enc)); diff != "" {
				t.Errorf("re-encoded message differs (-captured +ours):\n%s", diff)
			}
			r2, err := DecodeReply(enc)
			if err != nil {
				t.Fatalf("DecodeReply(re-encoded): %v", err)
			}
			if diff := cmp.Diff(r, r2, rawJSON); diff != "" {
				t.Errorf("decode(encode(r)) != r (-first +second):\n%s", diff)
			}
		})
	}
}

func TestGoldenNotifications(t *testing.T) {
	for _, s := range notificationSamples(t) {
		t.Run(s.name, func(t *testing.T) {
			want := jsonAny(t, s.inner).(map[string]any)
			if diff := cmp.Diff(want, innerOf(t, s.body)); diff != "" {
				t.Fatalf("Unwrap differs from oslo's decoding (-oslo +ours):\n%s", diff)
			}
			n, err := DecodeNotification(s.body)
			if err != nil {
				t.Fatalf("DecodeNotification: %v", err)
			}
			enc, err := EncodeNotification(n)
			if err != nil {
				t.Fatalf("EncodeNotification: %v", err)
			}
			if !bytes.HasPrefix(enc, []byte(`{"oslo.version": "2.0", "oslo.message": `)) {
				t.Errorf("encoded notification lacks the messagingv2 envelope: %.60s", enc)
			}
			if diff := cmp.Diff(want, innerOf(t, enc)); diff != "" {
				t.Errorf("re-encoded message differs (-captured +ours):\n%s", diff)
			}
			n2, err := DecodeNotification(enc)
			if err != nil {
				t.Fatalf("DecodeNotification(re-encoded): %v", err)
			}
			if diff := cmp.Diff(n, n2, rawJSON); diff != "" {
				t.Errorf("decode(encode(n)) != n (-first +second):\n%s", diff)
			}
		})
	}
}

func mustMarshalFailure(t *testing.T, f *Failure) []byte {
	t.Helper()
	b, err := f.marshal()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func ptr[T any](v T) *T { return &v }

// TestDecodeRequestFields spot-checks decoded fields of the captures.
func TestDecodeRequestFields(t *testing.T) {
	tests := []struct {
		file string
		want Request
	}{
		{"rpc_call_topic.json", Request{
			Method: "echo", Version: "6.0", IsCall: true,
			MsgID: "bd195150f1ac42a8b1e9446ed364872f", ReplyQ: "reply_dbbc66326f5442aba56deebaaeb87ce6",
			UniqueID: "39698093db444a118194a2c32922e89a",
		}},
		{"rpc_cast.json", Request{Method: "note", Version: "6.0", UniqueID: "54238894eba145428cc84ca666a222c7"}},
		{"interop_raw_client_minimal_call.json", Request{
			Method: "echo", Version: "1.1", IsCall: true,
			MsgID: "281753445ef24f16a548cf8f54964bd6", ReplyQ: "goreply_ea725b8e0cc64453a5147d32d8dca439",
			UniqueID: "6b63a5079918498d9f16e427320f59ae",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			r, err := DecodeRequest([]byte(loadCapture(t, tt.file).BodyRaw))
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, *r, rawJSON, cmp.FilterPath(func(p cmp.Path) bool {
				n := p.Last().String()
				return n == ".Args" || n == ".Context"
			}, cmp.Ignore())); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}

	r, err := DecodeRequest([]byte(loadCapture(t, "rpc_call_topic.json").BodyRaw))
	if err != nil {
		t.Fatal(err)
	}
	if got := string(r.Args["value"]); got != `"hello"` {
		t.Errorf(`Args["value"] = %s, want "hello"`, got)
	}
	for k, want := range map[string]any{
		"user_id":     "5f1c0f1dfd1a4d43a5b51c6f0c2a9e2a",
		"is_admin":    false,
		"auth_token":  "gAAAA-fake-token",
		"request_id":  "req-11111111-2222-3333-4444-555555555555",
		"roles":       []any{"member", "reader"},
		"domain":      nil,
		"remote_addr": nil,
	} {
		got, ok := r.Context[k]
		if k == "remote_addr" { // not a key the capture has
			if ok {
				t.Errorf("Context has unexpected key %q", k)
			}
			continue
		}
		if !ok || !cmp.Equal(got, want) {
			t.Errorf("Context[%q] = %#v (present %v), want %#v", k, got, ok, want)
		}
	}
	if _, ok := r.Context["_msg_id"]; ok {
		t.Error("Context holds _msg_id")
	}
	if r.Timeout != nil {
		t.Errorf("Timeout = %v, want nil (\"_timeout\": null)", *r.Timeout)
	}

	hb := loadCapture(t, "rpc_reply_call_monitor_heartbeat.json")
	r, err = DecodeRequest([]byte(hb.Call.BodyRaw))
	if err != nil {
		t.Fatal(err)
	}
	if r.Timeout == nil || *r.Timeout != 2 {
		t.Errorf("Timeout = %v, want 2", r.Timeout)
	}

	nova := loadCapture(t, "rpc_call_with_nova_object_arg.json")
	r, err = DecodeRequest([]byte(nova.BodyRaw))
	if err != nil {
		t.Fatal(err)
	}
	var flavor struct {
		Name string `json:"nova_object.name"`
		Data struct {
			RxtxFactor json.Number `json:"rxtx_factor"`
		} `json:"nova_object.data"`
	}
	if err := json.Unmarshal(r.Args["flavor"], &flavor); err != nil || flavor.Name != "Flavor" || flavor.Data.RxtxFactor != "1.0" {
		t.Errorf("flavor arg = %+v, %v; want a Flavor with rxtx_factor 1.0 kept as written", flavor, err)
	}
}

func TestDecodeReplyFields(t *testing.T) {
	tests := []struct {
		name string
		body string
		want Reply
	}{
		{"success", loadCapture(t, "rpc_reply_success.json").BodyRaw, Reply{
			Result: json.RawMessage(`{"echo": "hello", "ctx_user": "5f1c0f1dfd1a4d43a5b51c6f0c2a9e2a"}`),
			Ending: true, MsgID: "bd195150f1ac42a8b1e9446ed364872f", UniqueID: "58df86ab19904a9c8e609c52aae60a7d",
		}},
		{"keep-alive", loadCapture(t, "rpc_reply_call_monitor_heartbeat.json").RepliesInOrder[0].BodyRaw, Reply{
			MsgID: "dea5b89d9927421b8f9d3810d6080f78", UniqueID: "a3fe6b35565e407bbf17e28d44b7a66d",
		}},
		{"legacy no ending", loadCapture(t, "interop_raw_server_replies.json").Replies[6].BodyRaw, Reply{
			Result: json.RawMessage(`"x"`), MsgID: "b6923dcb927c4b37a7acd43149ff28a8", UniqueID: "42f894bd1ae541fa9989499496abb31c",
		}},
		{"nova exception", loadCapture(t, "rpc_reply_failure_nova_exception.json").BodyRaw, Reply{
			Ending: true, MsgID: "427eb1a105d842c8af16a7f09640bc6d", UniqueID: "62eb6d0b60434fb7be88e6d04191da7b",
			Failure: &Failure{
				Class: "ComputeHostNotFound", Module: "nova.exception", Message: "Compute host nohost could not be found.",
				Args: []any{"Compute host nohost could not be found."}, Kwargs: map[string]any{"code": json.Number("404"), "host": "nohost"},
			},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := DecodeReply([]byte(tt.body))
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(&tt.want, r, rawJSON, cmp.FilterPath(func(p cmp.Path) bool {
				return p.Last().String() == ".Traceback"
			}, cmp.Ignore())); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

// TestDispatcherFailuresMatchOslo checks NoSuchMethod and UnsupportedVersion
// against what oslo's dispatcher sent (the traceback aside).
func TestDispatcherFailuresMatchOslo(t *testing.T) {
	tests := []struct {
		file string
		got  *Failure
	}{
		{"rpc_reply_failure_no_such_method.json", NoSuchMethod("no_such_method")},
		{"rpc_reply_failure_unsupported_version.json", UnsupportedVersion("7.0", "echo")},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			want := jsonAny(t, loadCapture(t, tt.file).FailureDecoded).(map[string]any)
			got := jsonAny(t, mustMarshalFailure(t, tt.got)).(map[string]any)
			if tb, _ := want["tb"].([]any); len(tb) == 0 {
				t.Fatal("capture has no traceback")
			} else if gtb, _ := got["tb"].([]any); len(gtb) != 1 || gtb[0] != tb[len(tb)-1] {
				t.Errorf("tb = %v, want oslo's last line %q", got["tb"], tb[len(tb)-1])
			}
			delete(want, "tb")
			delete(got, "tb")
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("(-oslo +ours):\n%s", diff)
			}
		})
	}
	// interop_results.json: oslo's answer to a 1.4 call on a 1.3 endpoint.
	if got, want := UnsupportedVersion("1.4", "echo").Message, "Endpoint does not support RPC version 1.4. Attempted method: echo"; got != want {
		t.Errorf("message = %q, want %q", got, want)
	}
	if got, want := UnsupportedVersion("2.0", "").Message, "Endpoint does not support RPC version 2.0"; got != want {
		t.Errorf("without method: %q, want %q", got, want)
	}
}

func TestEnvelope(t *testing.T) {
	inner := `{"method": "x", "args": {}}`
	wrapped, err := Wrap([]byte(inner))
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"oslo.version": "2.0", "oslo.message": "{\"method\": \"x\", \"args\": {}}"}`; string(wrapped) != want {
		t.Errorf("Wrap = %s, want %s", wrapped, want)
	}
	tests := []struct {
		name    string
		body    string
		want    string // inner message
		wantErr error
	}{
		{"v2", string(wrapped), inner, nil},
		{"v2 other key order, spacing", "{ \"oslo.message\" : \"{}\" ,\n\"oslo.version\":\"2.0\" }", `{}`, nil},
		{"v2 with patch", `{"oslo.version": "2.0.0", "oslo.message": "{}"}`, `{}`, nil},
		{"v2 extra keys ignored", `{"oslo.version": "2.0", "oslo.message": "{}", "x": 1}`, `{}`, nil},
		{"v1 bare object", `{"method": "echo", "_msg_id": "1"}`, `{"method": "echo", "_msg_id": "1"}`, nil},
		{"v1 with only one envelope key", `{"oslo.message": "{}"}`, `{"oslo.message": "{}"}`, nil},
		{"envelope 3.0", `{"oslo.version": "3.0", "oslo.message": "{}"}`, "", ErrUnsupportedEnvelopeVersion},
		{"envelope 2.1", `{"oslo.version": "2.1", "oslo.message": "{}"}`, "", ErrUnsupportedEnvelopeVersion},
		{"envelope 2.0.1", `{"oslo.version": "2.0.1", "oslo.message": "{}"}`, "", ErrUnsupportedEnvelopeVersion},
		{"envelope 1.0", `{"oslo.version": "1.0", "oslo.message": "{}"}`, "", ErrUnsupportedEnvelopeVersion},
		{"envelope 2", `{"oslo.version": "2", "oslo.message": "{}"}`, "", ErrUnsupportedEnvelopeVersion},
		{"envelope number", `{"oslo.version": 2.0, "oslo.message": "{}"}`, "", ErrUnsupportedEnvelopeVersion},
		{"envelope null version", `{"oslo.version": null, "oslo.message": "{}"}`, "", ErrUnsupportedEnvelopeVersion},
		{"message not a string", `{"oslo.version": "2.0", "oslo.message": {}}`, "", ErrMalformedMessage},
		{"message not JSON", `{"oslo.version": "2.0", "oslo.message": "nope"}`, "", ErrMalformedMessage},
		{"message a JSON list", `{"oslo.version": "2.0", "oslo.message": "[1]"}`, "", ErrMalformedMessage},
		{"list body", `[1, 2]`, "", ErrMalformedMessage},
		{"string body", `"x"`, "", ErrMalformedMessage},
		{"empty body", ``, "", ErrMalformedMessage},
		{"truncated", `{"oslo.version": "2.0"`, "", ErrMalformedMessage},
		{"trailing garbage", `{} {}`, "", ErrMalformedMessage},
		{"invalid UTF-8", "{\"a\": \"\xff\"}", "", ErrMalformedMessage},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Unwrap([]byte(tt.body))
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("Unwrap error = %v, want %v", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tt.want {
				t.Errorf("Unwrap = %s, want %s", got, tt.want)
			}
		})
	}
	for _, bad := range []string{``, `[]`, `"x"`, `{`, "{\"a\": \"\xff\"}"} {
		if _, err := Wrap([]byte(bad)); !errors.Is(err, ErrMalformedMessage) {
			t.Errorf("Wrap(%q) error = %v, want ErrMalformedMessage", bad, err)
		}
	}
}

// TestNonASCIIRoundTrip: text outside ASCII, HTML characters, exact
// numbers and nesting survive encode/decode, and Go writes them without
// escaping HTML characters.
func TestNonASCIIRoundTrip(t *testing.T) {
	text := "héllo wörld ✓ 日本語 😀 <b>&amp;</b> \u2028 \"quoted\" back\\slash \x01"
	args := map[string]json.RawMessage{}
	for k, v := range map[string]any{
		"text":   text,
		"big":    json.Number("12345678901234567890123"),
		"float":  json.Number("3.25"),
		"nested": map[string]any{"l": []any{json.Number("1"), "two", nil, true}},
	} {
		b, err := marshalJSONNoEscape(v)
		if err != nil {
			t.Fatal(err)
		}
		args[k] = b
	}
	req := &Request{
		Method: "echo", Args: args, Version: "1.0", Namespace: "ns",
		IsCall: true, MsgID: NewUniqueID(), ReplyQ: "reply_" + NewUniqueID(), UniqueID: NewUniqueID(),
		Timeout: ptr(2.5),
		Context: map[string]any{"user_name": "jörg", "quota": json.Number("100000000000000000000"), "roles": []any{"rôle"}},
	}
	body, err := EncodeRequest(req)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(body, []byte("<b>&amp;</b>")) || !bytes.Contains(body, []byte("日本語")) {
		t.Errorf("body escapes HTML or non-ASCII characters: %s", body)
	}
	got, err := DecodeRequest(body)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(req, got, rawJSON); diff != "" {
		t.Errorf("(-sent +decoded):\n%s", diff)
	}
	var s string
	if err := json.Unmarshal(got.Args["text"], &s); err != nil || s != text {
		t.Errorf("text = %q, %v; want %q", s, err, text)
	}

	// The Python sample carries the same kind of text as \uXXXX escapes.
	for _, ps := range pythonSamples(t, "request") {
		r, err := DecodeRequest(ps.body)
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(r.Args["text"], &s); err != nil || !strings.HasPrefix(s, "héllo wörld ✓ 日本語 😀 <b>&amp;</b>") {
			t.Errorf("python text = %q, %v", s, err)
		}
		if got := r.Args["big"]; string(got) != "12345678901234567890123" {
			t.Errorf("python big = %s", got)
		}
		if got := r.Context["quota"]; got != json.Number("100000000000000000000") {
			t.Errorf("python context quota = %#v", got)
		}
	}
}

func TestEncodeRequest(t *testing.T) {
	call := &Request{Method: "m", IsCall: true, MsgID: "id", ReplyQ: "q", UniqueID: "u"}
	body, err := EncodeRequest(call)
	if err != nil {
		t.Fatal(err)
	}
	inner, _ := Unwrap(body)
	if want := `{"method": "m", "args": {}, "_msg_id": "id", "_reply_q": "q", "_timeout": null, "_unique_id": "u"}`; string(inner) != want {
		t.Errorf("call = %s\nwant   %s", inner, want)
	}
	cast := &Request{Method: "m", Version: "6.0", Namespace: "compute_task", UniqueID: "u", Context: map[string]any{"b": 1, "a": "x"}}
	body, err = EncodeRequest(cast)
	if err != nil {
		t.Fatal(err)
	}
	inner, _ = Unwrap(body)
	if want := `{"method": "m", "args": {}, "version": "6.0", "namespace": "compute_task", "_unique_id": "u", "_context_a": "x", "_context_b": 1}`; string(inner) != want {
		t.Errorf("cast = %s\nwant   %s", inner, want)
	}

	for name, r := range map[string]*Request{
		"no method":           {IsCall: true, MsgID: "id", ReplyQ: "q"},
		"call without msg id": {Method: "m", IsCall: true, ReplyQ: "q"},
		"call without queue":  {Method: "m", IsCall: true, MsgID: "id"},
		"cast with msg id":    {Method: "m", MsgID: "id"},
		"cast with timeout":   {Method: "m", Timeout: ptr(1.0)},
		"invalid arg JSON":    {Method: "m", Args: map[string]json.RawMessage{"a": json.RawMessage(`{`)}},
		"unencodable context": {Method: "m", Context: map[string]any{"f": func() {}}},
	} {
		if _, err := EncodeRequest(r); err == nil {
			t.Errorf("%s: EncodeRequest succeeded", name)
		}
	}
}

func TestDecodeRequestErrors(t *testing.T) {
	wrap := func(inner string) string {
		b, err := Wrap([]byte(inner))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	tests := map[string]string{
		"no method":            `{"args": {}}`,
		"empty method":         `{"method": ""}`,
		"method not string":    `{"method": 1}`,
		"args list":            `{"method": "m", "args": [1]}`,
		"args string":          `{"method": "m", "args": "x"}`,
		"version number":       `{"method": "m", "version": 6.0}`,
		"namespace number":     `{"method": "m", "namespace": 1}`,
		"msg id number":        `{"method": "m", "_msg_id": 1, "_reply_q": "q"}`,
		"call without reply q": `{"method": "m", "_msg_id": "1"}`,
		"timeout string":       `{"method": "m", "_msg_id": "1", "_reply_q": "q", "_timeout": "2"}`,
		"unique id number":     `{"method": "m", "_unique_id": 1}`,
	}
	for name, inner := range tests {
		t.Run(name, func(t *testing.T) {
			for _, body := range []string{inner, wrap(inner)} {
				if _, err := DecodeRequest([]byte(body)); !errors.Is(err, ErrMalformedMessage) {
					t.Errorf("DecodeRequest(%s) error = %v, want ErrMalformedMessage", body, err)
				}
			}
		})
	}
	// Accepted oddities: null args/version/namespace, no _unique_id, empty
	// _msg_id (a cast to oslo), unknown keys.
	r, err := DecodeRequest([]byte(`{"method": "m", "args": null, "version": null, "namespace": null, "_msg_id": "", "x": 1}`))
	if err != nil {
		t.Fatal(err)
	}
	if r.IsCall || r.Version != "" || r.EffectiveVersion() != "1.0" || len(r.Args) != 0 || r.Args == nil {
		t.Errorf("got %+v", r)
	}
}

func TestEncodeReply(t *testing.T) {
	tests := []struct {
		name string
		r    Reply
		want string
	}{
		{"result", Reply{Result: json.RawMessage(`{"a": [1, 2]}`), Ending: true, MsgID: "m", UniqueID: "u"},
			`{"result": {"a":[1,2]}, "failure": null, "ending": true, "_msg_id": "m", "_unique_id": "u"}`},
		{"keep-alive", Reply{MsgID: "m", UniqueID: "u"},
			`{"result": null, "failure": null, "ending": false, "_msg_id": "m", "_unique_id": "u"}`},
		{"failure", Reply{Failure: &NewValueError("bad <value>").Failure, Ending: true, MsgID: "m", UniqueID: "u"},
			`{"result": null, "failure": "{\"class\":\"ValueError\",\"module\":\"builtins\",\"message\":\"bad <value>\",\"tb\":[\"ValueError: bad <value>\\n\"],\"args\":[\"bad <value>\"],\"kwargs\":{}}", "ending": true, "_msg_id": "m", "_unique_id": "u"}`},
		{"failure with empty fields, _Remote stripped", Reply{Failure: &Failure{Class: "X_Remote", Module: "m_Remote"}, Result: json.RawMessage("null"), Ending: true, MsgID: "m"},
			`{"result": null, "failure": "{\"class\":\"X\",\"module\":\"m\",\"message\":\"\",\"tb\":[],\"args\":[],\"kwargs\":{}}", "ending": true, "_msg_id": "m"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			body, err := EncodeReply(&tt.r)
			if err != nil {
				t.Fatal(err)
			}
			inner, err := Unwrap(body)
			if err != nil {
				t.Fatal(err)
			}
			if string(inner) != tt.want {
				t.Errorf("got  %s\nwant %s", inner, tt.want)
			}
		})
	}
	for name, r := range map[string]*Reply{
		"no msg id":             {Ending: true},
		"result and failure":    {MsgID: "m", Result: json.RawMessage(`1`), Failure: &Failure{Class: "X"}},
		"invalid result JSON":   {MsgID: "m", Result: json.RawMessage(`{`)},
		"unencodable failure":   {MsgID: "m", Failure: &Failure{Args: []any{func() {}}}},
		"unencodable kwarg NaN": {MsgID: "m", Failure: &Failure{Kwargs: map[string]any{"x": nan()}}},
	} {
		if _, err := EncodeReply(r); err == nil {
			t.Errorf("%s: EncodeReply succeeded", name)
		}
	}
}

func nan() float64 { z := 0.0; return z / z }

func TestDecodeReplyErrorsAndLeniency(t *testing.T) {
	for name, inner := range map[string]string{
		"no msg id":          `{"result": 1, "failure": null, "ending": true}`,
		"msg id number":      `{"_msg_id": 1, "failure": null}`,
		"ending string":      `{"_msg_id": "m", "ending": "yes"}`,
		"failure object":     `{"_msg_id": "m", "failure": {"class": "X"}}`,
		"unique id not text": `{"_msg_id": "m", "_unique_id": []}`,
	} {
		if _, err := DecodeReply([]byte(inner)); !errors.Is(err, ErrMalformedMessage) {
			t.Errorf("%s: error = %v, want ErrMalformedMessage", name, err)
		}
	}
	// A garbled failure string still fails the call, carrying the text.
	r, err := DecodeReply([]byte(`{"_msg_id": "m", "failure": "Traceback: boom", "ending": true}`))
	if err != nil {
		t.Fatal(err)
	}
	if r.Failure == nil || r.Failure.Message != "Traceback: boom" {
		t.Errorf("Failure = %+v, want the raw text as message", r.Failure)
	}
	// Missing "failure" and "result" keys are tolerated on receipt.
	r, err = DecodeReply([]byte(`{"_msg_id": "m", "ending": true}`))
	if err != nil || r.Failure != nil || r.Result != nil || !r.Ending {
		t.Errorf("got %+v, %v", r, err)
	}
}

func TestNotificationPriorities(t *testing.T) {
	for in, want := range map[string]string{
		"info": "INFO", "INFO": "INFO", "Warn": "WARN", "warning": "WARN", "audit": "AUDIT",
		"debug": "DEBUG", "error": "ERROR", "critical": "CRITICAL", "sample": "SAMPLE",
	} {
		got, err := NormalizePriority(in)
		if err != nil || got != want {
			t.Errorf("NormalizePriority(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "fatal", "inf0"} {
		if _, err := NormalizePriority(bad); !errors.Is(err, ErrUnknownPriority) {
			t.Errorf("NormalizePriority(%q) error = %v", bad, err)
		}
	}
	n := &Notification{MessageID: NewMessageID(), PublisherID: "trustpool:h", EventType: "e", Priority: "warning", Timestamp: "t"}
	body, err := EncodeNotification(n)
	if err != nil {
		t.Fatal(err)
	}
	got, err := DecodeNotification(body)
	if err != nil {
		t.Fatal(err)
	}
	if got.Priority != "WARN" || got.Payload != nil {
		t.Errorf("decoded %+v", got)
	}
	for name, body := range map[string]string{
		"unknown priority":      `{"message_id": "m", "event_type": "e", "priority": "WARNING"}`,
		"no priority":           `{"message_id": "m", "event_type": "e"}`,
		"priority not a string": `{"message_id": "m", "event_type": "e", "priority": 1}`,
		"event_type number":     `{"message_id": "m", "event_type": 1, "priority": "INFO"}`,
		"list":                  `[]`,
	} {
		if _, err := DecodeNotification([]byte(body)); !errors.Is(err, ErrMalformedMessage) {
			t.Errorf("%s: error = %v, want ErrMalformedMessage", name, err)
		}
	}
	for name, n := range map[string]*Notification{
		"bad priority":  {MessageID: "m", EventType: "e", Priority: "loud"},
		"no event type": {MessageID: "m", Priority: "info"},
		"no message id": {EventType: "e", Priority: "info"},
		"bad payload":   {MessageID: "m", EventType: "e", Priority: "info", Payload: json.RawMessage("{")},
	} {
		if _, err := EncodeNotification(n); err == nil {
			t.Errorf("%s: EncodeNotification succeeded", name)
		}
	}
}
