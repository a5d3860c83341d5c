package oslo

import (
	"regexp"
	"testing"
	"time"
)

func TestIDs(t *testing.T) {
	hex32 := regexp.MustCompile(`^[0-9a-f]{12}4[0-9a-f]{3}[89ab][0-9a-f]{15}$`)
	dashed := regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)
	seen := map[string]bool{}
	for range 100 {
		u, m := NewUniqueID(), NewMessageID()
		if !hex32.MatchString(u) {
			t.Fatalf("NewUniqueID() = %q, not uuid4 hex", u)
		}
		if !dashed.MatchString(m) {
			t.Fatalf("NewMessageID() = %q, not a dashed uuid4", m)
		}
		if seen[u] || seen[m] {
			t.Fatalf("repeated id %q/%q", u, m)
		}
		seen[u], seen[m] = true, true
	}
}

func TestPythonTimestamp(t *testing.T) {
	paris := time.FixedZone("CET", 3600)
	tests := []struct {
		in   time.Time
		want string
	}{
		// notification_messagingv2_info.json carries "2026-11-25 19:54:38.703142".
		{time.Date(2026, 11, 25, 19, 54, 38, 703142000, time.UTC), "2026-11-25 19:54:38.703142"},
		{time.Date(2026, 11, 25, 20, 54, 38, 703142999, paris), "2026-11-25 19:54:38.703142"}, // UTC, truncated
		{time.Date(2026, 1, 2, 3, 4, 5, 60000, time.UTC), "2026-01-02 03:04:05.000060"},
		{time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), "2026-01-02 03:04:05"},   // str(datetime) drops .000000
		{time.Date(2026, 1, 2, 3, 4, 5, 999, time.UTC), "2026-01-02 03:04:05"}, // sub-microsecond only
	}
	for _, tt := range tests {
		got := PythonTimestamp(tt.in)
		if got != tt.want {
			t.Errorf("PythonTimestamp(%v) = %q, want %q", tt.in, got, tt.want)
		}
		back, err := ParsePythonTimestamp(got)
		if err != nil || !back.Equal(tt.in.Truncate(time.Microsecond)) {
			t.Errorf("ParsePythonTimestamp(%q) = %v, %v; want %v", got, back, err, tt.in.Truncate(time.Microsecond))
		}
	}
	for _, bad := range []string{"", "2026-11-25T19:54:38.703142", "2026-11-25 19:54:38.7", "yesterday"} {
		if _, err := ParsePythonTimestamp(bad); err == nil {
			t.Errorf("ParsePythonTimestamp(%q) succeeded", bad)
		}
	}
}
