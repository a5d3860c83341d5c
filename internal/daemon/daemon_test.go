package daemon

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

type testConfig struct {
	Default struct {
		Name  string `toml:"name"`
		Debug bool   `toml:"debug"`
	} `toml:"DEFAULT"`
}

func (c *testConfig) Validate() error {
	if c.Default.Name == "" {
		return errors.New("DEFAULT.name: is required")
	}
	return nil
}

// program returns a test daemon whose Run calls run; the default
// configuration file is missing unless the test writes it.
func program(t *testing.T, run func(context.Context, testConfig, Env) error) Program[testConfig] {
	t.Helper()
	return Program[testConfig]{
		Name:          "trustpool-test",
		Summary:       "a daemon for tests.",
		ConfigFile:    filepath.Join(t.TempDir(), "test.toml"),
		Sample:        "etc/test.toml.sample",
		DefaultConfig: func() testConfig { return testConfig{} },
		Debug:         func(c *testConfig) bool { return c.Default.Debug },
		Run:           run,
		Commands: []Command{{Name: "echo", Usage: "WORDS...", Summary: "print the words",
			Run: func(args []string, stdout, _ io.Writer) int {
				_, _ = stdout.Write([]byte(strings.Join(args, " ") + "\n"))
				return 7
			}}},
	}
}

func writeFile(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "c.toml")
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func mustNotRun(t *testing.T) func(context.Context, testConfig, Env) error {
	t.Helper()
	return func(context.Context, testConfig, Env) error {
		t.Error("Run was called")
		return nil
	}
}

type result struct {
	code           int
	stdout, stderr string
}

func execute(ctx context.Context, p Program[testConfig], environ []string, args ...string) result {
	var out, errb bytes.Buffer
	code := p.Execute(ctx, args, IO{Stdout: &out, Stderr: &errb, Environ: environ})
	return result{code, out.String(), errb.String()}
}

func TestHelpSaysWhatAndWhere(t *testing.T) {
	for _, arg := range []string{"-help", "--help", "-h"} {
		t.Run(arg, func(t *testing.T) {
			p := program(t, mustNotRun(t))
			r := execute(t.Context(), p, nil, arg)
			if r.code != ExitOK {
				t.Fatalf("exit %d, stderr %q", r.code, r.stderr)
			}
			for _, want := range []string{
				"trustpool-test: a daemon for tests.",
				"Configuration: " + p.ConfigFile + " (TOML",
				"etc/test.toml.sample",
				"TRUSTPOOL_<SECTION>__<KEY>",
				"-check-config", "-version", "-config-file", "-set",
				"trustpool-test echo WORDS...",
			} {
				if !strings.Contains(r.stdout, want) {
					t.Errorf("help lacks %q:\n%s", want, r.stdout)
				}
			}
		})
	}
}

func TestVersion(t *testing.T) {
	old := version
	t.Cleanup(func() { version = old })
	version = "9.8.7"
	r := execute(t.Context(), program(t, mustNotRun(t)), nil, "-version")
	if r.code != ExitOK || !strings.HasPrefix(r.stdout, "trustpool-test 9.8.7 (go") {
		t.Fatalf("exit %d, stdout %q", r.code, r.stdout)
	}
	version = ""
	if v := Version(); v == "" || v == "9.8.7" {
		t.Errorf("unstamped Version() = %q, want the build info's", v)
	}
}

