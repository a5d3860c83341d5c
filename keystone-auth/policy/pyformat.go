package policy

import (
	"errors"
	"fmt"
	"math"
	"math/big"
	"strconv"
	"strings"
	"unicode/utf8"
)

// errKeyMissing is Python's KeyError from "%(key)s" % target: oslo.policy turns it into a
// failed check (False), unlike every other formatting error, which propagates.
var errKeyMissing = errors.New("key not in target")

// errFormat is any other error Python's %-operator raises (ValueError, TypeError,
// OverflowError); oslo.policy lets it propagate out of enforce().
var errFormat = errors.New("format error")

// maxFormatWidth bounds width and precision; CPython would try to allocate such strings.
const maxFormatWidth = 1 << 16

// pyPercentFormat evaluates the Python expression `format % target`, where target is a
// dict, the way CPython 3.11's PyUnicode_Format does.
func pyPercentFormat(format string, target map[string]any) (string, error) {
	if !strings.Contains(format, "%") {
		return format, nil
	}
	var out strings.Builder
	// Python's state for a mapping argument: args is the dict itself until a "%(key)"
	// replaces it by the looked-up value; each conversion consumes it once.
	var args any = target
	argAvail := true
	nextArg := func() (any, error) {
		if !argAvail {
			return nil, fmt.Errorf("not enough arguments for format string: %w", errFormat)
		}
		argAvail = false
		return args, nil
	}
	rs := []rune(format)
	n := len(rs)
	for i := 0; i < n; i++ {
		if rs[i] != '%' {
			out.WriteRune(rs[i])
			continue
		}
		i++
		if i < n && rs[i] == '%' {
			out.WriteByte('%')
			continue
		}
		if i < n && rs[i] == '(' {
			depth := 1
			j := i + 1
			for j < n && depth > 0 {
				switch rs[j] {
				case '(':
					depth++
				case ')':
					depth--
				}
				j++
			}
			if depth > 0 {
				return "", fmt.Errorf("incomplete format key: %w", errFormat)
			}
			key := string(rs[i+1 : j-1])
			v, ok := target[key]
			if !ok {
				return "", fmt.Errorf("%q: %w", key, errKeyMissing)
			}
			args, argAvail = v, true
			i = j
		}
		var spec fmtSpec
		spec.width, spec.prec = -1, -1
	flags:
		for ; i < n; i++ {
			switch rs[i] {
			case '-':
				spec.left = true
			case '+':
				spec.plus = true
			case ' ':
				spec.space = true
			case '#':
				spec.alt = true
			case '0':
				spec.zero = true
			default:
				break flags
			}
		}
		if i < n && rs[i] == '*' {
			if _, err := nextArg(); err != nil {
				return "", err
			}
			return "", fmt.Errorf("* wants int: %w", errFormat)
		}
		w, next, err := readDigits(rs, i)
		if err != nil {
			return "", err
		}
		if next > i {
			spec.width = w
		}
		i = next
		if i < n && rs[i] == '.' {
			i++
			if i < n && rs[i] == '*' {
				return "", fmt.Errorf("* wants int: %w", errFormat)
			}
			p, next, err := readDigits(rs, i)
			if err != nil {
				return "", err
			}
			spec.prec = p
			i = next
		}
		if i < n && (rs[i] == 'h' || rs[i] == 'l' || rs[i] == 'L') {
			i++
		}
		if i >= n {
			return "", fmt.Errorf("incomplete format: %w", errFormat)
		}
		spec.conv = rs[i]
		if !strings.ContainsRune("srabcdiouxXeEfFgG", spec.conv) {
			return "", fmt.Errorf("unsupported format character %q at index %d: %w", spec.conv, i, errFormat)
		}
		v, err := nextArg()
		if err != nil {
			return "", err
		}
		s, err := formatOne(spec, v)
		if err != nil {
			return "", err
		}
		out.WriteString(s)
	}
	return out.String(), nil
}

