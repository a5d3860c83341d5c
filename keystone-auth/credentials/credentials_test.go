package credentials

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/trustpool/trustpool/keystone-auth/keystonetest"
)

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func fakeKeystone(t *testing.T) (*keystonetest.Server, *clock) {
	t.Helper()
	ks := keystonetest.New(t)
	c := &clock{t: time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)}
	ks.SetClock(c.Now)
	ks.AddUser(keystonetest.User{Name: "svc", Password: "pw", ProjectName: "service", Roles: []string{"service"}})
	ks.AddAppCred(keystonetest.AppCred{ID: "ac1", Name: "mycred", Secret: "s3cret", UserID: "svc-id"})
	return ks, c
}

func passwordOptions(ks *keystonetest.Server) Options {
	return Options{AuthURL: ks.URL, Username: "svc", Password: "pw", UserDomainName: "Default",
		ProjectName: "service", ProjectDomainName: "Default", Interface: "public"}
}

// authRequests counts POST /v3/auth/tokens requests.
func authRequests(ks *keystonetest.Server) int {
	n := 0
	for _, r := range ks.Requests() {
		if r.Method == http.MethodPost && r.Path == "/v3/auth/tokens" {
			n++
		}
	}
	return n
}

func TestAuthenticate(t *testing.T) {
	ks, c := fakeKeystone(t)
	tests := []struct {
		name    string
		opts    Options
		wantErr error
	}{
		{name: "password", opts: passwordOptions(ks)},
		{name: "application credential by id", opts: Options{AuthType: "v3applicationcredential", AuthURL: ks.URL,
			ApplicationCredentialID: "ac1", ApplicationCredentialSecret: "s3cret"}},
		{name: "application credential by name", opts: Options{AuthType: "v3applicationcredential", AuthURL: ks.URL,
			ApplicationCredentialName: "mycred", Username: "svc", UserDomainName: "Default", ApplicationCredentialSecret: "s3cret"}},
		{name: "wrong password", opts: func() Options { o := passwordOptions(ks); o.Password = "nope"; return o }(), wantErr: ErrAuthentication},
		{name: "wrong secret", opts: Options{AuthType: "v3applicationcredential", AuthURL: ks.URL,
			ApplicationCredentialID: "ac1", ApplicationCredentialSecret: "nope"}, wantErr: ErrAuthentication},
		{name: "invalid options", opts: Options{AuthURL: ks.URL}, wantErr: ErrInvalidOptions},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := New(t.Context(), Config{Options: tt.opts, Now: c.Now})
			if !errors.Is(err, tt.wantErr) || (tt.wantErr == nil && err != nil) {
				t.Fatalf("New() error = %v, want %v", err, tt.wantErr)
			}
			if err != nil {
				if strings.Contains(err.Error(), "nope") || strings.Contains(err.Error(), "s3cret") {
					t.Errorf("error leaks a secret: %v", err)
				}
				return
			}
			tok, err := p.Token(t.Context())
			if err != nil || !strings.HasPrefix(tok, "gAAAA") {
				t.Errorf("Token() = %q, %v", tok, err)
			}
			if got, want := p.ExpiresAt(), c.Now().Add(time.Hour); !got.Equal(want) {
				t.Errorf("ExpiresAt() = %v, want %v", got, want)
			}
			if _, err := p.IdentityV3(); err != nil {
				t.Errorf("IdentityV3() = %v", err)
			}
		})
	}
}

