package oslo

import (
	"encoding/json"
	"errors"
	"strings"
)

// Failure is a remote exception as oslo serialises it into a reply's
// "failure" string: {"class", "module", "message", "tb", "args", "kwargs"}.
type Failure struct {
	// Class is the exception class name, e.g. "ValueError".
	Class string
	// Module is its Python module, e.g. "builtins" or "nova.exception".
	Module string
	// Message is str(exception).
	Message string
	// Traceback holds formatted traceback lines ("tb"), each ending in "\n".
	Traceback []string
	// Args are the exception's positional arguments (numbers decode as
	// json.Number).
	Args []any
	// Kwargs are its keyword arguments; Nova exceptions are rebuilt from
	// these alone (msg_fmt placeholders plus "code").
	Kwargs map[string]any
}

// Modules a Failure commonly names.
const (
	// BuiltinsModule makes a Python caller raise the builtin class itself.
	BuiltinsModule = "builtins"
	// DispatcherModule is where oslo's NoSuchMethod and UnsupportedVersion live.
	DispatcherModule = "oslo_messaging.rpc.dispatcher"
	// TrustpoolModule is the module of Trustpool's own error classes; a
	// Python caller gets oslo_messaging.RemoteError carrying class and message.
	TrustpoolModule = "trustpool.exception"
	// TrustpoolErrorClass is the class of errors that name none.
	TrustpoolErrorClass = "TrustpoolError"
)

// remoteSuffix marks exception classes the Python client re-created.
const remoteSuffix = "_Remote"

// failureWire is the JSON form, members in oslo's order.
type failureWire struct {
	Class   string         `json:"class"`
	Module  string         `json:"module"`
	Message string         `json:"message"`
	TB      []string       `json:"tb"`
	Args    []any          `json:"args"`
	Kwargs  map[string]any `json:"kwargs"`
}

// marshal is the failure's JSON text, with oslo's "_Remote" stripping and
// empty lists/objects for missing tb/args/kwargs.
func (f *Failure) marshal() ([]byte, error) {
	w := failureWire{Class: f.Class, Module: f.Module, Message: f.Message, TB: f.Traceback, Args: f.Args, Kwargs: f.Kwargs}
	w.Class, w.Module = stripRemote(w.Class, w.Module)
	if w.TB == nil {
		w.TB = []string{}
	}
	if w.Args == nil {
		w.Args = []any{}
	}
	if w.Kwargs == nil {
		w.Kwargs = map[string]any{}
	}
	return marshalJSONNoEscape(w)
}

// stripRemote drops the "_Remote" suffix when both class and module carry
// it (a re-raised remote exception), as oslo's serialize_remote_exception.
func stripRemote(class, module string) (string, string) {
	if strings.HasSuffix(class, remoteSuffix) && strings.HasSuffix(module, remoteSuffix) {
		return strings.TrimSuffix(class, remoteSuffix), strings.TrimSuffix(module, remoteSuffix)
	}
	return class, module
}

// parseFailure decodes a "failure" string. Text that is not a failure
// object becomes a Failure carrying the text as its message.
func parseFailure(s string) *Failure {
	f, err := ParseFailure(s)
	if err != nil {
		return &Failure{Message: s}
	}
	return f
}

// ParseFailure decodes the JSON text of a failure (the "failure" string of
// a reply). Unlike DecodeReply it reports text that is not a failure object
// as an error wrapping ErrMalformedMessage.
func ParseFailure(s string) (*Failure, error) {
	if _, err := decodeObject([]byte(s)); err != nil {
		return nil, err
	}
	dec := json.NewDecoder(strings.NewReader(s))
	dec.UseNumber()
	var w failureWire
	if err := dec.Decode(&w); err != nil {
		return nil, malformed("failure: %v", err)
	}
	return &Failure{Class: w.Class, Module: w.Module, Message: w.Message, Traceback: w.TB, Args: w.Args, Kwargs: w.Kwargs}, nil
}

