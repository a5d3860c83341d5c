package commands

import (
	"context"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/trustpool/trustpool/cli/internal/output"
	"github.com/trustpool/trustpool/internal/attestapi"
	"github.com/trustpool/trustpool/internal/attestclient"
	"github.com/trustpool/trustpool/internal/policy"
)

func (c *CLI) profileCommand() *cobra.Command {
	g := c.groupCommand("profile", "Attestation profiles: reference values hosts are appraised against")
	g.AddCommand(c.profileList(), c.profileShow(), c.profileCreate(), c.profileUpdate(), c.profileDelete(),
		c.profileImport(), c.profileExport(), c.profileLearn(), c.profileVersionCommand())
	return g
}

func pcrIndexes(p attestapi.Profile) []string {
	idx := make([]string, 0, len(p.PCRs))
	for k := range p.PCRs {
		idx = append(idx, k)
	}
	slices.SortFunc(idx, func(a, b string) int {
		ia, _ := strconv.Atoi(a)
		ib, _ := strconv.Atoi(b)
		return ia - ib
	})
	return idx
}

func factNames(p attestapi.Profile) []string {
	names := make([]string, 0, len(p.Facts))
	for k := range p.Facts {
		names = append(names, k)
	}
	slices.Sort(names)
	return names
}

func (c *CLI) profileList() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List profiles: which PCRs and boot facts each checks, and whether it appraises IMA",
		Args:  cobra.NoArgs,
	}
	of := listFlags(cmd, true)
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		cl, err := c.client(cmd.Context(), true)
		if err != nil {
			return err
		}
		ps, err := cl.ListProfiles(cmd.Context())
		if err != nil {
			return err
		}
		l := output.List{Columns: []output.Column{{Name: "Name"}, {Name: "Description"}, {Name: "PCRs"}, {Name: "Facts"},
			{Name: "IMA"}, {Name: "Version", Long: true}, {Name: "Updated At", Long: true}}}
		for _, pb := range ps {
			p := pb.Profile
			var v any // a service from before the flat views named it: empty
			if pb.Version != 0 {
				v = pb.Version
			}
			l.Rows = append(l.Rows, []any{p.Name, p.Description, pcrIndexes(p), factNames(p), p.IMA != nil, v, pb.UpdatedAt})
		}
		return c.writeList(of, l)
	}
	return cmd
}

func profileRecord(pb attestapi.ProfileBody) output.Record {
	p := pb.Profile
	r := output.Record{
		Fields: []output.Column{{Name: "name"}, {Name: "description"}, {Name: "pcrs"}, {Name: "facts"}},
		Values: []any{p.Name, p.Description, p.PCRs, p.Facts},
	}
	if p.IMA != nil {
		r.Fields = append(r.Fields, output.Column{Name: "ima_allow_violations"}, output.Column{Name: "ima_exclude"},
			output.Column{Name: "ima_allowlist"})
		r.Values = append(r.Values, p.IMA.AllowViolations, p.IMA.Exclude, p.IMA.Allowlist)
	}
	if pb.UpdatedAt != nil {
		r.Fields = append(r.Fields, output.Column{Name: "updated_at"})
		r.Values = append(r.Values, pb.UpdatedAt)
	}
	if pb.Version != 0 {
		// In a show, the latest approved version, whose document this is.
		r.Fields = append(r.Fields, output.Column{Name: "version"})
		r.Values = append(r.Values, pb.Version)
	}
	return r
}

// profileWriteRecord is the record of a profile write's answer: the
// profile, the approved version now holding it, the version the write
// retired (empty: none), and whether nothing changed.
func profileWriteRecord(pb attestapi.ProfileBody) output.Record {
	r := profileRecord(pb)
	if pb.Version == 0 {
		return r
	}
	var ret any
	if pb.RetiredVersion != 0 {
		ret = pb.RetiredVersion
	}
	r.Fields = append(r.Fields, output.Column{Name: "retired_version"}, output.Column{Name: "unchanged"})
	r.Values = append(r.Values, ret, pb.Unchanged)
	return r
}

