package commands_test

// The real service and Keystone are in tests/integration (TestCLI); the
// servers here are fakes for what the real ones cannot be made to do on
// demand: fail with a 5xx, answer garbage, never finish a round.

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/trustpool/trustpool/cli/commands"
	"github.com/trustpool/trustpool/internal/attestapi"
	"github.com/trustpool/trustpool/internal/verdict"
	"github.com/trustpool/trustpool/keystone-auth/keystonetest"
)

type run struct {
	stdout, stderr string
	code           int
}

func runCLI(t *testing.T, cfg commands.Config, args ...string) run {
	t.Helper()
	var out, errb bytes.Buffer
	cfg.Stdout, cfg.Stderr = &out, &errb
	err := commands.New(cfg).Run(t.Context(), args)
	return run{stdout: out.String(), stderr: errb.String(), code: commands.ExitCode(err)}
}

// clearOS removes the OS_* variables of the machine for the test.
func clearOS(t *testing.T) {
	t.Helper()
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); strings.HasPrefix(k, "OS_") || strings.HasPrefix(k, "CLIFF_") {
			t.Setenv(k, "")
			os.Unsetenv(k)
		}
	}
}

func envelope(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set(attestapi.HeaderRequestID, "req-00000000-0000-0000-0000-000000000001")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(attestapi.ErrorEnvelope{Error: attestapi.Error{Code: code, Title: http.StatusText(code),
		Message: msg, RequestID: "req-00000000-0000-0000-0000-000000000001"}})
}

// TestExitCodes: each kind of failure gets its exit status and one line
// on stderr, with the request id when the service gave one.
func TestExitCodes(t *testing.T) {
	clearOS(t)
	tests := []struct {
		name    string
		handler http.HandlerFunc
		code    int
		stderr  string
	}{
		{"server error", func(w http.ResponseWriter, _ *http.Request) { envelope(w, 500, "internal error") },
			commands.ExitServer, "trustpool: internal error (HTTP 500) (Request-ID: req-00000000-0000-0000-0000-000000000001)\n"},
		{"proxy error page", func(w http.ResponseWriter, _ *http.Request) {
			http.Error(w, "<html>bad gateway</html>", http.StatusBadGateway)
		},
			commands.ExitServer, "trustpool: Bad Gateway (HTTP 502)\n"},
		{"not found", func(w http.ResponseWriter, _ *http.Request) { envelope(w, 404, "no such resource") },
			commands.ExitNotFound, "(HTTP 404) (Request-ID: req-"},
		{"forbidden", func(w http.ResponseWriter, _ *http.Request) {
			envelope(w, 403, "policy does not allow x to be performed")
		},
			commands.ExitAuth, "policy does not allow x"},
		{"conflict", func(w http.ResponseWriter, _ *http.Request) { envelope(w, 409, "busy\nwith a newline") },
			commands.ExitError, "trustpool: busy with a newline (HTTP 409)"},
		{"not JSON", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("hello")) },
			commands.ExitError, "not JSON"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(tc.handler)
			defer srv.Close()
			r := runCLI(t, commands.Config{}, "--os-attestation-url", srv.URL, "key", "list")
			if r.code != tc.code || !strings.Contains(r.stderr, tc.stderr) || strings.Count(r.stderr, "\n") != 1 || r.stdout != "" {
				t.Errorf("exit %d, stderr %q, stdout %q; want exit %d and one line containing %q", r.code, r.stderr, r.stdout, tc.code, tc.stderr)
			}
		})
	}
	srv := httptest.NewServer(http.NotFoundHandler())
	srv.Close()
	if r := runCLI(t, commands.Config{}, "--os-attestation-url", srv.URL, "key", "list"); r.code != commands.ExitServer ||
		!strings.Contains(r.stderr, "connection refused") {
		t.Errorf("unreachable: exit %d, %q", r.code, r.stderr)
	}
}

