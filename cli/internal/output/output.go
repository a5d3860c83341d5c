// Package output formats command results the way python-openstackclient
// (cliff) does: lists and single records as a table, JSON, YAML, "value"
// (bare values for shell scripts), CSV (lists) or shell assignments
// (records), with column selection (-c), sorting (--sort-column) and
// tables that fit the terminal.
//
// Values keep their type for JSON and YAML (numbers stay numbers, lists
// stay lists, times are RFC 3339 with full precision); the other formats
// show them as text. The package does no I/O beyond writing to the writer it
// is given.
package output

import (
	"cmp"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Formats.
const (
	FormatTable = "table"
	FormatJSON  = "json"
	FormatYAML  = "yaml"
	FormatValue = "value"
	FormatCSV   = "csv"
	FormatShell = "shell"
)

// ListFormats are the formats of lists, RecordFormats those of one record.
var (
	ListFormats   = []string{FormatTable, FormatJSON, FormatYAML, FormatValue, FormatCSV}
	RecordFormats = []string{FormatTable, FormatJSON, FormatYAML, FormatValue, FormatShell}
)

// CSV quoting modes (Python's csv module).
const (
	QuoteNonNumeric = "nonnumeric"
	QuoteMinimal    = "minimal"
	QuoteAll        = "all"
	QuoteNone       = "none"
)

// ErrUsage marks option errors (unknown format or column): the command line
// was wrong, not the service.
var ErrUsage = errors.New("usage error")

// Options are the formatting flags.
type Options struct {
	// Format is one of the Format constants (default table).
	Format string
	// Columns selects and orders the columns or fields (-c); empty: the
	// default ones.
	Columns []string
	// SortColumns sort list rows by these columns, in order.
	SortColumns []string
	// SortDescending reverses the sort.
	SortDescending bool
	// Width is the width a table must fit (0: no limit).
	Width int
	// NoIndent writes JSON on one line.
	NoIndent bool
	// Quote is the CSV quoting mode (default nonnumeric).
	Quote string
	// Prefix is prepended to shell variable names.
	Prefix string
	// PrintEmpty prints the table headings of an empty list.
	PrintEmpty bool
}

// Formatted is a value with its own text form (tables, value, CSV, shell)
// and machine form (JSON, YAML), like cliff's formattable columns.
type Formatted struct {
	Text  string
	Value any
}

// Column is a list column or a record field.
type Column struct {
	// Name is the heading, and the key in JSON and YAML.
	Name string
	// Long columns are shown with --long or when selected with -c.
	Long bool
}

// List is a list result: one row per item, one value per column.
type List struct {
	Columns []Column
	Rows    [][]any
}

// Record is a single item: one value per field.
type Record struct {
	Fields []Column
	Values []any
}

// Write writes the list in the chosen format. long adds the Long columns.
func (l List) Write(w io.Writer, o Options, long bool) error {
	if o.Format == "" {
		o.Format = FormatTable
	}
	if !slices.Contains(ListFormats, o.Format) {
		return fmt.Errorf("%w: format %q is not one of %s", ErrUsage, o.Format, strings.Join(ListFormats, ", "))
	}
	idx, err := pick(l.Columns, o.Columns, long)
	if err != nil {
		return err
	}
	rows := slices.Clone(l.Rows)
	if err := sortRows(rows, l.Columns, o); err != nil {
		return err
	}
	names := make([]string, len(idx))
	for i, c := range idx {
		names[i] = l.Columns[c].Name
	}
	sel := make([][]any, len(rows))
	for r, row := range rows {
		sel[r] = make([]any, len(idx))
		for i, c := range idx {
			if c < len(row) {
				sel[r][i] = row[c]
			}
		}
	}
	switch o.Format {
	case FormatJSON, FormatYAML:
		items := make([]ordered, len(sel))
		for r, row := range sel {
			items[r] = orderedOf(names, row)
		}
		if o.Format == FormatJSON {
			return writeJSON(w, items, o.NoIndent)
		}
		return writeYAML(w, items)
	case FormatValue:
		for _, row := range sel {
			cells := make([]string, len(row))
			for i, v := range row {
				cells[i] = Text(v, false)
			}
			if _, err := fmt.Fprintln(w, strings.Join(cells, " ")); err != nil {
				return err
			}
		}
		return nil
	case FormatCSV:
		return writeCSV(w, names, sel, o.Quote)
	default:
		if len(sel) == 0 && !o.PrintEmpty {
			return nil
		}
		cells := make([][]string, len(sel))
		right := make([]bool, len(names))
		for i := range right {
			right[i] = len(sel) > 0
		}
		for r, row := range sel {
			cells[r] = make([]string, len(row))
			for i, v := range row {
				cells[r][i] = Text(v, false)
				if deref(v) != nil && !numeric(v) {
					right[i] = false
				}
			}
		}
		return writeTable(w, names, cells, right, o.Width)
	}
}

// Write writes the record in the chosen format. long adds the Long fields.
func (rec Record) Write(w io.Writer, o Options, long bool) error {
	if o.Format == "" {
		o.Format = FormatTable
	}
	if !slices.Contains(RecordFormats, o.Format) {
		return fmt.Errorf("%w: format %q is not one of %s", ErrUsage, o.Format, strings.Join(RecordFormats, ", "))
	}
	if len(o.SortColumns) > 0 {
		return fmt.Errorf("%w: --sort-column applies to lists only", ErrUsage)
	}
	idx, err := pick(rec.Fields, o.Columns, long)
	if err != nil {
		return err
	}
	names := make([]string, len(idx))
	vals := make([]any, len(idx))
	for i, c := range idx {
		names[i] = rec.Fields[c].Name
		if c < len(rec.Values) {
			vals[i] = rec.Values[c]
		}
	}
	switch o.Format {
	case FormatJSON:
		return writeJSON(w, orderedOf(names, vals), o.NoIndent)
	case FormatYAML:
		return writeYAML(w, orderedOf(names, vals))
	case FormatValue:
		for _, v := range vals {
			if _, err := fmt.Fprintln(w, Text(v, false)); err != nil {
				return err
			}
		}
		return nil
	case FormatShell:
		for i, n := range names {
			if _, err := fmt.Fprintf(w, "%s%s=%s\n", o.Prefix, shellName(n), shellQuote(Text(vals[i], false))); err != nil {
				return err
			}
		}
		return nil
	default:
		cells := make([][]string, len(names))
		for i, n := range names {
			cells[i] = []string{n, Text(vals[i], true)}
		}
		return writeTable(w, []string{"Field", "Value"}, cells, []bool{false, false}, o.Width)
	}
}

// pick returns the indexes of the columns to show: the selected ones in
// the order given, else the default (and with long, the Long) ones.
func pick(cols []Column, selected []string, long bool) ([]int, error) {
	if len(selected) == 0 {
		var idx []int
		for i, c := range cols {
			if !c.Long || long {
				idx = append(idx, i)
			}
		}
		return idx, nil
	}
	var idx []int
	for _, s := range selected {
		i := slices.IndexFunc(cols, func(c Column) bool { return c.Name == s })
		if i < 0 {
			return nil, fmt.Errorf("%w: no column %q (columns: %s)", ErrUsage, s, quoteNames(cols))
		}
		if !slices.Contains(idx, i) {
			idx = append(idx, i)
		}
	}
	return idx, nil
}

func quoteNames(cols []Column) string {
	q := make([]string, len(cols))
	for i, c := range cols {
		q[i] = strconv.Quote(c.Name)
	}
	return strings.Join(q, ", ")
}

func sortRows(rows [][]any, cols []Column, o Options) error {
	if len(o.SortColumns) == 0 {
		return nil
	}
	var keys []int
	for _, s := range o.SortColumns {
		i := slices.IndexFunc(cols, func(c Column) bool { return c.Name == s })
		if i < 0 {
			return fmt.Errorf("%w: cannot sort by %q: no such column (columns: %s)", ErrUsage, s, quoteNames(cols))
		}
		keys = append(keys, i)
	}
	slices.SortStableFunc(rows, func(a, b []any) int {
		for _, k := range keys {
			if c := compare(at(a, k), at(b, k)); c != 0 {
				if o.SortDescending {
					return -c
				}
				return c
			}
		}
		return 0
	})
	return nil
}

func at(row []any, i int) any {
	if i < len(row) {
		return row[i]
	}
	return nil
}

// compare orders values of one column: absent values first, numbers by
// value, times by time, the rest by their text.
func compare(a, b any) int {
	a, b = deref(a), deref(b)
	switch {
	case a == nil && b == nil:
		return 0
	case a == nil:
		return -1
	case b == nil:
		return 1
	}
	if fa, ok := number(a); ok {
		if fb, ok := number(b); ok {
			return cmp.Compare(fa, fb)
		}
	}
	if ta, ok := a.(time.Time); ok {
		if tb, ok := b.(time.Time); ok {
			return ta.Compare(tb)
		}
	}
	return strings.Compare(Text(a, false), Text(b, false))
}

func number(v any) (float64, bool) {
	switch n := v.(type) {
	case int:
		return float64(n), true
	case int64:
		return float64(n), true
	case uint64:
		return float64(n), true
	case uint32:
		return float64(n), true
	case float64:
		return n, true
	}
	return 0, false
}

func numeric(v any) bool {
	_, ok := number(deref(v))
	return ok
}

// deref turns nil pointers into nil and pointers into their values.
func deref(v any) any {
	switch p := v.(type) {
	case *time.Time:
		if p == nil {
			return nil
		}
		return *p
	case *string:
		if p == nil {
			return nil
		}
		return *p
	}
	return v
}

// TimeFormat is how times are shown as text: RFC 3339, UTC, seconds.
const TimeFormat = time.RFC3339

// Text is a value as table, value and CSV cells show it. Lists are joined
// with ", " (one item per line when multiline, as in record tables); maps
// become key=value pairs in key order.
func Text(v any, multiline bool) string {
	sep := ", "
	if multiline {
		sep = "\n"
	}
	switch x := deref(v).(type) {
	case nil:
		return ""
	case Formatted:
		return x.Text
	case string:
		return strings.TrimSuffix(x, "\n")
	case bool:
		if x {
			return "True"
		}
		return "False"
	case time.Time:
		if x.IsZero() {
			return ""
		}
		return x.UTC().Format(TimeFormat)
	case []string:
		return strings.Join(x, sep)
	case map[string]string:
		var parts []string
		for _, k := range sortedKeys(x) {
			parts = append(parts, k+"="+x[k])
		}
		return strings.Join(parts, sep)
	case map[string][]string:
		var parts []string
		for _, k := range sortedKeys(x) {
			parts = append(parts, k+"="+strings.Join(x[k], ","))
		}
		return strings.Join(parts, sep)
	case float64:
		return strconv.FormatFloat(x, 'f', -1, 64)
	case fmt.Stringer:
		return x.String()
	case int, int64, uint64, uint32, float32:
		return fmt.Sprint(x)
	}
	// Anything else (structures) as compact JSON.
	if b, err := marshalJSON(v); err == nil {
		return string(b)
	}
	return fmt.Sprint(v)
}

// sortedKeys orders map keys, numerically when they all are numbers (PCR
// indexes).
func sortedKeys[V any](m map[string]V) []string {
	keys := slices.Collect(maps.Keys(m))
	slices.SortFunc(keys, func(a, b string) int {
		ia, ea := strconv.Atoi(a)
		ib, eb := strconv.Atoi(b)
		if ea == nil && eb == nil {
			return cmp.Compare(ia, ib)
		}
		return strings.Compare(a, b)
	})
	return keys
}

func shellName(s string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(s) {
		if (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9') || r == '_' {
			b.WriteRune(r)
		} else {
			b.WriteByte('_')
		}
	}
	return b.String()
}

// shellQuote quotes s for a POSIX shell, as cliff's shell formatter does
// (double quotes, with ", \, $ and ` escaped).
func shellQuote(s string) string {
	r := strings.NewReplacer(`\`, `\\`, `"`, `\"`, `$`, `\$`, "`", "\\`")
	return `"` + r.Replace(s) + `"`
}
