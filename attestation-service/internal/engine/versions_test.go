package engine_test

import (
	"database/sql"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	_ "github.com/mattn/go-sqlite3"

	"github.com/trustpool/trustpool/attestation-service/internal/engine"
	"github.com/trustpool/trustpool/attestation-service/internal/store"
	"github.com/trustpool/trustpool/internal/attestrpc"
	"github.com/trustpool/trustpool/internal/tpm"
	"github.com/trustpool/trustpool/internal/verdict"
)

// TestProfileVersionRollout: a host booted build A is trusted under a
// profile only through a version it may match: an approved one, or a
// canary naming it. A candidate, a canary naming another host and a
// retired version are not accepted; the verdict's host view and its
// notification name the version matched.
func TestProfileVersionRollout(t *testing.T) {
	ctx := t.Context()
	dir := t.TempDir()
	sim, logPath := seededSim(t, dir)
	tp, err := tpm.New(sim.Opener(), tpm.Config{StateDir: filepath.Join(dir, "state"), EventLogPath: logPath})
	if err != nil {
		t.Fatal(err)
	}
	eng, st, pub := newTestEngine(t, dir, engine.Config{Issuer: "test", Interval: 10 * time.Second, Validity: 30 * time.Second,
		QuoteTimeout: 5 * time.Second, PCRs: []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}, EnrollmentMode: engine.ModeAuto,
		Agents: &simAgent{tp: tp}, Trigger: func(string) {}, RequiredProfiles: []string{"gold"}})
	if s := enroll(t, eng, tp); s != attestrpc.StateEnrolled {
		t.Fatalf("enrollment state %s", s)
	}
	doc := func(secureBoot string) string {
		return "[[profile]]\nname = \"gold\"\n[profile.facts]\nsecure_boot = [\"" + secureBoot + "\"]\n"
	}
	matching, other := doc("enabled"), doc("disabled")
	if err := st.PutProfile(ctx, store.Profile{Name: "gold", Body: other}, store.Create); err != nil {
		t.Fatal(err)
	}
	attest := func(step string, want verdict.Status, wantVersion int, reason string) {
		t.Helper()
		v, err := eng.Attest(ctx, "c1")
		if err != nil || v.Status != want {
			t.Fatalf("%s: verdict %+v, %v; want %s", step, v, err, want)
		}
		if reason != "" && !strings.Contains(strings.Join(v.Reasons, "\n"), reason) {
			t.Errorf("%s: reasons %q, want one containing %q", step, v.Reasons, reason)
		}
		hv, err := eng.HostView(ctx, "c1")
		if err != nil {
			t.Fatal(err)
		}
		wantVersions := map[string]int{}
		if wantVersion > 0 {
			wantVersions["gold"] = wantVersion
		}
		if got := hv.Verdict.ProfileVersions; !cmp.Equal(got, wantVersions, cmpopts.EquateEmpty()) {
			t.Errorf("%s: host view profile_versions = %v, want %v", step, got, wantVersions)
		}
	}
	set := func(version int, from, to string, hosts ...string) {
		t.Helper()
		if err := eng.SetProfileVersionState(ctx, "gold", version, from, to, hosts); err != nil {
			t.Fatal(err)
		}
		if hosts == nil {
			hosts = []string{}
		}
		want := map[string]any{"profile": "gold", "version": version, "from": from, "state": to, "hosts": hosts}
		if got := lastPayload(pub, attestrpc.EventProfileVersionStateChanged); !cmp.Equal(got, want) {
			t.Errorf("version_state_changed notification = %v, want %v", got, want)
		}
	}
	attest("only version 1, not matching", verdict.Untrusted, 0, "profile gold: fact secure_boot")

	if n, err := eng.AddProfileVersion(ctx, "gold", matching, "test"); err != nil || n != 2 {
		t.Fatalf("AddProfileVersion = %d, %v", n, err)
	}
	if got := lastPayload(pub, attestrpc.EventProfileVersionCreated); !cmp.Equal(got, map[string]any{"profile": "gold", "version": 2, "state": "candidate", "source": "test"}) {
		t.Errorf("version_created notification = %v", got)
	}
	attest("version 2 a candidate", verdict.Untrusted, 0, "profile gold: fact secure_boot")
	set(2, store.VersionCandidate, store.VersionCanary, "c9")
	attest("version 2 a canary on another host", verdict.Untrusted, 0, "")
	set(2, store.VersionCanary, store.VersionCanary, "c9", "c1")
	attest("version 2 a canary on c1", verdict.Trusted, 2, "")
	if got := lastPayload(pub, attestrpc.EventHostTrusted)["profile_versions"]; !cmp.Equal(got, map[string]int{"gold": 2}) {
		t.Errorf("host.trusted notification profile_versions = %v, want gold: 2", got)
	}
	// Changes that would stop accepting version 2 on c1 name it (c1
	// requires gold and matched version 2); others do not.
	for _, tc := range []struct {
		version int
		to      string
		hosts   []string
		want    []string
	}{
		{2, store.VersionCanary, []string{"c9"}, []string{"c1"}},
		{2, store.VersionCandidate, nil, []string{"c1"}},
		{2, store.VersionCanary, []string{"c9", "c1"}, nil},
		{2, store.VersionApproved, nil, nil},
		{1, store.VersionRetired, nil, nil},
	} {
		got, err := eng.VersionReliance(ctx, "gold", tc.version, tc.to, tc.hosts)
		if err != nil || !cmp.Equal(got, tc.want) {
			t.Errorf("VersionReliance(gold, %d, %s, %v) = %v, %v; want %v", tc.version, tc.to, tc.hosts, got, err, tc.want)
		}
	}
	set(2, store.VersionCanary, store.VersionApproved)
	attest("version 2 approved", verdict.Trusted, 2, "")
	if got, err := eng.VersionReliance(ctx, "gold", 2, store.VersionRetired, nil); err != nil || !cmp.Equal(got, []string{"c1"}) {
		t.Errorf("VersionReliance(gold, 2, retired) = %v, %v; want [c1]", got, err)
	}

	// Version 3 (not matching) approved, version 2 retired: only 1 and 3
	// are accepted, and neither matches.
	if _, err := st.AddProfileVersion(ctx, "gold", other, "test"); err != nil {
		t.Fatal(err)
	}
	set(3, store.VersionCandidate, store.VersionApproved)
	attest("versions 1, 2 and 3 approved", verdict.Trusted, 2, "")
	set(2, store.VersionApproved, store.VersionRetired)
	attest("version 2 retired", verdict.Untrusted, 0, "version 3: fact secure_boot")
}

