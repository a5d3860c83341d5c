package policy

import (
	"errors"
	"fmt"
	"strings"
)

// ErrParse reports a rule that oslo.policy would log as not understood. Parse still
// returns the rule oslo.policy would use, in which the broken part always fails.
var ErrParse = errors.New("policy rule not understood")

// Rule is a parsed rule of the oslo.policy language. Its String method returns what
// str() of the oslo.policy check tree returns ("(role:a or role:b)", "@", "!", ...).
type Rule struct {
	root check
}

// String returns oslo.policy's canonical form of the rule.
func (r *Rule) String() string {
	if r == nil || r.root == nil {
		return "!"
	}
	return r.root.String()
}

// check is one node of a rule tree.
type check interface {
	String() string
	eval(ev *evaluation, target, creds map[string]any) (bool, error)
}

type (
	trueCheck  struct{}
	falseCheck struct{}
	notCheck   struct{ rule check }
	andCheck   struct{ rules []check }
	orCheck    struct{ rules []check }
	// kindCheck is a "kind:match" leaf: rule:, role:, http(s): or a generic check.
	roleCheck struct{ match string }
	ruleCheck struct{ match string }
	httpCheck struct{ kind, match string }
	// genericCheck holds the precomputed ast.literal_eval of its kind.
	genericCheck struct {
		kind, match string
		lit         any
		class       literalClass
		litErr      error
	}
	// bareToken is what oslo.policy's parser returns when a rule reduces to a single
	// token that is not a check ("and", "(", a quoted string): a Python str, whose
	// evaluation raises.
	bareToken struct{ text string }
)

func (trueCheck) String() string    { return "@" }
func (falseCheck) String() string   { return "!" }
func (c *notCheck) String() string  { return "not " + c.rule.String() }
func (c *andCheck) String() string  { return joinChecks(c.rules, " and ") }
func (c *orCheck) String() string   { return joinChecks(c.rules, " or ") }
func (c *roleCheck) String() string { return "role:" + c.match }
func (c *ruleCheck) String() string { return "rule:" + c.match }
func (c *httpCheck) String() string { return c.kind + ":" + c.match }
func (c *genericCheck) String() string {
	return c.kind + ":" + c.match
}
func (c *bareToken) String() string { return c.text }

func joinChecks(cs []check, sep string) string {
	parts := make([]string, len(cs))
	for i, c := range cs {
		parts[i] = c.String()
	}
	return "(" + strings.Join(parts, sep) + ")"
}

// Parse parses a rule in the oslo.policy language, exactly as oslo.policy 4.0.0's
// _parser.parse_rule does for a string:
//
//   - "" is a rule that always passes; "@" always passes, "!" never does;
//   - "kind:match" checks: "rule:NAME" (another rule), "role:NAME" (case-insensitive
//     role membership, NAME may use %(key)s), "http:"/"https:" (remote checks, which this
//     package does not perform: they fail with an error), anything else is a generic check
//     ("project_id:%(project_id)s", "'literal':%(key)s", "True:%(key)s");
//   - "not", "and" (binds tighter) and "or", case-insensitive, and parentheses.
//
// Parse always returns the rule oslo.policy would enforce. When oslo.policy would log
// that it did not understand the rule (a syntax error, a check without ':'), the rule it
// uses denies (wholly or in that check) and Parse also returns an error wrapping ErrParse.
func Parse(rule string) (*Rule, error) {
	if rule == "" {
		return &Rule{root: trueCheck{}}, nil
	}
	var problems []error
	st := &parseState{}
	for _, tk := range tokenizeRule(rule, &problems) {
		st.shift(tk)
	}
	if len(st.items) != 1 {
		problems = append(problems, fmt.Errorf("rule %q does not reduce to one expression: %w", rule, ErrParse))
		return &Rule{root: falseCheck{}}, errors.Join(problems...)
	}
	var root check
	switch v := st.items[0].val.(type) {
	case check:
		root = v
	case string:
		root = &bareToken{text: v}
		problems = append(problems, fmt.Errorf("rule %q is the bare token %q, evaluating it raises: %w", rule, v, ErrParse))
	}
	return &Rule{root: root}, errors.Join(problems...)
}

// MustParse is Parse for rules written in code; it panics when the rule is not understood.
func MustParse(rule string) *Rule {
	r, err := Parse(rule)
	if err != nil {
		panic(err)
	}
	return r
}

type parseItem struct {
	tok string // "(", ")", "and", "or", "not", "string", "check", "and_expr", "or_expr"
	val any    // check, or string for raw tokens
}

// tokenizeRule is oslo.policy's _parse_tokenize.
func tokenizeRule(rule string, problems *[]error) []parseItem {
	var out []parseItem
	for _, tok := range splitPySpace(rule) {
		clean := strings.TrimLeft(tok, "(")
		for range len(tok) - len(clean) {
			out = append(out, parseItem{"(", "("})
		}
		if clean == "" {
			continue
		}
		tok = clean
		clean = strings.TrimRight(tok, ")")
		trail := len(tok) - len(clean)
		lowered := pyLower(clean)
		switch {
		case lowered == "and" || lowered == "or" || lowered == "not":
			out = append(out, parseItem{lowered, clean})
		case clean != "":
			rs := []rune(tok)
			if len(rs) >= 2 && rs[0] == rs[len(rs)-1] && (rs[0] == '"' || rs[0] == '\'') {
				out = append(out, parseItem{"string", string(rs[1 : len(rs)-1])})
			} else {
				out = append(out, parseItem{"check", parseCheck(clean, problems)})
			}
		}
		for range trail {
			out = append(out, parseItem{")", ")"})
		}
	}
	return out
}