// TestUsage: command line mistakes exit 2 before anything is contacted;
// help and version exit 0, in Go style (-help) too.
func TestUsage(t *testing.T) {
	clearOS(t)
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { hits.Add(1) }))
	defer srv.Close()
	url := []string{"--os-attestation-url", srv.URL}
	for _, args := range [][]string{
		{"host", "frob"}, {"hots"}, {"host", "list", "--bogus"}, {"host", "show"}, {"host", "show", "a", "b"},
		append(url, "host", "list", "--status", "maybe"), append(url, "host", "list", "-f", "xml"),
		append(url, "host", "history", "a", "--limit", "0"), {"--os-interface", "outside", "key", "list"},
		{"--os-auth-type", "token", "key", "list"}, append(url, "host", "approve-ek", "a", "--ek-fingerprint", "xyz"),
		append(url, "host", "set", "a"), append(url, "host", "set", "a", "--any-profile", "--default-profiles"),
		{"verdict", "verify", "f.json"}, append(url, "profile", "create", "p"), append(url, "profile", "create", "p", "--pcr", "25=ab"),
		append(url, "profile", "learn", "p"), {"host", "list"}, {"key", "list"},
	} {
		r := runCLI(t, commands.Config{}, args...)
		if r.code != commands.ExitUsage || strings.Count(r.stderr, "\n") != 1 || !strings.HasPrefix(r.stderr, "trustpool: ") {
			t.Errorf("%v: exit %d, stderr %q; want 2 and one line", args, r.code, r.stderr)
		}
	}
	if hits.Load() != 0 {
		t.Errorf("usage errors reached the service %d times", hits.Load())
	}
	for _, args := range [][]string{{"-help"}, {"--help"}, {"host"}, {"host", "list", "--help"}} {
		if r := runCLI(t, commands.Config{}, args...); r.code != 0 || !strings.Contains(r.stdout, "Usage:") {
			t.Errorf("%v: exit %d, stdout %q", args, r.code, r.stdout)
		}
	}
	if r := runCLI(t, commands.Config{}, "-help"); !strings.HasPrefix(r.stdout, "trustpool: command line client") {
		t.Errorf("-help starts %q; manual pages take the first line", r.stdout[:min(60, len(r.stdout))])
	}
	for _, args := range [][]string{{"--version"}, {"-version"}} {
		if r := runCLI(t, commands.Config{Version: "1.2.3"}, args...); r.code != 0 || r.stdout != "trustpool 1.2.3\n" {
			t.Errorf("%v: %d %q", args, r.code, r.stdout)
		}
	}
	for _, shell := range []string{"bash", "zsh"} {
		if r := runCLI(t, commands.Config{}, "completion", shell); r.code != 0 || !strings.Contains(r.stdout, "trustpool") {
			t.Errorf("completion %s: exit %d, %d bytes", shell, r.code, len(r.stdout))
		}
	}
}

// TestVerdictVerifyVectors checks internal/verdict's golden vectors (the
// ones the shim's tests use) offline: the valid ones verify, each invalid
// one fails for its reason, and the command exits 1.
func TestVerdictVerifyVectors(t *testing.T) {
	clearOS(t)
	path := filepath.Join("..", "..", "internal", "verdict", "testdata", "vectors.json")
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var file struct {
		PublicKeyPEM string `json:"public_key_pem"`
		Vectors      []struct {
			Name   string          `json:"name"`
			Signed json.RawMessage `json:"signed"`
			Valid  bool            `json:"valid"`
			Error  string          `json:"error"`
		} `json:"vectors"`
	}
	if err := json.Unmarshal(raw, &file); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	pem := filepath.Join(dir, "key.pem")
	if err := os.WriteFile(pem, []byte(file.PublicKeyPEM), 0o600); err != nil {
		t.Fatal(err)
	}
	reason := map[string]string{"bad_signature": verdict.ErrBadSignature.Error(), "unknown_key": verdict.ErrUnknownKey.Error(),
		"unsigned": verdict.ErrUnsigned.Error(), "malformed": verdict.ErrMalformed.Error()}
	invalid := 0
	for _, v := range file.Vectors {
		f := filepath.Join(dir, v.Name+".json")
		if err := os.WriteFile(f, v.Signed, 0o600); err != nil {
			t.Fatal(err)
		}
		r := runCLI(t, commands.Config{}, "verdict", "verify", f, "--public-key", pem, "-f", "value", "-c", "signature")
		switch {
		case v.Valid && (r.code != 0 || r.stdout != "valid\n"):
			t.Errorf("%s: exit %d %q %q, want valid", v.Name, r.code, r.stdout, r.stderr)
		case !v.Valid && (r.code != commands.ExitError || !strings.Contains(r.stderr, reason[v.Error]) || r.stdout != ""):
			t.Errorf("%s: exit %d %q %q, want exit 1 naming %q", v.Name, r.code, r.stdout, r.stderr, reason[v.Error])
		}
		if !v.Valid {
			invalid++
		}
	}
	// The format and the versions matched: format 2 names them, format 1
	// cannot.
	for name, want := range map[string]string{
		"trusted":           "1\n\n",
		"trusted_format2":   "2\n{\"baseline\":3,\"gpu-2026\":1}\n",
		"untrusted_format2": "2\n{}\n",
	} {
		r := runCLI(t, commands.Config{}, "verdict", "verify", filepath.Join(dir, name+".json"), "--public-key", pem, "-f", "value",
			"-c", "format", "-c", "profile_versions")
		if r.code != 0 || r.stdout != want {
			t.Errorf("%s: format and profile_versions %q (exit %d, %q), want %q", name, r.stdout, r.code, r.stderr, want)
		}
	}
	// The whole file at once: a list, one row per envelope, exit 1.
	r := runCLI(t, commands.Config{}, "verdict", "verify", path, "--public-key", pem, "-f", "json")
	var rows []map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &rows); err != nil || len(rows) != len(file.Vectors) || r.code != commands.ExitError ||
		!strings.Contains(r.stderr, fmt.Sprintf("%d of %d verdicts", invalid, len(file.Vectors))) {
		t.Errorf("whole file: exit %d, %d rows (%v), stderr %q", r.code, len(rows), err, r.stderr)
	}
	if r := runCLI(t, commands.Config{}, "verdict", "verify", pem, "--public-key", pem); r.code != commands.ExitUsage {
		t.Errorf("a PEM as the verdict file: exit %d %q", r.code, r.stderr)
	}
}

