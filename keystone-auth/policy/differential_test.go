package policy

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The differential test evaluates generated rules, credentials and targets with this
// package and with the real oslo.policy 4.0.0 (Debian python3-oslo.policy, run by
// testdata/oslo_eval.py under /usr/bin/python3) and requires identical results.

var (
	diffSeed      = flag.Uint64("policy.seed", 20261125, "seed of the policy differential test")
	diffScenarios = flag.Int("policy.scenarios", 300, "rule sets in the policy differential test")
	diffCases     = flag.Int("policy.cases", 40, "enforce calls per rule set")
)

const python = "/usr/bin/python3"

// runOslo runs the Python driver on the scenarios.
func runOslo(t *testing.T, scenarios []diffScenario) []diffResult {
	t.Helper()
	in, err := json.Marshal(scenarios)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(t.Context(), python, filepath.Join("testdata", "oslo_eval.py"))
	cmd.Stdin = bytes.NewReader(in)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	if err := cmd.Run(); err != nil {
		t.Fatalf("oslo_eval.py: %v\n%s", err, stderr.String())
	}
	t.Logf("oslo.policy evaluated %d scenarios in %v", len(scenarios), time.Since(start).Round(time.Millisecond))
	var out []diffResult
	if err := json.Unmarshal(stdout.Bytes(), &out); err != nil {
		t.Fatalf("decode oslo_eval.py output: %v", err)
	}
	if len(out) != len(scenarios) {
		t.Fatalf("oslo_eval.py returned %d results for %d scenarios", len(out), len(scenarios))
	}
	return out
}

// roundTrip re-decodes scenarios from JSON with json.Number, so Go sees exactly the
// values Python's json module sees.
func roundTrip(t *testing.T, scenarios []diffScenario) []diffScenario {
	t.Helper()
	b, err := json.Marshal(scenarios)
	if err != nil {
		t.Fatal(err)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var out []diffScenario
	if err := dec.Decode(&out); err != nil {
		t.Fatal(err)
	}
	return out
}

func requirePython(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("differential test against oslo.policy skipped with -short")
	}
	if _, err := os.Stat(python); err != nil {
		t.Fatalf("%s is required (Debian python3 and python3-oslo.policy): %v", python, err)
	}
}

func toDefaults(ds []diffDefault) []RuleDefault {
	var out []RuleDefault
	for _, d := range ds {
		rd := RuleDefault{Name: d.Name, CheckStr: d.CheckStr, Description: d.Description, ScopeTypes: d.ScopeTypes,
			DeprecatedForRemoval: d.DeprecatedForRemoval, DeprecatedReason: d.DeprecatedReason, DeprecatedSince: d.DeprecatedSince}
		for _, o := range d.Operations {
			rd.Operations = append(rd.Operations, Operation(o))
		}
		if d.DeprecatedRule != nil {
			rd.DeprecatedRule = &DeprecatedRule{Name: d.DeprecatedRule.Name, CheckStr: d.DeprecatedRule.CheckStr,
				DeprecatedReason: d.DeprecatedRule.Reason, DeprecatedSince: d.DeprecatedRule.Since}
		}
		out = append(out, rd)
	}
	return out
}

func outcomeOf(ok bool, err error) string {
	switch {
	case err != nil:
		return "exc"
	case ok:
		return "true"
	}
	return "false"
}

func normalizePy(s string) string {
	if strings.HasPrefix(s, "exc:") {
		return "exc"
	}
	return s
}

