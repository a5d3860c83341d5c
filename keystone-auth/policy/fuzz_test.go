package policy

import (
	"bufio"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func addRuleSeeds(f *testing.F) {
	f.Helper()
	fh, err := os.Open(filepath.Join("testdata", "rules.txt"))
	if err != nil {
		f.Fatal(err)
	}
	defer fh.Close()
	sc := bufio.NewScanner(fh)
	for sc.Scan() {
		f.Add(sc.Text())
	}
	if err := sc.Err(); err != nil {
		f.Fatal(err)
	}
}

var fuzzTarget = map[string]any{"project_id": "p1", "user_id": "u1", "target.project.id": "p1", "role": "admin",
	"trust_level": "trusted", "n": 1, "l": []any{1, 2}, "z": nil}

var fuzzCreds = map[string]any{"roles": []string{"admin", "Member"}, "project_id": "p1", "user_id": "u1",
	"user": map[string]any{"domain": map[string]any{"id": "d1"}}, "groups": []any{map[string]any{"id": "g1"}}, "system_scope": "all"}

// FuzzParse checks that any rule string parses without panicking, that a rule parsed
// without problems prints to a string that parses back to the same rule, and that
// evaluation never panics and reports only the documented errors.
func FuzzParse(f *testing.F) {
	addRuleSeeds(f)
	f.Fuzz(func(t *testing.T, s string) {
		r, err := Parse(s)
		if r == nil {
			t.Fatalf("Parse(%q) returned a nil rule", s)
		}
		if err != nil && !errors.Is(err, ErrParse) {
			t.Fatalf("Parse(%q) error %v does not wrap ErrParse", s, err)
		}
		if err == nil {
			r2, err2 := Parse(r.String())
			if err2 != nil || r2.String() != r.String() {
				t.Fatalf("Parse(%q).String() = %q does not round-trip: %q, %v", s, r.String(), r2.String(), err2)
			}
		}
		rules := map[string]*Rule{"self": r}
		ok, everr := r.Eval(fuzzTarget, fuzzCreds, rules)
		if everr != nil && (ok || (!errors.Is(everr, ErrEvaluation) && !errors.Is(everr, ErrUnsupportedCheck))) {
			t.Fatalf("Eval of %q = %v, %v", s, ok, everr)
		}
	})
}

// FuzzParseFile checks that policy file contents never make the loader panic and that it
// fails only with ErrInvalidFile.
func FuzzParseFile(f *testing.F) {
	f.Add([]byte(truthTablePolicy))
	f.Add([]byte(`{"a": "role:x", "b": ["role:y", ["role:z", "@"]], "c": null}`))
	f.Add([]byte("a: [[\"role:admin\"], [\"role:member\", \"project_id:%(project_id)s\"]]\n"))
	f.Add([]byte("a: false\n"))
	f.Add([]byte("- x\n"))
	for _, s := range policyFileShapes {
		f.Add([]byte(s.data))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		rules, _, err := ParseFile(data)
		if err != nil {
			if !errors.Is(err, ErrInvalidFile) {
				t.Fatalf("ParseFile error %v does not wrap ErrInvalidFile", err)
			}
			return
		}
		for name, r := range rules {
			if _, err := r.Eval(fuzzTarget, fuzzCreds, rules); err != nil && !errors.Is(err, ErrEvaluation) && !errors.Is(err, ErrUnsupportedCheck) {
				t.Fatalf("rule %q: unexpected error %v", name, err)
			}
		}
	})
}

// FuzzPythonEmulation feeds the Python literal and %-format emulation arbitrary input.
func FuzzPythonEmulation(f *testing.F) {
	for _, s := range literalCorpus {
		f.Add(s)
	}
	for _, s := range formatCorpus {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if v, class, err := pyLiteralEval(s); class == litValue {
			if err != nil {
				t.Fatalf("literal %q: value with error %v", s, err)
			}
			_, _ = pyStr(v)
		} else if err == nil {
			t.Fatalf("literal %q: class %v without error", s, class)
		}
		_, err := pyPercentFormat(s, fuzzTarget)
		if err != nil && !errors.Is(err, errKeyMissing) && !errors.Is(err, errFormat) && !errors.Is(err, errUnsupportedValue) {
			t.Fatalf("format %q: unexpected error %v", s, err)
		}
	})
}
