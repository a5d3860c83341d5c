package config

import (
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"reflect"
	"sort"
	"strconv"
	"strings"

	"github.com/BurntSushi/toml"
)

// EnvPrefix starts the name of every environment variable Load reads.
const EnvPrefix = "TRUSTPOOL_"

// LoadOptions says where [Load] reads its layers from.
type LoadOptions struct {
	// File is the TOML file to read. Empty means no file.
	File string
	// FileOptional makes a missing File (and only a missing one) acceptable,
	// for a daemon's default path such as /etc/trustpool/agent.toml.
	FileOptional bool
	// Environ is the environment in os.Environ form ("NAME=value"). Nil means
	// os.Environ(); pass an empty non-nil slice to ignore the environment.
	Environ []string
	// Overrides are "section.key=value" settings applied last, normally from
	// the command line (see [Flags]).
	Overrides []string
}

// ErrDefaultFileMissing is reported with the other problems when an optional
// configuration file (a daemon's default path) does not exist and the
// configuration is not valid without it.
var ErrDefaultFileMissing = errors.New("no such file")

// FieldError is one problem with one key, as Load reports it.
type FieldError struct {
	// Source names the layer: the file path, "env TRUSTPOOL_X__Y" or "flag".
	Source string
	// Section and Key name the setting; Key is empty for a whole section.
	Section, Key string
	// Err is the problem; it wraps ErrUnknownKey, ErrUnknownSection or
	// ErrInvalidValue where one applies.
	Err error
}

func (e *FieldError) Error() string {
	name := quoteName(e.Section)
	if e.Key != "" {
		name += "." + quoteName(e.Key)
	}
	return fmt.Sprintf("%s: %s: %v", e.Source, name, e.Err)
}

// quoteName quotes a section or key name unless it is a plain TOML bare key,
// so that empty or odd names (from a file or the environment) stay visible.
func quoteName(s string) string {
	if s == "" || strings.ContainsFunc(s, notBareKeyRune) {
		return strconv.Quote(s)
	}
	return s
}

func notBareKeyRune(r rune) bool {
	bare := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '-' || r == '.'
	return !bare
}

func (e *FieldError) Unwrap() error { return e.Err }

// Validator is implemented by configurations and sections that check
// themselves after loading. Validate should return [errors.Join] of all
// problems, each naming its section.key.
type Validator interface {
	Validate() error
}

// Load fills dst, a pointer to a configuration struct holding its defaults,
// from the layers described in the package documentation.
//
// After all layers, Load calls Validate on every section that implements
// [Validator] (with a pointer or value receiver), then on dst itself. All
// problems of all layers and validators are returned together, joined with
// [errors.Join]; dst may then hold a mix of old and new values and must not
// be used.
func Load(dst any, opts LoadOptions) error {
	sch, err := schemaOf(dst)
	if err != nil {
		return err
	}
	var errs []error
	missing := false
	if opts.File != "" {
		data, err := os.ReadFile(opts.File)
		switch {
		case err == nil:
			errs = append(errs, decodeTOML(sch, opts.File, data)...)
		case opts.FileOptional && errors.Is(err, fs.ErrNotExist):
			missing = true
		default:
			return fmt.Errorf("read config file: %w", err)
		}
	}
	environ := opts.Environ
	if environ == nil {
		environ = os.Environ()
	}
	errs = append(errs, applyEnv(sch, environ)...)
	errs = append(errs, applyOverrides(sch, opts.Overrides)...)
	errs = append(errs, validate(sch)...)
	if missing && len(errs) > 0 {
		// The problems are most likely there because the file was not found:
		// say which file that was.
		errs = append([]error{fmt.Errorf("%s: %w (the default configuration file; name another with -config-file)",
			opts.File, ErrDefaultFileMissing)}, errs...)
	}
	return errors.Join(errs...)
}

// schema describes a configuration struct.
type schema struct {
	root     reflect.Value // the struct dst points to
	sections map[string]int
	names    []string // section names in field order
}

