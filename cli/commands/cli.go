// Package commands is the trustpool command line client: the command tree
// (hosts, profiles, keys, audit, offline verdict verification, trusted
// launches, shell completion), its OpenStack-style authentication options and
// python-openstackclient-style output. cli/main.go is a thin wrapper:
//
//	err := commands.New(commands.DefaultConfig()).Run(ctx, os.Args[1:])
//	os.Exit(commands.ExitCode(err))
//
// Every command group lives in its own file and registers itself in
// newRoot; a new group (e.g. trusted launch) adds a file and one line.
//
// Errors are printed as one line; the exit status says what kind of
// failure it was (see the Exit constants). Nothing secret is printed: the
// --debug request log masks tokens and passwords (package httplog).
package commands

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"golang.org/x/sys/unix"

	"github.com/trustpool/trustpool/cli/internal/output"
	"github.com/trustpool/trustpool/cli/internal/progress"
	"github.com/trustpool/trustpool/cli/internal/session"
	"github.com/trustpool/trustpool/internal/attestclient"
	"github.com/trustpool/trustpool/internal/daemon"
	"github.com/trustpool/trustpool/keystone-auth/credentials"
)

// Exit statuses.
const (
	ExitOK = 0
	// ExitError: any other failure (a conflict, a refused request, a
	// verdict that does not verify).
	ExitError = 1
	// ExitUsage: the command line (or the OS_* environment) is wrong.
	ExitUsage = 2
	// ExitAuth: Keystone refused the credentials (401), or the policy
	// refused the request (403).
	ExitAuth = 3
	// ExitNotFound: the host, profile or route does not exist (404).
	ExitNotFound = 4
	// ExitServer: the service failed (5xx) or could not be reached.
	ExitServer = 5
)

// Name is the command's name.
const Name = "trustpool"

// Config is what the CLI needs from its process.
type Config struct {
	Stdin          io.Reader
	Stdout, Stderr io.Writer
	// StdoutWidth is stdout's width when it is a terminal, else 0.
	StdoutWidth func() int
	// StderrTerminal reports whether stderr is a terminal (progress lines).
	StderrTerminal bool
	// Version is printed by --version (default: the version release
	// builds stamp, internal/daemon.Version).
	Version string
	// Now is the clock (default time.Now).
	Now func() time.Time
	// PollInterval is how often waiting commands poll (default 1 s).
	PollInterval time.Duration
}

// DefaultConfig is the process's standard streams.
func DefaultConfig() Config {
	return Config{
		Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr,
		StdoutWidth:    func() int { return terminalWidth(int(os.Stdout.Fd())) },
		StderrTerminal: terminalWidth(int(os.Stderr.Fd())) > 0,
	}
}

func terminalWidth(fd int) int {
	ws, err := unix.IoctlGetWinsize(fd, unix.TIOCGWINSZ)
	if err != nil {
		return 0
	}
	return int(ws.Col)
}

// CLI is one invocation of the command.
type CLI struct {
	cfg  Config
	root *cobra.Command

	auth    authFlags
	debug   bool
	timeout time.Duration
	started bool // a command's RunE was reached: later errors are not usage errors

	sess *session.Session
}