// splitPySpace splits like re.split(r'\s+', s), dropping empty strings.
func splitPySpace(s string) []string {
	return strings.FieldsFunc(s, pyIsSpace)
}

// parseCheck is oslo.policy's _parse_check for one "kind:match" token.
func parseCheck(s string, problems *[]error) check {
	switch s {
	case "!":
		return falseCheck{}
	case "@":
		return trueCheck{}
	}
	kind, match, ok := strings.Cut(s, ":")
	if !ok {
		*problems = append(*problems, fmt.Errorf("check %q has no ':': %w", s, ErrParse))
		return falseCheck{}
	}
	switch kind {
	case "http", "https":
		return &httpCheck{kind: kind, match: match}
	case "rule":
		return &ruleCheck{match: match}
	case "role":
		return &roleCheck{match: match}
	}
	lit, class, err := pyLiteralEval(kind)
	return &genericCheck{kind: kind, match: match, lit: lit, class: class, litErr: err}
}

// parseState is oslo.policy's ParseState: a greedy shift-reduce parser whose reductions
// are tried in the order oslo.policy declares them.
type parseState struct {
	items []parseItem
}

var reductions = []struct {
	pattern []string
	reduce  func(vals []any) parseItem
}{
	{[]string{"(", "or_expr", ")"}, wrapCheck},
	{[]string{"(", "and_expr", ")"}, wrapCheck},
	{[]string{"(", "check", ")"}, wrapCheck},
	{[]string{"check", "and", "check"}, func(v []any) parseItem {
		return parseItem{"and_expr", &andCheck{rules: []check{v[0].(check), v[2].(check)}}}
	}},
	{[]string{"or_expr", "and", "check"}, func(v []any) parseItem {
		or := v[0].(*orCheck)
		last := or.rules[len(or.rules)-1]
		or.rules = or.rules[:len(or.rules)-1]
		and, ok := last.(*andCheck)
		if ok {
			and.rules = append(and.rules, v[2].(check))
		} else {
			and = &andCheck{rules: []check{last, v[2].(check)}}
		}
		or.rules = append(or.rules, and)
		return parseItem{"or_expr", or}
	}},
	{[]string{"and_expr", "and", "check"}, func(v []any) parseItem {
		and := v[0].(*andCheck)
		and.rules = append(and.rules, v[2].(check))
		return parseItem{"and_expr", and}
	}},
	{[]string{"and_expr", "or", "check"}, makeOr},
	{[]string{"check", "or", "check"}, makeOr},
	{[]string{"or_expr", "or", "check"}, func(v []any) parseItem {
		or := v[0].(*orCheck)
		or.rules = append(or.rules, v[2].(check))
		return parseItem{"or_expr", or}
	}},
	{[]string{"not", "check"}, func(v []any) parseItem {
		return parseItem{"check", &notCheck{rule: v[1].(check)}}
	}},
}

func wrapCheck(v []any) parseItem { return parseItem{"check", v[1]} }

func makeOr(v []any) parseItem {
	return parseItem{"or_expr", &orCheck{rules: []check{v[0].(check), v[2].(check)}}}
}

func (st *parseState) shift(it parseItem) {
	st.items = append(st.items, it)
	st.reduce()
}

func (st *parseState) reduce() {
	for {
		reduced := false
		for _, red := range reductions {
			n := len(red.pattern)
			if len(st.items) < n {
				continue
			}
			tail := st.items[len(st.items)-n:]
			match := true
			for i, t := range red.pattern {
				if tail[i].tok != t {
					match = false
					break
				}
			}
			if !match {
				continue
			}
			vals := make([]any, n)
			for i := range tail {
				vals[i] = tail[i].val
			}
			st.items = append(st.items[:len(st.items)-n], red.reduce(vals))
			reduced = true
			break
		}
		if !reduced {
			return
		}
	}
}

// parseListRule is oslo.policy's _parse_list_rule for the legacy list-of-lists form
// (outer list joined by "or", inner lists by "and"; each string is one check, not parsed
// as an expression). Elements must be strings or lists of strings; anything else is
// rejected with an error (oslo.policy crashes or silently changes meaning on them).
func parseListRule(rule []any) (*Rule, error) {
	if len(rule) == 0 {
		return &Rule{root: trueCheck{}}, nil
	}
	var problems []error
	var orList []check
	for _, inner := range rule {
		var items []any
		switch x := inner.(type) {
		case nil:
			continue
		case string:
			if x == "" {
				continue
			}
			items = []any{x}
		case []any:
			if len(x) == 0 {
				continue
			}
			items = x
		default:
			return nil, fmt.Errorf("list rule element of type %T: %w", inner, ErrInvalidFile)
		}
		var andList []check
		for _, it := range items {
			s, ok := it.(string)
			if !ok {
				problems = append(problems, fmt.Errorf("list rule check of type %T: %w", it, ErrParse))
				andList = append(andList, falseCheck{})
				continue
			}
			andList = append(andList, parseCheck(s, &problems))
		}
		if len(andList) == 1 {
			orList = append(orList, andList[0])
		} else {
			orList = append(orList, &andCheck{rules: andList})
		}
	}
	switch len(orList) {
	case 0:
		return &Rule{root: falseCheck{}}, errors.Join(problems...)
	case 1:
		return &Rule{root: orList[0]}, errors.Join(problems...)
	}
	return &Rule{root: &orCheck{rules: orList}}, errors.Join(problems...)
}
