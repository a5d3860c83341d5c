// Package policy is an oslo.policy compatible rule engine: the rule language, rule
// defaults registered in code, overrides from a policy.yaml that is re-read when it
// changes, and a generator for the commented sample policy file.
//
// # Semantics
//
// Rules behave as under oslo.policy 4.0.0 (OpenStack Zed), including its quirks, and a
// differential test evaluates generated rules, credentials and targets with both this
// package and the real oslo.policy (python3-oslo.policy) and requires identical results:
//
//   - role checks are case-insensitive (Python str.lower on both sides);
//   - an empty rule "" (and a null rule in the policy file) allows everything, while a
//     rule that does not parse denies, and a whitespace-only rule denies;
//   - "%(a.b)s" looks up the flat key "a.b" in the target, never a nested dict; the left
//     side of a generic check is a Python literal ('x', True, 1, ...) or else a dotted
//     path into the credentials, where a list matches when any element does;
//   - "and" binds tighter than "or"; "not", "and", "or" are case-insensitive;
//   - an undefined rule name falls back to [oslo_policy] policy_default_rule when that rule
//     exists and fails otherwise; a rule: reference to an undefined rule fails;
//   - a policy file is YAML as PyYAML 6 reads it: several documents, or a tab outside
//     quoted scalars, block scalars and comments, make the whole file invalid (every
//     Enforce denies), where libyaml-based parsers would read it;
//   - a registered default with a deprecated rule is OR'ed with the deprecated check
//     string unless enforce_new_defaults is set; scope_types are only enforced with
//     enforce_scope.
//
// The Python behaviour behind generic checks (str() of values, the %-operator,
// ast.literal_eval) is emulated; where a construct is not emulated (an f-string with
// replacement fields, \N{...} escapes, a set of several elements, a multi-line left side)
// the check fails with an error instead of guessing.
//
// # What it does not do
//
// It never performs http:/https: remote checks (they deny with ErrUnsupportedCheck) and
// does not read policy.d directories. Where oslo.policy would crash or silently turn a
// malformed policy file value into "allow" (false, 0, {}), the file is rejected and
// Enforce denies with ErrInvalidFile until it is fixed; so does a policy file that
// disappears after it was loaded.
//
// Credentials and targets are plain maps, as oslo.policy's are; Go maps have no insertion
// order, so str() of a dict value renders its keys sorted. The package does no I/O other
// than reading the policy file and does not log.
package policy
