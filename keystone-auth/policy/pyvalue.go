package policy

// This file emulates the parts of CPython 3.11 that oslo.policy's checks depend on:
// str() and repr() of the values a target or credentials dict can hold, str.lower(),
// str.isspace() and truthiness. Go values are mapped to Python ones as follows:
//
//	nil                          None
//	bool                         bool
//	int*, uint*, *big.Int        int
//	float32, float64             float
//	json.Number                  int when it is an integer literal, float otherwise (as json.loads does)
//	string                       str
//	[]any, []string              list
//	map[string]any, map[string]string  dict (rendered with sorted keys: Go maps have no insertion order)
//
// Any other type is reported as an evaluation error, so a check on it fails closed.

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/big"
	"slices"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// pyTuple, pySet, pyBytes, pyComplex and pyEllipsis are the Python literal types that
// ast.literal_eval can return besides the JSON-like ones.
type (
	pyTuple    []any
	pySet      []any // only the empty set and single-element sets are rendered
	pyBytes    []byte
	pyComplex  struct{ re, im float64 }
	pyEllipsis struct{}
)

// errUnsupportedValue is returned when a value has no faithful Python rendering here.
var errUnsupportedValue = errors.New("value has no python equivalent")

// pyStr returns str(v).
func pyStr(v any) (string, error) {
	switch x := v.(type) {
	case string:
		return x, nil
	case pyBytes:
		return pyBytesRepr(x), nil
	default:
		return pyRepr(v, false)
	}
}

// pyRepr returns repr(v), or ascii(v) when asciiOnly is set.
func pyRepr(v any, asciiOnly bool) (string, error) {
	switch x := v.(type) {
	case nil:
		return "None", nil
	case bool:
		if x {
			return "True", nil
		}
		return "False", nil
	case string:
		return pyStrRepr(x, asciiOnly), nil
	case pyBytes:
		return pyBytesRepr(x), nil
	case pyEllipsis:
		return "Ellipsis", nil
	case pyComplex:
		return pyComplexRepr(x), nil
	case json.Number:
		n, err := jsonNumber(x)
		if err != nil {
			return "", err
		}
		return pyRepr(n, asciiOnly)
	case []string:
		items := make([]any, len(x))
		for i, s := range x {
			items[i] = s
		}
		return pySeqRepr("[", "]", items, false, asciiOnly)
	case []any:
		return pySeqRepr("[", "]", x, false, asciiOnly)
	case pyTuple:
		return pySeqRepr("(", ")", x, true, asciiOnly)
	case pySet:
		if len(x) == 0 {
			return "set()", nil
		}
		if len(x) > 1 {
			return "", fmt.Errorf("set of %d elements: %w", len(x), errUnsupportedValue)
		}
		return pySeqRepr("{", "}", x, false, asciiOnly)
	case map[string]string:
		m := make(map[string]any, len(x))
		for k, s := range x {
			m[k] = s
		}
		return pyDictRepr(m, asciiOnly)
	case map[string]any:
		return pyDictRepr(x, asciiOnly)
	}
	if i, ok := toBigInt(v); ok {
		return i.String(), nil
	}
	if f, ok := toFloat(v); ok {
		return pyFloatRepr(f), nil
	}
	return "", fmt.Errorf("%T: %w", v, errUnsupportedValue)
}

func pySeqRepr(open, closing string, items []any, tuple, asciiOnly bool) (string, error) {
	var b strings.Builder
	b.WriteString(open)
	for i, it := range items {
		if i > 0 {
			b.WriteString(", ")
		}
		s, err := pyRepr(it, asciiOnly)
		if err != nil {
			return "", err
		}
		b.WriteString(s)
	}
	if tuple && len(items) == 1 {
		b.WriteString(",")
	}
	b.WriteString(closing)
	return b.String(), nil
}

func pyDictRepr(m map[string]any, asciiOnly bool) (string, error) {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var b strings.Builder
	b.WriteString("{")
	for i, k := range keys {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(pyStrRepr(k, asciiOnly))
		b.WriteString(": ")
		s, err := pyRepr(m[k], asciiOnly)
		if err != nil {
			return "", err
		}
		b.WriteString(s)
	}
	b.WriteString("}")
	return b.String(), nil
}

// jsonNumber converts a JSON number the way Python's json module does: integer literals
// become int, anything with a fraction or exponent becomes float.
func jsonNumber(n json.Number) (any, error) {
	s := string(n)
	if strings.ContainsAny(s, ".eE") {
		f, err := strconv.ParseFloat(s, 64)
		if err != nil && !errors.Is(err, strconv.ErrRange) {
			return nil, fmt.Errorf("json number %q: %w", s, errUnsupportedValue)
		}
		return f, nil
	}
	i, ok := new(big.Int).SetString(s, 10)
	if !ok {
		return nil, fmt.Errorf("json number %q: %w", s, errUnsupportedValue)
	}
	return i, nil
}

