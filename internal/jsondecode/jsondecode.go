// Package jsondecode decodes JSON from untrusted peers (REST request bodies,
// RPC arguments) strictly, with errors fit to send back to them.
//
// encoding/json's errors name Go types and struct names ("cannot unmarshal
// string into Go struct field profileDoc.pcrs of type []string"); the errors
// of [Strict] say the same in JSON terms ("pcrs: want an array, got a
// string") and never mention Go types. Strict also refuses what
// json.Unmarshal quietly accepts: fields the destination does not have and
// data after the first JSON value.
//
// The package does not log.
package jsondecode

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strings"
	"time"
)

// ErrInvalid is wrapped by every error Strict returns for bad input.
var ErrInvalid = errors.New("invalid JSON")

// Strict decodes data, which must hold exactly one JSON value, into v (a
// non-nil pointer). Object fields v has no place for are errors.
func Strict(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return describe(err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return fmt.Errorf("%w: unexpected data after the JSON value", ErrInvalid)
	}
	return nil
}

func describe(err error) error {
	var (
		syn *json.SyntaxError
		typ *json.UnmarshalTypeError
		tpe *time.ParseError
		inv *json.InvalidUnmarshalError
	)
	switch {
	case errors.As(err, &inv):
		return fmt.Errorf("decode JSON: %w", err) // a programming error, not bad input
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return fmt.Errorf("%w: unexpected end of input", ErrInvalid)
	case errors.As(err, &syn):
		return fmt.Errorf("%w at byte %d: %s", ErrInvalid, syn.Offset, syn.Error())
	case errors.As(err, &typ):
		got := typ.Value
		if got == "bool" {
			got = "boolean"
		}
		msg := fmt.Sprintf("want %s, got %s", jsonKind(typ.Type), article(got))
		if typ.Field != "" {
			msg = typ.Field + ": " + msg
		}
		return fmt.Errorf("%w: %s", ErrInvalid, msg)
	case errors.As(err, &tpe):
		return fmt.Errorf("%w: %q is not an RFC 3339 time", ErrInvalid, tpe.Value)
	}
	// The remaining errors of encoding/json ("unknown field", base64 and
	// custom unmarshalers' errors) name no Go type.
	msg, _ := strings.CutPrefix(err.Error(), "json: ")
	return fmt.Errorf("%w: %s", ErrInvalid, msg)
}

func article(s string) string {
	switch {
	case strings.HasPrefix(s, "number "):
		return "the " + s
	case strings.HasPrefix(s, "array"), strings.HasPrefix(s, "object"):
		return "an " + s
	}
	return "a " + s
}

// jsonKind names, with an article, the JSON that decodes into t.
func jsonKind(t reflect.Type) string {
	n := noun(t)
	if strings.IndexAny(n[:1], "aeiou") == 0 {
		return "an " + n
	}
	return "a " + n
}

func noun(t reflect.Type) string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t == reflect.TypeFor[time.Time]() {
		return "RFC 3339 time string"
	}
	switch t.Kind() {
	case reflect.String:
		return "string"
	case reflect.Bool:
		return "boolean"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		return "integer"
	case reflect.Float32, reflect.Float64:
		return "number"
	case reflect.Slice:
		if t.Elem().Kind() == reflect.Uint8 {
			return "base64 string"
		}
		switch e := noun(t.Elem()); {
		case strings.HasPrefix(e, "array"):
			return "array of arrays"
		case e != "value":
			return "array of " + e + "s"
		}
		return "array"
	case reflect.Array:
		return "array"
	case reflect.Map, reflect.Struct:
		return "object"
	}
	return "value"
}