// fakeRounds is a service whose host gets a new verdict after `after`
// polls (never, when after < 0).
func fakeRounds(t *testing.T, after int) *httptest.Server {
	t.Helper()
	var polls atomic.Int32
	start := time.Now().UTC()
	return httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		switch r.Method {
		case http.MethodPost:
			w.WriteHeader(http.StatusAccepted)
			_ = json.NewEncoder(w).Encode(attestapi.AttestScheduled{Host: "compute-1", Attestation: "scheduled", RequestedAt: start})
		default:
			seq, at := uint64(1), start.Add(-time.Minute)
			if n := polls.Add(1); after >= 0 && int(n) > after+1 {
				seq, at = 2, start.Add(time.Second)
			}
			h := attestapi.Host{Name: "compute-1", Enrollment: "enrolled", RequiredProfiles: []string{},
				Verdict: &attestapi.Verdict{Status: verdict.Trusted, EffectiveStatus: verdict.Trusted, Profiles: []string{"p"},
					Reasons: []string{}, VerifiedAt: at, ExpiresAt: at.Add(time.Hour), Seq: seq}}
			_ = json.NewEncoder(w).Encode(attestapi.HostBody{Host: h})
		}
	}))
}

// TestAttestWaits: attest waits for the round's verdict, with a progress
// line only when stderr is a terminal, and gives up after --wait-timeout.
func TestAttestWaits(t *testing.T) {
	clearOS(t)
	ks := keystonetest.New(t)
	ks.AddUser(keystonetest.User{Name: "boss", Password: "pw", ProjectName: "admin", ProjectID: "admin-id", Roles: []string{"admin"}})
	for k, v := range map[string]string{"OS_AUTH_URL": ks.URL, "OS_USERNAME": "boss", "OS_PASSWORD": "pw", "OS_PROJECT_NAME": "admin",
		"OS_USER_DOMAIN_NAME": "Default", "OS_PROJECT_DOMAIN_NAME": "Default"} {
		t.Setenv(k, v)
	}
	for _, terminal := range []bool{false, true} {
		srv := fakeRounds(t, 3)
		cfg := commands.Config{PollInterval: 10 * time.Millisecond, StderrTerminal: terminal}
		r := runCLI(t, cfg, "--os-attestation-url", srv.URL, "host", "attest", "compute-1", "-f", "value", "-c", "seq")
		srv.Close()
		if r.code != 0 || r.stdout != "2\n" {
			t.Errorf("terminal %v: exit %d, stdout %q, stderr %q; want the verdict of seq 2", terminal, r.code, r.stdout, r.stderr)
		}
		progress := strings.Contains(r.stderr, "\r\x1b[Kattesting compute-1: waiting for the new verdict")
		if progress != terminal || (terminal && !strings.HasSuffix(r.stderr, "\r\x1b[K")) {
			t.Errorf("terminal %v: stderr %q", terminal, r.stderr)
		}
	}
	srv := fakeRounds(t, -1)
	defer srv.Close()
	r := runCLI(t, commands.Config{PollInterval: 10 * time.Millisecond}, "--os-attestation-url", srv.URL,
		"host", "attest", "compute-1", "--wait-timeout", "200ms")
	if r.code != commands.ExitError || !strings.Contains(r.stderr, "timed out waiting 200ms for a new verdict of compute-1") {
		t.Errorf("no new verdict: exit %d, stderr %q", r.code, r.stderr)
	}
	if r := runCLI(t, commands.Config{}, "--os-attestation-url", srv.URL, "host", "attest", "compute-1", "--no-wait", "-f", "value", "-c", "attestation"); r.code != 0 || r.stdout != "scheduled\n" {
		t.Errorf("--no-wait: exit %d, %q %q", r.code, r.stdout, r.stderr)
	}
}

