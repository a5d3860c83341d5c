package commands

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/trustpool/trustpool/cli/internal/output"
	"github.com/trustpool/trustpool/internal/attestapi"
	"github.com/trustpool/trustpool/internal/attestclient"
	"github.com/trustpool/trustpool/internal/verdict"
)

func (c *CLI) hostCommand() *cobra.Command {
	g := c.groupCommand("host", "Compute hosts: verdicts, history, attestation, enrollment")
	g.AddCommand(c.hostList(), c.hostShow(), c.hostHistory(), c.hostAttest(), c.hostDelete(),
		c.hostApproveEK(), c.hostRejectEK(), c.hostSet())
	return g
}

// hostStatus is what a relying party acts on: the verdict's effective
// status; a host without a verdict is unknown.
func hostStatus(h attestapi.Host) verdict.Status {
	if h.Verdict == nil {
		return verdict.Unknown
	}
	return h.Verdict.EffectiveStatus
}

// hostReason says in one line why a host has its status.
func hostReason(h attestapi.Host) string {
	v := h.Verdict
	switch {
	case v == nil && h.PendingReason != "":
		return "EK awaiting approval: " + h.PendingReason
	case v == nil:
		return "not attested yet"
	case v.EffectiveStatus != v.Status:
		r := fmt.Sprintf("verdict (%s) expired at %s", v.Status, v.ExpiresAt.UTC().Format(output.TimeFormat))
		if len(v.Reasons) > 0 {
			r += ": " + v.Reasons[0]
		}
		return r
	case len(v.Reasons) > 0:
		return v.Reasons[0]
	}
	return ""
}

func verdictField[T any](h attestapi.Host, f func(*attestapi.Verdict) T) any {
	if h.Verdict == nil {
		return nil
	}
	return f(h.Verdict)
}

var hostColumns = []output.Column{
	{Name: "Name"}, {Name: "Status"}, {Name: "Profiles"}, {Name: "Seq"}, {Name: "Verified At"}, {Name: "Expires At"},
	{Name: "Reason"},
	{Name: "Enrollment", Long: true}, {Name: "Required Profiles", Long: true}, {Name: "Agent Version", Long: true},
	{Name: "EK Fingerprint", Long: true}, {Name: "Pending Reason", Long: true},
}

func hostRow(h attestapi.Host) []any {
	return []any{
		h.Name, string(hostStatus(h)),
		verdictField(h, func(v *attestapi.Verdict) []string { return v.Profiles }),
		verdictField(h, func(v *attestapi.Verdict) uint64 { return v.Seq }),
		verdictField(h, func(v *attestapi.Verdict) time.Time { return v.VerifiedAt }),
		verdictField(h, func(v *attestapi.Verdict) time.Time { return v.ExpiresAt }),
		hostReason(h),
		h.Enrollment, requiredProfiles(h), h.AgentVersion, h.EKFingerprint, h.PendingReason,
	}
}

func requiredProfiles(h attestapi.Host) output.Formatted {
	text := strings.Join(h.RequiredProfiles, ", ")
	switch {
	case !h.ProfilesAssigned && text == "":
		text = "(any profile; service default)"
	case !h.ProfilesAssigned:
		text += " (service default)"
	case text == "":
		text = "(any profile)"
	}
	return output.Formatted{Text: text, Value: h.RequiredProfiles}
}

var statuses = []string{string(verdict.Trusted), string(verdict.Untrusted), string(verdict.Unknown)}

func (c *CLI) hostList() *cobra.Command {
	var status string
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List hosts with their status, satisfied profiles, verdict times and first reason",
		Long: "List hosts with their status, satisfied profiles, verdict sequence number, verification and\n" +
			"expiry times, and the first reason when a host is not trusted. Status is what the Nova\n" +
			"filter acts on now: a verdict past its expiry counts as unknown.",
		Args: cobra.NoArgs,
	}
	of := listFlags(cmd, true)
	cmd.Flags().StringVar(&status, "status", "", "only hosts with this status: "+strings.Join(statuses, ", "))
	registerCompletion(cmd, "status", statuses)
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if status != "" && !slices.Contains(statuses, status) {
			return usagef("--status %q is not one of %s", status, strings.Join(statuses, ", "))
		}
		cl, err := c.client(cmd.Context(), true)
		if err != nil {
			return err
		}
		hosts, err := cl.ListHosts(cmd.Context())
		if err != nil {
			return err
		}
		l := output.List{Columns: hostColumns}
		for _, h := range hosts {
			if status == "" || string(hostStatus(h)) == status {
				l.Rows = append(l.Rows, hostRow(h))
			}
		}
		return c.writeList(of, l)
	}
	return cmd
}

