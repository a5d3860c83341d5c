package servicetest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"
)

// keystoneTemplateVersion changes whenever the template's contents change,
// so that stale cached templates are not reused.
const keystoneTemplateVersion = "1"

// KeystoneServer is a Keystone (python3-keystone, Zed) identity service on
// 127.0.0.1 backed by sqlite, shared by the test process.
//
// It is bootstrapped like DevStack's: user AdminUser with role admin on
// project AdminProject in domain "default", the roles admin, member, reader
// and service, and an identity endpoint for URL in region RegionOne.
type KeystoneServer struct {
	// URL is the identity v3 endpoint, http://127.0.0.1:PORT/v3.
	URL string
	// AdminUser, AdminPassword and AdminProject are the bootstrap admin's
	// credentials; the user and project are in domain "default".
	AdminUser, AdminPassword, AdminProject string
	// Dir holds the configuration, database, keys and keystone.log.
	Dir string

	port int
	mu   sync.Mutex
	d    *daemon
}

var sharedKeystone lazy[*KeystoneServer]

// Keystone returns the Keystone shared by the test process, starting it on
// first use (about 3 s, plus about 12 s the first time on a machine to build
// a template that later runs copy). [Main] stops it.
//
// It is shared: create users and projects with names unique in the process,
// e.g. derived from t.Name(). Tests that call Stop must Start it again.
func Keystone(t testing.TB) *KeystoneServer {
	t.Helper()
	integration(t, "Keystone")
	k, err := sharedKeystone.get(func() (*KeystoneServer, error) {
		start := time.Now()
		k, err := startKeystone()
		if err != nil {
			return nil, err
		}
		t.Logf("servicetest: shared Keystone on %s started in %s", k.URL, time.Since(start).Round(time.Millisecond))
		atExit(func() error {
			k.mu.Lock()
			defer k.mu.Unlock()
			return k.d.stop(30 * time.Second)
		})
		return k, nil
	})
	if err != nil {
		t.Fatalf("servicetest: Keystone: %v", err)
	}
	return k
}

func startKeystone() (*KeystoneServer, error) {
	for _, c := range [][2]string{{PythonPath, "python3"}, {"keystone-manage", "python3-keystone"}} {
		if err := need(c[0], c[1]); err != nil {
			return nil, err
		}
	}
	tmpl, err := keystoneTemplate()
	if err != nil {
		return nil, err
	}
	dir, err := sharedDir("keystone")
	if err != nil {
		return nil, err
	}
	if err := os.CopyFS(dir, os.DirFS(tmpl)); err != nil {
		return nil, fmt.Errorf("copy keystone template: %w", err)
	}
	// CopyFS makes files 0644-ish; keystone warns about readable key
	// repositories, so keep them private.
	for _, d := range []string{"fernet-keys", "credential-keys"} {
		if err := os.Chmod(filepath.Join(dir, d), 0o700); err != nil {
			return nil, err
		}
	}
	k := &KeystoneServer{AdminUser: "admin", AdminPassword: keystoneAdminPassword, AdminProject: "admin", Dir: dir}
	var lastErr error
	for range 3 {
		k.port, err = freePort()
		if err != nil {
			return nil, err
		}
		k.URL = fmt.Sprintf("http://127.0.0.1:%d/v3", k.port)
		if err := writeKeystoneConf(dir); err != nil {
			return nil, err
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		// The template's catalog points at port 1; point it at ours.
		_, err := run(ctx, nil, PythonPath, "-c", `import sqlite3, sys
db = sqlite3.connect(sys.argv[1]); db.execute("UPDATE endpoint SET url = ?", (sys.argv[2],)); db.commit(); db.close()`,
			filepath.Join(dir, "keystone.db"), k.URL+"/")
		cancel()
		if err != nil {
			return nil, fmt.Errorf("set keystone endpoint: %w", err)
		}
		if lastErr = k.start(); lastErr == nil {
			break
		}
	}
	if lastErr != nil {
		return nil, lastErr
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// Zed's bootstrap makes admin, member and reader only.
	if err := k.ensureRole(ctx, "service"); err != nil {
		_ = k.d.stop(10 * time.Second)
		return nil, err
	}
	return k, nil
}

const keystoneAdminPassword = "trustpool-admin-pw"

// keystoneServePy serves Keystone with a threaded wsgiref server;
// keystone-wsgi-public is single-threaded.
const keystoneServePy = `import sys
from socketserver import ThreadingMixIn
from wsgiref.simple_server import make_server, WSGIServer, WSGIRequestHandler
port = int(sys.argv[1]); sys.argv = sys.argv[:1]  # keystone parses sys.argv as oslo.config arguments
from keystone.server.wsgi import initialize_public_application
class Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True
class Quiet(WSGIRequestHandler):
    def log_message(self, *a): pass
app = initialize_public_application()
print("serving", flush=True)
make_server('127.0.0.1', port, app, server_class=Server, handler_class=Quiet).serve_forever()
`

func writeKeystoneConf(dir string) error {
	conf := fmt.Sprintf(`[DEFAULT]
use_stderr = true
[database]
connection = sqlite:///%[1]s/keystone.db
[fernet_tokens]
key_repository = %[1]s/fernet-keys
[fernet_receipts]
key_repository = %[1]s/fernet-keys
[credential]
key_repository = %[1]s/credential-keys
[identity]
# bcrypt cost 4 instead of 12: password auth in ~20 ms instead of ~500 ms. Tests only.
password_hash_rounds = 4
[cache]
enabled = true
backend = dogpile.cache.memory
`, dir)
	if err := os.WriteFile(filepath.Join(dir, "keystone.conf"), []byte(conf), 0o600); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "serve.py"), []byte(keystoneServePy), 0o600)
}

