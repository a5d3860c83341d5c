// Package devstack tests the DevStack plugin (devstack/) with the real
// parts it hands its output to: the configuration files it writes are loaded
// by the real binaries' -check-config and by an independent TOML parser, the
// systemd units it makes are checked by systemd-analyze verify, its
// Keystone registration runs against a real Keystone (internal/servicetest),
// and the daemons started from its configuration serve the real trustpool
// CLI it then uses to pin the verdict key and learn the profile. DevStack
// itself is replaced by our own fakes of its functions (fakes.bash);
// plugin.bats tests the phases and service combinations against them.
package devstack

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/BurntSushi/toml"
	"github.com/google/go-cmp/cmp"

	"github.com/trustpool/trustpool/attestation-service/service"
	"github.com/trustpool/trustpool/internal/config"
	"github.com/trustpool/trustpool/internal/servicetest"
	"github.com/trustpool/trustpool/internal/verdict"
	"github.com/trustpool/trustpool/keystone-auth/authtoken"
	"github.com/trustpool/trustpool/nova-filter-shim/shim"
)

func TestMain(m *testing.M) { servicetest.Main(m) }

// daemons are the plugin's services, each a devstack@ unit.
var daemons = map[string]string{
	"trustpool-attestation": "attestation-service",
	"trustpool-filter-shim": "nova-filter-shim",
	"trustpool-agent":       "compute-agent",
}

// buildBinaries builds the three daemons, the trustpool CLI and the
// seeding tool of the swtpm's simulated measured boot into a temporary
// directory, as the plugin's install phase does.
func buildBinaries(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds the daemons; skipped with -short")
	}
	dir := t.TempDir()
	for bin, pkg := range daemons {
		build(t, dir, bin, pkg)
	}
	build(t, dir, "trustpool", "cli")
	build(t, dir, "tpm-boot-seed", "tests/cmd/tpm-boot-seed")
	return dir
}

func build(t *testing.T, dir, bin, pkg string) {
	t.Helper()
	cmd := exec.CommandContext(t.Context(), "go", "build", "-o", filepath.Join(dir, bin), "./"+pkg)
	cmd.Dir = filepath.Join("..", "..")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", bin, err, out)
	}
}

// driver runs devstack/ under the fakes in root (tests/devstack/driver.bash)
// and returns its output.
func driver(t *testing.T, root, services string, env []string, steps ...string) string {
	t.Helper()
	cmd := exec.CommandContext(t.Context(), "bash", append([]string{"driver.bash", root, services}, steps...)...)
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("driver.bash %s %v: %v\n%s", services, steps, err, out)
	}
	return string(out)
}

// nastyPassword has every character TOML and INI treat specially (quotes,
// backslash, #, =, brackets), shell specials and non-ASCII.
const nastyPassword = "p\"a\\s$s#w=o[r]d'&\t`é😀"

// servicePassword is the password of the service user "trustpool" in the
// Keystone the tests share: the first test to register it sets it, and the
// plugin (like DevStack's create_service_user) never changes it.
const servicePassword = "trustpool-" + "svc\"pw\\#"

// nastyURL is a broker URL whose password has the characters a URL allows
// in user info that shells and INI files treat specially (", \ and # must be
// percent-encoded in a URL, and "," separates hosts).
const nastyURL = `rabbit://stackrabbit:p%22w%5C%23$&'()*+=@192.0.2.10:5672/`

// TestWithTheBinaries checks the plugin's output with the real daemons.
func TestWithTheBinaries(t *testing.T) {
	bins := buildBinaries(t)
	t.Run("configs", func(t *testing.T) { checkConfigs(t, bins) })
	t.Run("intervals", func(t *testing.T) { checkIntervals(t, bins) })
	t.Run("units", func(t *testing.T) { checkUnits(t, bins) })
}

