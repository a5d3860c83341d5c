package policy

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

var update = flag.Bool("update", false, "rewrite golden files")

// truthTablePolicy is the policy file oslo-wire-examples/scripts/policy_check.py used to
// produce testdata/policy_truth_table.json with the real oslo.policy.
const truthTablePolicy = `
"admin_required": "role:admin"
"project_member": "role:member and project_id:%(project_id)s"
"owner": "user_id:%(user_id)s"
"admin_or_owner": "rule:admin_required or rule:owner"
"always": "@"
"never": "!"
"not_reader": "not role:reader"
"precedence": "role:a or role:b and role:c"
"paren": "(role:a or role:b) and role:c"
"literal": "'trusted':%(trust_level)s"
"bool_literal": "True:%(host.enabled)s"
"nested_target": "project_id:%(target.project.id)s"
"is_admin_cred": "is_admin:True"
"empty_string_rule": ""
"unknown_rule_ref": "rule:does_not_exist"
"missing_target_key": "project_id:%(nope)s"
`

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

func newEnforcer(t *testing.T, policyYAML string, opts Options, defaults ...RuleDefault) *Enforcer {
	t.Helper()
	dir := t.TempDir()
	opts.PolicyFile = filepath.Join(dir, "policy.yaml")
	if policyYAML != "" {
		writeFile(t, opts.PolicyFile, policyYAML)
	}
	e, err := New(Config{Options: opts, Defaults: defaults})
	if err != nil {
		t.Fatalf("New() error = %v", err)
	}
	return e
}

// TestTruthTable replays the captured oslo.policy truth table.
func TestTruthTable(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("testdata", "policy_truth_table.json"))
	if err != nil {
		t.Fatal(err)
	}
	var table []struct {
		Rule         string         `json:"rule"`
		EnforceScope *bool          `json:"enforce_scope"`
		CheckStr     string         `json:"check_str"`
		Target       map[string]any `json:"target"`
		Creds        map[string]any `json:"creds"`
		Result       bool           `json:"result"`
	}
	if err := json.Unmarshal(b, &table); err != nil {
		t.Fatal(err)
	}
	plain := newEnforcer(t, truthTablePolicy, DefaultOptions())
	scoped := map[bool]*Enforcer{}
	for _, es := range []bool{false, true} {
		opts := DefaultOptions()
		opts.EnforceScope = es
		scoped[es] = newEnforcer(t, "{}", opts,
			RuleDefault{Name: "agent:trust:read", CheckStr: "role:reader and system_scope:all", Description: "Read.", ScopeTypes: []string{"system"}},
			RuleDefault{Name: "agent:trust:project", CheckStr: "role:member and project_id:%(project_id)s", Description: "Project.", ScopeTypes: []string{"project"}})
	}
	for i, row := range table {
		e := plain
		if row.EnforceScope != nil {
			e = scoped[*row.EnforceScope]
		}
		got, err := e.Enforce(row.Rule, row.Target, row.Creds)
		if err != nil || got != row.Result {
			t.Errorf("row %d: Enforce(%q, %v, %v) = %v, %v; oslo.policy %v", i, row.Rule, row.Target, row.Creds, got, err, row.Result)
		}
		if row.CheckStr == "None" { // rule not in file
			continue
		}
		rules, err := e.Rules()
		if err != nil {
			t.Fatal(err)
		}
		if rules[row.Rule] != row.CheckStr {
			t.Errorf("row %d: rule %q is %q, oslo.policy shows %q", i, row.Rule, rules[row.Rule], row.CheckStr)
		}
	}
}