// keystoneTemplate returns a directory with a bootstrapped database and key
// repositories, building it once per machine under the user cache dir.
// Concurrent builders race harmlessly: the first rename wins.
func keystoneTemplate() (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	version, err := run(ctx, nil, "dpkg-query", "-W", "-f=${Version}", "python3-keystone")
	if err != nil {
		return "", fmt.Errorf("python3-keystone not installed (run make deps): %w", err)
	}
	cache, err := os.UserCacheDir()
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256([]byte(keystoneTemplateVersion + "\x00" + version))
	final := filepath.Join(cache, "trustpool-servicetest", "keystone-"+hex.EncodeToString(sum[:8]))
	if _, err := os.Stat(filepath.Join(final, "keystone.db")); err == nil {
		return final, nil
	}
	if err := os.MkdirAll(filepath.Dir(final), 0o700); err != nil {
		return "", err
	}
	build, err := os.MkdirTemp(filepath.Dir(final), "build-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(build)
	if err := buildKeystoneTemplate(ctx, build); err != nil {
		return "", err
	}
	// The paths in keystone.conf are the build directory's; instances write
	// their own, so drop it.
	_ = os.Remove(filepath.Join(build, "keystone.conf"))
	_ = os.Remove(filepath.Join(build, "serve.py"))
	if err := os.Rename(build, final); err != nil {
		if _, statErr := os.Stat(filepath.Join(final, "keystone.db")); statErr == nil {
			return final, nil // another process won the race
		}
		return "", fmt.Errorf("install keystone template: %w", err)
	}
	return final, nil
}

func buildKeystoneTemplate(ctx context.Context, dir string) error {
	for _, d := range []string{"fernet-keys", "credential-keys"} {
		if err := os.Mkdir(filepath.Join(dir, d), 0o700); err != nil {
			return err
		}
	}
	if err := writeKeystoneConf(dir); err != nil {
		return err
	}
	u, err := user.Current()
	if err != nil {
		return err
	}
	g, err := user.LookupGroupId(u.Gid)
	if err != nil {
		return err
	}
	conf := filepath.Join(dir, "keystone.conf")
	env := []string{"OS_KEYSTONE_CONFIG_FILES=" + conf}
	steps := [][]string{
		{"keystone-manage", "--config-file", conf, "db_sync"},
		// WAL is required: in rollback-journal mode POST /v3/roles deadlocks
		// ("database is locked"). The mode persists in the file.
		{PythonPath, "-c", "import sqlite3, sys; sqlite3.connect(sys.argv[1]).execute('PRAGMA journal_mode=WAL')", filepath.Join(dir, "keystone.db")},
		{"keystone-manage", "--config-file", conf, "fernet_setup", "--keystone-user", u.Username, "--keystone-group", g.Name},
		{"keystone-manage", "--config-file", conf, "credential_setup", "--keystone-user", u.Username, "--keystone-group", g.Name},
		{"keystone-manage", "--config-file", conf, "bootstrap", "--bootstrap-password", keystoneAdminPassword,
			"--bootstrap-username", "admin", "--bootstrap-project-name", "admin", "--bootstrap-role-name", "admin",
			"--bootstrap-service-name", "keystone", "--bootstrap-region-id", "RegionOne",
			"--bootstrap-admin-url", "http://127.0.0.1:1/v3/", "--bootstrap-internal-url", "http://127.0.0.1:1/v3/",
			"--bootstrap-public-url", "http://127.0.0.1:1/v3/"},
	}
	for _, argv := range steps {
		if _, err := run(ctx, env, argv...); err != nil {
			return fmt.Errorf("build keystone template: %w", err)
		}
	}
	return nil
}

// start runs the server on k.port and waits until /v3 answers. k.mu must
// be held or k not yet shared.
func (k *KeystoneServer) start() error {
	d, err := startDaemon("keystone", filepath.Join(k.Dir, "keystone.log"), k.Dir,
		[]string{"OS_KEYSTONE_CONFIG_FILES=" + filepath.Join(k.Dir, "keystone.conf")},
		PythonPath, filepath.Join(k.Dir, "serve.py"), strconv.Itoa(k.port))
	if err != nil {
		return err
	}
	if err := waitReady(d, 90*time.Second, func(ctx context.Context) error {
		return httpGet(ctx, k.URL)
	}); err != nil {
		_ = d.stop(10 * time.Second)
		return err
	}
	k.d = d
	return nil
}

// Stop stops the Keystone server, for tests of what happens when Keystone
// is down. The data stays; Start brings it back on the same URL. Other tests
// of the process share this Keystone: such tests must not run in parallel.
func (k *KeystoneServer) Stop(t testing.TB) {
	t.Helper()
	k.mu.Lock()
	defer k.mu.Unlock()
	if err := k.d.stop(30 * time.Second); err != nil {
		t.Fatalf("servicetest: %v", err)
	}
}

// Start starts a stopped Keystone again on the same URL; a no-op when it
// runs.
func (k *KeystoneServer) Start(t testing.TB) {
	t.Helper()
	k.mu.Lock()
	defer k.mu.Unlock()
	if !k.d.exited() {
		return
	}
	if err := k.start(); err != nil {
		t.Fatalf("servicetest: restart Keystone: %v", err)
	}
}

// KeystoneUser describes a user for [KeystoneServer.CreateUser].
type KeystoneUser struct {
	Name, Password string
	// Project is created in domain "default" when missing; the user's
	// default project.
	Project string
	// Roles are granted on Project, e.g. "member", "reader", "admin", "service".
	Roles []string
}

// CreateUser creates a user in domain "default" with roles on its project,
// and returns the user's and project's IDs.
func (k *KeystoneServer) CreateUser(t testing.TB, u KeystoneUser) (userID, projectID string) {
	t.Helper()
	ctx := t.Context()
	admin, err := k.token(ctx, k.AdminUser, k.AdminPassword, k.AdminProject)
	if err != nil {
		t.Fatalf("servicetest: %v", err)
	}
	projectID, err = k.lookup(ctx, admin, "projects", u.Project)
	if err != nil {
		t.Fatalf("servicetest: %v", err)
	}
	if projectID == "" {
		var out struct{ Project struct{ ID string } }
		err := k.api(ctx, admin, http.MethodPost, "/projects",
			map[string]any{"project": map[string]any{"name": u.Project, "domain_id": "default"}}, &out)
		if err != nil {
			t.Fatalf("servicetest: create project %s: %v", u.Project, err)
		}
		projectID = out.Project.ID
	}
	var out struct{ User struct{ ID string } }
	err = k.api(ctx, admin, http.MethodPost, "/users", map[string]any{"user": map[string]any{
		"name": u.Name, "password": u.Password, "domain_id": "default", "default_project_id": projectID}}, &out)
	if err != nil {
		t.Fatalf("servicetest: create user %s: %v", u.Name, err)
	}
	for _, role := range u.Roles {
		roleID, err := k.lookup(ctx, admin, "roles", role)
		if err == nil && roleID == "" {
			err = fmt.Errorf("no role %q", role)
		}
		if err == nil {
			err = k.api(ctx, admin, http.MethodPut, "/projects/"+projectID+"/users/"+out.User.ID+"/roles/"+roleID, nil, nil)
		}
		if err != nil {
			t.Fatalf("servicetest: grant %s to %s: %v", role, u.Name, err)
		}
	}
	return out.User.ID, projectID
}

// Token issues a project-scoped token for a user of domain "default".
func (k *KeystoneServer) Token(t testing.TB, user, password, project string) string {
	t.Helper()
	tok, err := k.token(t.Context(), user, password, project)
	if err != nil {
		t.Fatalf("servicetest: %v", err)
	}
	return tok
}

// AdminToken issues a token for the bootstrap admin on the admin project.
func (k *KeystoneServer) AdminToken(t testing.TB) string {
	t.Helper()
	return k.Token(t, k.AdminUser, k.AdminPassword, k.AdminProject)
}

// SystemAdminToken issues a system-scoped token (scope system: all) for the
// bootstrap admin, who holds the admin role on the system.
func (k *KeystoneServer) SystemAdminToken(t testing.TB) string {
	t.Helper()
	tok, err := k.scopedToken(t.Context(), k.AdminUser, k.AdminPassword, map[string]any{"system": map[string]any{"all": true}})
	if err != nil {
		t.Fatalf("servicetest: %v", err)
	}
	return tok
}

// CreateApplicationCredential creates an application credential for a
// user of domain "default", scoped to project with the user's roles there
// (as `openstack application credential create` does with the user's own
// token), and returns its ID and secret.
func (k *KeystoneServer) CreateApplicationCredential(t testing.TB, user, password, project, name string) (id, secret string) {
	t.Helper()
	ctx := t.Context()
	admin, err := k.token(ctx, k.AdminUser, k.AdminPassword, k.AdminProject)
	if err != nil {
		t.Fatalf("servicetest: %v", err)
	}
	userID, err := k.lookup(ctx, admin, "users", user)
	if err == nil && userID == "" {
		err = fmt.Errorf("no user %q", user)
	}
	if err != nil {
		t.Fatalf("servicetest: %v", err)
	}
	own, err := k.token(ctx, user, password, project)
	if err != nil {
		t.Fatalf("servicetest: %v", err)
	}
	var out struct {
		ApplicationCredential struct{ ID, Secret string } `json:"application_credential"`
	}
	if err := k.api(ctx, own, http.MethodPost, "/users/"+userID+"/application_credentials",
		map[string]any{"application_credential": map[string]any{"name": name}}, &out); err != nil {
		t.Fatalf("servicetest: create application credential %s: %v", name, err)
	}
	return out.ApplicationCredential.ID, out.ApplicationCredential.Secret
}

// AddEndpoint registers url in the catalog as the endpoint of a service of
// serviceType for interface iface ("public", "internal" or "admin") in
// region, creating the region and a service of that type (named
// serviceType-region) when missing. The Keystone is shared: give each test
// its own region, which clients then select.
func (k *KeystoneServer) AddEndpoint(t testing.TB, serviceType, region, iface, url string) {
	t.Helper()
	ctx := t.Context()
	admin, err := k.token(ctx, k.AdminUser, k.AdminPassword, k.AdminProject)
	if err != nil {
		t.Fatalf("servicetest: %v", err)
	}
	var regions struct{ Regions []struct{ ID string } }
	if err := k.api(ctx, admin, http.MethodGet, "/regions", nil, &regions); err != nil {
		t.Fatalf("servicetest: %v", err)
	}
	if !slices.ContainsFunc(regions.Regions, func(r struct{ ID string }) bool { return r.ID == region }) {
		if err := k.api(ctx, admin, http.MethodPost, "/regions", map[string]any{"region": map[string]string{"id": region}}, nil); err != nil {
			t.Fatalf("servicetest: create region %s: %v", region, err)
		}
	}
	name := serviceType + "-" + region
	serviceID, err := k.lookup(ctx, admin, "services", name)
	if err != nil {
		t.Fatalf("servicetest: %v", err)
	}
	if serviceID == "" {
		var out struct{ Service struct{ ID string } }
		if err := k.api(ctx, admin, http.MethodPost, "/services",
			map[string]any{"service": map[string]any{"type": serviceType, "name": name}}, &out); err != nil {
			t.Fatalf("servicetest: create service %s: %v", name, err)
		}
		serviceID = out.Service.ID
	}
	if err := k.api(ctx, admin, http.MethodPost, "/endpoints", map[string]any{"endpoint": map[string]any{
		"service_id": serviceID, "interface": iface, "region_id": region, "url": url}}, nil); err != nil {
		t.Fatalf("servicetest: create %s endpoint of %s: %v", iface, name, err)
	}
}

func (k *KeystoneServer) token(ctx context.Context, user, password, project string) (string, error) {
	return k.scopedToken(ctx, user, password, map[string]any{"project": map[string]any{"name": project, "domain": map[string]string{"id": "default"}}})
}

func (k *KeystoneServer) scopedToken(ctx context.Context, user, password string, scope map[string]any) (string, error) {
	body := map[string]any{"auth": map[string]any{
		"identity": map[string]any{"methods": []string{"password"}, "password": map[string]any{
			"user": map[string]any{"name": user, "domain": map[string]string{"id": "default"}, "password": password}}},
		"scope": scope,
	}}
	b, err := json.Marshal(body)
	if err != nil {
		return "", err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, k.URL+"/auth/tokens", bytes.NewReader(b))
	if err != nil {
		return "", err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", fmt.Errorf("issue keystone token for %s: %w", user, err)
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusCreated {
		return "", fmt.Errorf("issue keystone token for %s: %s: %s", user, resp.Status, msg)
	}
	return resp.Header.Get("X-Subject-Token"), nil
}

func (k *KeystoneServer) ensureRole(ctx context.Context, name string) error {
	admin, err := k.token(ctx, k.AdminUser, k.AdminPassword, k.AdminProject)
	if err != nil {
		return err
	}
	id, err := k.lookup(ctx, admin, "roles", name)
	if err != nil || id != "" {
		return err
	}
	return k.api(ctx, admin, http.MethodPost, "/roles", map[string]any{"role": map[string]string{"name": name}}, nil)
}

// lookup returns the ID of the named project or role, or "" when none.
func (k *KeystoneServer) lookup(ctx context.Context, token, kind, name string) (string, error) {
	var out map[string]json.RawMessage
	if err := k.api(ctx, token, http.MethodGet, "/"+kind+"?name="+url.QueryEscape(name), nil, &out); err != nil {
		return "", err
	}
	var list []struct{ ID string }
	if err := json.Unmarshal(out[kind], &list); err != nil {
		return "", fmt.Errorf("keystone list %s: %w", kind, err)
	}
	if len(list) == 0 {
		return "", nil
	}
	return list[0].ID, nil
}

func (k *KeystoneServer) api(ctx context.Context, token, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, k.URL+path, body)
	if err != nil {
		return err
	}
	req.Header.Set("X-Auth-Token", token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("keystone %s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("keystone %s %s: %w", method, path, err)
	}
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("keystone %s %s: %s: %.500s", method, path, resp.Status, b)
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			return fmt.Errorf("keystone %s %s: decode: %w", method, path, err)
		}
	}
	return nil
}

func httpGet(ctx context.Context, u string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", u, resp.Status)
	}
	return nil
}