// learnedRecord is a learned profile with what was pinned for its facts.
func learnedRecord(l attestapi.Learned) output.Record {
	r := profileWriteRecord(attestapi.ProfileBody{Profile: l.Profile, UpdatedAt: l.UpdatedAt,
		Version: l.Version, RetiredVersion: l.RetiredVersion, Unchanged: l.Unchanged})
	r.Fields = append(r.Fields, output.Column{Name: "fact_pcrs"}, output.Column{Name: "added_pcrs"})
	r.Values = append(r.Values, l.FactPCRs, output.Formatted{Text: joinInts(l.AddedPCRs), Value: l.AddedPCRs})
	if len(l.Warnings) > 0 {
		r.Fields = append(r.Fields, output.Column{Name: "warnings"})
		r.Values = append(r.Values, l.Warnings)
	}
	return r
}

func joinInts(is []int) string {
	s := make([]string, len(is))
	for i, n := range is {
		s[i] = strconv.Itoa(n)
	}
	return strings.Join(s, ", ")
}

// warn prints the service's warnings on stderr, one per line.
func (c *CLI) warn(ws []string) {
	for _, w := range ws {
		fmt.Fprintf(c.cfg.Stderr, "%s: warning: %s\n", Name, w)
	}
}

func (c *CLI) profileShow() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "show NAME",
		Short: "Show a profile's reference values",
		Args:  cobra.ExactArgs(1),
	}
	of := showFlags(cmd)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		cl, err := c.client(cmd.Context(), true)
		if err != nil {
			return err
		}
		pb, err := cl.GetProfile(cmd.Context(), args[0])
		if err != nil {
			return err
		}
		return c.writeRecord(of, profileRecord(pb))
	}
	return cmd
}

// profileFlags describe a profile on the command line.
type profileFlags struct {
	file        string
	description string
	pcrs        []string
	facts       []string
}

func (pf *profileFlags) add(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringVar(&pf.file, "from-file", "", "read the profile from a profile file (TOML, one [[profile]]; - for stdin)")
	f.StringVar(&pf.description, "description", "", "what the profile is for")
	f.StringArrayVar(&pf.pcrs, "pcr", nil, "INDEX=SHA256[,SHA256...]: accepted values of a PCR (repeatable)")
	f.StringArrayVar(&pf.facts, "fact", nil, "NAME=VALUE: an accepted value of a boot fact (repeatable; repeat a name for more values)")
	cmd.MarkFlagsMutuallyExclusive("from-file", "pcr")
	cmd.MarkFlagsMutuallyExclusive("from-file", "fact")
}

// profile builds the profile from the file or the flags and checks it with
// the service's rules (policy.Profile.Validate) before anything is sent.
func (c *CLI) profile(pf *profileFlags, args []string) (attestapi.Profile, error) {
	var p attestapi.Profile
	if pf.file != "" {
		b, err := c.readInput(pf.file)
		if err != nil {
			return p, err
		}
		ps, err := policy.Parse(b)
		if err != nil {
			return p, fmt.Errorf("%s: %w", pf.file, err)
		}
		if len(ps) != 1 {
			return p, usagef("%s has %d profiles; create and update take one (profile import takes several)", pf.file, len(ps))
		}
		p = attestapi.ProfileFrom(ps[0])
		if len(args) > 0 && args[0] != p.Name {
			return p, usagef("the name %q differs from the file's profile %q", args[0], p.Name)
		}
	} else {
		if len(args) == 0 {
			return p, usagef("name the profile, or give --from-file")
		}
		p.Name = args[0]
		for _, s := range pf.pcrs {
			idx, vals, ok := strings.Cut(s, "=")
			if !ok || idx == "" || vals == "" {
				return p, usagef("--pcr %q is not INDEX=SHA256[,SHA256...]", s)
			}
			if p.PCRs == nil {
				p.PCRs = map[string][]string{}
			}
			for _, v := range strings.Split(vals, ",") {
				p.PCRs[idx] = append(p.PCRs[idx], strings.ToLower(strings.TrimSpace(v)))
			}
		}
		for _, s := range pf.facts {
			name, val, ok := strings.Cut(s, "=")
			if !ok || name == "" {
				return p, usagef("--fact %q is not NAME=VALUE", s)
			}
			if p.Facts == nil {
				p.Facts = map[string][]string{}
			}
			p.Facts[name] = append(p.Facts[name], val)
		}
	}
	if pf.description != "" {
		p.Description = pf.description
	}
	if _, err := p.Policy(); err != nil {
		return p, &usageError{err: err}
	}
	return p, nil
}

