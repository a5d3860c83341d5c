package policy

import (
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

var (
	// ErrInvalidDefault reports a RuleDefault that cannot be registered.
	ErrInvalidDefault = errors.New("invalid policy default")
	// ErrNotRegistered is returned by Authorize for a rule that has no registered default.
	ErrNotRegistered = errors.New("policy rule not registered")
	// ErrInvalidFile reports a policy file that cannot be loaded; Enforce denies with this
	// error until the file is fixed.
	ErrInvalidFile = errors.New("invalid policy file")
)

// Operation is one API call a rule protects (for the sample file).
type Operation struct {
	Method string
	Path   string
}

// DeprecatedRule names the rule a RuleDefault replaces.
type DeprecatedRule struct {
	Name             string
	CheckStr         string
	DeprecatedReason string
	DeprecatedSince  string
}

// RuleDefault is a rule defined in code, like oslo.policy's DocumentedRuleDefault.
type RuleDefault struct {
	Name        string
	CheckStr    string
	Description string
	Operations  []Operation
	// ScopeTypes lists the token scopes ("system", "domain", "project") the operation is
	// meant for; empty means any.
	ScopeTypes []string
	// DeprecatedRule is the old name and check string this rule replaces. Unless
	// [oslo_policy] enforce_new_defaults is set, the old check string is OR'ed with the
	// new one (and an override of the old name in the policy file is honoured).
	DeprecatedRule       *DeprecatedRule
	DeprecatedForRemoval bool
	DeprecatedReason     string
	DeprecatedSince      string
}

// Options are the [oslo_policy] options.
type Options struct {
	// EnforceScope denies a rule whose ScopeTypes do not include the token's scope.
	EnforceScope bool `toml:"enforce_scope"`
	// EnforceNewDefaults drops deprecated check strings instead of OR'ing them in.
	EnforceNewDefaults bool `toml:"enforce_new_defaults"`
	// PolicyFile is the YAML (or JSON) file of rule overrides. A relative path is
	// resolved against Config.BaseDir. A missing file means no overrides.
	PolicyFile string `toml:"policy_file"`
	// PolicyDefaultRule names the rule used for rule names that are not defined.
	PolicyDefaultRule string `toml:"policy_default_rule"`
}

// DefaultOptions returns oslo.policy's defaults, with the policy file named policy.yaml
// as OpenStack services configure it.
func DefaultOptions() Options {
	return Options{PolicyFile: "policy.yaml", PolicyDefaultRule: "default"}
}

// ScopeMismatch describes a rule enforced with a token of a scope it is not meant for.
type ScopeMismatch struct {
	Rule       string
	ScopeTypes []string
	TokenScope string
	Enforced   bool // the request was denied because of it (enforce_scope is on)
}

// Config configures an Enforcer.
type Config struct {
	Options  Options
	Defaults []RuleDefault
	// BaseDir resolves a relative Options.PolicyFile (the directory of the service's
	// configuration file).
	BaseDir string
	// OnScopeMismatch, when set, is called for every scope mismatch (oslo.policy warns).
	OnScopeMismatch func(ScopeMismatch)
}

// Enforcer evaluates rules: defaults registered in code, overridden by the policy file,
// which is re-read when it changes (checked on every Enforce, like oslo.policy).
// It is safe for concurrent use.
type Enforcer struct {
	opts       Options
	path       string
	registered map[string]RuleDefault
	order      []string
	parsedDefs map[string]*Rule
	parsedDeps map[string]*Rule
	onScope    func(ScopeMismatch)

	mu       sync.Mutex // serializes reloads
	seenFile bool       // the policy file existed at some load (guarded by mu)
	snap     atomic.Pointer[snapshot]
}

type fileStamp struct {
	exists  bool
	modTime time.Time
	size    int64
}

type snapshot struct {
	rules    map[string]check
	sources  map[string]*Rule // effective rules, for Rules()
	stamp    fileStamp
	loadErr  error
	problems []error
}

// New builds an Enforcer and loads the policy file if it exists. It fails when a default
// is invalid or the existing policy file cannot be loaded.
func New(cfg Config) (*Enforcer, error) {
	e := &Enforcer{
		opts:       cfg.Options,
		registered: map[string]RuleDefault{},
		parsedDefs: map[string]*Rule{},
		parsedDeps: map[string]*Rule{},
		onScope:    cfg.OnScopeMismatch,
	}
	if p := cfg.Options.PolicyFile; p != "" {
		if !filepath.IsAbs(p) && cfg.BaseDir != "" {
			p = filepath.Join(cfg.BaseDir, p)
		}
		e.path = p
	}
	var errs []error
	for _, d := range cfg.Defaults {
		if err := e.register(d); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if err := e.Reload(); err != nil {
		return nil, err
	}
	return e, nil
}

func (e *Enforcer) register(d RuleDefault) error {
	if d.Name == "" {
		return fmt.Errorf("rule without a name: %w", ErrInvalidDefault)
	}
	if _, dup := e.registered[d.Name]; dup {
		return fmt.Errorf("rule %q registered twice: %w", d.Name, ErrInvalidDefault)
	}
	if d.Description == "" {
		return fmt.Errorf("rule %q has no description: %w", d.Name, ErrInvalidDefault)
	}
	for i, s := range d.ScopeTypes {
		if slices.Contains(d.ScopeTypes[:i], s) {
			return fmt.Errorf("rule %q: scope_types must be unique: %w", d.Name, ErrInvalidDefault)
		}
	}
	if d.DeprecatedForRemoval && (d.DeprecatedReason == "" || d.DeprecatedSince == "") {
		return fmt.Errorf("rule %q deprecated for removal without reason and release: %w", d.Name, ErrInvalidDefault)
	}
	r, err := Parse(d.CheckStr)
	if err != nil {
		return fmt.Errorf("rule %q: %w: %w", d.Name, ErrInvalidDefault, err)
	}
	e.parsedDefs[d.Name] = r
	if d.DeprecatedRule != nil {
		dr, err := Parse(d.DeprecatedRule.CheckStr)
		if err != nil {
			return fmt.Errorf("deprecated rule %q of %q: %w: %w", d.DeprecatedRule.Name, d.Name, ErrInvalidDefault, err)
		}
		e.parsedDeps[d.Name] = dr
	}
	e.registered[d.Name] = d
	e.order = append(e.order, d.Name)
	return nil
}

// Defaults returns the registered defaults in registration order.
func (e *Enforcer) Defaults() []RuleDefault {
	out := make([]RuleDefault, 0, len(e.order))
	for _, n := range e.order {
		out = append(out, e.registered[n])
	}
	return out
}

// PolicyFile returns the resolved path of the policy file ("" when none is configured).
func (e *Enforcer) PolicyFile() string { return e.path }

func (e *Enforcer) stat() (fileStamp, error) {
	if e.path == "" {
		return fileStamp{}, nil
	}
	fi, err := os.Stat(e.path)
	if errors.Is(err, fs.ErrNotExist) {
		return fileStamp{}, nil
	}
	if err != nil {
		return fileStamp{}, fmt.Errorf("stat policy file: %w: %w", ErrInvalidFile, err)
	}
	return fileStamp{exists: true, modTime: fi.ModTime(), size: fi.Size()}, nil
}

// Reload re-reads the policy file now. It returns the load error, if any; Enforce denies
// with that error until a later load succeeds.
func (e *Enforcer) Reload() error {
	return e.refresh(true).loadErr
}

// current returns the snapshot, reloading it when the file changed.
func (e *Enforcer) current() *snapshot {
	if s := e.snap.Load(); s != nil {
		if stamp, err := e.stat(); err == nil && stamp == s.stamp {
			return s
		}
	}
	return e.refresh(false)
}

func (e *Enforcer) refresh(force bool) *snapshot {
	e.mu.Lock()
	defer e.mu.Unlock()
	stamp, err := e.stat()
	old := e.snap.Load()
	if !force && old != nil && err == nil && stamp == old.stamp {
		return old
	}
	var s *snapshot
	switch {
	case err != nil:
		s = &snapshot{loadErr: err, stamp: fileStamp{exists: true}}
	case !stamp.exists && e.seenFile:
		// oslo.policy raises on every enforce once a loaded policy file has disappeared.
		s = &snapshot{stamp: stamp, loadErr: fmt.Errorf("policy file %s disappeared: %w", e.path, ErrInvalidFile)}
	default:
		s = e.load(stamp)
		if stamp.exists {
			e.seenFile = true
		}
	}
	e.snap.Store(s)
	return s
}

// load builds the effective rule set: file rules, then defaults for names the file does
// not define (with oslo.policy's handling of deprecated rules).
func (e *Enforcer) load(stamp fileStamp) *snapshot {
	s := &snapshot{stamp: stamp}
	fileRules := map[string]*Rule{}
	if stamp.exists {
		data, err := os.ReadFile(e.path)
		if err != nil {
			s.loadErr = fmt.Errorf("read policy file: %w: %w", ErrInvalidFile, err)
			return s
		}
		fr, problems, err := ParseFile(data)
		if err != nil {
			s.loadErr = fmt.Errorf("load %s: %w", e.path, err)
			return s
		}
		fileRules, s.problems = fr, problems
	}
	s.sources = maps.Clone(fileRules)
	for _, name := range e.order {
		if _, ok := s.sources[name]; ok {
			continue
		}
		s.sources[name] = e.withDeprecated(name, fileRules)
	}
	s.rules = make(map[string]check, len(s.sources))
	for n, r := range s.sources {
		s.rules[n] = r.root
	}
	return s
}

// withDeprecated is oslo.policy's Enforcer._handle_deprecated_rule.
func (e *Enforcer) withDeprecated(name string, fileRules map[string]*Rule) *Rule {
	d := e.registered[name]
	def := e.parsedDefs[name]
	if d.DeprecatedRule == nil {
		return def
	}
	dep := d.DeprecatedRule
	_, newInFile := fileRules[name]
	if dep.Name != name {
		if fr, ok := fileRules[dep.Name]; ok && fr.String() != "rule:"+name && !newInFile {
			return fr
		}
	}
	if !e.opts.EnforceNewDefaults && dep.CheckStr != d.CheckStr && !newInFile {
		return &Rule{root: &orCheck{rules: []check{def.root, e.parsedDeps[name].root}}}
	}
	return def
}

// Problems returns what the last load of the policy file would have made oslo.policy log
// (rules it did not understand and replaced by a denial, ignored non-string keys).
func (e *Enforcer) Problems() []error {
	return slices.Clone(e.current().problems)
}

// Rules returns the effective rules in oslo.policy's canonical string form.
func (e *Enforcer) Rules() (map[string]string, error) {
	s := e.current()
	if s.loadErr != nil {
		return nil, s.loadErr
	}
	out := make(map[string]string, len(s.sources))
	for n, r := range s.sources {
		out[n] = r.String()
	}
	return out, nil
}

// CheckRules reports rules that reference undefined rules and rules that are part of a
// reference cycle, as oslo.policy's check_rules does.
func (e *Enforcer) CheckRules() (undefined, cyclic []string, err error) {
	s := e.current()
	if s.loadErr != nil {
		return nil, nil, s.loadErr
	}
	for _, n := range slices.Sorted(maps.Keys(s.rules)) {
		c := s.rules[n]
		if hasUndefined(c, s.rules) {
			undefined = append(undefined, n)
		}
		if hasCycle(c, s.rules, nil) {
			cyclic = append(cyclic, n)
		}
	}
	return undefined, cyclic, nil
}

func hasUndefined(c check, rules map[string]check) bool {
	switch x := c.(type) {
	case *ruleCheck:
		_, ok := rules[x.match]
		return !ok
	case *andCheck:
		return slices.ContainsFunc(x.rules, func(r check) bool { return hasUndefined(r, rules) })
	case *orCheck:
		return slices.ContainsFunc(x.rules, func(r check) bool { return hasUndefined(r, rules) })
	}
	return false
}

func hasCycle(c check, rules map[string]check, seen []string) bool {
	switch x := c.(type) {
	case *ruleCheck:
		if slices.Contains(seen, x.match) {
			return true
		}
		seen = append(slices.Clone(seen), x.match)
		if r, ok := rules[x.match]; ok {
			return hasCycle(r, rules, seen)
		}
	case *andCheck:
		return slices.ContainsFunc(x.rules, func(r check) bool { return hasCycle(r, rules, seen) })
	case *orCheck:
		return slices.ContainsFunc(x.rules, func(r check) bool { return hasCycle(r, rules, seen) })
	}
	return false
}

// Enforce evaluates rule for the target (attributes of the object acted on; flat keys:
// "%(target.project.id)s" looks up the key "target.project.id") and the credentials
// (oslo.context's policy values: "roles", "project_id", "user_id", "system_scope", ...).
// A nil error with false means denied. A non-nil error always comes with false: the rule
// could not be evaluated (see ErrEvaluation, ErrUnsupportedCheck, ErrInvalidFile).
//
// As in oslo.policy, an undefined rule name falls back to the rule named by
// policy_default_rule when that exists, and fails otherwise; a registered rule whose
// scope_types exclude the token's scope is denied when enforce_scope is on.
func (e *Enforcer) Enforce(rule string, target, creds map[string]any) (bool, error) {
	s := e.current()
	if s.loadErr != nil {
		return false, s.loadErr
	}
	if target == nil {
		target = map[string]any{}
	}
	if creds == nil {
		creds = map[string]any{}
	}
	if v, ok := creds["system_scope"]; ok && pyTruthy(v) {
		c := maps.Clone(creds)
		c["system"] = v
		creds = c
	}
	if len(s.rules) == 0 {
		return false, nil
	}
	lookup := func(name string) (check, bool) {
		if c, ok := s.rules[name]; ok {
			return c, true
		}
		if e.opts.PolicyDefaultRule != "" {
			if c, ok := s.rules[e.opts.PolicyDefaultRule]; ok {
				return c, true
			}
		}
		return nil, false
	}
	root, ok := lookup(rule)
	if !ok {
		return false, nil
	}
	if d, ok := e.registered[rule]; ok && len(d.ScopeTypes) > 0 {
		scope := tokenScope(creds)
		if !slices.Contains(d.ScopeTypes, scope) {
			if e.onScope != nil {
				e.onScope(ScopeMismatch{Rule: rule, ScopeTypes: slices.Clone(d.ScopeTypes), TokenScope: scope, Enforced: e.opts.EnforceScope})
			}
			if e.opts.EnforceScope {
				return false, nil
			}
		}
	}
	ev := &evaluation{lookup: lookup}
	ok, err := root.eval(ev, target, creds)
	if err != nil {
		return false, fmt.Errorf("enforce %q: %w", rule, err)
	}
	return ok, nil
}

// Authorize is Enforce for registered rules only: an unregistered name is a programming
// error reported as ErrNotRegistered.
func (e *Enforcer) Authorize(rule string, target, creds map[string]any) (bool, error) {
	if _, ok := e.registered[rule]; !ok {
		return false, fmt.Errorf("authorize %q: %w", rule, ErrNotRegistered)
	}
	return e.Enforce(rule, target, creds)
}

func tokenScope(creds map[string]any) string {
	switch {
	case pyTruthy(creds["system"]):
		return "system"
	case pyTruthy(creds["domain_id"]):
		return "domain"
	}
	return "project"
}
