package commands_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/trustpool/trustpool/cli/commands"
	"github.com/trustpool/trustpool/internal/attestapi"
)

// TestSetStateFraction: profile version set-state sends --fraction as
// the body's fraction (with or without --host, absent without the flag)
// and shows the fraction and the hosts in the canary the service answers;
// a fraction outside canary, out of range, or a canary with neither
// --host nor --fraction is a usage error before anything is sent.
func TestSetStateFraction(t *testing.T) {
	asAdmin(t)
	var body atomic.Value
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.URL.Path != "/v1/profiles/gold/versions/2/state" {
			envelope(w, http.StatusNotFound, "no such resource")
			return
		}
		var got map[string]json.RawMessage
		if err := json.NewDecoder(r.Body).Decode(&got); err != nil {
			t.Error(err)
		}
		body.Store(got)
		var f float64
		_ = json.Unmarshal(got["fraction"], &f)
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(attestapi.ProfileVersion{ProfileName: "gold", Version: 2, State: "canary", Fraction: f,
			InCanary: []string{"compute-3", "compute-7"}, Profile: attestapi.Profile{Name: "gold"}})
	}))
	defer srv.Close()
	base := []string{"--os-attestation-url", srv.URL, "profile", "version", "set-state", "gold", "2"}
	for _, tc := range []struct {
		flags          []string
		fraction, host string // "" means absent
	}{
		{[]string{"canary", "--fraction", "0.1"}, "0.1", ""},
		{[]string{"canary", "--fraction", "1", "--host", "compute-1"}, "1", `["compute-1"]`},
		{[]string{"canary", "--host", "compute-1"}, "", `["compute-1"]`},
	} {
		body.Store(map[string]json.RawMessage(nil))
		r := runCLI(t, commands.Config{}, append(append(base, tc.flags...), "-f", "value", "-c", "fraction", "-c", "in_canary")...)
		if r.code != 0 {
			t.Fatalf("%v: exit %d, stderr %q", tc.flags, r.code, r.stderr)
		}
		got := body.Load().(map[string]json.RawMessage)
		if f, ok := got["fraction"]; (tc.fraction == "") == ok || ok && string(f) != tc.fraction {
			t.Errorf("%v: request body %s, want fraction %q", tc.flags, got, tc.fraction)
		}
		if h, ok := got["hosts"]; (tc.host == "") == ok || ok && string(h) != tc.host {
			t.Errorf("%v: request body %s, want hosts %q", tc.flags, got, tc.host)
		}
		if want := tc.fraction + "\ncompute-3, compute-7\n"; r.stdout != want {
			t.Errorf("%v: output %q, want %q", tc.flags, r.stdout, want)
		}
	}
	body.Store(map[string]json.RawMessage(nil))
	for _, tc := range []struct {
		flags []string
		want  string
	}{
		{[]string{"approved", "--fraction", "0.5"}, "--fraction is only for canary"},
		{[]string{"canary"}, "canary needs --host or --fraction"},
		{[]string{"canary", "--fraction", "0"}, "more than 0 and at most 1"},
		{[]string{"canary", "--fraction", "1.5"}, "more than 0 and at most 1"},
		{[]string{"canary", "--fraction", "-0.1", "--host", "compute-1"}, "more than 0 and at most 1"},
		{[]string{"canary", "--fraction", "a tenth"}, "fraction"},
	} {
		if r := runCLI(t, commands.Config{}, append(base, tc.flags...)...); r.code != commands.ExitUsage || !strings.Contains(r.stderr, tc.want) {
			t.Errorf("%v: exit %d, stderr %q; want a usage error with %q", tc.flags, r.code, r.stderr, tc.want)
		}
	}
	if got := body.Load().(map[string]json.RawMessage); got != nil {
		t.Errorf("a usage error sent a request: %s", got)
	}
}

