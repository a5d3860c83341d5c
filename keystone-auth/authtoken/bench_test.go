package authtoken

import (
	"crypto/rand"
	"encoding/hex"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/trustpool/trustpool/internal/servicetest"
	"github.com/trustpool/trustpool/keystone-auth/keystonetest"
)

// BenchmarkMiddleware measures the per-request cost of the middleware on a cache hit and
// on a miss (cache disabled, so every request validates the token with Keystone), against
// the fake Keystone on loopback and against the real one (skipped with -short).
//
//	go test -run XXX -bench Middleware -benchmem ./keystone-auth/authtoken/
func BenchmarkMiddleware(b *testing.B) {
	ok := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusNoContent) })
	run := func(b *testing.B, h http.Handler, tok string) {
		b.Helper()
		req := httptest.NewRequest(http.MethodGet, "/v1/hosts", nil)
		req.Header.Set("X-Auth-Token", tok)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req) // warm the cache (and connections)
		if rec.Code != http.StatusNoContent {
			b.Fatalf("warm-up request: %d", rec.Code)
		}
		b.ReportAllocs()
		for b.Loop() {
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != http.StatusNoContent {
				b.Fatalf("status %d", rec.Code)
			}
		}
	}
	fake := func(b *testing.B, cacheTime int) (http.Handler, string) {
		b.Helper()
		ks := keystonetest.New(b)
		ks.AddUser(keystonetest.User{Name: "nova", Password: "secret", ProjectName: "service", Roles: []string{"service"}})
		ks.AddUser(keystonetest.User{Name: "alice", Password: "pw", ProjectName: "demo", Roles: []string{"member", "reader"}})
		o := DefaultOptions()
		o.AuthURL, o.Username, o.Password, o.UserDomainName, o.ProjectName, o.ProjectDomainName = ks.URL, "nova", "secret", "Default", "service", "Default"
		o.TokenCacheTime, o.IncludeServiceCatalog = cacheTime, false
		s, err := Open(b.Context(), o, OpenConfig{})
		if err != nil {
			b.Fatal(err)
		}
		return s.Middleware.Wrap(ok), ks.Issue("alice")
	}
	real := func(b *testing.B, cacheTime int) (http.Handler, string) {
		b.Helper()
		ks := servicetest.Keystone(b)
		suffix := make([]byte, 4)
		_, _ = rand.Read(suffix)
		name := "bench-" + map[bool]string{true: "hit", false: "miss"}[cacheTime > 0] + "-" + hex.EncodeToString(suffix)
		ks.CreateUser(b, servicetest.KeystoneUser{Name: name + "-svc", Password: "pw", Project: name + "-svc", Roles: []string{"service"}})
		ks.CreateUser(b, servicetest.KeystoneUser{Name: name + "-user", Password: "pw", Project: name, Roles: []string{"member"}})
		o := DefaultOptions()
		o.AuthURL, o.Username, o.Password, o.UserDomainName, o.ProjectName, o.ProjectDomainName = ks.URL, name+"-svc", "pw", "Default", name+"-svc", "Default"
		o.TokenCacheTime, o.IncludeServiceCatalog, o.Interface = cacheTime, false, "public"
		s, err := Open(b.Context(), o, OpenConfig{})
		if err != nil {
			b.Fatal(err)
		}
		return s.Middleware.Wrap(ok), ks.Token(b, name+"-user", "pw", name)
	}
	b.Run("hit/fake-keystone", func(b *testing.B) { h, tok := fake(b, 300); run(b, h, tok) })
	b.Run("miss/fake-keystone", func(b *testing.B) { h, tok := fake(b, -1); run(b, h, tok) })
	b.Run("hit/keystone", func(b *testing.B) { h, tok := real(b, 300); run(b, h, tok) })
	b.Run("miss/keystone", func(b *testing.B) { h, tok := real(b, -1); run(b, h, tok) })
}
