package trustcache_test

import (
	"crypto/ed25519"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/trustpool/trustpool/internal/verdict"
	"github.com/trustpool/trustpool/nova-filter-shim/internal/shimtest"
	"github.com/trustpool/trustpool/nova-filter-shim/internal/trustcache"
)

var t0 = time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)

// clock is an injected, settable clock.
type clock struct{ now time.Time }

func (c *clock) Now() time.Time { return c.now }

func pinned() ed25519.PublicKey {
	pub, _ := shimtest.GoldenKey().Public().(ed25519.PublicKey)
	return pub
}

func newCache(t *testing.T, maxAge time.Duration) (*trustcache.Cache, *clock) {
	t.Helper()
	c := &clock{now: t0}
	return trustcache.New(trustcache.Options{Verifier: verdict.NewVerifier(pinned()), Now: c.Now, MaxAge: maxAge}), c
}

func sign(t *testing.T, v verdict.Verdict) json.RawMessage {
	t.Helper()
	return shimtest.Sign(t, shimtest.GoldenKey(), v)
}

func TestGoldenVectors(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "..", "..", "internal", "verdict", "testdata", "vectors.json"))
	if err != nil {
		t.Fatal(err)
	}
	var file struct {
		Vectors []struct {
			Name   string          `json:"name"`
			Signed json.RawMessage `json:"signed"`
			Valid  bool            `json:"valid"`
			Error  string          `json:"error"`
		} `json:"vectors"`
	}
	if err := json.Unmarshal(b, &file); err != nil {
		t.Fatal(err)
	}
	if len(file.Vectors) == 0 {
		t.Fatal("no vectors")
	}
	reasons := map[string]trustcache.DropReason{
		"bad_signature": trustcache.DropBadSignature, "unknown_key": trustcache.DropUnknownKey,
		"unsigned": trustcache.DropUnsigned, "malformed": trustcache.DropMalformed,
	}
	for _, v := range file.Vectors {
		t.Run(v.Name, func(t *testing.T) {
			c, _ := newCache(t, 0)
			res := c.Apply([]json.RawMessage{v.Signed})
			if v.Valid {
				if res.Accepted != 1 || len(res.Drops) != 0 {
					t.Fatalf("Apply() = %+v, want accepted", res)
				}
				return
			}
			want, ok := reasons[v.Error]
			if !ok {
				t.Fatalf("vector error %q has no drop reason", v.Error)
			}
			if res.Accepted != 0 || len(res.Drops) != 1 || res.Drops[0].Reason != want {
				t.Fatalf("Apply() = %+v, want one drop %s", res, want)
			}
			if c.Len() != 0 {
				t.Errorf("a dropped verdict was kept")
			}
		})
	}
}