// checkConfigs: the files the plugin writes (all-in-one, with SQLite and
// with DevStack's MySQL URL) pass each binary's -check-config, and the
// values that need quoting come back exactly.
func checkConfigs(t *testing.T, bins string) {
	t.Helper()
	for _, tc := range []struct{ name, services, wantDB string }{
		{"sqlite", "trustpool-attestation,trustpool-filter-shim,trustpool-agent,n-cpu", "sqlite:///"},
		{"mysql", "trustpool-attestation,trustpool-filter-shim,trustpool-agent,n-cpu,mysql", "mysql+pymysql://root:dbpw@127.0.0.1/trustpool"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			driver(t, root, tc.services, []string{
				"TRUSTPOOL_BIN_DIR=" + bins, "TRUSTPOOL_USE_SWTPM=False",
				"SERVICE_PASSWORD=" + nastyPassword, "FAKE_TRANSPORT_URL=" + nastyURL,
			}, "stack:post-config")
			conf := filepath.Join(root, "etc", "trustpool")
			for bin, file := range map[string]string{
				"trustpool-attestation": "attestation.toml", "trustpool-filter-shim": "filter-shim.toml", "trustpool-agent": "agent.toml",
			} {
				path := filepath.Join(conf, file)
				out, err := exec.CommandContext(t.Context(), filepath.Join(bins, bin), "-check-config", "-config-file", path).CombinedOutput()
				if err != nil || !strings.Contains(string(out), "is valid") {
					t.Errorf("%s -check-config %s: %v\n%s", bin, file, err, out)
				}
				var doc map[string]map[string]any
				if _, err := toml.DecodeFile(path, &doc); err != nil {
					t.Fatalf("%s: %v", file, err)
				}
				if got := doc["DEFAULT"]["transport_url"]; got != nastyURL {
					t.Errorf("%s: transport_url = %q, want %q", file, got, nastyURL)
				}
			}
			cfg := service.DefaultConfig()
			if err := config.Load(&cfg, config.LoadOptions{File: filepath.Join(conf, "attestation.toml"), Environ: []string{}}); err != nil {
				t.Fatal(err)
			}
			if cfg.Keystone.Password != nastyPassword {
				t.Errorf("keystone_authtoken.password = %q, want %q", cfg.Keystone.Password, nastyPassword)
			}
			if !strings.HasPrefix(cfg.Database.Connection, tc.wantDB) {
				t.Errorf("database.connection = %q, want prefix %q", cfg.Database.Connection, tc.wantDB)
			}
		})
	}
}

// checkIntervals: the attestation timing the plugin derives from
// TRUSTPOOL_ATTESTATION_INTERVAL passes the service's -check-config for
// short, default and long intervals, and the service reads the interval
// asked for.
func checkIntervals(t *testing.T, bins string) {
	t.Helper()
	for _, interval := range []string{"2s", "10s", "60s", "1m30s", "1500ms"} {
		t.Run(interval, func(t *testing.T) {
			root := t.TempDir()
			driver(t, root, "trustpool-attestation", []string{
				"TRUSTPOOL_BIN_DIR=" + bins, "TRUSTPOOL_USE_SWTPM=False", "TRUSTPOOL_ATTESTATION_INTERVAL=" + interval,
			}, "stack:post-config")
			path := filepath.Join(root, "etc", "trustpool", "attestation.toml")
			out, err := exec.CommandContext(t.Context(), filepath.Join(bins, "trustpool-attestation"), "-check-config", "-config-file", path).CombinedOutput()
			if err != nil || !strings.Contains(string(out), "is valid") {
				t.Errorf("trustpool-attestation -check-config with interval %s: %v\n%s", interval, err, out)
			}
			cfg := service.DefaultConfig()
			if err := config.Load(&cfg, config.LoadOptions{File: path, Environ: []string{}}); err != nil {
				t.Fatal(err)
			}
			if want, _ := time.ParseDuration(interval); cfg.Attestation.Interval != want {
				t.Errorf("attestation.interval = %v, want %v", cfg.Attestation.Interval, want)
			}
		})
	}
}

