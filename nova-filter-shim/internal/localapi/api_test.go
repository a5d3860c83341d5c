package localapi_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/trustpool/trustpool/internal/verdict"
	"github.com/trustpool/trustpool/nova-filter-shim/internal/localapi"
	"github.com/trustpool/trustpool/nova-filter-shim/internal/shimtest"
	"github.com/trustpool/trustpool/nova-filter-shim/internal/trustcache"
)

var t0 = time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)

func newAPI(t testing.TB, maxBody int64, maxHosts int) *localapi.API {
	t.Helper()
	pub, _ := shimtest.GoldenKey().Public().(ed25519.PublicKey)
	c := trustcache.New(trustcache.Options{Verifier: verdict.NewVerifier(pub), Now: func() time.Time { return t0.Add(time.Second) }})
	key := shimtest.GoldenKey()
	res := c.Apply([]json.RawMessage{
		shimtest.Sign(t, key, shimtest.Verdict("h-trusted", verdict.Trusted, 1, t0, time.Hour, "baseline")),
		shimtest.Sign(t, key, shimtest.Verdict("h-untrusted", verdict.Untrusted, 1, t0, time.Hour)),
		shimtest.Unsigned(t, shimtest.Verdict("h-unsigned", verdict.Trusted, 1, t0, time.Hour)),
	})
	if res.Accepted != 2 {
		t.Fatalf("setup: %+v", res)
	}
	return localapi.New(localapi.Config{
		Cache: c, MaxBodyBytes: maxBody, MaxHosts: maxHosts,
		State: func() localapi.State {
			return localapi.State{SnapshotLoaded: true, Subscribed: true, SnapshotFailures: 2}
		},
	})
}

func do(t *testing.T, h http.Handler, method, path, body string) (int, string) {
	t.Helper()
	req := httptest.NewRequestWithContext(t.Context(), method, path, strings.NewReader(body))
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec.Code, rec.Body.String()
}

func TestFilter(t *testing.T) {
	api := newAPI(t, 0, 0)
	code, body := do(t, api, http.MethodPost, "/v1/filter",
		`{"hosts":["h-trusted","h-untrusted","h-unsigned","h-absent"],"trusted_host":"trusted","profile":null}`)
	if code != http.StatusOK {
		t.Fatalf("code %d: %s", code, body)
	}
	var got struct {
		Passes   []string          `json:"passes"`
		Rejected map[string]string `json:"rejected"`
	}
	if err := json.Unmarshal([]byte(body), &got); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"h-trusted"}, got.Passes); diff != "" {
		t.Errorf("passes (-want +got):\n%s", diff)
	}
	if len(got.Rejected) != 3 || got.Rejected["h-unsigned"] == "" {
		t.Errorf("rejected = %v", got.Rejected)
	}

	code, body = do(t, api, http.MethodPost, "/v1/filter", `{"hosts":["h-trusted","h-untrusted"],"profile":"baseline"}`)
	if code != http.StatusOK || !strings.Contains(body, `"passes":["h-trusted"]`) {
		t.Errorf("profile: %d %s", code, body)
	}
	code, body = do(t, api, http.MethodPost, "/v1/filter", `{"hosts":[],"trusted_host":"untrusted"}`)
	if code != http.StatusOK || !strings.Contains(body, `"passes":[]`) {
		t.Errorf("empty hosts: %d %s", code, body)
	}
}

