// Package daemon is the runner the Trustpool daemons share, so that their
// main packages stay a few lines long and behave alike:
//
//   - the command line: -config-file, -set section.key=value, -check-config,
//     -version and -help (also --help), plus optional subcommands;
//   - loading and validating the configuration with package config;
//   - the logger (log/slog text on stderr, debug level from the
//     configuration, no timestamps of its own under journald);
//   - signals: SIGINT and SIGTERM end the daemon's context; SIGHUP, which
//     DevStack's units send for "reload", is logged and otherwise ignored
//     instead of killing the process;
//   - the systemd notification socket ($NOTIFY_SOCKET), handed to the daemon
//     (which sends READY=1 itself once it really serves) and used here for
//     STOPPING=1 when a signal arrives;
//   - the version, from the build information.
//
// Exit codes: 0 after a clean stop or a successful -check-config, 1 when the
// daemon fails while running, 2 for a usage or configuration error (the
// packaged units do not restart on 2: restarting cannot fix a bad file).
package daemon

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/trustpool/trustpool/internal/config"
	"github.com/trustpool/trustpool/internal/sdnotify"
)

// Exit codes of [Program.Execute].
const (
	ExitOK     = 0
	ExitFailed = 1
	ExitUsage  = 2
)

// Program describes one daemon.
type Program[C any] struct {
	// Name is the command name, e.g. "trustpool-agent".
	Name string
	// Summary says what the daemon is, in a sentence or two; -help prints it
	// first.
	Summary string
	// ConfigFile is the configuration file read when -config-file is not
	// given (it may then be missing).
	ConfigFile string
	// Sample names where a commented sample configuration can be found.
	Sample string
	// DefaultConfig returns the configuration holding every default.
	DefaultConfig func() C
	// Debug reports whether the loaded configuration asks for debug logs.
	Debug func(*C) bool
	// Run starts the daemon and runs it until ctx ends. It returns ctx's
	// error (or nil) after a clean stop and any other error when it fails.
	Run func(ctx context.Context, cfg C, env Env) error
	// Commands are the subcommands, chosen by the first argument.
	Commands []Command
}

// Command is a subcommand such as "inspect-eventlog FILE".
type Command struct {
	// Name is the first argument that selects the command.
	Name string
	// Usage is the argument synopsis after the name ("FILE").
	Usage string
	// Summary is one line for -help.
	Summary string
	// Run runs the command with the remaining arguments and returns the
	// exit code.
	Run func(args []string, stdout, stderr io.Writer) int
}

// Env is what the runner hands to [Program.Run].
type Env struct {
	// Logger is the daemon's logger.
	Logger *slog.Logger
	// NotifySocket is $NOTIFY_SOCKET ("" outside systemd).
	NotifySocket string
	// ConfigFile is the configuration file named on the command line or the
	// default one (which may not exist).
	ConfigFile string
}

// IO is the process environment [Program.Execute] works with, so tests can
// run a daemon in-process.
type IO struct {
	Stdout, Stderr io.Writer
	// Environ is the environment in os.Environ form.
	Environ []string
}

// Main runs the program with the process's arguments and environment and
// exits with its exit code.
func Main[C any](p Program[C]) {
	os.Exit(p.Execute(context.Background(), os.Args[1:], IO{Stdout: os.Stdout, Stderr: os.Stderr, Environ: os.Environ()}))
}

