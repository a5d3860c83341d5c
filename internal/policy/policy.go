// Package policy holds attestation profiles: named sets of reference values
// that verified evidence must match for a host to be trusted under that
// profile. It is pure (no I/O beyond parsing bytes, no logging).
//
// A profile accepts several values per item, so two host builds can be
// trusted at once during a rollout. [Profile.Evaluate] checks verified
// evidence (package evidence's result) and returns every failing reason,
// not just the first. [Learn] builds a profile from one verified host (the
// golden-host workflow) and [Profile.Merge] adds another host's values.
//
// # Facts and the PCRs behind them
//
// A boot fact is only as trustworthy as the PCRs its events are read from
// make it; package eventlog documents, fact by fact, which facts hold on
// their own once their PCR replays (secure_boot and secure_boot_var.* from
// PCR 7, firmware_blobs and crtm_version from PCR 0, bootloader and
// boot_applications from PCR 4) and which only when the profile also pins
// PCRs: kernel_cmdline, kernel_path and initrd_path need PCR 8; kernel and
// initrd need PCRs 8 and 9. [Learn] therefore pins, by default, every PCR
// a learned fact is read from (eventlog.FactPCRs), and its result lists
// the PCRs it added for which facts. A fact the log does not establish
// (eventlog.BootFacts.Withheld, for instance a command line measured
// twice) fails every profile that checks it, with the reason, and cannot
// be learned. A hand-written profile that checks GRUB facts without
// pinning PCRs 8 and 9 trusts data no PCR covers.
//
// # File format (TOML)
//
//	# Any number of profiles per file.
//	[[profile]]
//	name = "compute-2026"             # required, [a-z0-9_-], unique
//	description = "Debian 12 compute nodes"
//
//	# Boot facts (see eventlog.BootFacts.Map for the names). Every listed
//	# fact must be present and equal to one of its values.
//	[profile.facts]
//	secure_boot = ["enabled"]
//	kernel = ["<sha256 hex of build A>", "<sha256 hex of build B>"]
//	kernel_cmdline = ["/boot/vmlinuz-6.1.0-13-amd64 root=UUID=... ro quiet"]
//
//	# SHA-256 PCR values (lowercase hex) by PCR index. Every listed PCR
//	# must have been quoted and equal one of its values. The kernel and
//	# command line facts above are trustworthy only with PCRs 8 and 9
//	# pinned (one value per build).
//	[profile.pcrs]
//	0 = ["<hex>"]
//	7 = ["<hex>", "<hex>"]
//	8 = ["<hex of build A>", "<hex of build B>"]
//	9 = ["<hex of build A>", "<hex of build B>"]
//
//	# IMA appraisal of the entries verified in a round (absent: IMA not
//	# appraised). Every entry whose path is not excluded must be in the
//	# allowlist with one of its digests ("alg:hex", as in the ima-ng d-ng
//	# field). Violations (ToMToU / open-writers) fail unless allowed. The
//	# first entry since boot, boot_aggregate, is checked by
//	# evidence.Verify against the quoted PCRs and skipped here; any later
//	# entry named boot_aggregate is an ordinary file.
//	[profile.ima]
//	allow_violations = false
//	exclude = ["/tmp/", "/var/log/*"]  # "dir/" = prefix, else path.Match glob
//	[profile.ima.allowlist]
//	"/usr/bin/bash" = ["sha256:<hex>"]
//
// Unknown keys are errors. A profile with no facts, no PCRs and no IMA
// rules is refused: it would trust anything.
//
// # What Evaluate does not do
//
// It trusts its input: pass only values from a successful evidence.Verify.
// IMA entries are appraised per round; remembering that a host once ran
// something not allowed (until it reboots) is the caller's job.
package policy

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"path"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/BurntSushi/toml"

	"github.com/trustpool/trustpool/internal/eventlog"
)

// Errors.
var (
	ErrInvalid      = errors.New("invalid profile")
	ErrEmptyProfile = errors.New("profile has no rules")
)

// Profile is a named set of reference values.
type Profile struct {
	Name        string              `toml:"name"`
	Description string              `toml:"description,omitempty"`
	Facts       map[string][]string `toml:"facts,omitempty"`
	PCRs        map[string][]string `toml:"pcrs,omitempty"`
	IMA         *IMARules           `toml:"ima,omitempty"`
}

// IMARules appraise IMA entries.
type IMARules struct {
	AllowViolations bool                `toml:"allow_violations"`
	Exclude         []string            `toml:"exclude,omitempty"`
	Allowlist       map[string][]string `toml:"allowlist,omitempty"`
}

