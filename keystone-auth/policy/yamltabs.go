package policy

import (
	"fmt"
	"strings"
)

// checkYAMLTabs reports the first tab that PyYAML 6's pure-Python scanner (which
// oslo.policy's yaml.safe_load uses) refuses. PyYAML only ever skips spaces between
// tokens, so a tab is accepted only inside a quoted scalar, in the body of a block scalar
// and in a comment; anywhere else ("key:<TAB>value", tab indentation, a tab after a
// value) it raises "found character '\t' that cannot start any token". gopkg.in/yaml.v2
// follows libyaml, which accepts most of these, so without this check a file oslo.policy
// refuses (and then denies everything) would load here.
//
// The scanner follows PyYAML's tokenizer only as far as needed to know where scalars and
// comments start and end (indentation levels, simple keys, flow level). It runs on input
// that yaml.v2 has already accepted, so it reports other syntax errors only where its
// state would otherwise be meaningless.
func checkYAMLTabs(src string) error {
	if !strings.Contains(src, "\t") {
		return nil
	}
	s := &yamlScanner{r: []rune(src), indent: -1, allowKey: true, keys: map[int]yamlKey{}}
	return s.run()
}

type yamlKey struct{ line, col, idx int }

type yamlScanner struct {
	r            []rune
	i, line, col int
	flow         int
	indent       int
	indents      []int
	allowKey     bool
	keys         map[int]yamlKey // possible simple key per flow level
}

func (s *yamlScanner) peek(k int) rune {
	if s.i+k < len(s.r) {
		return s.r[s.i+k]
	}
	return 0
}

func isYAMLBreak(c rune) bool {
	return c == '\r' || c == '\n' || c == 0x85 || c == 0x2028 || c == 0x2029
}

// isYAMLBlankZ is PyYAML's '\0 \t\r\n\x85\u2028\u2029'.
func isYAMLBlankZ(c rune) bool { return c == 0 || c == ' ' || c == '\t' || isYAMLBreak(c) }

func (s *yamlScanner) forward(n int) {
	for ; n > 0 && s.i < len(s.r); n-- {
		c := s.r[s.i]
		s.i++
		switch {
		case c == '\n' || c == 0x85 || c == 0x2028 || c == 0x2029 || (c == '\r' && s.peek(0) != '\n'):
			s.line++
			s.col = 0
		case c != 0xFEFF:
			s.col++
		}
	}
}

func (s *yamlScanner) lineBreak() bool {
	switch c := s.peek(0); {
	case c == '\r' && s.peek(1) == '\n':
		s.forward(2)
	case isYAMLBreak(c):
		s.forward(1)
	default:
		return false
	}
	return true
}

func (s *yamlScanner) fail(what string) error {
	return fmt.Errorf("%s at line %d, column %d (PyYAML, which oslo.policy uses, refuses it): %w",
		what, s.line+1, s.col+1, ErrInvalidFile)
}

func (s *yamlScanner) tabOr(what string) error {
	if s.peek(0) == '\t' {
		return s.fail("found a tab character that cannot start any token")
	}
	return s.fail(what)
}

func (s *yamlScanner) docMarker() bool {
	if s.col != 0 || s.i+3 > len(s.r) {
		return false
	}
	p := string(s.r[s.i : s.i+3])
	return (p == "---" || p == "...") && isYAMLBlankZ(s.peek(3))
}

func (s *yamlScanner) addIndent(col int) {
	if s.indent < col {
		s.indents = append(s.indents, s.indent)
		s.indent = col
	}
}

func (s *yamlScanner) unwind(col int) {
	if s.flow > 0 {
		return
	}
	for s.indent > col && len(s.indents) > 0 {
		s.indent = s.indents[len(s.indents)-1]
		s.indents = s.indents[:len(s.indents)-1]
	}
}

func (s *yamlScanner) saveKey() {
	if s.allowKey {
		s.keys[s.flow] = yamlKey{line: s.line, col: s.col, idx: s.i}
	}
}

