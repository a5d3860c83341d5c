package integration

import (
	"bytes"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/trustpool/trustpool/internal/servicetest"
)

// lockedBuffer collects log output written from several goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestPersonasWithKeystone runs the service's policy defaults against real
// Keystone tokens (implied roles included: Keystone's bootstrap makes admin
// imply member and member imply reader): admins, of any project, may do
// everything; a service-role user may read hosts and ask for attestations
// and nothing else; members and readers of any project get 403 on host
// data; a system-scoped token gets 403 (enforce_scope). A policy.yaml that
// restores the legacy rule lets readers list hosts again; a policy.yaml that
// oslo.policy would refuse (two YAML documents) denies everything and the
// parse error is logged.
func TestPersonasWithKeystone(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test")
	}
	e := newEnv(t, 2*time.Second)
	name := strings.NewReplacer("/", "-", "_", "-").Replace(strings.ToLower(t.Name()))
	users := map[string]servicetest.KeystoneUser{
		"member only (implied reader)": {Name: "tp-m-" + name, Password: "pw", Project: "demo-" + name, Roles: []string{"member"}},
		"reader":                       {Name: "tp-r-" + name, Password: "pw", Project: "demo-" + name, Roles: []string{"reader"}},
		"service":                      {Name: "tp-s-" + name, Password: "pw", Project: "service", Roles: []string{"service"}},
		"admin of another project":     {Name: "tp-a-" + name, Password: "pw", Project: "other-" + name, Roles: []string{"admin"}},
	}
	tokens := map[string]string{"admin": e.admin, "member and reader": e.member, "system-scoped admin": e.ks.SystemAdminToken(t)}
	userSeq.Lock()
	for who, u := range users {
		e.ks.CreateUser(t, u)
		tokens[who] = e.ks.Token(t, u.Name, u.Password, u.Project)
	}
	userSeq.Unlock()
	var logs lockedBuffer
	e.cfg.Logger = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	e.cfg.Enrollment.RequireEKCert = false // no agents here
	e.startService()

	const deny = http.StatusForbidden
	operator := map[string]bool{"admin": true, "admin of another project": true}
	serviceOrAdmin := map[string]bool{"admin": true, "admin of another project": true, "service": true}
	routes := []struct {
		method, path string
		body         any
		allowed      map[string]bool
	}{
		{"GET", "/v1/hosts", nil, serviceOrAdmin},
		{"GET", "/v1/hosts/ghost", nil, serviceOrAdmin},
		{"GET", "/v1/hosts/ghost/history", nil, serviceOrAdmin},
		{"POST", "/v1/hosts/ghost/attest", nil, serviceOrAdmin},
		{"DELETE", "/v1/hosts/ghost", nil, operator},
		{"POST", "/v1/hosts/ghost/approve", nil, operator},
		{"PUT", "/v1/hosts/ghost/profiles", map[string]any{"profiles": nil}, operator},
		{"GET", "/v1/profiles", nil, operator},
		{"POST", "/v1/profiles", map[string]any{"name": 5}, operator},
		{"DELETE", "/v1/profiles/ghost", nil, operator},
		{"GET", "/v1/audit", nil, operator},
	}
	for _, rt := range routes {
		for who, tok := range tokens {
			code, body := e.api(rt.method, rt.path, tok, rt.body)
			if rt.allowed[who] == (code == deny) {
				t.Errorf("%s %s as %s = %d %v, want allowed=%v", rt.method, rt.path, who, code, body, rt.allowed[who])
			}
		}
	}
	if l := logs.String(); !strings.Contains(l, "policy scope mismatch") || !strings.Contains(l, "token_scope=system") {
		t.Errorf("the system-scoped token's scope mismatch is not logged:\n%s", l)
	}
	if code, body := e.api("GET", "/v1/keys", "", nil); code != http.StatusOK || !strings.Contains(fmt.Sprint(body), "BEGIN PUBLIC KEY") {
		t.Errorf("anonymous GET /v1/keys = %d %v, want the public key", code, body)
	}

	// An operator restores the legacy read rule in policy.yaml (re-read on change).
	if err := os.WriteFile(e.cfg.Policy.PolicyFile, []byte("\"trustpool:hosts:list\": \"rule:reader_or_admin\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, who := range []string{"reader", "member only (implied reader)", "member and reader"} {
		if code, body := e.api("GET", "/v1/hosts", tokens[who], nil); code != http.StatusOK {
			t.Errorf("legacy override: GET /v1/hosts as %s = %d %v, want 200", who, code, body)
		}
	}
	if code, _ := e.api("GET", "/v1/audit", tokens["reader"], nil); code != deny {
		t.Errorf("legacy override of hosts:list: GET /v1/audit as reader = %d, want 403", code)
	}

	// A policy file oslo.policy refuses: everything is denied and the parse
	// error is logged.
	bad := "\"trustpool:hosts:list\": \"@\"\n---\n\"trustpool:hosts:list\": \"!\"\n"
	if err := os.WriteFile(e.cfg.Policy.PolicyFile, []byte(bad), 0o600); err != nil {
		t.Fatal(err)
	}
	if code, body := e.api("GET", "/v1/hosts", e.admin, nil); code != deny {
		t.Errorf("refused policy file: admin GET /v1/hosts = %d %v, want 403", code, body)
	}
	if l := logs.String(); !strings.Contains(l, "policy evaluation failed") || !strings.Contains(l, "expected a single document") {
		t.Errorf("the policy file's parse error is not logged:\n%s", l)
	}
	if err := os.WriteFile(e.cfg.Policy.PolicyFile, []byte("# fixed\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if code, body := e.api("GET", "/v1/hosts", e.admin, nil); code != http.StatusOK {
		t.Errorf("fixed policy file: admin GET /v1/hosts = %d %v, want 200", code, body)
	}
}