// hostRecord is host show's output.
func hostRecord(h attestapi.Host) output.Record {
	r := output.Record{}
	add := func(name string, long bool, v any) {
		r.Fields = append(r.Fields, output.Column{Name: name, Long: long})
		r.Values = append(r.Values, v)
	}
	add("name", false, h.Name)
	add("status", false, string(hostStatus(h)))
	add("profiles", false, verdictField(h, func(v *attestapi.Verdict) []string { return v.Profiles }))
	add("profile_versions", false, verdictField(h, func(v *attestapi.Verdict) map[string]int { return v.ProfileVersions }))
	add("reasons", false, verdictField(h, func(v *attestapi.Verdict) []string { return v.Reasons }))
	add("seq", false, verdictField(h, func(v *attestapi.Verdict) uint64 { return v.Seq }))
	add("verified_at", false, verdictField(h, func(v *attestapi.Verdict) time.Time { return v.VerifiedAt }))
	add("expires_at", false, verdictField(h, func(v *attestapi.Verdict) time.Time { return v.ExpiresAt }))
	add("verdict_status", false, verdictField(h, func(v *attestapi.Verdict) string { return string(v.Status) }))
	add("required_profiles", false, requiredProfiles(h))
	add("enrollment", false, h.Enrollment)
	add("agent_version", false, h.AgentVersion)
	add("ek_fingerprint", false, h.EKFingerprint)
	if h.PendingEKFingerprint != "" {
		add("pending_ek_fingerprint", false, h.PendingEKFingerprint)
		add("pending_reason", false, h.PendingReason)
		add("pending_ek_bound_to", false, h.PendingEKBoundTo)
		add("pending_since", false, h.PendingSince)
	}
	if h.RejectedEKFingerprint != "" {
		add("rejected_ek_fingerprint", false, h.RejectedEKFingerprint)
	}
	add("created_at", false, h.CreatedAt)
	if a := h.LastAttestation; a != nil {
		add("last_attestation_at", false, a.At)
		add("reachable", false, a.Reachable)
		add("evidence_verified", false, a.Verified)
		add("rebooted", false, a.Rebooted)
		add("profile_results", false, profileResults(a.Profiles))
		add("evidence_digest", true, a.EvidenceDigest)
		add("duration_ms", true, a.DurationMS)
		add("ima_new_entries", true, a.IMANewEntries)
		add("pcrs", true, a.PCRs)
		add("boot", true, a.Boot)
	}
	if h.Verdict != nil {
		add("signed_verdict", true, h.Verdict.Signed) // compact JSON as text
	}
	return r
}

func profileResults(rs []attestapi.ProfileResult) output.Formatted {
	lines := make([]string, 0, len(rs))
	for _, r := range rs {
		if r.Pass {
			lines = append(lines, r.Profile+": pass")
		} else {
			lines = append(lines, r.Profile+": fail: "+strings.Join(r.Reasons, "; "))
		}
	}
	if rs == nil {
		rs = []attestapi.ProfileResult{}
	}
	return output.Formatted{Text: strings.Join(lines, "\n"), Value: rs}
}

func (c *CLI) hostShow() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "show HOST",
		Short: "Show a host: verdict, enrollment, last attestation (--long: PCRs, boot facts, the signed verdict)",
		Args:  cobra.ExactArgs(1),
	}
	of := showFlags(cmd)
	cmd.Flags().BoolVar(&of.long, "long", false, "also show evidence details and the signed verdict")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		cl, err := c.client(cmd.Context(), true)
		if err != nil {
			return err
		}
		h, err := cl.GetHost(cmd.Context(), args[0])
		if err != nil {
			return err
		}
		return c.writeRecord(of, hostRecord(h))
	}
	return cmd
}