func (s *yamlScanner) run() error {
	if s.peek(0) == 0xFEFF {
		s.forward(1)
	}
	for {
		s.toNextToken()
		for lvl, k := range s.keys {
			if k.line != s.line || s.i-k.idx > 1024 {
				delete(s.keys, lvl)
			}
		}
		s.unwind(s.col)
		ch := s.peek(0)
		switch {
		case s.i >= len(s.r):
			return nil
		case ch == '%' && s.col == 0:
			if err := s.directive(); err != nil {
				return err
			}
		case s.docMarker():
			s.unwind(-1)
			delete(s.keys, s.flow)
			s.allowKey = false
			s.forward(3)
		case ch == '[' || ch == '{':
			s.saveKey()
			s.flow++
			s.allowKey = true
			s.forward(1)
		case ch == ']' || ch == '}':
			delete(s.keys, s.flow)
			if s.flow > 0 {
				s.flow--
			}
			s.allowKey = false
			s.forward(1)
		case ch == ',':
			s.allowKey = true
			delete(s.keys, s.flow)
			s.forward(1)
		case ch == '-' && isYAMLBlankZ(s.peek(1)):
			if s.flow == 0 {
				s.addIndent(s.col)
			}
			s.allowKey = true
			delete(s.keys, s.flow)
			s.forward(1)
		case ch == '?' && (s.flow > 0 || isYAMLBlankZ(s.peek(1))):
			if s.flow == 0 {
				s.addIndent(s.col)
			}
			s.allowKey = s.flow == 0
			delete(s.keys, s.flow)
			s.forward(1)
		case ch == ':' && (s.flow > 0 || isYAMLBlankZ(s.peek(1))):
			if k, ok := s.keys[s.flow]; ok {
				delete(s.keys, s.flow)
				if s.flow == 0 {
					s.addIndent(k.col)
				}
				s.allowKey = false
			} else {
				if s.flow == 0 {
					s.addIndent(s.col)
				}
				s.allowKey = s.flow == 0
			}
			s.forward(1)
		case ch == '*' || ch == '&':
			s.saveKey()
			s.allowKey = false
			s.forward(1)
			for c := s.peek(0); c == '-' || c == '_' || ('0' <= c && c <= '9') || ('a' <= c && c <= 'z') || ('A' <= c && c <= 'Z'); c = s.peek(0) {
				s.forward(1)
			}
		case ch == '!':
			s.saveKey()
			s.allowKey = false
			for !isYAMLBlankZ(s.peek(0)) {
				s.forward(1)
			}
		case (ch == '|' || ch == '>') && s.flow == 0:
			s.allowKey = true
			delete(s.keys, s.flow)
			if err := s.blockScalar(); err != nil {
				return err
			}
		case ch == '\'' || ch == '"':
			s.saveKey()
			s.allowKey = false
			if err := s.quoted(ch); err != nil {
				return err
			}
		case !strings.ContainsRune("\x00 \t\r\n\u0085\u2028\u2029-?:,[]{}#&*!|>'\"%@`", ch) ||
			(!isYAMLBlankZ(s.peek(1)) && (ch == '-' || (s.flow == 0 && (ch == '?' || ch == ':')))):
			s.saveKey()
			s.allowKey = false
			s.plain()
		default:
			return s.tabOr(fmt.Sprintf("found character %q that cannot start any token", ch))
		}
	}
}

// toNextToken skips spaces (never tabs), comments and line breaks.
func (s *yamlScanner) toNextToken() {
	for {
		for s.peek(0) == ' ' {
			s.forward(1)
		}
		if s.peek(0) == '#' {
			for s.i < len(s.r) && !isYAMLBreak(s.peek(0)) {
				s.forward(1)
			}
		}
		if !s.lineBreak() {
			return
		}
		if s.flow == 0 {
			s.allowKey = true
		}
	}
}

// directive skips a %YAML or %TAG line; PyYAML separates its parts with spaces only.
func (s *yamlScanner) directive() error {
	prevSpace := false
	for s.i < len(s.r) && !isYAMLBreak(s.peek(0)) {
		switch c := s.peek(0); {
		case c == '#' && prevSpace:
			for s.i < len(s.r) && !isYAMLBreak(s.peek(0)) {
				s.forward(1)
			}
			return nil
		case c == '\t':
			return s.fail("found a tab character in a directive")
		default:
			prevSpace = c == ' '
			s.forward(1)
		}
	}
	return nil
}

