package commands

import (
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/trustpool/trustpool/cli/internal/output"
	"github.com/trustpool/trustpool/internal/attestapi"
	"github.com/trustpool/trustpool/internal/attestclient"
	"github.com/trustpool/trustpool/internal/attestrpc"
	"github.com/trustpool/trustpool/internal/importblob"
	"github.com/trustpool/trustpool/internal/launch"
	"github.com/trustpool/trustpool/internal/policykey"
	"github.com/trustpool/trustpool/internal/verdict"
)

// DefaultGuestSecret is where the agent puts the secret inside an instance.
const DefaultGuestSecret = launch.DefaultGuestDir + "/" + launch.SecretFile

func (c *CLI) launchCommand() *cobra.Command {
	g := c.groupCommand("launch", "Trusted launches: a secret only an attested host can unseal, with a signed receipt")
	g.Long = "Trusted launches, for tenants who do not want to trust the cloud's scheduler.\n\n" +
		"  " + Name + " launch create --profile P --secret-file F --launch-key-fingerprint FP\n" +
		"  openstack server create --property trustpool_launch=<id> ...     (or: launch create --server UUID)\n" +
		"  " + Name + " launch verify <id> --public-key verdict-key.pem\n" +
		"  " + Name + " launch prove --challenge C           (inside the instance)\n" +
		"  " + Name + " launch check --secret-file F --challenge C --proof P\n\n" +
		"The secret is sealed on this machine to the service's pinned launch key and can be opened only\n" +
		"by the attestation service, which releases it only to the TPM of a host that passes a fresh\n" +
		"attestation against the profile, for the instance named. The agent there puts it into the\n" +
		"instance (" + DefaultGuestSecret + ") with the signed receipt. An instance started\n" +
		"anywhere else has no secret and cannot answer a proof."
	g.AddCommand(c.launchCreate(), c.launchList(), c.launchShow(), c.launchVerify(), c.launchDelete(), c.launchRedeliver(), c.launchProve(), c.launchCheck())
	return g
}

// ErrLaunch is returned when a launch ends refused or failed, or a receipt
// or proof does not verify.
var ErrLaunch = errors.New("trusted launch")

// pinnedLaunchKey is the launch key to seal to: the PEM file given, or the
// service's published key whose fingerprint was given.
func (c *CLI) pinnedLaunchKey(ctx context.Context, cl *attestclient.Client, file, fingerprint string) (*launch.PublicKey, error) {
	if file != "" {
		b, err := c.readInput(file)
		if err != nil {
			return nil, err
		}
		k, err := launch.ParsePublicKeyPEM(b)
		if err != nil {
			return nil, usagef("--launch-key %s: %w", file, err)
		}
		return k, nil
	}
	keys, err := cl.Keys(ctx)
	if err != nil {
		return nil, err
	}
	fingerprint = strings.ToLower(strings.TrimSpace(fingerprint))
	var seen []string
	for _, lk := range keys.LaunchKeys {
		k, err := launch.ParsePublicKey(lk.KEMID, lk.PublicKey)
		if err != nil {
			continue
		}
		if k.Fingerprint() == fingerprint {
			return k, nil
		}
		seen = append(seen, k.Fingerprint())
	}
	if len(seen) == 0 {
		return nil, fmt.Errorf("%w: the service publishes no launch key (trusted launches are off)", ErrLaunch)
	}
	return nil, fmt.Errorf("%w: the service's launch key %s is not the pinned %s; do not seal to it before checking with the operator",
		ErrLaunch, strings.Join(seen, ", "), fingerprint)
}

// readSecret reads a secret file (- for stdin) of 1..MaxSecret bytes.
func (c *CLI) readSecret(name string) ([]byte, error) {
	b, err := c.readInput(name)
	if err != nil {
		return nil, err
	}
	if len(b) == 0 || len(b) > attestrpc.MaxSecret {
		clear(b)
		return nil, usagef("secret %s has %d bytes; a secret has 1 to %d", name, len(b), attestrpc.MaxSecret)
	}
	return b, nil
}

