package policy

import (
	"fmt"
	"io"
	"strings"
	"unicode"
	"unicode/utf8"
)

// WriteSample writes a commented sample policy file for the defaults, byte for byte
// what oslopolicy-sample-generator (oslo.policy 4.0.0, YAML format) writes for one
// namespace holding them in this order: each rule commented out, preceded by its
// description wrapped at 70 columns, its operations and intended scopes, and followed by
// deprecation notes.
func WriteSample(w io.Writer, defaults []RuleDefault) error {
	for _, d := range defaults {
		if _, err := io.WriteString(w, formatRuleDefault(d)); err != nil {
			return fmt.Errorf("write sample policy: %w", err)
		}
	}
	return nil
}

// formatRuleDefault is oslo.policy generator._format_rule_default_yaml with
// include_help=True, comment_rule=True, add_deprecated_rules=True.
func formatRuleDefault(d RuleDefault) string {
	text := fmt.Sprintf("\"%s\": \"%s\"\n", d.Name, d.CheckStr)
	var op strings.Builder
	for _, o := range d.Operations {
		if o.Method != "" && o.Path != "" {
			fmt.Fprintf(&op, "# %s  %s\n", o.Method, o.Path)
		}
	}
	scope := ""
	if len(d.ScopeTypes) > 0 {
		scope = "# Intended scope(s): " + strings.Join(d.ScopeTypes, ", ") + "\n"
	}
	text = op.String() + scope + "#" + text + "\n"
	if d.Description != "" {
		text = formatHelpText(d.Description) + "\n" + text
	}
	switch {
	case d.DeprecatedForRemoval:
		text = fmt.Sprintf("# DEPRECATED\n# \"%s\" has been deprecated since %s.\n%s\n%s",
			d.Name, d.DeprecatedSince, formatHelpText(d.DeprecatedReason), text)
	case d.DeprecatedRule != nil:
		dep := d.DeprecatedRule
		reason := dep.DeprecatedReason
		if reason == "" {
			reason = d.DeprecatedReason
		}
		since := dep.DeprecatedSince
		if since == "" {
			since = d.DeprecatedSince
		}
		depText := fmt.Sprintf("\"%s\":\"%s\" has been deprecated since %s in favor of \"%s\":\"%s\".",
			dep.Name, dep.CheckStr, pyNoneIfEmpty(since), d.Name, d.CheckStr)
		text = fmt.Sprintf("%s# DEPRECATED\n%s\n%s\n", text, formatHelpText(depText), formatHelpText(reason))
		if d.Name != dep.Name {
			text += "# WARNING: A rule name change has been identified.\n" +
				"#          This may be an artifact of new rules being\n" +
				"#          included which require legacy fallback\n" +
				"#          rules to ensure proper policy behavior.\n" +
				"#          Alternatively, this may just be an alias.\n" +
				"#          Please evaluate on a case by case basis\n" +
				"#          keeping in mind the format for aliased\n" +
				"#          rules is:\n" +
				"#          \"old_rule_name\": \"new_rule_name\".\n"
			text += fmt.Sprintf("# \"%s\": \"rule:%s\"\n", dep.Name, d.Name)
		}
		text += "\n"
	}
	return text
}

func pyNoneIfEmpty(s string) string {
	if s == "" {
		return "None"
	}
	return s
}

// formatHelpText is oslo.policy generator._format_help_text.
func formatHelpText(description string) string {
	if description == "" {
		return "#"
	}
	var lines, paragraph []string
	for _, line := range pySplitLines(strings.TrimFunc(description, pyIsSpace)) {
		switch {
		case strings.TrimFunc(line, pyIsSpace) == "":
			lines = append(lines, wrapParagraph(paragraph)...)
			lines = append(lines, "#")
			paragraph = nil
		case len(line) == len(strings.TrimLeftFunc(line, pyIsSpace)):
			paragraph = append(paragraph, strings.TrimRightFunc(line, pyIsSpace))
		default:
			if len(paragraph) > 0 {
				lines = append(lines, wrapParagraph(paragraph)...)
				lines = append(lines, "#")
				paragraph = nil
			}
			lines = append(lines, "# "+strings.TrimRightFunc(line, pyIsSpace))
		}
	}
	lines = append(lines, wrapParagraph(paragraph)...)
	return strings.Join(lines, "\n")
}

func wrapParagraph(lines []string) []string {
	return textWrap(strings.Join(lines, " "), 70, "# ", "# ")
}

// pySplitLines is str.splitlines().
func pySplitLines(s string) []string {
	var out []string
	start := 0
	rs := []rune(s)
	for i := 0; i < len(rs); i++ {
		switch rs[i] {
		case '\n', '\v', '\f', 0x1c, 0x1d, 0x1e, 0x85, 0x2028, 0x2029:
			out = append(out, string(rs[start:i]))
			start = i + 1
		case '\r':
			out = append(out, string(rs[start:i]))
			if i+1 < len(rs) && rs[i+1] == '\n' {
				i++
			}
			start = i + 1
		}
	}
	if start < len(rs) {
		out = append(out, string(rs[start:]))
	}
	return out
}