func TestDropRules(t *testing.T) {
	v5 := shimtest.Verdict("h1", verdict.Trusted, 5, t0, time.Minute, "baseline")
	other := shimtest.Sign(t, shimtest.OtherKey(), v5)
	held5 := sign(t, v5)
	tests := []struct {
		name       string
		held       []json.RawMessage
		in         json.RawMessage
		wantReason trustcache.DropReason // "" = accepted
		wantStatus verdict.Status        // status of h1 afterwards
	}{
		{"valid", nil, sign(t, v5), "", verdict.Trusted},
		{"unsigned", nil, shimtest.Unsigned(t, v5), trustcache.DropUnsigned, verdict.Unknown},
		{"forged", nil, shimtest.Forge(t, shimtest.GoldenKey(), shimtest.Verdict("h1", verdict.Untrusted, 5, t0, time.Minute), verdict.Trusted), trustcache.DropBadSignature, verdict.Unknown},
		{"unknown kid", nil, other, trustcache.DropUnknownKey, verdict.Unknown},
		{"not an envelope", nil, json.RawMessage(`{"host":"h1","status":"trusted"}`), trustcache.DropMalformed, verdict.Unknown},
		{"not an object", nil, json.RawMessage(`"trusted"`), trustcache.DropMalformed, verdict.Unknown},
		{"older seq", []json.RawMessage{sign(t, shimtest.Verdict("h1", verdict.Untrusted, 6, t0, time.Minute))}, sign(t, v5), trustcache.DropStale, verdict.Untrusted},
		{"same seq", []json.RawMessage{sign(t, v5)}, sign(t, shimtest.Verdict("h1", verdict.Untrusted, 5, t0, time.Minute)), trustcache.DropDuplicate, verdict.Trusted},
		{"newer seq", []json.RawMessage{sign(t, shimtest.Verdict("h1", verdict.Untrusted, 4, t0, time.Minute))}, sign(t, v5), "", verdict.Trusted},
		{"newer seq revokes", []json.RawMessage{sign(t, v5)}, sign(t, shimtest.Verdict("h1", verdict.Untrusted, 9, t0, time.Minute)), "", verdict.Untrusted},
		// The held bytes again (a heartbeat) are a duplicate without a new
		// signature check; other bytes under the held seq are checked.
		{"the held bytes again", []json.RawMessage{held5}, held5, trustcache.DropDuplicate, verdict.Trusted},
		{"forged under the held seq", []json.RawMessage{held5}, shimtest.Forge(t, shimtest.GoldenKey(), shimtest.Verdict("h1", verdict.Trusted, 5, t0, time.Minute), verdict.Untrusted), trustcache.DropBadSignature, verdict.Trusted},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, _ := newCache(t, 0)
			if res := c.Apply(tc.held); len(res.Drops) != 0 {
				t.Fatalf("setup: %+v", res)
			}
			res := c.Apply([]json.RawMessage{tc.in})
			var got trustcache.DropReason
			if len(res.Drops) > 0 {
				got = res.Drops[0].Reason
			}
			if got != tc.wantReason {
				t.Errorf("drop reason = %q, want %q (%+v)", got, tc.wantReason, res)
			}
			if _, st, _ := c.Lookup("h1"); st != tc.wantStatus {
				t.Errorf("status = %s, want %s", st, tc.wantStatus)
			}
			stats := c.Stats()
			if tc.wantReason != "" && stats.Dropped[tc.wantReason] != 1 {
				t.Errorf("dropped[%s] = %d, want 1", tc.wantReason, stats.Dropped[tc.wantReason])
			}
		})
	}
}

func TestExpiryFailsClosed(t *testing.T) {
	for _, tc := range []struct {
		name   string
		maxAge time.Duration
		expiry time.Duration // effective
	}{
		{"expires_at", 0, 3 * time.Minute},
		{"max_verdict_age caps", time.Minute, time.Minute},
		{"max_verdict_age longer than validity", time.Hour, 3 * time.Minute},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, clk := newCache(t, tc.maxAge)
			c.Apply([]json.RawMessage{sign(t, shimtest.Verdict("h1", verdict.Trusted, 1, t0, 3*time.Minute, "baseline"))})
			trusted := verdict.Trusted
			req := trustcache.Request{Hosts: []string{"h1"}, TrustedHost: &trusted}
			clk.now = t0.Add(tc.expiry - time.Nanosecond)
			if d := c.Filter(req); len(d.Passes) != 1 {
				t.Fatalf("just before expiry: %+v, want pass", d)
			}
			clk.now = t0.Add(tc.expiry)
			d := c.Filter(req)
			if len(d.Passes) != 0 {
				t.Fatalf("at expiry: %+v, want reject", d)
			}
			if _, st, _ := c.Lookup("h1"); st != verdict.Unknown {
				t.Errorf("status at expiry = %s, want unknown", st)
			}
			unknown := verdict.Unknown
			if d := c.Filter(trustcache.Request{Hosts: []string{"h1"}, TrustedHost: &unknown}); len(d.Passes) != 1 {
				t.Errorf("expired verdict does not count as unknown: %+v", d)
			}
			if got := c.Stats().Hosts["expired"]; got != 1 {
				t.Errorf("expired hosts = %d, want 1", got)
			}
		})
	}
}

