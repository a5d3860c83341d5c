package output

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"gopkg.in/yaml.v2"
)

// ordered is a JSON/YAML object that keeps its keys in column order.
type ordered struct {
	keys []string
	vals []any
}

func orderedOf(keys []string, vals []any) ordered {
	m := make([]any, len(vals))
	for i, v := range vals {
		m[i] = machine(v)
	}
	return ordered{keys: keys, vals: m}
}

func (o ordered) MarshalJSON() ([]byte, error) {
	var b bytes.Buffer
	b.WriteByte('{')
	for i, k := range o.keys {
		if i > 0 {
			b.WriteByte(',')
		}
		kb, err := json.Marshal(k)
		if err != nil {
			return nil, err
		}
		vb, err := marshalJSON(o.vals[i])
		if err != nil {
			return nil, err
		}
		b.Write(kb)
		b.WriteByte(':')
		b.Write(vb)
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}

// MarshalYAML keeps the column order.
func (o ordered) MarshalYAML() (any, error) {
	ms := make(yaml.MapSlice, len(o.keys))
	for i, k := range o.keys {
		ms[i] = yaml.MapItem{Key: k, Value: o.vals[i]}
	}
	return ms, nil
}

// machine is a value as JSON and YAML show it: typed, times in RFC 3339
// with full precision, absent values null and nil lists [].
func machine(v any) any {
	switch x := deref(v).(type) {
	case time.Time:
		if x.IsZero() {
			return nil
		}
		return x.UTC().Format(time.RFC3339Nano)
	case []string:
		if x == nil {
			return []string{}
		}
		return x
	case Formatted:
		return machine(x.Value)
	case []ordered, ordered, nil, string, bool, int, int64, uint64, uint32, float64:
		return x
	case fmt.Stringer:
		return x.String()
	}
	return generic(v)
}

// generic turns other values (structures, maps) into what their JSON
// encoding decodes to, so that YAML shows the same keys as JSON.
func generic(v any) any {
	b, err := marshalJSON(v)
	if err != nil {
		return v
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var out any
	if dec.Decode(&out) != nil {
		return v
	}
	return numbers(out)
}

// numbers replaces json.Number with int64 or float64.
func numbers(v any) any {
	switch x := v.(type) {
	case json.Number:
		if i, err := x.Int64(); err == nil {
			return i
		}
		f, _ := x.Float64()
		return f
	case map[string]any:
		for k, e := range x {
			x[k] = numbers(e)
		}
	case []any:
		for i, e := range x {
			x[i] = numbers(e)
		}
	}
	return v
}

func marshalJSON(v any) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimRight(b.Bytes(), "\n"), nil
}

// writeJSON indents by 4 spaces, as cliff does.
func writeJSON(w io.Writer, v any, noIndent bool) error {
	b, err := marshalJSON(v)
	if err != nil {
		return fmt.Errorf("encode JSON: %w", err)
	}
	if !noIndent {
		var out bytes.Buffer
		if err := json.Indent(&out, b, "", "    "); err != nil {
			return fmt.Errorf("encode JSON: %w", err)
		}
		b = out.Bytes()
	}
	_, err = fmt.Fprintf(w, "%s\n", b)
	return err
}

func writeYAML(w io.Writer, v any) error {
	b, err := yaml.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode YAML: %w", err)
	}
	_, err = w.Write(b)
	return err
}

func writeCSV(w io.Writer, names []string, rows [][]any, mode string) error {
	if mode == "" {
		mode = QuoteNonNumeric
	}
	if !slices.Contains([]string{QuoteNonNumeric, QuoteMinimal, QuoteAll, QuoteNone}, mode) {
		return fmt.Errorf("%w: --quote %q is not one of all, minimal, none, nonnumeric", ErrUsage, mode)
	}
	field := func(s string, isNum bool) string {
		need := mode == QuoteAll || (mode == QuoteNonNumeric && !isNum) ||
			(mode == QuoteMinimal && strings.ContainsAny(s, ",\"\r\n"))
		if mode == QuoteNone || !need {
			return s
		}
		return `"` + strings.ReplaceAll(s, `"`, `""`) + `"`
	}
	line := func(cells []string) error {
		_, err := io.WriteString(w, strings.Join(cells, ",")+"\r\n")
		return err
	}
	hdr := make([]string, len(names))
	for i, n := range names {
		hdr[i] = field(n, false)
	}
	if err := line(hdr); err != nil {
		return err
	}
	for _, row := range rows {
		cells := make([]string, len(row))
		for i, v := range row {
			cells[i] = field(Text(v, false), numeric(v))
		}
		if err := line(cells); err != nil {
			return err
		}
	}
	return nil
}

