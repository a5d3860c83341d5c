package policy

import (
	"errors"
	"maps"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/trustpool/trustpool/internal/bootseed"
	"github.com/trustpool/trustpool/internal/eventlog"
	"github.com/trustpool/trustpool/internal/eventlog/eventlogtest"
)

// hostInput builds the verified input a host booted with v would produce.
func hostInput(t *testing.T, v bootseed.Variant) Input {
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
	ima := eventlogtest.NewIMAList(20, "sha256")
	for _, p := range []string{"boot_aggregate", "/usr/bin/bash", "/tmp/x", "/usr/bin/python3"} {
		ima.Add("ima-ng", p, []byte("content of "+p), nil)
	}
	in.IMA = imaEntries(t, ima)
	return in
}

// imaEntries parses an IMA list written by eventlogtest.
func imaEntries(t *testing.T, l *eventlogtest.IMAList) []eventlog.IMAEntry {
	t.Helper()
	es, _, err := eventlog.ParseIMA(l.Bytes(), l.HashSize)
	if err != nil {
		t.Fatal(err)
	}
	return es
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
		"reserved_name":    "[[profile]]\nname = \"export\"\n[profile.facts]\nsecure_boot=[\"enabled\"]\n",
		"duplicate_name":   "[[profile]]\nname = \"a\"\n[profile.facts]\nk=[\"v\"]\n[[profile]]\nname = \"a\"\n[profile.facts]\nk=[\"v\"]\n",
		"same_name_key":    "[[profile]]\nname = \"gold-v2\"\n[profile.facts]\nk=[\"v\"]\n[[profile]]\nname = \"gold_v2\"\n[profile.facts]\nk=[\"v\"]\n",
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
	a := hostInput(t, bootseed.BuildA())
	learned, err := Learn("compute", a, LearnOptions{IMA: true, IMAExclude: []string{"/tmp/"}})
	if err != nil {
		t.Fatal(err)
	}
	p := learned.Profile
	if r := p.Evaluate(a); !r.Pass {
		t.Fatalf("golden host fails its own profile: %v", r.Reasons)
	}
	b := hostInput(t, bootseed.BuildB())
	r := p.Evaluate(b)
	want := []string{"pcr 8:", "pcr 9:", "fact initrd:", "fact kernel:", "fact kernel_cmdline:"}
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
	p.Merge(pb.Profile)
	for name, in := range map[string]Input{"a": a, "b": b} {
		if r := p.Evaluate(in); !r.Pass {
			t.Errorf("build %s after merge: %v", name, r.Reasons)
		}
	}
	// Secure Boot off and a drifted command line still fail, with reasons.
	off := p.Evaluate(hostInput(t, bootseed.SecureBootOff()))
	if off.Pass || !containsPrefix(off.Reasons, "fact secure_boot:") || !containsPrefix(off.Reasons, "pcr 7:") {
		t.Errorf("secure boot off: %+v", off)
	}
	drift := p.Evaluate(hostInput(t, bootseed.Drifted()))
	if drift.Pass || !containsPrefix(drift.Reasons, "fact kernel_cmdline:") {
		t.Errorf("drifted: %+v", drift)
	}
	// IMA: an unknown binary and a changed one fail; /tmp is excluded.
	bad := hostInput(t, bootseed.BuildA())
	l := eventlogtest.NewIMAList(20, "sha256")
	l.Add("ima-ng", "boot_aggregate", []byte("content of boot_aggregate"), nil)
	l.Add("ima-ng", "/usr/bin/bash", []byte("trojan"), nil)
	l.Add("ima-ng", "/tmp/x", []byte("anything"), nil)
	l.Add("ima-ng", "/usr/bin/nc", []byte("netcat"), nil)
	l.AddViolation("ima-ng", "/etc/shadow")
	bad.IMA = imaEntries(t, l)
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

// TestIMABootAggregateOnlyFirst: only the first entry of the list is
// boot_aggregate (evidence.Verify checks it); a later entry of that name is
// an ordinary file, appraised and learned as such.
func TestIMABootAggregateOnlyFirst(t *testing.T) {
	in := hostInput(t, bootseed.BuildA())
	learned, err := Learn("p", in, LearnOptions{IMA: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := learned.Profile.IMA.Allowlist["boot_aggregate"]; ok {
		t.Error("the first entry, boot_aggregate, was learned as a file")
	}
	l := eventlogtest.NewIMAList(20, "sha256")
	l.Add("ima-ng", "boot_aggregate", []byte("PCRs 0-9"), nil)
	l.Add("ima-ng", "/usr/bin/bash", []byte("content of /usr/bin/bash"), nil)
	l.Add("ima-ng", "boot_aggregate", []byte("an implant"), nil)
	in.IMA = imaEntries(t, l)
	r := learned.Profile.Evaluate(in)
	if r.Pass || !containsPrefix(r.Reasons, "ima: boot_aggregate not in allowlist") {
		t.Errorf("a later boot_aggregate entry: %+v", r)
	}
	relearned, err := Learn("p", in, LearnOptions{IMA: true})
	if err != nil {
		t.Fatal(err)
	}
	if got := relearned.Profile.IMA.Allowlist["boot_aggregate"]; len(got) != 1 {
		t.Errorf("a later boot_aggregate entry learned as %v, want its digest", got)
	}
}

// TestLearnPinsFactPCRs: Learn pins the PCRs the learned facts are read
// from and says which it added; SkipFactPCRs leaves them out with a
// warning for the facts that need them.
func TestLearnPinsFactPCRs(t *testing.T) {
	in := hostInput(t, bootseed.BuildA())
	def, err := Learn("p", in, LearnOptions{})
	if err != nil {
		t.Fatal(err)
	}
	wantFactPCRs := map[int][]string{
		4: {"bootloader"}, 7: {"secure_boot"},
		8: {"kernel", "initrd", "kernel_cmdline"}, 9: {"kernel", "initrd"},
	}
	if diff := cmp.Diff(wantFactPCRs, def.FactPCRs); diff != "" {
		t.Errorf("FactPCRs (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]int{8, 9}, def.AddedPCRs); diff != "" || len(def.Warnings) != 0 {
		t.Errorf("AddedPCRs (-want +got):\n%s, warnings %v", diff, def.Warnings)
	}
	if len(def.Profile.PCRs) != 10 {
		t.Errorf("default profile pins PCRs %v, want 0-9", slices.Sorted(maps.Keys(def.Profile.PCRs)))
	}

	sb, err := Learn("p", in, LearnOptions{PCRs: []int{}, Facts: []string{"secure_boot", "kernel_cmdline"}})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"7", "8"}, slices.Sorted(maps.Keys(sb.Profile.PCRs))); diff != "" {
		t.Errorf("facts only: pinned (-want +got):\n%s", diff)
	}

	skip, err := Learn("p", in, LearnOptions{SkipFactPCRs: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := skip.Profile.PCRs["8"]; ok || len(skip.AddedPCRs) != 0 || len(skip.Warnings) != 2 ||
		!strings.Contains(skip.Warnings[0], "kernel_cmdline") {
		t.Errorf("SkipFactPCRs: PCRs %v, added %v, warnings %v", slices.Sorted(maps.Keys(skip.Profile.PCRs)), skip.AddedPCRs, skip.Warnings)
	}

	// A PCR a fact needs must have been quoted.
	delete(in.PCRs, 9)
	if _, err := Learn("p", in, LearnOptions{}); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "PCR 9 not quoted") {
		t.Errorf("Learn without PCR 9: %v", err)
	}
}

// TestWithheldFacts: a fact the log does not establish fails a profile
// that checks it, with the reason, and cannot be learned.
func TestWithheldFacts(t *testing.T) {
	in := hostInput(t, bootseed.BuildA())
	learned, err := Learn("p", in, LearnOptions{})
	if err != nil {
		t.Fatal(err)
	}
	evs := bootseed.Events(bootseed.BuildA())
	evs = slices.Insert(evs, len(evs)-2, bootseed.GrubString("kernel_cmdline: /boot/vmlinuz-6.1.0-13-amd64 quiet"))
	log, _, err := bootseed.EncodeLog(evs, []eventlog.Alg{eventlog.SHA256})
	if err != nil {
		t.Fatal(err)
	}
	l, err := eventlog.Parse(log)
	if err != nil {
		t.Fatal(err)
	}
	if in.Boot, err = eventlog.ExtractBootFacts(l, eventlog.SHA256, nil); err != nil {
		t.Fatal(err)
	}
	r := learned.Profile.Evaluate(in)
	if r.Pass || !containsPrefix(r.Reasons, "fact kernel_cmdline: not established: 2 kernel command lines") {
		t.Errorf("withheld command line: %+v", r)
	}
	if _, err := Learn("p", in, LearnOptions{}); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "kernel_cmdline is not established") {
		t.Errorf("Learn from a withheld fact: %v", err)
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

func TestNameKey(t *testing.T) {
	for in, want := range map[string]string{
		"baseline": "BASELINE", "gold-v2": "GOLD_V2", "gold_v2": "GOLD_V2", "a.b c": "A_B_C", "x9": "X9",
	} {
		if got := NameKey(in); got != want {
			t.Errorf("NameKey(%q) = %q, want %q", in, got, want)
		}
	}
}