func TestCheckConfig(t *testing.T) {
	tests := []struct {
		name     string
		args     []string
		environ  []string
		wantCode int
		wantOut  string // in stdout (code 0) or stderr
	}{
		{"valid", []string{"-config-file", writeFile(t, "[DEFAULT]\nname = \"x\"\n")}, nil, ExitOK, "is valid"},
		{"invalid value", []string{"-config-file", writeFile(t, "[DEFAULT]\nname = 3\n")}, nil, ExitUsage, "DEFAULT.name"},
		{"unknown key", []string{"-config-file", writeFile(t, "[DEFAULT]\nname = \"x\"\ncolour = \"y\"\n")}, nil, ExitUsage, "unknown configuration key"},
		{"not TOML (INI style)", []string{"-config-file", writeFile(t, "[DEFAULT]\nname = x y\n")}, nil, ExitUsage, "parse config file"},
		{"validation", []string{"-config-file", writeFile(t, "[DEFAULT]\ndebug = true\n")}, nil, ExitUsage, "DEFAULT.name: is required"},
		{"missing named file", []string{"-config-file", "/nonexistent/x.toml"}, nil, ExitUsage, "no such file"},
		{"missing default file", nil, nil, ExitUsage, "(missing: defaults and environment only)"},
		{"missing default file, environment", nil, []string{"TRUSTPOOL_DEFAULT__NAME=y"}, ExitOK, "is valid"},
		{"override", []string{"-config-file", writeFile(t, "[DEFAULT]\n"), "-set", "DEFAULT.name=z"}, nil, ExitOK, "is valid"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := execute(t.Context(), program(t, mustNotRun(t)), tt.environ, append([]string{"-check-config"}, tt.args...)...)
			if r.code != tt.wantCode {
				t.Fatalf("exit %d, want %d; stdout %q stderr %q", r.code, tt.wantCode, r.stdout, r.stderr)
			}
			got := r.stdout
			if tt.wantCode != ExitOK {
				got = r.stderr
			}
			if !strings.Contains(got, tt.wantOut) {
				t.Errorf("output %q lacks %q", got, tt.wantOut)
			}
		})
	}
}

func TestUsageErrors(t *testing.T) {
	for _, args := range [][]string{{"-no-such-flag"}, {"stray"}, {"-config-file"}} {
		r := execute(t.Context(), program(t, mustNotRun(t)), nil, args...)
		if r.code != ExitUsage || r.stderr == "" {
			t.Errorf("%q: exit %d stderr %q, want %d and a message", args, r.code, r.stderr, ExitUsage)
		}
	}
}

func TestCommand(t *testing.T) {
	r := execute(t.Context(), program(t, mustNotRun(t)), nil, "echo", "a", "-check-config")
	if r.code != 7 || r.stdout != "a -check-config\n" {
		t.Fatalf("exit %d stdout %q", r.code, r.stdout)
	}
}

// TestRun runs the daemon: it gets the loaded configuration and the
// notification socket, survives SIGHUP, announces STOPPING=1 when its context
// ends and exits 0.
func TestRun(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var got testConfig
	var gotEnv Env
	p := program(t, func(ctx context.Context, cfg testConfig, env Env) error {
		got, gotEnv = cfg, env
		if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
			return err
		}
		time.Sleep(100 * time.Millisecond) // the SIGHUP is handled meanwhile
		cancel()
		<-ctx.Done()
		return ctx.Err()
	})
	file := writeFile(t, "[DEFAULT]\nname = \"svc\"\ndebug = true\n")
	r := execute(ctx, p, []string{"NOTIFY_SOCKET=" + sock}, "-config-file", file)
	if r.code != ExitOK {
		t.Fatalf("exit %d, stderr %q", r.code, r.stderr)
	}
	if got.Default.Name != "svc" || gotEnv.NotifySocket != sock || gotEnv.ConfigFile != file || gotEnv.Logger == nil {
		t.Errorf("Run got %+v, %+v", got, gotEnv)
	}
	for _, want := range []string{"SIGHUP received", "level=INFO msg=starting", "msg=stopped", "time="} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("log lacks %q:\n%s", want, r.stderr)
		}
	}
	if err := conn.SetReadDeadline(time.Now().Add(10 * time.Second)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 256)
	n, err := conn.Read(buf)
	if err != nil || string(buf[:n]) != "STOPPING=1" {
		t.Errorf("notification %q, %v; want STOPPING=1", buf[:n], err)
	}
}

func TestRunFailure(t *testing.T) {
	p := program(t, func(context.Context, testConfig, Env) error { return errors.New("broker configuration unusable") })
	file := writeFile(t, "[DEFAULT]\nname = \"svc\"\n")
	r := execute(t.Context(), p, []string{"JOURNAL_STREAM=8:1"}, "-config-file", file)
	if r.code != ExitFailed || !strings.Contains(r.stderr, "broker configuration unusable") {
		t.Fatalf("exit %d, stderr %q", r.code, r.stderr)
	}
	if strings.Contains(r.stderr, "time=") {
		t.Errorf("under journald the log carries its own time:\n%s", r.stderr)
	}
	if strings.Contains(r.stderr, "level=DEBUG") {
		t.Errorf("debug off but debug lines logged")
	}
}
