package trustcache_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/trustpool/trustpool/internal/verdict"
)

// FuzzApply feeds arbitrary bytes as one received verdict (they come from
// the bus, which is not trusted): Apply must not panic, must keep at most
// that one verdict, and only if it really is signed by the pinned key.
func FuzzApply(f *testing.F) {
	b, err := os.ReadFile(filepath.Join("..", "..", "..", "internal", "verdict", "testdata", "vectors.json"))
	if err != nil {
		f.Fatal(err)
	}
	var file struct {
		Vectors []struct {
			Signed json.RawMessage `json:"signed"`
		} `json:"vectors"`
	}
	if err := json.Unmarshal(b, &file); err != nil {
		f.Fatal(err)
	}
	for _, v := range file.Vectors {
		f.Add([]byte(v.Signed))
	}
	f.Add([]byte(`{"verdict":"{}","kid":"87e3206dafcd50ef","sig":"AAAA"}`))
	f.Fuzz(func(t *testing.T, raw []byte) {
		c, _ := newCache(t, 0)
		res := c.Apply([]json.RawMessage{raw})
		if res.Accepted+len(res.Drops) != 1 {
			t.Fatalf("Apply accounted for %d of 1 verdicts", res.Accepted+len(res.Drops))
		}
		if res.Accepted == 0 {
			if c.Len() != 0 {
				t.Fatal("a dropped verdict was kept")
			}
			return
		}
		s, err := verdict.ParseSigned(raw)
		if err != nil {
			t.Fatalf("accepted an unparsable envelope: %v", err)
		}
		if _, err := verdict.NewVerifier(pinned()).Verify(s); err != nil {
			t.Fatalf("accepted a verdict that does not verify: %v", err)
		}
	})
}