func TestDifferentialOsloPolicy(t *testing.T) {
	requirePython(t)
	g := &gen{r: rand.New(rand.NewPCG(*diffSeed, 1))} //nolint:gosec // reproducible test input, not secrets
	var scenarios []diffScenario
	for range *diffScenarios {
		scenarios = append(scenarios, g.scenario(*diffCases))
	}
	scenarios = roundTrip(t, scenarios)
	results := runOslo(t, scenarios)

	var evals, parses, mismatches int
	outcomes := map[string]int{}
	report := func(format string, args ...any) {
		mismatches++
		if mismatches <= 25 {
			t.Errorf(format, args...)
		}
	}
	for i, sc := range scenarios {
		dir := t.TempDir()
		cfg := Config{
			Options: Options{
				EnforceScope:       sc.Config.EnforceScope,
				EnforceNewDefaults: sc.Config.EnforceNewDefaults,
				PolicyDefaultRule:  sc.Config.PolicyDefaultRule,
				PolicyFile:         filepath.Join(dir, "policy.yaml"),
			},
			Defaults: toDefaults(sc.Defaults),
		}
		if sc.PolicyFile != nil {
			if err := os.WriteFile(cfg.Options.PolicyFile, []byte(*sc.PolicyFile), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		e, err := New(cfg)
		for j, c := range sc.Cases {
			evals++
			want := normalizePy(results[i].Results[j])
			var got string
			var gerr error
			if err != nil {
				got, gerr = "exc", err
			} else {
				var ok bool
				ok, gerr = e.Enforce(c.Rule, c.Target, c.Creds)
				got = outcomeOf(ok, gerr)
			}
			outcomes[want]++
			if got != want {
				file := "<none>"
				if sc.PolicyFile != nil {
					file = *sc.PolicyFile
				}
				if dump := os.Getenv("POLICY_DIFF_DUMP"); dump != "" {
					b, _ := json.Marshal([]diffScenario{sc})
					_ = os.WriteFile(fmt.Sprintf("%s.%d.json", dump, i), b, 0o600) //nolint:gosec // debugging aid named by the developer
				}
				report("scenario %d case %d: enforce(%q) = %s (err %v), oslo.policy %s\npolicy file:\n%s\ndefaults: %+v\nconfig: %+v\ntarget: %v\ncreds: %v",
					i, j, c.Rule, got, gerr, results[i].Results[j], file, sc.Defaults, sc.Config, c.Target, c.Creds)
			}
		}
		for j, s := range sc.Parse {
			parses++
			r, _ := Parse(s)
			if got, want := r.String(), results[i].Parsed[j]; got != want {
				report("Parse(%q).String() = %q, oslo.policy %q", s, got, want)
			}
		}
	}
	t.Logf("seed %d: %d enforce calls (oslo.policy outcomes %v), %d rule strings parsed, %d mismatches",
		*diffSeed, evals, outcomes, parses, mismatches)
}

// TestDifferentialPythonPrimitives compares the Python emulation (ast.literal_eval on the
// left side of generic checks and the %-operator on the right) with CPython directly.
func TestDifferentialPythonPrimitives(t *testing.T) {
	requirePython(t)
	g := &gen{r: rand.New(rand.NewPCG(*diffSeed, 2))} //nolint:gosec // reproducible test input, not secrets
	var lits []string
	lits = append(lits, literalCorpus...)
	alphabet := []string{"a", "b", "x", "_", "1", "0", "9", ".", "e", "j", "'", "\"", "-", "+", ",", "[", "]", "(", ")",
		"{", "}", " ", "r", "b", "u", "f", "x", "o", "\\", "#", "*", "=", "True", "None", "not", "in", "and", "if", "else", "é", "ß", "€", "@", "~", "%"}
	for range 4000 {
		n := 1 + g.r.IntN(6)
		var b strings.Builder
		for range n {
			b.WriteString(alphabet[g.r.IntN(len(alphabet))])
		}
		lits = append(lits, b.String())
	}
	target := map[string]any{"s": "ab", "i": 42, "n": -7, "f": json.Number("3.14159"), "b": true, "z": nil,
		"big": json.Number("1000000000000000000000000000000"), "l": []any{1, "b", nil, true}, "c": "x", "u": "é",
		"e": "", "fl": json.Number("1e16"), "neg0": json.Number("-0.0"), "a(b)c": 1, "": 5, "d": map[string]any{"k": "v"}}
	formats := slices2(formatCorpus)
	keys := []string{"s", "i", "n", "f", "b", "z", "big", "l", "c", "u", "e", "fl", "neg0", "missing", "a(b)c", "", "d"}
	for range 4000 {
		var b strings.Builder
		for range 1 + g.r.IntN(3) {
			b.WriteString(g.pick("", "x", "%%", " ", "%"))
			b.WriteString("%")
			if g.chance(0.85) {
				b.WriteString("(" + keys[g.r.IntN(len(keys))] + ")")
			}
			b.WriteString(g.pick("", "", "-", "0", "+", " ", "#", "-#", "0+", "*"))
			b.WriteString(g.pick("", "", "5", "12", "0", "*"))
			b.WriteString(g.pick("", "", ".2", ".0", ".", ".*"))
			b.WriteString(g.pick("", "", "", "h", "l", "L"))
			b.WriteString(g.pick("s", "s", "r", "a", "d", "i", "u", "x", "X", "o", "c", "e", "E", "f", "F", "g", "G", "%", "z", ""))
		}
		formats = append(formats, b.String())
	}
	sc := diffScenario{Literals: lits}
	for _, f := range formats {
		sc.Formats = append(sc.Formats, [2]any{f, target})
	}
	scs := roundTrip(t, []diffScenario{sc})
	res := runOslo(t, scs)[0]
	sc = scs[0]

	var mismatches, unsupported int
	for i, k := range sc.Literals {
		v, class, err := pyLiteralEval(k)
		var got string
		switch class {
		case litValue:
			s, serr := pyStr(v)
			if serr != nil {
				unsupported++
				continue
			}
			got = "ok:" + s
		case litNotLiteral:
			got = "valueerror"
		case litSyntaxError:
			got = "syntaxerror"
		default:
			unsupported++
			continue
		}
		if want := res.Literals[i]; got != want {
			mismatches++
			t.Errorf("literal_eval(%q): go %s (%v), python %s", k, got, err, want)
		}
	}
	for i, f := range sc.Formats {
		s, err := pyPercentFormat(f[0].(string), f[1].(map[string]any))
		var got string
		switch {
		case errors.Is(err, errKeyMissing):
			got = "keyerror"
		case errors.Is(err, errUnsupportedValue):
			unsupported++
			continue
		case err != nil:
			got = "exc"
		default:
			got = "ok:" + s
		}
		want := res.Formats[i]
		if strings.HasPrefix(want, "exc:") {
			want = "exc"
		}
		if got != want {
			mismatches++
			t.Errorf("%q %% target: go %q (%v), python %q", f[0], got, err, res.Formats[i])
		}
	}
	dist := map[string]int{}
	for _, l := range res.Literals {
		k, _, _ := strings.Cut(l, ":")
		dist["literal "+k]++
	}
	for _, f := range res.Formats {
		k, _, _ := strings.Cut(f, ":")
		dist["format "+k]++
	}
	t.Logf("%d literals, %d format strings compared with CPython (outcomes %v); %d mismatches, %d not emulated (fail closed)",
		len(sc.Literals), len(sc.Formats), dist, mismatches, unsupported)
}

func slices2(s []string) []string { return append([]string(nil), s...) }

var literalCorpus = []string{
	"", "a", "a.b", "2fa", "1_000", "01", "00", "0x1F", "1e400", "-1j", "1+2j", "1,", "[1,'a']", "set()", "b'x'",
	"f'x'", "'a''b'", "...", "a..b", "'\\x4'", "1in[1]", "1if", "--1", "-True", "+1.5", "*a", "a b", "not", "lambda",
	"await", "await x", "x=1", "1__0", "0_0", "rôle", " a", "\ta", "print(1)", "a[1]", "1.", ".5", "1.e5", "0b102",
	"u'x'", "Rb'x'", "fr'x'", "True", "False", "None", "'trusted'", "\"x\"", "1.0", "-1", "0x10", "1e3", "[1,2]",
	"{1}", "'é'", "'\\u00e9'", "'\\x41'", "1e16", "1e-5", "0.1", "123456789012345678901234567890", "-0.0", "1-2j",
	"1.5-0j", "-1.5+2.5j", "0j", "(1,2)", "()", "[]", "{}", "[[]]", "((1,),)", "f(x for x in y)", "[x for x in y]",
	"a if b else c", "a or b", "not a", "a is not b", "a not in b", "x.y.z", "x[1][2]", "f(a=1)", "f(1=2)", "f(a=1, 2)",
	"f(*a, **b)", "{**a}", "{*a}", "[*a]", "'\\N{DASH}'", "r'\\x'", "'\\d'", "b'\\xff'", "'abc", "'''x'''", "\"\"\"x\"\"\"",
	"'a' b'x'", "1 2", "a.1", "1.a", "0o17", "0O17", "0b1_0", "0x_f", "1e+5", "1E-5j", "00.5", "09.5", "0_7", "1_", "1e",
	"True.x", "None(1)", "a.True", "-~1", "~1", "+True", "-(1)", "(-1)", "- 1", "# x", "a#b", "'#'", "$", "?", "!",
	"a!=b", "a<>b", "a->b", "a;b", "@a", "a@b",
}

var formatCorpus = []string{
	"%(s)05s", "%(s)-5s|", "%(i)05d", "%(n)05d", "%(n)+5d", "%(i)#x", "%(n)#x", "%(i).5d", "%(f)f", "%(f).2f", "%(f)e",
	"%(f)g", "%(big)g", "%(i)g", "%(f)#g", "%(f)#.0f", "%(b)f", "%(b)x", "%(s)d", "%(z)d", "%(f)x", "%(l)s", "%(c)c",
	"%(i)c", "%(s)c", "%(i)5%", "%(missing)%", "%(i)s%%", "%(s).1r", "%(s)r", "%(f)010.3f", "%(n)-05d|", "%(s)", "%(s)h",
	"%(s)hl", "%s", "%(i)s %s", "%s %(i)s", "%%(i)s", "%(f)d", "%(big)f", "%(a(b)c)s", "%()s", "%(d)s", "%(d)r", "%(l)r",
	"%(u)a", "%(u)r", "%(fl)s", "%(neg0)s", "%(neg0)f", "%(neg0)d", "%(fl)d", "%(i)#o", "%(i)#X", "%(f)#.0e", "%(f).0g",
	"%(f).20g", "%(i)e", "%(n)x", "%(z)s", "%(b)s", "%(b)r", "%(e)5s", "%(u)5s|", "%(i)ld", "%(i)Ld", "%(s)z", "%(i(s)",
	"%(s)*s", "%.*s", "plain", "", "%", "%%", "%(", "%(s", "%(s)5", "%5%", "%-%",
}

func TestDifferentialSample(t *testing.T) {
	requirePython(t)
	defs := []diffDefault{
		{Name: "hosts:list", CheckStr: "role:reader and system_scope:all", Description: "List hosts and their current trust verdicts.",
			Operations: []diffOp{{"GET", "/v1/hosts"}}, ScopeTypes: []string{"system", "project"}},
		{Name: "hosts:delete", CheckStr: "rule:admin_required", Description: "Delete a host record. This is a long description that certainly needs to be wrapped by textwrap because it is longer than seventy characters, with hyphenated-words and an em--dash and a verylongwordthatcannotbebrokenatallbecauseitislongerthanthelinewidthitself.\n\nSecond paragraph.\n    literal block line\nafter literal",
			Operations: []diffOp{{"DELETE", "/v1/hosts/{host}"}, {"POST", "/v1/hosts/{host}/action"}}, ScopeTypes: []string{"project"},
			DeprecatedRule: &diffDepRule{Name: "hosts:remove", CheckStr: "role:admin", Reason: "Renamed for consistency with the rest of the API, see the release notes.", Since: "2026.1"}},
		{Name: "admin_required", CheckStr: "role:admin or is_admin:1", Description: "Legacy admin rule."},
		{Name: "launches:show", CheckStr: "project_id:%(project_id)s", Description: "Show a launch receipt.",
			DeprecatedRule: &diffDepRule{Name: "launches:show", CheckStr: "rule:admin_required", Reason: "Project members may see their own launches."}},
		{Name: "old:thing", CheckStr: "@", Description: "Obsolete.", DeprecatedForRemoval: true, DeprecatedReason: "Nothing uses it.", DeprecatedSince: "Zed"},
		{Name: "tabs", CheckStr: "!", Description: "Tabs\tand  double  spaces, a-b c--d e---f, x-y-z words-with-many-hyphens-in-a-row-that-go-on-and-on-and-on-and-on-and-on-and-on."},
	}
	// the golden file's defaults too, so that the -short golden test is anchored to oslo.policy
	var golden []diffDefault
	for _, d := range testDefaults {
		dd := diffDefault{Name: d.Name, CheckStr: d.CheckStr, Description: d.Description, ScopeTypes: d.ScopeTypes}
		for _, o := range d.Operations {
			dd.Operations = append(dd.Operations, diffOp(o))
		}
		if r := d.DeprecatedRule; r != nil {
			dd.DeprecatedRule = &diffDepRule{Name: r.Name, CheckStr: r.CheckStr, Reason: r.DeprecatedReason, Since: r.DeprecatedSince}
		}
		golden = append(golden, dd)
	}
	scs := roundTrip(t, []diffScenario{{Defaults: defs, Sample: true}, {Defaults: golden, Sample: true}})
	results := runOslo(t, scs)
	want := results[0].Sample
	goldenFile, err := os.ReadFile(filepath.Join("testdata", "sample.golden.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if string(goldenFile) != results[1].Sample {
		t.Errorf("testdata/sample.golden.yaml differs from oslopolicy-sample-generator's output:\n%s", results[1].Sample)
	}
	var got bytes.Buffer
	if err := WriteSample(&got, toDefaults(scs[0].Defaults)); err != nil {
		t.Fatal(err)
	}
	if got.String() != want {
		t.Errorf("WriteSample differs from oslopolicy-sample-generator:\n--- go\n%s\n--- oslo.policy\n%s", got.String(), want)
	}
	// the sample must parse, with every rule commented out
	rules, problems, err := ParseFile(got.Bytes())
	if err != nil || len(rules) != 0 || len(problems) != 0 {
		t.Errorf("sample parses to %d rules, problems %v, err %v; want an all-comment file", len(rules), problems, err)
	}
}

// policyFileShapes are policy files whose YAML PyYAML 6 (oslo.policy's yaml.safe_load)
// and libyaml (gopkg.in/yaml.v2) read differently: several documents, and tabs where
// PyYAML allows only spaces; plus the places where both accept a tab.
var policyFileShapes = []struct {
	data   string
	refuse bool // PyYAML refuses it, so oslo.policy denies every rule
}{
	{"r0: \"@\"\n---\nr0: \"!\"\n", true},
	{"r0: \"@\"\n---\n", true},
	{"r0: \"@\"\n...\n---\nr1: \"@\"\n", true},
	{"r0: \"@\"\n--- # next\n", true},
	{"---\nr0: \"@\"\n", false},
	{"---\nr0: \"@\"\n...\n", false},
	{"r0: \"@\"\n...\n# end\n", false},
	{"r0:\t\"@\"\n", true},
	{"\"r0\":\t\"@\"\n", true},
	{"r0: \t\"@\"\n", true},
	{"r0 :\t\"@\"\n", true},
	{"r0\t: \"@\"\n", true},
	{"r0:\t\n", true},
	{"r0: \"@\"\t\n", true},
	{"r0: '@'\t# c\n", true},
	{"r0: role:admin\tor @\n", true},
	{"r0: role:admin\n  \tor @\n", true},
	{"r0: [\"@\",\t\"!\"]\n", true},
	{"r0: &a\t\"@\"\n", true},
	{"r0: |\t\n  \"@\"\n", true},
	{"r0: \"role:a\tb or @\"\n", false},
	{"r0: 'role:a\tb or @'\n", false},
	{"r0: \"role:a\n\tor @\"\n", false},
	{"r0: \"@\" # a\tcomment\n", false},
	{"# a\tcomment\nr0: \"@\"\n", false},
	{"r0: |\n  role:a\tor @\n", false},
	{"r0: >-\n  role:a\n  \tor @\nr1: \"!\"\n", false},
	{"{\"r0\":\t\"@\"}", false}, // JSON, read before YAML is tried
}

// TestDifferentialPolicyFileShapes loads each of policyFileShapes with oslo.policy and
// with this package: both must refuse it (every enforce fails) or both must allow r0.
func TestDifferentialPolicyFileShapes(t *testing.T) {
	requirePython(t)
	var scs []diffScenario
	for _, s := range policyFileShapes {
		scs = append(scs, diffScenario{PolicyFile: &s.data, Config: diffConfig{PolicyDefaultRule: "default"},
			Cases: []diffCase{{Rule: "r0", Target: map[string]any{}, Creds: map[string]any{"roles": []any{"member"}}}}})
	}
	results := runOslo(t, scs)
	for i, s := range policyFileShapes {
		dir := t.TempDir()
		opts := DefaultOptions()
		opts.PolicyFile = filepath.Join(dir, "policy.yaml")
		if err := os.WriteFile(opts.PolicyFile, []byte(s.data), 0o600); err != nil {
			t.Fatal(err)
		}
		var got string
		if e, err := New(Config{Options: opts}); err != nil {
			got = outcomeOf(false, err)
		} else {
			got = outcomeOf(e.Enforce("r0", nil, map[string]any{"roles": []any{"member"}}))
		}
		want := normalizePy(results[i].Results[0])
		if got != want {
			t.Errorf("policy file %q: go %s, oslo.policy %s", s.data, got, results[i].Results[0])
		}
		if (want == "exc") != s.refuse {
			t.Errorf("policy file %q: oslo.policy %s, but the table says refuse=%v", s.data, want, s.refuse)
		}
	}
}
