package evidence

import (
	"errors"
	"testing"
)

// maxIMAEntries is the entry cap of one IMA chunk (eventlog.MaxIMAEntries).
const maxIMAEntries = 1 << 18

// TestIMAChunkMemoryBounded: a chunk of tiny IMA entries within the size
// cap must not make Verify allocate or retain much more than the chunk
// itself; a chunk with more entries than the cap is refused as too large.
func TestIMAChunkMemoryBounded(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a 16 MiB IMA chunk")
	}
	for _, tc := range []struct {
		name string
		n    int // 0: fill MaxIMAChunk (289262 entries)
	}{{"at_entry_cap", maxIMAEntries}, {"full_chunk", 0}} {
		t.Run(tc.name, func(t *testing.T) {
			k, ch, ev, prev, chunk := imaChunkRound(t, tc.n)
			res, alloc, retained, err := verifyMemory(k, ch, ev, prev)
			t.Logf("%d-byte chunk: allocated %.2fx, retained %.2fx, err %v", len(chunk), float64(alloc)/float64(len(chunk)), float64(retained)/float64(len(chunk)), err)
			if tc.n == 0 && err == nil {
				t.Errorf("%d entries accepted, more than the cap of %d", len(res.IMA.New), maxIMAEntries)
			}
			if err != nil && !errors.Is(err, ErrTooLarge) {
				t.Fatalf("Verify: %v", err)
			}
			if err == nil && tc.n > 0 && len(res.IMA.New) != tc.n {
				t.Errorf("%d entries verified, want %d", len(res.IMA.New), tc.n)
			}
			// The entries are kept (the policy appraises them) and point
			// into the chunk: about one 64-byte record per 58-byte entry.
			if limit := 2 * uint64(len(chunk)); alloc > limit || retained > limit*3/4 {
				t.Errorf("allocated %d and retained %d bytes for a %d-byte chunk (limits %d and %d)", alloc, retained, len(chunk), limit, limit*3/4)
			}
		})
	}
}
