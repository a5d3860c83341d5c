package config

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/BurntSushi/toml"
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

// FuzzDecodeTOML feeds arbitrary text to the file layer. It must never panic,
// every problem must be a parse error or name its section, and a config that
// loads cleanly must survive a round trip through the TOML encoder.
func FuzzDecodeTOML(f *testing.F) {
	seeds, _ := filepath.Glob(filepath.Join("testdata", "*.toml"))
	for _, s := range seeds {
		data, err := os.ReadFile(s)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add([]byte("[DEFAULT]\nhost = 5\n[x]\ny=1\n"))
	f.Add([]byte("[nested]\ninner = { a = 1, b = [1] }\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		sch, err := schemaOf(&testConfig{})
		if err != nil {
			t.Fatal(err)
		}
		errs := decodeTOML(sch, "fuzz.toml", data)
		for _, err := range errs {
			var fe *FieldError
			if errors.As(err, &fe) && strings.HasPrefix(fe.Error(), fe.Source+": : ") {
				t.Errorf("field error without a visible name: %v", err)
			}
		}
		if len(errs) > 0 {
			return
		}
		got, ok := sch.root.Interface().(testConfig)
		if !ok {
			t.Fatalf("schema root is %T", sch.root.Interface())
		}
		var buf bytes.Buffer
		if err := toml.NewEncoder(&buf).Encode(got); err != nil {
			return // e.g. values the encoder cannot write back; not our concern
		}
		again, err := schemaOf(&testConfig{})
		if err != nil {
			t.Fatal(err)
		}
		if errs := decodeTOML(again, "again.toml", buf.Bytes()); len(errs) > 0 {
			t.Fatalf("re-encoded config does not load: %v\n%s", errors.Join(errs...), buf.String())
		}
		if diff := cmp.Diff(got, again.root.Interface(), cmpOpts, cmpopts.EquateNaNs(), cmpopts.EquateEmpty()); diff != "" {
			t.Errorf("round trip mismatch (-first +second):\n%s", diff)
		}
	})
}

// FuzzSet checks that Set never panics, that every failure wraps one of the
// sentinels and leaves the section unchanged.
func FuzzSet(f *testing.F) {
	for _, s := range [][2]string{
		{"heartbeat_timeout_threshold", "30"}, {"heartbeat_rate", "1e3"}, {"amqp_durable_queues", "on"},
		{"rabbit_qos_prefetch_count", "70000"}, {"ports", "1, 2"}, {"backoff", "1h"}, {"bind", "::1"},
		{"Untagged", ""}, {"nope", "x"},
	} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, key, value string) {
		r := defaults().Rabbit
		before := r
		err := Set(&r, key, value)
		if err == nil {
			return
		}
		if !errors.Is(err, ErrUnknownKey) && !errors.Is(err, ErrInvalidValue) {
			t.Errorf("Set(%q, %q) error %v wraps no sentinel", key, value, err)
		}
		if diff := cmp.Diff(before, r, cmpOpts, cmpopts.EquateNaNs()); diff != "" {
			t.Errorf("failed Set changed the section (-before +after):\n%s", diff)
		}
	})
}