// toBigInt reports whether v is a Python int (bool excluded) and returns its value.
func toBigInt(v any) (*big.Int, bool) {
	switch x := v.(type) {
	case int:
		return big.NewInt(int64(x)), true
	case int8:
		return big.NewInt(int64(x)), true
	case int16:
		return big.NewInt(int64(x)), true
	case int32:
		return big.NewInt(int64(x)), true
	case int64:
		return big.NewInt(x), true
	case uint:
		return new(big.Int).SetUint64(uint64(x)), true
	case uint8:
		return big.NewInt(int64(x)), true
	case uint16:
		return big.NewInt(int64(x)), true
	case uint32:
		return big.NewInt(int64(x)), true
	case uint64:
		return new(big.Int).SetUint64(x), true
	case *big.Int:
		if x == nil {
			return nil, false
		}
		return x, true
	case json.Number:
		n, err := jsonNumber(x)
		if err != nil {
			return nil, false
		}
		i, ok := n.(*big.Int)
		return i, ok
	}
	return nil, false
}

// toFloat reports whether v is a Python float and returns its value.
func toFloat(v any) (float64, bool) {
	switch x := v.(type) {
	case float64:
		return x, true
	case float32:
		return float64(x), true
	case json.Number:
		n, err := jsonNumber(x)
		if err != nil {
			return 0, false
		}
		f, ok := n.(float64)
		return f, ok
	}
	return 0, false
}

// pyFloatRepr returns repr(f) for a Python float (the shortest round-tripping digits,
// exponent notation when the decimal exponent is < -4 or >= 16).
func pyFloatRepr(f float64) string {
	return pyFloatShort(f, true)
}

// pyFloatShort formats f like CPython's float_repr_style 'r'; addDotZero appends ".0"
// to integral values (float repr does, the parts of a complex repr do not).
func pyFloatShort(f float64, addDotZero bool) string {
	switch {
	case math.IsInf(f, 1):
		return "inf"
	case math.IsInf(f, -1):
		return "-inf"
	case math.IsNaN(f):
		return "nan"
	}
	sign := ""
	if math.Signbit(f) {
		sign = "-"
		f = -f
	}
	if f == 0 {
		if addDotZero {
			return sign + "0.0"
		}
		return sign + "0"
	}
	e := strconv.FormatFloat(f, 'e', -1, 64) // d.dddde±XX
	mant, expStr, _ := strings.Cut(e, "e")
	digits := strings.Replace(mant, ".", "", 1)
	exp, _ := strconv.Atoi(expStr)
	decpt := exp + 1
	if decpt <= -4 || decpt > 16 {
		var b strings.Builder
		b.WriteString(sign)
		b.WriteByte(digits[0])
		if len(digits) > 1 {
			b.WriteByte('.')
			b.WriteString(digits[1:])
		}
		b.WriteByte('e')
		x := decpt - 1
		if x < 0 {
			b.WriteByte('-')
			x = -x
		} else {
			b.WriteByte('+')
		}
		if x < 10 {
			b.WriteByte('0')
		}
		b.WriteString(strconv.Itoa(x))
		return b.String()
	}
	switch {
	case decpt <= 0:
		return sign + "0." + strings.Repeat("0", -decpt) + digits
	case decpt >= len(digits):
		s := sign + digits + strings.Repeat("0", decpt-len(digits))
		if addDotZero {
			s += ".0"
		}
		return s
	default:
		return sign + digits[:decpt] + "." + digits[decpt:]
	}
}

// pyComplexRepr returns repr(c) for a Python complex number.
func pyComplexRepr(c pyComplex) string {
	if c.re == 0 && !math.Signbit(c.re) {
		return pyFloatShort(c.im, false) + "j"
	}
	im := pyFloatShort(c.im, false)
	if !strings.HasPrefix(im, "-") {
		im = "+" + im
	}
	return "(" + pyFloatShort(c.re, false) + im + "j)"
}

