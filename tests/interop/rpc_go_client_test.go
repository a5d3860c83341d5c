package interop

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/trustpool/trustpool/internal/oslo"
	"github.com/trustpool/trustpool/internal/servicetest"
)

// goValues are the JSON values a Go client sends through echo; each must
// come back semantically identical (integers exact at any size, floats stay
// floats).
var goValues = []struct{ name, json string }{
	{"str_ascii", `"hello"`},
	{"str_empty", `""`},
	{"str_non_ascii", `"Grüße, Σωκράτης, 世界, emoji 🌍🚀, quote \" backslash \\"`},
	{"str_escaped_surrogates", `"\ud83c\udf0d \u00fc \u2028"`},
	{"str_control", `"tab\tnewline\nreturn\r"`},
	{"str_html", `"<a href=\"x\">&amp;</a>"`},
	{"int_zero", `0`},
	{"int_negative", `-42`},
	{"int_2_53_plus_1", `9007199254740993`},
	{"int_max_int64", `9223372036854775807`},
	{"int_min_int64", `-9223372036854775808`},
	{"int_huge", `123456789012345678901234567890`},
	{"float_pi", `3.141592653589793`},
	{"float_integral", `2.0`},
	{"float_tiny", `1.5e-300`},
	{"float_big", `1.7976931348623157e308`},
	{"float_negative", `-0.5`},
	{"bool_true", `true`},
	{"bool_false", `false`},
	{"null", `null`},
	{"list_empty", `[]`},
	{"dict_empty", `{}`},
	{"list_mixed", `[1, 2.5, "x", null, true, false, [], {}]`},
	{"dict_nested", `{"a": {"b": {"c": [1, [2, [3, {"d": "ü"}]]]}}, "ключ": "значение", "n": null, "f": 0.25}`},
	{"payload_1mib", `"` + strings.Repeat("x", 1<<20) + `"`},
	{"payload_1mib_list", `[` + strings.Repeat(`"ü-0123456789",`, (1<<20)/16) + `"end"]`},
}

// rawArgs builds keyword arguments; json.RawMessage values are sent as
// they are, anything else is marshalled.
func rawArgs(kv ...any) map[string]json.RawMessage {
	m := map[string]json.RawMessage{}
	for i := 0; i+1 < len(kv); i += 2 {
		switch v := kv[i+1].(type) {
		case json.RawMessage:
			m[kv[i].(string)] = v
		default:
			b, err := json.Marshal(v)
			if err != nil {
				panic(err)
			}
			m[kv[i].(string)] = b
		}
	}
	return m
}

var rctx = map[string]any{"user_id": "interop-user", "project_id": "interop-project", "request_id": "req-00000000-0000-4000-8000-000000000002"}

// remoteFailure is what a test checks of a *oslo.RemoteError.
type remoteFailure struct{ Class, Module, Message string }

func asRemote(t *testing.T, err error) *remoteFailure {
	t.Helper()
	re, ok := errors.AsType[*oslo.RemoteError](err)
	if !ok {
		return nil
	}
	return &remoteFailure{Class: re.Class, Module: re.Module, Message: re.Message}
}

