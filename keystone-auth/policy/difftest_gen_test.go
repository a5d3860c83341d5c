package policy

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
)

// This file generates the differential test's scenarios: rule sets (a policy file and
// registered defaults), rule strings, credentials and targets, built from the atoms
// OpenStack policies use plus the quirks oslo.policy is known for.

type diffCase struct {
	Rule   string         `json:"rule"`
	Target map[string]any `json:"target"`
	Creds  map[string]any `json:"creds"`
}

type diffDefault struct {
	Name                 string       `json:"name"`
	CheckStr             string       `json:"check_str"`
	Description          string       `json:"description"`
	Operations           []diffOp     `json:"operations,omitempty"`
	ScopeTypes           []string     `json:"scope_types,omitempty"`
	DeprecatedRule       *diffDepRule `json:"deprecated_rule,omitempty"`
	DeprecatedForRemoval bool         `json:"deprecated_for_removal,omitempty"`
	DeprecatedReason     string       `json:"deprecated_reason,omitempty"`
	DeprecatedSince      string       `json:"deprecated_since,omitempty"`
}

type diffOp struct {
	Method string `json:"method"`
	Path   string `json:"path"`
}

type diffDepRule struct {
	Name     string `json:"name"`
	CheckStr string `json:"check_str"`
	Reason   string `json:"reason,omitempty"`
	Since    string `json:"since,omitempty"`
}

type diffConfig struct {
	EnforceScope       bool   `json:"enforce_scope"`
	EnforceNewDefaults bool   `json:"enforce_new_defaults"`
	PolicyDefaultRule  string `json:"policy_default_rule"`
}

type diffScenario struct {
	PolicyFile *string       `json:"policy_file"`
	Defaults   []diffDefault `json:"defaults,omitempty"`
	Config     diffConfig    `json:"config"`
	Cases      []diffCase    `json:"cases,omitempty"`
	Parse      []string      `json:"parse,omitempty"`
	Sample     bool          `json:"sample,omitempty"`
	Literals   []string      `json:"literals,omitempty"`
	Formats    [][2]any      `json:"formats,omitempty"`
}

type diffResult struct {
	Results  []string `json:"results"`
	Parsed   []string `json:"parsed"`
	Sample   string   `json:"sample"`
	Literals []string `json:"literals"`
	Formats  []string `json:"formats"`
}

type gen struct {
	r *rand.Rand
}

func (g *gen) pick(xs ...string) string { return xs[g.r.IntN(len(xs))] }
func (g *gen) chance(p float64) bool    { return g.r.Float64() < p }

var ruleNames = []string{"r0", "r1", "r2", "r3", "r4", "r5", "admin_required", "owner", "default"}

// atom returns one check token.
func (g *gen) atom() string {
	switch g.r.IntN(14) {
	case 0, 1:
		return "role:" + g.pick("admin", "Admin", "ADMIN", "member", "reader", "service", "%(role)s", "%(missing)s", "ΑΣ", "ας", "İ", "i̇")
	case 2:
		return "rule:" + g.pick(append(slices.Clone(ruleNames), "undefined", "nope")...)
	case 3:
		return g.pick("project_id:%(project_id)s", "user_id:%(user_id)s", "domain_id:%(domain_id)s",
			"project_id:%(target.project.id)s", "user_id:%(user.id)s", "project_id:%(missing)s")
	case 4:
		return g.pick("system_scope:all", "is_admin:True", "is_admin:true", "is_admin_project:True", "is_admin:%(flag)s",
			"system:all", "project_id:None", "domain_id:None")
	case 5:
		return g.pick("'trusted':%(trust_level)s", `"trusted":%(trust_level)s`, "'p1':%(project_id)s",
			"True:%(flag)s", "False:%(flag)s", "None:%(nothing)s", "1:%(n)s", "1.0:%(n)s", "1.0:%(f)s",
			"-1:%(neg)s", "0x10:%(n)s", "1_000:%(big)s", "1e3:%(f)s", "[1,2]:%(l)s", "1,:%(t)s", "b'x':%(b)s",
			"'a''b':%(ab)s", "...:%(e)s", "1j:%(c)s", "-1j:%(c)s", "1+2j:%(c)s", "set():%(s)s", "{1}:%(s)s", "u'x':%(x)s",
			"'\\x41':%(x)s", "'é':%(x)s", "'\\u00e9':%(x)s")
	case 6:
		return g.pick("roles:admin", "roles:%(role)s", "user.domain.id:%(user.domain.id)s", "user.domain.id:d1",
			"groups.id:%(group)s", "groups.id:g2", "service_roles:service", "user.name:%(missing)s", "nested.list.x:1")
	case 7:
		// generic checks whose left side oslo.policy cannot evaluate, or whose match % target raises
		return g.pick("2fa:x", ":%(x)s", "a..b:x", "roles.name:x", "project_id:%(project_id)d", "project_id:%(n)d",
			"project_id:100%", "project_id:%%(project_id)s", "project_id:%(project_id)5s", "project_id:%(project_id).1s",
			"n:%(n)05d", "n:%(n)x", "project_id:%(project_id)r", "f:%(f).2f", "f:%(f)g", "user_id:%s", "x:%(x)c",
			"user.id:%(project_id)s", "project_id:%(", "is_admin:%(flag)d", "a.b.c:%(x)s", "f'x':x", "not-a-name:x",
			"1if:x", "print(1):x", "[x]:%(l)s", "1,2:%(t)s")
	case 8:
		return g.pick("@", "!", "@", "!")
	case 9:
		return g.pick("foo", "'quoted'", `"quoted"`, "roles", "rule", "role:", "rule:", ":")
	default:
		return g.pick("role:admin", "role:member", "role:reader", "rule:r1", "rule:admin_required",
			"project_id:%(project_id)s", "user_id:%(user_id)s", "@")
	}
}