func (c *CLI) launchCreate() *cobra.Command {
	var (
		profile, secretFile, server, hostID, notAfter, keyFile, fingerprint string
		keyFiles                                                            []string
		wait                                                                bool
		waitTimeout                                                         time.Duration
	)
	cmd := &cobra.Command{
		Use:   "create --profile P --secret-file F (--launch-key-fingerprint FP | --launch-key PEM)",
		Short: "Seal a secret to the service's pinned launch key and create a trusted launch",
		Long: "Seal the secret in --secret-file (1 to 4096 bytes; - for stdin) with the profile, this token's\n" +
			"project and --not-after, to the service's launch key pinned by --launch-key-fingerprint (see\n" +
			"'" + Name + " key list') or --launch-key (its PEM), and create a launch. The secret leaves this\n" +
			"machine sealed; the service opens it only to seal it again to an attested host's TPM.\n\n" +
			"Without --server the launch waits for a server created with the property\n" +
			"trustpool_launch=<id> (openstack server create --property trustpool_launch=<id>). With\n" +
			"--server it is bound to that existing server; its hostId is read from Nova with your\n" +
			"credentials (or given with --host-id) so that a service without Nova access finds the host.\n" +
			"With --wait, wait until the launch ends and exit 1 unless it was delivered; with --public-key\n" +
			"too, verify its final receipt.",
		Args: cobra.NoArgs,
	}
	of := showFlags(cmd)
	f := cmd.Flags()
	f.StringVar(&profile, "profile", "", "the profile the host must satisfy (required)")
	f.StringVar(&secretFile, "secret-file", "", "file holding the secret, - for stdin (required)")
	f.StringVar(&server, "server", "", "bind to this existing server (UUID)")
	f.StringVar(&hostID, "host-id", "", "the server's hostId (default: read from Nova)")
	f.StringVar(&notAfter, "not-after", "24h", "refuse the launch after this: a duration from now or an RFC 3339 time")
	f.StringVar(&keyFile, "launch-key", "", "PEM file of the pinned launch key")
	f.StringVar(&fingerprint, "launch-key-fingerprint", "", "fingerprint of the pinned launch key")
	f.StringArrayVar(&keyFiles, "public-key", nil, "with --wait: PEM file of a pinned verdict key, to verify the receipt (repeatable)")
	f.BoolVar(&wait, "wait", false, "wait until the launch ends")
	f.DurationVar(&waitTimeout, "wait-timeout", 5*time.Minute, "how long --wait waits")
	_ = cmd.MarkFlagRequired("profile")
	_ = cmd.MarkFlagRequired("secret-file")
	cmd.MarkFlagsOneRequired("launch-key", "launch-key-fingerprint")
	cmd.MarkFlagsMutuallyExclusive("launch-key", "launch-key-fingerprint")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		ctx := cmd.Context()
		if !launch.ProfilePattern.MatchString(profile) {
			return usagef("--profile %q is not a profile name", profile)
		}
		if server != "" && !attestrpc.IsUUID(server) {
			return usagef("--server %q is not a server UUID (lower case, with dashes)", server)
		}
		if hostID != "" && server == "" {
			return usagef("--host-id needs --server")
		}
		until, err := parseNotAfter(notAfter, c.cfg.Now())
		if err != nil {
			return err
		}
		verdictKeys, err := c.verdictKeys(keyFiles)
		if err != nil {
			return err
		}
		cl, err := c.client(ctx, true)
		if err != nil {
			return err
		}
		project, err := c.sess.ProjectID(ctx)
		if err != nil {
			return err
		}
		key, err := c.pinnedLaunchKey(ctx, cl, keyFile, fingerprint)
		if err != nil {
			return err
		}
		if server != "" && hostID == "" {
			if hostID, err = c.sess.ServerHostID(ctx, server); err != nil {
				return err
			}
		}
		secret, err := c.readSecret(secretFile)
		if err != nil {
			return err
		}
		req, err := launch.NewRequest(secret, profile, project, until)
		if err != nil {
			clear(secret)
			return usagef("%w", err)
		}
		sealed, err := launch.Seal(key, req)
		req.Wipe()
		if err != nil {
			return err
		}
		l, err := cl.CreateLaunch(ctx, attestapi.LaunchCreate{KID: key.KID(), Sealed: sealed, InstanceID: server, HostID: hostID})
		if err != nil {
			return err
		}
		if !wait {
			return c.writeRecord(of, launchRecord(l, false))
		}
		if l, err = c.waitLaunch(ctx, cl, l.ID, waitTimeout); err != nil {
			return err
		}
		if err := c.writeRecord(of, launchRecord(l, false)); err != nil {
			return err
		}
		if l.State != launch.StateDelivered {
			return fmt.Errorf("%w %s %s: %s", ErrLaunch, l.ID, l.State, strings.Join(l.Reasons, "; "))
		}
		if len(verdictKeys) > 0 {
			if _, err := checkReceipt(l, verdict.NewVerifier(verdictKeys...), launch.Expect{LaunchID: l.ID, ProjectID: project,
				InstanceID: server, Profile: profile, State: launch.StateDelivered}); err != nil {
				return err
			}
		}
		return nil
	}
	return cmd
}