func (c *CLI) hostHistory() *cobra.Command {
	var limit int
	cmd := &cobra.Command{
		Use:   "history HOST",
		Short: "List a host's verdict changes, newest first",
		Args:  cobra.ExactArgs(1),
	}
	of := listFlags(cmd, true)
	cmd.Flags().IntVar(&limit, "limit", 0, fmt.Sprintf("at most this many entries (1-%d; default %d)", attestapi.MaxLimit, attestapi.DefaultHistoryLimit))
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		if cmd.Flags().Changed("limit") && (limit < 1 || limit > attestapi.MaxLimit) {
			return usagef("--limit must be from 1 to %d", attestapi.MaxLimit)
		}
		cl, err := c.client(cmd.Context(), true)
		if err != nil {
			return err
		}
		h, err := cl.History(cmd.Context(), args[0], limit)
		if err != nil {
			return err
		}
		l := output.List{Columns: []output.Column{{Name: "At"}, {Name: "Status"}, {Name: "Seq"}, {Name: "Profiles"},
			{Name: "Reasons"}, {Name: "Evidence Digest", Long: true}}}
		for _, e := range h.History {
			l.Rows = append(l.Rows, []any{e.At, string(e.Status), e.Seq, e.Profiles,
				output.Formatted{Text: strings.Join(e.Reasons, "; "), Value: e.Reasons}, e.EvidenceDigest})
		}
		return c.writeList(of, l)
	}
	return cmd
}

func (c *CLI) hostAttest() *cobra.Command {
	var w waitFlags
	cmd := &cobra.Command{
		Use:   "attest HOST",
		Short: "Attest a host now and wait for its new verdict",
		Long: "Ask the service to attest a host now (a fresh nonce, quote and appraisal), wait for the\n" +
			"verdict of that round and show the host. With --no-wait, return once the round is scheduled.",
		Args: cobra.ExactArgs(1),
	}
	of := showFlags(cmd)
	w.add(cmd, 2*time.Minute)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		ctx, host := cmd.Context(), args[0]
		cl, err := c.client(ctx, true)
		if err != nil {
			return err
		}
		var before attestapi.Host
		if !w.noWait {
			// The verdict to wait for is newer than this one.
			if before, err = cl.GetHost(ctx, host); err != nil {
				return err
			}
		}
		sched, err := cl.Attest(ctx, host)
		if err != nil {
			return err
		}
		if w.noWait {
			return c.writeRecord(of, output.Record{
				Fields: []output.Column{{Name: "host"}, {Name: "attestation"}, {Name: "requested_at"}},
				Values: []any{sched.Host, sched.Attestation, sched.RequestedAt},
			})
		}
		h, err := c.waitVerdict(ctx, cl, host, w.timeout, "attesting "+host, newerThan(before, sched.RequestedAt))
		if err != nil {
			return err
		}
		return c.writeRecord(of, hostRecord(h))
	}
	return cmd
}

func (c *CLI) hostDelete() *cobra.Command {
	return &cobra.Command{
		Use:   "delete HOST [HOST...]",
		Short: "Delete hosts (each turns unknown for the schedulers first; its EK is freed)",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := c.client(cmd.Context(), true)
			if err != nil {
				return err
			}
			return c.each(args, "host", "delete", func(h string) error { return cl.DeleteHost(cmd.Context(), h) })
		},
	}
}

// each runs fn for every name; failures are reported one per line and the
// first one decides the exit status.
func (c *CLI) each(names []string, kind, verb string, fn func(string) error) error {
	var first error
	failed := 0
	for _, n := range names {
		if err := fn(n); err != nil {
			inCLITerms(err)
			if len(names) > 1 {
				fmt.Fprintf(c.cfg.Stderr, "%s: cannot %s %s %s: %s\n", Name, verb, kind, n, oneLine(err))
			}
			if first == nil {
				first = err
			}
			failed++
		}
	}
	if first == nil || len(names) == 1 {
		return first
	}
	return fmt.Errorf("%d of %d %ss could not be %sed: %w", failed, len(names), kind, strings.TrimSuffix(verb, "e"), first)
}

func oneLine(err error) string { return strings.Join(strings.Fields(err.Error()), " ") }

func (c *CLI) hostApproveEK() *cobra.Command {
	return c.ekDecision("approve-ek", "Approve a host's pending EK (its fingerprint is in host show)",
		"Bind the EK a host presented and that awaits approval (pending_ek_fingerprint in host show).\n"+
			"--ek-fingerprint makes sure the EK approved is the one reviewed. An EK bound to another\n"+
			"host moves only with --force; that host then loses its binding and turns unknown.", true,
		func(cl *attestclient.Client, ctx context.Context, host string, d attestapi.EKDecision) (output.Record, error) {
			a, err := cl.ApproveEK(ctx, host, d)
			if err != nil {
				return output.Record{}, err
			}
			return output.Record{
				Fields: []output.Column{{Name: "host"}, {Name: "approved"}, {Name: "ek_fingerprint"}, {Name: "moved_from"}},
				Values: []any{a.Host, a.Approved, a.EKFingerprint, a.MovedFrom},
			}, nil
		})
}

