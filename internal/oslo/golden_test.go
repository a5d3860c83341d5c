package oslo

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite testdata/golden from the current encoders")

// TestEncodeGolden pins the exact bytes the encoders write for fixed
// messages (testdata/golden/*.json; regenerate with -update after an
// intended format change). Receivers must not depend on these bytes;
// the file guards against accidental changes of what Trustpool sends.
func TestEncodeGolden(t *testing.T) {
	ctx := map[string]any{"user_id": "u-1", "project_id": "p-1", "roles": []any{"admin"}, "is_admin": true, "request_id": "req-1"}
	args := map[string]json.RawMessage{"value": json.RawMessage(`"héllo <&>"`), "n": json.RawMessage(`1.50`)}
	ts := PythonTimestamp(time.Date(2026, 11, 25, 19, 47, 24, 208091000, time.UTC))
	tests := []struct {
		name   string
		encode func() ([]byte, error)
	}{
		{"request_call", func() ([]byte, error) {
			return EncodeRequest(&Request{Method: "echo", Args: args, Version: "1.0", IsCall: true,
				MsgID: "0123456789abcdef0123456789abcdef", ReplyQ: "reply_fedcba9876543210fedcba9876543210",
				UniqueID: "00000000000000000000000000000001", Timeout: ptr(30.0), Context: ctx})
		}},
		{"request_cast_namespace", func() ([]byte, error) {
			return EncodeRequest(&Request{Method: "note", Version: "1.3", Namespace: "trustpool", UniqueID: "00000000000000000000000000000002"})
		}},
		{"reply_result", func() ([]byte, error) {
			return EncodeReply(&Reply{Result: json.RawMessage(`{"trusted": true}`), Ending: true,
				MsgID: "0123456789abcdef0123456789abcdef", UniqueID: "00000000000000000000000000000003"})
		}},
		{"reply_keepalive", func() ([]byte, error) {
			return EncodeReply(&Reply{MsgID: "0123456789abcdef0123456789abcdef", UniqueID: "00000000000000000000000000000004"})
		}},
		{"reply_value_error", func() ([]byte, error) {
			return EncodeReply(&Reply{Failure: &NewValueError("bad nonce").Failure, Ending: true,
				MsgID: "0123456789abcdef0123456789abcdef", UniqueID: "00000000000000000000000000000005"})
		}},
		{"reply_no_such_method", func() ([]byte, error) {
			return EncodeReply(&Reply{Failure: NoSuchMethod("nope"), Ending: true,
				MsgID: "0123456789abcdef0123456789abcdef", UniqueID: "00000000000000000000000000000006"})
		}},
		{"notification", func() ([]byte, error) {
			return EncodeNotification(&Notification{MessageID: "4189cb91-69cd-4444-926c-18683ea72dad", PublisherID: "trustpool-attestation:host1",
				EventType: "trustpool.host.attested", Priority: "info", Payload: json.RawMessage(`{"host": "host1", "trusted": true}`),
				Timestamp: ts, UniqueID: "00000000000000000000000000000007", Context: ctx})
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.encode()
			if err != nil {
				t.Fatal(err)
			}
			path := filepath.Join("testdata", "golden", tt.name+".json")
			if *update {
				if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(path, append(got, '\n'), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run with -update to create it)", err)
			}
			if !bytes.Equal(append(got, '\n'), want) {
				t.Errorf("encoding changed:\ngot  %s\nwant %s", got, want)
			}
		})
	}
}
