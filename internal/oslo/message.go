package oslo

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"unicode/utf8"
)

// EnvelopeVersion is the only envelope version oslo.messaging sends and
// accepts ("oslo.version").
const EnvelopeVersion = "2.0"

const (
	envelopeVersionKey = "oslo.version"
	envelopeMessageKey = "oslo.message"
	contextPrefix      = "_context_"
)

var (
	// ErrMalformedMessage is wrapped by decode errors about bodies that are
	// not the JSON oslo.messaging sends: not an object, wrongly typed or
	// missing fields, invalid JSON or UTF-8.
	ErrMalformedMessage = errors.New("malformed oslo message")
	// ErrUnsupportedEnvelopeVersion means an envelope whose "oslo.version"
	// is not compatible with 2.0 (oslo's UnsupportedRpcEnvelopeVersion);
	// oslo drops such messages without a reply.
	ErrUnsupportedEnvelopeVersion = errors.New("unsupported oslo envelope version")
)

func malformed(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrMalformedMessage, fmt.Sprintf(format, args...))
}

// Wrap puts inner, the JSON object of a message, into the v2 envelope:
//
//	{"oslo.version": "2.0", "oslo.message": "<inner as a JSON string>"}
func Wrap(inner []byte) ([]byte, error) {
	if !utf8.Valid(inner) {
		return nil, malformed("wrap: message is not valid UTF-8")
	}
	trimmed := bytes.TrimSpace(inner)
	if len(trimmed) == 0 || trimmed[0] != '{' || !json.Valid(trimmed) {
		return nil, malformed("wrap: message is not a JSON object")
	}
	var w objectWriter
	w.field(envelopeVersionKey, EnvelopeVersion)
	w.field(envelopeMessageKey, string(trimmed))
	return w.finish()
}

// Unwrap returns the inner JSON object of body. A JSON object with both
// "oslo.version" and "oslo.message" is a v2 envelope: its version must be
// compatible with 2.0 (VersionCompatible, so "2.0" and "2.0.0") or the error
// wraps ErrUnsupportedEnvelopeVersion, and "oslo.message" must be a string
// holding a JSON object. Any other JSON object is a v1 (un-enveloped)
// message and returned as is, as oslo accepts it. Everything else is an
// error wrapping ErrMalformedMessage.
func Unwrap(body []byte) ([]byte, error) {
	obj, err := decodeObject(body)
	if err != nil {
		return nil, err
	}
	rawVersion, hasVersion := obj[envelopeVersionKey]
	rawMessage, hasMessage := obj[envelopeMessageKey]
	if !hasVersion || !hasMessage {
		return bytes.TrimSpace(body), nil
	}
	var version string
	if err := json.Unmarshal(rawVersion, &version); err != nil {
		return nil, fmt.Errorf("%w: %s is %s, not a version string", ErrUnsupportedEnvelopeVersion, envelopeVersionKey, truncate(rawVersion))
	}
	if !VersionCompatible(EnvelopeVersion, version) {
		return nil, fmt.Errorf("%w: %q (want %s)", ErrUnsupportedEnvelopeVersion, version, EnvelopeVersion)
	}
	var inner string
	if err := json.Unmarshal(rawMessage, &inner); err != nil {
		return nil, malformed("%s is not a string", envelopeMessageKey)
	}
	if _, err := decodeObject([]byte(inner)); err != nil {
		return nil, fmt.Errorf("%s: %w", envelopeMessageKey, err)
	}
	return []byte(inner), nil
}

