package policy

import (
	"os"
	"testing"
)

// FuzzParse checks the profile file parser; anything it accepts must
// survive a Marshal/Parse round trip and evaluate without panicking.
func FuzzParse(f *testing.F) {
	b, err := os.ReadFile("testdata/example.toml")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(b)
	f.Add([]byte("[[profile]]\nname = 5\n[profile.ima.allowlist]\n\"/x\" = [1]\n"))
	f.Add([]byte("profile = [[1], {a = 2}]\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		ps, err := Parse(b)
		if err != nil {
			return
		}
		out, err := Marshal(ps)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := Parse(out); err != nil {
			t.Fatalf("re-parse of marshalled profiles: %v\n%s", err, out)
		}
		for _, p := range ps {
			_ = p.Evaluate(Input{})
		}
	})
}