// TestFilterMask: the mask answer (the Nova filter's hot path) says of
// every requested host, duplicates included, in order, what the full answer
// says, for every legacy trusted_host value and with profiles.
func TestFilterMask(t *testing.T) {
	api := newAPI(t, 0, 0)
	hosts := []string{"h-trusted", "h-untrusted", "h-unsigned", "h-absent", "h-trusted", "h-untrusted"}
	for _, ask := range []string{`"trusted_host":"trusted"`, `"trusted_host":"untrusted"`, `"trusted_host":"unknown"`,
		`"profile":"baseline"`, `"profile":"other"`, `"trusted_host":"trusted","profile":"baseline"`, `"trusted_host":"untrusted","profile":"baseline"`} {
		hb, _ := json.Marshal(hosts)
		code, full := do(t, api, http.MethodPost, "/v1/filter", `{"hosts":`+string(hb)+`,`+ask+`}`)
		if code != http.StatusOK {
			t.Fatalf("%s: %d %s", ask, code, full)
		}
		var d struct{ Passes []string }
		if err := json.Unmarshal([]byte(full), &d); err != nil {
			t.Fatal(err)
		}
		want := make([]byte, len(hosts))
		for i, h := range hosts {
			want[i] = '0'
			if slices.Contains(d.Passes, h) {
				want[i] = '1'
			}
		}
		code, body := do(t, api, http.MethodPost, "/v1/filter", `{"hosts":`+string(hb)+`,`+ask+`,"answer":"mask"}`)
		if code != http.StatusOK || body != `{"mask":"`+string(want)+`"}`+"\n" {
			t.Errorf("%s: mask answer %d %q, want %q", ask, code, body, want)
		}
	}
	if code, body := do(t, api, http.MethodPost, "/v1/filter", `{"hosts":["h-trusted"],"profile":"baseline","answer":"full"}`); code != http.StatusOK ||
		!strings.Contains(body, `"passes":["h-trusted"]`) {
		t.Errorf("answer full: %d %s", code, body)
	}
	if code, body := do(t, api, http.MethodPost, "/v1/filter", `{"hosts":[],"profile":"baseline","answer":"mask"}`); code != http.StatusOK || body != "{\"mask\":\"\"}\n" {
		t.Errorf("no hosts: %d %q", code, body)
	}
	for _, bad := range []string{`"bits"`, `1`, `"MASK"`} {
		code, body := do(t, api, http.MethodPost, "/v1/filter", `{"hosts":["h"],"profile":"baseline","answer":`+bad+`}`)
		if code != http.StatusBadRequest || !strings.Contains(body, "answer") {
			t.Errorf("answer %s: %d %s, want 400 naming answer", bad, code, body)
		}
	}
}

func TestLongReasonTruncated(t *testing.T) {
	pub, _ := shimtest.GoldenKey().Public().(ed25519.PublicKey)
	c := trustcache.New(trustcache.Options{Verifier: verdict.NewVerifier(pub), Now: func() time.Time { return t0 }})
	v := shimtest.Verdict("h", verdict.Untrusted, 1, t0, time.Hour)
	v.Reasons = []string{strings.Repeat("pcr 7 \"quoted\" ", 40), "\x01ctl"}
	if res := c.Apply([]json.RawMessage{shimtest.Sign(t, shimtest.GoldenKey(), v)}); res.Accepted != 1 {
		t.Fatalf("%+v", res)
	}
	v2 := shimtest.Verdict("h2", verdict.Untrusted, 1, t0, time.Hour)
	v2.Reasons = []string{"tab\there \"q\" é"}
	c.Apply([]json.RawMessage{shimtest.Sign(t, shimtest.GoldenKey(), v2)})
	code, body := do(t, localapi.New(localapi.Config{Cache: c}), http.MethodPost, "/v1/filter", `{"hosts":["h","h2"],"trusted_host":"trusted"}`)
	if code != 200 {
		t.Fatal(code, body)
	}
	var d struct {
		Rejected map[string]string `json:"rejected"`
	}
	if err := json.Unmarshal([]byte(body), &d); err != nil {
		t.Fatal(err)
	}
	if r := d.Rejected["h"]; len(r) != trustcache.MaxReasonLen || !strings.HasSuffix(r, "...") {
		t.Errorf("long reason not truncated to %d bytes: %d %q", trustcache.MaxReasonLen, len(r), r)
	}
	if got, want := d.Rejected["h2"], "status is untrusted, want trusted (tab\there \"q\" é)"; got != want {
		t.Errorf("escaped reason = %q, want %q", got, want)
	}
}