// readInput reads a file, or stdin for "-".
func (c *CLI) readInput(name string) ([]byte, error) {
	if name == "-" {
		return io.ReadAll(c.cfg.Stdin)
	}
	b, err := os.ReadFile(name)
	if err != nil {
		return nil, &usageError{err: err}
	}
	return b, nil
}

func (c *CLI) profileCreate() *cobra.Command {
	return c.profileWrite("create", "Create a profile; hosts are appraised again",
		(*attestclient.Client).CreateProfile)
}

func (c *CLI) profileUpdate() *cobra.Command {
	return c.profileWrite("update", "Replace an existing profile's reference values as a new approved version that retires the latest one; hosts are appraised again",
		(*attestclient.Client).ReplaceProfile)
}

// profileWrite is create or update: a profile from flags or a file, sent
// with send.
func (c *CLI) profileWrite(verb, short string,
	send func(*attestclient.Client, context.Context, attestapi.Profile) (attestapi.ProfileBody, error)) *cobra.Command {
	var pf profileFlags
	cmd := &cobra.Command{
		Use:   verb + " [NAME] (--pcr INDEX=SHA256... | --fact NAME=VALUE... | --from-file FILE)",
		Short: short,
		Args:  cobra.MaximumNArgs(1),
	}
	of := showFlags(cmd)
	pf.add(cmd)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		p, err := c.profile(&pf, args)
		if err != nil {
			return err
		}
		cl, err := c.client(cmd.Context(), true)
		if err != nil {
			return err
		}
		pb, err := send(cl, cmd.Context(), p)
		if err != nil {
			return err
		}
		return c.writeRecord(of, profileWriteRecord(pb))
	}
	return cmd
}

func (c *CLI) profileDelete() *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:   "delete NAME [NAME...]",
		Short: "Delete profiles; hosts are appraised again",
		Args:  cobra.MinimumNArgs(1),
	}
	cmd.Flags().BoolVar(&force, "force", false, "delete even a profile that hosts rely on (they turn untrusted)")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		cl, err := c.client(cmd.Context(), true)
		if err != nil {
			return err
		}
		return c.each(args, "profile", "delete", func(n string) error { return cl.DeleteProfile(cmd.Context(), n, force) })
	}
	return cmd
}

func (c *CLI) profileImport() *cobra.Command {
	var (
		eventLog string
		lf       learnFlags
	)
	cmd := &cobra.Command{
		Use:   "import (FILE | --eventlog LOG NAME)",
		Short: "Create or replace every profile of a profile file, or compute a profile from a firmware event log",
		Long: "Create or replace every profile of a profile file (TOML, the format profile export writes;\n" +
			"- reads stdin). The file is checked whole before anything is stored.\n\n" +
			"With --eventlog, compute profile NAME offline from a firmware event log (binary_bios_measurements,\n" +
			"e.g. captured by a build pipeline; - reads stdin) with no host involved: the service checks\n" +
			"the log as it checks a host's, and takes the SHA-256 values PCRs 0-9 replay to and the\n" +
			"boot facts a host that booted the log would prove. --pcr, --fact, --no-facts,\n" +
			"--skip-fact-pcrs and --merge work as for profile learn.",
		Args: cobra.ExactArgs(1),
	}
	// The list options of import FILE; with --eventlog the answer is one
	// record (the record formats).
	of := listFlags(cmd, false)
	cmd.Flags().StringVar(&eventLog, "eventlog", "", "compute profile NAME from this firmware event log")
	lf.add(cmd)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		ctx := cmd.Context()
		if eventLog == "" {
			if set := lf.setFlags(cmd); len(set) > 0 {
				return usagef("--%s needs --eventlog", set[0])
			}
			return c.importFile(ctx, args[0], of)
		}
		raw, err := c.readInput(eventLog)
		if err != nil {
			return err
		}
		if len(raw) == 0 {
			return usagef("--eventlog %s is empty", eventLog)
		}
		l := attestapi.Learn{Name: args[0], EventLog: raw}
		if err := lf.apply(&l); err != nil {
			return err
		}
		for _, i := range l.PCRs {
			if i > 9 {
				return usagef("--pcr %d: a firmware event log records PCRs 0-9 only", i)
			}
		}
		cl, err := c.client(ctx, true)
		if err != nil {
			return err
		}
		learned, err := cl.LearnProfile(ctx, l)
		if err != nil {
			return err
		}
		c.warn(learned.Warnings)
		return c.writeRecord(of, learnedRecord(learned))
	}
	return cmd
}

