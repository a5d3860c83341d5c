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
	code, out, errs := run(t, "-check-config", "-config-file", filepath.Join("..", "etc", "attestation.toml.sample"))
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
	code, _, errs = run(t, "-check-config", "-config-file", filepath.Join("..", "etc", "attestation.toml.sample"), "-set", "attestation.interval=0s")
	if code != daemon.ExitUsage || !strings.Contains(errs, "attestation.interval") {
		t.Fatalf("-set attestation.interval=0s: exit %d, stderr %q", code, errs)
	}
}

func TestHelp(t *testing.T) {
	code, out, _ := run(t, "-help")
	for _, want := range []string{"trustpool-attestation: the Trustpool", "Configuration: /etc/trustpool/attestation.toml (TOML"} {
		if code != daemon.ExitOK || !strings.Contains(out, want) {
			t.Errorf("exit %d; help lacks %q:\n%s", code, want, out)
		}
	}
}

func TestVersion(t *testing.T) {
	code, out, _ := run(t, "-version")
	if code != daemon.ExitOK || !strings.HasPrefix(out, "trustpool-attestation ") {
		t.Fatalf("exit %d, stdout %q", code, out)
	}
}

// TestCommands: create-key and inspect-eventlog are dispatched before the
// daemon's flags, and -help lists them.
func TestCommands(t *testing.T) {
	key := filepath.Join(t.TempDir(), "verdict-signing.key")
	code, out, errs := run(t, "create-key", key)
	if code != daemon.ExitOK || !strings.Contains(out, "BEGIN PUBLIC KEY") {
		t.Fatalf("create-key: exit %d, stdout %q, stderr %q", code, out, errs)
	}
	if fi, err := os.Stat(key); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("key file: %v, %v", fi, err)
	}
	if code, _, _ := run(t, "create-key", key); code == daemon.ExitOK {
		t.Error("create-key replaced an existing key")
	}
	if code, _, errs := run(t, "inspect-eventlog", filepath.Join(t.TempDir(), "missing")); code == daemon.ExitOK || errs == "" {
		t.Errorf("inspect-eventlog of a missing file: exit %d, stderr %q", code, errs)
	}
	_, help, _ := run(t, "-help")
	for _, want := range []string{"trustpool-attestation create-key PATH", "trustpool-attestation inspect-eventlog FILE"} {
		if !strings.Contains(help, want) {
			t.Errorf("help lacks %q", want)
		}
	}
}
