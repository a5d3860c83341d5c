package oslo

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestSalvageReplyAddress(t *testing.T) {
	wrap := func(inner string) string {
		b, err := json.Marshal(map[string]string{"oslo.version": "2.0", "oslo.message": inner})
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	big := strings.Repeat("x", 1<<20)
	tests := []struct {
		name          string
		body          string
		msgID, replyQ string
		ok            bool
	}{
		{"plain", `{"method": "echo", "_msg_id": "abc123", "_reply_q": "reply_q1"}`, "abc123", "reply_q1", true},
		{"enveloped", wrap(`{"method": "echo", "args": {"v": NaN}, "_msg_id": "abc-1", "_reply_q": "reply_0f.x:y"}`), "abc-1", "reply_0f.x:y", true},
		{"compact", `{"_msg_id":"m","_reply_q":"q"}`, "m", "q", true},
		{"after a large argument", wrap(`{"args": {"v": "` + big + `"}, "_msg_id": "m2", "_reply_q": "reply_2"}`), "m2", "reply_2", true},
		{"no reply queue", `{"_msg_id": "abc"}`, "", "", false},
		{"id with a quote", `{"_msg_id": "a\"b", "_reply_q": "q"}`, "", "", false},
		{"id not a string", `{"_msg_id": 5, "_reply_q": "q"}`, "", "", false},
		{"id too long", `{"_msg_id": "` + strings.Repeat("a", 65) + `", "_reply_q": "q"}`, "", "", false},
		{"key prefix only", `{"_msg_idx": "a", "_reply_q": "q"}`, "", "", false},
		{"empty id", `{"_msg_id": "", "_reply_q": "q"}`, "", "", false},
		{"truncated", `{"_reply_q": "q", "_msg_id": "abc`, "", "", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m, r, ok := salvageReplyAddress([]byte(tc.body))
			if m != tc.msgID || r != tc.replyQ || ok != tc.ok {
				t.Errorf("salvageReplyAddress = %q, %q, %v; want %q, %q, %v", m, r, ok, tc.msgID, tc.replyQ, tc.ok)
			}
		})
	}
}

func TestSalvageMsgIDsBounded(t *testing.T) {
	var b strings.Builder
	b.WriteString(`{"result": [`)
	for i := range 100 {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(`{"_msg_id": "id` + string(rune('a'+i%26)) + `"}`)
	}
	b.WriteString(`], "_msg_id": "real"}`)
	got := salvageMsgIDs([]byte(b.String()))
	if len(got) != maxSalvagedIDs {
		t.Fatalf("salvageMsgIDs found %d ids, want the first %d", len(got), maxSalvagedIDs)
	}
	want := []string{"ida", "idb", "idc", "idd", "ide", "idf", "idg", "idh"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("ids (-want +got):\n%s", diff)
	}
}

func TestCheckSize(t *testing.T) {
	tr, err := NewTransport(Config{TransportURL: "rabbit://h/", MaxMessageSize: 10})
	if err != nil {
		t.Fatal(err)
	}
	if err := tr.checkSize(make([]byte, 10)); err != nil {
		t.Errorf("10 bytes with a 10-byte limit: %v", err)
	}
	if err := tr.checkSize(make([]byte, 11)); !errors.Is(err, ErrMessageTooLarge) {
		t.Errorf("11 bytes with a 10-byte limit: %v, want ErrMessageTooLarge", err)
	}
	def, err := NewTransport(Config{TransportURL: "rabbit://h/"})
	if err != nil {
		t.Fatal(err)
	}
	if def.maxMessageSize != DefaultMaxMessageSize {
		t.Errorf("default limit %d, want %d", def.maxMessageSize, DefaultMaxMessageSize)
	}
	if _, err := NewTransport(Config{TransportURL: "rabbit://h/", MaxMessageSize: -1}); !errors.Is(err, ErrInvalidOption) {
		t.Errorf("negative limit: %v, want ErrInvalidOption", err)
	}
}