func readDigits(rs []rune, i int) (int, int, error) {
	v := 0
	for ; i < len(rs) && rs[i] >= '0' && rs[i] <= '9'; i++ {
		v = v*10 + int(rs[i]-'0')
		if v > maxFormatWidth {
			return 0, i, fmt.Errorf("width or precision too big: %w", errFormat)
		}
	}
	return v, i, nil
}

type fmtSpec struct {
	left, plus, space, alt, zero bool
	width, prec                  int
	conv                         rune
}

func formatOne(spec fmtSpec, v any) (string, error) {
	switch spec.conv {
	case 's', 'r', 'a':
		var s string
		var err error
		switch spec.conv {
		case 's':
			s, err = pyStr(v)
		case 'r':
			s, err = pyRepr(v, false)
		default:
			s, err = pyRepr(v, true)
		}
		if err != nil {
			return "", err
		}
		if spec.prec >= 0 && utf8.RuneCountInString(s) > spec.prec {
			s = string([]rune(s)[:spec.prec])
		}
		return pad(spec, "", s, false), nil
	case 'c':
		return formatChar(spec, v)
	case 'd', 'i', 'u', 'o', 'x', 'X':
		return formatInt(spec, v)
	default:
		return formatFloat(spec, v)
	}
}

// pad applies width: spaces on the left (or right with '-'); with '0' and numeric values,
// zeros between the sign/prefix and the digits.
func pad(spec fmtSpec, prefix, body string, numeric bool) string {
	l := utf8.RuneCountInString(prefix) + utf8.RuneCountInString(body)
	if spec.width <= l {
		return prefix + body
	}
	fill := spec.width - l
	switch {
	case spec.left:
		return prefix + body + strings.Repeat(" ", fill)
	case spec.zero && numeric:
		return prefix + strings.Repeat("0", fill) + body
	default:
		return strings.Repeat(" ", fill) + prefix + body
	}
}

func pyTypeName(v any) string {
	switch v.(type) {
	case nil:
		return "NoneType"
	case string:
		return "str"
	case bool:
		return "bool"
	case []any, []string:
		return "list"
	case map[string]any, map[string]string:
		return "dict"
	}
	if _, ok := toBigInt(v); ok {
		return "int"
	}
	if _, ok := toFloat(v); ok {
		return "float"
	}
	return fmt.Sprintf("%T", v)
}

func formatChar(spec fmtSpec, v any) (string, error) {
	var s string
	switch x := v.(type) {
	case string:
		if utf8.RuneCountInString(x) != 1 {
			return "", fmt.Errorf("%%c requires int or char: %w", errFormat)
		}
		s = x
	case bool:
		if x {
			s = "\x01"
		} else {
			s = "\x00"
		}
	default:
		i, ok := toBigInt(v)
		if !ok {
			return "", fmt.Errorf("%%c requires int or char: %w", errFormat)
		}
		if !i.IsInt64() || i.Int64() < 0 || i.Int64() > 0x10ffff {
			return "", fmt.Errorf("%%c arg not in range(0x110000): %w", errFormat)
		}
		s = string(rune(i.Int64()))
	}
	return pad(spec, "", s, false), nil
}