// decodeObject decodes a JSON object into its raw members.
func decodeObject(b []byte) (map[string]json.RawMessage, error) {
	if !utf8.Valid(b) {
		return nil, malformed("not valid UTF-8")
	}
	trimmed := bytes.TrimSpace(b)
	if len(trimmed) == 0 || trimmed[0] != '{' {
		return nil, malformed("not a JSON object")
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(trimmed, &obj); err != nil {
		return nil, malformed("invalid JSON: %v", err)
	}
	return obj, nil
}

func truncate(b []byte) string {
	const n = 40
	if len(b) > n {
		return string(b[:n]) + "..."
	}
	return string(b)
}

// Request is an RPC request: a call (IsCall, with MsgID and ReplyQ), a cast
// or a fanout cast.
type Request struct {
	// Method is the endpoint method name.
	Method string
	// Args are the keyword arguments.
	Args map[string]json.RawMessage
	// Version is the requested API version; "" when the message has none
	// (the server then assumes "1.0", see EffectiveVersion).
	Version string
	// Namespace is the target namespace; "" when absent or null.
	Namespace string
	// MsgID is the call's correlation id (_msg_id), calls only.
	MsgID string
	// ReplyQ is the queue the reply goes to (_reply_q), calls only.
	ReplyQ string
	// UniqueID is _unique_id for duplicate detection; may be "" on receipt.
	UniqueID string
	// Timeout is the call-monitor timeout (_timeout) in seconds, nil for
	// null. Calls always carry the key; casts never do.
	Timeout *float64
	// IsCall says the request expects a reply.
	IsCall bool
	// Context holds the `_context_<key>` entries under <key>. Decoded
	// numbers are json.Number.
	Context map[string]any
}

// EffectiveVersion is Version, or "1.0" when the request carries none, as
// oslo's dispatcher assumes.
func (r *Request) EffectiveVersion() string {
	if r.Version == "" {
		return "1.0"
	}
	return r.Version
}

// EncodeRequest encodes r in the v2 envelope with the keys in oslo's order.
func EncodeRequest(r *Request) ([]byte, error) {
	if r.Method == "" {
		return nil, errors.New("encode request: empty method")
	}
	if r.IsCall && (r.MsgID == "" || r.ReplyQ == "") {
		return nil, errors.New("encode request: a call needs a message id and a reply queue")
	}
	if !r.IsCall && (r.MsgID != "" || r.ReplyQ != "" || r.Timeout != nil) {
		return nil, errors.New("encode request: a cast carries no message id, reply queue or timeout")
	}
	var w objectWriter
	w.field("method", r.Method)
	args := r.Args
	if args == nil {
		args = map[string]json.RawMessage{}
	}
	w.field("args", args)
	if r.Version != "" {
		w.field("version", r.Version)
	}
	if r.Namespace != "" {
		w.field("namespace", r.Namespace)
	}
	if r.IsCall {
		w.field("_msg_id", r.MsgID)
		w.field("_reply_q", r.ReplyQ)
		w.field("_timeout", r.Timeout)
	}
	if r.UniqueID != "" {
		w.field("_unique_id", r.UniqueID)
	}
	w.context(r.Context)
	inner, err := w.finish()
	if err != nil {
		return nil, fmt.Errorf("encode request %s: %w", r.Method, err)
	}
	return Wrap(inner)
}

// DecodeRequest decodes an RPC request, enveloped or not.
func DecodeRequest(body []byte) (*Request, error) {
	inner, err := Unwrap(body)
	if err != nil {
		return nil, fmt.Errorf("decode request: %w", err)
	}
	obj, err := decodeObject(inner)
	if err != nil {
		return nil, fmt.Errorf("decode request: %w", err)
	}
	r := &Request{Args: map[string]json.RawMessage{}}
	var errs []error
	var ok bool
	if r.Method, ok, err = stringField(obj, "method"); err != nil {
		errs = append(errs, err)
	} else if !ok || r.Method == "" {
		errs = append(errs, malformed("no method"))
	}
	if raw, present := obj["args"]; present && !isNull(raw) {
		if !isObject(raw) {
			errs = append(errs, malformed("args is not an object"))
		} else if err := json.Unmarshal(raw, &r.Args); err != nil {
			errs = append(errs, malformed("args: %v", err))
		}
	}
	if r.Version, _, err = stringField(obj, "version"); err != nil {
		errs = append(errs, err)
	}
	if r.Namespace, _, err = stringField(obj, "namespace"); err != nil {
		errs = append(errs, err)
	}
	if r.MsgID, _, err = stringField(obj, "_msg_id"); err != nil {
		errs = append(errs, err)
	}
	r.IsCall = r.MsgID != "" // oslo replies only to a truthy _msg_id
	if r.ReplyQ, ok, err = stringField(obj, "_reply_q"); err != nil {
		errs = append(errs, err)
	} else if r.IsCall && (!ok || r.ReplyQ == "") {
		errs = append(errs, malformed("call %q has no _reply_q", r.MsgID))
	}
	if raw, present := obj["_timeout"]; present && !isNull(raw) {
		var t float64
		if err := json.Unmarshal(raw, &t); err != nil {
			errs = append(errs, malformed("_timeout is not a number"))
		} else {
			r.Timeout = &t
		}
	}
	if r.UniqueID, _, err = stringField(obj, "_unique_id"); err != nil {
		errs = append(errs, err)
	}
	if r.Context, err = contextFields(obj); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("decode request: %w", err)
	}
	if !r.IsCall {
		r.ReplyQ, r.Timeout = "", nil
	}
	return r, nil
}

