// Package peer is the RPC endpoint that the interop tests, the oslo-peer
// command and the benchmark serve from Go. It mirrors tests/interop/py/server.py
// method for method, so a caller cannot tell which language answered:
//
//	echo(value)          returns value unchanged (the JSON text is passed through
//	                     byte for byte, so big integers and 2.0 survive)
//	fail(kind, message)  kind "value": builtins.ValueError(message);
//	                     kind "plain": a plain Go error, which oslo.FailureFromError
//	                     sends as trustpool.exception.TrustpoolError;
//	                     any other kind: trustpool.exception.InteropError
//	sleep(seconds)       waits (or until the request's context ends), returns seconds
//	record(value)        appends value to the Recorder (a cast target)
//	recorded()           returns every recorded value, in arrival order
//	context()            returns the request context the server received
//
// Unknown or missing keyword arguments fail with builtins.TypeError, as a
// Python endpoint method would.
package peer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/trustpool/trustpool/internal/oslo"
)

// InteropError is the peer's own error class; Python callers receive it as
// oslo_messaging.RemoteError with exc_type "InteropError".
type InteropError struct{ Msg string }

func (e *InteropError) Error() string { return e.Msg }

// OsloClass names the Python class oslo callers see.
func (e *InteropError) OsloClass() string { return "InteropError" }

// Recorder keeps the values received by record().
type Recorder struct {
	mu   sync.Mutex
	vals []json.RawMessage
	subs []chan struct{}
}

// Values returns a copy of the recorded values.
func (r *Recorder) Values() []json.RawMessage {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.vals)
}

// Changed returns a channel closed at the next record().
func (r *Recorder) Changed() <-chan struct{} {
	r.mu.Lock()
	defer r.mu.Unlock()
	ch := make(chan struct{})
	r.subs = append(r.subs, ch)
	return ch
}

func (r *Recorder) add(v json.RawMessage) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.vals = append(r.vals, slices.Clone(v))
	for _, ch := range r.subs {
		close(ch)
	}
	r.subs = nil
}

// Endpoint returns the peer's endpoint with the given API version and
// namespace, recording into rec.
func Endpoint(version, namespace string, rec *Recorder) oslo.Endpoint {
	return oslo.Endpoint{
		Version:   version,
		Namespace: namespace,
		Methods: map[string]oslo.Handler{
			"echo": func(ctx context.Context, req *oslo.Request) (any, error) {
				if err := wantArgs(req, "value"); err != nil {
					return nil, err
				}
				return req.Args["value"], nil
			},
			"fail": func(ctx context.Context, req *oslo.Request) (any, error) {
				if err := wantArgs(req, "kind", "message"); err != nil {
					return nil, err
				}
				var kind, msg string
				if err := json.Unmarshal(req.Args["kind"], &kind); err != nil {
					return nil, typeError("fail() argument kind must be a string")
				}
				if err := json.Unmarshal(req.Args["message"], &msg); err != nil {
					return nil, typeError("fail() argument message must be a string")
				}
				switch kind {
				case "value":
					return nil, oslo.NewValueError(msg)
				case "plain":
					return nil, errors.New(msg)
				default:
					return nil, &InteropError{Msg: msg}
				}
			},
			"sleep": func(ctx context.Context, req *oslo.Request) (any, error) {
				if err := wantArgs(req, "seconds"); err != nil {
					return nil, err
				}
				var s float64
				if err := json.Unmarshal(req.Args["seconds"], &s); err != nil {
					return nil, typeError("sleep() argument seconds must be a number")
				}
				t := time.NewTimer(time.Duration(s * float64(time.Second)))
				defer t.Stop()
				select {
				case <-t.C:
				case <-ctx.Done():
					return nil, fmt.Errorf("sleep interrupted: %w", ctx.Err())
				}
				return req.Args["seconds"], nil
			},
			"record": func(ctx context.Context, req *oslo.Request) (any, error) {
				if err := wantArgs(req, "value"); err != nil {
					return nil, err
				}
				rec.add(req.Args["value"])
				return nil, nil
			},
			"context": func(ctx context.Context, req *oslo.Request) (any, error) {
				if err := wantArgs(req); err != nil {
					return nil, err
				}
				if req.Context == nil {
					return map[string]any{}, nil
				}
				return req.Context, nil
			},
			"recorded": func(ctx context.Context, req *oslo.Request) (any, error) {
				if err := wantArgs(req); err != nil {
					return nil, err
				}
				v := rec.Values()
				if v == nil {
					v = []json.RawMessage{}
				}
				return v, nil
			},
		},
	}
}

func typeError(msg string) error {
	return &oslo.RemoteError{Failure: oslo.Failure{Class: "TypeError", Module: "builtins", Message: msg, Args: []any{msg}}}
}

// wantArgs checks the keyword arguments as Python's call would.
func wantArgs(req *oslo.Request, names ...string) error {
	var unexpected, missing []string
	for k := range req.Args {
		if !slices.Contains(names, k) {
			unexpected = append(unexpected, k)
		}
	}
	for _, n := range names {
		if _, ok := req.Args[n]; !ok {
			missing = append(missing, n)
		}
	}
	sort.Strings(unexpected)
	switch {
	case len(unexpected) > 0:
		return typeError(fmt.Sprintf("%s() got an unexpected keyword argument '%s'", req.Method, unexpected[0]))
	case len(missing) > 0:
		return typeError(fmt.Sprintf("%s() missing required argument: '%s'", req.Method, strings.Join(missing, "', '")))
	}
	return nil
}