func schemaOf(dst any) (*schema, error) {
	rv := reflect.ValueOf(dst)
	if rv.Kind() != reflect.Pointer || rv.IsNil() || rv.Elem().Kind() != reflect.Struct {
		return nil, fmt.Errorf("load config: destination must be a non-nil pointer to a struct, not %T", dst)
	}
	s := &schema{root: rv.Elem(), sections: map[string]int{}}
	t := s.root.Type()
	for i := range t.NumField() {
		f := t.Field(i)
		name, ok := tagName(f)
		if !ok {
			continue
		}
		if f.Type.Kind() != reflect.Struct {
			return nil, fmt.Errorf("load config: field %s of %s is not a section struct", f.Name, t)
		}
		s.sections[name] = i
		s.names = append(s.names, name)
	}
	return s, nil
}

// section returns a pointer to the named section's struct.
func (s *schema) section(name string) (reflect.Value, bool) {
	i, ok := s.sections[name]
	if !ok {
		return reflect.Value{}, false
	}
	return s.root.Field(i).Addr(), true
}

func decodeTOML(sch *schema, source string, data []byte) []error {
	var top map[string]toml.Primitive
	md, err := toml.Decode(string(data), &top)
	if err != nil {
		return []error{fmt.Errorf("parse config file %s: %w", source, err)}
	}
	// PrimitiveDecode quietly accepts a non-table for a map, and MetaData
	// does not type implicit tables, so look at the plain decoding too.
	var raw map[string]any
	if _, err := toml.Decode(string(data), &raw); err != nil {
		return []error{fmt.Errorf("parse config file %s: %w", source, err)}
	}
	var errs []error
	fail := func(section, key string, err error) {
		errs = append(errs, &FieldError{Source: source, Section: section, Key: key, Err: err})
	}
	// Keys known and decoded without error; deeper undecoded keys under them
	// are unknown sub-keys of a table-valued setting.
	decoded := map[string]bool{}
	for _, secName := range sortedKeys(top) {
		sec, ok := sch.section(secName)
		if !ok {
			fail(secName, "", ErrUnknownSection)
			continue
		}
		var keys map[string]toml.Primitive
		if _, ok := raw[secName].(map[string]any); !ok {
			fail(secName, "", fmt.Errorf("%w: a section must be a table", ErrInvalidValue))
			continue
		}
		if err := md.PrimitiveDecode(top[secName], &keys); err != nil {
			fail(secName, "", fmt.Errorf("%w: a section must be a table", ErrInvalidValue))
			continue
		}
		for _, key := range sortedKeys(keys) {
			idx, ok := fieldIndex(sec.Elem().Type(), key)
			if !ok {
				fail(secName, key, ErrUnknownKey)
				continue
			}
			// Decode into a fresh value: the file's value replaces the
			// default whole, and never writes into a default's backing array.
			field := sec.Elem().Field(idx)
			nv := reflect.New(field.Type())
			if err := md.PrimitiveDecode(keys[key], nv.Interface()); err != nil {
				fail(secName, key, fmt.Errorf("%w: %w", ErrInvalidValue, err))
				continue
			}
			field.Set(nv.Elem())
			decoded[secName+"\x00"+key] = true
		}
	}
	for _, k := range md.Undecoded() {
		if len(k) > 2 && decoded[k[0]+"\x00"+k[1]] {
			fail(k[0], strings.Join(k[1:], "."), ErrUnknownKey)
		}
	}
	return errs
}

// EnvName returns the environment variable that sets section.key.
func EnvName(section, key string) string {
	return EnvPrefix + strings.ToUpper(section) + "__" + strings.ToUpper(key)
}

