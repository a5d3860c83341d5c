package commands

import (
	"fmt"
	"strconv"

	"github.com/spf13/cobra"

	"github.com/trustpool/trustpool/cli/internal/output"
	"github.com/trustpool/trustpool/internal/attestapi"
	"github.com/trustpool/trustpool/internal/policy"
)

// profile version: a profile's versions and their rollout.
func (c *CLI) profileVersionCommand() *cobra.Command {
	g := c.groupCommand("version", "Profile versions: complete reference sets rolled out as candidate, canary, approved, retired")
	g.AddCommand(c.versionList(), c.versionShow(), c.versionImport(), c.versionLearn(), c.versionSetState(), c.versionDiff())
	return g
}

func versionArg(s string) (int, error) {
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 {
		return 0, usagef("version %q is not a version number (1, 2, ...)", s)
	}
	return n, nil
}

// fraction is a canary's fraction as shown (nothing when none).
func fraction(v attestapi.ProfileVersion) any {
	if v.Fraction == 0 {
		return nil
	}
	return v.Fraction
}

func versionRecord(v attestapi.ProfileVersion) output.Record {
	r := profileRecord(attestapi.ProfileBody{Profile: v.Profile})
	r.Fields = append([]output.Column{{Name: "version"}, {Name: "state"}, {Name: "hosts"}, {Name: "fraction"}, {Name: "in_canary"}, {Name: "source"}}, r.Fields...)
	r.Values = append([]any{v.Version, v.State, v.Hosts, fraction(v), v.InCanary, v.Source}, r.Values...)
	r.Fields = append(r.Fields, output.Column{Name: "created_at"}, output.Column{Name: "updated_at"})
	r.Values = append(r.Values, v.CreatedAt, v.UpdatedAt)
	return r
}

func (c *CLI) versionList() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "list PROFILE",
		Short: "List a profile's versions and their rollout states",
		Args:  cobra.ExactArgs(1),
	}
	of := listFlags(cmd, true)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		cl, err := c.client(cmd.Context(), true)
		if err != nil {
			return err
		}
		vs, err := cl.ListProfileVersions(cmd.Context(), args[0])
		if err != nil {
			return err
		}
		l := output.List{Columns: []output.Column{{Name: "Version"}, {Name: "State"}, {Name: "Hosts"}, {Name: "Fraction"},
			{Name: "In Canary", Long: true}, {Name: "Source"}, {Name: "PCRs"}, {Name: "Facts"}, {Name: "IMA", Long: true},
			{Name: "Updated At", Long: true}}}
		for _, v := range vs {
			l.Rows = append(l.Rows, []any{v.Version, v.State, v.Hosts, fraction(v), v.InCanary, v.Source, pcrIndexes(v.Profile),
				factNames(v.Profile), v.Profile.IMA != nil, v.UpdatedAt})
		}
		return c.writeList(of, l)
	}
	return cmd
}

func (c *CLI) versionShow() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "show PROFILE VERSION",
		Short: "Show a profile version's state and reference values",
		Args:  cobra.ExactArgs(2),
	}
	of := showFlags(cmd)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		n, err := versionArg(args[1])
		if err != nil {
			return err
		}
		cl, err := c.client(cmd.Context(), true)
		if err != nil {
			return err
		}
		v, err := cl.GetProfileVersion(cmd.Context(), args[0], n)
		if err != nil {
			return err
		}
		return c.writeRecord(of, versionRecord(v))
	}
	return cmd
}

