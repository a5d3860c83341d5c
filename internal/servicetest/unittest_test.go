package servicetest

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestCheckUnittest runs the real unittest runner on modules whose runs exit 0
// although they prove nothing (no test, every test skipped) and on honest ones.
func TestCheckUnittest(t *testing.T) {
	py := Python(t)
	dir := t.TempDir()
	modules := map[string]string{
		"empty":      "import unittest\n",
		"allskipped": "import unittest\nclass T(unittest.TestCase):\n    @unittest.skip('no')\n    def test_a(self): pass\n    def test_b(self): self.skipTest('no')\n",
		"oneskipped": "import unittest\nclass T(unittest.TestCase):\n    @unittest.skip('no')\n    def test_a(self): pass\n    def test_b(self): pass\n",
		"passing":    "import unittest\nclass T(unittest.TestCase):\n    def test_a(self): print('Ran 99 tests in 1s')\n    @unittest.expectedFailure\n    def test_b(self): self.fail()\n",
		"failing":    "import unittest\nclass T(unittest.TestCase):\n    def test_a(self): self.fail('x')\n    def test_b(self): raise RuntimeError\n",
	}
	for name, src := range modules {
		if err := os.WriteFile(filepath.Join(dir, name+".py"), []byte(src), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		module      string
		wantSkipped int
		want        Unittest
		ok          bool
	}{
		{"empty", 0, Unittest{Ran: 0, OK: true}, false},
		{"allskipped", 2, Unittest{Ran: 2, OK: true, Skipped: 2}, false},
		{"oneskipped", 0, Unittest{Ran: 2, OK: true, Skipped: 1}, false},
		{"oneskipped", 1, Unittest{Ran: 2, OK: true, Skipped: 1}, true},
		{"passing", 0, Unittest{Ran: 2, OK: true, ExpectedFailures: 1}, true},
		{"failing", 0, Unittest{Ran: 2, Failures: 1, Errors: 1}, false},
	}
	for _, tt := range tests {
		cmd := exec.CommandContext(t.Context(), py, "-m", "unittest", "-v", tt.module)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "PYTHONDONTWRITEBYTECODE=1")
		out, _ := cmd.CombinedOutput()
		got, err := ParseUnittest(out)
		if err != nil {
			t.Errorf("%s: ParseUnittest: %v\n%s", tt.module, err, out)
			continue
		}
		if diff := cmp.Diff(tt.want, got); diff != "" {
			t.Errorf("%s: ParseUnittest (-want +got):\n%s\n%s", tt.module, diff, out)
		}
		if err := CheckUnittest(out, tt.wantSkipped); (err == nil) != tt.ok {
			t.Errorf("%s: CheckUnittest(skipped %d) = %v, want ok=%v", tt.module, tt.wantSkipped, err, tt.ok)
		}
	}
	if err := CheckUnittest([]byte("Traceback (most recent call last):\nImportError: x\n"), 0); err == nil {
		t.Error("CheckUnittest accepted output without a summary")
	}
}

// TestUnittestFailures runs the real unittest runner on a module with a
// failure, an error and a pass, and checks that the extract names both bad
// tests with their last traceback and leaves out what the runner printed
// before (the captured logs of a testtools run sit there).
func TestUnittestFailures(t *testing.T) {
	py := Python(t)
	dir := t.TempDir()
	src := "import unittest\nclass T(unittest.TestCase):\n" +
		"    def test_a(self):\n        print('captured noise')\n        self.fail('wanted 3')\n" +
		"    def test_b(self):\n        raise RuntimeError('broken')\n" +
		"    def test_c(self): pass\n"
	if err := os.WriteFile(filepath.Join(dir, "mixed.py"), []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(t.Context(), py, "-m", "unittest", "-v", "mixed")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "PYTHONDONTWRITEBYTECODE=1")
	out, _ := cmd.CombinedOutput()
	got := UnittestFailures(out)
	for _, want := range []string{"FAIL: test_a (mixed.T", "AssertionError: wanted 3", "ERROR: test_b (mixed.T", "RuntimeError: broken"} {
		if !strings.Contains(got, want) {
			t.Errorf("UnittestFailures lacks %q:\n%s\nfrom:\n%s", want, got, out)
		}
	}
	for _, unwanted := range []string{"test_c", "Ran 3 tests", "captured noise"} {
		if strings.Contains(got, unwanted) {
			t.Errorf("UnittestFailures holds %q:\n%s", unwanted, got)
		}
	}
	if got := UnittestFailures([]byte("Ran 1 test in 0.1s\n\nOK\n")); got != "" {
		t.Errorf("UnittestFailures of a passing run = %q, want empty", got)
	}
}
