package interop

import (
	"encoding/json"
	"maps"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/trustpool/trustpool/internal/oslo"
	"github.com/trustpool/trustpool/internal/servicetest"
)

// pyCase is one case of py/client.py's output.
type pyCase struct {
	OK     bool            `json:"ok"`
	Result json.RawMessage `json:"result"`
	Error  *pyError        `json:"error"`
}

// pyError describes the exception a Python call raised.
type pyError struct {
	Class         string `json:"class"`
	Module        string `json:"module"`
	Str           string `json:"str"`
	FirstLine     string `json:"first_line"`
	ExcType       string `json:"exc_type"`
	Value         string `json:"value"`
	IsValueError  bool   `json:"is_value_error"`
	IsRemoteError bool   `json:"is_remote_error"`
	IsTimeout     bool   `json:"is_timeout"`
}

// pyExc is what a test checks of an exception.
type pyExc struct{ Class, Module, ExcType, Value, FirstLine string }

const failMsg = "bad value: ünïcode ✗"

// pyClientWant lists every case py/client.py runs, with the exception a
// failing case must raise in Python (nil: the call must succeed). Both a Go
// and a Python server must produce exactly this.
var pyClientWant = func() map[string]*pyExc {
	m := map[string]*pyExc{}
	for _, n := range []string{
		"str_ascii", "str_empty", "str_non_ascii", "str_control",
		"int_zero", "int_negative", "int_2_53_plus_1", "int_max_int64", "int_min_int64", "int_huge",
		"float_pi", "float_integral", "float_tiny", "float_big", "float_negative",
		"bool_true", "bool_false", "null", "list_empty", "dict_empty", "list_mixed", "dict_nested",
		"payload_1mib",
	} {
		m["call_"+n] = nil
	}
	m["call_context"] = nil
	m["call_direct_str_non_ascii"] = nil
	m["call_direct_dict_nested"] = nil
	m["casts_recorded"] = nil
	m["call_monitor"] = nil
	remote := func(excType string) *pyExc {
		return &pyExc{Class: "RemoteError", Module: "oslo_messaging.rpc.client", ExcType: excType}
	}
	m["fail_value"] = &pyExc{Class: "ValueError", Module: "builtins", FirstLine: failMsg}
	m["fail_custom"] = &pyExc{Class: "RemoteError", Module: "oslo_messaging.rpc.client", ExcType: "InteropError", Value: failMsg}
	m["fail_plain"] = &pyExc{Class: "RemoteError", Module: "oslo_messaging.rpc.client", ExcType: "TrustpoolError", Value: failMsg}
	m["no_such_method"] = remote("NoSuchMethod")
	m["private_method"] = remote("NoSuchMethod")
	m["unsupported_major"] = remote("UnsupportedVersion")
	m["unsupported_minor"] = remote("UnsupportedVersion")
	m["wrong_namespace"] = remote("UnsupportedVersion")
	m["bad_args"] = &pyExc{Class: "TypeError", Module: "builtins"}
	m["timeout"] = &pyExc{Class: "MessagingTimeout", Module: "oslo_messaging.exceptions"}
	return m
}()

// runPythonClient runs py/client.py against a server on topic/server and
// checks every case.
func runPythonClient(t *testing.T, url, topic, server string) {
	t.Helper()
	out := runPy(t, "client.py", "--transport-url", url, "--exchange", exchange,
		"--topic", topic, "--server", server, "--version", "1.0")
	var doc struct {
		Cases map[string]pyCase `json:"cases"`
	}
	if err := json.Unmarshal(out, &doc); err != nil {
		t.Fatalf("decode client.py output: %v\n%s", err, truncate(string(out), 2000))
	}
	if diff := cmp.Diff(slices.Sorted(maps.Keys(pyClientWant)), slices.Sorted(maps.Keys(doc.Cases))); diff != "" {
		t.Errorf("client.py cases (-want +got):\n%s", diff)
	}
	for name, want := range pyClientWant {
		got, ok := doc.Cases[name]
		if !ok {
			continue
		}
		var gotExc *pyExc
		if got.Error != nil {
			gotExc = &pyExc{Class: got.Error.Class, Module: got.Error.Module, ExcType: got.Error.ExcType}
			if want != nil {
				// Compare the message only where the case defines one.
				if want.Value != "" {
					gotExc.Value = got.Error.Value
				}
				if want.FirstLine != "" {
					gotExc.FirstLine = got.Error.FirstLine
				}
			}
		}
		if diff := cmp.Diff(want, gotExc); diff != "" {
			t.Errorf("case %s: exception in Python (-want +got):\n%s\nresult: %s\nerror: %+v",
				name, diff, truncate(string(got.Result), 500), got.Error)
			continue
		}
		if !got.OK {
			t.Errorf("case %s: client.py reports a mismatch: result %s, error %+v",
				name, truncate(string(got.Result), 500), got.Error)
		}
	}
}

// TestPythonClientGoServer runs the Python oslo.messaging client matrix
// (calls over the value matrix, directed calls, casts and fanout casts whose
// effect is read back, failures, call timeout and call monitoring) against
// the Go server; the same matrix against the Python server checks that the
// expectations are oslo's own.
func TestPythonClientGoServer(t *testing.T) {
	skipShort(t)
	r := servicetest.RabbitMQ(t)

	t.Run("go-server", func(t *testing.T) {
		tr := newTransport(t, r.URL)
		ep, _ := peerEndpoint("1.3")
		startGoServer(t, tr, oslo.Target{Topic: "pyclient_go", Server: "gohost"}, ep)
		runPythonClient(t, r.URL, "pyclient_go", "gohost")
	})
	t.Run("python-server-control", func(t *testing.T) {
		srv := startPy(t, "server.py", "--transport-url", r.URL, "--exchange", exchange,
			"--topic", "pyclient_py", "--server", "pyhost", "--version", "1.3")
		srv.waitReady(t)
		runPythonClient(t, r.URL, "pyclient_py", "pyhost")
	})
}