func formatInt(spec fmtSpec, v any) (string, error) {
	var i *big.Int
	switch x := v.(type) {
	case bool:
		i = big.NewInt(0)
		if x {
			i = big.NewInt(1)
		}
	default:
		var ok bool
		i, ok = toBigInt(v)
		if !ok {
			f, isFloat := toFloat(v)
			switch {
			case !isFloat && (spec.conv == 'd' || spec.conv == 'i' || spec.conv == 'u'):
				return "", fmt.Errorf("%%%c format: a real number is required, not %s: %w", spec.conv, pyTypeName(v), errFormat)
			case !isFloat:
				return "", fmt.Errorf("%%%c format: an integer is required, not %s: %w", spec.conv, pyTypeName(v), errFormat)
			case spec.conv != 'd' && spec.conv != 'i' && spec.conv != 'u':
				return "", fmt.Errorf("%%%c format: an integer is required, not float: %w", spec.conv, errFormat)
			case math.IsInf(f, 0):
				return "", fmt.Errorf("cannot convert float infinity to integer: %w", errFormat)
			case math.IsNaN(f):
				return "", fmt.Errorf("cannot convert float NaN to integer: %w", errFormat)
			}
			i, _ = big.NewFloat(math.Trunc(f)).Int(nil)
		}
	}
	neg := i.Sign() < 0
	abs := new(big.Int).Abs(i)
	var digits, prefix string
	switch spec.conv {
	case 'o':
		digits = abs.Text(8)
		if spec.alt {
			prefix = "0o"
		}
	case 'x':
		digits = abs.Text(16)
		if spec.alt {
			prefix = "0x"
		}
	case 'X':
		digits = strings.ToUpper(abs.Text(16))
		if spec.alt {
			prefix = "0X"
		}
	default:
		digits = abs.Text(10)
	}
	if spec.prec > len(digits) {
		digits = strings.Repeat("0", spec.prec-len(digits)) + digits
	}
	sign := ""
	switch {
	case neg:
		sign = "-"
	case spec.plus:
		sign = "+"
	case spec.space:
		sign = " "
	}
	return pad(spec, sign+prefix, digits, true), nil
}

func formatFloat(spec fmtSpec, v any) (string, error) {
	var f float64
	switch x := v.(type) {
	case bool:
		if x {
			f = 1
		}
	default:
		if fv, ok := toFloat(v); ok {
			f = fv
		} else if i, ok := toBigInt(v); ok {
			bf, acc := new(big.Float).SetInt(i).Float64()
			if math.IsInf(bf, 0) {
				return "", fmt.Errorf("int too large to convert to float: %w", errFormat)
			}
			_ = acc
			f = bf
		} else {
			return "", fmt.Errorf("must be real number, not %s: %w", pyTypeName(v), errFormat)
		}
	}
	prec := spec.prec
	if prec < 0 {
		prec = 6
	}
	upper := spec.conv == 'E' || spec.conv == 'F' || spec.conv == 'G'
	neg := math.Signbit(f) && !math.IsNaN(f)
	a := math.Abs(f)
	var body string
	switch {
	case math.IsInf(a, 1):
		body = "inf"
	case math.IsNaN(a):
		body = "nan"
	default:
		switch spec.conv {
		case 'e', 'E':
			body = strconv.FormatFloat(a, 'e', prec, 64)
			if spec.alt && prec == 0 {
				m, e, _ := strings.Cut(body, "e")
				body = m + ".e" + e
			}
		case 'f', 'F':
			body = strconv.FormatFloat(a, 'f', prec, 64)
			if spec.alt && prec == 0 {
				body += "."
			}
		default:
			body = formatG(a, prec, spec.alt)
		}
	}
	if upper {
		body = strings.ToUpper(body)
	}
	sign := ""
	switch {
	case neg:
		sign = "-"
	case spec.plus:
		sign = "+"
	case spec.space:
		sign = " "
	}
	return pad(spec, sign, body, true), nil
}

// formatG is C's %g for a non-negative finite value.
func formatG(a float64, prec int, alt bool) string {
	if prec == 0 {
		prec = 1
	}
	e := strconv.FormatFloat(a, 'e', prec-1, 64)
	_, expStr, _ := strings.Cut(e, "e")
	x, _ := strconv.Atoi(expStr)
	var s string
	if x < -4 || x >= prec {
		s = e
		if !alt {
			m, ex, _ := strings.Cut(s, "e")
			if strings.Contains(m, ".") {
				m = strings.TrimRight(strings.TrimRight(m, "0"), ".")
			}
			s = m + "e" + ex
		} else if !strings.Contains(s, ".") {
			m, ex, _ := strings.Cut(s, "e")
			s = m + ".e" + ex
		}
		return s
	}
	s = strconv.FormatFloat(a, 'f', prec-1-x, 64)
	if !alt {
		if strings.Contains(s, ".") {
			s = strings.TrimRight(strings.TrimRight(s, "0"), ".")
		}
	} else if !strings.Contains(s, ".") {
		s += "."
	}
	return s
}
