package service

import (
	"encoding/json"
	"errors"
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