func TestParseString(t *testing.T) {
	tests := []struct {
		rule    string
		want    string
		wantErr bool
	}{
		{rule: "", want: "@"},
		{rule: "@", want: "@"},
		{rule: "!", want: "!"},
		{rule: "   ", want: "!", wantErr: true},
		{rule: "role:admin", want: "role:admin"},
		{rule: "role:a or role:b and role:c", want: "(role:a or (role:b and role:c))"},
		{rule: "role:a or (role:b and role:c) and role:d", want: "(role:a or (role:b and role:c and role:d))"},
		{rule: "(role:a or role:b) and role:c", want: "((role:a or role:b) and role:c)"},
		{rule: "NOT role:a AND role:b", want: "(not role:a and role:b)"},
		{rule: "not not role:a", want: "not not role:a"},
		{rule: "((role:a))", want: "role:a"},
		{rule: "role:a role:b", want: "!", wantErr: true},
		{rule: "(role:a", want: "!", wantErr: true},
		{rule: "role:a)", want: "!", wantErr: true},
		{rule: "foo", want: "!", wantErr: true},
		{rule: "role:a or foo", want: "(role:a or !)", wantErr: true},
		{rule: "'quoted'", want: "quoted", wantErr: true},
		{rule: "and", want: "and", wantErr: true},
		{rule: "role:a\x1cor\u00a0role:b", want: "(role:a or role:b)"},
		{rule: "project_id:%(project_id)s", want: "project_id:%(project_id)s"},
		{rule: "http://example.com/x", want: "http://example.com/x"},
	}
	for _, tt := range tests {
		r, err := Parse(tt.rule)
		if got := r.String(); got != tt.want {
			t.Errorf("Parse(%q).String() = %q, want %q", tt.rule, got, tt.want)
		}
		if (err != nil) != tt.wantErr || (err != nil && !errors.Is(err, ErrParse)) {
			t.Errorf("Parse(%q) error = %v, want error %v", tt.rule, err, tt.wantErr)
		}
	}
}

func TestEnforceQuirks(t *testing.T) {
	const file = `
"upper_role": "role:ADMIN"
"empty": ""
"null":
"blank": "   "
"flat": "project_id:%(target.project.id)s"
"literal": "'trusted':%(trust)s"
"bool": "True:%(enabled)s"
"list_path": "groups.id:g2"
"none_project": "project_id:%(project_id)s"
"self": "rule:self"
"loop_a": "rule:loop_b"
"loop_b": "@ and rule:loop_a"
"short_circuit": "@ or rule:self"
"remote": "http://policy.example/%(x)s"
"bad_format": "project_id:%(project_id)d"
"bad_left": "2fa:x"
"legacy_list": [["role:admin"], ["role:member", "project_id:%(project_id)s"]]
"legacy_empty": []
"undefined_ref": "rule:nope"
`
	e := newEnforcer(t, file, DefaultOptions())
	tests := []struct {
		rule    string
		target  map[string]any
		creds   map[string]any
		want    bool
		wantErr error
	}{
		{rule: "upper_role", creds: map[string]any{"roles": []string{"admin"}}, want: true},
		{rule: "upper_role", creds: map[string]any{"roles": []any{"Admin"}}, want: true},
		{rule: "upper_role", creds: map[string]any{"roles": []string{"member"}}, want: false},
		{rule: "empty", want: true},
		{rule: "null", want: true},
		{rule: "blank", creds: map[string]any{"roles": []string{"admin"}}, want: false},
		{rule: "flat", target: map[string]any{"target.project.id": "p1"}, creds: map[string]any{"project_id": "p1"}, want: true},
		{rule: "flat", target: map[string]any{"target": map[string]any{"project": map[string]any{"id": "p1"}}}, creds: map[string]any{"project_id": "p1"}, want: false},
		{rule: "literal", target: map[string]any{"trust": "trusted"}, want: true},
		{rule: "literal", target: map[string]any{"trust": "untrusted"}, want: false},
		{rule: "bool", target: map[string]any{"enabled": true}, want: true},
		{rule: "bool", target: map[string]any{"enabled": "True"}, want: true},
		{rule: "bool", target: map[string]any{"enabled": false}, want: false},
		{rule: "list_path", creds: map[string]any{"groups": []any{map[string]any{"id": "g1"}, map[string]any{"id": "g2"}}}, want: true},
		// str(None) == "None": a missing project in the credentials matches a target "None"
		{rule: "none_project", target: map[string]any{"project_id": "None"}, creds: map[string]any{"project_id": nil}, want: true},
		{rule: "self", wantErr: ErrEvaluation},
		{rule: "loop_a", wantErr: ErrEvaluation},
		{rule: "short_circuit", want: true},
		{rule: "remote", target: map[string]any{"x": "y"}, wantErr: ErrUnsupportedCheck},
		{rule: "bad_format", target: map[string]any{"project_id": "p1"}, wantErr: ErrEvaluation},
		{rule: "bad_format", target: map[string]any{}, want: false}, // KeyError is a plain denial
		{rule: "bad_left", wantErr: ErrEvaluation},
		{rule: "legacy_list", creds: map[string]any{"roles": []string{"admin"}}, want: true},
		{rule: "legacy_list", target: map[string]any{"project_id": "p1"}, creds: map[string]any{"roles": []string{"member"}, "project_id": "p1"}, want: true},
		{rule: "legacy_list", target: map[string]any{"project_id": "p2"}, creds: map[string]any{"roles": []string{"member"}, "project_id": "p1"}, want: false},
		{rule: "legacy_empty", want: true},
		{rule: "undefined_ref", creds: map[string]any{"roles": []string{"admin"}}, want: false},
		{rule: "not_defined_at_all", creds: map[string]any{"roles": []string{"admin"}}, want: false},
	}
	for _, tt := range tests {
		got, err := e.Enforce(tt.rule, tt.target, tt.creds)
		if got != tt.want || !errors.Is(err, tt.wantErr) || (tt.wantErr == nil && err != nil) {
			t.Errorf("Enforce(%q, %v, %v) = %v, %v; want %v, %v", tt.rule, tt.target, tt.creds, got, err, tt.want, tt.wantErr)
		}
	}
	if _, cyclic, err := e.CheckRules(); err != nil || !cmp.Equal(cyclic, []string{"loop_a", "loop_b", "self", "short_circuit"}) {
		t.Errorf("CheckRules() cyclic = %v, %v", cyclic, err)
	}
}