type expr struct {
	op   string // "", "and", "or", "not"
	leaf string
	kids []*expr
}

func (g *gen) expr(depth int) *expr {
	if depth <= 0 || g.chance(0.35) {
		return &expr{leaf: g.atom()}
	}
	switch g.r.IntN(5) {
	case 0:
		return &expr{op: "not", kids: []*expr{g.expr(depth - 1)}}
	case 1, 2:
		n := 2 + g.r.IntN(3)
		e := &expr{op: "and"}
		for range n {
			e.kids = append(e.kids, g.expr(depth-1))
		}
		return e
	default:
		n := 2 + g.r.IntN(3)
		e := &expr{op: "or"}
		for range n {
			e.kids = append(e.kids, g.expr(depth-1))
		}
		return e
	}
}

func (g *gen) kw(k string) string {
	switch g.r.IntN(6) {
	case 0:
		return strings.ToUpper(k)
	case 1:
		return strings.ToUpper(k[:1]) + k[1:]
	default:
		return k
	}
}

func (g *gen) ws() string {
	switch g.r.IntN(12) {
	case 0:
		return "  "
	case 1:
		return "\t"
	case 2:
		return "\n "
	case 3:
		return "\x1c"
	case 4:
		return "\u00a0"
	default:
		return " "
	}
}

// render writes e; parentheses are added where precedence needs them and sometimes
// where it does not.
func (g *gen) render(e *expr, parentOp string) string {
	var s string
	switch e.op {
	case "":
		s = e.leaf
	case "not":
		s = g.kw("not") + g.ws() + g.render(e.kids[0], "not")
	default:
		parts := make([]string, len(e.kids))
		for i, k := range e.kids {
			parts[i] = g.render(k, e.op)
		}
		s = strings.Join(parts, g.ws()+g.kw(e.op)+g.ws())
	}
	need := e.op != "" && parentOp != "" && (parentOp != "or" || e.op != "and") && e.op != "not"
	if parentOp == "not" && e.op != "" && e.op != "not" {
		need = true
	}
	if need || (e.op != "" && g.chance(0.15)) || (e.op == "" && g.chance(0.05)) {
		s = "(" + s + ")"
	}
	return s
}

// ruleString returns a rule: usually a rendered expression, sometimes token soup.
func (g *gen) ruleString() string {
	if g.chance(0.08) {
		toks := []string{"(", ")", "and", "or", "not", "AND", "Not", "((", "))", "'x'", "\"y\""}
		n := 1 + g.r.IntN(6)
		var parts []string
		for range n {
			if g.chance(0.5) {
				parts = append(parts, g.atom())
			} else {
				parts = append(parts, g.pick(toks...))
			}
		}
		return strings.Join(parts, g.pick(" ", "", " "))
	}
	if g.chance(0.04) {
		return g.pick("", " ", "\t", "()", "(@)", "((@))", "(@", "@)", "not", "and", "'x'", "(not @)", "not not @")
	}
	s := g.render(g.expr(3), "")
	if g.chance(0.1) {
		s = g.ws() + s + g.ws()
	}
	return s
}

