package engine_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"database/sql"
	"encoding/binary"
	"fmt"
	"math/big"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	_ "github.com/mattn/go-sqlite3"

	"github.com/trustpool/trustpool/attestation-service/internal/engine"
	"github.com/trustpool/trustpool/attestation-service/internal/store"
	"github.com/trustpool/trustpool/internal/attestrpc"
	"github.com/trustpool/trustpool/internal/simtpm"
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
		if err := eng.SetProfileVersionState(ctx, "gold", version, from, to, hosts, 0); err != nil {
			t.Fatal(err)
		}
		if hosts == nil {
			hosts = []string{}
		}
		want := map[string]any{"profile": "gold", "version": version, "from": from, "state": to, "hosts": hosts, "fraction": 0.0}
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
		got, err := eng.VersionReliance(ctx, "gold", tc.version, tc.to, tc.hosts, 0)
		if err != nil || !cmp.Equal(got, tc.want) {
			t.Errorf("VersionReliance(gold, %d, %s, %v) = %v, %v; want %v", tc.version, tc.to, tc.hosts, got, err, tc.want)
		}
	}
	set(2, store.VersionCanary, store.VersionApproved)
	attest("version 2 approved", verdict.Trusted, 2, "")
	if got, err := eng.VersionReliance(ctx, "gold", 2, store.VersionRetired, nil, 0); err != nil || !cmp.Equal(got, []string{"c1"}) {
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

// TestFlatUpdateVersions: a flat profile update is a new approved version
// retiring the one it replaces, notified as the version operations are;
// the host's verdict follows the new document (trusted when it matches,
// untrusted when it does not), naming the new version; the same document
// again notifies nothing and stores nothing.
func TestFlatUpdateVersions(t *testing.T) {
	ctx := t.Context()
	dir := t.TempDir()
	sim, logPath := seededSim(t, dir)
	tp, err := tpm.New(sim.Opener(), tpm.Config{StateDir: filepath.Join(dir, "state"), EventLogPath: logPath})
	if err != nil {
		t.Fatal(err)
	}
	triggered := 0
	var mu sync.Mutex
	eng, st, pub := newTestEngine(t, dir, engine.Config{Issuer: "test", Interval: 10 * time.Second, Validity: 30 * time.Second,
		QuoteTimeout: 5 * time.Second, PCRs: []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}, EnrollmentMode: engine.ModeAuto,
		Agents: &simAgent{tp: tp}, RequiredProfiles: []string{"gold"},
		Trigger: func(string) { mu.Lock(); triggered++; mu.Unlock() }})
	if s := enroll(t, eng, tp); s != attestrpc.StateEnrolled {
		t.Fatalf("enrollment state %s", s)
	}
	doc := func(secureBoot string) string {
		return "[[profile]]\nname = \"gold\"\n[profile.facts]\nsecure_boot = [\"" + secureBoot + "\"]\n"
	}
	matching, other := doc("enabled"), doc("disabled")
	events := func() int {
		pub.mu.Lock()
		defer pub.mu.Unlock()
		n := 0
		for _, ev := range pub.events {
			if ev == attestrpc.EventProfileVersionCreated || ev == attestrpc.EventProfileVersionStateChanged {
				n++
			}
		}
		return n
	}
	attest := func(step string, want verdict.Status, wantVersion int) {
		t.Helper()
		v, err := eng.Attest(ctx, "c1")
		if err != nil || v.Status != want {
			t.Fatalf("%s: verdict %+v, %v; want %s", step, v, err, want)
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
	states := func() map[int]string {
		t.Helper()
		vs, err := st.ProfileVersions(ctx, "gold")
		if err != nil {
			t.Fatal(err)
		}
		out := map[int]string{}
		for _, v := range vs {
			out[v.Version] = v.State
		}
		return out
	}
	update := func(step, body string, want store.FlatWrite, wantStates map[int]string) {
		t.Helper()
		before := events()
		w, err := eng.PutProfile(ctx, store.Profile{Name: "gold", Body: body}, store.Replace)
		if err != nil || w != want {
			t.Fatalf("%s: PutProfile = %+v, %v; want %+v", step, w, err, want)
		}
		if got := states(); !cmp.Equal(got, wantStates) {
			t.Errorf("%s: versions %v, want %v", step, got, wantStates)
		}
		if !want.Changed {
			if n := events() - before; n != 0 {
				t.Errorf("%s: %d version notifications for an unchanged document", step, n)
			}
			return
		}
		if n := events() - before; n != 2 {
			t.Errorf("%s: %d version notifications, want 2 (created, retired)", step, n)
		}
		created := map[string]any{"profile": "gold", "version": want.Version, "state": "approved", "source": "profile API"}
		if got := lastPayload(pub, attestrpc.EventProfileVersionCreated); !cmp.Equal(got, created) {
			t.Errorf("%s: version_created notification = %v, want %v", step, got, created)
		}
		retired := map[string]any{"profile": "gold", "version": want.Retired, "from": "approved", "state": "retired", "hosts": []string{}, "fraction": 0.0}
		if got := lastPayload(pub, attestrpc.EventProfileVersionStateChanged); !cmp.Equal(got, retired) {
			t.Errorf("%s: version_state_changed notification = %v, want %v", step, got, retired)
		}
	}

	w, err := eng.PutProfile(ctx, store.Profile{Name: "gold", Body: other}, store.Create)
	if err != nil || w.Version != 1 || !w.Created {
		t.Fatalf("create = %+v, %v", w, err)
	}
	if got := lastPayload(pub, attestrpc.EventProfileVersionCreated); !cmp.Equal(got, map[string]any{"profile": "gold", "version": 1, "state": "approved", "source": "profile API"}) {
		t.Errorf("version_created notification of a new profile = %v", got)
	}
	attest("version 1, not matching", verdict.Untrusted, 0)
	mu.Lock()
	triggered = 0
	mu.Unlock()
	update("update to matching", matching, store.FlatWrite{Changed: true, Version: 2, Retired: 1, Source: "profile API"},
		map[int]string{1: "retired", 2: "approved"})
	mu.Lock()
	if triggered != 1 {
		t.Errorf("hosts attested again after an update: %d triggers, want 1 (c1)", triggered)
	}
	mu.Unlock()
	attest("version 2 matching", verdict.Trusted, 2)
	update("same document", matching, store.FlatWrite{Version: 2}, map[int]string{1: "retired", 2: "approved"})
	attest("same document", verdict.Trusted, 2)
	update("update to not matching", other, store.FlatWrite{Changed: true, Version: 3, Retired: 2, Source: "profile API"},
		map[int]string{1: "retired", 2: "retired", 3: "approved"})
	attest("version 3 not matching", verdict.Untrusted, 0)
	// A rollout in progress: 3 (not matching), 4 (matching) and 5
	// approved. An update replaces the latest approved version (5) only;
	// 3 and 4 stay approved, and the host stays trusted through 4.
	for i, body := range []string{matching, doc("unknown")} {
		n, err := st.AddProfileVersion(ctx, "gold", body, "test")
		if err != nil || n != 4+i {
			t.Fatalf("AddProfileVersion = %d, %v; want %d", n, err, 4+i)
		}
		if err := eng.SetProfileVersionState(ctx, "gold", n, store.VersionCandidate, store.VersionApproved, nil, 0); err != nil {
			t.Fatal(err)
		}
	}
	attest("rollout: 3, 4 and 5 approved", verdict.Trusted, 4)
	update("update during a rollout", doc("other"), store.FlatWrite{Changed: true, Version: 6, Retired: 5, Source: "profile API"},
		map[int]string{1: "retired", 2: "retired", 3: "approved", 4: "approved", 5: "retired", 6: "approved"})
	attest("after an update during a rollout", verdict.Trusted, 4)
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
			// profile_versions table, profiles as flat rows, and none of
			// the later migrations' columns (8: launch_history.initiator).
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
			// Later migrations' changes go too, so that all re-run.
			for _, stmt := range []string{"DROP TABLE profile_versions", "ALTER TABLE launch_history DROP COLUMN initiator",
				"DROP TABLE revocation_brake", "DELETE FROM counters WHERE name = 'revocation_brake'",
				"DELETE FROM schema_migrations WHERE version >= 6",
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

// fleetAgent answers quotes for many hosts, each from its own simulated
// TPM.
type fleetAgent struct {
	mu  sync.Mutex
	tps map[string]*simtpm.TPM
}

func (a *fleetAgent) Quote(ctx context.Context, host string, args *attestrpc.QuoteArgs) (*attestrpc.QuoteResult, error) {
	a.mu.Lock()
	tp := a.tps[host]
	a.mu.Unlock()
	if tp == nil {
		return nil, fmt.Errorf("no host %s", host)
	}
	return (&softAgent{tp: tp}).Quote(ctx, host, args)
}

// inFraction is the canary fraction rule computed here, independently of
// the code under test: the first 8 bytes of SHA-256(profile NUL version
// NUL host) as a big-endian integer h; selected when h/2^64 < fraction.
func inFraction(profile string, version int, host string, fraction float64) bool {
	sum := sha256.Sum256([]byte(profile + "\x00" + strconv.Itoa(version) + "\x00" + host))
	h := new(big.Rat).SetFrac(new(big.Int).SetUint64(binary.BigEndian.Uint64(sum[:8])), new(big.Int).Lsh(big.NewInt(1), 64))
	return h.Cmp(new(big.Rat).SetFloat64(fraction)) < 0
}

// TestCanaryFraction: with a fleet of enrolled hosts, a canary version
// given a fraction is accepted exactly on the hosts the rule selects (and
// on hosts it names); a host outside is not trusted through it; raising
// the fraction keeps every host it had and a host enrolled later is
// selected by the same rule; lowering it names the hosts that fall out as
// relying on it, and the notification carries the fraction.
func TestCanaryFraction(t *testing.T) {
	ctx := t.Context()
	st, err := store.Open(ctx, "sqlite:///"+filepath.Join(t.TempDir(), "a.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	_, priv, _ := ed25519.GenerateKey(nil)
	signer := verdict.NewSigner(priv)
	pub := &recPublisher{vf: verdict.NewVerifier(signer.Public())}
	agent := &fleetAgent{tps: map[string]*simtpm.TPM{}}
	eng := engine.New(engine.Config{Issuer: "test", Interval: 10 * time.Second, Validity: 30 * time.Second, QuoteTimeout: 5 * time.Second,
		PCRs: []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10}, EnrollmentMode: engine.ModeAuto, Store: st, Signer: signer,
		Publisher: pub, Agents: agent, Trigger: func(string) {}, RequiredProfiles: []string{"gold"}})
	enrollHost := func(name string) {
		t.Helper()
		tp, err := simtpm.New(simtpm.Config{Rand: rand.Reader, IMA: true})
		if err != nil {
			t.Fatal(err)
		}
		agent.mu.Lock()
		agent.tps[name] = tp
		agent.mu.Unlock()
		ek, _ := tp.EK(ctx)
		ak, _ := tp.AK(ctx)
		reg, err := eng.RegisterHost(ctx, &attestrpc.RegisterHostArgs{Host: name, EKPublic: ek.Public, AKPublic: ak.Public})
		if err != nil {
			t.Fatal(err)
		}
		secret, err := tp.ActivateCredential(ctx, reg.Credential.IDObject, reg.Credential.EncryptedSecret)
		if err != nil {
			t.Fatal(err)
		}
		act, err := eng.ActivateCredential(ctx, &attestrpc.ActivateCredentialArgs{Host: name, ChallengeID: reg.ChallengeID, Secret: secret})
		if err != nil || act.State != attestrpc.StateEnrolled {
			t.Fatalf("enroll %s: %+v, %v", name, act, err)
		}
	}
	const n = 16
	var hosts []string
	for i := range n {
		hosts = append(hosts, fmt.Sprintf("compute-%02d", i))
		enrollHost(hosts[i])
	}
	doc := func(secureBoot string) string {
		return "[[profile]]\nname = \"gold\"\n[profile.facts]\nsecure_boot = [\"" + secureBoot + "\"]\n"
	}
	// Version 1 (approved) matches no host; version 2 matches every host,
	// so a host is trusted exactly when version 2 is accepted on it.
	if err := st.PutProfile(ctx, store.Profile{Name: "gold", Body: doc("disabled")}, store.Create); err != nil {
		t.Fatal(err)
	}
	if _, err := eng.AddProfileVersion(ctx, "gold", doc("enabled"), "test"); err != nil {
		t.Fatal(err)
	}
	expected := func(named []string, f float64) []string {
		var out []string
		for _, h := range hosts {
			if slices.Contains(named, h) || inFraction("gold", 2, h, f) {
				out = append(out, h)
			}
		}
		return out
	}
	// trusted attests every host and returns those trusted, checking that
	// each trusted host matched version 2.
	trusted := func(step string) []string {
		t.Helper()
		var out []string
		for _, h := range hosts {
			v, err := eng.Attest(ctx, h)
			if err != nil {
				t.Fatalf("%s: Attest(%s): %v", step, h, err)
			}
			hv, err := eng.HostView(ctx, h)
			if err != nil {
				t.Fatal(err)
			}
			switch {
			case v.Status == verdict.Trusted && hv.Verdict.ProfileVersions["gold"] == 2:
				out = append(out, h)
			case v.Status == verdict.Trusted:
				t.Errorf("%s: %s trusted through version %v, want 2", step, h, hv.Verdict.ProfileVersions)
			case !strings.Contains(strings.Join(v.Reasons, "\n"), "fact secure_boot"):
				t.Errorf("%s: %s untrusted for %q, want version 1's fact secure_boot", step, h, v.Reasons)
			}
		}
		return out
	}
	set := func(from string, named []string, f float64) {
		t.Helper()
		if err := eng.SetProfileVersionState(ctx, "gold", 2, from, store.VersionCanary, named, f); err != nil {
			t.Fatal(err)
		}
		if named == nil {
			named = []string{}
		}
		want := map[string]any{"profile": "gold", "version": 2, "from": from, "state": "canary", "hosts": named, "fraction": f}
		if got := lastPayload(pub, attestrpc.EventProfileVersionStateChanged); !cmp.Equal(got, want) {
			t.Errorf("version_state_changed notification = %v, want %v", got, want)
		}
	}

	set(store.VersionCandidate, nil, 0.25)
	quarter := expected(nil, 0.25)
	if len(quarter) == 0 || len(quarter) == n {
		t.Fatalf("a quarter selects %v of %d hosts: the test needs hosts in and out", quarter, n)
	}
	if got := trusted("fraction 0.25"); !cmp.Equal(got, quarter) {
		t.Errorf("fraction 0.25: trusted %v, want the selected %v", got, quarter)
	}

	// A named host outside the fraction is in the canary too.
	var outside string
	for _, h := range hosts {
		if !slices.Contains(quarter, h) {
			outside = h
			break
		}
	}
	set(store.VersionCanary, []string{outside}, 0.25)
	if got, want := trusted("fraction 0.25 and a named host"), expected([]string{outside}, 0.25); !cmp.Equal(got, want) {
		t.Errorf("fraction 0.25 and %s named: trusted %v, want %v", outside, got, want)
	}

	// Raising the fraction keeps every host the quarter had.
	set(store.VersionCanary, nil, 0.6)
	most := expected(nil, 0.6)
	got := trusted("fraction 0.6")
	if !cmp.Equal(got, most) {
		t.Errorf("fraction 0.6: trusted %v, want the selected %v", got, most)
	}
	for _, h := range quarter {
		if !slices.Contains(got, h) {
			t.Errorf("raising the fraction to 0.6 dropped %s", h)
		}
	}
	if len(most) <= len(quarter) {
		t.Errorf("fraction 0.6 selects %v, no more than 0.25 did (%v)", most, quarter)
	}

	// A host enrolled later is in or out by the same rule.
	late := "compute-late"
	enrollHost(late)
	v, err := eng.Attest(ctx, late)
	if err != nil {
		t.Fatal(err)
	}
	if in := inFraction("gold", 2, late, 0.6); (v.Status == verdict.Trusted) != in {
		t.Errorf("host enrolled later: %s (%q), selected by the rule: %v", v.Status, v.Reasons, in)
	}
	hosts = append(hosts, late)

	// Lowering the fraction back to a quarter: the hosts that fall out
	// rely on the version (they require gold and matched it); named
	// hosts do not fall out.
	trusted("before lowering")
	fallOut := func(named []string) []string {
		var out []string
		for _, h := range expected(nil, 0.6) {
			if !slices.Contains(expected(named, 0.25), h) {
				out = append(out, h)
			}
		}
		return out
	}
	for _, named := range [][]string{nil, {most[len(most)-1]}} {
		want := fallOut(named)
		if len(want) == 0 {
			t.Fatalf("lowering 0.6 to 0.25 drops no host: the test needs some")
		}
		rel, err := eng.VersionReliance(ctx, "gold", 2, store.VersionCanary, named, 0.25)
		if err != nil || !cmp.Equal(rel, want) {
			t.Errorf("VersionReliance(lower to 0.25, named %v) = %v, %v; want %v", named, rel, err, want)
		}
	}
	if rel, err := eng.VersionReliance(ctx, "gold", 2, store.VersionCanary, nil, 0.9); err != nil || len(rel) != 0 {
		t.Errorf("VersionReliance(raise to 0.9) = %v, %v; want none", rel, err)
	}
	set(store.VersionCanary, nil, 0.25)
	if got, want := trusted("lowered to 0.25"), expected(nil, 0.25); !cmp.Equal(got, want) {
		t.Errorf("lowered to 0.25: trusted %v, want %v", got, want)
	}
}