func TestDefaultRuleFallback(t *testing.T) {
	admin := map[string]any{"roles": []string{"admin"}}
	e := newEnforcer(t, `{"default": "role:admin", "r": "rule:missing"}`, DefaultOptions())
	for _, rule := range []string{"undefined", "r"} {
		if ok, err := e.Enforce(rule, nil, admin); !ok || err != nil {
			t.Errorf("Enforce(%q) as admin = %v, %v; want the default rule to allow", rule, ok, err)
		}
		if ok, _ := e.Enforce(rule, nil, map[string]any{"roles": []string{"member"}}); ok {
			t.Errorf("Enforce(%q) as member allowed; want the default rule to deny", rule)
		}
	}
	opts := DefaultOptions()
	opts.PolicyDefaultRule = ""
	e = newEnforcer(t, `{"default": "role:admin"}`, opts)
	if ok, err := e.Enforce("undefined", nil, admin); ok || err != nil {
		t.Errorf("without policy_default_rule: Enforce(undefined) = %v, %v; want false", ok, err)
	}
}

func TestNoRulesDeny(t *testing.T) {
	e := newEnforcer(t, "", DefaultOptions())
	if ok, err := e.Enforce("anything", nil, map[string]any{"roles": []string{"admin"}}); ok || err != nil {
		t.Errorf("Enforce with no rules = %v, %v; want false, nil", ok, err)
	}
}

var testDefaults = []RuleDefault{
	{Name: "hosts:list", CheckStr: "role:reader", Description: "List hosts.", Operations: []Operation{{"GET", "/v1/hosts"}}, ScopeTypes: []string{"project"}},
	{Name: "hosts:delete", CheckStr: "role:admin", Description: "Delete a host.",
		DeprecatedRule: &DeprecatedRule{Name: "hosts:remove", CheckStr: "role:operator", DeprecatedReason: "renamed", DeprecatedSince: "2026.1"}},
	{Name: "profiles:update", CheckStr: "role:admin", Description: "Update a profile.",
		DeprecatedRule: &DeprecatedRule{Name: "profiles:update", CheckStr: "role:member", DeprecatedSince: "2026.1"}},
}

func TestDeprecatedRules(t *testing.T) {
	member := map[string]any{"roles": []string{"member"}}
	operator := map[string]any{"roles": []string{"operator"}}
	auditor := map[string]any{"roles": []string{"auditor"}}
	tests := []struct {
		name        string
		file        string
		newDefaults bool
		rule        string
		creds       map[string]any
		want        bool
	}{
		{name: "old check string OR'ed in", rule: "profiles:update", creds: member, want: true},
		{name: "enforce_new_defaults drops it", newDefaults: true, rule: "profiles:update", creds: member, want: false},
		{name: "renamed rule keeps old default", rule: "hosts:delete", creds: operator, want: true},
		{name: "override of the old name wins", file: `"hosts:remove": "role:auditor"`, rule: "hosts:delete", creds: auditor, want: true},
		{name: "override of the old name replaces the OR", file: `"hosts:remove": "role:auditor"`, rule: "hosts:delete", creds: operator, want: false},
		{name: "override of the new name wins", file: `{"hosts:remove": "role:auditor", "hosts:delete": "role:operator"}`, rule: "hosts:delete", creds: auditor, want: false},
		{name: "file overrides default", file: `"profiles:update": "@"`, rule: "profiles:update", creds: auditor, want: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opts := DefaultOptions()
			opts.EnforceNewDefaults = tt.newDefaults
			e := newEnforcer(t, tt.file, opts, testDefaults...)
			got, err := e.Authorize(tt.rule, nil, tt.creds)
			if got != tt.want || err != nil {
				t.Errorf("Authorize(%q, %v) = %v, %v; want %v", tt.rule, tt.creds, got, err, tt.want)
			}
		})
	}
}

