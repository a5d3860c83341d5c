package config

import (
	"encoding"
	"errors"
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"time"
)

var (
	// ErrUnknownKey is wrapped by every error about a key that the
	// configuration struct does not declare.
	ErrUnknownKey = errors.New("unknown configuration key")
	// ErrUnknownSection is wrapped by every error about a section that the
	// configuration struct does not declare.
	ErrUnknownSection = errors.New("unknown configuration section")
	// ErrInvalidValue is wrapped by every error about a value that does not
	// parse as the key's type.
	ErrInvalidValue = errors.New("invalid configuration value")
)

var (
	textUnmarshalerType = reflect.TypeFor[encoding.TextUnmarshaler]()
	durationType        = reflect.TypeFor[time.Duration]()
)

// Set sets the field of the section struct that section points to whose
// `toml:"key"` tag is key (fields without a tag match their name, as in
// BurntSushi/toml), parsing value from its string form:
//
//   - string: the value as is;
//   - bool: true/false/yes/no/on/off/1/0, case-insensitive (oslo.config's spellings);
//   - signed and unsigned integers: base 10;
//   - float32, float64;
//   - [time.Duration]: Go duration syntax such as "90s" (as BurntSushi/toml reads strings);
//   - types implementing [encoding.TextUnmarshaler]: UnmarshalText;
//   - slices of the above: comma-separated, each element trimmed of spaces;
//     the empty string is an empty list and an empty element is an error.
//
// Surrounding spaces are trimmed from everything but strings. An unknown key
// gives an error wrapping [ErrUnknownKey]; a value that does not parse, one
// wrapping [ErrInvalidValue]. On error the field is left unchanged.
func Set(section any, key, value string) error {
	rv := reflect.ValueOf(section)
	if rv.Kind() != reflect.Pointer || rv.IsNil() || rv.Elem().Kind() != reflect.Struct {
		return fmt.Errorf("set %q: section must be a non-nil pointer to a struct, not %T", key, section)
	}
	idx, ok := fieldIndex(rv.Elem().Type(), key)
	if !ok {
		return fmt.Errorf("%w %q", ErrUnknownKey, key)
	}
	field := rv.Elem().Field(idx)
	nv := reflect.New(field.Type()).Elem()
	if err := parseInto(nv, value); err != nil {
		return fmt.Errorf("set %q: %w", key, err)
	}
	field.Set(nv)
	return nil
}

// tagName returns the configuration name of a struct field and whether it is
// configurable at all (exported and not tagged "-").
func tagName(f reflect.StructField) (string, bool) {
	if !f.IsExported() {
		return "", false
	}
	name, _, _ := strings.Cut(f.Tag.Get("toml"), ",")
	switch name {
	case "-":
		return "", false
	case "":
		return f.Name, true
	}
	return name, true
}

// fieldIndex finds the field named key. Tags match exactly; untagged fields
// match their Go name case-insensitively, as BurntSushi/toml does.
func fieldIndex(t reflect.Type, key string) (int, bool) {
	for i := range t.NumField() {
		f := t.Field(i)
		name, ok := tagName(f)
		if !ok {
			continue
		}
		if name == key || (f.Tag.Get("toml") == "" && strings.EqualFold(name, key)) {
			return i, true
		}
	}
	return 0, false
}

// parseInto parses s into v, which must be settable and hold the zero value
// of its type.
func parseInto(v reflect.Value, s string) error {
	if reflect.PointerTo(v.Type()).Implements(textUnmarshalerType) {
		u, _ := v.Addr().Interface().(encoding.TextUnmarshaler)
		if err := u.UnmarshalText([]byte(s)); err != nil {
			return fmt.Errorf("%w: %w", ErrInvalidValue, err)
		}
		return nil
	}
	if v.Type() == durationType {
		d, err := time.ParseDuration(strings.TrimSpace(s))
		if err != nil {
			return fmt.Errorf("%w: %q is not a duration such as \"90s\"", ErrInvalidValue, s)
		}
		v.SetInt(int64(d))
		return nil
	}
	switch v.Kind() {
	case reflect.String:
		v.SetString(s)
	case reflect.Bool:
		b, err := ParseBool(s)
		if err != nil {
			return err
		}
		v.SetBool(b)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		n, err := strconv.ParseInt(strings.TrimSpace(s), 10, v.Type().Bits())
		if err != nil {
			return fmt.Errorf("%w: %q is not an integer of %d bits", ErrInvalidValue, s, v.Type().Bits())
		}
		v.SetInt(n)
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		n, err := strconv.ParseUint(strings.TrimSpace(s), 10, v.Type().Bits())
		if err != nil {
			return fmt.Errorf("%w: %q is not an unsigned integer of %d bits", ErrInvalidValue, s, v.Type().Bits())
		}
		v.SetUint(n)
	case reflect.Float32, reflect.Float64:
		f, err := strconv.ParseFloat(strings.TrimSpace(s), v.Type().Bits())
		if err != nil {
			return fmt.Errorf("%w: %q is not a number", ErrInvalidValue, s)
		}
		v.SetFloat(f)
	case reflect.Slice:
		return parseList(v, s)
	default:
		return fmt.Errorf("%w: type %s cannot be set from a string", ErrInvalidValue, v.Type())
	}
	return nil
}

func parseList(v reflect.Value, s string) error {
	if v.Type().Elem().Kind() == reflect.Slice {
		return fmt.Errorf("%w: type %s cannot be set from a string", ErrInvalidValue, v.Type())
	}
	out := reflect.MakeSlice(v.Type(), 0, 0)
	if strings.TrimSpace(s) != "" {
		for i, item := range strings.Split(s, ",") {
			item = strings.TrimSpace(item)
			if item == "" {
				return fmt.Errorf("%w: empty list element %d in %q", ErrInvalidValue, i, s)
			}
			ev := reflect.New(v.Type().Elem()).Elem()
			if err := parseInto(ev, item); err != nil {
				return fmt.Errorf("list element %d: %w", i, err)
			}
			out = reflect.Append(out, ev)
		}
	}
	v.Set(out)
	return nil
}

// ParseBool parses a boolean with oslo.config's spellings: true, yes, on, 1
// and false, no, off, 0, in any case, surrounding spaces ignored.
func ParseBool(s string) (bool, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "true", "yes", "on", "1":
		return true, nil
	case "false", "no", "off", "0":
		return false, nil
	}
	return false, fmt.Errorf("%w: %q is not a boolean (true/false, yes/no, on/off, 1/0)", ErrInvalidValue, s)
}