func (c *CLI) hostRejectEK() *cobra.Command {
	return c.ekDecision("reject-ek", "Reject a host's pending EK; it is refused for this host from then on", "", false,
		func(cl *attestclient.Client, ctx context.Context, host string, d attestapi.EKDecision) (output.Record, error) {
			r, err := cl.RejectEK(ctx, host, d)
			return output.Record{
				Fields: []output.Column{{Name: "host"}, {Name: "rejected"}, {Name: "ek_fingerprint"}},
				Values: []any{r.Host, r.Rejected, r.EKFingerprint},
			}, err
		})
}

// ekDecision is approve-ek or reject-ek.
func (c *CLI) ekDecision(verb, short, long string, withForce bool,
	decide func(*attestclient.Client, context.Context, string, attestapi.EKDecision) (output.Record, error)) *cobra.Command {
	var d attestapi.EKDecision
	cmd := &cobra.Command{Use: verb + " HOST", Short: short, Long: long, Args: cobra.ExactArgs(1)}
	of := showFlags(cmd)
	cmd.Flags().StringVar(&d.EKFingerprint, "ek-fingerprint", "", "the pending EK's SHA-256 fingerprint (64 hex digits)")
	if withForce {
		cmd.Flags().BoolVar(&d.Force, "force", false, "move an EK that another host holds")
	}
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		if err := checkFingerprint(d.EKFingerprint); err != nil {
			return err
		}
		cl, err := c.client(cmd.Context(), true)
		if err != nil {
			return err
		}
		rec, err := decide(cl, cmd.Context(), args[0], d)
		if err != nil {
			return err
		}
		return c.writeRecord(of, rec)
	}
	return cmd
}

func checkFingerprint(fp string) error {
	if fp == "" {
		return nil
	}
	if len(fp) != 64 || strings.Trim(strings.ToLower(fp), "0123456789abcdef") != "" {
		return usagef("--ek-fingerprint %q is not 64 hexadecimal digits", fp)
	}
	return nil
}

func (c *CLI) hostSet() *cobra.Command {
	var (
		profiles                 []string
		anyProfile, reset, force bool
	)
	cmd := &cobra.Command{
		Use:   "set HOST (--required-profile NAME... | --any-profile | --default-profiles)",
		Short: "Set the profiles a host must satisfy to be trusted",
		Long: "Set the profiles a host must satisfy to be trusted. --required-profile (repeatable) names\n" +
			"them; --any-profile lets any defined profile that passes do; --default-profiles returns the\n" +
			"host to the service's configured default. The host is attested again at once. The\n" +
			"service refuses an assignment that would make a trusted host untrusted unless --force.",
		Args: cobra.ExactArgs(1),
	}
	of := showFlags(cmd)
	f := cmd.Flags()
	f.StringArrayVar(&profiles, "required-profile", nil, "a profile the host must satisfy (repeat for more)")
	f.BoolVar(&anyProfile, "any-profile", false, "any defined profile that passes will do")
	f.BoolVar(&reset, "default-profiles", false, "back to the service's configured default")
	f.BoolVar(&force, "force", false, "assign even profiles the trusted host does not satisfy (it turns untrusted)")
	cmd.MarkFlagsMutuallyExclusive("required-profile", "any-profile", "default-profiles")
	cmd.MarkFlagsOneRequired("required-profile", "any-profile", "default-profiles")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		var want []string
		switch {
		case anyProfile:
			want = []string{}
		case !reset:
			want = profiles
		}
		cl, err := c.client(cmd.Context(), true)
		if err != nil {
			return err
		}
		got, err := cl.SetRequiredProfiles(cmd.Context(), args[0], want, force)
		if err != nil {
			return err
		}
		text := strings.Join(got.Profiles, ", ")
		switch {
		case got.Profiles == nil:
			text = "(service default)"
		case len(got.Profiles) == 0:
			text = "(any profile)"
		}
		return c.writeRecord(of, output.Record{
			Fields: []output.Column{{Name: "host"}, {Name: "required_profiles"}},
			Values: []any{got.Host, output.Formatted{Text: text, Value: got.Profiles}},
		})
	}
	return cmd
}