// Reply is an RPC reply: a final one (Ending) or a call-monitor keep-alive
// (not Ending, no result, no failure).
type Reply struct {
	// Result is the JSON result; nil encodes as null.
	Result json.RawMessage
	// Failure is the remote exception; nil for success.
	Failure *Failure
	// Ending marks the final reply. A reply without "ending" decodes as
	// false (legacy two-part replies end with a second message).
	Ending bool
	// MsgID is the request's _msg_id.
	MsgID string
	// UniqueID is _unique_id.
	UniqueID string
}

// EncodeReply encodes r in the v2 envelope. "failure" is always present:
// null or the failure's JSON as a string, as the Python client expects.
func EncodeReply(r *Reply) ([]byte, error) {
	if r.MsgID == "" {
		return nil, errors.New("encode reply: empty message id")
	}
	if r.Failure != nil && len(r.Result) > 0 && !isNull(r.Result) {
		return nil, errors.New("encode reply: both a result and a failure")
	}
	var w objectWriter
	if len(r.Result) == 0 {
		w.field("result", nil)
	} else {
		w.field("result", r.Result)
	}
	if r.Failure == nil {
		w.field("failure", nil)
	} else {
		f, err := r.Failure.marshal()
		if err != nil {
			return nil, fmt.Errorf("encode reply: %w", err)
		}
		w.field("failure", string(f))
	}
	w.field("ending", r.Ending)
	w.field("_msg_id", r.MsgID)
	if r.UniqueID != "" {
		w.field("_unique_id", r.UniqueID)
	}
	inner, err := w.finish()
	if err != nil {
		return nil, fmt.Errorf("encode reply: %w", err)
	}
	return Wrap(inner)
}

// DecodeReply decodes an RPC reply, enveloped or not. A "failure" string
// that is not a failure object still decodes, as a Failure whose Message is
// that text, so a call never succeeds on a garbled failure.
func DecodeReply(body []byte) (*Reply, error) {
	inner, err := Unwrap(body)
	if err != nil {
		return nil, fmt.Errorf("decode reply: %w", err)
	}
	obj, err := decodeObject(inner)
	if err != nil {
		return nil, fmt.Errorf("decode reply: %w", err)
	}
	r := &Reply{}
	var errs []error
	var ok bool
	if r.MsgID, ok, err = stringField(obj, "_msg_id"); err != nil {
		errs = append(errs, err)
	} else if !ok || r.MsgID == "" {
		errs = append(errs, malformed("no _msg_id"))
	}
	if r.UniqueID, _, err = stringField(obj, "_unique_id"); err != nil {
		errs = append(errs, err)
	}
	if raw, present := obj["result"]; present && !isNull(raw) {
		r.Result = raw
	}
	if raw, present := obj["ending"]; present && !isNull(raw) {
		if err := json.Unmarshal(raw, &r.Ending); err != nil {
			errs = append(errs, malformed("ending is not a boolean"))
		}
	}
	if raw, present := obj["failure"]; present && !isNull(raw) {
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			errs = append(errs, malformed("failure is not a string"))
		} else {
			r.Failure = parseFailure(s)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("decode reply: %w", err)
	}
	return r, nil
}

