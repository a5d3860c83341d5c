package policy

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"unicode/utf8"

	"gopkg.in/yaml.v2"
)

// ParseFile parses the contents of a policy file the way oslo.policy's
// parse_file_contents and Rules.load do: JSON first, YAML otherwise; an empty document
// means no rules. YAML is read as PyYAML's safe_load reads it: a stream of several
// documents, or a tab where PyYAML allows only spaces (after a key's colon, before or
// after a value, as indentation), is refused with ErrInvalidFile, as oslo.policy refuses
// it (and then denies every rule). Each value is a rule string, null (which oslo.policy, like "", treats
// as "always allow") or the legacy list-of-lists form.
//
// Where oslo.policy would crash or silently change a rule's meaning this is stricter and
// rejects the whole file with ErrInvalidFile: a document that is not a mapping, a rule
// given as a boolean, a number or a mapping (oslo.policy turns false, 0 and {} into
// "always allow"). Keys that are not strings (YAML's yes, 1, ...) cannot be enforced by
// name; they are skipped and reported in problems, as are rules oslo.policy would log as
// not understood (those deny).
func ParseFile(data []byte) (rules map[string]*Rule, problems []error, err error) {
	if !utf8.Valid(data) {
		return nil, nil, fmt.Errorf("policy file is not UTF-8: %w", ErrInvalidFile)
	}
	raw, err := decodePolicyDocument(data)
	if err != nil {
		return nil, nil, err
	}
	rules = make(map[string]*Rule, len(raw))
	for k, v := range raw {
		name, ok := k.(string)
		if !ok {
			problems = append(problems, fmt.Errorf("rule key %v of type %T cannot be enforced by name: %w", k, k, ErrParse))
			continue
		}
		var r *Rule
		var perr error
		switch x := v.(type) {
		case nil:
			r = &Rule{root: trueCheck{}}
		case string:
			r, perr = Parse(x)
		case []any:
			r, perr = parseListRule(x)
			if errors.Is(perr, ErrInvalidFile) {
				return nil, nil, fmt.Errorf("rule %q: %w", name, perr)
			}
		default:
			return nil, nil, fmt.Errorf("rule %q is a %T, not a string or list: %w", name, v, ErrInvalidFile)
		}
		if perr != nil {
			problems = append(problems, fmt.Errorf("rule %q: %w", name, perr))
		}
		rules[name] = r
	}
	return rules, problems, nil
}

// decodePolicyDocument returns the top-level mapping with its values converted to
// string, nil, []any or other scalar types.
func decodePolicyDocument(data []byte) (map[any]any, error) {
	var doc any
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	if jerr := dec.Decode(&doc); jerr == nil && jsonAtEOF(dec) {
		if !pyTruthy(doc) {
			return map[any]any{}, nil // oslo.policy: `parsed or {}`
		}
		obj, ok := doc.(map[string]any)
		if !ok {
			return nil, fmt.Errorf("policy file is a JSON %T, not an object: %w", doc, ErrInvalidFile)
		}
		out := make(map[any]any, len(obj))
		for k, v := range obj {
			out[k] = v
		}
		return out, nil
	}
	var y any
	if err := yaml.Unmarshal(data, &y); err != nil {
		return nil, fmt.Errorf("parse policy file as YAML: %w: %w", ErrInvalidFile, err)
	}
	// yaml.Unmarshal reads the first document only; PyYAML's safe_load refuses a stream
	// of several ("expected a single document in the stream").
	if yamlDocuments(data) > 1 {
		return nil, fmt.Errorf("parse policy file as YAML: %w: expected a single document, found more than one", ErrInvalidFile)
	}
	if err := checkYAMLTabs(string(data)); err != nil {
		return nil, fmt.Errorf("parse policy file as YAML: %w", err)
	}
	if m, ok := y.(map[any]any); ok {
		for k, v := range m {
			m[k] = normalizeYAML(v)
		}
		return m, nil
	}
	if s, ok := y.([]any); (ok && len(s) == 0) || (!ok && !pyTruthy(y)) {
		return map[any]any{}, nil // oslo.policy: `parsed or {}`
	}
	return nil, fmt.Errorf("policy file is a YAML %T, not a mapping: %w", y, ErrInvalidFile)
}

// yamlDocuments counts the documents in a YAML stream that yaml.Unmarshal accepted
// (stopping at two, which is enough to refuse it).
func yamlDocuments(data []byte) int {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	n := 0
	for n < 2 {
		var v any
		if err := dec.Decode(&v); err != nil {
			if errors.Is(err, io.EOF) {
				break
			}
			return n + 1 // a later document that does not parse: not a single document either
		}
		n++
	}
	return n
}

func jsonAtEOF(dec *json.Decoder) bool {
	_, err := dec.Token()
	return errors.Is(err, io.EOF)
}

func normalizeYAML(v any) any {
	switch x := v.(type) {
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = normalizeYAML(e)
		}
		return out
	case map[any]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			out[fmt.Sprint(k)] = normalizeYAML(e)
		}
		return out
	}
	return v
}
