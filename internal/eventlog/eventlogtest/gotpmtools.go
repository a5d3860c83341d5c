// Package eventlogtest provides inputs and oracles for tests of the event
// log code (packages eventlog, eventlog/inspect and evidence). Test code
// only.
//
// Three sources, none of them third-party files copied into this
// repository:
//
//   - [GoTPMToolsLogs]: the real firmware event logs that the module
//     github.com/google/go-tpm-tools (a dependency of this module, for its
//     TPM simulator) ships in internal/test/eventlogs. They are read at test
//     time from that module's directory in the Go module cache, located
//     with `go list -m`. A missing module is a test failure naming the fix
//     (`go mod download`), not a skip, except under -short.
//   - [RunTPM2Eventlog]: an independent oracle, tpm2_eventlog(1) from
//     tpm2-tools, run on a log file; its event list and PCR values are
//     parsed from its YAML output.
//   - [Generated]: logs generated from internal/bootseed builds and
//     re-encoded with edge cases (legacy SHA-1 format, H-CRTM with
//     StartupLocality 4, vendor info in the Spec ID event, an SM3 bank,
//     trailing bytes, missing separators...), and [IMAList], an
//     independent writer of binary IMA measurement lists (ima-ng, ima-sig,
//     violations, the legacy "ima" template; SHA-1 or SHA-256 template-hash
//     column).
package eventlogtest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// GoTPMToolsModule is the module whose real event logs tests read.
const GoTPMToolsModule = "github.com/google/go-tpm-tools"

// goTPMToolsLogDir is where the logs live inside the module.
const goTPMToolsLogDir = "internal/test/eventlogs"

// GoTPMToolsLogNames are the logs go-tpm-tools v0.4.10 ships; each must be
// present (so a module upgrade that drops one is noticed).
var GoTPMToolsLogNames = []string{
	"arch-linux-workstation.bin",
	"confidential-gke-debug-251000_eventlog.bin",
	"cos-101-amd-sev.bin",
	"cos-85-amd-sev.bin",
	"cos-93-amd-sev.bin",
	"debian-10.bin",
	"eventlogwithsp800155.bin",
	"gdc-host.bin",
	"glinux-alex.bin",
	"rhel8-uefi.bin",
	"ubuntu-1804-amd-sev.bin",
	"ubuntu-2104-no-dbx.bin",
	"ubuntu-2104-no-secure-boot.bin",
	"ubuntu-2404-amd-sevsnp.bin",
}

var modDir struct {
	once sync.Once
	dir  string
	err  error
}

// lookupLogDir runs `go list -m` once per process. GOPROXY=off: the
// module must already be in the module cache; tests never download.
func lookupLogDir() (string, error) {
	modDir.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, "go", "list", "-m", "-f", "{{.Dir}}", GoTPMToolsModule)
		cmd.Env = append(os.Environ(), "GOPROXY=off", "GOFLAGS=-mod=readonly")
		out, err := cmd.Output()
		if err != nil {
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				err = fmt.Errorf("%w: %s", err, strings.TrimSpace(string(ee.Stderr)))
			}
			modDir.err = fmt.Errorf("go list -m %s: %w", GoTPMToolsModule, err)
			return
		}
		dir := strings.TrimSpace(string(out))
		if dir == "" {
			modDir.err = fmt.Errorf("go list -m %s: module not in the module cache", GoTPMToolsModule)
			return
		}
		dir = filepath.Join(dir, goTPMToolsLogDir)
		if _, err := os.Stat(dir); err != nil {
			modDir.err = err
			return
		}
		modDir.dir = dir
	})
	return modDir.dir, modDir.err
}

// GoTPMToolsLogDir returns the directory of go-tpm-tools' event logs in
// the module cache. When it cannot be found the test fails (it is skipped
// only under -short).
func GoTPMToolsLogDir(t testing.TB) string {
	t.Helper()
	dir, err := lookupLogDir()
	if err != nil {
		msg := fmt.Sprintf("the real event logs of %s are read at test time from its module directory, which is unavailable: %v; "+
			"run `go mod download %s` (they are deliberately not copied into this repository)", GoTPMToolsModule, err, GoTPMToolsModule)
		if testing.Short() {
			t.Skip(msg + " [skipped with -short]")
		}
		t.Fatal(msg)
	}
	return dir
}

// GoTPMToolsLogFiles returns the paths of every log in [GoTPMToolsLogNames]
// (failing the test when one is missing).
func GoTPMToolsLogFiles(t testing.TB) []string {
	t.Helper()
	dir := GoTPMToolsLogDir(t)
	var out []string
	for _, n := range GoTPMToolsLogNames {
		p := filepath.Join(dir, n)
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("%s event log %s: %v", GoTPMToolsModule, n, err)
		}
		out = append(out, p)
	}
	return out
}

// GoTPMToolsLogs returns the contents of every go-tpm-tools log, keyed
// "go-tpm-tools/<file name>".
func GoTPMToolsLogs(t testing.TB) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	for _, p := range GoTPMToolsLogFiles(t) {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		out["go-tpm-tools/"+filepath.Base(p)] = b
	}
	return out
}

// GoTPMToolsLog returns one go-tpm-tools log by file name.
func GoTPMToolsLog(t testing.TB, name string) []byte {
	t.Helper()
	if !slices.Contains(GoTPMToolsLogNames, name) {
		t.Fatalf("unknown go-tpm-tools log %q", name)
	}
	b, err := os.ReadFile(filepath.Join(GoTPMToolsLogDir(t), name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}