// New builds the command tree.
func New(cfg Config) *CLI {
	if cfg.Stdin == nil {
		cfg.Stdin = strings.NewReader("")
	}
	if cfg.Stdout == nil {
		cfg.Stdout = io.Discard
	}
	if cfg.Stderr == nil {
		cfg.Stderr = io.Discard
	}
	if cfg.StdoutWidth == nil {
		cfg.StdoutWidth = func() int { return 0 }
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.PollInterval <= 0 {
		cfg.PollInterval = time.Second
	}
	if cfg.Version == "" {
		cfg.Version = daemon.Version()
	}
	c := &CLI{cfg: cfg}
	c.root = c.newRoot()
	return c
}

// Run runs the command line args (without the program name).
func (c *CLI) Run(ctx context.Context, args []string) error {
	// The daemons take Go-style -help and -version; accept them here too
	// (packaging builds manual pages from -help).
	if len(args) == 1 && (args[0] == "-help" || args[0] == "-version") {
		args = []string{"-" + args[0]}
	}
	c.root.SetArgs(args)
	err := c.root.ExecuteContext(ctx)
	if err == nil {
		return nil
	}
	if !c.started {
		var ue *usageError
		if !errors.As(err, &ue) {
			err = &usageError{err: err}
		}
	}
	inCLITerms(err)
	msg := strings.Join(strings.Fields(err.Error()), " ")
	fmt.Fprintf(c.cfg.Stderr, "%s: %s\n", Name, msg)
	if c.debug {
		fmt.Fprintf(c.cfg.Stderr, "%s: exit status %d\n", Name, ExitCode(err))
	}
	return err
}

// inCLITerms rewords, in place, a service refusal that force overrides
// (force_required in the error envelope) so that it names the CLI's
// --force instead of the API's force parameter: host set, profile delete,
// profile version set-state and host approve-ek all take --force. It
// recognises the refusal by that field, never by its message; the status,
// reason, request id and exit code stay the service's. Rewording twice
// changes nothing.
func inCLITerms(err error) {
	var ae *attestclient.Error
	if !errors.As(err, &ae) || !ae.API.ForceRequired {
		return
	}
	refusal := ae.API.Refusal
	if refusal == "" {
		refusal = "the service refuses this unless forced"
	}
	ae.API.Message = refusal + "; repeat with --force to do it anyway"
}

// usageError is a mistake on the command line.
type usageError struct{ err error }

func (e *usageError) Error() string { return e.err.Error() + " (see --help)" }
func (e *usageError) Unwrap() error { return e.err }

func usagef(format string, a ...any) error { return &usageError{err: fmt.Errorf(format, a...)} }

// ExitCode is the exit status for err (the result of Run).
func ExitCode(err error) int {
	if err == nil {
		return ExitOK
	}
	var ue *usageError
	var ae *attestclient.Error
	var netErr net.Error
	var urlErr *url.Error
	switch {
	case errors.As(err, &ue), errors.Is(err, output.ErrUsage), errors.Is(err, session.ErrOptions):
		return ExitUsage
	case errors.As(err, &ae):
		switch {
		case ae.StatusCode == http.StatusUnauthorized || ae.StatusCode == http.StatusForbidden:
			return ExitAuth
		case ae.StatusCode == http.StatusNotFound:
			return ExitNotFound
		case ae.StatusCode >= 500:
			return ExitServer
		}
		return ExitError
	case errors.As(err, &urlErr), errors.As(err, &netErr), errors.Is(err, context.DeadlineExceeded):
		// Keystone or the service could not be reached.
		return ExitServer
	case errors.Is(err, credentials.ErrAuthentication):
		return ExitAuth
	}
	return ExitError
}

// authFlags are the --os-* options; unset ones come from OS_* variables.
type authFlags struct {
	o        session.Options
	insecure bool
}

// envFlag binds a string flag to an environment variable.
type envFlag struct {
	name, env, usage string
	p                *string
}

func (c *CLI) authFlagList() []envFlag {
	o := &c.auth.o
	return []envFlag{
		{"os-cloud", "OS_CLOUD", "cloud name in clouds.yaml (and secure.yaml)", &o.Cloud},
		{"os-auth-type", "OS_AUTH_TYPE", "authentication plugin: password or v3applicationcredential", &o.AuthType},
		{"os-auth-url", "OS_AUTH_URL", "Keystone URL", &o.AuthURL},
		{"os-username", "OS_USERNAME", "user name", &o.Username},
		{"os-user-id", "OS_USER_ID", "user ID", &o.UserID},
		{"os-password", "OS_PASSWORD", "user's password", &o.Password},
		{"os-user-domain-name", "OS_USER_DOMAIN_NAME", "domain name of the user", &o.UserDomainName},
		{"os-user-domain-id", "OS_USER_DOMAIN_ID", "domain ID of the user", &o.UserDomainID},
		{"os-project-name", "OS_PROJECT_NAME", "project to scope to", &o.ProjectName},
		{"os-project-id", "OS_PROJECT_ID", "project ID to scope to", &o.ProjectID},
		{"os-project-domain-name", "OS_PROJECT_DOMAIN_NAME", "domain name of the project", &o.ProjectDomainName},
		{"os-project-domain-id", "OS_PROJECT_DOMAIN_ID", "domain ID of the project", &o.ProjectDomainID},
		{"os-domain-name", "OS_DOMAIN_NAME", "domain to scope to", &o.DomainName},
		{"os-domain-id", "OS_DOMAIN_ID", "domain ID to scope to", &o.DomainID},
		{"os-system-scope", "OS_SYSTEM_SCOPE", `system scope ("all")`, &o.SystemScope},
		{"os-application-credential-id", "OS_APPLICATION_CREDENTIAL_ID", "application credential ID", &o.ApplicationCredentialID},
		{"os-application-credential-name", "OS_APPLICATION_CREDENTIAL_NAME", "application credential name", &o.ApplicationCredentialName},
		{"os-application-credential-secret", "OS_APPLICATION_CREDENTIAL_SECRET", "application credential secret", &o.ApplicationCredentialSecret},
		{"os-region-name", "OS_REGION_NAME", "region of the endpoints", &o.RegionName},
		{"os-interface", "OS_INTERFACE", "endpoint interface: public, internal or admin (default public)", &o.Interface},
		{"os-cacert", "OS_CACERT", "CA bundle to verify TLS servers", &o.CACert},
		{"os-cert", "OS_CERT", "client certificate (PEM)", &o.Cert},
		{"os-key", "OS_KEY", "client certificate key (PEM)", &o.Key},
		{"os-attestation-url", "OS_ATTESTATION_URL", "attestation service endpoint, instead of the catalog's", &o.AttestationURL},
	}
}

func (c *CLI) newRoot() *cobra.Command {
	root := &cobra.Command{
		Use:   Name,
		Short: "Command line client of the Trustpool attestation service",
		Long: Name + ": command line client of the Trustpool attestation service, for operators and tenants.\n\n" +
			"Trustpool attests compute hosts with their TPMs and tells Nova which hosts are trusted.\n" +
			"This command manages hosts, profiles (reference values) and keys, reads the audit log,\n" +
			"verifies signed verdicts offline, and runs trusted launches for tenants: a secret that\n" +
			"only an attested host's TPM can unseal, delivered into their instance with a signed receipt.\n\n" +
			"Authentication is OpenStack's: --os-cloud with clouds.yaml (and secure.yaml), or the\n" +
			"OS_* variables of an openrc file (password or application credential). The service's\n" +
			"endpoint comes from the Keystone catalog (service type \"" + session.ServiceType + "\") unless\n" +
			"--os-attestation-url is given.\n\n" +
			"Exit status: 0 success, 1 error, 2 usage error, 3 authentication or authorization\n" +
			"failure, 4 not found, 5 server error or service unreachable.",
		Version:           c.cfg.Version,
		SilenceErrors:     true,
		SilenceUsage:      true,
		DisableAutoGenTag: true,
		PersistentPreRunE: func(cmd *cobra.Command, args []string) error {
			// Cobra checks required flags and flag groups after this hook;
			// check them first so that they count as usage errors.
			if err := cmd.ValidateRequiredFlags(); err != nil {
				return &usageError{err: err}
			}
			if err := cmd.ValidateFlagGroups(); err != nil {
				return &usageError{err: err}
			}
			c.started = true
			return c.resolveAuth(cmd)
		},
	}
	root.SetIn(c.cfg.Stdin)
	root.SetOut(c.cfg.Stdout)
	root.SetErr(c.cfg.Stderr)
	root.SetVersionTemplate(Name + " {{.Version}}\n")
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return &usageError{err: err} })
	pf := root.PersistentFlags()
	for _, f := range c.authFlagList() {
		pf.StringVar(f.p, f.name, "", f.usage+" (Env: "+f.env+")")
	}
	pf.BoolVar(&c.auth.insecure, "insecure", false, "do not verify TLS certificates (Env: OS_INSECURE)")
	pf.DurationVar(&c.timeout, "timeout", 60*time.Second, "limit for each HTTP request")
	pf.BoolVar(&c.debug, "debug", false, "print each request and response to stderr (tokens and secrets masked)")
	pf.SortFlags = false

	root.AddGroup(&cobra.Group{ID: "api", Title: "Commands:"})
	for _, g := range []*cobra.Command{c.hostCommand(), c.profileCommand(), c.keyCommand(), c.auditCommand(), c.verdictCommand(),
		c.launchCommand()} {
		g.GroupID = "api"
		root.AddCommand(g)
	}
	root.SetCompletionCommandGroupID("api")
	root.SetHelpCommandGroupID("api")
	return root
}