// Notification priorities, lower case as in routing keys.
var notificationPriorities = []string{"audit", "debug", "info", "warn", "error", "critical", "sample"}

// ErrUnknownPriority is wrapped by errors about notification priorities
// oslo does not know (its listeners drop such notifications).
var ErrUnknownPriority = errors.New("unknown notification priority")

// NormalizePriority returns p in the upper case the message body carries
// ("INFO"); strings.ToLower of the result is the routing-key suffix.
// "warning" is accepted as "WARN", as oslo's Notifier.warning sends.
func NormalizePriority(p string) (string, error) {
	l := strings.ToLower(p)
	if l == "warning" {
		l = "warn"
	}
	for _, known := range notificationPriorities {
		if l == known {
			return strings.ToUpper(l), nil
		}
	}
	return "", fmt.Errorf("%w %q (known: %s)", ErrUnknownPriority, p, strings.Join(notificationPriorities, ", "))
}

// Notification is an oslo notification.
type Notification struct {
	// MessageID is a dashed uuid4, the same for every topic copy.
	MessageID string
	// PublisherID is e.g. "compute.host1" or "nova-compute:host1".
	PublisherID string
	// EventType is e.g. "compute.instance.create.end".
	EventType string
	// Priority is upper case ("INFO"); EncodeNotification accepts any case.
	Priority string
	// Payload is the JSON payload; nil encodes as null.
	Payload json.RawMessage
	// Timestamp is Python's str(datetime) in UTC (see PythonTimestamp).
	Timestamp string
	// UniqueID is _unique_id, different for each topic copy.
	UniqueID string
	// Context holds the `_context_<key>` entries under <key>.
	Context map[string]any
}

// EncodeNotification encodes n in the messagingv2 envelope; the body's
// priority is upper case.
func EncodeNotification(n *Notification) ([]byte, error) {
	prio, err := NormalizePriority(n.Priority)
	if err != nil {
		return nil, fmt.Errorf("encode notification: %w", err)
	}
	if n.EventType == "" || n.MessageID == "" {
		return nil, errors.New("encode notification: empty event type or message id")
	}
	var w objectWriter
	w.field("message_id", n.MessageID)
	w.field("publisher_id", n.PublisherID)
	w.field("event_type", n.EventType)
	w.field("priority", prio)
	if len(n.Payload) == 0 {
		w.field("payload", nil)
	} else {
		w.field("payload", n.Payload)
	}
	w.field("timestamp", n.Timestamp)
	if n.UniqueID != "" {
		w.field("_unique_id", n.UniqueID)
	}
	w.context(n.Context)
	inner, err := w.finish()
	if err != nil {
		return nil, fmt.Errorf("encode notification %s: %w", n.EventType, err)
	}
	return Wrap(inner)
}