func TestFilterRejectsBadInput(t *testing.T) {
	api := newAPI(t, 200, 3)
	tests := []struct {
		name, method, body string
		code               int
		want               string // substring of the error
	}{
		{"GET", http.MethodGet, "", 405, "use POST"},
		{"not JSON", http.MethodPost, `hosts=a`, 400, "not a filter request"},
		{"empty body", http.MethodPost, ``, 400, "not a filter request"},
		{"unknown field", http.MethodPost, `{"hosts":["a"],"trusted_host":"trusted","level":1}`, 400, `unknown field "level"`},
		{"trailing data", http.MethodPost, `{"hosts":["a"],"trusted_host":"trusted"} {}`, 400, "unexpected data after the JSON value"},
		{"hosts missing", http.MethodPost, `{"trusted_host":"trusted"}`, 400, "hosts is required"},
		{"hosts null", http.MethodPost, `{"hosts":null,"trusted_host":"trusted"}`, 400, "hosts is required"},
		{"hosts not a list", http.MethodPost, `{"hosts":"a","trusted_host":"trusted"}`, 400, "not a filter request: invalid JSON: hosts: want an array of strings, got a string"},
		{"host not a string", http.MethodPost, `{"hosts":[1],"trusted_host":"trusted"}`, 400, "not a filter request: invalid JSON: hosts: want a string, got a number"},
		{"level not a string", http.MethodPost, `{"hosts":["a"],"trusted_host":true}`, 400, "trusted_host: want a string, got a boolean"},
		{"empty host", http.MethodPost, `{"hosts":["a",""],"trusted_host":"trusted"}`, 400, "hosts[1]: empty host name"},
		{"null host", http.MethodPost, `{"hosts":[null],"trusted_host":"trusted"}`, 400, "hosts[0]: empty host name"},
		{"host with space", http.MethodPost, `{"hosts":["a b"],"trusted_host":"trusted"}`, 400, "space or control"},
		{"long host hits the body limit", http.MethodPost, `{"hosts":["` + strings.Repeat("a", 256) + `"]}`, 413, "larger than 200 bytes"},
		{"too many hosts", http.MethodPost, `{"hosts":["a","b","c","d"],"trusted_host":"trusted"}`, 400, "4 hosts, at most 3"},
		{"bad level", http.MethodPost, `{"hosts":["a"],"trusted_host":"required"}`, 400, `trusted_host "required" is not`},
		{"bad profile", http.MethodPost, `{"hosts":["a"],"profile":"no spaces"}`, 400, `profile "no spaces" is not a profile name`},
		{"neither", http.MethodPost, `{"hosts":["a"],"trusted_host":null,"profile":null}`, 400, "one of trusted_host or profile is required"},
		{"too large", http.MethodPost, `{"hosts":["` + strings.Repeat("a", 300) + `"]}`, 413, "larger than 200 bytes"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, body := do(t, api, tc.method, "/v1/filter", tc.body)
			if code != tc.code {
				t.Fatalf("code = %d, want %d (%s)", code, tc.code, body)
			}
			var e struct {
				Error string `json:"error"`
			}
			if err := json.Unmarshal([]byte(body), &e); err != nil {
				t.Fatalf("error body %q is not JSON: %v", body, err)
			}
			if !strings.Contains(e.Error, tc.want) {
				t.Errorf("error = %q, want it to contain %q", e.Error, tc.want)
			}
			if strings.Contains(e.Error, "Go ") || strings.Contains(e.Error, "of type") {
				t.Errorf("error = %q names a Go type", e.Error)
			}
		})
	}
	if _, err := localapi.ParseFilterRequest([]byte(`{}`), 10); !errors.Is(err, localapi.ErrBadRequest) {
		t.Errorf("ParseFilterRequest error %v does not wrap ErrBadRequest", err)
	}
}

func TestLongHostName(t *testing.T) {
	_, err := localapi.ParseFilterRequest([]byte(`{"hosts":["`+strings.Repeat("a", 256)+`"],"trusted_host":"trusted"}`), 10)
	if err == nil || !strings.Contains(err.Error(), "longer than 255") {
		t.Errorf("err = %v", err)
	}
}

func TestHealthz(t *testing.T) {
	for _, tc := range []struct {
		st   localapi.State
		code int
	}{
		{localapi.State{SnapshotLoaded: true, Subscribed: true}, 200},
		{localapi.State{Subscribed: true}, 503},
		{localapi.State{SnapshotLoaded: true}, 503},
		{localapi.State{SnapshotLoaded: true, Subscribed: true, Silent: true}, 503},
	} {
		pub, _ := shimtest.GoldenKey().Public().(ed25519.PublicKey)
		api := localapi.New(localapi.Config{
			Cache: trustcache.New(trustcache.Options{Verifier: verdict.NewVerifier(pub)}),
			State: func() localapi.State { return tc.st },
		})
		code, body := do(t, api, http.MethodGet, "/healthz", "")
		if code != tc.code {
			t.Errorf("%+v: code %d, want %d (%s)", tc.st, code, tc.code, body)
		}
	}
}