// TestAuthOptionErrors: incomplete OS_* credentials are a usage error
// naming the flag and variable to set, found before Keystone is contacted.
func TestAuthOptionErrors(t *testing.T) {
	clearOS(t)
	t.Setenv("OS_AUTH_URL", "http://127.0.0.1:1/v3")
	t.Setenv("OS_USERNAME", "u")
	t.Setenv("OS_PASSWORD", "p")
	t.Setenv("OS_PROJECT_NAME", "p")
	r := runCLI(t, commands.Config{}, "host", "list")
	for _, want := range []string{"--os-user-domain-name (OS_USER_DOMAIN_NAME)", "--os-project-domain-name (OS_PROJECT_DOMAIN_NAME)"} {
		if r.code != commands.ExitUsage || !strings.Contains(r.stderr, want) {
			t.Errorf("exit %d, stderr %q; want 2 naming %s", r.code, r.stderr, want)
		}
	}
	t.Setenv("OS_APPLICATION_CREDENTIAL_SECRET", "s")
	r = runCLI(t, commands.Config{}, "host", "list")
	if r.code != commands.ExitUsage || !strings.Contains(r.stderr, "--os-application-credential-id (OS_APPLICATION_CREDENTIAL_ID)") ||
		strings.Contains(r.stderr, "OS_APPLICATION_CREDENTIAL_SECRET=s") {
		t.Errorf("application credential without id: exit %d, stderr %q", r.code, r.stderr)
	}
	t.Setenv("OS_CLOUD", "nowhere")
	t.Setenv("OS_CLIENT_CONFIG_FILE", filepath.Join(t.TempDir(), "clouds.yaml"))
	if r := runCLI(t, commands.Config{}, "host", "list"); r.code != commands.ExitUsage || !strings.Contains(r.stderr, "clouds") {
		t.Errorf("missing clouds.yaml: exit %d, stderr %q", r.code, r.stderr)
	}
}

// asAdmin points the CLI at a Keystone with an admin user, through OS_*.
func asAdmin(t *testing.T) {
	t.Helper()
	clearOS(t)
	ks := keystonetest.New(t)
	ks.AddUser(keystonetest.User{Name: "boss", Password: "pw", ProjectName: "admin", ProjectID: "admin-id", Roles: []string{"admin"}})
	for k, v := range map[string]string{"OS_AUTH_URL": ks.URL, "OS_USERNAME": "boss", "OS_PASSWORD": "pw", "OS_PROJECT_NAME": "admin",
		"OS_USER_DOMAIN_NAME": "Default", "OS_PROJECT_DOMAIN_NAME": "Default"} {
		t.Setenv(k, v)
	}
}