// writeTable draws a prettytable-style table. With width > 0, columns are
// narrowed (the widest first) and their cells wrapped so that the table
// fits.
func writeTable(w io.Writer, headers []string, rows [][]string, right []bool, width int) error {
	n := len(headers)
	natural := make([]int, n)
	for i, h := range headers {
		natural[i] = textWidth(h)
	}
	for _, row := range rows {
		for i, c := range row {
			natural[i] = max(natural[i], textWidth(c))
		}
	}
	widths := fit(natural, headers, width)
	var b strings.Builder
	sep := func() {
		b.WriteByte('+')
		for _, cw := range widths {
			b.WriteString(strings.Repeat("-", cw+2))
			b.WriteByte('+')
		}
		b.WriteByte('\n')
	}
	line := func(cells []string, alignRight []bool) {
		wrapped := make([][]string, n)
		height := 1
		for i, c := range cells {
			wrapped[i] = wrap(c, widths[i])
			height = max(height, len(wrapped[i]))
		}
		for l := range height {
			b.WriteByte('|')
			for i := range n {
				var s string
				if l < len(wrapped[i]) {
					s = wrapped[i][l]
				}
				pad := strings.Repeat(" ", widths[i]-textWidth(s))
				if alignRight[i] {
					b.WriteString(" " + pad + s + " |")
				} else {
					b.WriteString(" " + s + pad + " |")
				}
			}
			b.WriteByte('\n')
		}
	}
	sep()
	line(headers, make([]bool, n))
	sep()
	for _, row := range rows {
		line(row, right)
	}
	sep()
	_, err := io.WriteString(w, b.String())
	return err
}

// minColumn is the narrowest a column is made when fitting (unless its
// heading has a longer word, which is never broken).
const minColumn = 6

// fit returns column widths whose table is at most width wide, narrowing
// the widest columns first (so short columns keep their width and long
// text wraps), but no column below its floor: a terminal too narrow for
// the floors gets a wider table.
func fit(natural []int, headers []string, width int) []int {
	widths := slices.Clone(natural)
	n := len(widths)
	if width <= 0 || n == 0 {
		return widths
	}
	floor := make([]int, n)
	for i, h := range headers {
		f := minColumn
		for _, word := range strings.Fields(h) {
			f = max(f, textWidth(word))
		}
		floor[i] = min(natural[i], f)
	}
	excess := -(width - (3*n + 1)) // "| a | b |": 3 per column and 1
	for _, w := range widths {
		excess += w
	}
	for excess > 0 {
		// Narrow every column at the current maximum by one.
		top := 0
		for i := range n {
			if widths[i] > floor[i] {
				top = max(top, widths[i])
			}
		}
		if top == 0 {
			break
		}
		for i := range n {
			if widths[i] == top && widths[i] > floor[i] && excess > 0 {
				widths[i]--
				excess--
			}
		}
	}
	return widths
}

// wrap breaks s into lines of at most width runes: at spaces where it can,
// inside words where it must. Existing line breaks are kept.
func wrap(s string, width int) []string {
	var out []string
	for _, para := range strings.Split(s, "\n") {
		if textWidth(para) <= width {
			out = append(out, para)
			continue
		}
		line := ""
		for _, word := range strings.Fields(para) {
			for textWidth(word) > width {
				if line != "" {
					out = append(out, line)
					line = ""
				}
				cut := byteIndexOfRune(word, width)
				out = append(out, word[:cut])
				word = word[cut:]
			}
			switch {
			case line == "":
				line = word
			case textWidth(line)+1+textWidth(word) <= width:
				line += " " + word
			default:
				out = append(out, line)
				line = word
			}
		}
		out = append(out, line)
	}
	return out
}

func textWidth(s string) int {
	w := 0
	for _, l := range strings.Split(s, "\n") {
		w = max(w, utf8.RuneCountInString(l))
	}
	return w
}

func byteIndexOfRune(s string, n int) int {
	i := 0
	for pos := range s {
		if i == n {
			return pos
		}
		i++
	}
	return len(s)
}