// lastPayload is the payload of the latest notification of type ev.
func lastPayload(p *recPublisher, ev string) map[string]any {
	p.mu.Lock()
	defer p.mu.Unlock()
	for i := len(p.events) - 1; i >= 0; i-- {
		if p.events[i] == ev {
			m, _ := p.payloads[i].(map[string]any)
			return m
		}
	}
	return nil
}

// TestMigratedProfilesKeepVerdicts: profiles stored before versions
// existed (a database at schema version 5) give the same verdict after
// migration 6 as the same profiles created today, and the host matches
// their version 1.
func TestMigratedProfilesKeepVerdicts(t *testing.T) {
	ctx := t.Context()
	gold := "[[profile]]\nname = \"gold\"\n[profile.facts]\nsecure_boot = [\"enabled\"]\n"
	other := "[[profile]]\nname = \"other\"\n[profile.facts]\nsecure_boot = [\"disabled\"]\n"
	verdictOf := func(t *testing.T, migrated bool) (verdict.Verdict, map[string]int) {
		t.Helper()
		dir := t.TempDir()
		if migrated {
			// The schema and rows code before migration 6 left: no
			// profile_versions table, profiles as flat rows.
			path := filepath.Join(dir, "a.db")
			st, err := store.Open(ctx, "sqlite:///"+path)
			if err != nil {
				t.Fatal(err)
			}
			st.Close()
			db, err := sql.Open("sqlite3", path)
			if err != nil {
				t.Fatal(err)
			}
			for _, stmt := range []string{"DROP TABLE profile_versions", "DELETE FROM schema_migrations WHERE version = 6",
				"INSERT INTO profiles (name, body, updated_at) VALUES ('gold', '" + gold + "', 1), ('other', '" + other + "', 1)"} {
				if _, err := db.ExecContext(ctx, stmt); err != nil {
					t.Fatalf("%s: %v", stmt, err)
				}
			}
			db.Close()
		}
		sim, logPath := seededSim(t, dir)
		tp, err := tpm.New(sim.Opener(), tpm.Config{StateDir: filepath.Join(dir, "state"), EventLogPath: logPath})
		if err != nil {
			t.Fatal(err)
		}
		eng, st, _ := newTestEngine(t, dir, engine.Config{Issuer: "test", Interval: 10 * time.Second, Validity: 30 * time.Second,
			QuoteTimeout: 5 * time.Second, PCRs: []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}, EnrollmentMode: engine.ModeAuto,
			Agents: &simAgent{tp: tp}, Trigger: func(string) {}, RequiredProfiles: []string{"gold"}})
		if !migrated {
			for _, p := range []store.Profile{{Name: "gold", Body: gold}, {Name: "other", Body: other}} {
				if err := st.PutProfile(ctx, p, store.Create); err != nil {
					t.Fatal(err)
				}
			}
		}
		if s := enroll(t, eng, tp); s != attestrpc.StateEnrolled {
			t.Fatalf("enrollment state %s", s)
		}
		v, err := eng.Attest(ctx, "c1")
		if err != nil {
			t.Fatal(err)
		}
		hv, err := eng.HostView(ctx, "c1")
		if err != nil {
			t.Fatal(err)
		}
		return v, hv.Verdict.ProfileVersions
	}
	// One simulator at a time: each database in its own subtest.
	var (
		fresh, migrated                 verdict.Verdict
		freshVersions, migratedVersions map[string]int
	)
	t.Run("created today", func(t *testing.T) { fresh, freshVersions = verdictOf(t, false) })
	t.Run("migrated", func(t *testing.T) { migrated, migratedVersions = verdictOf(t, true) })
	if fresh.Status != verdict.Trusted || !cmp.Equal(fresh.Profiles, []string{"gold"}) {
		t.Fatalf("verdict with profiles created today = %+v", fresh)
	}
	if migrated.Status != fresh.Status || !cmp.Equal(migrated.Profiles, fresh.Profiles) || !cmp.Equal(migrated.Reasons, fresh.Reasons, cmpopts.EquateEmpty()) {
		t.Errorf("verdict after migration = %+v, want as with profiles created today: %+v", migrated, fresh)
	}
	if want := map[string]int{"gold": 1}; !cmp.Equal(migratedVersions, want) || !cmp.Equal(freshVersions, want) {
		t.Errorf("profile_versions: migrated %v, created today %v; want %v", migratedVersions, freshVersions, want)
	}
}