// parseNotAfter reads a duration from now or an RFC 3339 time.
func parseNotAfter(s string, now time.Time) (time.Time, error) {
	if d, err := time.ParseDuration(s); err == nil {
		if d <= 0 {
			return time.Time{}, usagef("--not-after %q is not in the future", s)
		}
		return now.Add(d), nil
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return time.Time{}, usagef("--not-after %q is neither a duration (24h) nor an RFC 3339 time", s)
	}
	if !t.After(now) {
		return time.Time{}, usagef("--not-after %s has passed", s)
	}
	return t, nil
}

func (c *CLI) verdictKeys(files []string) ([]ed25519.PublicKey, error) {
	var keys []ed25519.PublicKey
	for _, f := range files {
		b, err := c.readInput(f)
		if err != nil {
			return nil, err
		}
		k, err := verdict.ParsePublicKeyPEM(b)
		if err != nil {
			return nil, usagef("--public-key %s: %w", f, err)
		}
		keys = append(keys, k)
	}
	return keys, nil
}

// waitLaunch polls a launch until it ends.
func (c *CLI) waitLaunch(ctx context.Context, cl *attestclient.Client, id string, timeout time.Duration) (attestapi.Launch, error) {
	if timeout <= 0 {
		return attestapi.Launch{}, usagef("--wait-timeout must be positive")
	}
	p := c.progress()
	defer p.Done()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tick := time.NewTicker(c.cfg.PollInterval)
	defer tick.Stop()
	for {
		l, err := cl.GetLaunch(ctx, id)
		switch {
		case err == nil && launch.Final(l.State):
			return l, nil
		case err != nil && ctx.Err() == nil:
			return l, err
		}
		p.Update("launch " + id + ": " + l.State)
		select {
		case <-ctx.Done():
			return l, fmt.Errorf("%w %s for launch %s to end (it is %s); see %s launch show %s", ErrWaitTimeout, timeout, id, l.State, Name, id)
		case <-tick.C:
		}
	}
}

func launchRecord(l attestapi.Launch, withHistory bool) output.Record {
	r := output.Record{
		Fields: []output.Column{{Name: "id"}, {Name: "state"}, {Name: "reasons"}, {Name: "profile"}, {Name: "project_id"},
			{Name: "instance_id"}, {Name: "host_id"}, {Name: "host"}, {Name: "not_after"}, {Name: "receipt"}, {Name: "created_at"},
			{Name: "updated_at"}},
		Values: []any{l.ID, l.State, output.Formatted{Text: strings.Join(l.Reasons, "; "), Value: l.Reasons}, l.Profile, l.ProjectID,
			l.InstanceID, l.HostID, l.Host, l.NotAfter, receiptSummary(l.Receipt), l.CreatedAt, l.UpdatedAt},
	}
	if withHistory {
		var lines []string
		for _, e := range l.History {
			s := e.At.UTC().Format(time.RFC3339) + " " + e.State
			if e.Initiator != "" {
				s += " (asked by " + e.Initiator + ")"
			}
			if len(e.Reasons) > 0 {
				s += ": " + strings.Join(e.Reasons, "; ")
			}
			lines = append(lines, s)
		}
		r.Fields = append(r.Fields, output.Column{Name: "history"})
		r.Values = append(r.Values, output.Formatted{Text: strings.Join(lines, "\n"), Value: l.History})
	}
	return r
}

func receiptSummary(sr *launch.SignedReceipt) any {
	if sr == nil {
		return nil
	}
	return output.Formatted{Text: "signed by " + sr.KID + " (verify with: " + Name + " launch verify)", Value: sr}
}