func TestScopeTypes(t *testing.T) {
	reader := func(extra map[string]any) map[string]any {
		c := map[string]any{"roles": []string{"reader"}}
		for k, v := range extra {
			c[k] = v
		}
		return c
	}
	for _, enforce := range []bool{false, true} {
		var seen []ScopeMismatch
		opts := DefaultOptions()
		opts.EnforceScope = enforce
		e, err := New(Config{Options: opts, Defaults: testDefaults, OnScopeMismatch: func(m ScopeMismatch) { seen = append(seen, m) }})
		if err != nil {
			t.Fatal(err)
		}
		ok, err := e.Enforce("hosts:list", nil, reader(map[string]any{"system_scope": "all"}))
		if err != nil || ok == enforce {
			t.Errorf("enforce_scope=%v: system-scoped reader on a project rule = %v, %v", enforce, ok, err)
		}
		want := []ScopeMismatch{{Rule: "hosts:list", ScopeTypes: []string{"project"}, TokenScope: "system", Enforced: enforce}}
		if diff := cmp.Diff(want, seen); diff != "" {
			t.Errorf("scope mismatches (-want +got):\n%s", diff)
		}
		seen = nil
		for _, creds := range []map[string]any{reader(map[string]any{"project_id": "p1"}), reader(map[string]any{"system_scope": ""})} {
			if ok, err := e.Enforce("hosts:list", nil, creds); !ok || err != nil {
				t.Errorf("enforce_scope=%v: project reader %v = %v, %v", enforce, creds, ok, err)
			}
		}
		if ok, _ := e.Enforce("hosts:list", nil, reader(map[string]any{"domain_id": "d1"})); ok == enforce {
			t.Errorf("enforce_scope=%v: domain-scoped reader = %v", enforce, ok)
		}
		if len(seen) != 1 || seen[0].TokenScope != "domain" {
			t.Errorf("enforce_scope=%v: mismatches %v, want one for the domain token", enforce, seen)
		}
	}
}

func TestAuthorizeUnregistered(t *testing.T) {
	e := newEnforcer(t, `"adhoc": "@"`, DefaultOptions(), testDefaults...)
	if _, err := e.Authorize("adhoc", nil, nil); !errors.Is(err, ErrNotRegistered) {
		t.Errorf("Authorize(adhoc) error = %v, want ErrNotRegistered", err)
	}
	if ok, err := e.Enforce("adhoc", nil, nil); !ok || err != nil {
		t.Errorf("Enforce(adhoc) = %v, %v; want true", ok, err)
	}
}

func TestNewRejectsInvalidDefaults(t *testing.T) {
	tests := []struct {
		name string
		defs []RuleDefault
	}{
		{"no name", []RuleDefault{{CheckStr: "@", Description: "x"}}},
		{"no description", []RuleDefault{{Name: "a", CheckStr: "@"}}},
		{"duplicate", []RuleDefault{{Name: "a", CheckStr: "@", Description: "x"}, {Name: "a", CheckStr: "!", Description: "y"}}},
		{"unparsable", []RuleDefault{{Name: "a", CheckStr: "role:a or", Description: "x"}}},
		{"unparsable deprecated", []RuleDefault{{Name: "a", CheckStr: "@", Description: "x", DeprecatedRule: &DeprecatedRule{Name: "b", CheckStr: "(("}}}},
		{"duplicate scope", []RuleDefault{{Name: "a", CheckStr: "@", Description: "x", ScopeTypes: []string{"project", "project"}}}},
		{"removal without reason", []RuleDefault{{Name: "a", CheckStr: "@", Description: "x", DeprecatedForRemoval: true}}},
	}
	for _, tt := range tests {
		if _, err := New(Config{Defaults: tt.defs}); !errors.Is(err, ErrInvalidDefault) {
			t.Errorf("%s: New() error = %v, want ErrInvalidDefault", tt.name, err)
		}
	}
}