func TestCloudsYAML(t *testing.T) {
	ks, c := fakeKeystone(t)
	dir := t.TempDir()
	file := filepath.Join(dir, "clouds.yaml")
	content := fmt.Sprintf(`clouds:
  svc:
    auth:
      auth_url: %[1]s
      username: svc
      password: pw
      project_name: service
      user_domain_name: Default
      project_domain_name: Default
    region_name: RegionOne
    interface: public
  appcred:
    auth_type: v3applicationcredential
    auth:
      auth_url: %[1]s
      application_credential_id: ac1
      application_credential_secret: s3cret
  broken:
    auth:
      auth_url: %[1]s
      username: svc
      password: wrong
      project_name: service
      user_domain_name: Default
      project_domain_name: Default
`, ks.URL)
	if err := os.WriteFile(file, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, cloud := range []string{"svc", "appcred"} {
		p, err := New(t.Context(), Config{Cloud: cloud, CloudsFile: file, Now: c.Now})
		if err != nil {
			t.Fatalf("cloud %s: %v", cloud, err)
		}
		if tok, err := p.Token(t.Context()); err != nil || tok == "" {
			t.Errorf("cloud %s: Token() = %q, %v", cloud, tok, err)
		}
	}
	if _, err := New(t.Context(), Config{Cloud: "broken", CloudsFile: file}); !errors.Is(err, ErrAuthentication) {
		t.Errorf("cloud broken: %v, want ErrAuthentication", err)
	}
	if _, err := New(t.Context(), Config{Cloud: "missing", CloudsFile: file}); !errors.Is(err, ErrInvalidOptions) {
		t.Errorf("cloud missing: %v, want ErrInvalidOptions", err)
	}
}

func TestValidateSection(t *testing.T) {
	tests := []struct {
		opts Options
		key  string
	}{
		{Options{}, "svc.auth_url"},
		{Options{AuthURL: "ftp://x"}, "svc.auth_url"},
		{Options{AuthURL: "http://x", Username: "u", Password: "p"}, "svc.user_domain_name"},
		{Options{AuthURL: "http://x", Username: "u", Password: "p", UserDomainID: "d", ProjectName: "p"}, "svc.project_domain_name"},
		{Options{AuthURL: "http://x", Username: "u", Password: "p", UserDomainID: "d", SystemScope: "some"}, "svc.system_scope"},
		{Options{AuthType: "v3applicationcredential", AuthURL: "http://x", ApplicationCredentialName: "n", ApplicationCredentialSecret: "s"}, "svc.username"},
		{Options{AuthType: "v3applicationcredential", AuthURL: "http://x", ApplicationCredentialID: "i", ApplicationCredentialSecret: "s", ProjectName: "p"}, "svc.project_name"},
		{Options{AuthURL: "http://x", UserID: "u", Password: "p", Certfile: "c"}, "svc.certfile"},
	}
	for _, tt := range tests {
		err := tt.opts.ValidateSection("svc")
		if !errors.Is(err, ErrInvalidOptions) || !strings.Contains(err.Error(), tt.key+":") {
			t.Errorf("%+v: ValidateSection() = %v, want an error naming %s", tt.opts, err, tt.key)
		}
		// Each problem is an *OptionError, so callers can name the option
		// their own way.
		var keys []string
		var joined interface{ Unwrap() []error }
		if !errors.As(err, &joined) {
			t.Fatalf("%+v: %v is not a joined error", tt.opts, err)
		}
		for _, e := range joined.Unwrap() {
			var oe *OptionError
			if !errors.As(e, &oe) || oe.Section != "svc" {
				t.Errorf("%+v: %v is not an *OptionError of section svc", tt.opts, e)
				continue
			}
			keys = append(keys, "svc."+oe.Key)
		}
		if !slices.Contains(keys, tt.key) {
			t.Errorf("%+v: OptionError keys %v, want %s among them", tt.opts, keys, tt.key)
		}
	}
	ok := Options{AuthURL: "https://x/v3", UserID: "u", Password: "p", ProjectID: "p"}
	if err := ok.ValidateSection("svc"); err != nil {
		t.Errorf("valid options: %v", err)
	}
}

// target is a service that accepts the tokens accept says yes to and records requests.
type target struct {
	mu     sync.Mutex
	accept func(tok string) bool
	seen   []string
	bodies []string
}

func (s *target) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	s.mu.Lock()
	defer s.mu.Unlock()
	tok := r.Header.Get("X-Auth-Token")
	s.seen = append(s.seen, tok)
	s.bodies = append(s.bodies, string(b))
	if !s.accept(tok) {
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	w.WriteHeader(http.StatusOK)
}

func (s *target) set(accept func(string) bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.accept, s.seen, s.bodies = accept, nil, nil
}

func TestRoundTripperReauthenticatesOnce(t *testing.T) {
	ks, c := fakeKeystone(t)
	p, err := New(t.Context(), Config{Options: passwordOptions(ks), Now: c.Now})
	if err != nil {
		t.Fatal(err)
	}
	first, _ := p.Token(t.Context())
	tgt := &target{}
	srv := httptest.NewServer(tgt)
	t.Cleanup(srv.Close)
	client := &http.Client{Transport: p.RoundTripper(nil)}
	post := func() int {
		t.Helper()
		req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, srv.URL, bytes.NewReader([]byte("payload")))
		if err != nil {
			t.Fatal(err)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
		return resp.StatusCode
	}

	tgt.set(func(tok string) bool { return tok == first })
	if code := post(); code != 200 || authRequests(ks) != 1 || len(tgt.seen) != 1 {
		t.Fatalf("with a valid token: %d after %d authentications", code, authRequests(ks))
	}

	// the target stops accepting the first token: one re-authentication, then one retry
	// with the new token and the same body
	tgt.set(func(tok string) bool { return tok != first })
	if code := post(); code != 200 {
		t.Fatalf("after the token was refused: %d, want 200 after re-authentication", code)
	}
	if authRequests(ks) != 2 || len(tgt.seen) != 2 || tgt.seen[0] != first || tgt.seen[1] == first {
		t.Errorf("authentications %d, target saw %d requests", authRequests(ks), len(tgt.seen))
	}
	if len(tgt.bodies) == 2 && tgt.bodies[1] != "payload" {
		t.Errorf("retried body %q, want the original", tgt.bodies[1])
	}

	// a target that refuses every token: no second re-authentication within
	// MinReauthInterval; after it, exactly one re-authentication and one retry
	tgt.set(func(string) bool { return false })
	before := authRequests(ks)
	if code := post(); code != 401 || authRequests(ks) != before || len(tgt.seen) != 1 {
		t.Errorf("within MinReauthInterval: %d, %d re-authentications, %d requests", code, authRequests(ks)-before, len(tgt.seen))
	}
	c.Advance(10 * time.Second)
	tgt.set(func(string) bool { return false })
	if code := post(); code != 401 || authRequests(ks) != before+1 || len(tgt.seen) != 2 {
		t.Errorf("after MinReauthInterval: %d, %d re-authentications, %d requests; want 401, 1, 2", code, authRequests(ks)-before, len(tgt.seen))
	}
}

func TestConcurrent401sShareOneReauthentication(t *testing.T) {
	ks, c := fakeKeystone(t)
	p, err := New(t.Context(), Config{Options: passwordOptions(ks), Now: c.Now})
	if err != nil {
		t.Fatal(err)
	}
	first, _ := p.Token(t.Context())
	var rejected atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("X-Auth-Token") == first {
			rejected.Add(1)
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		w.WriteHeader(http.StatusOK)
	}))
	t.Cleanup(srv.Close)
	client := &http.Client{Transport: p.RoundTripper(nil)}
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, srv.URL, nil)
			resp, err := client.Do(req)
			if err != nil {
				t.Error(err)
				return
			}
			_ = resp.Body.Close()
			if resp.StatusCode != 200 {
				t.Errorf("status %d", resp.StatusCode)
			}
		})
	}
	wg.Wait()
	if n := authRequests(ks); n != 2 {
		t.Errorf("%d authentications for %d concurrent 401s, want 2 (initial + one renewal)", n, rejected.Load())
	}
}

