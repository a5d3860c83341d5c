package deliver

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/trustpool/trustpool/internal/attestrpc"
)

// TestKeptBounded: beyond MaxKept blobs the oldest are dropped.
func TestKeptBounded(t *testing.T) {
	d, err := New(Config{StateDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	blob := &attestrpc.ImportBlob{Public: []byte{1}, AuthorizeKey: []byte{2}}
	id := func(i int) string { return fmt.Sprintf("00000000-0000-4000-8000-%012d", i) }
	dir := filepath.Join(d.cfg.StateDir, keptDir)
	old := time.Now().Add(-time.Hour)
	for i := range MaxKept + 2 {
		if err := d.keep(id(i), id(i), blob); err != nil {
			t.Fatal(err)
		}
		// Distinct ages, the first ones oldest.
		at := old.Add(time.Duration(i) * time.Second)
		if err := os.Chtimes(d.keptPath(id(i)), at, at); err != nil {
			t.Fatal(err)
		}
	}
	// Before pruning (files an older agent or a hand left there), the
	// list still stops at MaxKept.
	if ks, err := d.Kept(); err != nil || len(ks) != MaxKept {
		t.Errorf("Kept() listed %d, %v; want %d", len(ks), err, MaxKept)
	}
	if err := d.pruneKept(dir); err != nil {
		t.Fatal(err)
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != MaxKept {
		t.Errorf("%d kept, want %d", len(ents), MaxKept)
	}
	for i, want := range map[int]bool{0: false, 1: false, 2: true, MaxKept + 1: true} {
		if _, err := os.Stat(d.keptPath(id(i))); (err == nil) != want {
			t.Errorf("blob %d kept = %v, want %v", i, err == nil, want)
		}
	}
	fi, err := os.Stat(d.keptPath(id(2)))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("kept file mode %v, %v; want 0600", fi.Mode().Perm(), err)
	}
}
