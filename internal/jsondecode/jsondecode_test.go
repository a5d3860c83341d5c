package jsondecode

import (
	"errors"
	"regexp"
	"testing"
	"time"
)

type innerDoc struct {
	Allow bool `json:"allow"`
}

type outerDoc struct {
	Name     string              `json:"name"`
	Profiles []string            `json:"profiles"`
	PCRs     map[string][]string `json:"pcrs"`
	Index    []int               `json:"index"`
	Inner    *innerDoc           `json:"inner"`
	Blob     []byte              `json:"blob"`
	At       time.Time           `json:"at"`
	Nested   [][]string          `json:"nested"`
	Ratio    float64             `json:"ratio"`
}

// goTypes matches what encoding/json's messages say about Go: type names,
// struct names and the words it uses for them.
var goTypes = regexp.MustCompile(`Go (struct|value)|of type|\[\]|map\[|interface \{|outerDoc|innerDoc|int64|uint8|float64|jsondecode\.`)

func TestStrict(t *testing.T) {
	tests := []struct {
		in, want string // want: the whole message; "" means no error
	}{
		{`{"name": "a", "profiles": ["x"], "pcrs": {"0": ["ab"]}, "inner": {"allow": true}, "blob": "AQI=", "at": "2026-01-02T03:04:05Z"}`, ""},
		{`{"name": 5}`, "invalid JSON: name: want a string, got a number"},
		{`{"profiles": "a"}`, "invalid JSON: profiles: want an array of strings, got a string"},
		{`{"profiles": [1]}`, "invalid JSON: profiles: want a string, got a number"},
		{`{"pcrs": []}`, "invalid JSON: pcrs: want an object, got an array"},
		{`{"pcrs": {"0": "ab"}}`, "invalid JSON: pcrs: want an array of strings, got a string"},
		{`{"index": [1.5]}`, "invalid JSON: index: want an integer, got the number 1.5"},
		{`{"index": ["a"]}`, "invalid JSON: index: want an integer, got a string"},
		{`{"inner": {"allow": "yes"}}`, "invalid JSON: inner.allow: want a boolean, got a string"},
		{`{"inner": 1}`, "invalid JSON: inner: want an object, got a number"},
		{`{"nested": "x"}`, "invalid JSON: nested: want an array of arrays, got a string"},
		{`{"ratio": true}`, "invalid JSON: ratio: want a number, got a boolean"},
		{`{"blob": 1}`, "invalid JSON: blob: want a base64 string, got a number"},
		{`{"blob": "!!"}`, "invalid JSON: illegal base64 data at input byte 0"},
		{`{"at": "yesterday"}`, `invalid JSON: "yesterday" is not an RFC 3339 time`},
		{`[1]`, "invalid JSON: want an object, got an array"},
		{`{"bogus": 1}`, `invalid JSON: unknown field "bogus"`},
		{`{"name": "a"} {}`, "invalid JSON: unexpected data after the JSON value"},
		{`{"name": "a"} x`, "invalid JSON: unexpected data after the JSON value"},
		{`{"name": "a"`, "invalid JSON: unexpected end of input"},
		{``, "invalid JSON: unexpected end of input"},
		{`{"name": x}`, "invalid JSON at byte 10: invalid character 'x' looking for beginning of value"},
	}
	for _, tt := range tests {
		var d outerDoc
		err := Strict([]byte(tt.in), &d)
		got := ""
		if err != nil {
			got = err.Error()
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("Strict(%s) = %v, does not wrap ErrInvalid", tt.in, err)
			}
		}
		if got != tt.want {
			t.Errorf("Strict(%s) = %q, want %q", tt.in, got, tt.want)
		}
		if goTypes.MatchString(got) {
			t.Errorf("Strict(%s) = %q names Go types", tt.in, got)
		}
	}
}

// FuzzStrict: any input decodes or fails with ErrInvalid, and no message
// names a Go type.
func FuzzStrict(f *testing.F) {
	for _, s := range []string{`{"name": 5}`, `{"pcrs": {"0": [1]}}`, `{"inner": {"allow": 1}}`, `[1]`, `{"index": [1e99]}`, `{"at": 5}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var d outerDoc
		err := Strict(data, &d)
		if err == nil {
			return
		}
		if !errors.Is(err, ErrInvalid) {
			t.Fatalf("Strict(%q) = %v, does not wrap ErrInvalid", data, err)
		}
		if goTypes.MatchString(err.Error()) {
			t.Fatalf("Strict(%q) = %q names Go types", data, err)
		}
	})
}