// QualifiedClass is module.Class, or just Class for builtins (as Python
// prints them).
func (f *Failure) QualifiedClass() string {
	switch f.Module {
	case "", BuiltinsModule, "exceptions":
		return f.Class
	}
	return f.Module + "." + f.Class
}

// RemoteError is a Failure as a Go error: what Client.Call returns for a
// failure reply, and what a handler returns to choose the class a Python
// caller sees.
type RemoteError struct {
	Failure
}

// Error is "remote <module>.<Class>: <message>".
func (e *RemoteError) Error() string {
	name := e.QualifiedClass()
	if name == "" {
		name = "error"
	}
	return "remote " + name + ": " + e.Message
}

// NewRemoteError builds a failure of any class: for a Nova caller to catch
// a Nova exception, use module "nova.exception", the class name, and the
// kwargs its msg_fmt needs (plus "code"); Nova rebuilds it from kwargs.
// args is [message] unless kwargs are given (then empty, as Go stand-ins
// verified against Nova did).
func NewRemoteError(module, class, message string, kwargs map[string]any) *RemoteError {
	args := []any{message}
	if len(kwargs) > 0 {
		args = []any{}
	} else {
		kwargs = map[string]any{}
	}
	f := Failure{Class: class, Module: module, Message: message, Args: args, Kwargs: kwargs}
	f.Traceback = []string{f.tracebackLine()}
	return &RemoteError{Failure: f}
}

// NewValueError is a builtins.ValueError: a Python caller catches
// ValueError with msg as its message.
func NewValueError(msg string) *RemoteError {
	return NewRemoteError(BuiltinsModule, "ValueError", msg, nil)
}

// tracebackLine is the last line Python's traceback module prints.
func (f *Failure) tracebackLine() string {
	return f.QualifiedClass() + ": " + f.Message + "\n"
}

// FailureFromError turns a handler's error into the failure sent back. A
// *RemoteError anywhere in err's chain is sent as is. Otherwise the class
// is taken from an error in the chain with `OsloClass() string` (default
// "TrustpoolError"), the module from one with `OsloModule() string`
// (default "trustpool.exception"), kwargs from one with
// `OsloKwargs() map[string]any`, and the message is err.Error(): a Python
// caller gets oslo_messaging.RemoteError with that class and message.
// A nil err gives nil.
func FailureFromError(err error) *Failure {
	if err == nil {
		return nil
	}
	var re *RemoteError
	if errors.As(err, &re) && re != nil {
		f := re.Failure
		f.Class, f.Module = stripRemote(f.Class, f.Module)
		return &f
	}
	class, module := TrustpoolErrorClass, TrustpoolModule
	var c interface{ OsloClass() string }
	if errors.As(err, &c) && c.OsloClass() != "" {
		class = c.OsloClass()
	}
	var m interface{ OsloModule() string }
	if errors.As(err, &m) && m.OsloModule() != "" {
		module = m.OsloModule()
	}
	var kwargs map[string]any
	var k interface{ OsloKwargs() map[string]any }
	if errors.As(err, &k) {
		kwargs = k.OsloKwargs()
	}
	f := NewRemoteError(module, class, err.Error(), kwargs).Failure
	return &f
}

// NoSuchMethod is the failure oslo's dispatcher sends when a compatible
// endpoint lacks the method (class NoSuchMethod, an AttributeError).
func NoSuchMethod(method string) *Failure {
	f := NewRemoteError(DispatcherModule, "NoSuchMethod", "Endpoint does not support RPC method "+method, nil).Failure
	return &f
}

// UnsupportedVersion is the failure oslo's dispatcher sends when no
// endpoint with the namespace is compatible with the requested version.
// method may be empty (then not mentioned, as in oslo).
func UnsupportedVersion(version, method string) *Failure {
	msg := "Endpoint does not support RPC version " + version
	if method != "" {
		msg += ". Attempted method: " + method
	}
	f := NewRemoteError(DispatcherModule, "UnsupportedVersion", msg, nil).Failure
	return &f
}
