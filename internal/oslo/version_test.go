package oslo

import "testing"

// versionCases are (endpoint, requested) pairs with oslo's answer;
// TestPythonAgrees runs them through oslo's version_is_compatible too.
var versionCases = []struct {
	endpoint, requested string
	want                bool
}{
	{"6.1", "6.0", true},  // verified: endpoint 6.1 served a 6.0 call
	{"6.1", "7.0", false}, // verified: UnsupportedVersion
	{"1.3", "1.4", false}, // verified: UnsupportedVersion
	{"1.3", "1.3", true},
	{"1.3", "1.0", true},
	{"2.0", "1.9", false},
	{"2.0", "2.0.0", true},
	{"2.0", "2.0.1", false},
	{"2.0.1", "2.0.1", true},
	{"2.0.1", "2.0.2", false},
	{"2.1", "2.0.5", true}, // patch compared only when minors are equal
	{"2.1.3", "2.1", true},
	{"1.0", "1.0.0.7", true}, // parts after the third are ignored
	{"1.0", "01.0", true},
	{"10.10", "10.9", true},
	{"10.9", "10.10", false},
	{"", "7.0", true}, // no endpoint version accepts everything
	{"", "", true},
	{"1.0", "", false},
	{"1.0", "1", false},
	{"1.0", "a.b", false},
	{"1.0", "1.x", false},
	{"1.0", "1.0.x", false},
	{"1.0", "-1.0", false},
	{"1.0", "1..0", false},
	{"1", "1.0", false},
	{"x", "1.0", false},
}

func TestVersionCompatible(t *testing.T) {
	for _, tt := range versionCases {
		if got := VersionCompatible(tt.endpoint, tt.requested); got != tt.want {
			t.Errorf("VersionCompatible(%q, %q) = %v, want %v", tt.endpoint, tt.requested, got, tt.want)
		}
	}
}

func TestEffectiveVersion(t *testing.T) {
	if v := (&Request{}).EffectiveVersion(); v != "1.0" {
		t.Errorf("no version: %q", v)
	}
	if v := (&Request{Version: "6.1"}).EffectiveVersion(); v != "6.1" {
		t.Errorf("6.1: %q", v)
	}
}