// runGoClient runs the Go client matrix against a server serving the
// interop method set at endpoint version 1.3 on topic/server.
func runGoClient(t *testing.T, tr *oslo.Transport, topic, server string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), runTimeout)
	defer cancel()
	client := tr.Client(oslo.Target{Topic: topic, Version: "1.0"}).WithTimeout(30 * time.Second)
	direct := client.WithTarget(func(tg *oslo.Target) { tg.Server = server })

	t.Run("values", func(t *testing.T) {
		for _, v := range goValues {
			for _, c := range []struct {
				via string
				c   *oslo.Client
			}{{"topic", client}, {"direct", direct}} {
				var got json.RawMessage
				if err := c.c.Call(ctx, rctx, "echo", rawArgs("value", json.RawMessage(v.json)), &got); err != nil {
					t.Errorf("echo %s via %s: %v", v.name, c.via, err)
					continue
				}
				if got == nil {
					// A null result leaves the destination untouched.
					got = json.RawMessage("null")
				}
				if diff := jsonDiff([]byte(v.json), got); diff != "" {
					t.Errorf("echo %s via %s (-sent +received):\n%s", v.name, c.via, truncate(diff, 3000))
				}
			}
		}
		// The request context travels as _context_* keys and comes back
		// whole, auth token and request id included.
		want := map[string]any{
			"user_id": "interop-user", "project_id": "interop-project",
			"request_id": "req-00000000-0000-4000-8000-000000000003", "auth_token": "gAAAA-token-ü",
			"roles": []any{"member", "reader"}, "is_admin": false, "quota": map[string]any{"cores": json.Number("1180591620717411303424")},
		}
		var gotCtx json.RawMessage
		if err := client.Call(ctx, want, "context", nil, &gotCtx); err != nil {
			t.Fatalf("context: %v", err)
		}
		wantJSON, err := json.Marshal(want)
		if err != nil {
			t.Fatal(err)
		}
		if diff := jsonDiff(wantJSON, gotCtx); diff != "" {
			t.Errorf("request context (-sent +received by the server):\n%s", diff)
		}

		// Typed Go arguments and results.
		type pair struct {
			A int64   `json:"a"`
			B float64 `json:"b"`
			S []string
		}
		in := pair{A: -1 << 63, B: 0.1, S: []string{"x", "ÿ"}}
		var out pair
		if err := client.Call(ctx, rctx, "echo", map[string]any{"value": in}, &out); err != nil {
			t.Fatalf("echo struct: %v", err)
		}
		if diff := cmp.Diff(in, out); diff != "" {
			t.Errorf("echo struct (-sent +received):\n%s", diff)
		}
	})

	t.Run("failures", func(t *testing.T) {
		for _, c := range []struct {
			name   string
			client *oslo.Client
			method string
			args   map[string]json.RawMessage
			want   remoteFailure
		}{
			{"value", client, "fail", rawArgs("kind", "value", "message", failMsg), remoteFailure{"ValueError", "builtins", failMsg}},
			{"custom", client, "fail", rawArgs("kind", "custom", "message", failMsg), remoteFailure{"InteropError", "trustpool.exception", failMsg}},
			{"plain", client, "fail", rawArgs("kind", "plain", "message", failMsg), remoteFailure{"TrustpoolError", "trustpool.exception", failMsg}},
			{"no_such_method", client, "no_such_method", nil, remoteFailure{"NoSuchMethod", "oslo_messaging.rpc.dispatcher", "Endpoint does not support RPC method no_such_method"}},
			{"private_method", client, "_private", nil, remoteFailure{"NoSuchMethod", "oslo_messaging.rpc.dispatcher", "Endpoint does not support RPC method _private"}},
			{"unsupported_major", client.WithTarget(func(tg *oslo.Target) { tg.Version = "2.0" }), "echo", rawArgs("value", 1),
				remoteFailure{"UnsupportedVersion", "oslo_messaging.rpc.dispatcher", "Endpoint does not support RPC version 2.0. Attempted method: echo"}},
			{"unsupported_minor", client.WithTarget(func(tg *oslo.Target) { tg.Version = "1.99" }), "echo", rawArgs("value", 1),
				remoteFailure{"UnsupportedVersion", "oslo_messaging.rpc.dispatcher", "Endpoint does not support RPC version 1.99. Attempted method: echo"}},
			{"wrong_namespace", client.WithTarget(func(tg *oslo.Target) { tg.Namespace = "no-such-namespace" }), "echo", rawArgs("value", 1),
				remoteFailure{"UnsupportedVersion", "oslo_messaging.rpc.dispatcher", "Endpoint does not support RPC version 1.0. Attempted method: echo"}},
			{"bad_args", client, "echo", rawArgs("valeur", 1), remoteFailure{Class: "TypeError", Module: "builtins"}},
		} {
			err := c.client.Call(ctx, rctx, c.method, c.args, nil)
			got := asRemote(t, err)
			if got == nil {
				t.Errorf("%s: got %v (%T), want *oslo.RemoteError %+v", c.name, err, err, c.want)
				continue
			}
			opts := []cmp.Option{}
			if c.want.Message == "" {
				opts = append(opts, cmpopts.IgnoreFields(remoteFailure{}, "Message"))
			}
			if diff := cmp.Diff(c.want, *got, opts...); diff != "" {
				t.Errorf("%s: remote error (-want +got):\n%s", c.name, diff)
			}
			if errors.Is(err, oslo.ErrTimeout) || errors.Is(err, oslo.ErrConnection) {
				t.Errorf("%s: remote error also matches a transport sentinel: %v", c.name, err)
			}
		}
	})

	t.Run("casts", func(t *testing.T) {
		fanout := client.WithTarget(func(tg *oslo.Target) { tg.Fanout = true })
		want := map[string]json.RawMessage{}
		for _, v := range goValues {
			for _, c := range []struct {
				via string
				c   *oslo.Client
			}{{"cast", client}, {"fanout", fanout}, {"cast_direct", direct}} {
				if strings.HasPrefix(v.name, "payload_") && c.via != "fanout" {
					continue // one big payload per run is enough
				}
				key := c.via + "/" + v.name
				rec := fmt.Sprintf(`{"tag": "go", "via": %q, "name": %q, "value": %s}`, c.via, v.name, v.json)
				if err := c.c.Cast(ctx, rctx, "record", rawArgs("value", json.RawMessage(rec))); err != nil {
					t.Fatalf("cast %s: %v", key, err)
				}
				want[key] = json.RawMessage(rec)
			}
		}
		// Casts are asynchronous: read recorded() until all arrived.
		got := map[string]json.RawMessage{}
		for len(got) < len(want) {
			var recs []json.RawMessage
			if err := direct.Call(ctx, rctx, "recorded", nil, &recs); err != nil {
				t.Fatalf("recorded (have %d of %d casts): %v", len(got), len(want), err)
			}
			clear(got)
			for _, r := range recs {
				var hdr struct{ Tag, Via, Name string }
				if err := json.Unmarshal(r, &hdr); err != nil || hdr.Tag != "go" {
					continue
				}
				key := hdr.Via + "/" + hdr.Name
				if _, dup := got[key]; dup {
					t.Errorf("cast %s recorded twice", key)
				}
				got[key] = r
			}
			if len(got) < len(want) {
				select {
				case <-ctx.Done():
					t.Fatalf("only %d of %d casts recorded: %v", len(got), len(want), ctx.Err())
				case <-time.After(100 * time.Millisecond):
				}
			}
		}
		for key, w := range want {
			g, ok := got[key]
			if !ok {
				t.Errorf("cast %s never recorded", key)
				continue
			}
			if diff := jsonDiff(w, g); diff != "" {
				t.Errorf("cast %s (-sent +recorded):\n%s", key, truncate(diff, 3000))
			}
		}
	})

	t.Run("timeouts", func(t *testing.T) {
		// The server sleeps longer than the call timeout.
		err := client.WithTimeout(time.Second).Call(ctx, rctx, "sleep", rawArgs("seconds", 3), nil)
		if !errors.Is(err, oslo.ErrTimeout) {
			t.Errorf("call sleeping past its timeout: got %v, want ErrTimeout", err)
		}
		// Call monitoring: keep-alives every 2 s keep a 5 s call alive
		// although the monitor timeout is 4 s.
		var got float64
		err = client.WithTimeout(60*time.Second).WithCallMonitor(4*time.Second).Call(ctx, rctx, "sleep", rawArgs("seconds", 5), &got)
		if err != nil || got != 5 {
			t.Errorf("call with call monitor: got %v, %v; want 5, nil", got, err)
		}
	})
}