func TestParseFile(t *testing.T) {
	tests := []struct {
		name         string
		data         string
		wantRules    map[string]string
		wantProblems int
		wantErr      bool
	}{
		{name: "yaml", data: "a: role:x\n'b': \"@\"\n", wantRules: map[string]string{"a": "role:x", "b": "@"}},
		{name: "json", data: `{"a": "role:x", "b": ["role:y", "role:z"]}`, wantRules: map[string]string{"a": "role:x", "b": "(role:y or role:z)"}},
		{name: "empty", data: "", wantRules: map[string]string{}},
		{name: "comments only", data: "# nothing\n#\"a\": \"@\"\n", wantRules: map[string]string{}},
		{name: "json null", data: "null", wantRules: map[string]string{}},
		{name: "empty list document", data: "[]", wantRules: map[string]string{}},
		{name: "null rule allows", data: "a:\n", wantRules: map[string]string{"a": "@"}},
		{name: "broken rule denies", data: `a: "role:x or"`, wantRules: map[string]string{"a": "!"}, wantProblems: 1},
		{name: "non-string key skipped", data: "yes: \"@\"\n1: \"@\"\nb: \"!\"\n", wantRules: map[string]string{"b": "!"}, wantProblems: 2},
		{name: "list with non-string check", data: `a: [["role:x", 5]]`, wantRules: map[string]string{"a": "(role:x and !)"}, wantProblems: 1},
		{name: "false rule rejected", data: "a: false\n", wantErr: true},
		{name: "zero rule rejected", data: `{"a": 0}`, wantErr: true},
		{name: "mapping rule rejected", data: "a: {b: c}\n", wantErr: true},
		{name: "list element mapping rejected", data: "a: [{b: c}]\n", wantErr: true},
		{name: "sequence document rejected", data: "- a\n- b\n", wantErr: true},
		{name: "scalar document rejected", data: "just text", wantErr: true},
		{name: "yaml syntax error", data: "a: [\n", wantErr: true},
		{name: "not utf-8", data: "a: \"\xff\"\n", wantErr: true},
	}
	for _, tt := range tests {
		rules, problems, err := ParseFile([]byte(tt.data))
		if tt.wantErr {
			if !errors.Is(err, ErrInvalidFile) {
				t.Errorf("%s: ParseFile() error = %v, want ErrInvalidFile", tt.name, err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: ParseFile() error = %v", tt.name, err)
			continue
		}
		got := map[string]string{}
		for k, r := range rules {
			got[k] = r.String()
		}
		if diff := cmp.Diff(tt.wantRules, got); diff != "" {
			t.Errorf("%s: rules (-want +got):\n%s", tt.name, diff)
		}
		if len(problems) != tt.wantProblems {
			t.Errorf("%s: problems = %v, want %d", tt.name, problems, tt.wantProblems)
		}
	}
}

// TestParseFileYAMLShapes holds the loader to the outcomes oslo.policy has for
// policyFileShapes (TestDifferentialPolicyFileShapes checks the table against it): a
// refused file is an ErrInvalidFile, and an Enforcer on it denies every rule.
func TestParseFileYAMLShapes(t *testing.T) {
	for _, s := range policyFileShapes {
		_, _, err := ParseFile([]byte(s.data))
		if s.refuse != (err != nil) || (err != nil && !errors.Is(err, ErrInvalidFile)) {
			t.Errorf("ParseFile(%q) error = %v, want refused=%v with ErrInvalidFile", s.data, err, s.refuse)
		}
	}
	dir := t.TempDir()
	opts := DefaultOptions()
	opts.PolicyFile = filepath.Join(dir, "policy.yaml")
	e, err := New(Config{Options: opts, Defaults: testDefaults})
	if err != nil {
		t.Fatal(err)
	}
	for i, data := range []string{"\"hosts:list\": \"@\"\n---\n\"hosts:list\": \"!\"\n", "\"hosts:list\":\t\"@\"\n"} {
		bump(t, opts.PolicyFile, data, i+1)
		ok, err := e.Enforce("hosts:list", nil, map[string]any{"roles": []string{"admin", "reader"}})
		if ok || !errors.Is(err, ErrInvalidFile) {
			t.Errorf("policy file %q: Enforce = %v, %v; want a denial with ErrInvalidFile", data, ok, err)
		}
	}
}

// bump rewrites the policy file with a modification time that differs from the last one.
func bump(t *testing.T, path, content string, step int) {
	t.Helper()
	writeFile(t, path, content)
	mt := time.Date(2026, 1, 1, 0, 0, step, 0, time.UTC)
	if err := os.Chtimes(path, mt, mt); err != nil {
		t.Fatal(err)
	}
}

func TestReloadOnChange(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "policy.yaml")
	opts := DefaultOptions()
	opts.PolicyFile = "policy.yaml"
	e, err := New(Config{Options: opts, BaseDir: dir, Defaults: testDefaults})
	if err != nil {
		t.Fatal(err)
	}
	if e.PolicyFile() != path {
		t.Fatalf("PolicyFile() = %q, want %q", e.PolicyFile(), path)
	}
	reader := map[string]any{"roles": []string{"reader"}}
	check := func(step string, want bool, wantErr error) {
		t.Helper()
		got, err := e.Enforce("hosts:list", nil, reader)
		if got != want || !errors.Is(err, wantErr) || (wantErr == nil && err != nil) {
			t.Errorf("%s: Enforce(hosts:list) = %v, %v; want %v, %v", step, got, err, want, wantErr)
		}
	}
	check("missing file: defaults", true, nil)
	bump(t, path, `"hosts:list": "role:admin"`, 1)
	check("file created", false, nil)
	bump(t, path, `"hosts:list": "role:reader or role:admin"`, 2)
	check("file changed", true, nil)
	bump(t, path, `"hosts:list": [`, 3)
	check("file broken", false, ErrInvalidFile)
	check("still broken", false, ErrInvalidFile)
	bump(t, path, `"hosts:list": "!"`, 4)
	check("file fixed", false, nil)
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	check("file removed", false, ErrInvalidFile)
	bump(t, path, `"hosts:list": "@"`, 5)
	check("file back", true, nil)
	if err := e.Reload(); err != nil {
		t.Errorf("Reload() = %v", err)
	}
}

func TestNewFailsOnBrokenFile(t *testing.T) {
	dir := t.TempDir()
	opts := DefaultOptions()
	opts.PolicyFile = filepath.Join(dir, "policy.yaml")
	writeFile(t, opts.PolicyFile, "a: false\n")
	if _, err := New(Config{Options: opts}); !errors.Is(err, ErrInvalidFile) {
		t.Errorf("New() error = %v, want ErrInvalidFile", err)
	}
}

func TestConcurrentEnforceAndReload(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "policy.yaml")
	opts := DefaultOptions()
	opts.PolicyFile = path
	e, err := New(Config{Options: opts, Defaults: testDefaults})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := range 200 {
				ok, err := e.Enforce("hosts:list", map[string]any{"i": i}, map[string]any{"roles": []string{"reader"}})
				if err != nil {
					t.Errorf("goroutine %d: Enforce error %v", g, err)
					return
				}
				_ = ok
			}
		})
	}
	for i := range 50 {
		bump(t, path, []string{`"hosts:list": "@"`, `"hosts:list": "!"`}[i%2], i)
	}
	wg.Wait()
}