func TestTokenRenewedBeforeExpiry(t *testing.T) {
	ks, c := fakeKeystone(t)
	ks.SetTokenLifetime(10 * time.Minute)
	p, err := New(t.Context(), Config{Options: passwordOptions(ks), Now: c.Now})
	if err != nil {
		t.Fatal(err)
	}
	t1, _ := p.Token(t.Context())
	c.Advance(7 * time.Minute)
	if t2, _ := p.Token(t.Context()); t2 != t1 || authRequests(ks) != 1 {
		t.Errorf("token renewed 3 minutes before expiry")
	}
	c.Advance(2 * time.Minute)
	t3, err := p.Token(t.Context())
	if err != nil || t3 == t1 || authRequests(ks) != 2 {
		t.Errorf("token not renewed 1 minute before expiry: %v, %d authentications", err, authRequests(ks))
	}
	if !p.ExpiresAt().Equal(c.Now().Add(10 * time.Minute)) {
		t.Errorf("ExpiresAt after renewal = %v", p.ExpiresAt())
	}
}

func TestRetriesConnectionFailures(t *testing.T) {
	ks, c := fakeKeystone(t)
	var fails atomic.Int32
	fails.Store(2)
	rt := roundTripFunc(func(r *http.Request) (*http.Response, error) {
		if fails.Add(-1) >= 0 {
			return nil, errors.New("connection refused")
		}
		return http.DefaultTransport.RoundTrip(r)
	})
	if _, err := New(t.Context(), Config{Options: passwordOptions(ks), Transport: rt, MaxRetries: 2, RetryDelay: time.Millisecond, Now: c.Now}); err != nil {
		t.Errorf("with 2 failures and 2 retries: %v", err)
	}
	fails.Store(3)
	if _, err := New(t.Context(), Config{Options: passwordOptions(ks), Transport: rt, MaxRetries: 2, RetryDelay: time.Millisecond, Now: c.Now}); !errors.Is(err, ErrAuthentication) {
		t.Errorf("with 3 failures and 2 retries: %v, want ErrAuthentication", err)
	}
	// a 4xx answer is not retried
	before := authRequests(ks)
	o := passwordOptions(ks)
	o.Password = "wrong"
	_, _ = New(t.Context(), Config{Options: o, MaxRetries: 3, RetryDelay: time.Millisecond})
	if got := authRequests(ks) - before; got != 1 {
		t.Errorf("a rejected password was sent %d times", got)
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }
