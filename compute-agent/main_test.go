package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/trustpool/trustpool/internal/daemon"
)

func run(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := program.Execute(t.Context(), args, daemon.IO{Stdout: &out, Stderr: &errb, Environ: []string{}})
	return code, out.String(), errb.String()
}

// TestCheckConfigSample: the shipped sample passes -check-config, which
// opens nothing (no TPM, key, socket or broker exists here).
func TestCheckConfigSample(t *testing.T) {
	code, out, errs := run(t, "-check-config", "-config-file", filepath.Join("..", "etc", "agent.toml.sample"))
	if code != daemon.ExitOK || !strings.Contains(out, "is valid") {
		t.Fatalf("exit %d, stdout %q, stderr %q", code, out, errs)
	}
}

func TestCheckConfigRejects(t *testing.T) {
	p := filepath.Join(t.TempDir(), "bad.toml")
	// An INI-style value, as DevStack's iniset would write it, is not TOML.
	if err := os.WriteFile(p, []byte("[DEFAULT]\ntransport_url = rabbit://u:p@h:5672/\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	code, _, errs := run(t, "-check-config", "-config-file", p)
	if code != daemon.ExitUsage || !strings.Contains(errs, p) {
		t.Fatalf("exit %d, stderr %q", code, errs)
	}
	code, _, errs = run(t, "-check-config", "-config-file", filepath.Join("..", "etc", "agent.toml.sample"), "-set", "tpm.ak_algorithm=dsa")
	if code != daemon.ExitUsage || !strings.Contains(errs, "tpm.ak_algorithm") {
		t.Fatalf("-set tpm.ak_algorithm=dsa: exit %d, stderr %q", code, errs)
	}
}

func TestHelp(t *testing.T) {
	code, out, _ := run(t, "-help")
	for _, want := range []string{"trustpool-agent: the Trustpool", "Configuration: /etc/trustpool/agent.toml (TOML"} {
		if code != daemon.ExitOK || !strings.Contains(out, want) {
			t.Errorf("exit %d; help lacks %q:\n%s", code, want, out)
		}
	}
}

func TestVersion(t *testing.T) {
	code, out, _ := run(t, "-version")
	if code != daemon.ExitOK || !strings.HasPrefix(out, "trustpool-agent ") {
		t.Fatalf("exit %d, stdout %q", code, out)
	}
}
