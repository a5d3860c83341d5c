// Package localapi is the filter shim's HTTP API for the Nova filter
// (the decision of trustcache.Cache.Filter), served on a unix socket:
//
//	POST /v1/filter  {"hosts": [...], "trusted_host": "trusted"|"untrusted"|"unknown"|null, "profile": "<name>"|null,
//	                  "answer": "full"|"mask"|null}
//	              → {"passes": [...], "rejected": {"<host>": "<reason>", ...}}  (answer full, the default)
//	              → {"mask": "0110..."}  (answer mask: one character per requested host, in
//	                                     request order, "1" passes; the Nova filter's hot path)
//	GET  /healthz    200 when the snapshot is loaded, the fanout followed and the service heard from
//	                 within the verdict validity, else 503 with status "degraded" (JSON detail)
//	GET  /metrics    Prometheus text exposition (format 0.0.4)
//
// Requests are bounded (body size and number of hosts) and decoded
// strictly: unknown fields, a missing hosts list, empty or over-long host
// names, unknown trusted_host values, malformed profile names and requests
// asking for neither trusted_host nor profile are answered 400 with a JSON
// {"error": "..."} naming the problem. The socket's permissions are the
// access control; the API itself does not authenticate.
package localapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/trustpool/trustpool/internal/jsondecode"
	"github.com/trustpool/trustpool/internal/verdict"
	"github.com/trustpool/trustpool/nova-filter-shim/internal/trustcache"
)

// Defaults for the request bounds.
const (
	DefaultMaxBodyBytes = 4 << 20
	DefaultMaxHosts     = 20000
	// MaxHostLen is the longest host name accepted (a DNS name is ≤ 253).
	MaxHostLen = 255
)

// State is the shim's connection state, reported by /healthz and /metrics.
type State struct {
	// SnapshotLoaded: get_verdicts answered at least once.
	SnapshotLoaded bool
	// Subscribed: the verdict fanout consumer has started (it reconnects
	// by itself after broker failures).
	Subscribed bool
	// SnapshotFailures counts failed get_verdicts calls.
	SnapshotFailures uint64
	// LastHeard is when the service was last heard from: a get_verdicts
	// answer, or a verdicts_changed message with a recently signed
	// verdict under the pinned key. Zero: never.
	LastHeard time.Time
	// Silent: nothing was heard from the service for longer than the
	// verdict validity, so every verdict held has expired or will before
	// the service could renew it.
	Silent bool
	// SnapshotFileWrites and SnapshotFileFailures count the writes of the
	// verdict snapshot file that succeeded and failed.
	SnapshotFileWrites, SnapshotFileFailures uint64
}

// Problems says why the shim is degraded; none means healthy.
func (s State) Problems() []string {
	var p []string
	if !s.SnapshotLoaded {
		p = append(p, "verdict snapshot (get_verdicts) not loaded yet")
	}
	if !s.Subscribed {
		p = append(p, "verdict fanout not followed yet")
	}
	if s.Silent {
		p = append(p, "nothing heard from the attestation service for longer than the verdict validity")
	}
	return p
}

// Config configures the API.
type Config struct {
	// Cache answers the filter questions. Required.
	Cache *trustcache.Cache
	// State reports the shim's state; nil means nothing is loaded yet.
	State func() State
	// Logger logs rejected requests at debug level; nil discards.
	Logger *slog.Logger
	// MaxBodyBytes bounds a request body; 0 means DefaultMaxBodyBytes.
	MaxBodyBytes int64
	// MaxHosts bounds the hosts of one request; 0 means DefaultMaxHosts.
	MaxHosts int
}

// API is the http.Handler.
type API struct {
	cfg Config
	mux *http.ServeMux

	mu       sync.Mutex
	requests map[int]uint64 // by HTTP status of /v1/filter

	passed, rejected atomic.Uint64
	seconds          atomic.Uint64 // float64 bits of the summed filter duration
}

var _ http.Handler = (*API)(nil)