// TestLearnFacts: profile learn sends "facts": [] for --no-facts (a
// profile of PCRs alone), the facts named with --fact, and no facts key
// without either (the service's defaults); the two flags exclude each
// other.
func TestLearnFacts(t *testing.T) {
	asAdmin(t)
	var body atomic.Value
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.URL.Path != attestapi.PathProfilesLearn {
			http.NotFound(w, r)
			return
		}
		var got map[string]json.RawMessage
		if err := json.NewDecoder(r.Body).Decode(&got); err != nil {
			t.Error(err)
		}
		body.Store(got)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusCreated)
		_ = json.NewEncoder(w).Encode(attestapi.Learned{Profile: attestapi.Profile{Name: "p", PCRs: map[string][]string{"0": {"00"}}},
			FactPCRs: map[string][]string{}, AddedPCRs: []int{}})
	}))
	defer srv.Close()
	for _, tc := range []struct {
		flags []string
		facts string // "" means absent
	}{
		{[]string{"--no-facts"}, "[]"},
		{nil, ""},
		{[]string{"--fact", "secure_boot", "--fact", "kernel"}, `["secure_boot","kernel"]`},
	} {
		body.Store(map[string]json.RawMessage(nil))
		args := append([]string{"--os-attestation-url", srv.URL, "profile", "learn", "p", "--host", "compute-1", "--no-wait"}, tc.flags...)
		if r := runCLI(t, commands.Config{}, args...); r.code != 0 {
			t.Fatalf("%v: exit %d, stderr %q", tc.flags, r.code, r.stderr)
		}
		got := body.Load().(map[string]json.RawMessage)
		facts, ok := got["facts"]
		if (tc.facts == "") == ok || ok && string(facts) != tc.facts {
			t.Errorf("%v: request body %v, want facts %q", tc.flags, got, tc.facts)
		}
	}
	r := runCLI(t, commands.Config{}, "--os-attestation-url", srv.URL, "profile", "learn", "p", "--host", "h", "--no-facts", "--fact", "kernel")
	if r.code != commands.ExitUsage || !strings.Contains(r.stderr, "no-facts") {
		t.Errorf("--no-facts with --fact: exit %d, stderr %q", r.code, r.stderr)
	}
}

// TestForceHint: a refusal that force overrides (the service's 409 marked
// force_required, whose message speaks the API's force=true or "force":
// true) is worded with the CLI's --force by every command that has the
// flag, keeping the status, request id and exit code; other conflicts pass
// through as the service worded them.
func TestForceHint(t *testing.T) {
	asAdmin(t)
	const reqID = "req-00000000-0000-0000-0000-000000000002"
	refuse := func(w http.ResponseWriter, reason, refusal, hint string) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set(attestapi.HeaderRequestID, reqID)
		w.WriteHeader(http.StatusConflict)
		_ = json.NewEncoder(w).Encode(attestapi.ErrorEnvelope{Error: attestapi.Error{Code: 409, Title: "Conflict", Message: refusal + "; " + hint,
			Reason: reason, ForceRequired: true, Refusal: refusal, RequestID: reqID}})
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Has("force") {
			t.Errorf("%s %s: force sent without --force", r.Method, r.URL)
		}
		switch r.Method + " " + r.URL.Path {
		case "POST /v1/hosts/compute-2/approve":
			refuse(w, attestapi.ReasonEKBoundToOtherHost, "the pending EK is bound to host compute-1, which loses its binding if the EK moves here",
				`approve with "force": true to move it`)
		case "PUT /v1/hosts/compute-1/profiles":
			refuse(w, attestapi.ReasonProfileNotSatisfied, `host "compute-1" is trusted, but its latest evidence does not satisfy profile "other": `+
				"this assignment makes it untrusted", "repeat with force=true to assign anyway")
		case "DELETE /v1/profiles/golden":
			refuse(w, attestapi.ReasonHostsRelyOnProfile, `profile "golden" is relied on by host "compute-1": deleting it makes them untrusted`,
				"repeat with force=true to delete it anyway")
		case "POST /v1/profiles/golden/versions/1/state":
			refuse(w, attestapi.ReasonHostsRelyOnVersion, `profile "golden" version 1 is what host "compute-1" matched: making it retired turns them untrusted`,
				"repeat with force=true to change it anyway")
		case "POST /v1/hosts/compute-4/approve":
			envelope(w, http.StatusConflict, "no EK awaits approval for this host")
		default:
			envelope(w, http.StatusNotFound, "no such resource")
		}
	}))
	defer srv.Close()
	const tail = "; repeat with --force to do it anyway (HTTP 409) (Request-ID: " + reqID + ")\n"
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"host", "approve-ek", "compute-2"},
			"trustpool: the pending EK is bound to host compute-1, which loses its binding if the EK moves here" + tail},
		{[]string{"host", "set", "compute-1", "--required-profile", "other"},
			`trustpool: host "compute-1" is trusted, but its latest evidence does not satisfy profile "other": this assignment makes it untrusted` + tail},
		{[]string{"profile", "delete", "golden"},
			`trustpool: profile "golden" is relied on by host "compute-1": deleting it makes them untrusted` + tail},
		// Several names: each failure's line and the summary name --force.
		{[]string{"profile", "delete", "golden", "nope"},
			`trustpool: cannot delete profile golden: profile "golden" is relied on by host "compute-1": deleting it makes them untrusted` + tail +
				"trustpool: cannot delete profile nope: no such resource (HTTP 404) (Request-ID: req-00000000-0000-0000-0000-000000000001)\n" +
				`trustpool: 2 of 2 profiles could not be deleted: profile "golden" is relied on by host "compute-1": deleting it makes them untrusted` + tail},
		{[]string{"profile", "version", "set-state", "golden", "1", "retired"},
			`trustpool: profile "golden" version 1 is what host "compute-1" matched: making it retired turns them untrusted` + tail},
		{[]string{"host", "approve-ek", "compute-4"},
			"trustpool: no EK awaits approval for this host (HTTP 409) (Request-ID: req-00000000-0000-0000-0000-000000000001)\n"},
	} {
		r := runCLI(t, commands.Config{}, append([]string{"--os-attestation-url", srv.URL}, tc.args...)...)
		if r.code != commands.ExitError || r.stderr != tc.want || r.stdout != "" {
			t.Errorf("%v: exit %d, stderr %q, stdout %q; want exit %d, stderr %q", tc.args, r.code, r.stderr, r.stdout, commands.ExitError, tc.want)
		}
		if strings.Contains(r.stderr, "force=true") || strings.Contains(r.stderr, `"force"`) {
			t.Errorf("%v: stderr %q speaks the API's force parameter", tc.args, r.stderr)
		}
	}
}