// DecodeNotification decodes a notification, messagingv2 (enveloped) or
// messaging (v1, bare). Its priority must be one oslo knows
// (ErrUnknownPriority, as oslo's listener drops the others; "WARNING" too);
// it is returned upper case.
func DecodeNotification(body []byte) (*Notification, error) {
	inner, err := Unwrap(body)
	if err != nil {
		return nil, fmt.Errorf("decode notification: %w", err)
	}
	obj, err := decodeObject(inner)
	if err != nil {
		return nil, fmt.Errorf("decode notification: %w", err)
	}
	n := &Notification{}
	var errs []error
	for _, f := range []struct {
		key string
		dst *string
	}{
		{"message_id", &n.MessageID},
		{"publisher_id", &n.PublisherID},
		{"event_type", &n.EventType},
		{"priority", &n.Priority},
		{"timestamp", &n.Timestamp},
		{"_unique_id", &n.UniqueID},
	} {
		if *f.dst, _, err = stringField(obj, f.key); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) == 0 {
		// Strictly oslo's list: its listener drops "WARNING" and the like.
		p := strings.ToLower(n.Priority)
		if !slices.Contains(notificationPriorities, p) {
			errs = append(errs, fmt.Errorf("%w: %w %q", ErrMalformedMessage, ErrUnknownPriority, n.Priority))
		}
		n.Priority = strings.ToUpper(p)
	}
	if raw, present := obj["payload"]; present && !isNull(raw) {
		n.Payload = raw
	}
	if n.Context, err = contextFields(obj); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("decode notification: %w", err)
	}
	return n, nil
}

// stringField reads obj[key] as a string; absent and null give ("", false).
func stringField(obj map[string]json.RawMessage, key string) (string, bool, error) {
	raw, ok := obj[key]
	if !ok || isNull(raw) {
		return "", false, nil
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", false, malformed("%s is %s, not a string", key, truncate(raw))
	}
	return s, true, nil
}

// contextFields collects the _context_* members, numbers as json.Number.
func contextFields(obj map[string]json.RawMessage) (map[string]any, error) {
	ctx := map[string]any{}
	for k, raw := range obj {
		name, ok := strings.CutPrefix(k, contextPrefix)
		if !ok {
			continue
		}
		v, err := decodeValue(raw)
		if err != nil {
			return nil, malformed("%s: %v", k, err)
		}
		ctx[name] = v
	}
	return ctx, nil
}

// decodeValue decodes one JSON value keeping numbers exact.
func decodeValue(raw []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	return v, nil
}

func isNull(raw json.RawMessage) bool { return bytes.Equal(bytes.TrimSpace(raw), []byte("null")) }

func isObject(raw json.RawMessage) bool {
	t := bytes.TrimSpace(raw)
	return len(t) > 0 && t[0] == '{'
}

// objectWriter writes a JSON object with members in the order given,
// without HTML escaping.
type objectWriter struct {
	buf bytes.Buffer
	n   int
	err error
}

func (w *objectWriter) field(key string, v any) {
	if w.err != nil {
		return
	}
	if w.n == 0 {
		w.buf.WriteByte('{')
	} else {
		w.buf.WriteString(", ")
	}
	w.n++
	if err := encodeJSON(&w.buf, key); err != nil {
		w.err = err
		return
	}
	w.buf.WriteString(": ")
	if err := encodeJSON(&w.buf, v); err != nil {
		w.err = fmt.Errorf("%s: %w", key, err)
	}
}

// context writes the _context_<key> members in key order.
func (w *objectWriter) context(ctx map[string]any) {
	keys := make([]string, 0, len(ctx))
	for k := range ctx {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		w.field(contextPrefix+k, ctx[k])
	}
}

func (w *objectWriter) finish() ([]byte, error) {
	if w.err != nil {
		return nil, w.err
	}
	if w.n == 0 {
		w.buf.WriteByte('{')
	}
	w.buf.WriteByte('}')
	return w.buf.Bytes(), nil
}

// encodeJSON appends the JSON of v to buf without HTML escaping and without
// the encoder's trailing newline.
func encodeJSON(buf *bytes.Buffer, v any) error {
	start := buf.Len()
	enc := json.NewEncoder(buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		buf.Truncate(start)
		return err
	}
	buf.Truncate(buf.Len() - 1)
	return nil
}

// marshalJSONNoEscape is json.Marshal without HTML escaping.
func marshalJSONNoEscape(v any) ([]byte, error) {
	var buf bytes.Buffer
	if err := encodeJSON(&buf, v); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