func (c *CLI) launchList() *cobra.Command {
	var (
		all   bool
		limit int
	)
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List your project's launches, newest first (--all-projects: every project's, for administrators)",
		Args:  cobra.NoArgs,
	}
	of := listFlags(cmd, true)
	cmd.Flags().BoolVar(&all, "all-projects", false, "list every project's launches (administrators)")
	cmd.Flags().IntVar(&limit, "limit", 0, fmt.Sprintf("at most this many (1-%d)", attestapi.MaxLimit))
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if cmd.Flags().Changed("limit") && (limit < 1 || limit > attestapi.MaxLimit) {
			return usagef("--limit must be from 1 to %d", attestapi.MaxLimit)
		}
		cl, err := c.client(cmd.Context(), true)
		if err != nil {
			return err
		}
		ls, err := cl.ListLaunches(cmd.Context(), all, limit)
		if err != nil {
			return err
		}
		l := output.List{Columns: []output.Column{{Name: "ID"}, {Name: "State"}, {Name: "Profile"}, {Name: "Instance ID"},
			{Name: "Reasons"}, {Name: "Project ID", Long: true}, {Name: "Host ID", Long: true}, {Name: "Host", Long: true},
			{Name: "Not After", Long: true}, {Name: "Created At", Long: true}}}
		for _, x := range ls {
			l.Rows = append(l.Rows, []any{x.ID, x.State, x.Profile, x.InstanceID,
				output.Formatted{Text: strings.Join(x.Reasons, "; "), Value: x.Reasons}, x.ProjectID, x.HostID, x.Host, x.NotAfter, x.CreatedAt})
		}
		return c.writeList(of, l)
	}
	return cmd
}

func (c *CLI) launchShow() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "show ID",
		Short: "Show a launch: state, reasons, history and its signed receipt",
		Args:  cobra.ExactArgs(1),
	}
	of := showFlags(cmd)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		cl, err := c.client(cmd.Context(), true)
		if err != nil {
			return err
		}
		l, err := cl.GetLaunch(cmd.Context(), args[0])
		if err != nil {
			return err
		}
		return c.writeRecord(of, launchRecord(l, true))
	}
	return cmd
}

func (c *CLI) launchDelete() *cobra.Command {
	return &cobra.Command{
		Use:   "delete ID [ID...]",
		Short: "Delete pending or ended launches (a pending launch's sealed request goes with it)",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := c.client(cmd.Context(), true)
			if err != nil {
				return err
			}
			return c.each(args, "launch", "delete", func(id string) error { return cl.DeleteLaunch(cmd.Context(), id) })
		},
	}
}

func (c *CLI) launchRedeliver() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "redeliver ID",
		Short: "Deliver a delivered launch's secret again after its instance restarted (the host is attested afresh first)",
		Long: "Asks the service to deliver the secret of a delivered launch again, for example after the host rebooted and the\n" +
			"instance restarted. The service attests the host afresh and refuses when it is not trusted, does not satisfy the\n" +
			"launch's profile, or no longer runs the instance; otherwise the host's agent unseals the blob it kept and writes the\n" +
			"secret and a new receipt (state redelivered) into the instance. Prints the launch; exits 1 when refused or failed.\n" +
			"A launch is redelivered at most once per the service's [launch] redelivery_user_interval (default 10s): a\n" +
			"request within it is refused (HTTP 429, redelivery_too_soon, saying when to ask again; exit 1) and runs nothing.\n" +
			"Check the new receipt with `" + Name + " launch verify ID --state redelivered`.",
		Args: cobra.ExactArgs(1),
	}
	of := showFlags(cmd)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		cl, err := c.client(cmd.Context(), true)
		if err != nil {
			return err
		}
		rd, err := cl.RedeliverLaunch(cmd.Context(), args[0])
		if err != nil {
			return err
		}
		r := launchRecord(rd.Launch, true)
		r.Fields = append([]output.Column{{Name: "redelivery"}}, r.Fields...)
		out := rd.Redelivery.State
		if len(rd.Redelivery.Reasons) > 0 {
			out += ": " + strings.Join(rd.Redelivery.Reasons, "; ")
		}
		r.Values = append([]any{output.Formatted{Text: out, Value: rd.Redelivery}}, r.Values...)
		if err := c.writeRecord(of, r); err != nil {
			return err
		}
		if rd.Redelivery.State != launch.StateRedelivered {
			return fmt.Errorf("%w %s not redelivered (%s)", ErrLaunch, rd.Launch.ID, out)
		}
		return nil
	}
	return cmd
}

// checkReceipt verifies a launch's receipt and compares it with e.
func checkReceipt(l attestapi.Launch, vf *verdict.Verifier, e launch.Expect) (*launch.Receipt, error) {
	if l.Receipt == nil {
		return nil, fmt.Errorf("%w: launch %s (%s) has no receipt yet", ErrLaunch, l.ID, l.State)
	}
	return verifyReceipt(*l.Receipt, vf, e)
}