// New returns the API handler.
func New(cfg Config) *API {
	if cfg.MaxBodyBytes <= 0 {
		cfg.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if cfg.MaxHosts <= 0 {
		cfg.MaxHosts = DefaultMaxHosts
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.State == nil {
		cfg.State = func() State { return State{} }
	}
	a := &API{cfg: cfg, mux: http.NewServeMux(), requests: map[int]uint64{}}
	a.mux.HandleFunc("/v1/filter", a.filter)
	a.mux.HandleFunc("/healthz", a.healthz)
	a.mux.HandleFunc("/metrics", a.metrics)
	return a
}

// ServeHTTP implements http.Handler.
func (a *API) ServeHTTP(w http.ResponseWriter, r *http.Request) { a.mux.ServeHTTP(w, r) }

// filterRequest is the wire form; pointers tell missing/null from empty.
type filterRequest struct {
	Hosts       *[]string `json:"hosts"`
	TrustedHost *string   `json:"trusted_host"`
	Profile     *string   `json:"profile"`
	Answer      *string   `json:"answer"`
}

// Answer forms.
const (
	// AnswerFull is {"passes": [...], "rejected": {...}} (the default).
	AnswerFull = "full"
	// AnswerMask is {"mask": "..."}: "1" or "0" per requested host.
	AnswerMask = "mask"
)

// FilterRequest is a parsed POST /v1/filter.
type FilterRequest struct {
	trustcache.Request
	// Mask asks for the mask answer.
	Mask bool
}

// ErrBadRequest is wrapped by every problem with a filter request; the API
// answers those with 400.
var ErrBadRequest = errors.New("bad filter request")

// ParseFilterRequest decodes and validates a POST /v1/filter body. Errors
// wrap an explanation for the client.
func ParseFilterRequest(body []byte, maxHosts int) (FilterRequest, error) {
	fr, ok := fastFilterRequest(body, maxHosts)
	if !ok {
		var err error
		if fr, err = decodeFilterRequest(body); err != nil {
			return FilterRequest{}, err
		}
	}
	req, err := parseRequest(fr, maxHosts)
	if err != nil {
		return FilterRequest{}, err
	}
	out := FilterRequest{Request: req}
	if fr.Answer != nil {
		switch *fr.Answer {
		case AnswerFull:
		case AnswerMask:
			out.Mask = true
		default:
			return FilterRequest{}, fmt.Errorf("%w: answer %q is not full, mask or null", ErrBadRequest, *fr.Answer)
		}
	}
	return out, nil
}

func parseRequest(fr filterRequest, maxHosts int) (trustcache.Request, error) {
	if fr.Hosts == nil {
		return trustcache.Request{}, fmt.Errorf("%w: hosts is required (a list of host names)", ErrBadRequest)
	}
	hosts := *fr.Hosts
	if len(hosts) > maxHosts {
		return trustcache.Request{}, fmt.Errorf("%w: %d hosts, at most %d per request", ErrBadRequest, len(hosts), maxHosts)
	}
	for i, h := range hosts {
		if err := checkHost(h); err != nil {
			return trustcache.Request{}, fmt.Errorf("%w: hosts[%d]: %w", ErrBadRequest, i, err)
		}
	}
	req := trustcache.Request{Hosts: hosts}
	if fr.TrustedHost != nil {
		lvl := verdict.Status(*fr.TrustedHost)
		if !lvl.Valid() {
			return trustcache.Request{}, fmt.Errorf("%w: trusted_host %q is not trusted, untrusted, unknown or null", ErrBadRequest, *fr.TrustedHost)
		}
		req.TrustedHost = &lvl
	}
	if fr.Profile != nil {
		if !trustcache.ValidProfileName(*fr.Profile) {
			return trustcache.Request{}, fmt.Errorf("%w: profile %q is not a profile name (%s)", ErrBadRequest, *fr.Profile, trustcache.ProfileNamePattern)
		}
		p := *fr.Profile
		req.Profile = &p
	}
	if req.TrustedHost == nil && req.Profile == nil {
		return trustcache.Request{}, fmt.Errorf("%w: one of trusted_host or profile is required", ErrBadRequest)
	}
	return req, nil
}

// decodeFilterRequest is the strict encoding/json decoding of a request,
// for every body fastFilterRequest does not take.
// Its errors name the field and JSON type, never Go types.
func decodeFilterRequest(body []byte) (filterRequest, error) {
	var fr filterRequest
	if err := jsondecode.Strict(body, &fr); err != nil {
		return filterRequest{}, fmt.Errorf("%w: body is not a filter request: %w", ErrBadRequest, err)
	}
	return fr, nil
}

func checkHost(h string) error {
	switch {
	case h == "":
		return errors.New("empty host name")
	case len(h) > MaxHostLen:
		return fmt.Errorf("host name longer than %d bytes", MaxHostLen)
	case !utf8.ValidString(h):
		return errors.New("host name is not UTF-8")
	}
	for i := 0; i < len(h); i++ {
		if c := h[i]; c <= ' ' || c == 0x7f {
			return fmt.Errorf("host name %q contains a space or control character", h)
		} else if c >= utf8.RuneSelf {
			return checkHostRunes(h)
		}
	}
	return nil
}

func checkHostRunes(h string) error {
	for _, r := range h {
		if unicode.IsControl(r) || unicode.IsSpace(r) {
			return fmt.Errorf("host name %q contains a space or control character", h)
		}
	}
	return nil
}

func (a *API) filter(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	code := a.serveFilter(w, r)
	a.mu.Lock()
	a.requests[code]++
	a.mu.Unlock()
	addFloat(&a.seconds, time.Since(start).Seconds())
}

func (a *API) serveFilter(w http.ResponseWriter, r *http.Request) int {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		return writeError(w, http.StatusMethodNotAllowed, "use POST")
	}
	body, err := readBody(w, r, a.cfg.MaxBodyBytes)
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			return writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("request body larger than %d bytes", a.cfg.MaxBodyBytes))
		}
		return writeError(w, http.StatusBadRequest, "read request body: "+err.Error())
	}
	req, err := ParseFilterRequest(body, a.cfg.MaxHosts)
	if err != nil {
		a.cfg.Logger.Debug("rejected filter request", "error", err)
		return writeError(w, http.StatusBadRequest, err.Error())
	}
	bp, _ := encodePool.Get().(*[]byte)
	var b []byte
	if req.Mask {
		b = append((*bp)[:0], `{"mask":"`...)
		start := len(b)
		b = a.cfg.Cache.Mask(req.Request, b)
		n := uint64(bytes.Count(b[start:], []byte{'1'}))
		a.passed.Add(n)
		a.rejected.Add(uint64(len(b)-start) - n)
		b = append(b, "\"}\n"...)
	} else {
		d := a.cfg.Cache.Filter(req.Request)
		a.passed.Add(uint64(len(d.Passes)))
		a.rejected.Add(uint64(len(d.Rejected)))
		b = encodeDecision((*bp)[:0], d)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(b) // Write does not keep b
	if cap(b) <= maxPooledEncode {
		*bp = b
		encodePool.Put(bp)
	}
	return http.StatusOK
}

