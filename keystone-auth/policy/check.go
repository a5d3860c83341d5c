package policy

import (
	"errors"
	"fmt"
	"slices"
	"strings"
)

// ErrEvaluation reports a rule whose evaluation raises in oslo.policy (a Python
// exception escapes enforce()): a malformed format string, a syntax error on the left of
// a generic check, a cyclic rule reference, a value of the wrong type. Enforce treats it
// as a denial and returns it.
var ErrEvaluation = errors.New("policy rule evaluation failed")

// ErrUnsupportedCheck reports an http: or https: check; this package never calls out to a
// remote policy server, so such a check denies.
var ErrUnsupportedCheck = errors.New("remote http policy checks are not supported")

// maxRuleDepth bounds nested rule: references (a chain this long makes CPython raise
// RecursionError too).
const maxRuleDepth = 200

// evaluation carries the rule set and the stack of rules being evaluated.
type evaluation struct {
	lookup func(name string) (check, bool)
	stack  []string
}

// Eval evaluates the rule alone: rule: references resolve through rules (which may be
// nil) with oslo.policy's semantics for missing rules (the check fails).
func (r *Rule) Eval(target, creds map[string]any, rules map[string]*Rule) (bool, error) {
	ev := &evaluation{lookup: func(name string) (check, bool) {
		rr, ok := rules[name]
		if !ok || rr == nil {
			return nil, false
		}
		return rr.root, true
	}}
	return r.root.eval(ev, target, creds)
}

func (trueCheck) eval(*evaluation, map[string]any, map[string]any) (bool, error)  { return true, nil }
func (falseCheck) eval(*evaluation, map[string]any, map[string]any) (bool, error) { return false, nil }

func (c *notCheck) eval(ev *evaluation, target, creds map[string]any) (bool, error) {
	ok, err := c.rule.eval(ev, target, creds)
	return !ok && err == nil, err
}

func (c *andCheck) eval(ev *evaluation, target, creds map[string]any) (bool, error) {
	for _, r := range c.rules {
		ok, err := r.eval(ev, target, creds)
		if err != nil || !ok {
			return false, err
		}
	}
	return true, nil
}

func (c *orCheck) eval(ev *evaluation, target, creds map[string]any) (bool, error) {
	for _, r := range c.rules {
		ok, err := r.eval(ev, target, creds)
		if err != nil {
			return false, err
		}
		if ok {
			return true, nil
		}
	}
	return false, nil
}

func (c *bareToken) eval(*evaluation, map[string]any, map[string]any) (bool, error) {
	return false, fmt.Errorf("rule is the bare token %q: %w", c.text, ErrEvaluation)
}

func (c *httpCheck) eval(*evaluation, map[string]any, map[string]any) (bool, error) {
	return false, fmt.Errorf("%s: %w", c.String(), ErrUnsupportedCheck)
}

func (c *ruleCheck) eval(ev *evaluation, target, creds map[string]any) (bool, error) {
	r, ok := ev.lookup(c.match)
	if !ok {
		return false, nil
	}
	if slices.Contains(ev.stack, c.match) {
		return false, fmt.Errorf("rule %q refers to itself: %w", c.match, ErrEvaluation)
	}
	if len(ev.stack) >= maxRuleDepth {
		return false, fmt.Errorf("rule references nested deeper than %d: %w", maxRuleDepth, ErrEvaluation)
	}
	ev.stack = append(ev.stack, c.match)
	defer func() { ev.stack = ev.stack[:len(ev.stack)-1] }()
	return r.eval(ev, target, creds)
}

// formatMatch is `match % target`: a missing key makes the check fail (oslo.policy catches
// KeyError), any other formatting error raises.
func formatMatch(match string, target map[string]any) (string, bool, error) {
	s, err := pyPercentFormat(match, target)
	switch {
	case errors.Is(err, errKeyMissing):
		return "", false, nil
	case err != nil:
		return "", false, fmt.Errorf("format %q with the target: %w: %w", match, ErrEvaluation, err)
	}
	return s, true, nil
}

func (c *roleCheck) eval(_ *evaluation, target, creds map[string]any) (bool, error) {
	match, ok, err := formatMatch(c.match, target)
	if !ok {
		return false, err
	}
	roles, ok := creds["roles"]
	if !ok {
		return false, nil
	}
	var names []string
	switch x := roles.(type) {
	case []string:
		names = x
	case []any:
		for _, r := range x {
			s, ok := r.(string)
			if !ok {
				return false, fmt.Errorf("role of type %s in credentials: %w", pyTypeName(r), ErrEvaluation)
			}
			names = append(names, s)
		}
	case string:
		// Python iterates the characters of a string.
		for _, r := range x {
			names = append(names, string(r))
		}
	case map[string]any:
		for k := range x {
			names = append(names, k)
		}
	case map[string]string:
		for k := range x {
			names = append(names, k)
		}
	default:
		return false, fmt.Errorf("roles of type %s in credentials: %w", pyTypeName(roles), ErrEvaluation)
	}
	want := pyLower(match)
	for _, n := range names {
		if pyLower(n) == want {
			return true, nil
		}
	}
	return false, nil
}

func (c *genericCheck) eval(_ *evaluation, target, creds map[string]any) (bool, error) {
	match, ok, err := formatMatch(c.match, target)
	if !ok {
		return false, err
	}
	switch c.class {
	case litValue:
		s, err := pyStr(c.lit)
		if err != nil {
			return false, fmt.Errorf("literal %q: %w: %w", c.kind, ErrEvaluation, err)
		}
		return match == s, nil
	case litNotLiteral:
		return findInDict(creds, strings.Split(c.kind, "."), match)
	default:
		return false, fmt.Errorf("left side %q of a generic check: %w: %w", c.kind, ErrEvaluation, c.litErr)
	}
}

// findInDict is GenericCheck._find_in_dict: follow the dotted path through nested dicts;
// a list along the way matches when any element does.
func findInDict(v any, path []string, match string) (bool, error) {
	if len(path) == 0 {
		s, err := pyStr(v)
		if err != nil {
			return false, fmt.Errorf("credential value: %w: %w", ErrEvaluation, err)
		}
		return match == s, nil
	}
	var next any
	switch m := v.(type) {
	case map[string]any:
		x, ok := m[path[0]]
		if !ok {
			return false, nil
		}
		next = x
	case map[string]string:
		x, ok := m[path[0]]
		if !ok {
			return false, nil
		}
		next = x
	default:
		return false, fmt.Errorf("credential path %q through a %s: %w", path[0], pyTypeName(v), ErrEvaluation)
	}
	var elems []any
	switch l := next.(type) {
	case []any:
		elems = l
	case []string:
		for _, s := range l {
			elems = append(elems, s)
		}
	default:
		return findInDict(next, path[1:], match)
	}
	for _, e := range elems {
		ok, err := findInDict(e, path[1:], match)
		if err != nil || ok {
			return ok, err
		}
	}
	return false, nil
}
