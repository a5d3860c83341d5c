package policy

import (
	"errors"
	"fmt"
	"math"
	"math/big"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// literalClass is how ast.literal_eval treats the left-hand side of a generic check.
type literalClass int

const (
	// litValue: a Python literal; the check compares the right side with str(value).
	litValue literalClass = iota
	// litNotLiteral: literal_eval raised ValueError (a name, an attribute path, any other
	// expression); the check looks the left side up in the credentials instead.
	litNotLiteral
	// litSyntaxError: literal_eval raised SyntaxError, which oslo.policy does not catch:
	// evaluating the check raises.
	litSyntaxError
	// litUnsupported: a construct this emulation does not reproduce (\N{...} escapes,
	// f-string replacement fields, multi-line sources, sets of several elements, ...).
	// The check fails closed with an error.
	litUnsupported
)

var (
	errSyntax      = errors.New("python syntax error")
	errNotLiteral  = errors.New("not a python literal")
	errUnsupported = errors.New("python construct not emulated")
)

// pyLiteralEval emulates ast.literal_eval(s) of CPython 3.11 for a string s.
func pyLiteralEval(s string) (any, literalClass, error) {
	if strings.ContainsRune(s, 0) {
		// 3.11: "source code string cannot contain null bytes" is a ValueError.
		return nil, litNotLiteral, errNotLiteral
	}
	s = strings.TrimLeft(s, " \t")
	toks, err := pyTokenize(s)
	if err != nil {
		return nil, classify(err), err
	}
	p := &pyParser{toks: toks}
	node, err := p.parseEvalInput()
	if err != nil {
		return nil, classify(err), err
	}
	v, err := literalConvert(node)
	if err != nil {
		return nil, classify(err), err
	}
	if set, ok := v.(pySet); ok && len(set) > 1 {
		return nil, litUnsupported, fmt.Errorf("set display: %w", errUnsupported)
	}
	return v, litValue, nil
}

func classify(err error) literalClass {
	switch {
	case errors.Is(err, errUnsupported):
		return litUnsupported
	case errors.Is(err, errNotLiteral):
		return litNotLiteral
	default:
		return litSyntaxError
	}
}

// ---- tokenizer ----

type pyTokKind int

const (
	tkName pyTokKind = iota
	tkNumber
	tkString
	tkOp
	tkEnd
)

type pyTok struct {
	kind pyTokKind
	text string
	// for tkNumber: the value (*big.Int, float64 or pyComplex)
	// for tkString: string or pyBytes; fstr reports an f-string without replacement fields
	val  any
	fstr bool
}

var pyKeywords = map[string]bool{
	"False": true, "None": true, "True": true, "and": true, "as": true, "assert": true,
	"async": true, "await": true, "break": true, "class": true, "continue": true,
	"def": true, "del": true, "elif": true, "else": true, "except": true, "finally": true,
	"for": true, "from": true, "global": true, "if": true, "import": true, "in": true,
	"is": true, "lambda": true, "nonlocal": true, "not": true, "or": true, "pass": true,
	"raise": true, "return": true, "try": true, "while": true, "with": true, "yield": true,
}

// keywords that may directly follow a number literal (CPython 3.11 verify_end_of_number)
var afterNumberKeywords = map[string]bool{
	"and": true, "else": true, "for": true, "if": true, "in": true, "is": true, "not": true, "or": true,
}

var pyOps = []string{
	"**=", "//=", ">>=", "<<=", "...", "->", ":=", "**", "//", "<<", ">>", "<=", ">=", "==", "!=",
	"+=", "-=", "*=", "/=", "%=", "&=", "|=", "^=", "@=",
	"(", ")", "[", "]", "{", "}", ",", ":", ";", ".", "+", "-", "*", "/", "%", "&", "|", "^",
	"~", "<", ">", "=", "@",
}

func isIDStart(r rune) bool {
	return r == '_' || (r < utf8.RuneSelf && ('a' <= r && r <= 'z' || 'A' <= r && r <= 'Z')) ||
		(r >= utf8.RuneSelf && (unicode.IsLetter(r) || unicode.Is(unicode.Nl, r) || unicode.Is(unicode.Other_ID_Start, r)))
}

func isIDContinue(r rune) bool {
	return isIDStart(r) || ('0' <= r && r <= '9') ||
		(r >= utf8.RuneSelf && (unicode.In(r, unicode.Nd, unicode.Mn, unicode.Mc, unicode.Pc) || unicode.Is(unicode.Other_ID_Continue, r)))
}

func pyTokenize(s string) ([]pyTok, error) {
	rs := []rune(s)
	var toks []pyTok
	i := 0
	for i < len(rs) {
		r := rs[i]
		switch {
		case r == ' ' || r == '\t' || r == '\f':
			i++
			continue
		case r == '\n' || r == '\r':
			return nil, fmt.Errorf("line break in source: %w", errUnsupported)
		case r == '#':
			i = len(rs)
			continue
		case r == '\\':
			if i+1 < len(rs) && (rs[i+1] == '\n' || rs[i+1] == '\r') {
				return nil, fmt.Errorf("line continuation: %w", errUnsupported)
			}
			return nil, fmt.Errorf("unexpected character after line continuation character: %w", errSyntax)
		case isIDStart(r):
			j := i
			for j < len(rs) && isIDContinue(rs[j]) {
				j++
			}
			word := string(rs[i:j])
			if j < len(rs) && (rs[j] == '\'' || rs[j] == '"') && isStringPrefix(word) {
				tok, next, err := lexString(rs, i, j)
				if err != nil {
					return nil, err
				}
				toks = append(toks, tok)
				i = next
				continue
			}
			if j < len(rs) && rs[j] >= utf8.RuneSelf && !isIDContinue(rs[j]) && !unicode.IsPrint(rs[j]) {
				return nil, fmt.Errorf("invalid non-printable character: %w", errSyntax)
			}
			toks = append(toks, pyTok{kind: tkName, text: word})
			i = j
			continue
		case r == '\'' || r == '"':
			tok, next, err := lexString(rs, i, i)
			if err != nil {
				return nil, err
			}
			toks = append(toks, tok)
			i = next
			continue
		case '0' <= r && r <= '9' || (r == '.' && i+1 < len(rs) && '0' <= rs[i+1] && rs[i+1] <= '9'):
			tok, next, err := lexNumber(rs, i)
			if err != nil {
				return nil, err
			}
			toks = append(toks, tok)
			i = next
			continue
		}
		matched := false
		for _, op := range pyOps {
			if strings.HasPrefix(string(rs[i:min(len(rs), i+3)]), op) {
				toks = append(toks, pyTok{kind: tkOp, text: op})
				i += utf8.RuneCountInString(op)
				matched = true
				break
			}
		}
		if !matched {
			return nil, fmt.Errorf("invalid character %q: %w", r, errSyntax)
		}
	}
	return append(toks, pyTok{kind: tkEnd}), nil
}

func isStringPrefix(w string) bool {
	switch strings.ToLower(w) {
	case "r", "u", "b", "br", "rb", "f", "fr", "rf":
		return true
	}
	return false
}

// lexString reads a string literal whose prefix starts at start and quote at q.
func lexString(rs []rune, start, q int) (pyTok, int, error) {
	prefix := strings.ToLower(string(rs[start:q]))
	raw := strings.Contains(prefix, "r")
	isBytes := strings.Contains(prefix, "b")
	isF := strings.Contains(prefix, "f")
	quote := rs[q]
	triple := q+2 < len(rs) && rs[q+1] == quote && rs[q+2] == quote
	i := q + 1
	if triple {
		i = q + 3
	}
	var body []rune
	for {
		if i >= len(rs) {
			return pyTok{}, 0, fmt.Errorf("unterminated string literal: %w", errSyntax)
		}
		c := rs[i]
		if c == '\n' || c == '\r' {
			return pyTok{}, 0, fmt.Errorf("line break in string: %w", errUnsupported)
		}
		if c == '\\' {
			if i+1 >= len(rs) {
				return pyTok{}, 0, fmt.Errorf("unterminated string literal: %w", errSyntax)
			}
			body = append(body, c, rs[i+1])
			i += 2
			continue
		}
		if c == quote {
			if !triple {
				i++
				break
			}
			if i+2 < len(rs) && rs[i+1] == quote && rs[i+2] == quote {
				i += 3
				break
			}
		}
		body = append(body, c)
		i++
	}
	tok := pyTok{kind: tkString, text: string(rs[start:i])}
	if isBytes {
		var out []byte
		for k := 0; k < len(body); k++ {
			if body[k] >= 0x80 {
				return pyTok{}, 0, fmt.Errorf("bytes can only contain ASCII literal characters: %w", errSyntax)
			}
			if body[k] != '\\' || raw {
				out = append(out, byte(body[k]))
				continue
			}
			k++
			r, n, err := decodeEscape(body, k, true)
			if err != nil {
				return pyTok{}, 0, err
			}
			if n == 0 {
				out = append(out, '\\', byte(body[k]))
				continue
			}
			out = append(out, byte(r))
			k += n - 1
		}
		tok.val = pyBytes(out)
		return tok, i, nil
	}
	var out strings.Builder
	for k := 0; k < len(body); k++ {
		if body[k] != '\\' || raw {
			out.WriteRune(body[k])
			continue
		}
		k++
		r, n, err := decodeEscape(body, k, false)
		if err != nil {
			return pyTok{}, 0, err
		}
		if n == 0 {
			out.WriteRune('\\')
			out.WriteRune(body[k])
			continue
		}
		out.WriteRune(r)
		k += n - 1
	}
	if isF {
		// f-strings are JoinedStr nodes, never literals; replacement fields would need
		// the expression grammar inside them, which is not emulated.
		text := out.String()
		if strings.ContainsAny(strings.ReplaceAll(strings.ReplaceAll(string(body), "{{", ""), "}}", ""), "{}") {
			return pyTok{}, 0, fmt.Errorf("f-string replacement field: %w", errUnsupported)
		}
		tok.val, tok.fstr = text, true
		return tok, i, nil
	}
	tok.val = out.String()
	return tok, i, nil
}

// decodeEscape decodes the escape whose character (after the backslash) is body[k].
// n == 0 means an unknown escape, kept verbatim.
func decodeEscape(body []rune, k int, isBytes bool) (rune, int, error) {
	switch c := body[k]; c {
	case '\\', '\'', '"':
		return c, 1, nil
	case 'a':
		return 7, 1, nil
	case 'b':
		return 8, 1, nil
	case 'f':
		return 12, 1, nil
	case 'n':
		return 10, 1, nil
	case 'r':
		return 13, 1, nil
	case 't':
		return 9, 1, nil
	case 'v':
		return 11, 1, nil
	case '0', '1', '2', '3', '4', '5', '6', '7':
		v, n := 0, 0
		for n < 3 && k+n < len(body) && body[k+n] >= '0' && body[k+n] <= '7' {
			v = v*8 + int(body[k+n]-'0')
			n++
		}
		if v > 0o377 && isBytes {
			return 0, 0, fmt.Errorf("octal escape above 0o377: %w", errUnsupported)
		}
		return rune(v), n, nil
	case 'x':
		return hexEscape(body, k, 2)
	case 'u', 'U':
		if isBytes {
			return 0, 0, nil
		}
		width := 4
		if c == 'U' {
			width = 8
		}
		r, n, err := hexEscape(body, k, width)
		if err != nil {
			return 0, 0, err
		}
		if r > unicode.MaxRune {
			return 0, 0, fmt.Errorf("illegal unicode character: %w", errSyntax)
		}
		if r >= 0xd800 && r <= 0xdfff {
			return 0, 0, fmt.Errorf("surrogate escape: %w", errUnsupported)
		}
		return r, n, nil
	case 'N':
		if isBytes {
			return 0, 0, nil
		}
		return 0, 0, fmt.Errorf(`\N{...} escape: %w`, errUnsupported)
	}
	return 0, 0, nil
}

func hexEscape(body []rune, k, width int) (rune, int, error) {
	if k+1+width > len(body) {
		return 0, 0, fmt.Errorf("truncated escape: %w", errSyntax)
	}
	v, err := strconv.ParseUint(string(body[k+1:k+1+width]), 16, 32)
	if err != nil {
		return 0, 0, fmt.Errorf("truncated escape: %w", errSyntax)
	}
	return rune(v), width + 1, nil
}

func isDigitIn(r rune, base int) bool {
	switch base {
	case 2:
		return r == '0' || r == '1'
	case 8:
		return r >= '0' && r <= '7'
	case 16:
		return r >= '0' && r <= '9' || r >= 'a' && r <= 'f' || r >= 'A' && r <= 'F'
	}
	return r >= '0' && r <= '9'
}

// readDigitRun reads digits of base with single underscores between them.
func readDigitRun(rs []rune, i, base int) (int, error) {
	if i >= len(rs) || !isDigitIn(rs[i], base) {
		return i, fmt.Errorf("invalid number literal: %w", errSyntax)
	}
	for i < len(rs) {
		if isDigitIn(rs[i], base) {
			i++
			continue
		}
		if rs[i] == '_' {
			if i+1 < len(rs) && isDigitIn(rs[i+1], base) {
				i++
				continue
			}
			return i, fmt.Errorf("invalid number literal: %w", errSyntax)
		}
		break
	}
	return i, nil
}

func lexNumber(rs []rune, i int) (pyTok, int, error) {
	start := i
	var tok pyTok
	endCheck := func(j int) error {
		if j < len(rs) && isIDContinue(rs[j]) {
			k := j
			for k < len(rs) && isIDContinue(rs[k]) {
				k++
			}
			if !afterNumberKeywords[string(rs[j:k])] {
				return fmt.Errorf("invalid decimal literal: %w", errSyntax)
			}
		}
		return nil
	}
	if rs[i] == '0' && i+1 < len(rs) && strings.ContainsRune("xXoObB", rs[i+1]) {
		base := map[rune]int{'x': 16, 'X': 16, 'o': 8, 'O': 8, 'b': 2, 'B': 2}[rs[i+1]]
		j := i + 2
		if j < len(rs) && rs[j] == '_' {
			j++
		}
		end, err := readDigitRun(rs, j, base)
		if err != nil {
			return tok, 0, err
		}
		if end < len(rs) && isDigitIn(rs[end], 10) {
			return tok, 0, fmt.Errorf("invalid digit in literal: %w", errSyntax)
		}
		if err := endCheck(end); err != nil {
			return tok, 0, err
		}
		v, ok := new(big.Int).SetString(strings.ReplaceAll(string(rs[j:end]), "_", ""), base)
		if !ok {
			return tok, 0, fmt.Errorf("invalid number literal: %w", errSyntax)
		}
		return pyTok{kind: tkNumber, text: string(rs[start:end]), val: v}, end, nil
	}
	j := i
	isFloat := false
	leadingZero := false
	nonzeroAfterZero := false
	if rs[j] != '.' {
		if rs[j] == '0' {
			leadingZero = true
		}
		end, err := readDigitRun(rs, j, 10)
		if err != nil {
			return tok, 0, err
		}
		if leadingZero {
			for _, c := range rs[j:end] {
				if c != '0' && c != '_' {
					nonzeroAfterZero = true
				}
			}
		}
		j = end
	}
	if j < len(rs) && rs[j] == '.' {
		isFloat = true
		j++
		if j < len(rs) && isDigitIn(rs[j], 10) {
			end, err := readDigitRun(rs, j, 10)
			if err != nil {
				return tok, 0, err
			}
			j = end
		}
	}
	if j < len(rs) && (rs[j] == 'e' || rs[j] == 'E') {
		k := j + 1
		if k < len(rs) && (rs[k] == '+' || rs[k] == '-') {
			k++
		}
		if k < len(rs) && isDigitIn(rs[k], 10) {
			end, err := readDigitRun(rs, k, 10)
			if err != nil {
				return tok, 0, err
			}
			j = end
			isFloat = true
		} else {
			return tok, 0, fmt.Errorf("invalid decimal literal: %w", errSyntax)
		}
	}
	imag := false
	if j < len(rs) && (rs[j] == 'j' || rs[j] == 'J') {
		imag = true
		j++
	}
	if err := endCheck(j); err != nil {
		return tok, 0, err
	}
	text := string(rs[start:j])
	digits := strings.ReplaceAll(text, "_", "")
	if imag {
		digits = digits[:len(digits)-1]
		f, err := strconv.ParseFloat(digits, 64)
		if err != nil && !errors.Is(err, strconv.ErrRange) {
			return tok, 0, fmt.Errorf("invalid number literal: %w", errSyntax)
		}
		return pyTok{kind: tkNumber, text: text, val: pyComplex{0, f}}, j, nil
	}
	if isFloat {
		f, err := strconv.ParseFloat(digits, 64)
		if err != nil && !errors.Is(err, strconv.ErrRange) {
			return tok, 0, fmt.Errorf("invalid number literal: %w", errSyntax)
		}
		return pyTok{kind: tkNumber, text: text, val: f}, j, nil
	}
	if leadingZero && nonzeroAfterZero {
		return tok, 0, fmt.Errorf("leading zeros in decimal integer literals are not permitted: %w", errSyntax)
	}
	v, ok := new(big.Int).SetString(digits, 10)
	if !ok {
		return tok, 0, fmt.Errorf("invalid number literal: %w", errSyntax)
	}
	return pyTok{kind: tkNumber, text: text, val: v}, j, nil
}

// ---- parser (enough of the Python 3.11 expression grammar to tell literals, other
// expressions and syntax errors apart) ----

type pyNodeKind int

const (
	nConst pyNodeKind = iota
	nTuple
	nList
	nSet
	nDict
	nUnary
	nBin
	nSetCall
	nName
	nOther
	nStarred
	nAttr
	nSubscript
)

type pyNode struct {
	kind    pyNodeKind
	val     any
	elts    []*pyNode
	op      string
	l, r    *pyNode
	parens  bool
	joinStr bool
}

type pyParser struct {
	toks []pyTok
	pos  int
}

func (p *pyParser) peek() pyTok { return p.toks[p.pos] }

func (p *pyParser) isOp(s string) bool {
	t := p.peek()
	return t.kind == tkOp && t.text == s
}

func (p *pyParser) isKw(s string) bool {
	t := p.peek()
	return t.kind == tkName && t.text == s
}

func (p *pyParser) next() pyTok {
	t := p.toks[p.pos]
	if t.kind != tkEnd {
		p.pos++
	}
	return t
}

func (p *pyParser) expectOp(s string) error {
	if !p.isOp(s) {
		return fmt.Errorf("expected %q: %w", s, errSyntax)
	}
	p.next()
	return nil
}

func syntaxErr(what string) error { return fmt.Errorf("%s: %w", what, errSyntax) }

func (p *pyParser) parseEvalInput() (*pyNode, error) {
	n, err := p.parseExpressions(false)
	if err != nil {
		return nil, err
	}
	if p.peek().kind != tkEnd {
		return nil, syntaxErr("invalid syntax")
	}
	return n, nil
}

// parseExpressions parses expression (',' expression)* [','] and builds a tuple when
// there is a comma. allowStar permits starred items (inside brackets and subscripts).
func (p *pyParser) parseExpressions(allowStar bool) (*pyNode, error) {
	first, err := p.parseMaybeStarred(allowStar)
	if err != nil {
		return nil, err
	}
	if !p.isOp(",") {
		if first.kind == nStarred {
			return nil, syntaxErr("can't use starred expression here")
		}
		return first, nil
	}
	elts := []*pyNode{first}
	for p.isOp(",") {
		p.next()
		if p.endsExprList() {
			break
		}
		e, err := p.parseMaybeStarred(allowStar)
		if err != nil {
			return nil, err
		}
		elts = append(elts, e)
	}
	return &pyNode{kind: nTuple, elts: elts}, nil
}

func (p *pyParser) endsExprList() bool {
	t := p.peek()
	if t.kind == tkEnd {
		return true
	}
	if t.kind == tkOp {
		switch t.text {
		case ")", "]", "}", "=":
			return true
		}
	}
	if t.kind == tkName && (t.text == "for" || t.text == "in" || t.text == "async") {
		return true
	}
	return false
}

func (p *pyParser) parseMaybeStarred(allowStar bool) (*pyNode, error) {
	if p.isOp("*") {
		if !allowStar {
			return nil, syntaxErr("can't use starred expression here")
		}
		p.next()
		e, err := p.parseBitOr()
		if err != nil {
			return nil, err
		}
		return &pyNode{kind: nStarred, l: e}, nil
	}
	return p.parseExpression()
}

func (p *pyParser) parseExpression() (*pyNode, error) {
	if p.isKw("lambda") {
		return nil, syntaxErr("lambda without ':'")
	}
	if p.isKw("yield") {
		return nil, fmt.Errorf("yield expression: %w", errUnsupported)
	}
	n, err := p.parseOr()
	if err != nil {
		return nil, err
	}
	if p.isKw("if") {
		p.next()
		if _, err := p.parseOr(); err != nil {
			return nil, err
		}
		if !p.isKw("else") {
			return nil, syntaxErr("expected 'else' after 'if' expression")
		}
		p.next()
		if _, err := p.parseExpression(); err != nil {
			return nil, err
		}
		return &pyNode{kind: nOther}, nil
	}
	return n, nil
}

func (p *pyParser) parseOr() (*pyNode, error) {
	n, err := p.parseAnd()
	if err != nil {
		return nil, err
	}
	for p.isKw("or") {
		p.next()
		if _, err := p.parseAnd(); err != nil {
			return nil, err
		}
		n = &pyNode{kind: nOther}
	}
	return n, nil
}

func (p *pyParser) parseAnd() (*pyNode, error) {
	n, err := p.parseNot()
	if err != nil {
		return nil, err
	}
	for p.isKw("and") {
		p.next()
		if _, err := p.parseNot(); err != nil {
			return nil, err
		}
		n = &pyNode{kind: nOther}
	}
	return n, nil
}

func (p *pyParser) parseNot() (*pyNode, error) {
	if p.isKw("not") {
		p.next()
		if _, err := p.parseNot(); err != nil {
			return nil, err
		}
		return &pyNode{kind: nOther}, nil
	}
	return p.parseComparison()
}

func (p *pyParser) parseComparison() (*pyNode, error) {
	n, err := p.parseBitOr()
	if err != nil {
		return nil, err
	}
	for {
		t := p.peek()
		switch {
		case t.kind == tkOp && (t.text == "==" || t.text == "!=" || t.text == "<" || t.text == ">" || t.text == "<=" || t.text == ">="):
			p.next()
		case p.isKw("in"):
			p.next()
		case p.isKw("is"):
			p.next()
			if p.isKw("not") {
				p.next()
			}
		case p.isKw("not"):
			p.next()
			if !p.isKw("in") {
				return nil, syntaxErr("invalid syntax")
			}
			p.next()
		default:
			return n, nil
		}
		if _, err := p.parseBitOr(); err != nil {
			return nil, err
		}
		n = &pyNode{kind: nOther}
	}
}

func (p *pyParser) parseBinary(ops []string, sub func() (*pyNode, error)) (*pyNode, error) {
	n, err := sub()
	if err != nil {
		return nil, err
	}
	for {
		t := p.peek()
		if t.kind != tkOp {
			return n, nil
		}
		found := false
		for _, op := range ops {
			if t.text == op {
				found = true
			}
		}
		if !found {
			return n, nil
		}
		p.next()
		r, err := sub()
		if err != nil {
			return nil, err
		}
		n = &pyNode{kind: nBin, op: t.text, l: n, r: r}
	}
}

func (p *pyParser) parseBitOr() (*pyNode, error) {
	return p.parseBinary([]string{"|"}, p.parseBitXor)
}

func (p *pyParser) parseBitXor() (*pyNode, error) {
	return p.parseBinary([]string{"^"}, p.parseBitAnd)
}

func (p *pyParser) parseBitAnd() (*pyNode, error) {
	return p.parseBinary([]string{"&"}, p.parseShift)
}

func (p *pyParser) parseShift() (*pyNode, error) {
	return p.parseBinary([]string{"<<", ">>"}, p.parseArith)
}

func (p *pyParser) parseArith() (*pyNode, error) {
	return p.parseBinary([]string{"+", "-"}, p.parseTerm)
}

func (p *pyParser) parseTerm() (*pyNode, error) {
	return p.parseBinary([]string{"*", "/", "//", "%", "@"}, p.parseFactor)
}

func (p *pyParser) parseFactor() (*pyNode, error) {
	t := p.peek()
	if t.kind == tkOp && (t.text == "+" || t.text == "-" || t.text == "~") {
		p.next()
		operand, err := p.parseFactor()
		if err != nil {
			return nil, err
		}
		return &pyNode{kind: nUnary, op: t.text, l: operand}, nil
	}
	return p.parsePower()
}

func (p *pyParser) parsePower() (*pyNode, error) {
	awaited := false
	if p.isKw("await") {
		p.next()
		awaited = true
	}
	n, err := p.parsePrimary()
	if err != nil {
		return nil, err
	}
	if awaited {
		n = &pyNode{kind: nOther}
	}
	if p.isOp("**") {
		p.next()
		if _, err := p.parseFactor(); err != nil {
			return nil, err
		}
		return &pyNode{kind: nOther}, nil
	}
	return n, nil
}

func (p *pyParser) parsePrimary() (*pyNode, error) {
	n, err := p.parseAtom()
	if err != nil {
		return nil, err
	}
	for {
		switch {
		case p.isOp("."):
			p.next()
			if t := p.peek(); t.kind != tkName || pyKeywords[t.text] {
				return nil, syntaxErr("invalid syntax")
			}
			p.next()
			n = &pyNode{kind: nAttr}
		case p.isOp("("):
			p.next()
			nargs, err := p.parseCallArgs()
			if err != nil {
				return nil, err
			}
			if n.kind == nName && n.val == "set" && nargs == 0 {
				n = &pyNode{kind: nSetCall}
			} else {
				n = &pyNode{kind: nOther}
			}
		case p.isOp("["):
			p.next()
			if p.isOp("]") {
				return nil, syntaxErr("invalid syntax")
			}
			if _, err := p.parseExpressions(true); err != nil {
				return nil, err
			}
			if err := p.expectOp("]"); err != nil {
				return nil, err
			}
			n = &pyNode{kind: nSubscript}
		default:
			return n, nil
		}
	}
}

// parseCallArgs parses call arguments after '(' through ')' and returns their count.
func (p *pyParser) parseCallArgs() (int, error) {
	count := 0
	sawKeyword, sawDoubleStar := false, false
	for !p.isOp(")") {
		if count > 0 {
			if err := p.expectOp(","); err != nil {
				return 0, err
			}
			if p.isOp(")") {
				break
			}
		}
		switch {
		case p.isOp("*"):
			p.next()
			if sawDoubleStar {
				return 0, syntaxErr("iterable argument unpacking follows keyword argument unpacking")
			}
			if _, err := p.parseExpression(); err != nil {
				return 0, err
			}
		case p.isOp("**"):
			p.next()
			sawDoubleStar = true
			if _, err := p.parseExpression(); err != nil {
				return 0, err
			}
		default:
			e, err := p.parseExpression()
			if err != nil {
				return 0, err
			}
			if p.isOp("=") {
				if e.kind != nName || e.parens {
					return 0, syntaxErr("expression cannot contain assignment")
				}
				p.next()
				if _, err := p.parseExpression(); err != nil {
					return 0, err
				}
				sawKeyword = true
			} else {
				if sawKeyword || sawDoubleStar {
					return 0, syntaxErr("positional argument follows keyword argument")
				}
				if p.isKw("for") || p.isKw("async") {
					if count > 0 {
						return 0, syntaxErr("generator expression must be parenthesized")
					}
					if err := p.parseCompFor(); err != nil {
						return 0, err
					}
					if !p.isOp(")") {
						return 0, syntaxErr("generator expression must be parenthesized")
					}
				}
			}
		}
		count++
	}
	p.next()
	return count, nil
}

// parseCompFor parses one or more comprehension clauses.
func (p *pyParser) parseCompFor() error {
	for p.isKw("for") || p.isKw("async") {
		if p.isKw("async") {
			p.next()
			if !p.isKw("for") {
				return syntaxErr("invalid syntax")
			}
		}
		p.next()
		target, err := p.parseTargets()
		if err != nil {
			return err
		}
		if !assignable(target) {
			return syntaxErr("cannot assign to expression")
		}
		if !p.isKw("in") {
			return syntaxErr("invalid syntax")
		}
		p.next()
		if _, err := p.parseOr(); err != nil {
			return err
		}
		for p.isKw("if") {
			p.next()
			if _, err := p.parseOr(); err != nil {
				return err
			}
		}
	}
	return nil
}

func (p *pyParser) parseTargets() (*pyNode, error) {
	first, err := p.parseTargetItem()
	if err != nil {
		return nil, err
	}
	if !p.isOp(",") {
		return first, nil
	}
	elts := []*pyNode{first}
	for p.isOp(",") {
		p.next()
		if p.isKw("in") {
			break
		}
		e, err := p.parseTargetItem()
		if err != nil {
			return nil, err
		}
		elts = append(elts, e)
	}
	return &pyNode{kind: nTuple, elts: elts}, nil
}

func (p *pyParser) parseTargetItem() (*pyNode, error) {
	if p.isOp("*") {
		p.next()
		e, err := p.parseBitOr()
		if err != nil {
			return nil, err
		}
		return &pyNode{kind: nStarred, l: e}, nil
	}
	return p.parseBitOr()
}

func assignable(n *pyNode) bool {
	switch n.kind {
	case nName:
		return !pyKeywords[n.val.(string)]
	case nAttr, nSubscript:
		return true
	case nStarred:
		return assignable(n.l)
	case nTuple, nList:
		for _, e := range n.elts {
			if !assignable(e) {
				return false
			}
		}
		return true
	}
	return false
}

func (p *pyParser) parseAtom() (*pyNode, error) {
	t := p.peek()
	switch t.kind {
	case tkEnd:
		return nil, syntaxErr("unexpected EOF while parsing")
	case tkNumber:
		p.next()
		return &pyNode{kind: nConst, val: t.val}, nil
	case tkString:
		return p.parseStrings()
	case tkName:
		switch t.text {
		case "True":
			p.next()
			return &pyNode{kind: nConst, val: true}, nil
		case "False":
			p.next()
			return &pyNode{kind: nConst, val: false}, nil
		case "None":
			p.next()
			return &pyNode{kind: nConst, val: nil}, nil
		}
		if pyKeywords[t.text] {
			return nil, syntaxErr("invalid syntax")
		}
		p.next()
		return &pyNode{kind: nName, val: t.text}, nil
	}
	switch t.text {
	case "...":
		p.next()
		return &pyNode{kind: nConst, val: pyEllipsis{}}, nil
	case "(":
		p.next()
		if p.isOp(")") {
			p.next()
			return &pyNode{kind: nTuple, parens: true}, nil
		}
		if p.isKw("yield") {
			return nil, fmt.Errorf("yield expression: %w", errUnsupported)
		}
		first, err := p.parseMaybeStarred(true)
		if err != nil {
			return nil, err
		}
		if p.isKw("for") || p.isKw("async") {
			if first.kind == nStarred {
				return nil, syntaxErr("iterable unpacking cannot be used in comprehension")
			}
			if err := p.parseCompFor(); err != nil {
				return nil, err
			}
			if err := p.expectOp(")"); err != nil {
				return nil, err
			}
			return &pyNode{kind: nOther}, nil
		}
		if p.isOp(")") {
			p.next()
			if first.kind == nStarred {
				return nil, syntaxErr("cannot use starred expression here")
			}
			cp := *first
			cp.parens = true
			return &cp, nil
		}
		elts := []*pyNode{first}
		for p.isOp(",") {
			p.next()
			if p.isOp(")") {
				break
			}
			e, err := p.parseMaybeStarred(true)
			if err != nil {
				return nil, err
			}
			elts = append(elts, e)
		}
		if err := p.expectOp(")"); err != nil {
			return nil, err
		}
		return &pyNode{kind: nTuple, elts: elts, parens: true}, nil
	case "[":
		p.next()
		elts, comp, err := p.parseDisplay("]")
		if err != nil {
			return nil, err
		}
		if comp {
			return &pyNode{kind: nOther}, nil
		}
		return &pyNode{kind: nList, elts: elts}, nil
	case "{":
		p.next()
		if p.isOp("}") {
			p.next()
			return &pyNode{kind: nDict}, nil
		}
		if p.isOp("**") {
			// a dict display; keys are None for ** items, which literal_eval rejects
			for !p.isOp("}") {
				if err := p.expectOp("**"); err != nil {
					return nil, err
				}
				if _, err := p.parseBitOr(); err != nil {
					return nil, err
				}
				if p.isOp(",") {
					p.next()
					continue
				}
				if !p.isOp("}") {
					return nil, syntaxErr("invalid syntax")
				}
			}
			p.next()
			return &pyNode{kind: nDict, elts: []*pyNode{{kind: nOther}}}, nil
		}
		elts, comp, err := p.parseDisplay("}")
		if err != nil {
			return nil, err
		}
		if comp {
			return &pyNode{kind: nOther}, nil
		}
		return &pyNode{kind: nSet, elts: elts}, nil
	}
	return nil, syntaxErr("invalid syntax")
}

// parseDisplay parses list or set display items up to the closing bracket.
func (p *pyParser) parseDisplay(closing string) ([]*pyNode, bool, error) {
	var elts []*pyNode
	for !p.isOp(closing) {
		e, err := p.parseMaybeStarred(true)
		if err != nil {
			return nil, false, err
		}
		if len(elts) == 0 && (p.isKw("for") || p.isKw("async")) {
			if e.kind == nStarred {
				return nil, false, syntaxErr("iterable unpacking cannot be used in comprehension")
			}
			if err := p.parseCompFor(); err != nil {
				return nil, false, err
			}
			if err := p.expectOp(closing); err != nil {
				return nil, false, err
			}
			return nil, true, nil
		}
		elts = append(elts, e)
		if p.isOp(",") {
			p.next()
			continue
		}
		if !p.isOp(closing) {
			return nil, false, syntaxErr("invalid syntax")
		}
	}
	p.next()
	return elts, false, nil
}

// parseStrings concatenates adjacent string literals.
func (p *pyParser) parseStrings() (*pyNode, error) {
	var sb strings.Builder
	var bb []byte
	haveBytes, haveStr, joined := false, false, false
	for p.peek().kind == tkString {
		t := p.next()
		switch v := t.val.(type) {
		case pyBytes:
			haveBytes = true
			bb = append(bb, v...)
		case string:
			haveStr = true
			sb.WriteString(v)
			if t.fstr {
				joined = true
			}
		}
	}
	if haveBytes && haveStr {
		return nil, syntaxErr("cannot mix bytes and nonbytes literals")
	}
	if joined {
		return &pyNode{kind: nOther, joinStr: true}, nil
	}
	if haveBytes {
		return &pyNode{kind: nConst, val: pyBytes(bb)}, nil
	}
	return &pyNode{kind: nConst, val: sb.String()}, nil
}

// ---- ast.literal_eval's _convert ----

func isPyNumber(v any) bool {
	switch v.(type) {
	case *big.Int, float64, pyComplex:
		return true
	}
	return false
}

func convertNum(n *pyNode) (any, error) {
	if n.kind != nConst || !isPyNumber(n.val) {
		return nil, fmt.Errorf("malformed node or string: %w", errNotLiteral)
	}
	return n.val, nil
}

func convertSignedNum(n *pyNode) (any, error) {
	if n.kind == nUnary && (n.op == "+" || n.op == "-") {
		v, err := convertNum(n.l)
		if err != nil {
			return nil, err
		}
		if n.op == "+" {
			return v, nil
		}
		switch x := v.(type) {
		case *big.Int:
			return new(big.Int).Neg(x), nil
		case float64:
			return -x, nil
		case pyComplex:
			return pyComplex{-x.re, -x.im}, nil
		}
	}
	return convertNum(n)
}

func literalConvert(n *pyNode) (any, error) {
	switch n.kind {
	case nConst:
		return n.val, nil
	case nTuple, nList, nSet:
		out := make([]any, 0, len(n.elts))
		for _, e := range n.elts {
			v, err := literalConvert(e)
			if err != nil {
				return nil, err
			}
			out = append(out, v)
		}
		switch n.kind {
		case nTuple:
			return pyTuple(out), nil
		case nList:
			return out, nil
		default:
			for _, v := range out {
				switch v.(type) {
				case []any, pySet:
					return nil, fmt.Errorf("unhashable set element: %w", errUnsupported)
				}
			}
			return pySet(out), nil
		}
	case nSetCall:
		return pySet{}, nil
	case nDict:
		if len(n.elts) == 0 {
			return map[string]any{}, nil
		}
		return nil, fmt.Errorf("malformed node or string: %w", errNotLiteral)
	case nBin:
		if n.op == "+" || n.op == "-" {
			left, lerr := convertSignedNum(n.l)
			right, rerr := convertNum(n.r)
			if lerr == nil && rerr == nil {
				c, isComplex := right.(pyComplex)
				var lf float64
				lok := true
				switch x := left.(type) {
				case *big.Int:
					f, _ := new(big.Float).SetInt(x).Float64()
					if math.IsInf(f, 0) {
						return nil, fmt.Errorf("int too large for complex: %w", errUnsupported)
					}
					lf = f
				case float64:
					lf = x
				default:
					lok = false
				}
				if isComplex && lok {
					if n.op == "+" {
						return pyComplex{lf + c.re, 0 + c.im}, nil
					}
					return pyComplex{lf - c.re, 0 - c.im}, nil
				}
			}
		}
	}
	return convertSignedNum(n)
}