// pyStrRepr returns repr(s) (or ascii(s)) for a Python str.
func pyStrRepr(s string, asciiOnly bool) string {
	quote := '\''
	if strings.ContainsRune(s, '\'') && !strings.ContainsRune(s, '"') {
		quote = '"'
	}
	var b strings.Builder
	b.WriteRune(quote)
	for _, r := range s {
		switch {
		case r == quote || r == '\\':
			b.WriteByte('\\')
			b.WriteRune(r)
		case r == '\t':
			b.WriteString(`\t`)
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\r':
			b.WriteString(`\r`)
		case r < ' ' || r == 0x7f:
			fmt.Fprintf(&b, `\x%02x`, r)
		case r < 0x7f:
			b.WriteRune(r)
		case !asciiOnly && pyIsPrintable(r):
			b.WriteRune(r)
		case r <= 0xff:
			fmt.Fprintf(&b, `\x%02x`, r)
		case r <= 0xffff:
			fmt.Fprintf(&b, `\u%04x`, r)
		default:
			fmt.Fprintf(&b, `\U%08x`, r)
		}
	}
	b.WriteRune(quote)
	return b.String()
}

// pyBytesRepr returns repr(b) for a Python bytes object.
func pyBytesRepr(bs []byte) string {
	quote := byte('\'')
	if slices.Contains(bs, '\'') && !slices.Contains(bs, '"') {
		quote = '"'
	}
	var b strings.Builder
	b.WriteByte('b')
	b.WriteByte(quote)
	for _, c := range bs {
		switch {
		case c == quote || c == '\\':
			b.WriteByte('\\')
			b.WriteByte(c)
		case c == '\t':
			b.WriteString(`\t`)
		case c == '\n':
			b.WriteString(`\n`)
		case c == '\r':
			b.WriteString(`\r`)
		case c < ' ' || c >= 0x7f:
			fmt.Fprintf(&b, `\x%02x`, c)
		default:
			b.WriteByte(c)
		}
	}
	b.WriteByte(quote)
	return b.String()
}

// pyIsPrintable is str.isprintable for one character: letters, marks, numbers,
// punctuation, symbols and the ASCII space (Go's unicode.IsPrint has the same definition).
func pyIsPrintable(r rune) bool {
	return r != utf8.RuneError && unicode.IsPrint(r)
}

// pyIsSpace is str.isspace for one character, which is also what the re module's \s
// matches in str patterns: Go's unicode.IsSpace plus the separators U+001C..U+001F.
func pyIsSpace(r rune) bool {
	return unicode.IsSpace(r) || (r >= 0x1c && r <= 0x1f)
}

// pyLower is str.lower: the simple lowercase mapping plus the two mappings CPython applies
// beyond it (U+0130 to "i̇" and the Final_Sigma rule for U+03A3).
func pyLower(s string) string {
	isASCII := true
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			isASCII = false
			break
		}
	}
	if isASCII {
		return strings.ToLower(s)
	}
	rs := []rune(s)
	var b strings.Builder
	for i, r := range rs {
		switch r {
		case 0x130:
			b.WriteString("i\u0307")
		case 0x3a3:
			if finalSigma(rs, i) {
				b.WriteRune(0x3c2)
			} else {
				b.WriteRune(0x3c3)
			}
		default:
			b.WriteRune(unicode.ToLower(r))
		}
	}
	return b.String()
}

// finalSigma implements CPython's handle_capital_sigma.
func finalSigma(rs []rune, i int) bool {
	j := i - 1
	for j >= 0 && isCaseIgnorable(rs[j]) {
		j--
	}
	if j < 0 || !isCased(rs[j]) {
		return false
	}
	j = i + 1
	for j < len(rs) && isCaseIgnorable(rs[j]) {
		j++
	}
	return j == len(rs) || !isCased(rs[j])
}

func isCased(r rune) bool {
	return unicode.IsUpper(r) || unicode.IsLower(r) || unicode.IsTitle(r) ||
		unicode.Is(unicode.Other_Lowercase, r) || unicode.Is(unicode.Other_Uppercase, r)
}

func isCaseIgnorable(r rune) bool {
	switch r {
	case '\'', '.', ':', '^', '`', 0xb7, 0x387, 0x55f, 0x5f4, 0x2018, 0x2019, 0x2024, 0x2027,
		0xfe13, 0xfe52, 0xfe55, 0xff07, 0xff0e, 0xff1a:
		return true
	}
	return unicode.In(r, unicode.Mn, unicode.Me, unicode.Cf, unicode.Lm, unicode.Sk)
}

// pyTruthy is bool(v).
func pyTruthy(v any) bool {
	switch x := v.(type) {
	case nil:
		return false
	case bool:
		return x
	case string:
		return x != ""
	case []any:
		return len(x) > 0
	case []string:
		return len(x) > 0
	case map[string]any:
		return len(x) > 0
	case map[string]string:
		return len(x) > 0
	}
	if i, ok := toBigInt(v); ok {
		return i.Sign() != 0
	}
	if f, ok := toFloat(v); ok {
		return f != 0
	}
	return true
}
