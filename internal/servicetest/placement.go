package servicetest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// PlacementServer is a Placement API (python3-placement, Zed: microversions
// up to 1.39) on 127.0.0.1 with its own sqlite database, private to one test
// and stopped by t.Cleanup. [Placement] runs it with auth_strategy noauth2:
// a request needs an X-Auth-Token, and the token "admin"
// ([PlacementServer.Token]) is an administrator. [PlacementWithKeystone]
// validates real Keystone tokens.
type PlacementServer struct {
	// URL is the endpoint, http://127.0.0.1:PORT (no path).
	URL string
	// Token is the administrator's token under noauth2.
	Token string
	// Dir holds placement.conf, the database and placement.log.
	Dir string
}

// placementServePy serves Placement's WSGI application (placement.wsgi, as
// Apache would) with a threaded wsgiref server.
const placementServePy = `import sys
from socketserver import ThreadingMixIn
from wsgiref.simple_server import make_server, WSGIServer, WSGIRequestHandler
port = int(sys.argv[1]); sys.argv = sys.argv[:1]
from placement.wsgi import init_application
class Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True
class Quiet(WSGIRequestHandler):
    def log_message(self, *a): pass
app = init_application()
print("serving", flush=True)
make_server('127.0.0.1', port, app, server_class=Server, handler_class=Quiet).serve_forever()
`

// Placement starts a private Placement server (about 1.5 s).
func Placement(t testing.TB) *PlacementServer {
	t.Helper()
	return startPlacement(t, nil)
}

// PlacementWithKeystone starts a private Placement server that validates
// tokens with k (auth_strategy keystone, keystonemiddleware with k's
// admin), as a deployed Placement does; Token is then an admin token of k.
func PlacementWithKeystone(t testing.TB, k *KeystoneServer) *PlacementServer {
	t.Helper()
	return startPlacement(t, k)
}

func startPlacement(t testing.TB, k *KeystoneServer) *PlacementServer {
	t.Helper()
	integration(t, "Placement")
	if err := need(PythonPath, "python3"); err != nil {
		t.Fatalf("servicetest: %v", err)
	}
	dir := t.TempDir()
	conf := fmt.Sprintf("[DEFAULT]\nuse_stderr = true\n[placement_database]\nconnection = sqlite:///%s\nsync_on_startup = true\n",
		filepath.Join(dir, "placement.db"))
	token := "admin"
	if k == nil {
		conf += "[api]\nauth_strategy = noauth2\n"
	} else {
		token = k.AdminToken(t)
		conf += fmt.Sprintf("[api]\nauth_strategy = keystone\n[keystone_authtoken]\nwww_authenticate_uri = %[1]s\nauth_url = %[1]s\n"+
			"auth_type = password\nusername = %[2]s\npassword = %[3]s\nproject_name = %[4]s\nuser_domain_name = Default\n"+
			"project_domain_name = Default\n", k.URL, k.AdminUser, k.AdminPassword, k.AdminProject)
	}
	if err := os.WriteFile(filepath.Join(dir, "placement.conf"), []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "serve.py"), []byte(placementServePy), 0o600); err != nil {
		t.Fatal(err)
	}
	var lastErr error
	for range 3 {
		port, err := freePort()
		if err != nil {
			t.Fatal(err)
		}
		p := &PlacementServer{URL: fmt.Sprintf("http://127.0.0.1:%d", port), Token: token, Dir: dir}
		d, err := startDaemon("placement", filepath.Join(dir, "placement.log"), dir,
			[]string{"OS_PLACEMENT_CONFIG_DIR=" + dir}, PythonPath, filepath.Join(dir, "serve.py"), strconv.Itoa(port))
		if err != nil {
			t.Fatalf("servicetest: %v", err)
		}
		if lastErr = waitReady(d, 60*time.Second, func(ctx context.Context) error { return httpGet(ctx, p.URL+"/") }); lastErr == nil {
			t.Cleanup(func() {
				if err := d.stop(30 * time.Second); err != nil {
					t.Errorf("servicetest: %v", err)
				}
			})
			return p
		}
		_ = d.stop(10 * time.Second)
	}
	t.Fatalf("servicetest: Placement: %v", lastErr)
	return nil
}

// Do sends one request (microversion 1.23, Token) and returns the status;
// a JSON answer is decoded into out when out is not nil.
func (p *PlacementServer) Do(t testing.TB, method, path string, in, out any) int {
	t.Helper()
	return p.DoWith(t, p.Token, method, path, in, out)
}

// DoWith is Do with the given token.
func (p *PlacementServer) DoWith(t testing.TB, token, method, path string, in, out any) int {
	t.Helper()
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			t.Fatal(err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(context.Background(), method, p.URL+path, body)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("X-Auth-Token", token)
	req.Header.Set("OpenStack-API-Version", "placement 1.23")
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("placement %s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if out != nil && len(b) > 0 && resp.StatusCode < 300 {
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("placement %s %s: %v: %s", method, path, err, b)
		}
	}
	return resp.StatusCode
}

// CreateProvider creates a root resource provider and returns its UUID.
func (p *PlacementServer) CreateProvider(t testing.TB, name string) string {
	t.Helper()
	// 201 before microversion 1.20, 200 with the provider since.
	if code := p.Do(t, "POST", "/resource_providers", map[string]any{"name": name}, nil); code != http.StatusOK && code != http.StatusCreated {
		t.Fatalf("placement: create provider %q = %d", name, code)
	}
	var list struct {
		Providers []struct {
			UUID string `json:"uuid"`
		} `json:"resource_providers"`
	}
	if code := p.Do(t, "GET", "/resource_providers?name="+name, nil, &list); code != http.StatusOK || len(list.Providers) != 1 {
		t.Fatalf("placement: find provider %q = %d %v", name, code, list)
	}
	return list.Providers[0].UUID
}

// Traits returns a provider's generation and traits.
func (p *PlacementServer) Traits(t testing.TB, rp string) (int, []string) {
	t.Helper()
	var doc struct {
		Generation int      `json:"resource_provider_generation"`
		Traits     []string `json:"traits"`
	}
	if code := p.Do(t, "GET", "/resource_providers/"+rp+"/traits", nil, &doc); code != http.StatusOK {
		t.Fatalf("placement: traits of %s = %d", rp, code)
	}
	return doc.Generation, doc.Traits
}

// SetTraits replaces a provider's traits (creating custom ones) as another
// tool would, with the generation it reads first.
func (p *PlacementServer) SetTraits(t testing.TB, rp string, traits []string) {
	t.Helper()
	for _, tr := range traits {
		if len(tr) > 7 && tr[:7] == "CUSTOM_" {
			if code := p.Do(t, "PUT", "/traits/"+tr, nil, nil); code != http.StatusCreated && code != http.StatusNoContent {
				t.Fatalf("placement: create trait %s = %d", tr, code)
			}
		}
	}
	gen, _ := p.Traits(t, rp)
	if code := p.Do(t, "PUT", "/resource_providers/"+rp+"/traits",
		map[string]any{"resource_provider_generation": gen, "traits": traits}, nil); code != http.StatusOK {
		t.Fatalf("placement: set traits of %s = %d", rp, code)
	}
}