// checkUnits: stack extra creates the signing key with the real binary, and
// the devstack@trustpool-* units (DevStack's run_process unit plus the
// plugin's drop-in) load in systemd-analyze verify without a single finding,
// with the ExecStart commands pointing at real binaries. Nothing serves the
// API here: a stand-in CLI answers key list (TestStartWithTheService runs
// the real one).
func checkUnits(t *testing.T, bins string) {
	t.Helper()
	if _, err := exec.LookPath("systemd-analyze"); err != nil {
		t.Fatal("systemd-analyze is missing (make deps installs systemd)")
	}
	bins = withStandInCLI(t, bins)
	root := t.TempDir()
	driver(t, root, "trustpool-attestation,trustpool-filter-shim,trustpool-agent", []string{
		"TRUSTPOOL_BIN_DIR=" + bins, "TRUSTPOOL_USE_SWTPM=False", "TRUSTPOOL_PROFILE=",
	}, "stack:post-config", "stack:extra")
	// The real create-key made the verdict signing key the service needs.
	key := filepath.Join(root, "opt", "stack", "data", "trustpool", "verdict-signing.key")
	if fi, err := os.Stat(key); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("verdict signing key after stack extra: %v, %v", fi, err)
	}
	units := filepath.Join(root, "etc", "systemd", "system")
	for bin := range daemons {
		unit := filepath.Join(units, "devstack@"+bin+".service")
		dropin := filepath.Join(units, "devstack@"+bin+".service.d", "trustpool.conf")
		b, err := os.ReadFile(dropin)
		if err != nil || !bytes.Contains(b, []byte("Type=notify")) {
			t.Fatalf("drop-in %s: %v\n%s", dropin, err, b)
		}
		unitText, err := os.ReadFile(unit)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Contains(unitText, []byte("ExecStart="+filepath.Join(bins, bin)+" -config-file ")) {
			t.Errorf("%s does not run %s:\n%s", unit, bin, unitText)
		}
		out, err := exec.CommandContext(t.Context(), "systemd-analyze", "verify", "--man=no", unit).CombinedOutput()
		if err != nil || len(bytes.TrimSpace(out)) > 0 {
			t.Errorf("systemd-analyze verify %s: %v\n%s", filepath.Base(unit), err, out)
		}
	}
}

// withStandInCLI returns a directory with links to the daemons in bins and
// a trustpool CLI stand-in whose key list prints a public key.
func withStandInCLI(t *testing.T, bins string) string {
	t.Helper()
	dir := t.TempDir()
	for bin := range daemons {
		if err := os.Symlink(filepath.Join(bins, bin), filepath.Join(dir, bin)); err != nil {
			t.Fatal(err)
		}
	}
	const script = "#!/bin/bash\n[[ \"$1 $2\" == \"key list\" ]] || exit 1\n" +
		"printf -- '-----BEGIN PUBLIC KEY-----\\nMCowBQYDK2VwAyEAGb9ECWmEzf6FQbrBZ9w7lshQhqowtrbLDFw4rXAxZuE=\\n-----END PUBLIC KEY-----\\n'\n"
	if err := os.WriteFile(filepath.Join(dir, "trustpool"), []byte(script), 0o755); err != nil { //nolint:gosec // G306: an executable
		t.Fatal(err)
	}
	return dir
}

