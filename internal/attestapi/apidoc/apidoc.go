// Package apidoc renders the attestation API's OpenAPI document
// (docs/api/openapi.yaml) as a Markdown page for people (docs/api/README.md):
// an index of the operations, each operation's parameters, body, answers and
// policy rule, and every schema as a table of fields. A test keeps the page
// in step with the document (make api-docs rewrites it).
//
// It is a documentation tool: nothing in a deployable imports it.
package apidoc

import (
	"bytes"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/getkin/kin-openapi/openapi3"
)

// Source is the document's path, named in the page's header.
const Source = "docs/api/openapi.yaml"

// Render returns the Markdown page of doc.
func Render(doc *openapi3.T) []byte {
	var b bytes.Buffer
	p := func(format string, a ...any) { fmt.Fprintf(&b, format, a...) }
	p("# %s (%s)\n\n", doc.Info.Title, doc.Info.Version)
	p("<!-- Generated from %s by internal/attestapi/apidoc; do not edit. Regenerate with `make api-docs`. -->\n\n", Source)
	if doc.Info.Summary != "" {
		p("%s\n\n", doc.Info.Summary)
	}
	p("%s\n", strings.TrimSpace(doc.Info.Description))
	p("\nThe machine-readable reference is [openapi.yaml](openapi.yaml) (OpenAPI %s).\n\n", doc.OpenAPI)

	ops := operations(doc)
	p("## Operations\n\n| Method | Path | Summary | Token | Policy rule |\n|---|---|---|---|---|\n")
	for _, o := range ops {
		p("| %s | [`%s`](#%s) | %s | %s | %s |\n", o.method, o.path, anchor(o.op.OperationID), cell(o.op.Summary), tokenCell(doc, o.op), ruleCell(o.op))
	}
	for _, tag := range doc.Tags {
		p("\n## %s\n\n%s\n", tag.Name, strings.TrimSpace(tag.Description))
		for _, o := range ops {
			if slices.Contains(o.op.Tags, tag.Name) {
				operation(&b, doc, o)
			}
		}
	}
	p("\n## Schemas\n")
	names := make([]string, 0, len(doc.Components.Schemas))
	for n := range doc.Components.Schemas {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		schemaSection(&b, n, doc.Components.Schemas[n].Value)
	}
	return b.Bytes()
}

type op struct {
	method, path string
	item         *openapi3.PathItem
	op           *openapi3.Operation
}

// methodOrder lists methods in the order pages show them.
var methodOrder = []string{"GET", "POST", "PUT", "PATCH", "DELETE"}

func operations(doc *openapi3.T) []op {
	paths := doc.Paths.InMatchingOrder()
	slices.Sort(paths)
	var out []op
	for _, path := range paths {
		item := doc.Paths.Value(path)
		for _, m := range methodOrder {
			if o := item.GetOperation(m); o != nil {
				out = append(out, op{method: m, path: path, item: item, op: o})
			}
		}
	}
	return out
}

// anchor is GitHub's heading anchor of an operation's heading.
func anchor(id string) string { return strings.ToLower(id) }

func cell(s string) string {
	return strings.ReplaceAll(strings.ReplaceAll(strings.TrimSpace(s), "\n", " "), "|", `\|`)
}

func open(doc *openapi3.T, o *openapi3.Operation) bool {
	sec := doc.Security
	if o.Security != nil {
		sec = *o.Security
	}
	return len(sec) == 0
}

func tokenCell(doc *openapi3.T, o *openapi3.Operation) string {
	if open(doc, o) {
		return "no"
	}
	return "yes"
}

func ruleCell(o *openapi3.Operation) string {
	if r, ok := o.Extensions["x-policy-rule"].(string); ok {
		return "`" + r + "`"
	}
	return ""
}

func operation(b *bytes.Buffer, doc *openapi3.T, o op) {
	p := func(format string, a ...any) { fmt.Fprintf(b, format, a...) }
	p("\n### %s\n\n`%s %s` — %s\n\n", o.op.OperationID, o.method, o.path, o.op.Summary)
	if d := strings.TrimSpace(o.op.Description); d != "" {
		p("%s\n\n", d)
	}
	if open(doc, o.op) {
		p("No token needed.\n\n")
	} else {
		p("Needs a Keystone token (`X-Auth-Token`); policy rule %s.\n\n", ruleCell(o.op))
	}
	params := append(slices.Clone(o.item.Parameters), o.op.Parameters...)
	if len(params) > 0 {
		p("| Parameter | In | Type | Required | Description |\n|---|---|---|---|---|\n")
		for _, pr := range params {
			v := pr.Value
			p("| `%s` | %s | %s | %s | %s |\n", v.Name, v.In, typeOf(v.Schema), yesNo(v.Required), cell(v.Description))
		}
		p("\n")
	}
	if rb := o.op.RequestBody; rb != nil && rb.Value != nil {
		req := "optional"
		if rb.Value.Required {
			req = "required"
		}
		for _, mt := range sortedKeys(rb.Value.Content) {
			p("Request body (%s): `%s`, %s.\n\n", req, mt, typeOf(rb.Value.Content[mt].Schema))
		}
	}
	p("| Status | Meaning | Body |\n|---|---|---|\n")
	codes := sortedKeys(o.op.Responses.Map())
	for _, code := range codes {
		r := o.op.Responses.Map()[code].Value
		var bodies []string
		for _, mt := range sortedKeys(r.Content) {
			bodies = append(bodies, "`"+mt+"` "+typeOf(r.Content[mt].Schema))
		}
		desc := ""
		if r.Description != nil {
			desc = *r.Description
		}
		p("| %s | %s | %s |\n", code, cell(desc), strings.Join(bodies, "; "))
	}
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// refName is the component a reference names ("" for inline schemas).
func refName(r *openapi3.SchemaRef) string {
	const prefix = "#/components/schemas/"
	if r == nil || !strings.HasPrefix(r.Ref, prefix) {
		return ""
	}
	return strings.TrimPrefix(r.Ref, prefix)
}

// typeOf describes a schema in a table cell: a link to a named object
// schema, else its type with its constraints.
func typeOf(r *openapi3.SchemaRef) string {
	if r == nil || r.Value == nil {
		return ""
	}
	s := r.Value
	if n := refName(r); n != "" && (len(s.Properties) > 0 || len(s.AllOf) > 0) {
		return "[" + n + "](#" + strings.ToLower(n) + ")"
	}
	var t string
	types := s.Type.Slice()
	switch {
	case len(s.AllOf) > 0:
		var parts []string
		for _, a := range s.AllOf {
			parts = append(parts, typeOf(a))
		}
		t = "all of " + strings.Join(parts, ", ")
	case slices.Contains(types, "array"):
		t = "array of " + typeOf(s.Items)
	case slices.Contains(types, "object"):
		t = "object"
		if ap := s.AdditionalProperties.Schema; ap != nil {
			t = "object of " + typeOf(ap)
		}
	default:
		t = strings.Join(types, " or ")
	}
	if slices.Contains(types, "null") && !strings.Contains(t, "null") {
		t += " or null"
	}
	var notes []string
	if s.Format != "" {
		notes = append(notes, s.Format)
	}
	if len(s.Enum) > 0 {
		var vals []string
		for _, e := range s.Enum {
			vals = append(vals, fmt.Sprintf("`%v`", e))
		}
		notes = append(notes, "one of "+strings.Join(vals, ", "))
	}
	if s.Const != nil {
		notes = append(notes, fmt.Sprintf("always `%v`", s.Const))
	}
	if s.Min != nil || s.Max != nil {
		notes = append(notes, bounds(s.Min, s.Max))
	}
	if s.Pattern != "" {
		notes = append(notes, "pattern `"+s.Pattern+"`")
	}
	if s.Default != nil {
		notes = append(notes, fmt.Sprintf("default `%v`", s.Default))
	}
	if len(notes) > 0 {
		t += " (" + strings.Join(notes, "; ") + ")"
	}
	return t
}

func bounds(lo, hi *float64) string {
	f := func(v *float64) string { return strconv.FormatFloat(*v, 'f', -1, 64) }
	switch {
	case lo != nil && hi != nil:
		return f(lo) + " to " + f(hi)
	case lo != nil:
		return "at least " + f(lo)
	default:
		return "at most " + f(hi)
	}
}

func schemaSection(b *bytes.Buffer, name string, s *openapi3.Schema) {
	p := func(format string, a ...any) { fmt.Fprintf(b, format, a...) }
	p("\n### %s\n\n", name)
	if d := strings.TrimSpace(s.Description); d != "" {
		p("%s\n\n", d)
	}
	props := map[string]*openapi3.SchemaRef{}
	var required []string
	for _, a := range s.AllOf {
		if a.Value != nil {
			for k, v := range a.Value.Properties {
				props[k] = v
			}
			required = append(required, a.Value.Required...)
		}
	}
	for k, v := range s.Properties {
		props[k] = v
	}
	required = append(required, s.Required...)
	if len(props) == 0 {
		p("Type: %s.\n", typeOf(&openapi3.SchemaRef{Value: s}))
		return
	}
	p("| Field | Type | Required | Description |\n|---|---|---|---|\n")
	for _, k := range sortedKeys(props) {
		p("| `%s` | %s | %s | %s |\n", k, typeOf(props[k]), yesNo(slices.Contains(required, k)), cell(props[k].Value.Description))
	}
	if s.AdditionalProperties.Has != nil && !*s.AdditionalProperties.Has {
		p("\nNo other fields.\n")
	}
}
