package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/trustpool/trustpool/compute-agent/agenttest"
)

// -init writes a CA the next run loads and a profile; a run needs both and
// a transport_url.
func TestInitAndLoad(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "sim")
	if err := run(options{caDir: dir, init: true, imaFiles: 3}, nil, nil); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"ca.pem", "ca.key", "profile.toml"} {
		if fi, err := os.Stat(filepath.Join(dir, f)); err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: %v", f, err)
		}
	}
	prof, _ := os.ReadFile(filepath.Join(dir, "profile.toml"))
	if !strings.Contains(string(prof), `"/usr/bin/sim-tool-2"`) || strings.Contains(string(prof), "sim-tool-3") {
		t.Errorf("profile allowlist does not hold the 3 tools:\n%s", prof)
	}
	if _, err := loadCA(dir); err != nil {
		t.Errorf("loadCA: %v", err)
	}
	if err := run(options{caDir: dir}, nil, nil); err == nil || !strings.Contains(err.Error(), "-transport-url") {
		t.Errorf("run without a transport_url: %v", err)
	}
	if err := run(options{caDir: t.TempDir(), transportURL: "rabbit://x/"}, nil, nil); err == nil || !strings.Contains(err.Error(), "-init") {
		t.Errorf("run without a CA: %v", err)
	}
	if err := run(options{}, nil, nil); err == nil {
		t.Error("run without -ca-dir succeeded")
	}
}

// Commands name a host of the fleet and an argument; mistakes are answered
// as errors, not acted on.
func TestCommands(t *testing.T) {
	f, err := agenttest.New(agenttest.Config{TransportURL: "rabbit://guest:guest@127.0.0.1:1/", Hosts: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	hosts := map[string]*agenttest.Host{}
	for _, h := range f.Hosts() {
		hosts[h.Name] = h
	}
	ctx := context.Background()
	for _, tc := range []struct {
		line, wantErr string
	}{
		{"tamper nosuch ima", "no host"},
		{"tamper sim-00000", "usage"},
		{"tamper sim-00000 nonsense", "unknown tamper kind"},
		{"slow sim-00000 soon", "invalid duration"},
		{"explode sim-00000 now", "unknown command"},
	} {
		if _, err := command(ctx, strings.Fields(tc.line), hosts, f); err == nil || !strings.Contains(err.Error(), tc.wantErr) {
			t.Errorf("%q: %v, want an error with %q", tc.line, err, tc.wantErr)
		}
	}
	if _, err := command(ctx, []string{"slow", "sim-00001", "2s"}, hosts, f); err != nil {
		t.Errorf("slow: %v", err)
	}
	var out bytes.Buffer
	commands(ctx, strings.NewReader("stats\nsilent sim-00000 on\n"), hosts, func(v any) { out.WriteString(strings.TrimSpace(fmtJSON(v)) + "\n") }, f)
	if got := out.String(); !strings.Contains(got, `"hosts":2`) || !strings.Contains(got, `silent on`) {
		t.Errorf("command answers:\n%s", got)
	}
}