// textWrap is Python's textwrap.wrap(text, width, initial_indent=..., subsequent_indent=...)
// with the other TextWrapper options at their defaults.
func textWrap(text string, width int, initialIndent, subsequentIndent string) []string {
	// expand_tabs (tabsize 8) then replace_whitespace
	text = expandTabs(text, 8)
	text = strings.Map(func(r rune) rune {
		if strings.ContainsRune("\t\n\v\f\r", r) {
			return ' '
		}
		return r
	}, text)
	chunks := splitChunks([]rune(text))
	if len(chunks) == 0 {
		return nil
	}
	// reverse so that the next chunk is at the end
	for i, j := 0, len(chunks)-1; i < j; i, j = i+1, j-1 {
		chunks[i], chunks[j] = chunks[j], chunks[i]
	}
	var lines []string
	for len(chunks) > 0 {
		var cur []string
		curLen := 0
		indent := initialIndent
		if len(lines) > 0 {
			indent = subsequentIndent
		}
		w := width - utf8.RuneCountInString(indent)
		if strings.TrimFunc(chunks[len(chunks)-1], pyIsSpace) == "" && len(lines) > 0 {
			chunks = chunks[:len(chunks)-1]
		}
		for len(chunks) > 0 {
			l := utf8.RuneCountInString(chunks[len(chunks)-1])
			if curLen+l > w {
				break
			}
			cur = append(cur, chunks[len(chunks)-1])
			chunks = chunks[:len(chunks)-1]
			curLen += l
		}
		if len(chunks) > 0 && utf8.RuneCountInString(chunks[len(chunks)-1]) > w {
			cur = handleLongWord(&chunks, cur, curLen, w)
			curLen = 0
			for _, c := range cur {
				curLen += utf8.RuneCountInString(c)
			}
		}
		if len(cur) > 0 && strings.TrimFunc(cur[len(cur)-1], pyIsSpace) == "" {
			cur = cur[:len(cur)-1]
		}
		if len(cur) > 0 {
			lines = append(lines, indent+strings.Join(cur, ""))
		}
	}
	return lines
}

func handleLongWord(chunks *[]string, cur []string, curLen, width int) []string {
	spaceLeft := width - curLen
	if width < 1 {
		spaceLeft = 1
	}
	cs := *chunks
	chunk := []rune(cs[len(cs)-1])
	end := spaceLeft
	if len(chunk) > spaceLeft {
		hyphen := -1
		for i := min(spaceLeft, len(chunk)) - 1; i >= 0; i-- {
			if chunk[i] == '-' {
				hyphen = i
				break
			}
		}
		if hyphen > 0 && strings.ContainsFunc(string(chunk[:hyphen]), func(r rune) bool { return r != '-' }) {
			end = hyphen + 1
		}
	}
	end = min(end, len(chunk))
	cur = append(cur, string(chunk[:end]))
	cs[len(cs)-1] = string(chunk[end:])
	return cur
}

func expandTabs(s string, tabsize int) string {
	if !strings.Contains(s, "\t") {
		return s
	}
	var b strings.Builder
	col := 0
	for _, r := range s {
		switch r {
		case '\t':
			n := tabsize - col%tabsize
			b.WriteString(strings.Repeat(" ", n))
			col += n
		case '\n', '\r':
			b.WriteRune(r)
			col = 0
		default:
			b.WriteRune(r)
			col++
		}
	}
	return b.String()
}

func isPyWS(r rune) bool { return strings.ContainsRune("\t\n\v\f\r ", r) }

// isWordChar is \w in Python's re for str patterns.
func isWordChar(r rune) bool {
	return r == '_' || unicode.IsLetter(r) || unicode.IsDigit(r) || unicode.In(r, unicode.Nl, unicode.No, unicode.Nd)
}

func isLetterChunk(r rune) bool { return isWordChar(r) && !unicode.IsDigit(r) } // [^\d\W]

func isWordPunct(r rune) bool { return isWordChar(r) || strings.ContainsRune("!\"'&.,?", r) }

// splitChunks is TextWrapper._split with break_on_hyphens: whitespace runs, em-dashes
// between words, and words split after hyphens between letters.
func splitChunks(t []rune) []string {
	var chunks []string
	at := func(i int) rune {
		if i < 0 || i >= len(t) {
			return -1
		}
		return t[i]
	}
	dashesThenWord := func(i int) bool { // (?=-{2,}\w) at i
		j := i
		for at(j) == '-' {
			j++
		}
		return j-i >= 2 && j < len(t) && isWordChar(t[j])
	}
	i := 0
	for i < len(t) {
		if isPyWS(t[i]) {
			j := i
			for j < len(t) && isPyWS(t[j]) {
				j++
			}
			chunks = append(chunks, string(t[i:j]))
			i = j
			continue
		}
		if i > 0 && isWordPunct(t[i-1]) && dashesThenWord(i) {
			j := i
			for at(j) == '-' {
				j++
			}
			chunks = append(chunks, string(t[i:j]))
			i = j
			continue
		}
		end := -1
		for j := i + 1; j <= len(t); j++ {
			if isPyWS(t[j-1]) {
				break // the lazy run may not contain whitespace
			}
			// hyphenated word: -(?:(?<=lt{2}-)|(?<=lt-lt-))(?=lt-?lt)
			if at(j) == '-' {
				lb := (isLetterChunk(at(j-1)) && isLetterChunk(at(j-2))) ||
					(isLetterChunk(at(j-1)) && at(j-2) == '-' && isLetterChunk(at(j-3)))
				la := isLetterChunk(at(j+1)) && (isLetterChunk(at(j+2)) || (at(j+2) == '-' && isLetterChunk(at(j+3))))
				if lb && la {
					end = j + 1
					break
				}
			}
			if j == len(t) || isPyWS(t[j]) {
				end = j
				break
			}
			if isWordPunct(t[j-1]) && dashesThenWord(j) {
				end = j
				break
			}
		}
		if end < 0 {
			end = i + 1
		}
		chunks = append(chunks, string(t[i:end]))
		i = end
	}
	return chunks
}
