package integration

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/trustpool/trustpool/cli/commands"
	"github.com/trustpool/trustpool/internal/attestapi/attestapitest"
	"github.com/trustpool/trustpool/internal/bootseed"
	"github.com/trustpool/trustpool/internal/verdict"
)

// buildCLI builds the trustpool binary (with the race detector when the
// test runs with it) into a temporary directory.
func buildCLI(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "trustpool")
	args := []string{"build", "-o", bin}
	if raceEnabled {
		args = append(args, "-race")
	}
	cmd := exec.Command("go", append(args, "github.com/trustpool/trustpool/cli")...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build the CLI: %v\n%s", err, out)
	}
	return bin
}

// cli runs the trustpool binary with a clean environment: only the given
// variables (plus PATH and a private HOME), so nothing from the machine's
// OS_* or clouds.yaml leaks in.
type cli struct {
	t   *testing.T
	bin string
	env []string
}

type result struct {
	stdout, stderr string
	code           int
}

func (c *cli) run(env []string, args ...string) result {
	c.t.Helper()
	cmd := exec.Command(c.bin, args...)
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + c.t.TempDir()}, append(slices.Clone(c.env), env...)...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee := (*exec.ExitError)(nil); errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		c.t.Fatalf("run %v: %v", args, err)
	}
	return result{stdout: out.String(), stderr: errb.String(), code: code}
}