func TestMetrics(t *testing.T) {
	api := newAPI(t, 0, 0)
	do(t, api, http.MethodPost, "/v1/filter", `{"hosts":["h-trusted","h-untrusted"],"trusted_host":"trusted"}`)
	do(t, api, http.MethodPost, "/v1/filter", `{"hosts":"bad"}`)
	code, body := do(t, api, http.MethodGet, "/metrics", "")
	if code != 200 {
		t.Fatalf("code %d", code)
	}
	for _, line := range []string{
		`trustpool_filter_shim_verdicts_accepted_total 2`,
		`trustpool_filter_shim_verdicts_dropped_total{reason="unsigned"} 1`,
		`trustpool_filter_shim_verdicts_dropped_total{reason="bad_signature"} 0`,
		`trustpool_filter_shim_hosts{status="trusted"} 1`,
		`trustpool_filter_shim_hosts{status="untrusted"} 1`,
		`trustpool_filter_shim_filter_requests_total{code="200"} 1`,
		`trustpool_filter_shim_filter_requests_total{code="400"} 1`,
		`trustpool_filter_shim_filter_request_duration_seconds_count 2`,
		`trustpool_filter_shim_filter_hosts_total{outcome="pass"} 1`,
		`trustpool_filter_shim_filter_hosts_total{outcome="reject"} 1`,
		`trustpool_filter_shim_snapshot_loaded 1`,
		`trustpool_filter_shim_snapshot_failures_total 2`,
		`# TYPE trustpool_filter_shim_hosts gauge`,
	} {
		if !strings.Contains(body, line+"\n") {
			t.Errorf("metrics lack %q:\n%s", line, body)
		}
	}
	// Every sample line belongs to a declared family and parses as name value.
	families := map[string]bool{}
	for _, l := range strings.Split(strings.TrimSpace(body), "\n") {
		if f, ok := strings.CutPrefix(l, "# TYPE "); ok {
			families[strings.Fields(f)[0]] = true
			continue
		}
		if strings.HasPrefix(l, "#") {
			continue
		}
		name, _, _ := strings.Cut(l, " ")
		name, _, _ = strings.Cut(name, "{")
		base := strings.TrimSuffix(strings.TrimSuffix(name, "_sum"), "_count")
		if !families[name] && !families[base] {
			t.Errorf("sample %q has no TYPE line", l)
		}
	}
}

func TestListen(t *testing.T) {
	dir := t.TempDir()
	g, err := user.LookupGroupId(itoa(os.Getgid()))
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "sub", "shim.sock")
	ln, err := localapi.Listen(localapi.SocketOptions{Path: path, Group: g.Name, Mode: 0o660})
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Type() != os.ModeSocket || fi.Mode().Perm() != 0o660 {
		t.Errorf("socket mode = %v, want socket 0660", fi.Mode())
	}
	srv := &http.Server{Handler: newAPI(t, 0, 0), ReadHeaderTimeout: time.Second}
	go func() { _ = srv.Serve(ln) }()
	client := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", path)
	}}}
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, "http://shim/v1/filter", bytes.NewReader([]byte(`{"hosts":["h-trusted"],"profile":"baseline"}`)))
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(b), `"passes":["h-trusted"]`) {
		t.Errorf("over the socket: %s", b)
	}

	// A second listener on a live socket refuses; the first keeps its file.
	if _, err := localapi.Listen(localapi.SocketOptions{Path: path, Mode: 0o660}); !errors.Is(err, localapi.ErrInUse) {
		t.Errorf("second Listen: %v, want ErrInUse", err)
	}
	_ = srv.Close()
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Errorf("socket not removed on close: %v", err)
	}

	// A stale socket (nobody listening) is replaced.
	stale, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	stale.SetUnlinkOnClose(false)
	stale.Close()
	ln2, err := localapi.Listen(localapi.SocketOptions{Path: path, Mode: 0o600})
	if err != nil {
		t.Fatalf("Listen over a stale socket: %v", err)
	}
	ln2.Close()

	// A regular file is never removed.
	if err := os.WriteFile(path, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := localapi.Listen(localapi.SocketOptions{Path: path, Mode: 0o600}); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Errorf("Listen over a file: %v", err)
	}
}

func TestListenMissingGroup(t *testing.T) {
	_, err := localapi.Listen(localapi.SocketOptions{Path: filepath.Join(t.TempDir(), "s.sock"), Group: "no-such-group-trustpool", Mode: 0o660})
	if !errors.Is(err, localapi.ErrNoSuchGroup) {
		t.Fatalf("err = %v, want ErrNoSuchGroup", err)
	}
	if !strings.Contains(err.Error(), `"no-such-group-trustpool"`) || !strings.Contains(err.Error(), "socket_group") {
		t.Errorf("error does not name the group and the setting: %v", err)
	}
}

func itoa(i int) string { return strconv.Itoa(i) }