func (s *yamlScanner) blockScalar() error {
	s.forward(1)
	increment := 0
	digit := func() bool {
		if c := s.peek(0); '1' <= c && c <= '9' {
			increment = int(c - '0')
			s.forward(1)
			return true
		}
		return false
	}
	if c := s.peek(0); c == '+' || c == '-' {
		s.forward(1)
		digit()
	} else if digit() {
		if c := s.peek(0); c == '+' || c == '-' {
			s.forward(1)
		}
	}
	for s.peek(0) == ' ' {
		s.forward(1)
	}
	if s.peek(0) == '#' {
		for s.i < len(s.r) && !isYAMLBreak(s.peek(0)) {
			s.forward(1)
		}
	}
	if s.i < len(s.r) && !isYAMLBreak(s.peek(0)) {
		return s.tabOr("expected a comment or a line break after a block scalar header")
	}
	s.lineBreak()
	minIndent := max(s.indent+1, 1)
	var indent int
	if increment == 0 {
		maxIndent := 0
		for c := s.peek(0); c == ' ' || isYAMLBreak(c); c = s.peek(0) {
			if c == ' ' {
				s.forward(1)
				maxIndent = max(maxIndent, s.col)
			} else {
				s.lineBreak()
			}
		}
		indent = max(minIndent, maxIndent)
	} else {
		indent = minIndent + increment - 1
		s.blockBreaks(indent)
	}
	for s.col == indent && s.i < len(s.r) {
		for s.i < len(s.r) && !isYAMLBreak(s.peek(0)) {
			s.forward(1) // content: tabs are part of the value
		}
		s.lineBreak()
		s.blockBreaks(indent)
	}
	return nil
}

func (s *yamlScanner) blockBreaks(indent int) {
	for s.col < indent && s.peek(0) == ' ' {
		s.forward(1)
	}
	for isYAMLBreak(s.peek(0)) {
		s.lineBreak()
		for s.col < indent && s.peek(0) == ' ' {
			s.forward(1)
		}
	}
}

// quoted skips a single- or double-quoted scalar, in which tabs are content.
func (s *yamlScanner) quoted(q rune) error {
	s.forward(1)
	for {
		c := s.peek(0)
		switch {
		case s.i >= len(s.r):
			return s.fail("found unexpected end of stream in a quoted scalar")
		case q == '\'' && c == '\'' && s.peek(1) == '\'':
			s.forward(2)
		case c == q:
			s.forward(1)
			return nil
		case q == '"' && c == '\\':
			s.forward(1)
			if isYAMLBreak(s.peek(0)) {
				if err := s.quotedBreaks(); err != nil {
					return err
				}
			} else {
				s.forward(1)
			}
		case isYAMLBreak(c):
			if err := s.quotedBreaks(); err != nil {
				return err
			}
		default:
			s.forward(1)
		}
	}
}

func (s *yamlScanner) quotedBreaks() error {
	s.lineBreak()
	for {
		if s.docMarker() {
			return s.fail("found unexpected document separator in a quoted scalar")
		}
		for c := s.peek(0); c == ' ' || c == '\t'; c = s.peek(0) {
			s.forward(1)
		}
		if !s.lineBreak() {
			return nil
		}
	}
}

// plain skips a plain scalar: it ends at a tab, which is then the next "token".
func (s *yamlScanner) plain() {
	indent := s.indent + 1
	for s.peek(0) != '#' {
		n := 0
		for {
			c := s.peek(n)
			if isYAMLBlankZ(c) ||
				(c == ':' && (isYAMLBlankZ(s.peek(n+1)) || (s.flow > 0 && strings.ContainsRune(",[]{}", s.peek(n+1))))) ||
				(s.flow > 0 && strings.ContainsRune(",?[]{}", c)) {
				break
			}
			n++
		}
		if n == 0 {
			return
		}
		s.allowKey = false
		s.forward(n)
		if !s.plainSpaces() || s.peek(0) == '#' || (s.flow == 0 && s.col < indent) {
			return
		}
	}
}

// plainSpaces skips the spaces and line breaks inside a plain scalar; false means the
// scalar ends here.
func (s *yamlScanner) plainSpaces() bool {
	n := 0
	for s.peek(0) == ' ' {
		s.forward(1)
		n++
	}
	if !isYAMLBreak(s.peek(0)) {
		return n > 0
	}
	s.lineBreak()
	s.allowKey = true
	if s.docMarker() {
		return false
	}
	for c := s.peek(0); c == ' ' || isYAMLBreak(c); c = s.peek(0) {
		if c == ' ' {
			s.forward(1)
			continue
		}
		s.lineBreak()
		if s.docMarker() {
			return false
		}
	}
	return true
}