// resolveAuth fills the unset --os-* options from the environment and
// checks the ones with a fixed set of values.
func (c *CLI) resolveAuth(cmd *cobra.Command) error {
	flags := cmd.Flags()
	for _, f := range c.authFlagList() {
		if !flags.Changed(f.name) {
			*f.p = os.Getenv(f.env)
		}
	}
	o := &c.auth.o
	o.Insecure, o.InsecureSet = c.auth.insecure, flags.Changed("insecure")
	if !o.InsecureSet {
		if v := os.Getenv("OS_INSECURE"); v != "" {
			b, err := strconv.ParseBool(v)
			if err != nil {
				return usagef("OS_INSECURE=%q is not true or false", v)
			}
			o.Insecure, o.InsecureSet = b, true
		}
	}
	switch o.Interface {
	case "", "public", "internal", "admin":
	default:
		return usagef("--os-interface %q is not public, internal or admin", o.Interface)
	}
	switch strings.ToLower(o.AuthType) {
	case "", "password", "v3password", "v3applicationcredential", "applicationcredential", "application_credential":
	default:
		return usagef("--os-auth-type %q is not supported (password or v3applicationcredential)", o.AuthType)
	}
	if c.timeout <= 0 {
		return usagef("--timeout must be positive")
	}
	o.Timeout = c.timeout
	o.UserAgent = Name + "/" + c.cfg.Version
	if c.debug {
		o.Debug = c.cfg.Stderr
	}
	c.sess = session.New(*o)
	return nil
}