func applyEnv(sch *schema, environ []string) []error {
	type target struct{ section, key string }
	known := map[string]target{}
	sectionPrefixes := map[string]string{}
	for _, secName := range sch.names {
		sec, _ := sch.section(secName)
		sectionPrefixes[EnvPrefix+strings.ToUpper(secName)+"__"] = secName
		t := sec.Elem().Type()
		for i := range t.NumField() {
			if key, ok := tagName(t.Field(i)); ok {
				known[EnvName(secName, key)] = target{secName, key}
			}
		}
	}
	var errs []error
	for _, kv := range environ {
		name, value, ok := strings.Cut(kv, "=")
		if !ok || !strings.HasPrefix(name, EnvPrefix) {
			continue
		}
		source := "env " + name
		if tg, ok := known[name]; ok {
			sec, _ := sch.section(tg.section)
			if err := Set(sec.Interface(), tg.key, value); err != nil {
				errs = append(errs, &FieldError{Source: source, Section: tg.section, Key: tg.key, Err: unwrapSet(err)})
			}
			continue
		}
		// A variable for one of our sections with an unknown key is a typo
		// that would otherwise be ignored silently. Variables for sections we
		// do not have belong to another binary and are none of our business.
		for prefix, secName := range sectionPrefixes {
			if strings.HasPrefix(name, prefix) {
				errs = append(errs, &FieldError{Source: source, Section: secName,
					Key: strings.ToLower(strings.TrimPrefix(name, prefix)), Err: ErrUnknownKey})
				break
			}
		}
	}
	return errs
}

func applyOverrides(sch *schema, overrides []string) []error {
	var errs []error
	for _, o := range overrides {
		name, value, ok := strings.Cut(o, "=")
		secName, key, dotted := strings.Cut(name, ".")
		if !ok || !dotted || secName == "" || key == "" {
			errs = append(errs, fmt.Errorf("flag: %w: override %q is not section.key=value", ErrInvalidValue, o))
			continue
		}
		sec, found := sch.section(secName)
		if !found {
			errs = append(errs, &FieldError{Source: "flag", Section: secName, Err: ErrUnknownSection})
			continue
		}
		if err := Set(sec.Interface(), key, value); err != nil {
			errs = append(errs, &FieldError{Source: "flag", Section: secName, Key: key, Err: unwrapSet(err)})
		}
	}
	return errs
}

// unwrapSet drops the `set "key": ` prefix Set adds, since FieldError names
// the key itself, and keeps the bare sentinel for unknown keys.
func unwrapSet(err error) error {
	if errors.Is(err, ErrUnknownKey) {
		return ErrUnknownKey
	}
	if u := errors.Unwrap(err); u != nil {
		return u
	}
	return err
}

func validate(sch *schema) []error {
	var errs []error
	for _, secName := range sch.names {
		sec, _ := sch.section(secName)
		if v, ok := sec.Interface().(Validator); ok {
			if err := v.Validate(); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if v, ok := sch.root.Addr().Interface().(Validator); ok {
		if err := v.Validate(); err != nil {
			errs = append(errs, err)
		}
	}
	return errs
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// Flags are the command-line flags every daemon shares: -config-file and a
// repeatable -set section.key=value. Go's flag package accepts them with one
// or two dashes.
type Flags struct {
	// ConfigFile is the -config-file value; empty means the default file.
	ConfigFile string
	// Overrides collects the -set values in order.
	Overrides []string

	defaultFile string
}

// Register adds the flags to fs. defaultFile is read when -config-file is not
// given, and may then be missing.
func (f *Flags) Register(fs *flag.FlagSet, defaultFile string) {
	f.defaultFile = defaultFile
	fs.StringVar(&f.ConfigFile, "config-file", "", fmt.Sprintf("TOML configuration file (default %s)", defaultFile))
	fs.Func("set", "override one setting, `section.key=value` (repeatable; applied after the file and TRUSTPOOL_<SECTION>__<KEY> variables)",
		func(s string) error {
			f.Overrides = append(f.Overrides, s)
			return nil
		})
}

// LoadOptions returns the options for [Load] that the parsed flags describe,
// reading the process environment.
func (f *Flags) LoadOptions() LoadOptions {
	if f.ConfigFile != "" {
		return LoadOptions{File: f.ConfigFile, Overrides: f.Overrides}
	}
	return LoadOptions{File: f.defaultFile, FileOptional: true, Overrides: f.Overrides}
}