func (c *CLI) versionImport() *cobra.Command {
	var (
		pf       profileFlags
		eventLog string
		lf       learnFlags
	)
	cmd := &cobra.Command{
		Use:   "import PROFILE (--from-file FILE | --pcr INDEX=SHA256... | --fact NAME=VALUE... | --eventlog LOG)",
		Short: "Add a candidate version to a profile from a document or a firmware event log",
		Long: "Add a new version to the existing profile PROFILE, as a candidate (accepted nowhere until\n" +
			"profile version set-state). Its reference values come from a profile file (TOML, one\n" +
			"[[profile]] named PROFILE), from --pcr/--fact, or with --eventlog from a firmware event log\n" +
			"(e.g. captured by a build pipeline; computed offline as profile import --eventlog does;\n" +
			"--pcr, --fact, --no-facts and --skip-fact-pcrs then choose what is taken).",
		Args: cobra.ExactArgs(1),
	}
	of := showFlags(cmd)
	f := cmd.Flags()
	f.StringVar(&pf.file, "from-file", "", "read the version from a profile file (TOML, one [[profile]]; - for stdin)")
	f.StringVar(&pf.description, "description", "", "what the version is for")
	f.StringArrayVar(&pf.facts, "fact", nil, "NAME=VALUE: an accepted value of a boot fact (repeatable); with --eventlog: take only these facts")
	f.StringArrayVar(&pf.pcrs, "pcr", nil, "INDEX=SHA256[,SHA256...]: accepted values of a PCR (repeatable); with --eventlog: INDEX, take this PCR")
	f.StringVar(&eventLog, "eventlog", "", "compute the version from this firmware event log")
	f.BoolVar(&lf.noFacts, "no-facts", false, "with --eventlog: take no boot facts")
	f.BoolVar(&lf.skipFactPCRs, "skip-fact-pcrs", false, "with --eventlog: do not pin the PCRs the facts are read from")
	cmd.MarkFlagsMutuallyExclusive("from-file", "eventlog")
	cmd.MarkFlagsMutuallyExclusive("from-file", "pcr")
	cmd.MarkFlagsMutuallyExclusive("from-file", "fact")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		ctx := cmd.Context()
		if eventLog == "" {
			if lf.noFacts || lf.skipFactPCRs {
				return usagef("--no-facts and --skip-fact-pcrs need --eventlog")
			}
			p, err := c.profile(&pf, args)
			if err != nil {
				return err
			}
			cl, err := c.client(ctx, true)
			if err != nil {
				return err
			}
			v, err := cl.CreateProfileVersion(ctx, p)
			if err != nil {
				return err
			}
			return c.writeRecord(of, versionRecord(v))
		}
		raw, err := c.readInput(eventLog)
		if err != nil {
			return err
		}
		if len(raw) == 0 {
			return usagef("--eventlog %s is empty", eventLog)
		}
		l := attestapi.Learn{Name: args[0], EventLog: raw, NewVersion: true, Description: pf.description,
			SkipFactPCRs: lf.skipFactPCRs, Facts: pf.facts}
		for _, s := range pf.pcrs {
			i, err := strconv.Atoi(s)
			if err != nil || i < 0 || i > 9 {
				return usagef("--pcr %q: with --eventlog, a PCR index 0-9 (a firmware event log records PCRs 0-9 only)", s)
			}
			l.PCRs = append(l.PCRs, i)
		}
		if lf.noFacts {
			l.Facts = []string{}
		}
		return c.learnVersion(cmd, of, l)
	}
	return cmd
}

func (c *CLI) versionLearn() *cobra.Command {
	var (
		l  attestapi.Learn
		lf learnFlags
	)
	cmd := &cobra.Command{
		Use:   "learn PROFILE --host HOST",
		Short: "Add a candidate version to a profile, learned from a golden host's verified evidence",
		Long: "Learn a new version of the existing profile PROFILE from the last verified evidence of a\n" +
			"golden host (as profile learn does) and store it as a candidate: accepted nowhere until\n" +
			"profile version set-state makes it a canary or approves it.",
		Args: cobra.ExactArgs(1),
	}
	of := showFlags(cmd)
	f := cmd.Flags()
	f.StringVar(&l.Host, "host", "", "the golden host (required)")
	f.BoolVar(&l.IMA, "ima", false, "also learn an IMA allowlist from the host's IMA log")
	f.StringArrayVar(&l.IMAExclude, "ima-exclude", nil, `leave these files out of the IMA allowlist ("dir/" prefix or glob; repeatable; needs --ima)`)
	lf.add(cmd)
	_ = cmd.MarkFlagRequired("host")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		if lf.merge {
			return usagef("--merge does not apply to a version: a version is a complete reference set")
		}
		if len(l.IMAExclude) > 0 && !l.IMA {
			return usagef("--ima-exclude needs --ima")
		}
		l.Name, l.NewVersion = args[0], true
		if err := lf.apply(&l); err != nil {
			return err
		}
		return c.learnVersion(cmd, of, l)
	}
	return cmd
}

// learnVersion sends a learn request for a new version and shows the
// stored version.
func (c *CLI) learnVersion(cmd *cobra.Command, of *outputFlags, l attestapi.Learn) error {
	ctx := cmd.Context()
	cl, err := c.client(ctx, true)
	if err != nil {
		return err
	}
	learned, err := cl.LearnProfile(ctx, l)
	if err != nil {
		return err
	}
	c.warn(learned.Warnings)
	v, err := cl.GetProfileVersion(ctx, l.Name, learned.Version)
	if err != nil {
		return err
	}
	rec := versionRecord(v)
	rec.Fields = append(rec.Fields, output.Column{Name: "fact_pcrs"}, output.Column{Name: "added_pcrs"})
	rec.Values = append(rec.Values, learned.FactPCRs, output.Formatted{Text: joinInts(learned.AddedPCRs), Value: learned.AddedPCRs})
	return c.writeRecord(of, rec)
}

