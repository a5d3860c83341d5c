package service

import (
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"testing"

	"github.com/trustpool/trustpool/internal/attestrpc"
	"github.com/trustpool/trustpool/internal/oslo"
)

// TestDecodeArgs: bad RPC arguments are a ValueError for the caller that says
// what was wrong without naming Go types, and unknown arguments are refused
// as a Python endpoint refuses unexpected keyword arguments.
func TestDecodeArgs(t *testing.T) {
	tests := []struct {
		args map[string]string
		msg  string
	}{
		{map[string]string{"host": `5`}, "host: want a string, got a number"},
		{map[string]string{"host": `"h"`, "ek_public": `{}`}, "ek_public: want a base64 string, got an object"},
		{map[string]string{"host": `"h"`, "colour": `"blue"`}, `unknown field "colour"`},
	}
	for _, tt := range tests {
		req := &oslo.Request{Method: attestrpc.MethodRegisterHost, Args: map[string]json.RawMessage{}}
		for k, v := range tt.args {
			req.Args[k] = json.RawMessage(v)
		}
		var a attestrpc.RegisterHostArgs
		err := decodeArgs(req, &a)
		var re *oslo.RemoteError
		if !errors.As(err, &re) || re.Class != "ValueError" {
			t.Fatalf("decodeArgs(%v) = %v, want a ValueError", tt.args, err)
		}
		if !strings.Contains(re.Message, tt.msg) || strings.Contains(re.Message, "Go ") || strings.Contains(re.Message, "[]uint8") {
			t.Errorf("decodeArgs(%v) message %q, want %q and no Go type", tt.args, re.Message, tt.msg)
		}
	}
}

// TestRedeliveryWantedArgs: redelivery_wanted (a cast anyone on the bus
// can send) refuses arguments that do not validate before anything reads
// the store, and is dropped when trusted launches are off.
func TestRedeliveryWantedArgs(t *testing.T) {
	h := rpcMethods(nil, nil, nil, slog.New(slog.DiscardHandler))[attestrpc.MethodRedeliveryWanted]
	for _, args := range []map[string]string{
		{"host": `"h"`, "launch_id": `"../../etc"`, "instance_id": `"178b0921-8f85-4257-88b6-2e743b5a975c"`},
		{"launch_id": `"6f1c2a3b-4d5e-4f60-8a7b-9c0d1e2f3a4b"`, "instance_id": `"178b0921-8f85-4257-88b6-2e743b5a975c"`},
		{"host": `"h"`, "launch_id": `"6f1c2a3b-4d5e-4f60-8a7b-9c0d1e2f3a4b"`, "instance_id": `"x"`, "secret": `"y"`},
	} {
		req := &oslo.Request{Method: attestrpc.MethodRedeliveryWanted, Args: map[string]json.RawMessage{}}
		for k, v := range args {
			req.Args[k] = json.RawMessage(v)
		}
		var re *oslo.RemoteError
		if _, err := h(t.Context(), req); !errors.As(err, &re) || re.Class != "ValueError" {
			t.Errorf("redelivery_wanted(%v) = %v, want a ValueError", args, err)
		}
	}
	ok := &oslo.Request{Method: attestrpc.MethodRedeliveryWanted, Args: map[string]json.RawMessage{"host": json.RawMessage(`"h"`),
		"launch_id": json.RawMessage(`"6f1c2a3b-4d5e-4f60-8a7b-9c0d1e2f3a4b"`), "instance_id": json.RawMessage(`"178b0921-8f85-4257-88b6-2e743b5a975c"`)}}
	if res, err := h(t.Context(), ok); res != nil || err != nil {
		t.Errorf("redelivery_wanted with launches off = %v, %v", res, err)
	}
}

// FuzzRedeliveryWantedArgs: redelivery_wanted's arguments decode and
// validate without panicking, and what validates names a launch and an
// instance by canonical UUIDs (the launcher reads the store by them). The
// seed is the arguments as the agent encodes them.
func FuzzRedeliveryWantedArgs(f *testing.F) {
	seed, err := json.Marshal(attestrpc.RedeliveryWantedArgs{Host: "compute-1", LaunchID: "6f1c2a3b-4d5e-4f60-8a7b-9c0d1e2f3a4b",
		InstanceID: "178b0921-8f85-4257-88b6-2e743b5a975c"})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(seed)
	f.Add([]byte(`{"host":"h","launch_id":"6F1C2A3B-4D5E-4F60-8A7B-9C0D1E2F3A4B","instance_id":"","extra":1}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		var m map[string]json.RawMessage
		if json.Unmarshal(data, &m) != nil {
			return
		}
		var a attestrpc.RedeliveryWantedArgs
		if decodeArgs(&oslo.Request{Args: m}, &a) != nil || a.Validate() != nil {
			return
		}
		if !attestrpc.IsUUID(a.LaunchID) || !attestrpc.IsUUID(a.InstanceID) || a.Host == "" || strings.ContainsAny(a.Host, " \n") {
			t.Errorf("accepted %+v", a)
		}
	})
}