// TestKeystoneRegistration runs the plugin's Keystone registration twice
// against a real Keystone (DevStack's helpers done with the openstack
// client), then checks what exists: one user with role service on project
// service, one "attestation" service, one public and one internal endpoint.
// The [keystone_authtoken] section the plugin wrote then authenticates the
// service with the attestation service's own code and validates a token.
func TestKeystoneRegistration(t *testing.T) {
	if _, err := exec.LookPath("openstack"); err != nil {
		t.Fatal("the openstack client is missing (make deps installs python3-openstackclient)")
	}
	ks := servicetest.Keystone(t)
	ctx := t.Context()
	admin := ks.AdminToken(t)
	api := tokenAPI{t: t, url: ks.URL, token: admin}
	// What DevStack has before plugins run: the service project, and a
	// catalog whose identity endpoints are the real URL (the harness's
	// template has a placeholder).
	api.ensureProject("service")
	api.fixIdentityEndpoints()

	const apiURL = "http://127.0.0.1:9780/attestation"
	root := t.TempDir()
	env := []string{
		"REAL_KEYSTONE=1", "OS_CLOUD=", "OS_AUTH_URL=" + ks.URL, "OS_IDENTITY_API_VERSION=3",
		"OS_USERNAME=" + ks.AdminUser, "OS_PASSWORD=" + ks.AdminPassword, "OS_PROJECT_NAME=" + ks.AdminProject,
		"OS_USER_DOMAIN_ID=default", "OS_PROJECT_DOMAIN_ID=default", "OS_REGION_NAME=RegionOne",
		"SERVICE_PASSWORD=" + servicePassword, "KEYSTONE_SERVICE_URI=" + ks.URL, "TRUSTPOOL_API_URL=" + apiURL,
		"TRUSTPOOL_USE_SWTPM=False", "TRUSTPOOL_BIN_DIR=/nonexistent",
	}
	start := time.Now()
	driver(t, root, "trustpool-attestation", env, "stack:post-config", "create_trustpool_accounts")
	t.Logf("registration ran twice in %s", time.Since(start).Round(time.Millisecond))

	users := api.list("/users?name=trustpool", "users")
	if len(users) != 1 {
		t.Fatalf("users named trustpool: %d, want 1", len(users))
	}
	userID := users[0]["id"].(string)
	projectID := api.list("/projects?name=service", "projects")[0]["id"].(string)
	var roles []string
	for _, r := range api.list("/projects/"+projectID+"/users/"+userID+"/roles", "roles") {
		roles = append(roles, r["name"].(string))
	}
	if !slices.Contains(roles, "service") {
		t.Errorf("trustpool's roles on project service: %v, want service", roles)
	}
	services := api.list("/services?type=attestation", "services")
	if len(services) != 1 || services[0]["name"] != "trustpool" {
		t.Fatalf("services of type attestation: %v, want one named trustpool", services)
	}
	var endpoints []string
	for _, e := range api.list("/endpoints?service_id="+services[0]["id"].(string), "endpoints") {
		endpoints = append(endpoints, fmt.Sprintf("%s %s %s", e["interface"], e["region_id"], e["url"]))
	}
	slices.Sort(endpoints)
	want := []string{"internal RegionOne " + apiURL, "public RegionOne " + apiURL}
	if diff := cmp.Diff(want, endpoints); diff != "" {
		t.Errorf("endpoints (-want +got):\n%s", diff)
	}

	// The service's [keystone_authtoken], as written, works with Keystone:
	// the service user authenticates, and a user's token validates.
	cfg := service.DefaultConfig()
	if err := config.Load(&cfg, config.LoadOptions{File: filepath.Join(root, "etc", "trustpool", "attestation.toml"), Environ: []string{}}); err != nil {
		t.Fatal(err)
	}
	setup, err := authtoken.Open(ctx, cfg.Keystone, authtoken.OpenConfig{})
	if err != nil {
		t.Fatalf("authtoken.Open with the plugin's [keystone_authtoken]: %v", err)
	}
	var seen *authtoken.Auth
	h := setup.Middleware.Wrap(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) {
		seen, _ = authtoken.FromContext(r.Context())
	}))
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "/v1/hosts", nil)
	req.Header.Set("X-Auth-Token", admin)
	h.ServeHTTP(discard{}, req)
	if seen == nil || !seen.Confirmed || seen.User == nil || seen.User.UserName != ks.AdminUser {
		t.Errorf("admin token not validated by the service's middleware: %+v", seen)
	}
}