// TestProfileWriteShowsVersions: profile update shows the version it
// created and the one it retired, or that nothing changed; profile
// import lists, per profile, the version holding it and what changed.
func TestProfileWriteShowsVersions(t *testing.T) {
	asAdmin(t)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		switch {
		case r.Method == http.MethodPut && r.URL.Path == "/v1/profiles/gold":
			var p attestapi.Profile
			if err := json.NewDecoder(r.Body).Decode(&p); err != nil {
				t.Error(err)
			}
			out := attestapi.ProfileBody{Profile: p, Version: 4, RetiredVersion: 3}
			if len(p.Facts["secure_boot"]) == 1 && p.Facts["secure_boot"][0] == "enabled" {
				out = attestapi.ProfileBody{Profile: p, Version: 3, Unchanged: true}
			}
			_ = json.NewEncoder(w).Encode(out)
		case r.Method == http.MethodPost && r.URL.Path == "/v1/profiles/import":
			_ = json.NewEncoder(w).Encode(attestapi.Imported{Imported: []string{"gold", "new", "same"}, Profiles: []attestapi.ImportedProfile{
				{Name: "gold", Version: 5, RetiredVersion: 4}, {Name: "new", Version: 1, Created: true}, {Name: "same", Version: 2, Unchanged: true}}})
		default:
			envelope(w, http.StatusNotFound, "no such resource")
		}
	}))
	defer srv.Close()
	base := []string{"--os-attestation-url", srv.URL}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"profile", "update", "gold", "--fact", "secure_boot=disabled", "-f", "value", "-c", "version", "-c", "retired_version", "-c", "unchanged"},
			"4\n3\nFalse\n"},
		{[]string{"profile", "update", "gold", "--fact", "secure_boot=enabled", "-f", "value", "-c", "version", "-c", "retired_version", "-c", "unchanged"},
			"3\n\nTrue\n"},
		{[]string{"profile", "update", "gold", "--fact", "secure_boot=disabled", "-f", "json", "-c", "version", "-c", "retired_version"},
			"{\n    \"version\": 4,\n    \"retired_version\": 3\n}\n"},
		{[]string{"profile", "import", "-", "-f", "value"}, "gold 5 4 replaced\nnew 1  created\nsame 2  unchanged\n"},
	} {
		r := runCLI(t, commands.Config{Stdin: strings.NewReader("[[profile]]\nname = \"gold\"\n[profile.facts]\nsecure_boot = [\"enabled\"]\n")},
			append(base, tc.args...)...)
		if r.code != 0 {
			t.Fatalf("%v: exit %d, stderr %q", tc.args, r.code, r.stderr)
		}
		if r.stdout != tc.want {
			t.Errorf("%v: output %q, want %q", tc.args, r.stdout, tc.want)
		}
	}
}

// TestProfileViewsShowVersion: profile show names the latest approved
// version the service answers, without the write fields; profile list
// shows it in the Version column with --long only; an answer without a
// version (a service from before) leaves it empty.
func TestProfileViewsShowVersion(t *testing.T) {
	asAdmin(t)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		switch {
		case r.Method == http.MethodGet && r.URL.Path == "/v1/profiles/gold":
			_ = json.NewEncoder(w).Encode(attestapi.ProfileBody{Profile: attestapi.Profile{Name: "gold"}, Version: 2})
		case r.Method == http.MethodGet && r.URL.Path == "/v1/profiles":
			_ = json.NewEncoder(w).Encode(attestapi.ProfileList{Profiles: []attestapi.ProfileBody{
				{Profile: attestapi.Profile{Name: "gold"}, Version: 2}, {Profile: attestapi.Profile{Name: "old"}}}})
		default:
			envelope(w, http.StatusNotFound, "no such resource")
		}
	}))
	defer srv.Close()
	base := []string{"--os-attestation-url", srv.URL}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"profile", "show", "gold", "-f", "value", "-c", "name", "-c", "version"}, "gold\n2\n"},
		{[]string{"profile", "show", "gold", "-f", "json", "-c", "version"}, "{\n    \"version\": 2\n}\n"},
		{[]string{"profile", "list", "--long", "-f", "csv", "-c", "Name", "-c", "Version"}, "\"Name\",\"Version\"\r\n\"gold\",2\r\n\"old\",\"\"\r\n"},
		{[]string{"profile", "list", "-f", "csv", "-c", "Name"}, "\"Name\"\r\n\"gold\"\r\n\"old\"\r\n"},
	} {
		r := runCLI(t, commands.Config{}, append(base, tc.args...)...)
		if r.code != 0 {
			t.Fatalf("%v: exit %d, stderr %q", tc.args, r.code, r.stderr)
		}
		if r.stdout != tc.want {
			t.Errorf("%v: output %q, want %q", tc.args, r.stdout, tc.want)
		}
	}
	r := runCLI(t, commands.Config{}, append(base, "profile", "list", "-f", "csv")...)
	if r.code != 0 || strings.Contains(r.stdout, "Version") {
		t.Errorf("profile list without --long: exit %d, output %q; want no Version column", r.code, r.stdout)
	}
	r = runCLI(t, commands.Config{}, append(base, "profile", "show", "gold", "-f", "json")...)
	if r.code != 0 || strings.Contains(r.stdout, "unchanged") || strings.Contains(r.stdout, "retired_version") {
		t.Errorf("profile show: exit %d, output %q; want no write fields", r.code, r.stdout)
	}
}