func verifyReceipt(sr launch.SignedReceipt, vf *verdict.Verifier, e launch.Expect) (*launch.Receipt, error) {
	r, err := launch.VerifyReceipt(vf, sr)
	if err != nil {
		return nil, fmt.Errorf("%w: receipt does not verify: %w", ErrLaunch, err)
	}
	if err := r.Check(e); err != nil {
		return r, fmt.Errorf("%w: receipt is not the one expected: %w", ErrLaunch, err)
	}
	return r, nil
}

func (c *CLI) launchVerify() *cobra.Command {
	var (
		keyFiles                            []string
		receiptFile, server, profile, state string
		hostID, policyKeyFile               string
	)
	cmd := &cobra.Command{
		Use:   "verify [ID] --public-key PEM",
		Short: "Verify a launch's signed receipt against the pinned verdict key",
		Long: "Verify the signed receipt of launch ID (fetched from the service) or in --receipt-file (the\n" +
			launch.ReceiptFile + " an instance received, offline) against the pinned verdict key(s): the\n" +
			"Ed25519 signature over the exact receipt bytes, the receipt's shape, and that it is the launch,\n" +
			"project (this token's, when online), instance (--server), hostId (--host-id), profile and state\n" +
			"(--state; default delivered, or sealed for a receipt file) expected. With --policy-key (the\n" +
			"policy-signing key's PEM, from '" + Name + " key list --use policy' and checked with the operator),\n" +
			"also that the secret is sealed under TPM2_PolicyAuthorize by that key: its TPM can unseal it only\n" +
			"in PCR states that key approved. Exits 1 when it does not.",
		Args: cobra.MaximumNArgs(1),
	}
	of := showFlags(cmd)
	f := cmd.Flags()
	f.StringArrayVar(&keyFiles, "public-key", nil, "PEM file of a pinned verdict key (repeatable)")
	f.StringVar(&receiptFile, "receipt-file", "", "verify this signed receipt file instead of fetching ID's")
	f.StringVar(&server, "server", "", "the instance the receipt must name")
	f.StringVar(&hostID, "host-id", "", "the hostId the receipt must name")
	f.StringVar(&profile, "profile", "", "the profile the receipt must name")
	f.StringVar(&state, "state", "", "the state the receipt must have (default delivered; sealed with --receipt-file)")
	f.StringVar(&policyKeyFile, "policy-key", "", "PEM file of the pinned policy-signing key the secret must be sealed under")
	_ = cmd.MarkFlagRequired("public-key")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		if (len(args) == 1) == (receiptFile != "") {
			return usagef("give a launch ID or --receipt-file, not both or neither")
		}
		if state != "" && !launch.ValidState(state) {
			return usagef("--state %q is not a launch state", state)
		}
		keys, err := c.verdictKeys(keyFiles)
		if err != nil {
			return err
		}
		vf := verdict.NewVerifier(keys...)
		var pk *policykey.PublicKey
		if policyKeyFile != "" {
			b, err := c.readInput(policyKeyFile)
			if err != nil {
				return err
			}
			if pk, err = policyKey(string(b)); err != nil {
				return usagef("--policy-key %s: %w", policyKeyFile, err)
			}
		}
		e := launch.Expect{InstanceID: server, Profile: profile, State: state, HostID: hostID}
		var r *launch.Receipt
		if receiptFile != "" {
			if e.State == "" {
				e.State = launch.StateSealed
			}
			b, err := c.readInput(receiptFile)
			if err != nil {
				return err
			}
			sr, err := launch.ParseSignedReceipt(b)
			if err != nil {
				return fmt.Errorf("%w: %s: %w", ErrLaunch, receiptFile, err)
			}
			r, err = verifyReceipt(sr, vf, e)
			if err != nil {
				return err
			}
		} else {
			if e.State == "" {
				e.State = launch.StateDelivered
			}
			ctx := cmd.Context()
			cl, err := c.client(ctx, true)
			if err != nil {
				return err
			}
			if e.ProjectID, err = c.sess.ProjectID(ctx); err != nil {
				return err
			}
			e.LaunchID = args[0]
			l, err := cl.GetLaunch(ctx, args[0])
			if err != nil {
				return err
			}
			if r, err = checkReceipt(l, vf, e); err != nil {
				return err
			}
		}
		if pk != nil {
			if err := sealedUnder(r, pk); err != nil {
				return err
			}
		}
		return c.writeRecord(of, receiptRecord(r))
	}
	return cmd
}

