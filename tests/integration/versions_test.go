package integration

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/trustpool/trustpool/cli/commands"
	"github.com/trustpool/trustpool/internal/verdict"
)

// profileVersionRollout is TestCLI's profile version part, on the real
// service with two hosts booted from the same build, both trusted under
// "golden". Profile "rollout" starts with a version no host matches; a
// version computed from compute-1's event log is a candidate (accepted
// nowhere), then a canary on compute-2 (accepted there only), then a
// canary with fraction 1 (accepted on compute-1 too), then approved
// (accepted everywhere) with version 1 retired. Members are refused every
// version command; refused changes name their reason.
func profileVersionRollout(t *testing.T, c *cli, e *env, admin, member []string, eventLog string) {
	t.Helper()
	as := func(who []string, args ...string) []string { return append(slices.Clone(who), args...) }
	attested := func(host string) []string {
		t.Helper()
		h := jsonOut[map[string]any](t, c.ok(as(admin, "host", "attest", host, "-f", "json")...))
		var ps []string
		for _, p := range h["profiles"].([]any) {
			ps = append(ps, p.(string))
		}
		return ps
	}
	c.ok(as(admin, "profile", "create", "rollout", "--fact", "secure_boot=disabled")...)
	c.fails(commands.ExitAuth, []string{"trustpool:profiles:versions:read", "(HTTP 403)"}, as(member, "profile", "version", "list", "rollout")...)
	c.fails(commands.ExitAuth, []string{"trustpool:profiles:versions:write", "(HTTP 403)"}, as(member, "profile", "version", "set-state", "rollout", "1", "retired")...)
	c.fails(commands.ExitAuth, []string{"trustpool:profiles:versions:write", "(HTTP 403)"}, as(member, "profile", "version", "import", "rollout", "--eventlog", eventLog)...)

	v2 := jsonOut[map[string]any](t, c.ok(as(admin, "profile", "version", "import", "rollout", "--eventlog", eventLog, "-f", "json")...))
	if v2["version"] != 2.0 || v2["state"] != "candidate" || !strings.HasPrefix(fmt.Sprint(v2["source"]), "learned from event log sha256:") {
		t.Errorf("profile version import --eventlog = %v", v2)
	}
	if ps := attested("compute-1"); slices.Contains(ps, "rollout") {
		t.Errorf("a candidate version is accepted: compute-1 satisfies %v", ps)
	}
	v3 := jsonOut[map[string]any](t, c.ok(as(admin, "profile", "version", "import", "rollout", "--fact", "secure_boot=enabled", "-f", "json")...))
	if v3["version"] != 3.0 || v3["state"] != "candidate" || v3["source"] != "imported document" {
		t.Errorf("profile version import --fact = %v", v3)
	}
	if ps := attested("compute-1"); slices.Contains(ps, "rollout") {
		t.Errorf("a candidate version (3, matching every host) is accepted: compute-1 satisfies %v", ps)
	}

	before, _, _ := e.verdicts.get("compute-2")
	if out := c.ok(as(admin, "profile", "version", "set-state", "rollout", "2", "canary", "--host", "compute-2", "-f", "value", "-c", "state", "-c", "hosts")...); out != "canary\ncompute-2\n" {
		t.Errorf("set-state canary = %q", out)
	}
	e.verdicts.wait(t, "compute-2", before.Seq, 60*time.Second, "satisfies the canary", func(v verdict.Verdict) bool {
		return slices.Contains(v.Profiles, "rollout")
	})
	if ps := attested("compute-1"); slices.Contains(ps, "rollout") {
		t.Errorf("a canary on compute-2 is accepted on compute-1: %v", ps)
	}
	shown := jsonOut[map[string]any](t, c.ok(as(admin, "host", "show", "compute-2", "-f", "json")...))
	if pv, _ := shown["profile_versions"].(map[string]any); pv["rollout"] != 2.0 || pv["golden"] != 1.0 {
		t.Errorf("host show compute-2: profile_versions = %v, want golden 1, rollout 2", shown["profile_versions"])
	}

	c.fails(commands.ExitError, []string{"only approved version", "(HTTP 409)"}, as(admin, "profile", "version", "set-state", "rollout", "1", "retired")...)
	c.fails(commands.ExitError, []string{"is canary, not candidate", "(HTTP 409)"}, as(admin, "profile", "version", "set-state", "rollout", "2", "approved", "--from", "candidate")...)
	c.fails(commands.ExitUsage, []string{"--host is only for canary"}, as(admin, "profile", "version", "set-state", "rollout", "2", "approved", "--host", "compute-1")...)
	c.fails(commands.ExitError, []string{`host "compute-9" does not exist`, "(HTTP 400)"}, as(admin, "profile", "version", "set-state", "rollout", "2", "canary", "--host", "compute-9")...)
	c.fails(commands.ExitUsage, []string{"--fraction is only for canary"}, as(admin, "profile", "version", "set-state", "rollout", "2", "approved", "--fraction", "0.5")...)
	// A fraction of 1 selects every host: compute-1 joins the canary.
	frac := jsonOut[map[string]any](t, c.ok(as(admin, "profile", "version", "set-state", "rollout", "2", "canary", "--host", "compute-2", "--fraction", "1", "-f", "json")...))
	if in, _ := frac["in_canary"].([]any); frac["fraction"] != 1.0 || !slices.Contains(in, any("compute-1")) || !slices.Contains(in, any("compute-2")) {
		t.Errorf("set-state canary --fraction 1 = %v, want fraction 1 with compute-1 and compute-2 in the canary", frac)
	}
	if ps := attested("compute-1"); !slices.Contains(ps, "rollout") {
		t.Errorf("a canary with fraction 1 is not accepted on compute-1: %v", ps)
	}

	c.ok(as(admin, "profile", "version", "set-state", "rollout", "2", "approved")...)
	c.ok(as(admin, "profile", "version", "set-state", "rollout", "1", "retired")...)
	for _, h := range []string{"compute-1", "compute-2"} {
		if ps := attested(h); !slices.Contains(ps, "rollout") {
			t.Errorf("approved version 2 not accepted on %s: %v", h, ps)
		}
	}
	if out := c.ok(as(admin, "profile", "version", "list", "rollout", "-f", "value", "-c", "Version", "-c", "State")...); out != "1 retired\n2 approved\n3 candidate\n" {
		t.Errorf("profile version list = %q", out)
	}
	diff := c.ok(as(admin, "profile", "version", "diff", "rollout", "1", "2", "-f", "value")...)
	for _, want := range []string{"Secure Boot disabled → enabled\n", "kernel digest now checked\n", "PCRs 0, 1, 2, 3, 4, 5, 6, 7, 8 and 9 now pinned\n"} {
		if !strings.Contains(diff, want) {
			t.Errorf("profile version diff rollout 1 2 = %q, lacks %q", diff, want)
		}
	}
	if diff := c.ok(as(admin, "profile", "version", "diff", "rollout", "2", "2", "-f", "value")...); strings.Contains(diff, " changed") || strings.Contains(diff, "differ") {
		t.Errorf("profile version diff of a version with itself = %q", diff)
	}
	c.fails(commands.ExitError, []string{"cannot go from retired to approved", "(HTTP 409)"}, as(admin, "profile", "version", "set-state", "rollout", "1", "approved")...)
	c.ok(as(admin, "profile", "delete", "rollout", "--force")...)
}