// importFile is profile import FILE.
func (c *CLI) importFile(ctx context.Context, file string, of *outputFlags) error {
	b, err := c.readInput(file)
	if err != nil {
		return err
	}
	if _, err := policy.Parse(b); err != nil {
		return &usageError{err: fmt.Errorf("%s: %w", file, err)}
	}
	cl, err := c.client(ctx, true)
	if err != nil {
		return err
	}
	im, err := cl.ImportProfiles(ctx, b)
	if err != nil {
		return err
	}
	l := output.List{Columns: []output.Column{{Name: "Imported"}, {Name: "Version"}, {Name: "Retired Version"}, {Name: "Change"}}}
	for _, p := range im.Profiles {
		change := "replaced"
		switch {
		case p.Created:
			change = "created"
		case p.Unchanged:
			change = "unchanged"
		}
		var retired any
		if p.RetiredVersion != 0 {
			retired = p.RetiredVersion
		}
		l.Rows = append(l.Rows, []any{p.Name, p.Version, retired, change})
	}
	return c.writeList(of, l)
}

// learnFlags are what profile learn and profile import --eventlog take
// from a source: which PCRs and facts, and whether to merge.
type learnFlags struct {
	description  string
	pcrs         []int
	facts        []string
	noFacts      bool
	skipFactPCRs bool
	merge        bool
}

var learnFlagNames = []string{"description", "pcr", "fact", "no-facts", "skip-fact-pcrs", "merge"}

func (lf *learnFlags) add(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringVar(&lf.description, "description", "", "what the profile is for (default: where it was learned from)")
	f.IntSliceVar(&lf.pcrs, "pcr", nil, "take these PCRs (repeatable or comma-separated; default: 0-7)")
	f.StringArrayVar(&lf.facts, "fact", nil, "take only these boot facts (repeatable; default: secure_boot, bootloader, kernel, initrd, kernel_cmdline)")
	f.BoolVar(&lf.noFacts, "no-facts", false, "take no boot facts: a profile of PCRs alone")
	f.BoolVar(&lf.skipFactPCRs, "skip-fact-pcrs", false, "do not pin the PCRs the facts are read from (the facts are then not trustworthy)")
	f.BoolVar(&lf.merge, "merge", false, "add to an existing profile of that name")
	cmd.MarkFlagsMutuallyExclusive("fact", "no-facts")
}

// setFlags returns the learn flags given on the command line.
func (lf *learnFlags) setFlags(cmd *cobra.Command) []string {
	var set []string
	for _, n := range learnFlagNames {
		if cmd.Flags().Changed(n) {
			set = append(set, n)
		}
	}
	return set
}

// apply copies the flags into l, checking the PCR indexes.
func (lf *learnFlags) apply(l *attestapi.Learn) error {
	for _, i := range lf.pcrs {
		if i < 0 || i > 23 {
			return usagef("--pcr %d is not a PCR index 0-23", i)
		}
	}
	l.Description, l.PCRs, l.Facts, l.SkipFactPCRs, l.Merge = lf.description, lf.pcrs, lf.facts, lf.skipFactPCRs, lf.merge
	if lf.noFacts {
		// Sent as "facts": [] (none); nil would mean the defaults.
		l.Facts = []string{}
	}
	return nil
}