// yamlQuote renders s as a double-quoted YAML scalar.
func yamlQuote(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		switch {
		case r == '"' || r == '\\':
			b.WriteByte('\\')
			b.WriteRune(r)
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\t':
			b.WriteString(`\t`)
		case r < 0x20 || r == 0x7f:
			fmt.Fprintf(&b, `\x%02x`, r)
		case r == 0x85 || r == 0xa0 || r == 0x2028 || r == 0x2029:
			fmt.Fprintf(&b, `\u%04x`, r)
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
	return b.String()
}

func (g *gen) policyFile(names []string) (string, map[string]bool) {
	var lines []string
	defined := map[string]bool{}
	for _, n := range names {
		if g.chance(0.3) {
			continue
		}
		defined[n] = true
		switch g.r.IntN(20) {
		case 0:
			lines = append(lines, fmt.Sprintf("%q:\n", n)) // null: always allowed
		case 1:
			lines = append(lines, fmt.Sprintf("%q: [[%s, %s], [%s]]\n", n, yamlQuote(g.atom()), yamlQuote(g.atom()), yamlQuote(g.atom())))
		case 2:
			lines = append(lines, fmt.Sprintf("%q: [%s, []]\n", n, yamlQuote(g.atom())))
		case 3:
			lines = append(lines, fmt.Sprintf("%q: []\n", n))
		case 4:
			lines = append(lines, fmt.Sprintf("%q: '%s'\n", n, strings.ReplaceAll(g.render(g.expr(2), ""), "'", "''")))
		default:
			lines = append(lines, fmt.Sprintf("%q: %s\n", n, yamlQuote(g.ruleString())))
		}
	}
	return g.fileShape(lines), defined
}

// fileShape lays the rule lines out in one of the file shapes where PyYAML (and so
// oslo.policy, which then denies everything) and libyaml disagree, or in a harmless
// variant of them.
func (g *gen) fileShape(lines []string) string {
	tabAt := func(old, repl string) {
		if len(lines) > 0 {
			i := g.r.IntN(len(lines))
			lines[i] = strings.Replace(lines[i], old, repl, 1)
		}
	}
	switch g.r.IntN(16) {
	case 0: // a tab after a key's colon: PyYAML refuses the file
		tabAt(": ", g.pick(":\t", ": \t", "\t: "))
	case 1: // a tab after a value, or before a comment: refused too
		tabAt("\n", g.pick("\t\n", " \t# note\n"))
	case 2: // tabs in a comment, a quoted scalar or a block scalar: accepted
		lines = append(lines, g.pick("# a\tcomment\n", "\"tabbed\": 'role:a\tb'\n", "\"tabbed\": |\n  role:a\tb\n", "\"tabbed\": \"@\" # x\ty\n"))
	case 3: // several documents: PyYAML's safe_load refuses the stream
		at := g.r.IntN(len(lines) + 1)
		lines = slices.Insert(lines, at, g.pick("---\n", "...\n---\n", "--- # next\n"))
		if at == 0 {
			lines = append(lines, "---\n\"r0\": \"!\"\n")
		}
	case 4: // explicit document start and end markers around one document: accepted
		lines = append([]string{"---\n"}, lines...)
		if g.chance(0.5) {
			lines = append(lines, "...\n")
		}
	}
	return strings.Join(lines, "")
}

func (g *gen) defaults() []diffDefault {
	var ds []diffDefault
	n := g.r.IntN(4)
	for i := range n {
		name := fmt.Sprintf("svc:thing:%d", i)
		d := diffDefault{Name: name, CheckStr: g.render(g.expr(2), ""), Description: "Do thing " + strconv.Itoa(i) + "."}
		if _, err := Parse(d.CheckStr); err != nil {
			d.CheckStr = "role:admin"
		}
		if g.chance(0.5) {
			d.ScopeTypes = [][]string{{"project"}, {"system"}, {"system", "project"}, {"domain"}}[g.r.IntN(4)]
		}
		if g.chance(0.4) {
			depName := name
			if g.chance(0.6) {
				depName = g.pick("r1", "r2", "old:thing:"+strconv.Itoa(i))
			}
			dep := g.render(g.expr(1), "")
			if _, err := Parse(dep); err != nil {
				dep = "role:member"
			}
			if g.chance(0.2) {
				dep = d.CheckStr
			}
			d.DeprecatedRule = &diffDepRule{Name: depName, CheckStr: dep, Reason: "old", Since: "Z"}
		}
		ds = append(ds, d)
	}
	return ds
}

func (g *gen) creds() map[string]any {
	c := map[string]any{}
	if !g.chance(0.1) {
		roles := []any{}
		for _, r := range []string{"admin", "Admin", "member", "reader", "service", "σ", "ΑΣ", "i̇", "İ"} {
			if g.chance(0.25) {
				roles = append(roles, r)
			}
		}
		c["roles"] = roles
		if g.chance(0.03) {
			c["roles"] = g.pick("admin", "x")
		}
		if g.chance(0.02) {
			c["roles"] = nil
		}
		if g.chance(0.02) {
			c["roles"] = []any{"admin", 5}
		}
	}
	set := func(k string, vals ...any) {
		if g.chance(0.75) {
			c[k] = vals[g.r.IntN(len(vals))]
		}
	}
	set("project_id", "p1", "p2", nil, "None")
	set("user_id", "u1", "u2")
	set("domain_id", nil, "d1", "")
	set("system_scope", nil, "all", "")
	set("system", nil, "all")
	set("is_admin", true, false, "True")
	set("is_admin_project", true, false)
	set("user", map[string]any{"domain": map[string]any{"id": "d1"}, "name": "alice"}, map[string]any{"domain": "d1"}, "alice")
	set("groups", []any{map[string]any{"id": "g1"}, map[string]any{"id": "g2"}}, []any{"g1"}, []any{})
	set("service_roles", []any{"service"}, []any{}, "service")
	set("nested", map[string]any{"list": []any{map[string]any{"x": 1}, map[string]any{"x": 2}}})
	set("n", 1, "1", json.Number("1.0"))
	set("f", json.Number("1.0"), json.Number("2.5"))
	set("user.domain.id", "d1")
	set("a", map[string]any{"b": map[string]any{"c": "v"}})
	return c
}

func (g *gen) target() map[string]any {
	t := map[string]any{}
	set := func(k string, vals ...any) {
		if g.chance(0.7) {
			t[k] = vals[g.r.IntN(len(vals))]
		}
	}
	set("project_id", "p1", "p2", nil, "None")
	set("user_id", "u1", "u2")
	set("domain_id", "d1", nil)
	set("target.project.id", "p1", "p2")
	set("target", map[string]any{"project": map[string]any{"id": "p1"}})
	set("user.id", "u1")
	set("user.domain.id", "d1", "d2")
	set("role", "admin", "ADMIN", "reader", "σ")
	set("trust_level", "trusted", "untrusted")
	set("flag", true, false, "True", 1)
	set("nothing", nil)
	set("n", 1, "1", json.Number("1.0"), 16, true, -5)
	set("neg", -1, "-1")
	set("big", 1000, "1000")
	set("f", json.Number("1.0"), "1.0", json.Number("1000.0"), json.Number("2.5"), json.Number("1e16"),
		json.Number("1e-5"), json.Number("0.1"), json.Number("-0.0"), json.Number("123456789012345678901234567890"))
	set("l", []any{1, 2}, "[1, 2]")
	set("t", "(1,)", "(1, 2)", []any{1})
	set("b", "b'x'", "x")
	set("ab", "ab")
	set("e", "Ellipsis")
	set("c", "1j", "(-0-1j)", "(1+2j)")
	set("s", "set()", "{1}")
	set("x", "x", "A", "é", 65)
	set("group", "g1", "g2", "g3")
	return t
}

func (g *gen) scenario(nCases int) diffScenario {
	names := slices.Clone(ruleNames)
	content, _ := g.policyFile(names)
	sc := diffScenario{Config: diffConfig{PolicyDefaultRule: "default"}}
	if !g.chance(0.05) {
		sc.PolicyFile = &content
	}
	if g.chance(0.1) {
		sc.Config.PolicyDefaultRule = g.pick("", "r1", "missing")
	}
	sc.Config.EnforceScope = g.chance(0.5)
	sc.Config.EnforceNewDefaults = g.chance(0.3)
	sc.Defaults = g.defaults()
	all := slices.Clone(names)
	for _, d := range sc.Defaults {
		all = append(all, d.Name)
	}
	all = append(all, "undefined")
	for range nCases {
		sc.Cases = append(sc.Cases, diffCase{Rule: g.pick(all...), Target: g.target(), Creds: g.creds()})
	}
	for range 20 {
		sc.Parse = append(sc.Parse, g.ruleString())
	}
	return sc
}