// encodePool recycles answer buffers up to maxPooledEncode bytes.
var encodePool = sync.Pool{New: func() any { return new([]byte) }}

const maxPooledEncode = 1 << 20

// encodeDecision writes {"passes": [...], "rejected": {...}} by hand: in
// request order and without the reflection and key sorting of
// encoding/json, which dominate a 1,000-host answer otherwise.
func encodeDecision(b []byte, d trustcache.Decision) []byte {
	n := 32
	for _, h := range d.Passes {
		n += len(h) + 3
	}
	for _, r := range d.Rejected {
		n += len(r.Host) + len(r.Cause) + len(r.Note) + 9
	}
	if cap(b) < n {
		b = make([]byte, 0, n)
	}
	b = append(b[:0], `{"passes":[`...)
	for i, h := range d.Passes {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendJSONString(b, h)
	}
	b = append(b, `],"rejected":{`...)
	// Consecutive rejections mostly share cause and note: the encoded
	// reason of the previous one is copied from the buffer when they match.
	var lastCause, lastNote string
	lastStart, lastEnd := -1, -1
	for i, r := range d.Rejected {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendJSONString(b, r.Host)
		b = append(b, ':')
		if lastStart >= 0 && r.Cause == lastCause && r.Note == lastNote {
			b = append(b, b[lastStart:lastEnd]...)
			continue
		}
		start := len(b)
		if len(r.Cause)+len(r.Note)+3 > trustcache.MaxReasonLen {
			b = appendJSONString(b, r.Reason())
		} else {
			b = append(b, '"')
			b = appendJSONChars(b, r.Cause)
			if r.Note != "" {
				b = append(b, " ("...)
				b = appendJSONChars(b, r.Note)
				b = append(b, ')')
			}
			b = append(b, '"')
		}
		lastCause, lastNote, lastStart, lastEnd = r.Cause, r.Note, start, len(b)
	}
	return append(b, "}}\n"...)
}