// client returns the API client, authenticating when needAuth.
func (c *CLI) client(ctx context.Context, needAuth bool) (*attestclient.Client, error) {
	return c.sess.Client(ctx, needAuth)
}

// groupCommand is a command that only holds subcommands: run without one,
// it shows its help; with an unknown one, it is a usage error.
func (c *CLI) groupCommand(use, short string) *cobra.Command {
	return &cobra.Command{
		Use:                        use,
		Short:                      short,
		Args:                       cobra.ArbitraryArgs,
		SuggestionsMinimumDistance: 2,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return cmd.Help()
			}
			msg := fmt.Sprintf("unknown command %q for %q", args[0], cmd.CommandPath())
			if s := cmd.SuggestionsFor(args[0]); len(s) > 0 {
				msg += "; did you mean " + strings.Join(s, " or ") + "?"
			}
			return &usageError{err: errors.New(msg)}
		},
	}
}

// outputFlags are the formatting options of one command.
type outputFlags struct {
	o        output.Options
	long     bool
	ascend   bool
	maxWidth int
	fitWidth bool
}

// listFlags adds the list formatting options; withLong adds --long.
func listFlags(cmd *cobra.Command, withLong bool) *outputFlags {
	of := &outputFlags{}
	f := cmd.Flags()
	f.StringVarP(&of.o.Format, "format", "f", output.FormatTable, "output format: "+strings.Join(output.ListFormats, ", "))
	f.StringArrayVarP(&of.o.Columns, "column", "c", nil, "show this column (repeat for more; default: all)")
	f.StringArrayVar(&of.o.SortColumns, "sort-column", nil, "sort by this column (repeat for more)")
	f.BoolVar(&of.ascend, "sort-ascending", false, "sort ascending (the default)")
	f.BoolVar(&of.o.SortDescending, "sort-descending", false, "sort descending")
	cmd.MarkFlagsMutuallyExclusive("sort-ascending", "sort-descending")
	f.BoolVar(&of.o.NoIndent, "noindent", false, "JSON on one line")
	f.StringVar(&of.o.Quote, "quote", output.QuoteNonNumeric, "CSV quoting: all, minimal, none, nonnumeric")
	f.BoolVar(&of.o.PrintEmpty, "print-empty", false, "print the table headings when there is nothing to list")
	tableFlags(f, of)
	if withLong {
		f.BoolVar(&of.long, "long", false, "show more columns")
	}
	registerCompletion(cmd, "format", output.ListFormats)
	return of
}