// Execute parses args (without the program name), then runs a subcommand,
// prints help or the version, checks the configuration, or runs the daemon
// until ctx ends or SIGINT/SIGTERM arrives. It returns the exit code.
func (p Program[C]) Execute(ctx context.Context, args []string, io IO) int {
	if len(args) > 0 {
		for _, c := range p.Commands {
			if args[0] == c.Name {
				return c.Run(args[1:], io.Stdout, io.Stderr)
			}
		}
	}
	fs := flag.NewFlagSet(p.Name, flag.ContinueOnError)
	fs.SetOutput(io.Stderr)
	var flags config.Flags
	flags.Register(fs, p.ConfigFile)
	check := fs.Bool("check-config", false, "load and validate the configuration, print the result and exit; opens no TPM, socket, database or connection")
	version := fs.Bool("version", false, "print the version and exit")
	fs.Usage = func() { p.usage(fs, io.Stdout) }
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return ExitOK
		}
		fmt.Fprintf(io.Stderr, "Run '%s -help' for usage.\n", p.Name)
		return ExitUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(io.Stderr, "%s: unexpected argument %q (run '%s -help' for usage)\n", p.Name, fs.Arg(0), p.Name)
		return ExitUsage
	}
	if *version {
		fmt.Fprintln(io.Stdout, VersionLine(p.Name))
		return ExitOK
	}

	opts := flags.LoadOptions()
	opts.Environ = io.Environ
	if opts.Environ == nil {
		opts.Environ = []string{}
	}
	cfg := p.DefaultConfig()
	if err := config.Load(&cfg, opts); err != nil {
		fmt.Fprintf(io.Stderr, "%s: configuration %s is not valid:\n%s\n", p.Name, describeFile(opts), indent(err))
		return ExitUsage
	}
	if *check {
		fmt.Fprintf(io.Stdout, "%s: configuration %s is valid\n", p.Name, describeFile(opts))
		return ExitOK
	}

	env := Env{Logger: newLogger(io, p.Debug != nil && p.Debug(&cfg)), NotifySocket: lookup(io.Environ, "NOTIFY_SOCKET"), ConfigFile: opts.File}
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	go func() {
		for {
			select {
			case <-hup:
				env.Logger.Warn("SIGHUP received: configuration reload is not supported; restart the service to apply changes")
			case <-ctx.Done():
				return
			}
		}
	}()
	go func() {
		<-ctx.Done()
		// Tell systemd at once; the daemon may take a while to drain.
		_, _ = sdnotify.Notify(env.NotifySocket, sdnotify.Stopping)
	}()
	env.Logger.Info("starting", "version", Version(), "config_file", describeFile(opts))
	err := p.Run(ctx, cfg, env)
	if err != nil && !errors.Is(err, context.Canceled) {
		env.Logger.Error(p.Name+" failed", "error", err)
		_, _ = sdnotify.Notify(env.NotifySocket, sdnotify.Status("failed: "+err.Error()))
		return ExitFailed
	}
	env.Logger.Info("stopped")
	return ExitOK
}

// usage is -help: what the daemon is, where its configuration lives, its
// commands and flags.
func (p Program[C]) usage(fs *flag.FlagSet, w io.Writer) {
	fmt.Fprintf(w, "%s: %s\n\n", p.Name, p.Summary)
	fmt.Fprintf(w, "Usage:\n  %s [flags]\n", p.Name)
	for _, c := range p.Commands {
		fmt.Fprintf(w, "  %s %s %s\n      %s\n", p.Name, c.Name, c.Usage, c.Summary)
	}
	fmt.Fprintf(w, "\nConfiguration: %s (TOML; another file with -config-file).\n", p.ConfigFile)
	if p.Sample != "" {
		fmt.Fprintf(w, "A commented sample with every key: %s.\n", p.Sample)
	}
	fmt.Fprintf(w, "Any key can also be set with the environment variable TRUSTPOOL_<SECTION>__<KEY>\n"+
		"or with -set section.key=value; unknown keys are errors. Check a file with -check-config.\n\nFlags:\n")
	out := fs.Output()
	fs.SetOutput(w)
	fs.PrintDefaults()
	fs.SetOutput(out)
}

func describeFile(o config.LoadOptions) string {
	if o.FileOptional {
		if _, err := os.Stat(o.File); errors.Is(err, os.ErrNotExist) {
			return o.File + " (missing: defaults and environment only)"
		}
	}
	return o.File
}

// indent puts every line of err's message on its own indented line
// (config.Load joins its problems with newlines).
func indent(err error) string {
	return "  " + strings.ReplaceAll(err.Error(), "\n", "\n  ")
}

func lookup(environ []string, name string) string {
	for _, kv := range environ {
		if k, v, ok := strings.Cut(kv, "="); ok && k == name {
			return v
		}
	}
	return ""
}

// newLogger logs text to stderr. Under journald ($JOURNAL_STREAM set), which
// stamps every line itself, the time attribute is left out.
func newLogger(io IO, debug bool) *slog.Logger {
	opts := &slog.HandlerOptions{Level: slog.LevelInfo}
	if debug {
		opts.Level = slog.LevelDebug
	}
	if lookup(io.Environ, "JOURNAL_STREAM") != "" {
		opts.ReplaceAttr = func(groups []string, a slog.Attr) slog.Attr {
			if len(groups) == 0 && a.Key == slog.TimeKey {
				return slog.Attr{}
			}
			return a
		}
	}
	return slog.New(slog.NewTextHandler(io.Stderr, opts))
}
