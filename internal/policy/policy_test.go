package policy

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/trustpool/trustpool/internal/bootseed"
	"github.com/trustpool/trustpool/internal/eventlog"
)

// hostInput builds the verified input a host booted with v would produce.
func hostInput(t *testing.T, v bootseed.Variant, files map[string]string) Input {
	t.Helper()
	log, _, err := bootseed.BuildLog(v, []eventlog.Alg{eventlog.SHA256})
	if err != nil {
		t.Fatal(err)
	}
	l, err := eventlog.Parse(log)
	if err != nil {
		t.Fatal(err)
	}
	rep, err := l.Replay(eventlog.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	facts, err := eventlog.ExtractBootFacts(l, eventlog.SHA256, nil)
	if err != nil {
		t.Fatal(err)
	}
	in := Input{PCRs: map[int][]byte{}, Boot: facts}
	for i, v := range rep {
		in.PCRs[int(i)] = v
	}
	var ima []byte
	for _, p := range []string{"boot_aggregate", "/usr/bin/bash", "/tmp/x", "/usr/bin/python3"} {
		c, ok := files[p]
		if !ok {
			c = "content of " + p
		}
		d := sha256.Sum256([]byte(c))
		e, _ := eventlog.IMAEntryBytes(10, d[:], p, nil, false, 20)
		ima = append(ima, e...)
	}
	in.IMA, _, err = eventlog.ParseIMA(ima, 20)
	if err != nil {
		t.Fatal(err)
	}
	return in
}

func TestParseExample(t *testing.T) {
	b, err := os.ReadFile("testdata/example.toml")
	if err != nil {
		t.Fatal(err)
	}
	ps, err := Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	if len(ps) != 2 || ps[0].Name != "compute-2026" || len(ps[0].Facts["kernel_path"]) != 2 || ps[0].IMA == nil || len(ps[0].IMA.Exclude) != 2 {
		t.Fatalf("parsed %+v", ps[0])
	}
	out, err := Marshal(ps)
	if err != nil {
		t.Fatal(err)
	}
	again, err := Parse(out)
	if err != nil {
		t.Fatalf("re-parse: %v\n%s", err, out)
	}
	if diff := cmp.Diff(ps, again); diff != "" {
		t.Errorf("round trip (-want +got):\n%s", diff)
	}
}

func TestParseRejects(t *testing.T) {
	cases := map[string]string{
		"unknown_key":      "[[profile]]\nname = \"a\"\nkernal = [\"x\"]\n",
		"empty_profile":    "[[profile]]\nname = \"a\"\n",
		"bad_name":         "[[profile]]\nname = \"A B\"\n[profile.facts]\nsecure_boot=[\"enabled\"]\n",
		"duplicate_name":   "[[profile]]\nname = \"a\"\n[profile.facts]\nk=[\"v\"]\n[[profile]]\nname = \"a\"\n[profile.facts]\nk=[\"v\"]\n",
		"bad_pcr_index":    "[[profile]]\nname = \"a\"\n[profile.pcrs]\n24 = [\"" + strings.Repeat("0", 64) + "\"]\n",
		"bad_pcr_value":    "[[profile]]\nname = \"a\"\n[profile.pcrs]\n0 = [\"abc\"]\n",
		"no_values":        "[[profile]]\nname = \"a\"\n[profile.facts]\nkernel = []\n",
		"bad_ima_digest":   "[[profile]]\nname = \"a\"\n[profile.ima.allowlist]\n\"/x\" = [\"nohex\"]\n",
		"bad_ima_exclude":  "[[profile]]\nname = \"a\"\n[profile.ima]\nexclude = [\"[\"]\n",
		"not_toml":         "[[profile\n",
		"wrong_value_type": "[[profile]]\nname = 3\n",
	}
	for name, in := range cases {
		t.Run(name, func(t *testing.T) {
			if _, err := Parse([]byte(in)); !errors.Is(err, ErrInvalid) && !errors.Is(err, ErrEmptyProfile) {
				t.Fatalf("Parse() = %v, want an invalid-profile error", err)
			}
		})
	}
}

// TestParseTypeErrorsInTOMLTerms: a value of the wrong type is reported with
// its key and the TOML types, never the Go types it decodes into.
func TestParseTypeErrorsInTOMLTerms(t *testing.T) {
	tests := []struct{ in, want string }{
		{"[[profile]]\nname = 5\n", "invalid profile: profile[0].name: want a string, got an integer"},
		{"profile = 5\n", "invalid profile: profile: want an array of tables, got an integer"},
		{"[[profile]]\nname = \"a\"\n[profile.pcrs]\n0 = \"x\"\n", "invalid profile: profile[0].pcrs.0: want an array of strings, got a string"},
		{"[[profile]]\nname = \"a\"\npcrs = 5\n", "invalid profile: profile[0].pcrs: want a table, got an integer"},
		{"[[profile]]\nname = \"a\"\n[profile.facts]\nk = [1.5]\n", "invalid profile: profile[0].facts.k[0]: want a string, got a float"},
		{"[[profile]]\nname = \"a\"\n[profile.ima]\nallow_violations = \"no\"\n", "invalid profile: profile[0].ima.allow_violations: want a boolean, got a string"},
		{"[[profile]]\nname = \"a\"\n[profile.ima.allowlist]\n\"/usr/bin/x\" = \"sha256:00\"\n", `invalid profile: profile[0].ima.allowlist."/usr/bin/x": want an array of strings, got a string`},
		{"[[profile]]\nname = \"a\"\ndescription = 1979-05-27\n", "invalid profile: profile[0].description: want a string, got a date or time"},
	}
	goTypes := regexp.MustCompile(`int64|float64|slice|\[\]|map\[|interface|primitive|destination`)
	for _, tt := range tests {
		_, err := Parse([]byte(tt.in))
		if err == nil || !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tt.want) || goTypes.MatchString(err.Error()) {
			t.Errorf("Parse(%q) = %v, want %q and no Go type", tt.in, err, tt.want)
		}
	}
}