// ok runs a command that must succeed and returns its stdout.
func (c *cli) ok(args ...string) string {
	c.t.Helper()
	r := c.run(nil, args...)
	if r.code != 0 {
		c.t.Fatalf("trustpool %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), r.code, r.stdout, r.stderr)
	}
	return r.stdout
}

// fails runs a command that must exit with code and print one error line
// containing every part of want.
func (c *cli) fails(code int, want []string, args ...string) {
	c.t.Helper()
	r := c.run(nil, args...)
	lines := strings.Split(strings.TrimSuffix(r.stderr, "\n"), "\n")
	if r.code != code || len(lines) != 1 {
		c.t.Errorf("trustpool %s: exit %d, stderr %q; want exit %d and one line", strings.Join(args, " "), r.code, r.stderr, code)
	}
	for _, w := range want {
		if !strings.Contains(r.stderr, w) {
			c.t.Errorf("trustpool %s: stderr %q lacks %q", strings.Join(args, " "), r.stderr, w)
		}
	}
}

func jsonOut[T any](t *testing.T, s string) T {
	t.Helper()
	var v T
	if err := json.Unmarshal([]byte(s), &v); err != nil {
		t.Fatalf("output is not the JSON expected: %v\n%s", err, s)
	}
	return v
}

// TestCLI runs the trustpool binary as a subprocess against the real
// attestation service (with agents on swtpms) and a real Keystone, through
// a proxy that validates every request and answer against
// docs/api/openapi.yaml:
//
//   - authentication from a clouds.yaml the test writes (password, the
//     password in secure.yaml, an application credential) and from OS_*
//     variables; the endpoint from the catalog (a region and the internal
//     interface; the public one is dead) or --os-attestation-url;
//   - the policy difference: the admin manages hosts and profiles, the
//     project member gets exit 3 with the service's message and request id
//     but can read public keys and verify verdicts offline; a system-scoped
//     token is refused;
//   - every command: host list/show/history/attest/set/approve-ek/
//     reject-ek/delete, profile create/update/show/list/export/import/
//     learn/delete, key list, audit list, verdict verify (valid, tampered,
//     expired);
//   - exit codes (2 usage, 3 auth, 4 not found, 5 unreachable) and --debug
//     with no secret in it.
func TestCLI(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test")
	}
	e := newEnv(t, 2*time.Second)
	hosts := []*host{e.newHost("compute-1", bootseed.BuildA()), e.newHost("compute-2", bootseed.BuildA())}
	e.startService()
	for _, h := range hosts {
		e.startAgent(h)
	}
	proxy := attestapitest.NewProxy(t, attestapitest.NewValidator(t), e.svc.APIURL())

	name := strings.NewReplacer("/", "-", "_", "-").Replace(strings.ToLower(t.Name()))
	ks := e.ks
	region := "Region-" + name
	ks.AddEndpoint(t, "attestation", region, "internal", proxy.URL)
	ks.AddEndpoint(t, "attestation", region, "public", "http://127.0.0.1:1")
	memberUser, memberPW, memberProject := "tp-member-"+name, "m-pw", "demo-"+name
	acID, acSecret := ks.CreateApplicationCredential(t, ks.AdminUser, ks.AdminPassword, ks.AdminProject, "cli-"+name)

	dir := t.TempDir()
	cloud := func(user, project string, extra string) string {
		return fmt.Sprintf(`    auth:
      auth_url: %s
      username: %s
      project_name: %s
      user_domain_name: Default
      project_domain_name: Default
%s    region_name: %s
    interface: internal
`, ks.URL, user, project, extra, region)
	}
	clouds := "clouds:\n" +
		"  admin:\n" + cloud(ks.AdminUser, ks.AdminProject, "      password: "+ks.AdminPassword+"\n") +
		"  admin-secure:\n" + cloud(ks.AdminUser, ks.AdminProject, "") +
		"  member:\n" + cloud(memberUser, memberProject, "      password: "+memberPW+"\n") +
		fmt.Sprintf("  appcred:\n    auth_type: v3applicationcredential\n    auth:\n      auth_url: %s\n"+
			"      application_credential_id: %s\n      application_credential_secret: %s\n    region_name: %s\n    interface: internal\n",
			ks.URL, acID, acSecret, region)
	secure := "clouds:\n  admin-secure:\n    auth:\n      password: " + ks.AdminPassword + "\n"
	cloudsFile := filepath.Join(dir, "clouds.yaml")
	if err := os.WriteFile(cloudsFile, []byte(clouds), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "secure.yaml"), []byte(secure), 0o600); err != nil {
		t.Fatal(err)
	}
	c := &cli{t: t, bin: buildCLI(t), env: []string{"OS_CLIENT_CONFIG_FILE=" + cloudsFile}}
	admin := []string{"--os-cloud", "admin"}
	as := func(who []string, args ...string) []string { return append(slices.Clone(who), args...) }

	for _, h := range hosts {
		e.verdicts.wait(t, h.name, 0, 60*time.Second, "attested", status(verdict.Untrusted))
	}

	// The admin lists the hosts: attested, untrusted, no profile yet.
	type hostRow struct {
		Name, Status, Reason string
		Seq                  uint64
		Profiles             []string
	}
	rows := jsonOut[[]hostRow](t, c.ok(as(admin, "host", "list", "-f", "json")...))
	if len(rows) != 2 || rows[0].Name != "compute-1" || rows[0].Status != "untrusted" || !strings.Contains(rows[0].Reason, "no profiles defined") {
		t.Fatalf("host list = %+v", rows)
	}
	// The same with the password from secure.yaml, and with OS_* variables
	// and an explicit endpoint instead of clouds.yaml.
	if out := c.ok("--os-cloud", "admin-secure", "host", "list", "-f", "value", "-c", "Name"); out != "compute-1\ncompute-2\n" {
		t.Errorf("host list (secure.yaml) = %q", out)
	}
	osEnv := []string{"OS_AUTH_URL=" + ks.URL, "OS_USERNAME=" + ks.AdminUser, "OS_PASSWORD=" + ks.AdminPassword,
		"OS_PROJECT_NAME=" + ks.AdminProject, "OS_USER_DOMAIN_NAME=Default", "OS_PROJECT_DOMAIN_NAME=Default"}
	if r := c.run(append(slices.Clone(osEnv), "OS_ATTESTATION_URL="+proxy.URL), "host", "list", "-f", "csv", "-c", "Name", "-c", "Status"); r.code != 0 ||
		!strings.HasPrefix(r.stdout, "\"Name\",\"Status\"\r\n\"compute-1\",\"untrusted\"") {
		t.Errorf("host list (OS_* variables, explicit endpoint) = %d %q %q", r.code, r.stdout, r.stderr)
	}
	if r := c.run(append(slices.Clone(osEnv), "OS_REGION_NAME="+region, "OS_INTERFACE=internal"), "host", "show", "compute-2", "-f", "value", "-c", "name"); r.code != 0 || r.stdout != "compute-2\n" {
		t.Errorf("host show (OS_* variables, catalog) = %d %q %q", r.code, r.stdout, r.stderr)
	}

	// A project member: no operator data (exit 3, the service's message and
	// request id on one line), but public keys and offline checks.
	member := []string{"--os-cloud", "member"}
	c.fails(commands.ExitAuth, []string{"policy does not allow trustpool:hosts:list", "(HTTP 403)", "(Request-ID: req-"}, as(member, "host", "list")...)
	c.fails(commands.ExitAuth, []string{"trustpool:hosts:get", "(HTTP 403)"}, as(member, "profile", "learn", "stolen", "--host", "compute-1")...)
	c.fails(commands.ExitAuth, []string{"trustpool:profiles:write", "(HTTP 403)"}, as(member, "profile", "learn", "stolen", "--host", "compute-1", "--no-wait")...)
	c.fails(commands.ExitAuth, []string{"trustpool:profiles:write"}, as(member, "profile", "delete", "nothing")...)
	keyRows := jsonOut[[]map[string]string](t, c.ok(as(member, "key", "list", "--long", "-f", "json")...))
	pub := e.svc.PublicKey()
	lpub := e.svc.LaunchPublicKey()
	if len(keyRows) != 3 || keyRows[0]["Key ID"] != verdict.KeyID(pub) || keyRows[0]["Use"] != "verdict" || keyRows[0]["Algorithm"] != "Ed25519" ||
		keyRows[1]["Use"] != "launch" || keyRows[1]["Key ID"] != lpub.KID() || keyRows[1]["Fingerprint"] != lpub.Fingerprint() ||
		keyRows[1]["Algorithm"] != "ML-KEM-768+X25519, HKDF-SHA256, AES-256-GCM" ||
		keyRows[2]["Use"] != "policy" || keyRows[2]["Algorithm"] != "ECDSA P-256 SHA-256" || len(keyRows[2]["Fingerprint"]) != 64 ||
		keyRows[2]["Key ID"] != keyRows[2]["Fingerprint"][:16] || !strings.Contains(keyRows[2]["Public Key"], "BEGIN PUBLIC KEY") {
		t.Errorf("member key list = %v", keyRows)
	}
	// A system-scoped token is refused (the rules are for project scope).
	c.fails(commands.ExitAuth, []string{"(HTTP 403)"}, "--os-cloud", "admin", "--os-project-name", "", "--os-system-scope", "all", "host", "list")

	// Learn a profile from compute-1: the command waits until compute-1 is
	// appraised with it and shows it trusted.
	learned := jsonOut[map[string]any](t, c.ok(as(admin, "profile", "learn", "golden", "--host", "compute-1", "-f", "json")...))
	if fp, _ := learned["fact_pcrs"].(map[string]any); learned["name"] != "golden" || learned["host_status"] != "trusted" ||
		fmt.Sprint(learned["host_profiles"]) != "[golden]" || len(fp) == 0 {
		t.Errorf("profile learn = %v", learned)
	}
	// The same reference values computed offline from compute-1's event
	// log, with no host involved (a build pipeline's log).
	fromLog := jsonOut[map[string]any](t, c.ok(as(admin, "profile", "import", "--eventlog", filepath.Join(hosts[0].dir, "binary_bios_measurements"), "from-log", "-f", "json")...))
	for _, k := range []string{"pcrs", "facts", "fact_pcrs"} {
		if diff := cmp.Diff(learned[k], fromLog[k]); diff != "" || fromLog[k] == nil {
			t.Errorf("profile import --eventlog: %s differ from profile learn --host compute-1 (-host +log):\n%s", k, diff)
		}
	}
	c.fails(commands.ExitUsage, []string{"a firmware event log records PCRs 0-9 only"},
		as(admin, "profile", "import", "--eventlog", filepath.Join(hosts[0].dir, "binary_bios_measurements"), "x", "--pcr", "10")...)
	c.fails(commands.ExitUsage, []string{"--merge needs --eventlog"}, as(admin, "profile", "import", filepath.Join(dir, "none.toml"), "--merge")...)
	c.ok(as(admin, "profile", "delete", "from-log")...)
	// Attest compute-2 now, with the application credential: the command
	// waits for the round's verdict.
	before, _, _ := e.verdicts.get("compute-2")
	attested := jsonOut[map[string]any](t, c.ok("--os-cloud", "appcred", "host", "attest", "compute-2", "-f", "json"))
	if attested["status"] != "trusted" || fmt.Sprint(attested["profiles"]) != "[golden]" || attested["seq"].(float64) <= float64(before.Seq) {
		t.Errorf("host attest = %v (seq before %d)", attested, before.Seq)
	}
	if out := c.ok("--os-cloud", "appcred", "host", "list", "--status", "trusted", "-f", "value", "-c", "Name"); out != "compute-1\ncompute-2\n" {
		t.Errorf("host list --status trusted = %q", out)
	}
	sched := jsonOut[map[string]any](t, c.ok(as(admin, "host", "attest", "compute-1", "--no-wait", "-f", "json")...))
	if sched["attestation"] != "scheduled" || sched["host"] != "compute-1" {
		t.Errorf("host attest --no-wait = %v", sched)
	}

	// Verify compute-1's signed verdict offline with the pinned key; a
	// tampered copy fails; past expires_at it counts as unknown.
	showFile, pemFile := filepath.Join(dir, "compute-1.json"), filepath.Join(dir, "verdict-key.pem")
	if err := os.WriteFile(showFile, []byte(c.ok(as(admin, "host", "show", "compute-1", "--long", "-f", "json")...)), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(pemFile, []byte(c.ok(as(member, "key", "list", "--use", "verdict", "--long", "-f", "value", "-c", "Public Key")...)), 0o600); err != nil {
		t.Fatal(err)
	}
	v := jsonOut[map[string]any](t, c.ok("verdict", "verify", showFile, "--public-key", pemFile, "-f", "json"))
	if v["host"] != "compute-1" || v["signature"] != "valid" || v["status"] != "trusted" || v["effective_status"] != "trusted" {
		t.Errorf("verdict verify = %v", v)
	}
	// Format 2: the signed verdict names the version each satisfied
	// profile matched, as host show does.
	pv, _ := v["profile_versions"].(map[string]any)
	if ps, _ := v["profiles"].([]any); v["format"] != 2.0 || len(pv) == 0 || len(pv) != len(ps) {
		t.Errorf("verdict verify: format %v, profile_versions %v for profiles %v; want format 2 naming each", v["format"], v["profile_versions"], v["profiles"])
	}
	later := time.Now().Add(time.Hour).UTC().Format(time.RFC3339)
	if out := c.ok("verdict", "verify", showFile, "--public-key", pemFile, "--at", later, "-f", "value", "-c", "effective_status"); out != "unknown\n" {
		t.Errorf("verdict verify --at %s = %q, want unknown", later, out)
	}
	shown, _ := os.ReadFile(showFile)
	tampered := strings.Replace(string(shown), `\"status\":\"trusted\"`, `\"status\":\"untrusted\"`, 1)
	if tampered == string(shown) {
		t.Fatalf("no verdict status to tamper with in %s", shown)
	}
	tamperedFile := filepath.Join(dir, "tampered.json")
	if err := os.WriteFile(tamperedFile, []byte(tampered), 0o600); err != nil {
		t.Fatal(err)
	}
	c.fails(commands.ExitError, []string{"verdict does not verify", "signature is invalid"}, "verdict", "verify", tamperedFile, "--public-key", pemFile)

	// History, profiles, audit.
	hist := jsonOut[[]map[string]any](t, c.ok(as(admin, "host", "history", "compute-1", "--limit", "10", "-f", "json")...))
	if len(hist) < 2 || hist[0]["Status"] != "trusted" {
		t.Errorf("host history = %v", hist)
	}
	c.ok(as(admin, "profile", "create", "spare", "--fact", "secure_boot=enabled", "--description", "for the test")...)
	// An update is a new approved version retiring the one it replaces;
	// the same document again changes nothing.
	if out := c.ok(as(admin, "profile", "update", "spare", "--fact", "secure_boot=enabled", "--fact", "secure_boot=disabled",
		"-f", "value", "-c", "version", "-c", "retired_version")...); out != "2\n1\n" {
		t.Errorf("profile update -c version -c retired_version = %q, want 2 and 1", out)
	}
	if out := c.ok(as(admin, "profile", "update", "spare", "--fact", "secure_boot=enabled", "--fact", "secure_boot=disabled",
		"-f", "value", "-c", "version", "-c", "unchanged")...); out != "2\nTrue\n" {
		t.Errorf("profile update with the same values -c version -c unchanged = %q, want 2 and True", out)
	}
	if out := c.ok(as(admin, "profile", "version", "list", "spare", "-f", "value", "-c", "Version", "-c", "State")...); out != "1 retired\n2 approved\n" {
		t.Errorf("profile version list after an update = %q", out)
	}
	if out := c.ok(as(admin, "profile", "show", "spare", "-f", "yaml", "-c", "facts")...); out != "facts:\n  secure_boot:\n  - enabled\n  - disabled\n" {
		t.Errorf("profile show -f yaml = %q", out)
	}
	exportFile := filepath.Join(dir, "profiles.toml")
	c.ok(as(admin, "profile", "export", "--file", exportFile)...)
	if out := c.ok(as(admin, "profile", "import", exportFile, "-f", "value", "-c", "Imported", "-c", "Version", "-c", "Change")...); out != "golden 1 unchanged\nspare 2 unchanged\n" {
		t.Errorf("profile import = %q", out)
	}
	if out := c.ok(as(admin, "profile", "list", "-f", "value", "-c", "Name", "-c", "IMA")...); out != "golden False\nspare False\n" {
		t.Errorf("profile list = %q", out)
	}
	c.ok(as(admin, "profile", "delete", "spare")...)

	// Profile versions: a rollout from a build pipeline's event log, a
	// canary on compute-2 only, then approval and retirement.
	profileVersionRollout(t, c, e, admin, member, filepath.Join(hosts[0].dir, "binary_bios_measurements"))
	c.fails(commands.ExitError, []string{`profile "golden" is relied on by`, "repeat with --force", "(HTTP 409)"}, as(admin, "profile", "delete", "golden")...)
	c.ok(as(admin, "host", "set", "compute-2", "--required-profile", "golden")...)
	if out := c.ok(as(admin, "host", "set", "compute-2", "--default-profiles", "-f", "value", "-c", "required_profiles")...); out != "(service default)\n" {
		t.Errorf("host set --default-profiles = %q", out)
	}
	c.fails(commands.ExitError, []string{"no EK awaits approval", "(HTTP 409)"}, as(admin, "host", "approve-ek", "compute-1")...)
	c.fails(commands.ExitError, []string{"no EK awaits approval", "(HTTP 409)"}, as(admin, "host", "reject-ek", "compute-1")...)
	audit := jsonOut[[]map[string]any](t, c.ok(as(admin, "audit", "list", "--limit", "100", "-f", "json")...))
	var outcomes []string
	for _, a := range audit {
		outcomes = append(outcomes, fmt.Sprint(a["Action"], ":", a["Outcome"]))
	}
	for _, want := range []string{"profile.learn:denied", "profile.learn:success", "profile.delete:failure", "profile.delete:success", "host.attest:success"} {
		if !slices.Contains(outcomes, want) {
			t.Errorf("audit list lacks %s: %v", want, outcomes)
		}
	}

	// Exit codes and errors.
	c.fails(commands.ExitNotFound, []string{"(HTTP 404)", "(Request-ID: req-"}, as(admin, "host", "show", "compute-9")...)
	c.fails(commands.ExitUsage, []string{`--status "bogus"`}, as(admin, "host", "list", "--status", "bogus")...)
	c.fails(commands.ExitUsage, []string{"unknown command"}, "host", "frob")
	c.fails(commands.ExitAuth, []string{"authenticate to keystone"}, as(admin, "--os-password", "wrong", "host", "list")...)
	c.fails(commands.ExitServer, []string{"127.0.0.1:1"}, as(admin, "--os-interface", "public", "host", "list")...)
	c.fails(commands.ExitError, []string{"no attestation endpoint", "region Nowhere"}, as(admin, "--os-region-name", "Nowhere", "host", "list")...)
	c.fails(commands.ExitUsage, []string{"no credentials"}, "host", "list")

	// --debug shows the requests, but no password, secret or token.
	for _, who := range [][]string{admin, {"--os-cloud", "appcred"}} {
		r := c.run(nil, as(who, "--debug", "host", "list")...)
		if r.code != 0 || !strings.Contains(r.stderr, "REQ: curl -g -i -X POST "+ks.URL+"/auth/tokens") ||
			!strings.Contains(r.stderr, "REQ: curl -g -i -X GET "+proxy.URL+"/v1/hosts") || !strings.Contains(r.stderr, "X-Auth-Token: {SHA256}") {
			t.Errorf("--debug %v: exit %d, stderr:\n%s", who, r.code, r.stderr)
		}
		for _, secret := range []string{ks.AdminPassword, acSecret, "gAAAAA"} {
			if strings.Contains(r.stderr, secret) {
				t.Errorf("--debug %v shows %q", who, secret)
			}
		}
	}

	// Trusted launch as the project member (the whole flow is TestLaunch's):
	// create one pinned to the published launch key, list, show, verify
	// (no receipt while pending), delete.
	fp := strings.TrimSpace(c.ok(as(member, "key", "list", "--use", "launch", "-f", "value", "-c", "Fingerprint")...))
	secretFile := filepath.Join(dir, "launch-secret")
	if err := os.WriteFile(secretFile, []byte("a tenant secret"), 0o600); err != nil {
		t.Fatal(err)
	}
	created := jsonOut[map[string]any](t, c.ok(as(member, "launch", "create", "--profile", "golden", "--secret-file", secretFile,
		"--launch-key-fingerprint", fp, "-f", "json")...))
	id, _ := created["id"].(string)
	if created["state"] != "pending" || id == "" {
		t.Fatalf("launch create = %v", created)
	}
	if out := c.ok(as(member, "launch", "list", "-f", "value", "-c", "ID")...); !strings.Contains(out, id) {
		t.Errorf("launch list = %q, want %s", out, id)
	}
	c.ok(as(member, "launch", "show", id)...)
	c.fails(commands.ExitError, []string{"has no receipt yet"}, as(member, "launch", "verify", id, "--public-key", pemFile)...)
	c.fails(commands.ExitError, []string{"not the pinned"}, as(member, "launch", "create", "--profile", "golden", "--secret-file", secretFile,
		"--launch-key-fingerprint", strings.Repeat("0", 64))...)
	c.fails(commands.ExitError, []string{"launch_not_delivered"}, as(member, "launch", "redeliver", id)...)
	c.ok(as(member, "launch", "delete", id)...)

	// Delete a host; it is gone.
	c.ok(as(admin, "host", "delete", "compute-2")...)
	c.fails(commands.ExitNotFound, []string{"(HTTP 404)"}, as(admin, "host", "history", "compute-2")...)

	// The operations the CLI has no command for, through the same proxy.
	for _, path := range []string{"/", "/healthz", "/metrics"} {
		resp, err := http.Get(proxy.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	n := proxy.Check(t)
	if un := proxy.Uncovered(); len(un) > 0 {
		t.Errorf("documented operations the CLI test did not exercise: %v", un)
	}
	t.Logf("%d requests through the validating proxy", n)
}