func TestTruthTable(t *testing.T) {
	c, clk := newCache(t, 0)
	c.Apply([]json.RawMessage{
		sign(t, shimtest.Verdict("trusted", verdict.Trusted, 1, t0, time.Hour, "baseline", "gpu")),
		sign(t, shimtest.Verdict("untrusted", verdict.Untrusted, 1, t0, time.Hour)),
		sign(t, shimtest.Verdict("unknown", verdict.Unknown, 1, t0, time.Hour)),
		sign(t, shimtest.Verdict("expired", verdict.Trusted, 1, t0.Add(-time.Hour), time.Minute, "baseline")),
		sign(t, shimtest.Verdict("expired-untrusted", verdict.Untrusted, 1, t0.Add(-time.Hour), time.Minute)),
	})
	clk.now = t0.Add(time.Second)
	hosts := []string{"trusted", "untrusted", "unknown", "expired", "expired-untrusted", "absent"}
	lvl := func(s verdict.Status) *verdict.Status { return &s }
	str := func(s string) *string { return &s }
	tests := []struct {
		name    string
		th      *verdict.Status
		profile *string
		want    []string
	}{
		{"trusted_host=trusted", lvl(verdict.Trusted), nil, []string{"trusted"}},
		{"trusted_host=untrusted", lvl(verdict.Untrusted), nil, []string{"untrusted"}},
		{"trusted_host=unknown", lvl(verdict.Unknown), nil, []string{"unknown", "expired", "expired-untrusted", "absent"}},
		{"profile=baseline", nil, str("baseline"), []string{"trusted"}},
		{"profile=gpu", nil, str("gpu"), []string{"trusted"}},
		{"profile=other", nil, str("other"), nil},
		{"both hold", lvl(verdict.Trusted), str("gpu"), []string{"trusted"}},
		{"both: profile missing", lvl(verdict.Trusted), str("other"), nil},
		{"both: contradictory", lvl(verdict.Untrusted), str("baseline"), nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := c.Filter(trustcache.Request{Hosts: hosts, TrustedHost: tc.th, Profile: tc.profile})
			if diff := cmp.Diff(tc.want, d.Passes, cmpEmpty); diff != "" {
				t.Errorf("passes (-want +got):\n%s", diff)
			}
			if len(d.Passes)+len(d.Rejected) != len(hosts) {
				t.Errorf("passes %v + rejected %v do not cover the hosts", d.Passes, d.Rejected)
			}
			for _, r := range d.Rejected {
				if r.Reason() == "" {
					t.Errorf("host %s rejected without a reason", r.Host)
				}
			}
		})
	}
}

func TestRejectReasons(t *testing.T) {
	c, clk := newCache(t, 0)
	c.Apply([]json.RawMessage{
		sign(t, shimtest.Verdict("untrusted", verdict.Untrusted, 1, t0, time.Hour)),
		sign(t, shimtest.Verdict("expired", verdict.Trusted, 1, t0, time.Minute)),
	})
	clk.now = t0.Add(2 * time.Minute)
	trusted := verdict.Trusted
	profile := "gpu"
	d := c.Filter(trustcache.Request{Hosts: []string{"untrusted", "expired", "absent", "untrusted"}, TrustedHost: &trusted, Profile: &profile})
	want := [][2]string{
		{"untrusted", "status is untrusted, want trusted; status is untrusted, profile gpu needs trusted (test: untrusted)"},
		{"expired", "status is unknown, want trusted; status is unknown, profile gpu needs trusted (verdict expired at 2026-11-25T12:01:00Z)"},
		{"absent", "status is unknown, want trusted; status is unknown, profile gpu needs trusted (no verdict)"},
	}
	if diff := cmp.Diff(want, reasons(d)); diff != "" {
		t.Errorf("rejected (-want +got):\n%s", diff)
	}
	d = c.Filter(trustcache.Request{Hosts: []string{"untrusted"}, Profile: &profile})
	if diff := cmp.Diff([][2]string{{"untrusted", "status is untrusted, profile gpu needs trusted (test: untrusted)"}}, reasons(d)); diff != "" {
		t.Errorf("profile only (-want +got):\n%s", diff)
	}
	c.Apply([]json.RawMessage{sign(t, shimtest.Verdict("trusted-base", verdict.Trusted, 1, t0, time.Hour, "baseline"))})
	untrusted := verdict.Untrusted
	d = c.Filter(trustcache.Request{Hosts: []string{"trusted-base"}, Profile: &profile, TrustedHost: &untrusted})
	if diff := cmp.Diff([][2]string{{"trusted-base", "status is trusted, want untrusted; profile gpu not satisfied"}}, reasons(d)); diff != "" {
		t.Errorf("trusted without the profile (-want +got):\n%s", diff)
	}
	d = c.Filter(trustcache.Request{Hosts: []string{"trusted-base"}, Profile: &profile})
	if diff := cmp.Diff([][2]string{{"trusted-base", "profile gpu not satisfied"}}, reasons(d)); diff != "" {
		t.Errorf("trusted without the profile (-want +got):\n%s", diff)
	}
}