// TestGoClientPythonServer runs the Go client matrix against the Python
// oslo.messaging server, and the same matrix against the Go server.
func TestGoClientPythonServer(t *testing.T) {
	skipShort(t)
	r := servicetest.RabbitMQ(t)
	tr := newTransport(t, r.URL)

	t.Run("python-server", func(t *testing.T) {
		srv := startPy(t, "server.py", "--transport-url", r.URL, "--exchange", exchange,
			"--topic", "goclient_py", "--server", "pyhost", "--version", "1.3")
		srv.waitReady(t)
		runGoClient(t, tr, "goclient_py", "pyhost")
	})
	t.Run("go-server", func(t *testing.T) {
		ep, _ := peerEndpoint("1.3")
		startGoServer(t, tr, oslo.Target{Topic: "goclient_go", Server: "gohost"}, ep)
		runGoClient(t, tr, "goclient_go", "gohost")
	})
}

// TestGoCallNoServerTimesOut: a call to a topic nobody serves is dropped
// by the exchange and ends in ErrTimeout, as oslo's MessagingTimeout.
func TestGoCallNoServerTimesOut(t *testing.T) {
	skipShort(t)
	r := servicetest.RabbitMQ(t)
	tr := newTransport(t, r.URL)
	ctx, cancel := context.WithTimeout(context.Background(), runTimeout)
	defer cancel()
	err := tr.Client(oslo.Target{Topic: "nobody_serves_this"}).WithTimeout(2*time.Second).Call(ctx, rctx, "echo", rawArgs("value", 1), nil)
	if !errors.Is(err, oslo.ErrTimeout) {
		t.Fatalf("call to a topic without server: got %v, want ErrTimeout", err)
	}
	if re := asRemote(t, err); re != nil {
		t.Errorf("timeout is also a RemoteError: %+v", re)
	}
}