func (c *CLI) profileExport() *cobra.Command {
	var file string
	cmd := &cobra.Command{
		Use:   "export",
		Short: "Write every profile as a profile file (TOML) to stdout or --file",
		Args:  cobra.NoArgs,
	}
	cmd.Flags().StringVar(&file, "file", "", "write to this file instead of stdout")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		cl, err := c.client(cmd.Context(), true)
		if err != nil {
			return err
		}
		b, err := cl.ExportProfiles(cmd.Context())
		if err != nil {
			return err
		}
		if file == "" {
			_, err = c.cfg.Stdout.Write(b)
			return err
		}
		return os.WriteFile(file, b, 0o644) //nolint:gosec // reference values are public
	}
	return cmd
}

func (c *CLI) profileLearn() *cobra.Command {
	var (
		l  attestapi.Learn
		w  waitFlags
		lf learnFlags
	)
	cmd := &cobra.Command{
		Use:   "learn NAME --host HOST",
		Short: "Learn a profile from a golden host's verified evidence and wait until hosts are appraised with it",
		Long: "Build profile NAME from the last verified evidence of a golden host (its quoted PCRs and\n" +
			"the boot facts of its event log), then wait until that host has been appraised again and\n" +
			"show the profile with the host's new status. The command fails when the golden host does\n" +
			"not satisfy the profile. --merge adds the values to an existing profile (a rollout: both\n" +
			"builds are accepted). With --no-wait, return once the profile is stored. --no-facts learns\n" +
			"PCRs alone, for hosts without a firmware event log. --ima also learns an IMA allowlist:\n" +
			"the service quotes the host anew, verifies its whole IMA log since boot and allows every\n" +
			"file in it with its digest (but those --ima-exclude names). To compute a profile from an\n" +
			"event log with no host, see profile import --eventlog.",
		Args: cobra.ExactArgs(1),
	}
	of := showFlags(cmd)
	f := cmd.Flags()
	f.StringVar(&l.Host, "host", "", "the golden host (required)")
	f.BoolVar(&l.IMA, "ima", false, "also learn an IMA allowlist from the host's IMA log")
	f.StringArrayVar(&l.IMAExclude, "ima-exclude", nil, `leave these files out of the IMA allowlist and the appraisal ("dir/" prefix or glob; repeatable; needs --ima)`)
	lf.add(cmd)
	_ = cmd.MarkFlagRequired("host")
	w.add(cmd, 2*time.Minute)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		ctx := cmd.Context()
		l.Name = args[0]
		if err := lf.apply(&l); err != nil {
			return err
		}
		if len(l.IMAExclude) > 0 && !l.IMA {
			return usagef("--ima-exclude needs --ima")
		}
		cl, err := c.client(ctx, true)
		if err != nil {
			return err
		}
		if w.noWait {
			learned, err := cl.LearnProfile(ctx, l)
			if err != nil {
				return err
			}
			c.warn(learned.Warnings)
			return c.writeRecord(of, learnedRecord(learned))
		}
		before, err := cl.GetHost(ctx, l.Host)
		if err != nil {
			return err
		}
		learned, err := cl.LearnProfile(ctx, l)
		if err != nil {
			return err
		}
		c.warn(learned.Warnings)
		pb := attestapi.ProfileBody{Profile: learned.Profile, UpdatedAt: learned.UpdatedAt}
		// The host's next verdict that was appraised after the profile was
		// stored shows whether it satisfies it.
		stored := pb.UpdatedAt
		if stored == nil {
			got, err := cl.GetProfile(ctx, l.Name)
			if err != nil {
				return err
			}
			stored = got.UpdatedAt
		}
		var since time.Time
		if stored != nil {
			since = *stored
		}
		h, err := c.waitVerdict(ctx, cl, l.Host, w.timeout, "learned "+l.Name+" from "+l.Host, newerThan(before, since))
		if err != nil {
			return err
		}
		rec := learnedRecord(learned)
		rec.Fields = append(rec.Fields, output.Column{Name: "learned_from"}, output.Column{Name: "host_status"},
			output.Column{Name: "host_profiles"})
		rec.Values = append(rec.Values, l.Host, string(hostStatus(h)), h.Verdict.Profiles)
		if err := c.writeRecord(of, rec); err != nil {
			return err
		}
		if !slices.Contains(h.Verdict.Profiles, l.Name) {
			return fmt.Errorf("%s does not satisfy the profile learned from it: %s", l.Host, strings.Join(h.Verdict.Reasons, "; "))
		}
		return nil
	}
	return cmd
}
