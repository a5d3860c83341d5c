package oslo

import (
	"encoding/json"
	"errors"
	"fmt"
	"testing"

	"github.com/google/go-cmp/cmp"
)

type classedError struct{}

func (classedError) Error() string      { return "quota exceeded" }
func (classedError) OsloClass() string  { return "QuotaError" }
func (classedError) OsloModule() string { return "trustpool.quota" }
func (classedError) OsloKwargs() map[string]any {
	return map[string]any{"code": 413}
}

func TestFailureFromError(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want *Failure
	}{
		{"nil", nil, nil},
		{"plain error", errors.New("attestation failed"), &Failure{
			Class: "TrustpoolError", Module: "trustpool.exception", Message: "attestation failed",
			Traceback: []string{"trustpool.exception.TrustpoolError: attestation failed\n"},
			Args:      []any{"attestation failed"}, Kwargs: map[string]any{},
		}},
		{"value error, wrapped", fmt.Errorf("handler: %w", NewValueError("bad nonce")), &Failure{
			Class: "ValueError", Module: "builtins", Message: "bad nonce",
			Traceback: []string{"ValueError: bad nonce\n"}, Args: []any{"bad nonce"}, Kwargs: map[string]any{},
		}},
		{"classed error, wrapped", fmt.Errorf("reserve: %w", classedError{}), &Failure{
			Class: "QuotaError", Module: "trustpool.quota", Message: "reserve: quota exceeded",
			Traceback: []string{"trustpool.quota.QuotaError: reserve: quota exceeded\n"},
			Args:      []any{}, Kwargs: map[string]any{"code": 413},
		}},
		{"re-raised _Remote failure", &RemoteError{Failure{Class: "ComputeHostNotFound_Remote", Module: "nova.exception_Remote", Message: "m"}},
			&Failure{Class: "ComputeHostNotFound", Module: "nova.exception", Message: "m"}},
		{"only class _Remote: kept", &RemoteError{Failure{Class: "X_Remote", Module: "m"}}, &Failure{Class: "X_Remote", Module: "m"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, FailureFromError(tt.err)); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

func TestRemoteErrorText(t *testing.T) {
	for _, tt := range []struct {
		f    Failure
		want string
	}{
		{NewValueError("bad").Failure, "remote ValueError: bad"},
		{Failure{Class: "ComputeHostNotFound", Module: "nova.exception", Message: "Compute host x could not be found."},
			"remote nova.exception.ComputeHostNotFound: Compute host x could not be found."},
		{Failure{Message: "garbled"}, "remote error: garbled"},
	} {
		if got := (&RemoteError{tt.f}).Error(); got != tt.want {
			t.Errorf("Error() = %q, want %q", got, tt.want)
		}
	}
	var re *RemoteError
	if err := fmt.Errorf("call: %w", NewValueError("x")); !errors.As(err, &re) || re.Class != "ValueError" {
		t.Errorf("errors.As failed: %v", re)
	}
}

func TestNewRemoteErrorNovaStyle(t *testing.T) {
	// As the Go stand-in in interop_raw_server_replies.json sent it, and
	// Nova rebuilt ComputeHostNotFound from it.
	want := loadCapture(t, "interop_raw_server_replies.json").Replies[1].FailureDecoded
	f := NewRemoteError("nova.exception", "ComputeHostNotFound", "Compute host gohost1 could not be found.",
		map[string]any{"host": "gohost1", "code": 404}).Failure
	got := jsonAny(t, mustMarshalFailure(t, &f)).(map[string]any)
	w := jsonAny(t, want).(map[string]any)
	delete(got, "tb")
	delete(w, "tb")
	if diff := cmp.Diff(w, got); diff != "" {
		t.Errorf("(-stand-in +ours):\n%s", diff)
	}
}

func TestParseFailure(t *testing.T) {
	f, err := ParseFailure(`{"class": "X", "module": "m", "message": "t", "tb": ["a\n"], "args": [1.5, "a"], "kwargs": {"n": 12345678901234567890}}`)
	if err != nil {
		t.Fatal(err)
	}
	want := &Failure{Class: "X", Module: "m", Message: "t", Traceback: []string{"a\n"},
		Args: []any{json.Number("1.5"), "a"}, Kwargs: map[string]any{"n": json.Number("12345678901234567890")}}
	if diff := cmp.Diff(want, f); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	// Missing members are fine (oslo uses .get with defaults).
	if f, err := ParseFailure(`{"class": "X"}`); err != nil || f.Class != "X" {
		t.Errorf("minimal failure: %+v, %v", f, err)
	}
	for _, bad := range []string{`nope`, `[]`, `{"tb": "x"}`, `{"args": {}}`, `{"kwargs": []}`, `{"class": 1}`, `{} x`} {
		if _, err := ParseFailure(bad); !errors.Is(err, ErrMalformedMessage) {
			t.Errorf("ParseFailure(%q) error = %v", bad, err)
		}
	}
}
