package localapi

import "bytes"

// fastFilterRequest decodes the common shape of a filter request without
// reflection: a single JSON object whose keys are among "hosts",
// "trusted_host", "profile" and "answer" (each at most once, unescaped), whose hosts
// value is null or an array of strings and whose other values are null or
// strings, where every string is printable ASCII without escapes.
//
// It returns ok=false for anything else (escapes, non-ASCII, other keys,
// duplicate keys, numbers, nesting, syntax errors, trailing data...), and
// the caller then decodes with encoding/json, so the accepted language and
// every error message stay exactly those of the strict decoder: for the
// inputs this accepts, encoding/json yields the same values.
//
// The host names are substrings of one string copy of body. A hosts list
// longer than maxHosts is not taken either.
func fastFilterRequest(body []byte, maxHosts int) (fr filterRequest, ok bool) {
	p := fastParser{s: string(body)}
	p.ws()
	if !p.byte('{') {
		return filterRequest{}, false
	}
	p.ws()
	if p.byte('}') {
		p.ws()
		return fr, p.i == len(p.s)
	}
	var seenHosts, seenTrusted, seenProfile, seenAnswer bool
	for {
		key, ok := p.str()
		if !ok {
			return filterRequest{}, false
		}
		p.ws()
		if !p.byte(':') {
			return filterRequest{}, false
		}
		p.ws()
		switch key {
		case "hosts":
			if seenHosts {
				return filterRequest{}, false
			}
			seenHosts = true
			if p.null() {
				break
			}
			hosts, ok := p.strArray(body, maxHosts)
			if !ok {
				return filterRequest{}, false
			}
			fr.Hosts = &hosts
		case "trusted_host", "profile", "answer":
			seen := &seenTrusted
			dst := &fr.TrustedHost
			switch key {
			case "profile":
				seen, dst = &seenProfile, &fr.Profile
			case "answer":
				seen, dst = &seenAnswer, &fr.Answer
			}
			if *seen {
				return filterRequest{}, false
			}
			*seen = true
			if p.null() {
				break
			}
			v, ok := p.str()
			if !ok {
				return filterRequest{}, false
			}
			*dst = &v
		default:
			return filterRequest{}, false
		}
		p.ws()
		if p.byte('}') {
			break
		}
		if !p.byte(',') {
			return filterRequest{}, false
		}
		p.ws()
	}
	p.ws()
	return fr, p.i == len(p.s)
}

type fastParser struct {
	s string
	i int
}

func (p *fastParser) ws() {
	for p.i < len(p.s) {
		switch p.s[p.i] {
		case ' ', '\t', '\n', '\r':
			p.i++
		default:
			return
		}
	}
}

func (p *fastParser) byte(c byte) bool {
	if p.i < len(p.s) && p.s[p.i] == c {
		p.i++
		return true
	}
	return false
}

func (p *fastParser) null() bool {
	if len(p.s)-p.i >= 4 && p.s[p.i:p.i+4] == "null" {
		p.i += 4
		return true
	}
	return false
}

// str reads a string of printable ASCII without escapes.
func (p *fastParser) str() (string, bool) {
	if !p.byte('"') {
		return "", false
	}
	start := p.i
	for p.i < len(p.s) {
		c := p.s[p.i]
		switch {
		case c == '"':
			v := p.s[start:p.i]
			p.i++
			return v, true
		case c < 0x20 || c >= 0x7f || c == '\\':
			return "", false
		}
		p.i++
	}
	return "", false
}

// strArray reads [ "a", "b", ... ] into a slice sized by an upper bound
// on its length (half the quotes left in body, at most maxHosts). More
// than maxHosts elements is not ok: the caller's strict decoder then
// reports the request as too large.
func (p *fastParser) strArray(body []byte, maxHosts int) ([]string, bool) {
	if !p.byte('[') {
		return nil, false
	}
	out := make([]string, 0, min(bytes.Count(body[p.i:], []byte{'"'})/2, max(maxHosts, 0)))
	p.ws()
	if p.byte(']') {
		return out, true
	}
	for {
		v, ok := p.str()
		if !ok {
			return nil, false
		}
		if len(out) == maxHosts {
			return nil, false
		}
		out = append(out, v)
		p.ws()
		if p.byte(']') {
			return out, true
		}
		if !p.byte(',') {
			return nil, false
		}
		p.ws()
	}
}