// TestLearnSources: profile import --eventlog sends the log (base64) with
// learn's options instead of a host; profile learn --ima sends ima and its
// exclusions; flags that make no sense together are usage errors before
// anything is sent.
func TestLearnSources(t *testing.T) {
	asAdmin(t)
	var body atomic.Value
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var got map[string]any
		if err := json.NewDecoder(r.Body).Decode(&got); err != nil {
			t.Error(err)
		}
		body.Store(got)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusCreated)
		_ = json.NewEncoder(w).Encode(attestapi.Learned{Profile: attestapi.Profile{Name: "p", PCRs: map[string][]string{"0": {"00"}}},
			FactPCRs: map[string][]string{}, AddedPCRs: []int{}})
	}))
	defer srv.Close()
	logFile := filepath.Join(t.TempDir(), "binary_bios_measurements")
	if err := os.WriteFile(logFile, []byte("log bytes"), 0o600); err != nil {
		t.Fatal(err)
	}
	url := []string{"--os-attestation-url", srv.URL}
	for _, tc := range []struct {
		args []string
		want map[string]any
	}{
		{[]string{"profile", "import", "--eventlog", logFile, "p", "--pcr", "4,7", "--merge"},
			map[string]any{"name": "p", "event_log": base64.StdEncoding.EncodeToString([]byte("log bytes")), "pcrs": []any{4.0, 7.0}, "merge": true}},
		{[]string{"profile", "learn", "p", "--host", "h", "--no-wait", "--ima", "--ima-exclude", "/tmp/", "--no-facts"},
			map[string]any{"name": "p", "host": "h", "ima": true, "ima_exclude": []any{"/tmp/"}, "facts": []any{}}},
	} {
		body.Store(map[string]any(nil))
		if r := runCLI(t, commands.Config{}, append(url, tc.args...)...); r.code != 0 {
			t.Fatalf("%v: exit %d, stderr %q", tc.args, r.code, r.stderr)
		}
		if diff := cmp.Diff(tc.want, body.Load().(map[string]any)); diff != "" {
			t.Errorf("%v: request body (-want +got):\n%s", tc.args, diff)
		}
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"profile", "import", "--eventlog", logFile, "p", "--pcr", "10"}, "a firmware event log records PCRs 0-9 only"},
		{[]string{"profile", "import", "--eventlog", filepath.Join(t.TempDir(), "missing"), "p"}, "no such file"},
		{[]string{"profile", "import", "file.toml", "--fact", "kernel"}, "--fact needs --eventlog"},
		{[]string{"profile", "learn", "p", "--host", "h", "--ima-exclude", "/tmp/"}, "--ima-exclude needs --ima"},
	} {
		body.Store(map[string]any(nil))
		r := runCLI(t, commands.Config{}, append(url, tc.args...)...)
		if r.code != commands.ExitUsage || !strings.Contains(r.stderr, tc.want) {
			t.Errorf("%v: exit %d, stderr %q; want usage error containing %q", tc.args, r.code, r.stderr, tc.want)
		}
		if got := body.Load().(map[string]any); got != nil {
			t.Errorf("%v: sent %v", tc.args, got)
		}
	}
}