// TestStartWithTheService runs a TPM-less DevStack node's path to a trusted
// host with the real parts: the install phase gives the node's swtpm (with
// an EK certificate from the CA the plugin trusts, as pre-install makes it)
// its simulated measured boot with the real tpm-boot-seed, twice, as a
// second stack.sh would; post-config writes the configuration files; then
// the steps of the extra phase that use the attestation service run with
// the real trustpool CLI as DevStack's admin: pinning the verdict public
// key (trustpool key list), then learning the profile from the compute node
// (trustpool profile learn) twice. What they talk to is what the plugin set
// up, for real: its Keystone registration (the CLI finds the service in the
// catalog), and the attestation service and agent started from the
// configuration files it wrote, over RabbitMQ. The service requires event
// logs (allow_missing_event_log = false), and the agent reads the one the
// simulated boot wrote, where the plugin's agent.toml points.
func TestStartWithTheService(t *testing.T) {
	bins := buildBinaries(t)
	ks := servicetest.Keystone(t)
	rabbit := servicetest.RabbitMQ(t)
	sw := servicetest.SWTPM(t, servicetest.SWTPMOptions{EKCert: true})
	admin := ks.AdminToken(t)
	api := tokenAPI{t: t, url: ks.URL, token: admin}
	api.ensureProject("service")
	api.fixIdentityEndpoints()
	// A region of its own, with Keystone's endpoints in it as DevStack's
	// REGION_NAME has them: the Keystone is shared with
	// TestKeystoneRegistration, whose attestation endpoints lead nowhere.
	const region, host = "RegionDevStackStart", "compute-dev"
	api.ensureRegion(region)

	// What the node has before install: nova-compute's host name, the
	// swtpm of the pre-install phase (started, never booted) and the
	// swtpm-localca CA.
	root, localCA := t.TempDir(), t.TempDir()
	data := filepath.Join(root, "opt", "stack", "data", "trustpool")
	conf := filepath.Join(root, "etc", "trustpool")
	writeFile(t, filepath.Join(root, "etc", "nova", "nova-cpu.conf"), "[DEFAULT]\nhost = "+host+"\n")
	writeFile(t, filepath.Join(data, "swtpm", "tpm"), "swtpm "+sw.ServerAddr+"\n")
	writeFile(t, filepath.Join(localCA, "swtpm-localca-rootca-cert.pem"), readFile(t, sw.CACertPath))
	writeFile(t, filepath.Join(localCA, "issuercert.pem"), readFile(t, sw.IssuerCertPath))

	port := servicetest.FreePort(t)
	apiURL := fmt.Sprintf("http://127.0.0.1:%d", port)
	services := "trustpool-attestation,trustpool-filter-shim,trustpool-agent,n-cpu"
	env := []string{
		// The openstack client of keystone-fakes.bash.
		"REAL_KEYSTONE=1", "OS_CLOUD=", "OS_AUTH_URL=" + ks.URL, "OS_IDENTITY_API_VERSION=3",
		"OS_USERNAME=" + ks.AdminUser, "OS_PASSWORD=" + ks.AdminPassword, "OS_PROJECT_NAME=" + ks.AdminProject,
		"OS_USER_DOMAIN_ID=default", "OS_PROJECT_DOMAIN_ID=default",
		// DevStack's globals the plugin builds the CLI's credentials from.
		"KEYSTONE_SERVICE_URI=" + ks.URL, "ADMIN_PASSWORD=" + ks.AdminPassword, "REGION_NAME=" + region,
		"SERVICE_PASSWORD=" + servicePassword, "FAKE_TRANSPORT_URL=" + rabbit.URL,
		fmt.Sprintf("TRUSTPOOL_API_PORT=%d", port), "TRUSTPOOL_API_URL=" + apiURL,
		"TRUSTPOOL_BIN_DIR=" + bins, "TRUSTPOOL_USE_SWTPM=True", "TRUSTPOOL_SWTPM_LOCALCA=" + localCA,
		"TRUSTPOOL_WAIT_TIMEOUT=30",
	}
	out := driver(t, root, services, env, "stack:install", "stack:install", "stack:post-config")
	booted := strings.Index(out, "simulated measured boot of "+sw.ServerAddr+" as build-a")
	again := strings.Index(out, sw.ServerAddr+" has booted already, as "+filepath.Join(data, "swtpm", "binary_bios_measurements")+" records: left alone")
	if booted < 0 || again < booted {
		t.Errorf("want the swtpm booted, then left alone by the second install; got:\n%s", out)
	}
	// The fakes record DevStack's warn, which stack.sh prints.
	if calls := readFile(t, filepath.Join(root, "calls")); !strings.Contains(calls, "SIMULATED measured boot (development clouds only, never production)") {
		t.Errorf("no warning that the boot is simulated; calls:\n%s", calls)
	}
	var cfg struct {
		Attestation struct {
			AllowMissingEventLog bool `toml:"allow_missing_event_log"`
		} `toml:"attestation"`
	}
	if _, err := toml.DecodeFile(filepath.Join(conf, "attestation.toml"), &cfg); err != nil || cfg.Attestation.AllowMissingEventLog {
		t.Errorf("attestation.toml: allow_missing_event_log %v (%v), want false", cfg.Attestation.AllowMissingEventLog, err)
	}

	// stack extra creates the keys, then starts the daemons with these
	// command lines (checkUnits); here they run as the test's children.
	// With the launch key the service publishes a second key, which the
	// shim must not be given.
	key := filepath.Join(data, "verdict-signing.key")
	if out, err := exec.CommandContext(t.Context(), filepath.Join(bins, "trustpool-attestation"), "create-key", key).CombinedOutput(); err != nil {
		t.Fatalf("create-key: %v\n%s", err, out)
	}
	if out, err := exec.CommandContext(t.Context(), filepath.Join(bins, "trustpool-attestation"), "create-launch-key", filepath.Join(data, "launch.key")).CombinedOutput(); err != nil {
		t.Fatalf("create-launch-key: %v\n%s", err, out)
	}
	svc := servicetest.StartProcess(t, "trustpool-attestation", nil,
		filepath.Join(bins, "trustpool-attestation"), "-config-file", filepath.Join(conf, "attestation.toml"))
	waitHealthy(t, svc, apiURL+"/healthz")
	agent := servicetest.StartProcess(t, "trustpool-agent", nil,
		filepath.Join(bins, "trustpool-agent"), "-config-file", filepath.Join(conf, "agent.toml"))
	defer func() {
		if t.Failed() {
			var h map[string]any
			tokenAPI{t: t, url: apiURL, token: admin}.do(http.MethodGet, "/v1/hosts/"+host, nil, &h)
			t.Logf("%v:\n%s\n%v:\n%s\nGET /v1/hosts/%s: %v", svc, svc.Log(), agent, agent.Log(), host, h)
		}
	}()

	start := time.Now()
	out = driver(t, root, services, env, "_trustpool_fetch_public_key", "_trustpool_learn_profile", "_trustpool_learn_profile")
	t.Logf("key pinned and profile learned in %s:\n%s", time.Since(start).Round(time.Second), out)
	learned := strings.Index(out, "learned profile devstack from "+host)
	exists := strings.Index(out, "profile devstack exists; not learning it again")
	if learned < 0 || exists < learned {
		t.Errorf("want the profile learned, then found on the second run; got:\n%s", out)
	}

	// The pinned key, read as the shim reads it, is the service's.
	pinned, err := shim.LoadPublicKeys(filepath.Join(conf, "verdict_public_key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	priv, err := verdict.LoadKey(key)
	if err != nil {
		t.Fatal(err)
	}
	if len(pinned) != 1 || !pinned[0].Equal(priv.Public()) {
		t.Errorf("pinned keys %x, want the service's %x", pinned, priv.Public())
	}

	// The host is trusted, by the profile learned from it.
	var got struct {
		Host struct {
			Verdict struct {
				EffectiveStatus string   `json:"effective_status"`
				Profiles        []string `json:"profiles"`
			} `json:"verdict"`
		} `json:"host"`
	}
	tokenAPI{t: t, url: apiURL, token: admin}.do(http.MethodGet, "/v1/hosts/"+host, nil, &got)
	if v := got.Host.Verdict; v.EffectiveStatus != "trusted" || !slices.Contains(v.Profiles, "devstack") {
		t.Errorf("%s: %+v, want trusted by profile devstack", host, v)
	}
}

// waitHealthy waits up to a minute for GET url to answer 200.
func waitHealthy(t *testing.T, p *servicetest.Process, url string) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, url, nil)
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if p.Exited() || time.Now().After(deadline) {
			t.Fatalf("%v not healthy (%v, %v); log:\n%s", p, resp, err, p.Log())
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil { //nolint:gosec // G301: test directories
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

type discard struct{}

func (discard) Header() http.Header         { return http.Header{} }
func (discard) Write(b []byte) (int, error) { return len(b), nil }
func (discard) WriteHeader(int)             {}

// tokenAPI calls a JSON REST API with a token: the few Keystone v3 admin
// calls the tests make, and the attestation service's API.
type tokenAPI struct {
	t          *testing.T
	url, token string
}

func (k tokenAPI) do(method, path string, in, out any) {
	k.t.Helper()
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			k.t.Fatal(err)
		}
		body = bytes.NewReader(b)
	}
	ctx, cancel := context.WithTimeout(k.t.Context(), 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, k.url+path, body)
	if err != nil {
		k.t.Fatal(err)
	}
	req.Header.Set("X-Auth-Token", k.token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		k.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode/100 != 2 {
		k.t.Fatalf("keystone %s %s: %s %s", method, path, resp.Status, b)
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			k.t.Fatal(err)
		}
	}
}

func (k tokenAPI) list(path, key string) []map[string]any {
	k.t.Helper()
	var out map[string]json.RawMessage
	k.do(http.MethodGet, path, nil, &out)
	var items []map[string]any
	if err := json.Unmarshal(out[key], &items); err != nil {
		k.t.Fatalf("%s: %v", path, err)
	}
	return items
}

func (k tokenAPI) ensureProject(name string) {
	k.t.Helper()
	if len(k.list("/projects?name="+name, "projects")) == 0 {
		k.do(http.MethodPost, "/projects", map[string]any{"project": map[string]any{"name": name, "domain_id": "default"}}, nil)
	}
}

// ensureRegion creates region id with Keystone's public and internal
// endpoints in it, unless it exists.
func (k tokenAPI) ensureRegion(id string) {
	k.t.Helper()
	for _, r := range k.list("/regions", "regions") {
		if r["id"] == id {
			return
		}
	}
	k.do(http.MethodPost, "/regions", map[string]any{"region": map[string]any{"id": id}}, nil)
	services := k.list("/services?type=identity", "services")
	if len(services) != 1 {
		k.t.Fatalf("identity services: %v, want one", services)
	}
	for _, iface := range []string{"public", "internal"} {
		k.do(http.MethodPost, "/endpoints", map[string]any{"endpoint": map[string]any{
			"service_id": services[0]["id"], "interface": iface, "region_id": id, "url": k.url}}, nil)
	}
}

func (k tokenAPI) fixIdentityEndpoints() {
	k.t.Helper()
	for _, s := range k.list("/services?type=identity", "services") {
		for _, e := range k.list("/endpoints?service_id="+s["id"].(string), "endpoints") {
			k.do(http.MethodPatch, "/endpoints/"+e["id"].(string), map[string]any{"endpoint": map[string]any{"url": k.url}}, nil)
		}
	}
}