const hexDigits = "0123456789abcdef"

// appendJSONString appends s as a JSON string. Invalid UTF-8 becomes
// U+FFFD, as encoding/json does.
func appendJSONString(b []byte, s string) []byte {
	b = append(b, '"')
	b = appendJSONChars(b, s)
	return append(b, '"')
}

// appendJSONChars appends the escaped characters of s, without quotes.
// Runs of characters that need no escaping are copied in one append.
func appendJSONChars(b []byte, s string) []byte {
	for i := 0; i < len(s); {
		j := i
		for j < len(s) && s[j] >= 0x20 && s[j] < utf8.RuneSelf && s[j] != '"' && s[j] != '\\' {
			j++
		}
		b = append(b, s[i:j]...)
		if i = j; i == len(s) {
			break
		}
		c := s[i]
		if c < utf8.RuneSelf {
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			default: // c < 0x20
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, `\ufffd`...)
		} else {
			b = append(b, s[i:i+size]...)
		}
		i += size
	}
	return b
}

// readBody reads at most limit bytes, in one allocation when the client
// sent a Content-Length.
func readBody(w http.ResponseWriter, r *http.Request, limit int64) ([]byte, error) {
	body := http.MaxBytesReader(w, r.Body, limit)
	if r.ContentLength <= 0 || r.ContentLength > limit {
		return io.ReadAll(body)
	}
	buf := make([]byte, r.ContentLength+1)
	n, err := io.ReadFull(body, buf)
	switch {
	case errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF):
		return buf[:n], nil
	case err != nil:
		return nil, err
	}
	// More than Content-Length: net/http reports that as an error.
	rest, err := io.ReadAll(body)
	return append(buf[:n], rest...), err
}

func (a *API) healthz(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		writeError(w, http.StatusMethodNotAllowed, "use GET")
		return
	}
	st := a.cfg.State()
	var heard any
	if !st.LastHeard.IsZero() {
		heard = st.LastHeard.UTC().Format(time.RFC3339Nano)
	}
	body := map[string]any{
		"status":                  "ok",
		"snapshot_loaded":         st.SnapshotLoaded,
		"subscribed":              st.Subscribed,
		"service_silent":          st.Silent,
		"last_heard_from_service": heard,
		"hosts":                   a.cfg.Cache.Len(),
	}
	code := http.StatusOK
	if len(st.Problems()) > 0 {
		body["status"] = "degraded"
		code = http.StatusServiceUnavailable
	}
	writeJSON(w, code, body)
}

func writeJSON(w http.ResponseWriter, code int, v any) int {
	b, err := json.Marshal(v)
	if err != nil {
		return writeError(w, http.StatusInternalServerError, "encode response")
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)+1))
	w.WriteHeader(code)
	_, _ = w.Write(append(b, '\n'))
	return code
}

func writeError(w http.ResponseWriter, code int, msg string) int {
	b, _ := json.Marshal(map[string]string{"error": msg})
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)+1))
	w.WriteHeader(code)
	_, _ = w.Write(append(b, '\n'))
	return code
}