// sealedUnder checks that r's secret is sealed under TPM2_PolicyAuthorize
// by pk: the receipt names pk and its policy digest is pk's authorize
// policy, computed here from the pinned key (not taken from the service).
func sealedUnder(r *launch.Receipt, pk *policykey.PublicKey) error {
	want, err := importblob.AuthorizePolicy(pk.TPMName())
	if err != nil {
		return fmt.Errorf("%w: policy digest of the pinned policy key: %w", ErrLaunch, err)
	}
	if r.PolicyKey != pk.KID() || r.PCRPolicyDigest != hex.EncodeToString(want) {
		return fmt.Errorf("%w: the secret is not sealed under the pinned policy key %s (receipt: policy_key %q, pcr_policy_digest %q)",
			ErrLaunch, pk.KID(), r.PolicyKey, r.PCRPolicyDigest)
	}
	return nil
}

func receiptRecord(r *launch.Receipt) output.Record {
	return output.Record{
		Fields: []output.Column{{Name: "signature"}, {Name: "launch_id"}, {Name: "state"}, {Name: "reasons"}, {Name: "project_id"},
			{Name: "instance_id"}, {Name: "host_id"}, {Name: "profile"}, {Name: "verdict_seq"}, {Name: "evidence_digest"},
			{Name: "pcrs"}, {Name: "pcr_policy_digest"}, {Name: "policy_key"}, {Name: "verified_at"}, {Name: "sealed_at"}, {Name: "delivered_at"},
			{Name: "issuer"}, {Name: "issued_at"}},
		Values: []any{"valid", r.LaunchID, r.State, r.Reasons, r.ProjectID, r.InstanceID, r.HostID, r.Profile, r.VerdictSeq,
			r.EvidenceDigest, r.PCRs, r.PCRPolicyDigest, r.PolicyKey, r.VerifiedAt, r.SealedAt, r.DeliveredAt, r.Issuer, r.IssuedAt},
	}
}

func (c *CLI) launchProve() *cobra.Command {
	var secretFile, challenge string
	cmd := &cobra.Command{
		Use:   "prove --challenge C",
		Short: "Inside the instance: answer a challenge with the delivered secret (offline)",
		Long: "Print HMAC-SHA256(secret, \"" + launch.ProofLabel + "\" ‖ challenge) in hex, with the secret the\n" +
			"agent delivered (" + DefaultGuestSecret + "). The tenant checks it with '" + Name + " launch check':\n" +
			"only an instance that received the secret can answer a challenge it did not see before.\n" +
			"Needs no credentials.",
		Args: cobra.NoArgs,
	}
	cmd.Flags().StringVar(&secretFile, "secret-file", DefaultGuestSecret, "the delivered secret")
	cmd.Flags().StringVar(&challenge, "challenge", "", "the tenant's challenge (required)")
	_ = cmd.MarkFlagRequired("challenge")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		secret, err := os.ReadFile(secretFile)
		if err != nil {
			// %v: a file error is no network error for the exit status.
			return fmt.Errorf("%w: no delivered secret: %v", ErrLaunch, err) //nolint:errorlint // see above
		}
		defer clear(secret)
		p, err := launch.Prove(secret, []byte(challenge))
		if err != nil {
			return usagef("%w", err)
		}
		fmt.Fprintln(c.cfg.Stdout, p)
		return nil
	}
	return cmd
}

func (c *CLI) launchCheck() *cobra.Command {
	var secretFile, challenge, proof string
	cmd := &cobra.Command{
		Use:   "check --secret-file F --challenge C --proof P",
		Short: "Check an instance's proof against your copy of the secret (offline)",
		Args:  cobra.NoArgs,
	}
	cmd.Flags().StringVar(&secretFile, "secret-file", "", "your copy of the secret, - for stdin (required)")
	cmd.Flags().StringVar(&challenge, "challenge", "", "the challenge you gave (required)")
	cmd.Flags().StringVar(&proof, "proof", "", "what 'launch prove' printed in the instance (required)")
	for _, f := range []string{"secret-file", "challenge", "proof"} {
		_ = cmd.MarkFlagRequired(f)
	}
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		secret, err := c.readSecret(secretFile)
		if err != nil {
			return err
		}
		defer clear(secret)
		if err := launch.CheckProof(secret, []byte(challenge), proof); err != nil {
			return fmt.Errorf("%w: %w: the instance does not hold this secret", ErrLaunch, err)
		}
		fmt.Fprintln(c.cfg.Stdout, "proof matches: the instance holds the secret")
		return nil
	}
	return cmd
}
