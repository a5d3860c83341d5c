package oslo

import (
	"bytes"
	"errors"
	"fmt"
)

// DefaultMaxMessageSize is the largest message body a transport accepts
// when [Config.MaxMessageSize] is zero. oslo.messaging's rabbit driver has
// no such limit; Trustpool bounds the work an untrusted peer on the bus can
// cause.
const DefaultMaxMessageSize = 8 << 20

var (
	// ErrMessageTooLarge is wrapped by errors about a received message
	// body larger than the transport's maximum message size. Such a
	// message is dropped before it is decoded.
	ErrMessageTooLarge = errors.New("message too large")
	// ErrInvalidReply is wrapped by [Client.Call] errors when the reply
	// arrived but is unusable: too large, not decodable, or a result that
	// does not decode into the caller's type. Unlike ErrTimeout it means
	// the server answered.
	ErrInvalidReply = errors.New("invalid reply")
)

// checkSize returns an error wrapping ErrMessageTooLarge when body exceeds
// the transport's limit.
func (t *Transport) checkSize(body []byte) error {
	if len(body) > t.maxMessageSize {
		return fmt.Errorf("%w: %d bytes, max_message_size is %d", ErrMessageTooLarge, len(body), t.maxMessageSize)
	}
	return nil
}

// scanStringField finds up to maxHits values of the JSON string member
// name in body without decoding it: plain ("name": "v") or inside the
// envelope's escaped inner message (\"name\": \"v\"). Values must consist of
// bytes ok accepts and be 1 to maxLen bytes long. It is linear in len(body)
// and allocates only the values, so it can look into messages too large or
// too broken to decode, to find where an answer should go.
func scanStringField(body []byte, name string, ok func(byte) bool, maxLen, maxHits int) []string {
	key := []byte(`"` + name)
	var out []string
	for i := 0; len(out) < maxHits && i < len(body); {
		j := bytes.Index(body[i:], key)
		if j < 0 {
			break
		}
		k := i + j
		i = k + len(key)
		// Inside the envelope every quote of the inner message is escaped.
		escaped := k > 0 && body[k-1] == '\\'
		p, q := quote(body, i, escaped)
		if !q {
			continue
		}
		p = spaces(body, p)
		if p >= len(body) || body[p] != ':' {
			continue
		}
		p = spaces(body, p+1)
		if p, q = quote(body, p, escaped); !q {
			continue
		}
		end := p
		for end < len(body) && end-p <= maxLen && ok(body[end]) {
			end++
		}
		if end == p || end-p > maxLen {
			continue
		}
		if _, q := quote(body, end, escaped); !q {
			continue
		}
		out = append(out, string(body[p:end]))
	}
	return out
}

// quote accepts `"` (or `\"` when escaped) at b[p].
func quote(b []byte, p int, escaped bool) (int, bool) {
	switch {
	case !escaped && p < len(b) && b[p] == '"':
		return p + 1, true
	case escaped && p+1 < len(b) && b[p] == '\\' && b[p+1] == '"':
		return p + 2, true
	}
	return p, false
}

func spaces(b []byte, p int) int {
	for p < len(b) && (b[p] == ' ' || b[p] == '\t' || b[p] == '\n' || b[p] == '\r') {
		p++
	}
	return p
}

func msgIDByte(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '-'
}

func queueByte(c byte) bool {
	return msgIDByte(c) || c == '_' || c == '.' || c == ':'
}

// salvageReplyAddress finds _msg_id and _reply_q in a request that is too
// large or does not decode, so the caller can be told instead of waiting
// for its timeout.
func salvageReplyAddress(body []byte) (msgID, replyQ string, ok bool) {
	m := scanStringField(body, "_msg_id", msgIDByte, 64, 1)
	r := scanStringField(body, "_reply_q", queueByte, 255, 1)
	if len(m) == 0 || len(r) == 0 {
		return "", "", false
	}
	return m[0], r[0], true
}

// maxSalvagedIDs bounds the message ids taken from one unusable reply.
const maxSalvagedIDs = 8

// salvageMsgIDs finds the _msg_id values in a reply that is too large or
// does not decode. A peer can name only calls whose ids it has seen, which
// it could answer (or fail) anyway.
func salvageMsgIDs(body []byte) []string {
	return scanStringField(body, "_msg_id", msgIDByte, 64, maxSalvagedIDs)
}