func TestWriteSampleGolden(t *testing.T) {
	var buf bytes.Buffer
	if err := WriteSample(&buf, testDefaults); err != nil {
		t.Fatal(err)
	}
	golden := filepath.Join("testdata", "sample.golden.yaml")
	if *update {
		writeFile(t, golden, buf.String())
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(string(want), buf.String()); diff != "" {
		t.Errorf("WriteSample (-golden +got):\n%s", diff)
	}
}

func TestTextWrap(t *testing.T) {
	tests := []struct {
		in   string
		want []string
	}{
		{"", nil},
		{"short", []string{"# short"}},
		{"a very-long-hyphenated-word-that-keeps-on-going-and-going-and-going-past-the-margin end",
			[]string{"# a very-long-hyphenated-word-that-keeps-on-going-and-going-and-going-", "# past-the-margin end"}},
	}
	for _, tt := range tests {
		if diff := cmp.Diff(tt.want, textWrap(tt.in, 70, "# ", "# ")); diff != "" {
			t.Errorf("textWrap(%q) (-want +got):\n%s", tt.in, diff)
		}
	}
}

func TestRuleEval(t *testing.T) {
	r := MustParse("rule:base and project_id:%(project_id)s")
	rules := map[string]*Rule{"base": MustParse("role:member")}
	creds := map[string]any{"roles": []string{"Member"}, "project_id": "p1"}
	if ok, err := r.Eval(map[string]any{"project_id": "p1"}, creds, rules); !ok || err != nil {
		t.Errorf("Eval() = %v, %v; want true", ok, err)
	}
	if ok, err := r.Eval(map[string]any{"project_id": "p1"}, creds, nil); ok || err != nil {
		t.Errorf("Eval() without rules = %v, %v; want false", ok, err)
	}
}
