package credentials

import (
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/gophercloud/gophercloud/v2/openstack/identity/v3/applicationcredentials"
	"github.com/gophercloud/gophercloud/v2/openstack/identity/v3/tokens"

	"github.com/trustpool/trustpool/internal/servicetest"
)

func TestMain(m *testing.M) { servicetest.Main(m) }

type countAuth struct {
	n atomic.Int32
}

func (c *countAuth) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/auth/tokens") {
		c.n.Add(1)
	}
	return http.DefaultTransport.RoundTrip(r)
}

// TestKeystoneCredentials authenticates against the real Keystone with a password, an
// application credential and a clouds.yaml cloud, and calls the Keystone API through the
// RoundTripper, which must recover from a revoked token with one re-authentication.
func TestKeystoneCredentials(t *testing.T) {
	ks := servicetest.Keystone(t)
	name := "cred-" + strings.ToLower(strings.ReplaceAll(t.Name(), "/", "-"))
	userID, projectID := ks.CreateUser(t, servicetest.KeystoneUser{Name: name, Password: "pw-" + name, Project: name, Roles: []string{"member"}})
	opts := Options{AuthURL: ks.URL, Username: name, Password: "pw-" + name, UserDomainName: "Default",
		ProjectName: name, ProjectDomainName: "Default", Interface: "public"}
	counter := &countAuth{}
	p, err := New(t.Context(), Config{Options: opts, Transport: counter})
	if err != nil {
		t.Fatalf("password authentication: %v", err)
	}
	id, err := p.IdentityV3()
	if err != nil {
		t.Fatal(err)
	}

	// application credential, created by the user, used to authenticate
	ac, err := applicationcredentials.Create(t.Context(), id, userID, applicationcredentials.CreateOpts{Name: name}).Extract()
	if err != nil {
		t.Fatalf("create application credential: %v", err)
	}
	acp, err := New(t.Context(), Config{Options: Options{AuthType: "v3applicationcredential", AuthURL: ks.URL,
		ApplicationCredentialID: ac.ID, ApplicationCredentialSecret: ac.Secret, Interface: "public"}})
	if err != nil {
		t.Fatalf("application credential authentication: %v", err)
	}
	acID, _ := acp.IdentityV3()
	tok, _ := acp.Token(t.Context())
	if info, err := tokens.Get(t.Context(), acID, tok).ExtractProject(); err != nil || info.ID != projectID {
		t.Errorf("application credential token project = %+v, %v; want %s", info, err, projectID)
	}
	if _, err := New(t.Context(), Config{Options: Options{AuthType: "v3applicationcredential", AuthURL: ks.URL,
		ApplicationCredentialID: ac.ID, ApplicationCredentialSecret: "wrong", Interface: "public"}}); !errors.Is(err, ErrAuthentication) {
		t.Errorf("wrong application credential secret: %v, want ErrAuthentication", err)
	}

	// clouds.yaml
	file := filepath.Join(t.TempDir(), "clouds.yaml")
	clouds := fmt.Sprintf("clouds:\n  it:\n    auth:\n      auth_url: %s\n      username: %s\n      password: pw-%s\n      project_name: %s\n      user_domain_name: Default\n      project_domain_name: Default\n    interface: public\n", ks.URL, name, name, name)
	if err := os.WriteFile(file, []byte(clouds), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := New(t.Context(), Config{Cloud: "it", CloudsFile: file}); err != nil {
		t.Errorf("clouds.yaml cloud: %v", err)
	}

	// RoundTripper: GET /v3/auth/tokens (self-validation) with the service token; after
	// the token is revoked, one re-authentication and a successful retry
	client := &http.Client{Transport: p.RoundTripper(nil)}
	get := func() int {
		t.Helper()
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, ks.URL+"/auth/tokens", nil)
		cur, _ := p.Token(t.Context())
		req.Header.Set("X-Subject-Token", cur)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
		return resp.StatusCode
	}
	if code := get(); code != 200 {
		t.Fatalf("API call with the service token: %d", code)
	}
	before := counter.n.Load()
	old, _ := p.Token(t.Context())
	if r := tokens.Revoke(t.Context(), id, old); r.Err != nil {
		t.Fatal(r.Err)
	}
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, ks.URL+"/users/"+userID, nil)
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("API call after revocation: %d, want 200 after re-authentication", resp.StatusCode)
	}
	if n := counter.n.Load() - before; n != 1 {
		t.Errorf("%d re-authentications, want 1", n)
	}
	if now, _ := p.Token(t.Context()); now == old {
		t.Error("token unchanged after re-authentication")
	}
}
