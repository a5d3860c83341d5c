package authtoken

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
)

// stubValidator answers from a map and can hold answers until released.
type stubValidator struct {
	calls   atomic.Int32
	release chan struct{}
	bodies  map[string]string
}

func (s *stubValidator) Validate(ctx context.Context, token string, _ bool) (json.RawMessage, error) {
	s.calls.Add(1)
	if s.release != nil {
		select {
		case <-s.release:
		case <-ctx.Done():
			return nil, fmt.Errorf("%w: %w", ErrUnavailable, ctx.Err())
		}
	}
	b, ok := s.bodies[token]
	if !ok {
		return nil, ErrInvalidToken
	}
	return json.RawMessage(b), nil
}

func tokenJSON(expires time.Time) string {
	return fmt.Sprintf(`{"token": {"methods": ["password"], "user": {"id": "u1", "name": "alice", "domain": {"id": "default", "name": "Default"}},
		"expires_at": %q, "issued_at": "2026-01-01T00:00:00.000000Z", "audit_ids": ["a"],
		"project": {"id": "p1", "name": "demo", "domain": {"id": "default", "name": "Default"}},
		"roles": [{"id": "r1", "name": "member"}]}}`, expires.UTC().Format("2006-01-02T15:04:05.000000Z"))
}

func stubMiddleware(t testing.TB, v Validator, mod func(*Options)) *Middleware {
	t.Helper()
	opts := DefaultOptions()
	opts.WWWAuthenticateURI = "http://keystone/v3"
	if mod != nil {
		mod(&opts)
	}
	m, err := New(Config{Options: opts, Validator: v})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// TestConcurrentRequestsShareOneValidation: concurrent requests with the same uncached
// token make one Keystone request, even with the cache disabled.
func TestConcurrentRequestsShareOneValidation(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		v := &stubValidator{release: make(chan struct{}), bodies: map[string]string{"tok": tokenJSON(time.Now().Add(time.Hour))}}
		m := stubMiddleware(t, v, func(o *Options) { o.TokenCacheTime = -1 })
		h := m.Wrap(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusNoContent) }))
		var wg sync.WaitGroup
		codes := make([]int, 20)
		for i := range codes {
			wg.Go(func() {
				req := httptest.NewRequest(http.MethodGet, "/", nil)
				req.Header.Set("X-Auth-Token", "tok")
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, req)
				codes[i] = rec.Code
			})
		}
		synctest.Wait() // every request is now waiting for the one validation
		if n := v.calls.Load(); n != 1 {
			t.Errorf("%d validations in flight, want 1", n)
		}
		close(v.release)
		wg.Wait()
		for i, c := range codes {
			if c != http.StatusNoContent {
				t.Errorf("request %d: %d", i, c)
			}
		}
	})
}

// TestAbandonedValidationDoesNotFailOthers: the request that started a shared validation
// going away does not cancel it for the others.
func TestAbandonedValidationDoesNotFailOthers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		v := &stubValidator{release: make(chan struct{}), bodies: map[string]string{"tok": tokenJSON(time.Now().Add(time.Hour))}}
		m := stubMiddleware(t, v, nil)
		h := m.Wrap(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusNoContent) }))
		ctx, cancel := context.WithCancel(t.Context())
		first := make(chan int)
		go func() {
			req := httptest.NewRequestWithContext(ctx, http.MethodGet, "/", nil)
			req.Header.Set("X-Auth-Token", "tok")
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			first <- rec.Code
		}()
		synctest.Wait()
		second := make(chan int)
		go func() {
			req := httptest.NewRequest(http.MethodGet, "/", nil)
			req.Header.Set("X-Auth-Token", "tok")
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			second <- rec.Code
		}()
		synctest.Wait()
		cancel() // the leader's client goes away; its validation goes on
		synctest.Wait()
		close(v.release)
		<-first
		if c := <-second; c != http.StatusNoContent {
			t.Errorf("second request: %d, want 204", c)
		}
		if n := v.calls.Load(); n != 1 {
			t.Errorf("%d validations, want 1", n)
		}
	})
}

// TestValidationTimeout: a hanging Keystone gives 503 after ValidateTimeout.
func TestValidationTimeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		v := &stubValidator{release: make(chan struct{})}
		opts := DefaultOptions()
		opts.WWWAuthenticateURI = "http://keystone/v3"
		m, err := New(Config{Options: opts, Validator: v, ValidateTimeout: 5 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		h := m.Wrap(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { t.Error("handler called") }))
		req := httptest.NewRequest(http.MethodGet, "/", nil)
		req.Header.Set("X-Auth-Token", "tok")
		rec := httptest.NewRecorder()
		start := time.Now()
		h.ServeHTTP(rec, req)
		if rec.Code != http.StatusServiceUnavailable || time.Since(start) != 5*time.Second {
			t.Errorf("code %d after %v, want 503 after 5s", rec.Code, time.Since(start))
		}
	})
}