func reasons(d trustcache.Decision) [][2]string {
	var out [][2]string
	for _, r := range d.Rejected {
		out = append(out, [2]string{r.Host, r.Reason()})
	}
	return out
}

func TestStats(t *testing.T) {
	c, _ := newCache(t, 0)
	c.Apply([]json.RawMessage{
		sign(t, shimtest.Verdict("a", verdict.Trusted, 1, t0, time.Hour)),
		sign(t, shimtest.Verdict("b", verdict.Untrusted, 1, t0, time.Hour)),
		sign(t, shimtest.Verdict("c", verdict.Trusted, 1, t0.Add(-time.Hour), time.Minute)),
		shimtest.Unsigned(t, shimtest.Verdict("d", verdict.Trusted, 1, t0, time.Hour)),
	})
	s := c.Stats()
	if s.Accepted != 3 || s.Dropped[trustcache.DropUnsigned] != 1 {
		t.Errorf("counters = %+v", s)
	}
	want := map[string]int{"trusted": 1, "untrusted": 1, "unknown": 0, "expired": 1}
	if diff := cmp.Diff(want, s.Hosts); diff != "" {
		t.Errorf("hosts (-want +got):\n%s", diff)
	}
}

func TestValidProfileName(t *testing.T) {
	for s, want := range map[string]bool{
		"baseline": true, "gpu-2026": true, "a.b_c": true, "": false, "-x": false, "a b": false,
		"ünï": false, string(make([]byte, 65)): false,
	} {
		if got := trustcache.ValidProfileName(s); got != want {
			t.Errorf("ValidProfileName(%q) = %v, want %v", s, got, want)
		}
	}
}

var cmpEmpty = cmp.Transformer("empty", func(s []string) []string {
	if len(s) == 0 {
		return nil
	}
	return s
})