// showFlags adds the record formatting options.
func showFlags(cmd *cobra.Command) *outputFlags {
	of := &outputFlags{}
	f := cmd.Flags()
	f.StringVarP(&of.o.Format, "format", "f", output.FormatTable, "output format: "+strings.Join(output.RecordFormats, ", "))
	f.StringArrayVarP(&of.o.Columns, "column", "c", nil, "show this field (repeat for more; default: all)")
	f.BoolVar(&of.o.NoIndent, "noindent", false, "JSON on one line")
	f.StringVar(&of.o.Prefix, "prefix", "", "prefix for the variable names of the shell format")
	tableFlags(f, of)
	registerCompletion(cmd, "format", output.RecordFormats)
	return of
}

func tableFlags(f *pflag.FlagSet, of *outputFlags) {
	f.IntVar(&of.maxWidth, "max-width", 0, "table width limit; <1: the terminal's when fitting (Env: CLIFF_MAX_TERM_WIDTH)")
	f.BoolVar(&of.fitWidth, "fit-width", false, "fit the table to the terminal even when output is not one (Env: CLIFF_FIT_WIDTH)")
}

func registerCompletion(cmd *cobra.Command, flag string, values []string) {
	_ = cmd.RegisterFlagCompletionFunc(flag, cobra.FixedCompletions(values, cobra.ShellCompDirectiveNoFileComp))
}

// options resolves the table width: --max-width, else CLIFF_MAX_TERM_WIDTH,
// else the terminal's width when stdout is a terminal or fitting was asked
// for ($COLUMNS, or 80, when stdout is not a terminal).
func (c *CLI) options(of *outputFlags) output.Options {
	o := of.o
	switch {
	case of.maxWidth > 0:
		o.Width = of.maxWidth
	case envInt("CLIFF_MAX_TERM_WIDTH") > 0:
		o.Width = envInt("CLIFF_MAX_TERM_WIDTH")
	default:
		w := c.cfg.StdoutWidth()
		fit := w > 0 || of.fitWidth || envBool("CLIFF_FIT_WIDTH")
		if fit && w == 0 {
			w = envInt("COLUMNS")
			if w <= 0 {
				w = 80
			}
		}
		if fit {
			o.Width = w
		}
	}
	return o
}

func envInt(name string) int {
	n, _ := strconv.Atoi(os.Getenv(name))
	return n
}

func envBool(name string) bool {
	b, _ := strconv.ParseBool(os.Getenv(name))
	return b
}

// writeList prints a list result.
func (c *CLI) writeList(of *outputFlags, l output.List) error {
	return l.Write(c.cfg.Stdout, c.options(of), of.long)
}

// writeRecord prints a single result.
func (c *CLI) writeRecord(of *outputFlags, r output.Record) error {
	return r.Write(c.cfg.Stdout, c.options(of), of.long)
}

// progress returns a progress line on stderr (silent unless a terminal).
func (c *CLI) progress() *progress.Line {
	return progress.New(c.cfg.Stderr, c.cfg.StderrTerminal && !c.debug, c.cfg.Now)
}
