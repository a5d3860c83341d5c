package localapi_test

import (
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/trustpool/trustpool/internal/verdict"
	"github.com/trustpool/trustpool/nova-filter-shim/internal/localapi"
	"github.com/trustpool/trustpool/nova-filter-shim/internal/shimtest"
	"github.com/trustpool/trustpool/nova-filter-shim/internal/trustcache"
)

// BenchmarkFilter1000 is one POST /v1/filter over 1,000 hosts, half of
// them trusted: decode, validate, decide, encode; full answer and mask.
func BenchmarkFilter1000(b *testing.B) {
	b.Run("full", func(b *testing.B) { benchFilter(b, "") })
	b.Run("mask", func(b *testing.B) { benchFilter(b, "mask") })
}

func benchFilter(b *testing.B, answer string) {
	b.Helper()
	pub, _ := shimtest.GoldenKey().Public().(ed25519.PublicKey)
	c := trustcache.New(trustcache.Options{Verifier: verdict.NewVerifier(pub), Now: func() time.Time { return t0.Add(time.Second) }})
	hosts := make([]string, 1000)
	var raw []json.RawMessage
	for i := range hosts {
		hosts[i] = fmt.Sprintf("compute-%04d", i)
		st := verdict.Trusted
		if i%2 == 1 {
			st = verdict.Untrusted
		}
		raw = append(raw, shimtest.Sign(b, shimtest.GoldenKey(), shimtest.Verdict(hosts[i], st, 1, t0, time.Hour, "baseline")))
	}
	c.Apply(raw)
	req := map[string]any{"hosts": hosts, "trusted_host": nil, "profile": "baseline"}
	if answer != "" {
		req["answer"] = answer
	}
	body, _ := json.Marshal(req)
	api := localapi.New(localapi.Config{Cache: c})
	b.ReportAllocs()
	for b.Loop() {
		rec := httptest.NewRecorder()
		api.ServeHTTP(rec, httptest.NewRequestWithContext(b.Context(), http.MethodPost, "/v1/filter", strings.NewReader(string(body))))
		if rec.Code != 200 {
			b.Fatal(rec.Code)
		}
	}
}
