package bootseed_test

import (
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"gopkg.in/yaml.v2"

	"github.com/trustpool/trustpool/internal/bootseed"
	"github.com/trustpool/trustpool/internal/eventlog"
	"github.com/trustpool/trustpool/internal/eventlog/eventlogtest"
)

// yamlLog is the part of tpm2_eventlog --eventlog-version=2's YAML the test
// reads.
type yamlLog struct {
	Events []struct {
		PCRIndex  uint32 `yaml:"PCRIndex"`
		EventType string `yaml:"EventType"`
		EventSize int    `yaml:"EventSize"`
		Event     any    `yaml:"Event"`
	} `yaml:"events"`
}

const x509Type, sha256Type = "a5c059a1-94e4-4aa7-87b5-ab155c2bf072", "c1c41626-504c-4092-aca9-41f936934328"

// describeVariable renders what tpm2-tools decoded of a UEFI variable
// event: its name, then per signature list its type and entries
// ("owner=data" with data shortened to its first 8 hex digits), or
// SecureBoot's Enabled.
func describeVariable(ev any) (string, error) {
	m, ok := ev.(map[any]any)
	if !ok {
		return "", fmt.Errorf("event data not decoded: %v", ev)
	}
	out := fmt.Sprint(m["UnicodeName"])
	switch vd := m["VariableData"].(type) {
	case map[any]any:
		out += fmt.Sprintf(" enabled=%v", vd["Enabled"])
	case []any:
		for _, l := range vd {
			lm, ok := l.(map[any]any)
			if !ok {
				return "", fmt.Errorf("signature list %v", l)
			}
			if _, ok := lm["SignatureType"]; !ok {
				// EV_EFI_VARIABLE_AUTHORITY: one EFI_SIGNATURE_DATA.
				out += fmt.Sprintf(" %v=%.8s", lm["SignatureOwner"], fmt.Sprint(lm["SignatureData"]))
				continue
			}
			out += fmt.Sprintf(" [%v", lm["SignatureType"])
			keys, _ := lm["Keys"].([]any)
			for _, k := range keys {
				km, _ := k.(map[any]any)
				out += fmt.Sprintf(" %v=%.8s", km["SignatureOwner"], fmt.Sprint(km["SignatureData"]))
			}
			out += "]"
		}
	default:
		out += fmt.Sprintf(" data=%v", vd)
	}
	return out, nil
}

// TestTPM2EventlogReadsSeededLogs runs Debian's tpm2_eventlog, decoding
// the Secure Boot variables' EFI_SIGNATURE_LISTs (--eventlog-version=2),
// on every variant's log and fails on any warning it prints (before the
// logs carried EFI_SIGNATURE_LIST structures it printed "EventSize is
// inconsistent with actual data" for PK, KEK, db and dbx). It also checks
// that the tool decodes the structures the firmware would have measured:
// X.509 and SHA-256 signature lists with their owner, the certificate that
// verified shim, the SecureBoot variable, and device paths that name the
// boot applications.
func TestTPM2EventlogReadsSeededLogs(t *testing.T) {
	eventlogtest.RequireTPM2Eventlog(t)
	owner := "9f3c2e51-6a7b-4d28-b1e4-5c0a7d93e2f6"
	dir := t.TempDir()
	for name, v := range bootseed.Variants() {
		for _, algs := range [][]eventlog.Alg{{eventlog.SHA1, eventlog.SHA256}, {eventlog.SHA1, eventlog.SHA256, eventlog.SHA384, eventlog.SHA512}} {
			t.Run(fmt.Sprintf("%s/%d-banks", name, len(algs)), func(t *testing.T) {
				log, _, err := bootseed.BuildLog(v, algs)
				if err != nil {
					t.Fatal(err)
				}
				path := filepath.Join(dir, fmt.Sprintf("%s-%d.bin", name, len(algs)))
				if err := os.WriteFile(path, log, 0o600); err != nil {
					t.Fatal(err)
				}
				out, stderr := eventlogtest.TPM2EventlogOutput(t, path, "--eventlog-version=2")
				if stderr != "" {
					t.Errorf("tpm2_eventlog warned:\n%s", stderr)
				}
				var y yamlLog
				if err := yaml.Unmarshal(out, &y); err != nil {
					t.Fatalf("tpm2_eventlog's output is no YAML: %v", err)
				}
				var vars, paths []string
				for _, e := range y.Events {
					switch e.EventType {
					case "EV_EFI_VARIABLE_DRIVER_CONFIG", "EV_EFI_VARIABLE_AUTHORITY":
						d, err := describeVariable(e.Event)
						if err != nil {
							t.Fatalf("%s: %v", e.EventType, err)
						}
						vars = append(vars, strings.TrimPrefix(e.EventType, "EV_EFI_VARIABLE_")+" "+d)
					case "EV_EFI_BOOT_SERVICES_APPLICATION":
						m, _ := e.Event.(map[any]any)
						dp, err := hex.DecodeString(fmt.Sprint(m["DevicePath"]))
						if err != nil {
							t.Fatalf("device path %v: %v", m["DevicePath"], err)
						}
						paths = append(paths, fmt.Sprintf("%x %d", dp[:4], m["ImageLengthInMemory"]))
					}
				}
				cert := func(f string) string {
					return fmt.Sprintf("%s=%.8s", owner, hex.EncodeToString(mustRead(t, filepath.Join("certs", f))))
				}
				sha := fmt.Sprintf("%s=", owner)
				enabled := "Yes"
				if !v.SecureBoot {
					enabled = "No"
				}
				want := []string{
					"DRIVER_CONFIG SecureBoot enabled=" + enabled,
					"DRIVER_CONFIG PK [" + x509Type + " " + cert("pk.der") + "]",
					"DRIVER_CONFIG KEK [" + x509Type + " " + cert("kek.der") + "]",
					"DRIVER_CONFIG db [" + x509Type + " " + cert("db.der") + "] [" + sha256Type + " " + sha + "%s " + sha + "%s]",
					"DRIVER_CONFIG dbx [" + sha256Type + " " + sha + "%s " + sha + "%s " + sha + "%s]",
				}
				if v.SecureBoot {
					want = append(want, "AUTHORITY db "+cert("db.der"))
				}
				// The SHA-256 entries' data: the first 8 hex digits of each.
				hashes := func(l []byte, n int) []any {
					var out []any
					for i := range n {
						off := 28 + i*48 + 16
						out = append(out, hex.EncodeToString(l[off:off+4]))
					}
					return out
				}
				dbSHA := v.DB[len(bootseed.X509List(mustRead(t, "certs/db.der"))):]
				want[3] = fmt.Sprintf(want[3], hashes(dbSHA, 2)...)
				want[4] = fmt.Sprintf(want[4], hashes(v.DBX, 3)...)
				if diff := cmp.Diff(want, vars); diff != "" {
					t.Errorf("Secure Boot variables as tpm2_eventlog decodes them (-want +got):\n%s", diff)
				}
				// shim from the boot option's full device path (ACPI
				// PciRoot first), GRUB by file path; lengths are the images'.
				wantPaths := []string{fmt.Sprintf("02010c00 %d", len(v.Shim)), fmt.Sprintf("04043400 %d", len(v.Grub))}
				if diff := cmp.Diff(wantPaths, paths); diff != "" {
					t.Errorf("boot applications (-want +got):\n%s", diff)
				}
			})
		}
	}
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