func TestLearnEvaluateRollout(t *testing.T) {
	a := hostInput(t, bootseed.BuildA(), nil)
	p, err := Learn("compute", a, LearnOptions{IMA: true, IMAExclude: []string{"/tmp/"}})
	if err != nil {
		t.Fatal(err)
	}
	if r := p.Evaluate(a); !r.Pass {
		t.Fatalf("golden host fails its own profile: %v", r.Reasons)
	}
	b := hostInput(t, bootseed.BuildB(), nil)
	r := p.Evaluate(b)
	want := []string{"fact initrd:", "fact kernel:", "fact kernel_cmdline:"}
	if r.Pass || len(r.Reasons) != len(want) {
		t.Fatalf("build B before merge: %+v", r)
	}
	for i, w := range want {
		if !strings.HasPrefix(r.Reasons[i], w) {
			t.Errorf("reason %d = %q, want prefix %q", i, r.Reasons[i], w)
		}
	}
	pb, err := Learn("compute", b, LearnOptions{IMA: true, IMAExclude: []string{"/tmp/"}})
	if err != nil {
		t.Fatal(err)
	}
	p.Merge(pb)
	for name, in := range map[string]Input{"a": a, "b": b} {
		if r := p.Evaluate(in); !r.Pass {
			t.Errorf("build %s after merge: %v", name, r.Reasons)
		}
	}
	// Secure Boot off and a drifted command line still fail, with reasons.
	off := p.Evaluate(hostInput(t, bootseed.SecureBootOff(), nil))
	if off.Pass || !containsPrefix(off.Reasons, "fact secure_boot:") || !containsPrefix(off.Reasons, "pcr 7:") {
		t.Errorf("secure boot off: %+v", off)
	}
	drift := p.Evaluate(hostInput(t, bootseed.Drifted(), nil))
	if drift.Pass || !containsPrefix(drift.Reasons, "fact kernel_cmdline:") {
		t.Errorf("drifted: %+v", drift)
	}
	// IMA: an unknown binary and a changed one fail; /tmp is excluded.
	bad := hostInput(t, bootseed.BuildA(), map[string]string{"/usr/bin/bash": "trojan", "/tmp/x": "anything"})
	bad.IMA = append(bad.IMA, eventlog.IMAEntry{Path: "/usr/bin/nc", FileHashAlg: "sha256", FileDigest: bytes.Repeat([]byte{1}, 32)})
	bad.IMA = append(bad.IMA, eventlog.IMAEntry{Path: "/etc/shadow", Violation: true})
	r = p.Evaluate(bad)
	wantIMA := []string{"ima: /usr/bin/bash digest", "ima: /usr/bin/nc not in allowlist", "ima: measurement violation on /etc/shadow"}
	if r.Pass || len(r.Reasons) != len(wantIMA) {
		t.Fatalf("bad IMA: %+v", r)
	}
	for i, w := range wantIMA {
		if !strings.HasPrefix(r.Reasons[i], w) {
			t.Errorf("reason %d = %q, want prefix %q", i, r.Reasons[i], w)
		}
	}
	// IMA failures are marked as such (they stay until reboot); boot
	// failures are not.
	if diff := cmp.Diff(r.Reasons, r.IMAReasons); diff != "" {
		t.Errorf("IMAReasons differ from the IMA reasons (-reasons +ima):\n%s", diff)
	}
	if len(drift.IMAReasons) != 0 {
		t.Errorf("boot drift marked as IMA failure: %v", drift.IMAReasons)
	}
}

func TestEvaluateMissingInputs(t *testing.T) {
	p := &Profile{Name: "p", PCRs: map[string][]string{"9": {strings.Repeat("0", 64)}}, Facts: map[string][]string{"kernel": {"x"}}}
	r := p.Evaluate(Input{})
	if diff := cmp.Diff([]string{"pcr 9: not quoted", "fact kernel: missing"}, r.Reasons); diff != "" || r.Pass {
		t.Errorf("reasons (-want +got):\n%s", diff)
	}
	empty := &Profile{Name: "e"}
	if r := empty.Evaluate(Input{}); r.Pass {
		t.Error("an empty profile passed")
	}
}

func TestLearnMissingFact(t *testing.T) {
	if _, err := Learn("x", Input{PCRs: map[int][]byte{}}, LearnOptions{}); !errors.Is(err, ErrInvalid) {
		t.Errorf("Learn from nothing: %v", err)
	}
}

func containsPrefix(ss []string, p string) bool {
	for _, s := range ss {
		if strings.HasPrefix(s, p) {
			return true
		}
	}
	return false
}