func (c *CLI) versionSetState() *cobra.Command {
	var (
		s        attestapi.VersionState
		force    bool
		fraction float64
	)
	cmd := &cobra.Command{
		Use:   "set-state PROFILE VERSION (candidate | canary (--host HOST... | --fraction F) | approved | retired)",
		Short: "Move a profile version through its rollout; hosts are appraised again",
		Long: "Change the state of a profile version. A host satisfies a profile when it matches an\n" +
			"approved version, or a canary version naming it (--host, repeatable) or selecting it\n" +
			"(--fraction, e.g. 0.1 for one host in ten; both may be given); candidate and retired\n" +
			"versions are accepted nowhere. The fraction selects hosts by a hash of the profile, the\n" +
			"version and the host name: the same hosts every time, hosts enrolled later by the same\n" +
			"rule, and raising the fraction only adds hosts (0.01, then 0.1, then 0.5 keeps every host\n" +
			"already moved). profile version show lists the hosts in the canary now.\n" +
			"candidate → canary, approved or retired; canary → canary (other hosts or fraction),\n" +
			"candidate, approved or retired; approved → retired. Retired is final, and a\n" +
			"profile's last approved version cannot be retired. --from makes the change only if the\n" +
			"version is still in that state. A change that turns trusted hosts untrusted (they matched\n" +
			"this version and rely on the profile) is refused naming them unless --force.",
		Args: cobra.ExactArgs(3),
	}
	of := showFlags(cmd)
	cmd.Flags().StringArrayVar(&s.Hosts, "host", nil, "with canary: a host the version is accepted on (repeatable)")
	cmd.Flags().Float64Var(&fraction, "fraction", 0, "with canary: the share of hosts the version is accepted on, more than 0 and at most 1")
	cmd.Flags().StringVar(&s.From, "from", "", "the state the version must still be in")
	cmd.Flags().BoolVar(&force, "force", false, "change it even when hosts that matched it turn untrusted")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		n, err := versionArg(args[1])
		if err != nil {
			return err
		}
		s.State = args[2]
		withFraction := cmd.Flags().Changed("fraction")
		switch {
		case s.State == attestapi.VersionCanary && len(s.Hosts) == 0 && !withFraction:
			return usagef("canary needs --host or --fraction: the hosts the version is accepted on")
		case s.State != attestapi.VersionCanary && len(s.Hosts) > 0:
			return usagef("--host is only for canary")
		case s.State != attestapi.VersionCanary && withFraction:
			return usagef("--fraction is only for canary")
		case withFraction && !(fraction > 0 && fraction <= 1):
			return usagef("--fraction %v: a share of hosts, more than 0 and at most 1 (0.1 is one host in ten)", fraction)
		}
		if withFraction {
			s.Fraction = &fraction
		}
		cl, err := c.client(cmd.Context(), true)
		if err != nil {
			return err
		}
		v, err := cl.SetProfileVersionState(cmd.Context(), args[0], n, s, force)
		if err != nil {
			return err
		}
		return c.writeRecord(of, versionRecord(v))
	}
	return cmd
}

func (c *CLI) versionDiff() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "diff PROFILE A B",
		Short: "Say what changed from version A to version B of a profile, in boot terms",
		Long: "Compare two versions of a profile: each boot fact either checks (unchanged, changed, with\n" +
			"the old and new kernel or initrd file names), the PCRs that differ, are unchanged or are\n" +
			"pinned by one only, and the IMA allowlist.",
		Args: cobra.ExactArgs(3),
	}
	of := listFlags(cmd, false)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		var ps [2]*policy.Profile
		var ns [2]int
		for i, s := range args[1:] {
			n, err := versionArg(s)
			if err != nil {
				return err
			}
			ns[i] = n
		}
		cl, err := c.client(cmd.Context(), true)
		if err != nil {
			return err
		}
		for i, n := range ns {
			v, err := cl.GetProfileVersion(cmd.Context(), args[0], n)
			if err != nil {
				return err
			}
			if ps[i], err = v.Profile.Policy(); err != nil {
				return fmt.Errorf("profile %s version %d: %w", args[0], n, err)
			}
		}
		l := output.List{Columns: []output.Column{{Name: "Change"}}}
		for _, line := range policy.Diff(ps[0], ps[1]) {
			l.Rows = append(l.Rows, []any{line})
		}
		return c.writeList(of, l)
	}
	return cmd
}
