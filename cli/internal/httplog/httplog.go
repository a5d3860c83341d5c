// Package httplog is the CLI's --debug output: an http.RoundTripper that
// writes every request and response, in keystoneauth's "REQ: curl …" /
// "RESP: …" / "RESP BODY: …" form, with secrets masked.
//
// What it masks: the token headers (X-Auth-Token, X-Subject-Token,
// X-Service-Token), Authorization and cookies, shown as {SHA256}<digest> like
// keystoneauth so that one token can be followed through a log without being
// revealed; in JSON bodies, the values of keys naming a password, a secret,
// a passcode, a private key or sealed data, and token ids ("token": "…" or
// {"token": {"id": "…"}}). Bodies that are not JSON are written as they
// are, cut at MaxBody bytes. What it does not mask: anything else, such as
// user names, project ids and URLs.
package httplog

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"net/http"
	"slices"
	"strings"
	"sync"
)

// MaxBody bounds how much of a body is written.
const MaxBody = 64 << 10

// Transport logs the requests it sends through Base (nil:
// http.DefaultTransport) to W.
type Transport struct {
	Base http.RoundTripper
	W    io.Writer

	mu sync.Mutex // one request's lines stay together
}

// RoundTrip implements http.RoundTripper.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	base := t.Base
	if base == nil {
		base = http.DefaultTransport
	}
	var body []byte
	if req.Body != nil && req.Body != http.NoBody {
		b, err := io.ReadAll(req.Body)
		req.Body.Close()
		if err != nil {
			return nil, err
		}
		body = b
		req = req.Clone(req.Context())
		req.Body = io.NopCloser(bytes.NewReader(b))
		req.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil }
	}
	t.write(requestLine(req, body))
	resp, err := base.RoundTrip(req)
	if err != nil {
		t.write(fmt.Sprintf("%s call to %s failed: %v\n", req.Method, req.URL.Redacted(), err))
		return resp, err
	}
	rb, rerr := io.ReadAll(resp.Body)
	resp.Body.Close()
	resp.Body = io.NopCloser(bytes.NewReader(rb))
	if rerr != nil {
		resp.Body = io.NopCloser(io.MultiReader(bytes.NewReader(rb), errReader{rerr}))
	}
	t.write(responseLines(req, resp, rb))
	return resp, nil
}

type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }

func (t *Transport) write(s string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	_, _ = io.WriteString(t.W, s)
}

// secretHeaders are shown as {SHA256}<digest>.
var secretHeaders = []string{"X-Auth-Token", "X-Subject-Token", "X-Service-Token", "Authorization", "Cookie", "Set-Cookie"}

func header(k, v string) string {
	if slices.Contains(secretHeaders, http.CanonicalHeaderKey(k)) {
		sum := sha256.Sum256([]byte(v))
		v = "{SHA256}" + hex.EncodeToString(sum[:])
	}
	return k + ": " + v
}

func sortedHeaders(h http.Header) []string {
	var out []string
	for _, k := range slices.Sorted(func(yield func(string) bool) {
		for k := range h {
			if !yield(k) {
				return
			}
		}
	}) {
		for _, v := range h[k] {
			out = append(out, header(k, v))
		}
	}
	return out
}

func requestLine(req *http.Request, body []byte) string {
	var b strings.Builder
	fmt.Fprintf(&b, "REQ: curl -g -i -X %s %s", req.Method, req.URL.Redacted())
	for _, h := range sortedHeaders(req.Header) {
		fmt.Fprintf(&b, " -H %q", h)
	}
	if len(body) > 0 {
		fmt.Fprintf(&b, " -d '%s'", Mask(body, req.Header.Get("Content-Type")))
	}
	b.WriteByte('\n')
	return b.String()
}

func responseLines(req *http.Request, resp *http.Response, body []byte) string {
	var b strings.Builder
	fmt.Fprintf(&b, "RESP: [%d] %s\n", resp.StatusCode, strings.Join(sortedHeaders(resp.Header), " "))
	if len(body) > 0 {
		fmt.Fprintf(&b, "RESP BODY: %s\n", Mask(body, resp.Header.Get("Content-Type")))
	}
	if id := resp.Header.Get("X-Openstack-Request-Id"); id != "" {
		fmt.Fprintf(&b, "%s call to %s used request id %s\n", req.Method, req.URL.Redacted(), id)
	}
	return b.String()
}

// Masked replaces a secret value.
const Masked = "***"

// Mask returns body for the log: JSON with its secret values masked, other
// text as it is; both cut at MaxBody.
func Mask(body []byte, contentType string) string {
	ct, _, _ := mime.ParseMediaType(contentType)
	if ct == "application/json" || strings.HasSuffix(ct, "+json") || json.Valid(body) {
		var v any
		dec := json.NewDecoder(bytes.NewReader(body))
		dec.UseNumber()
		if dec.Decode(&v) == nil {
			if out, err := json.Marshal(maskValue(v, "")); err == nil {
				body = out
			}
		} else {
			// Malformed JSON may still hold a secret: show none of it.
			return fmt.Sprintf("<%d bytes of malformed JSON omitted>", len(body))
		}
	}
	if len(body) > MaxBody {
		return fmt.Sprintf("%s… (%d more bytes)", body[:MaxBody], len(body)-MaxBody)
	}
	return string(body)
}

func secretKey(k string) bool {
	k = strings.ToLower(k)
	for _, s := range []string{"password", "secret", "passcode", "private_key", "sealed"} {
		if strings.Contains(k, s) {
			return true
		}
	}
	return false
}

// maskValue masks v, the value of key parent.
func maskValue(v any, parent string) any {
	switch x := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			switch {
			case secretKey(k):
				out[k] = Masked
			case strings.EqualFold(k, "token"):
				if _, isString := e.(string); isString {
					out[k] = Masked
				} else {
					out[k] = maskValue(e, k)
				}
			case strings.EqualFold(parent, "token") && strings.EqualFold(k, "id"):
				out[k] = Masked
			default:
				out[k] = maskValue(e, k)
			}
		}
		return out
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = maskValue(e, parent)
		}
		return out
	}
	return v
}
