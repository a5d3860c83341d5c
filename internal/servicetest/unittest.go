package servicetest

import (
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// Unittest is the summary Python's unittest runner prints at the end of a run.
type Unittest struct {
	Ran                 int
	OK                  bool // "OK"; false for "FAILED" and "NO TESTS RAN"
	Failures, Errors    int
	Skipped             int
	ExpectedFailures    int
	UnexpectedSuccesses int
}

// unittestSummary is the runner's closing block: a line of 70 dashes, "Ran N
// tests in Ts", an empty line and the outcome with its counts.
var unittestSummary = regexp.MustCompile(`(?m)^-{70}\r?\nRan ([0-9]+) tests? in [0-9.]+s\r?\n\r?\n(OK|FAILED|NO TESTS RAN)(?: \(([^)]*)\))?\r?$`)

// ErrNoUnittestSummary means the output holds no unittest summary (the runner
// crashed before it, or something other than unittest ran).
var ErrNoUnittestSummary = errors.New("no unittest summary in the output")

// ParseUnittest reads the last summary in out, the combined output of
// `python3 -m unittest`.
func ParseUnittest(out []byte) (Unittest, error) {
	ms := unittestSummary.FindAllSubmatch(out, -1)
	if len(ms) == 0 {
		return Unittest{}, ErrNoUnittestSummary
	}
	m := ms[len(ms)-1]
	var u Unittest
	u.Ran, _ = strconv.Atoi(string(m[1]))
	u.OK = string(m[2]) == "OK"
	if len(m[3]) == 0 {
		return u, nil
	}
	for part := range strings.SplitSeq(string(m[3]), ", ") {
		k, v, ok := strings.Cut(part, "=")
		n, err := strconv.Atoi(v)
		if !ok || err != nil {
			return u, fmt.Errorf("unittest summary count %q: %w", part, ErrNoUnittestSummary)
		}
		switch k {
		case "failures":
			u.Failures = n
		case "errors":
			u.Errors = n
		case "skipped":
			u.Skipped = n
		case "expected failures":
			u.ExpectedFailures = n
		case "unexpected successes":
			u.UnexpectedSuccesses = n
		default:
			return u, fmt.Errorf("unittest summary count %q: %w", part, ErrNoUnittestSummary)
		}
	}
	return u, nil
}

// CheckUnittest returns an error unless out reports a successful unittest run
// of at least one test with exactly wantSkipped skipped tests. The runner exits
// 0 when no test ran or when every test was skipped, so its exit status alone
// proves nothing.
func CheckUnittest(out []byte, wantSkipped int) error {
	u, err := ParseUnittest(out)
	switch {
	case err != nil:
		return err
	case u.Ran == 0:
		return errors.New("unittest ran no test")
	case !u.OK || u.Failures > 0 || u.Errors > 0 || u.UnexpectedSuccesses > 0:
		return fmt.Errorf("unittest failed: %+v\n%s", u, UnittestFailures(out))
	case u.Skipped != wantSkipped:
		return fmt.Errorf("unittest skipped %d of %d tests, want %d skipped", u.Skipped, u.Ran, wantSkipped)
	case u.Skipped >= u.Ran:
		return fmt.Errorf("unittest skipped all %d tests", u.Ran)
	}
	return nil
}

// unittestFailure is the header of one failed or errored test in the
// runner's report: a line of 70 equals signs, then "FAIL: name" or "ERROR:
// name".
var unittestFailure = regexp.MustCompile(`(?m)^={70}\r?\n(?:FAIL|ERROR): .*$`)

// UnittestFailures returns, for each failed or errored test in out, its
// header and its last traceback, without the captured logs testtools puts
// before it: the part of a long run's output that says what went wrong.
func UnittestFailures(out []byte) string {
	s := string(out)
	locs := unittestFailure.FindAllStringIndex(s, -1)
	var b strings.Builder
	for i, loc := range locs {
		end := len(s)
		if i+1 < len(locs) {
			end = locs[i+1][0]
		} else if j := strings.Index(s[loc[1]:], "\n"+strings.Repeat("-", 70)+"\nRan "); j >= 0 {
			end = loc[1] + j
		}
		block := s[loc[1]:end]
		if j := strings.LastIndex(block, "Traceback (most recent call last):"); j >= 0 {
			block = "\n" + block[j:]
		}
		b.WriteString(strings.TrimPrefix(s[loc[0]:loc[1]], strings.Repeat("=", 70)+"\n"))
		b.WriteString(strings.TrimRight(block, "\n"))
		b.WriteString("\n")
	}
	return b.String()
}
