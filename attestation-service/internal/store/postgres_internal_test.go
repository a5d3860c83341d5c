package store

import "testing"

func TestNumberPlaceholders(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"SELECT 1", "SELECT 1"},
		{"UPDATE t SET a = ?, b = ? WHERE c = ?", "UPDATE t SET a = $1, b = $2 WHERE c = $3"},
		{"SELECT '?' FROM t WHERE a = ? AND b = 'x''?' AND c = ?", "SELECT '?' FROM t WHERE a = $1 AND b = 'x''?' AND c = $2"},
		{`SELECT "we?rd" FROM t WHERE a = ?`, `SELECT "we?rd" FROM t WHERE a = $1`},
	} {
		if got := numberPlaceholders(tc.in); got != tc.want {
			t.Errorf("numberPlaceholders(%q) = %q, want %q", tc.in, got, tc.want)
		}
		// Cached the second time, same answer.
		if got := numberPlaceholders(tc.in); got != tc.want {
			t.Errorf("numberPlaceholders(%q) second call = %q", tc.in, got)
		}
	}
}