type file struct {
	Profile []*Profile `toml:"profile"`
}

var namePattern = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,63}$`)

// NameKey is a profile name as Placement's trait grammar (^[A-Z0-9_]+$)
// spells it: upper case, with "_" for "-" (and for any other character
// outside the grammar, which a valid name does not have). Two profiles
// whose names have the same key would share one Placement trait
// (CUSTOM_TRUSTPOOL_PROFILE_<key>), so they cannot coexist: "gold-v2" and
// "gold_v2" are one name.
func NameKey(name string) string {
	b := []byte(strings.ToUpper(name))
	for i, c := range b {
		if (c < 'A' || c > 'Z') && (c < '0' || c > '9') {
			b[i] = '_'
		}
	}
	return string(b)
}

// reservedNames are the REST routes beside /v1/profiles/{name}: a profile
// with one of these names could be created but never shown or deleted.
var reservedNames = []string{"export", "import", "learn"}

// Parse reads profiles from TOML and validates them.
func Parse(data []byte) ([]*Profile, error) {
	// Check the value types first: toml's own type errors name Go types.
	var raw map[string]any
	if _, err := toml.Decode(string(data), &raw); err != nil {
		return nil, fmt.Errorf("parse profiles: %w: %w", ErrInvalid, err)
	}
	if err := checkShape(raw, reflect.TypeFor[file](), ""); err != nil {
		return nil, fmt.Errorf("parse profiles: %w", err)
	}
	var f file
	md, err := toml.Decode(string(data), &f)
	if err != nil {
		return nil, fmt.Errorf("parse profiles: %w: %w", ErrInvalid, err)
	}
	if und := md.Undecoded(); len(und) > 0 {
		keys := make([]string, len(und))
		for i, k := range und {
			keys[i] = k.String()
		}
		return nil, fmt.Errorf("parse profiles: %w: unknown keys %s", ErrInvalid, strings.Join(keys, ", "))
	}
	seen := map[string]string{} // NameKey → name
	var errs []error
	for _, p := range f.Profile {
		if err := p.Validate(); err != nil {
			errs = append(errs, err)
		}
		switch other, ok := seen[NameKey(p.Name)]; {
		case ok && other == p.Name:
			errs = append(errs, fmt.Errorf("%w: duplicate profile %q", ErrInvalid, p.Name))
		case ok:
			errs = append(errs, fmt.Errorf("%w: profiles %q and %q are one name (both are %s in Placement's trait names)", ErrInvalid, other, p.Name, NameKey(p.Name)))
		}
		seen[NameKey(p.Name)] = p.Name
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("parse profiles: %w", err)
	}
	return f.Profile, nil
}

// Marshal writes profiles in the file format.
func Marshal(ps []*Profile) ([]byte, error) {
	var b bytes.Buffer
	if err := toml.NewEncoder(&b).Encode(file{Profile: ps}); err != nil {
		return nil, fmt.Errorf("marshal profiles: %w", err)
	}
	return b.Bytes(), nil
}

// Validate checks names, PCR indices and value formats, and that the
// profile has at least one rule.
func (p *Profile) Validate() error {
	var errs []error
	bad := func(format string, a ...any) {
		errs = append(errs, fmt.Errorf("%w: profile %q: %s", ErrInvalid, p.Name, fmt.Sprintf(format, a...)))
	}
	if !namePattern.MatchString(p.Name) {
		bad("name must match %s", namePattern)
	}
	if slices.Contains(reservedNames, p.Name) {
		bad("name is reserved (it is a path of the profiles API: %s)", strings.Join(reservedNames, ", "))
	}
	for k, vs := range p.PCRs {
		i, err := strconv.Atoi(k)
		if err != nil || i < 0 || i > 23 || strconv.Itoa(i) != k {
			bad("pcrs: %q is not a PCR index 0-23", k)
		}
		if len(vs) == 0 {
			bad("pcrs.%s: no accepted values", k)
		}
		for _, v := range vs {
			if b, err := hex.DecodeString(v); err != nil || len(b) != 32 || v != strings.ToLower(v) {
				bad("pcrs.%s: %q is not a lowercase SHA-256 hex value", k, v)
			}
		}
	}
	for k, vs := range p.Facts {
		if len(vs) == 0 {
			bad("facts.%s: no accepted values", k)
		}
	}
	if p.IMA != nil {
		for _, e := range p.IMA.Exclude {
			if _, err := path.Match(e, "/"); err != nil {
				bad("ima.exclude: %q: %v", e, err)
			}
		}
		for f, ds := range p.IMA.Allowlist {
			for _, d := range ds {
				alg, h, ok := strings.Cut(d, ":")
				if _, err := hex.DecodeString(h); !ok || alg == "" || err != nil {
					bad("ima.allowlist.%q: %q is not alg:hex", f, d)
				}
			}
		}
	}
	if len(p.PCRs) == 0 && len(p.Facts) == 0 && p.IMA == nil {
		errs = append(errs, fmt.Errorf("%w: profile %q", ErrEmptyProfile, p.Name))
	}
	return errors.Join(errs...)
}

// Input is verified evidence to evaluate.
type Input struct {
	// PCRs are quoted SHA-256 values.
	PCRs map[int][]byte
	// Boot are facts from the verified event log (nil when none).
	Boot *eventlog.BootFacts
	// IMA are the IMA entries verified in this round.
	IMA []eventlog.IMAEntry
}

// Result is the outcome of one profile evaluation.
type Result struct {
	Profile string `json:"profile"`
	// Version is the profile version evaluated (0: not set by Evaluate;
	// callers that evaluate a profile's versions name the one that
	// matched, or the one that failed).
	Version int      `json:"version,omitempty"`
	Pass    bool     `json:"pass"`
	Reasons []string `json:"reasons,omitempty"`
	// IMAReasons are the Reasons caused by IMA entries. A measured file
	// stays measured until reboot, so callers keep these failures for the
	// rest of the boot even when later rounds only send newer entries.
	IMAReasons []string `json:"ima_reasons,omitempty"`
}

func short(s string) string {
	if len(s) > 16 {
		return s[:16] + "…"
	}
	return s
}

// Evaluate checks in against every rule of p and reports every failure.
func (p *Profile) Evaluate(in Input) Result {
	r := Result{Profile: p.Name}
	fail := func(format string, a ...any) { r.Reasons = append(r.Reasons, fmt.Sprintf(format, a...)) }
	imaFail := func(format string, a ...any) {
		fail(format, a...)
		r.IMAReasons = append(r.IMAReasons, r.Reasons[len(r.Reasons)-1])
	}
	if err := p.Validate(); err != nil {
		fail("invalid profile: %v", err)
		return r
	}
	for _, k := range slices.Sorted(maps.Keys(p.PCRs)) {
		i, _ := strconv.Atoi(k)
		v, ok := in.PCRs[i]
		if !ok {
			fail("pcr %d: not quoted", i)
			continue
		}
		if h := hex.EncodeToString(v); !slices.Contains(p.PCRs[k], h) {
			fail("pcr %d: value %s not accepted", i, short(h))
		}
	}
	var facts map[string]string
	if in.Boot != nil {
		facts = in.Boot.Map()
	}
	for _, k := range slices.Sorted(maps.Keys(p.Facts)) {
		v, ok := facts[k]
		if why, withheld := withheld(in.Boot, k); withheld {
			fail("fact %s: not established: %s", k, why)
			continue
		}
		if !ok {
			fail("fact %s: missing", k)
			continue
		}
		if !slices.Contains(p.Facts[k], v) {
			fail("fact %s: value %q not accepted", k, short(v))
		}
	}
	if p.IMA != nil {
		for i := range in.IMA {
			e := &in.IMA[i]
			path := e.Path()
			if e.Violation() {
				if !p.IMA.AllowViolations {
					imaFail("ima: measurement violation on %s", path)
				}
				continue
			}
			if isBootAggregate(e) || p.IMA.excluded(path) {
				continue
			}
			ds, ok := p.IMA.Allowlist[path]
			if !ok {
				imaFail("ima: %s not in allowlist", path)
				continue
			}
			if d := e.FileDigestHex(); !slices.Contains(ds, d) {
				imaFail("ima: %s digest %s not accepted", path, short(d))
			}
		}
	}
	r.Pass = len(r.Reasons) == 0
	return r
}

// withheld returns why boot fact k is not established, if the facts say so.
func withheld(b *eventlog.BootFacts, k string) (string, bool) {
	if b == nil {
		return "", false
	}
	why, ok := b.Withheld[k]
	return why, ok
}

// isBootAggregate reports whether e is the list's boot_aggregate: only the
// first entry since boot can be (evidence.Verify checked it against the
// quoted boot PCRs); a later entry of that name is an ordinary file.
func isBootAggregate(e *eventlog.IMAEntry) bool {
	return e.Seq() == 0 && e.Path() == "boot_aggregate"
}

func (r *IMARules) excluded(p string) bool {
	for _, e := range r.Exclude {
		if strings.HasSuffix(e, "/") && strings.HasPrefix(p, e) {
			return true
		}
		if ok, _ := path.Match(e, p); ok {
			return true
		}
	}
	return false
}

// LearnOptions select what [Learn] pins.
type LearnOptions struct {
	// PCRs to pin; nil means 0-7 (firmware, its configuration, boot
	// applications and Secure Boot policy).
	PCRs []int
	// Facts to pin; nil means secure_boot, bootloader, kernel, initrd and
	// kernel_cmdline.
	Facts []string
	// SkipFactPCRs stops Learn from also pinning the PCRs the learned
	// facts are read from. GRUB's facts (kernel, initrd, their paths and
	// the command line) are then not trustworthy (see package eventlog);
	// Learned.Warnings says so.
	SkipFactPCRs bool
	// IMA builds an allowlist from the IMA entries.
	IMA bool
	// IMAExclude is copied into the learned IMA rules.
	IMAExclude []string
}

// Learned is what [Learn] built and why.
type Learned struct {
	Profile *Profile `json:"profile"`
	// FactPCRs lists, for each PCR pinned because learned facts are read
	// from its events, those facts (eventlog.FactPCRs).
	FactPCRs map[int][]string `json:"fact_pcrs,omitempty"`
	// AddedPCRs are the PCRs of FactPCRs that LearnOptions.PCRs did not
	// ask for: Learn pinned them for the facts.
	AddedPCRs []int `json:"added_pcrs,omitempty"`
	// Warnings name learned facts that are not trustworthy because the
	// PCRs they need are not pinned (SkipFactPCRs).
	Warnings []string `json:"warnings,omitempty"`
}

// Learn builds a profile from one verified host: its current values become
// the only accepted ones. By default it also pins every PCR whose events a
// learned fact is read from (PCRs 8 and 9 for the kernel and command line
// facts): facts are only as trustworthy as those PCRs make them (see
// package eventlog), and the result says which PCRs it added for which
// facts. A fact or PCR the host does not have is an error (a profile must
// not silently pin less than asked).
func Learn(name string, in Input, o LearnOptions) (*Learned, error) {
	pcrs := o.PCRs
	if pcrs == nil {
		pcrs = []int{0, 1, 2, 3, 4, 5, 6, 7}
	}
	factNames := o.Facts
	if factNames == nil {
		factNames = []string{eventlog.FactSecureBoot, eventlog.FactBootloader, eventlog.FactKernel, eventlog.FactInitrd, eventlog.FactKernelCmdline}
	}
	res := &Learned{FactPCRs: map[int][]string{}}
	needPin := map[int][]string{}
	for _, f := range factNames {
		fp, mustPin := eventlog.FactPCRs(f)
		for _, i := range fp {
			res.FactPCRs[i] = append(res.FactPCRs[i], f)
			if mustPin {
				needPin[i] = append(needPin[i], f)
			}
		}
	}
	pinned := slices.Clone(pcrs)
	for _, i := range slices.Sorted(maps.Keys(res.FactPCRs)) {
		switch {
		case slices.Contains(pinned, i):
		case o.SkipFactPCRs:
			delete(res.FactPCRs, i)
			if fs := needPin[i]; len(fs) > 0 {
				res.Warnings = append(res.Warnings, fmt.Sprintf("PCR %d not pinned: facts %s are not trustworthy without it", i, strings.Join(fs, ", ")))
			}
		default:
			pinned = append(pinned, i)
			res.AddedPCRs = append(res.AddedPCRs, i)
		}
	}
	p := &Profile{Name: name, PCRs: map[string][]string{}, Facts: map[string][]string{}}
	var errs []error
	for _, i := range pinned {
		v, ok := in.PCRs[i]
		if !ok {
			errs = append(errs, fmt.Errorf("%w: learn %q: PCR %d not quoted", ErrInvalid, name, i))
			continue
		}
		p.PCRs[strconv.Itoa(i)] = []string{hex.EncodeToString(v)}
	}
	var facts map[string]string
	if in.Boot != nil {
		facts = in.Boot.Map()
	}
	for _, f := range factNames {
		v, ok := facts[f]
		if why, withheld := withheld(in.Boot, f); withheld {
			errs = append(errs, fmt.Errorf("%w: learn %q: host's fact %s is not established: %s", ErrInvalid, name, f, why))
			continue
		}
		if !ok {
			errs = append(errs, fmt.Errorf("%w: learn %q: host has no fact %s", ErrInvalid, name, f))
			continue
		}
		p.Facts[f] = []string{v}
	}
	if o.IMA {
		p.IMA = &IMARules{Exclude: slices.Clone(o.IMAExclude), Allowlist: map[string][]string{}}
		for i := range in.IMA {
			e := &in.IMA[i]
			path := e.Path()
			if e.Violation() || isBootAggregate(e) || p.IMA.excluded(path) {
				continue
			}
			if d := e.FileDigestHex(); !slices.Contains(p.IMA.Allowlist[path], d) {
				p.IMA.Allowlist[path] = append(p.IMA.Allowlist[path], d)
			}
		}
	}
	if len(p.PCRs) == 0 {
		p.PCRs = nil
	}
	if len(p.Facts) == 0 {
		p.Facts = nil
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if err := p.Validate(); err != nil {
		return nil, err
	}
	if len(res.FactPCRs) == 0 {
		res.FactPCRs = nil
	}
	res.Profile = p
	return res, nil
}

// Merge adds other's accepted values to p (rollouts: learn the new build
// on one host and merge it into the profile). Items only one side pins
// are kept as they are.
func (p *Profile) Merge(other *Profile) {
	merge := func(dst *map[string][]string, src map[string][]string) {
		if len(src) == 0 {
			return
		}
		if *dst == nil {
			*dst = map[string][]string{}
		}
		for k, vs := range src {
			for _, v := range vs {
				if !slices.Contains((*dst)[k], v) {
					(*dst)[k] = append((*dst)[k], v)
				}
			}
		}
	}
	merge(&p.PCRs, other.PCRs)
	merge(&p.Facts, other.Facts)
	if other.IMA != nil {
		if p.IMA == nil {
			p.IMA = &IMARules{AllowViolations: other.IMA.AllowViolations}
		}
		merge(&p.IMA.Allowlist, other.IMA.Allowlist)
		for _, e := range other.IMA.Exclude {
			if !slices.Contains(p.IMA.Exclude, e) {
				p.IMA.Exclude = append(p.IMA.Exclude, e)
			}
		}
	}
}

// checkShape reports the first value in v (a TOML document decoded into
// generic values) whose type does not fit t, the Go type it will be decoded
// into, in TOML terms. Keys t does not have are left to the decoder's
// undecoded-keys check.
func checkShape(v any, t reflect.Type, path string) error {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	fail := func() error {
		where := path
		if where == "" {
			where = "document"
		}
		return fmt.Errorf("%w: %s: want %s, got %s", ErrInvalid, where, tomlWant(t), tomlGot(v))
	}
	switch t.Kind() {
	case reflect.String:
		if _, ok := v.(string); !ok {
			return fail()
		}
	case reflect.Bool:
		if _, ok := v.(bool); !ok {
			return fail()
		}
	case reflect.Slice:
		rv := reflect.ValueOf(v)
		if rv.Kind() != reflect.Slice {
			return fail()
		}
		for i := range rv.Len() {
			if err := checkShape(rv.Index(i).Interface(), t.Elem(), fmt.Sprintf("%s[%d]", path, i)); err != nil {
				return err
			}
		}
	case reflect.Map:
		m, ok := v.(map[string]any)
		if !ok {
			return fail()
		}
		for _, k := range slices.Sorted(maps.Keys(m)) {
			if err := checkShape(m[k], t.Elem(), joinKey(path, k)); err != nil {
				return err
			}
		}
	case reflect.Struct:
		m, ok := v.(map[string]any)
		if !ok {
			return fail()
		}
		for i := range t.NumField() {
			name, _, _ := strings.Cut(t.Field(i).Tag.Get("toml"), ",")
			if e, ok := m[name]; ok && name != "" {
				if err := checkShape(e, t.Field(i).Type, joinKey(path, name)); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

var bareKey = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)

func joinKey(path, k string) string {
	if !bareKey.MatchString(k) {
		k = strconv.Quote(k)
	}
	if path == "" {
		return k
	}
	return path + "." + k
}

func tomlWant(t reflect.Type) string {
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "a boolean"
	case reflect.Slice:
		e := t.Elem()
		for e.Kind() == reflect.Pointer {
			e = e.Elem()
		}
		if e.Kind() == reflect.Struct {
			return "an array of tables"
		}
		return "an array of " + strings.TrimPrefix(tomlWant(e), "a ") + "s"
	case reflect.Map, reflect.Struct:
		return "a table"
	}
	return "another type"
}

func tomlGot(v any) string {
	switch v.(type) {
	case string:
		return "a string"
	case bool:
		return "a boolean"
	case int64:
		return "an integer"
	case float64:
		return "a float"
	case map[string]any:
		return "a table"
	case []any, []map[string]any:
		return "an array"
	}
	return "a date or time"
}