// Apply tells which verdicts carried the pinned key's signature, however
// they were then handled, and how recent and how long-lived they are:
// the shim judges the service's liveness from that, never from forgeries.
func TestApplyReportsAuthenticVerdicts(t *testing.T) {
	c, _ := newCache(t, 0)
	c.Apply([]json.RawMessage{sign(t, shimtest.Verdict("a", verdict.Trusted, 5, t0, time.Minute))})
	res := c.Apply([]json.RawMessage{
		sign(t, shimtest.Verdict("a", verdict.Trusted, 5, t0, time.Minute)),                                                                 // duplicate
		sign(t, shimtest.Verdict("a", verdict.Trusted, 4, t0.Add(-time.Hour), 2*time.Minute)),                                               // older seq
		sign(t, shimtest.Verdict("b", verdict.Unknown, 1, t0.Add(time.Second), 0)),                                                          // kept
		shimtest.Forge(t, shimtest.GoldenKey(), shimtest.Verdict("c", verdict.Untrusted, 1, t0.Add(time.Hour), time.Hour), verdict.Trusted), // forged
		shimtest.Sign(t, shimtest.OtherKey(), shimtest.Verdict("d", verdict.Trusted, 1, t0.Add(time.Hour), 3*time.Hour)),                    // unpinned key
	})
	if res.Accepted != 1 || res.Authentic != 3 || len(res.Drops) != 4 {
		t.Errorf("Apply = accepted %d, authentic %d, %d drops; want 1, 3, 4", res.Accepted, res.Authentic, len(res.Drops))
	}
	if !res.NewestVerifiedAt.Equal(t0.Add(time.Second)) || res.MaxValidity != 2*time.Minute {
		t.Errorf("NewestVerifiedAt %v, MaxValidity %v; want %v, 2m (forged and unpinned ones ignored)", res.NewestVerifiedAt, res.MaxValidity, t0.Add(time.Second))
	}
	if res := c.Apply(nil); res.Authentic != 0 || !res.NewestVerifiedAt.IsZero() {
		t.Errorf("empty batch = %+v", res)
	}
}

// A resent verdict (the same bytes as the one held) counts as authentic:
// it tells the shim the service is alive, as the first copy did.
func TestResentVerdictIsAuthentic(t *testing.T) {
	c, _ := newCache(t, 0)
	raw := sign(t, shimtest.Verdict("h1", verdict.Trusted, 5, t0, time.Minute))
	if res := c.Apply([]json.RawMessage{raw}); res.Accepted != 1 {
		t.Fatalf("first copy: %+v", res)
	}
	res := c.Apply([]json.RawMessage{raw, raw})
	if res.Authentic != 2 || res.Accepted != 0 || !res.NewestVerifiedAt.Equal(t0) || res.MaxValidity != time.Minute {
		t.Errorf("resent copies: %+v, want 2 authentic duplicates verified at t0", res)
	}
	// Once a newer verdict replaces it, the old bytes are checked again
	// and refused as stale.
	if res := c.Apply([]json.RawMessage{sign(t, shimtest.Verdict("h1", verdict.Untrusted, 6, t0, time.Minute))}); res.Accepted != 1 {
		t.Fatalf("newer verdict: %+v", res)
	}
	if res := c.Apply([]json.RawMessage{raw}); len(res.Drops) != 1 || res.Drops[0].Reason != trustcache.DropStale {
		t.Errorf("the replaced verdict's bytes: %+v, want stale", res)
	}
}

func TestAppendHeldAndVersion(t *testing.T) {
	c, clk := newCache(t, 0)
	now := clk.Now()
	if v := c.Version(); v != 0 {
		t.Fatalf("empty cache version %d", v)
	}
	c.Apply([]json.RawMessage{
		shimtest.Sign(t, shimtest.GoldenKey(), shimtest.Verdict("b", verdict.Trusted, 1, now, time.Hour, "p1", "p2")),
		shimtest.Sign(t, shimtest.GoldenKey(), shimtest.Verdict("a", verdict.Untrusted, 1, now, time.Minute)),
	})
	v1 := c.Version()
	// A duplicate or older verdict changes nothing.
	c.Apply([]json.RawMessage{shimtest.Sign(t, shimtest.GoldenKey(), shimtest.Verdict("a", verdict.Untrusted, 1, now, time.Minute))})
	held, v := c.AppendHeld(nil)
	if v != v1 || v1 != 2 {
		t.Errorf("versions %d, %d; want 2 twice", v1, v)
	}
	want := []trustcache.Held{
		{Host: "a", Status: verdict.Untrusted, Profiles: []string{}, ExpiresAt: now.Add(time.Minute)},
		{Host: "b", Status: verdict.Trusted, Profiles: []string{"p1", "p2"}, ExpiresAt: now.Add(time.Hour)},
	}
	if diff := cmp.Diff(want, held); diff != "" {
		t.Errorf("held (-want +got):\n%s", diff)
	}
}
