package store_test

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/big"
	"slices"
	"strconv"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/trustpool/trustpool/attestation-service/internal/store"
)

// goldVersions maps the versions of profile "gold" to their states.
func goldVersions(t *testing.T, s *store.Store) map[int]string {
	t.Helper()
	vs, err := s.ProfileVersions(t.Context(), "gold")
	if err != nil {
		t.Fatal(err)
	}
	out := map[int]string{}
	for _, v := range vs {
		out[v.Version] = v.State
	}
	return out
}

// TestProfileVersions: the life cycle of versions on every database, and
// every refused change with its reason.
func TestProfileVersions(t *testing.T) {
	backends(t, func(t *testing.T, url string) {
		t.Helper()
		ctx := t.Context()
		s := open(t, url)
		if _, err := s.AddProfileVersion(ctx, "gold", "b", "test"); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("AddProfileVersion(missing profile) = %v, want ErrNotFound", err)
		}
		if err := s.PutProfile(ctx, store.Profile{Name: "gold", Body: "v1"}, store.Create); err != nil {
			t.Fatal(err)
		}
		if got := goldVersions(t, s); !cmp.Equal(got, map[int]string{1: "approved"}) {
			t.Fatalf("new profile versions = %v, want 1 approved", got)
		}
		gen0, _ := s.ProfilesGeneration(ctx)
		n, err := s.AddProfileVersion(ctx, "gold", "v2", "learned from c1")
		if err != nil || n != 2 {
			t.Fatalf("AddProfileVersion = %d, %v; want 2", n, err)
		}
		v2, err := s.GetProfileVersion(ctx, "gold", 2)
		if err != nil || v2.State != store.VersionCandidate || v2.Body != "v2" || v2.Source != "learned from c1" || v2.Accepts("c1") {
			t.Fatalf("version 2 = %+v, %v; want a candidate accepted nowhere", v2, err)
		}
		if _, err := s.GetProfileVersion(ctx, "gold", 9); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("GetProfileVersion(9) = %v, want ErrNotFound", err)
		}

		refused := []struct {
			name     string
			version  int
			from, to string
			hosts    []string
			fraction float64
			reason   string
			bad      bool
		}{
			{"canary without hosts or fraction", 2, "candidate", "canary", nil, 0, store.ReasonCanaryHosts, true},
			{"hosts on approve", 2, "candidate", "approved", []string{"c1"}, 0, store.ReasonHostsNotCanary, true},
			{"fraction on approve", 2, "candidate", "approved", nil, 0.5, store.ReasonFractionNotCanary, true},
			{"fraction on candidate", 2, "candidate", "candidate", nil, 0.5, store.ReasonFractionNotCanary, true},
			{"fraction above 1", 2, "candidate", "canary", nil, 1.5, store.ReasonInvalidFraction, true},
			{"negative fraction", 2, "candidate", "canary", []string{"c1"}, -0.1, store.ReasonInvalidFraction, true},
			{"NaN fraction", 2, "candidate", "canary", nil, math.NaN(), store.ReasonInvalidFraction, true},
			{"infinite fraction", 2, "candidate", "canary", nil, math.Inf(1), store.ReasonInvalidFraction, true},
			{"unknown state", 2, "candidate", "live", nil, 0, store.ReasonUnknownState, true},
			{"stale from", 2, "approved", "retired", nil, 0, store.ReasonStateChanged, false},
			{"approved back to candidate", 1, "approved", "candidate", nil, 0, store.ReasonInvalidTransition, false},
			{"last approved retired", 1, "approved", "retired", nil, 0, store.ReasonLastApproved, false},
		}
		for _, r := range refused {
			err := s.SetProfileVersionState(ctx, "gold", r.version, r.from, r.to, r.hosts, r.fraction)
			var ve *store.VersionStateError
			if !errors.As(err, &ve) || ve.Reason != r.reason || ve.BadRequest != r.bad {
				t.Errorf("%s: SetProfileVersionState = %v, want reason %s (bad request %v)", r.name, err, r.reason, r.bad)
			}
		}
		if err := s.SetProfileVersionState(ctx, "gold", 9, "candidate", "approved", nil, 0); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("SetProfileVersionState(missing) = %v, want ErrNotFound", err)
		}
		// A candidate is accepted nowhere: adding one changes no verdict.
		if gen, _ := s.ProfilesGeneration(ctx); gen != gen0 {
			t.Errorf("generation moved by adding a candidate or by refused changes: %d → %d", gen0, gen)
		}

		if err := s.SetProfileVersionState(ctx, "gold", 2, "candidate", "canary", []string{"c1"}, 0); err != nil {
			t.Fatal(err)
		}
		v2, _ = s.GetProfileVersion(ctx, "gold", 2)
		if !v2.Accepts("c1") || v2.Accepts("c2") || !cmp.Equal(v2.Hosts, []string{"c1"}) {
			t.Errorf("canary version 2 = %+v, want accepted on c1 only", v2)
		}
		if p, _ := s.GetProfile(ctx, "gold"); p.Body != "v1" {
			t.Errorf("flat body with a canary = %q, want the approved v1", p.Body)
		}
		if err := s.SetProfileVersionState(ctx, "gold", 2, "canary", "approved", nil, 0); err != nil {
			t.Fatal(err)
		}
		if p, _ := s.GetProfile(ctx, "gold"); p.Body != "v2" {
			t.Errorf("flat body after approving v2 = %q, want v2", p.Body)
		}
		if err := s.SetProfileVersionState(ctx, "gold", 1, "approved", "retired", nil, 0); err != nil {
			t.Fatal(err)
		}
		err = s.SetProfileVersionState(ctx, "gold", 1, "retired", "approved", nil, 0)
		if ve := (*store.VersionStateError)(nil); !errors.As(err, &ve) || ve.Reason != store.ReasonInvalidTransition {
			t.Errorf("retired → approved = %v, want invalid_transition", err)
		}
		// A flat update is a new approved version that retires the one it
		// replaces.
		if err := s.PutProfile(ctx, store.Profile{Name: "gold", Body: "v2 edited"}, store.Replace); err != nil {
			t.Fatal(err)
		}
		if v, _ := s.GetProfileVersion(ctx, "gold", 2); v.Body != "v2" {
			t.Errorf("version 2 after a flat update = %q, want it unchanged", v.Body)
		}
		if got := goldVersions(t, s); !cmp.Equal(got, map[int]string{1: "retired", 2: "retired", 3: "approved"}) {
			t.Errorf("versions = %v", got)
		}
		if err := s.DeleteProfile(ctx, "gold"); err != nil {
			t.Fatal(err)
		}
		if all, err := s.AllProfileVersions(ctx); err != nil || len(all) != 0 {
			t.Errorf("versions after deleting the profile = %v, %v", all, err)
		}
		// A profile created again under the name starts at version 1.
		if err := s.PutProfile(ctx, store.Profile{Name: "gold", Body: "again"}, store.Create); err != nil {
			t.Fatal(err)
		}
		if got := goldVersions(t, s); !cmp.Equal(got, map[int]string{1: "approved"}) {
			t.Errorf("versions of the re-created profile = %v", got)
		}
	})
}

// TestMigrationProfileVersions: a database at version 5 keeps its
// profiles, each as version 1, approved, with its document unchanged.
func TestMigrationProfileVersions(t *testing.T) {
	backends(t, func(t *testing.T, url string) {
		t.Helper()
		ctx := t.Context()
		old, err := store.OpenAtVersion(ctx, url, 5)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range []store.Profile{{Name: "gold", Body: "gold body"}, {Name: "silver", Body: "silver body"}} {
			if err := old.Exec(ctx, "INSERT INTO profiles (name, body, updated_at) VALUES (?, ?, ?)", p.Name, p.Body, 1000); err != nil {
				t.Fatal(err)
			}
		}
		old.Close()
		s := open(t, url)
		all, err := s.AllProfileVersions(ctx)
		if err != nil {
			t.Fatal(err)
		}
		type row struct {
			Profile, State, Body string
			Version              int
		}
		var got []row
		for _, v := range all {
			got = append(got, row{v.Profile, v.State, v.Body, v.Version})
		}
		want := []row{{"gold", "approved", "gold body", 1}, {"silver", "approved", "silver body", 1}}
		if d := cmp.Diff(want, got); d != "" {
			t.Errorf("versions after migration (-want +got):\n%s", d)
		}
		if p, err := s.GetProfile(ctx, "gold"); err != nil || p.Body != "gold body" {
			t.Errorf("flat profile after migration = %+v, %v", p, err)
		}
		if n, err := s.AddProfileVersion(ctx, "gold", "next", "test"); err != nil || n != 2 {
			t.Errorf("next version after migration = %d, %v", n, err)
		}
	})
}

// TestFlatUpdateVersions: a flat update of an existing profile whose
// document changes stores a new approved version and retires the latest
// approved one in the same transaction; other approved versions and
// candidates stay as they are; the same document again changes nothing;
// import (upsert) takes the same path.
func TestFlatUpdateVersions(t *testing.T) {
	backends(t, func(t *testing.T, url string) {
		t.Helper()
		ctx := t.Context()
		s := open(t, url)
		w, err := s.PutFlatProfile(ctx, store.Profile{Name: "gold", Body: "v1"}, store.Create)
		if want := (store.FlatWrite{Created: true, Changed: true, Version: 1, Source: "profile API"}); err != nil || w != want {
			t.Fatalf("create = %+v, %v; want %+v", w, err, want)
		}
		// A rollout in progress: version 2 approved next to 1, a
		// candidate 3.
		if _, err := s.AddProfileVersion(ctx, "gold", "v2", "test"); err != nil {
			t.Fatal(err)
		}
		if err := s.SetProfileVersionState(ctx, "gold", 2, "candidate", "approved", nil, 0); err != nil {
			t.Fatal(err)
		}
		if _, err := s.AddProfileVersion(ctx, "gold", "v3", "test"); err != nil {
			t.Fatal(err)
		}
		gen0, _ := s.ProfilesGeneration(ctx)
		w, err = s.PutFlatProfile(ctx, store.Profile{Name: "gold", Body: "v4"}, store.Replace)
		if want := (store.FlatWrite{Changed: true, Version: 4, Retired: 2, Source: "profile API"}); err != nil || w != want {
			t.Fatalf("update = %+v, %v; want %+v", w, err, want)
		}
		if got := goldVersions(t, s); !cmp.Equal(got, map[int]string{1: "approved", 2: "retired", 3: "candidate", 4: "approved"}) {
			t.Errorf("versions after a flat update = %v", got)
		}
		for n, body := range map[int]string{1: "v1", 2: "v2", 3: "v3", 4: "v4"} {
			if v, err := s.GetProfileVersion(ctx, "gold", n); err != nil || v.Body != body {
				t.Errorf("version %d = %q, %v; want %q", n, v.Body, err, body)
			}
		}
		if v, _ := s.GetProfileVersion(ctx, "gold", 4); v.Source != "profile API" {
			t.Errorf("version 4 source = %q", v.Source)
		}
		if p, _ := s.GetProfile(ctx, "gold"); p.Body != "v4" {
			t.Errorf("flat body = %q, want v4", p.Body)
		}
		gen1, _ := s.ProfilesGeneration(ctx)
		if gen1 == gen0 {
			t.Errorf("generation not moved by a flat update")
		}
		// The same document again: nothing stored, generation unmoved.
		for _, mode := range []store.PutMode{store.Replace, store.Upsert} {
			w, err = s.PutFlatProfile(ctx, store.Profile{Name: "gold", Body: "v4"}, mode)
			if want := (store.FlatWrite{Version: 4}); err != nil || w != want {
				t.Errorf("same document (mode %d) = %+v, %v; want %+v", mode, w, err, want)
			}
		}
		if got := goldVersions(t, s); len(got) != 4 {
			t.Errorf("versions after writing the same document = %v", got)
		}
		if gen, _ := s.ProfilesGeneration(ctx); gen != gen1 {
			t.Errorf("generation moved by writing the same document: %d → %d", gen1, gen)
		}
		// Import replaces through the same path.
		w, err = s.PutFlatProfile(ctx, store.Profile{Name: "gold", Body: "v5"}, store.Upsert)
		if want := (store.FlatWrite{Changed: true, Version: 5, Retired: 4, Source: "profile API"}); err != nil || w != want {
			t.Errorf("upsert = %+v, %v; want %+v", w, err, want)
		}
		if got := goldVersions(t, s); !cmp.Equal(got, map[int]string{1: "approved", 2: "retired", 3: "candidate", 4: "retired", 5: "approved"}) {
			t.Errorf("versions after an upsert = %v", got)
		}
	})
}

// TestConcurrentFlatUpdates: flat updates of one profile at once never
// both replace the same version: each either stores its own version,
// retiring a distinct predecessor, or is refused with state_changed; the
// profile keeps exactly one approved version.
func TestConcurrentFlatUpdates(t *testing.T) {
	backends(t, func(t *testing.T, url string) {
		t.Helper()
		ctx := t.Context()
		s := open(t, url)
		if err := s.PutProfile(ctx, store.Profile{Name: "gold", Body: "v1"}, store.Create); err != nil {
			t.Fatal(err)
		}
		const writers, rounds = 2, 10
		var conflicts int
		for round := range rounds {
			var (
				wg      sync.WaitGroup
				mu      sync.Mutex
				writes  []store.FlatWrite
				refused int
			)
			for i := range writers {
				wg.Go(func() {
					w, err := s.PutFlatProfile(ctx, store.Profile{Name: "gold", Body: fmt.Sprintf("round %d writer %d", round, i)}, store.Replace)
					mu.Lock()
					defer mu.Unlock()
					var ve *store.VersionStateError
					switch {
					case errors.As(err, &ve) && ve.Reason == store.ReasonStateChanged:
						refused++
					case err != nil:
						t.Errorf("round %d: PutFlatProfile: %v", round, err)
					default:
						writes = append(writes, w)
					}
				})
			}
			wg.Wait()
			conflicts += refused
			if len(writes)+refused != writers || len(writes) == 0 {
				t.Fatalf("round %d: %d writes, %d refused", round, len(writes), refused)
			}
			if len(writes) == 2 && (writes[0].Version == writes[1].Version || writes[0].Retired == writes[1].Retired) {
				t.Errorf("round %d: both writes made or retired the same version: %+v", round, writes)
			}
			var approved []int
			for n, st := range goldVersions(t, s) {
				if st == store.VersionApproved {
					approved = append(approved, n)
				}
			}
			if len(approved) != 1 {
				t.Fatalf("round %d: approved versions %v, want exactly one", round, approved)
			}
			p, err := s.GetProfile(ctx, "gold")
			if err != nil {
				t.Fatal(err)
			}
			if v, _ := s.GetProfileVersion(ctx, "gold", approved[0]); v.Body != p.Body {
				t.Errorf("round %d: flat body %q, approved version %d holds %q", round, p.Body, approved[0], v.Body)
			}
		}
		t.Logf("%d of %d updates refused as concurrent", conflicts, writers*rounds)
	})
}

// TestConcurrentVersionsGetDistinctNumbers: versions added at once each get
// their own number, none is lost.
func TestConcurrentVersionsGetDistinctNumbers(t *testing.T) {
	backends(t, func(t *testing.T, url string) {
		t.Helper()
		ctx := t.Context()
		s := open(t, url)
		if err := s.PutProfile(ctx, store.Profile{Name: "gold", Body: "v1"}, store.Create); err != nil {
			t.Fatal(err)
		}
		const writers = 4
		var wg sync.WaitGroup
		errs := make(chan error, writers)
		for i := range writers {
			wg.Go(func() {
				if _, err := s.AddProfileVersion(ctx, "gold", fmt.Sprint("body ", i), "test"); err != nil {
					errs <- err
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Errorf("AddProfileVersion: %v", err)
		}
		if got := goldVersions(t, s); len(got) != writers+1 {
			t.Errorf("versions = %v, want %d", got, writers+1)
		}
	})
}

// selectedByRule is the canary fraction rule computed independently of
// the store: SHA-256(profile NUL version NUL host), its first 8 bytes as a
// big-endian integer h, selected when h/2^64 < fraction (exact rationals).
func selectedByRule(profile string, version int, host string, fraction float64) bool {
	sum := sha256.Sum256([]byte(profile + "\x00" + strconv.Itoa(version) + "\x00" + host))
	h := new(big.Rat).SetFrac(new(big.Int).SetUint64(binary.BigEndian.Uint64(sum[:8])), new(big.Int).Lsh(big.NewInt(1), 64))
	return h.Cmp(new(big.Rat).SetFloat64(fraction)) < 0
}

// TestCanarySelects: the fraction rule selects what the rule computed
// independently selects, about the share asked for, none at 0 and every
// host at 1; raising the fraction only adds hosts; another version of the
// profile selects other hosts.
func TestCanarySelects(t *testing.T) {
	const hosts = 2000
	fractions := []float64{0, 0.01, 0.1, 1.0 / 3, 0.5, 0.9, 1}
	prev := map[string]bool{}
	for _, f := range fractions {
		n, sameAsV3 := 0, 0
		for i := range hosts {
			h := fmt.Sprintf("compute-%04d", i)
			got := store.CanarySelects("gold", 2, h, f)
			if want := selectedByRule("gold", 2, h, f); got != want {
				t.Fatalf("CanarySelects(gold, 2, %s, %v) = %v, rule says %v", h, f, got, want)
			}
			if prev[h] && !got {
				t.Errorf("fraction %v drops %s, selected at a lower fraction", f, h)
			}
			if got {
				n++
				prev[h] = true
				if store.CanarySelects("gold", 3, h, f) {
					sameAsV3++
				}
			}
		}
		share := float64(n) / hosts
		if math.Abs(share-f) > 0.04 {
			t.Errorf("fraction %v selects %d of %d hosts (%.3f)", f, n, hosts, share)
		}
		if f > 0 && f < 0.5 && sameAsV3 == n {
			t.Errorf("fraction %v: version 3 selects the same %d hosts as version 2", f, n)
		}
	}
	for _, f := range []float64{-1, math.NaN(), 0} {
		if store.CanarySelects("gold", 2, "compute-0001", f) {
			t.Errorf("CanarySelects(fraction %v) = true", f)
		}
	}
}

// TestCanaryFraction: a canary's fraction round-trips exactly on every
// database, changes canary to canary, is cleared when the version leaves
// canary, and CanaryHosts names the named hosts that exist and the hosts
// the fraction selects.
func TestCanaryFraction(t *testing.T) {
	backends(t, func(t *testing.T, url string) {
		t.Helper()
		ctx := t.Context()
		s := open(t, url)
		var names []string
		for i := range 40 {
			h := &store.Host{Name: fmt.Sprintf("compute-%02d", i)}
			if err := s.PutHost(ctx, h); err != nil {
				t.Fatal(err)
			}
			names = append(names, h.Name)
		}
		if err := s.PutProfile(ctx, store.Profile{Name: "gold", Body: "v1"}, store.Create); err != nil {
			t.Fatal(err)
		}
		if _, err := s.AddProfileVersion(ctx, "gold", "v2", "test"); err != nil {
			t.Fatal(err)
		}
		inCanary := func(hosts []string, f float64) []string {
			out := []string{}
			for _, h := range names {
				if slices.Contains(hosts, h) || selectedByRule("gold", 2, h, f) {
					out = append(out, h)
				}
			}
			return out
		}
		check := func(step, state string, hosts []string, f float64) {
			t.Helper()
			v, err := s.GetProfileVersion(ctx, "gold", 2)
			if err != nil {
				t.Fatal(err)
			}
			if v.State != state || !cmp.Equal(v.Hosts, hosts) || v.Fraction != f {
				t.Errorf("%s: version 2 = %s hosts %v fraction %v; want %s hosts %v fraction %v", step, v.State, v.Hosts, v.Fraction, state, hosts, f)
			}
			all, err := s.ProfileVersions(ctx, "gold")
			if err != nil || len(all) != 2 || all[1].Fraction != f {
				t.Errorf("%s: listed versions %+v, %v; want version 2 with fraction %v", step, all, err, f)
			}
			want := []string{}
			if state == store.VersionCanary {
				want = inCanary(hosts, f)
			}
			if got, err := s.CanaryHosts(ctx, v); err != nil || !cmp.Equal(got, want) {
				t.Errorf("%s: CanaryHosts = %v, %v; want %v", step, got, err, want)
			}
		}
		third := 1.0 / 3 // no short decimal: must come back bit for bit
		if err := s.SetProfileVersionState(ctx, "gold", 2, "candidate", "canary", nil, third); err != nil {
			t.Fatal(err)
		}
		check("fraction only", store.VersionCanary, nil, third)
		if n := len(inCanary(nil, third)); n == 0 || n == len(names) {
			t.Fatalf("a third selects %d of %d hosts: the test needs some in and some out", n, len(names))
		}
		// A named host the fraction does not select, and one that does
		// not exist (not listed as in the canary).
		var outside string
		for _, h := range names {
			if !selectedByRule("gold", 2, h, 0.1) {
				outside = h
				break
			}
		}
		if err := s.SetProfileVersionState(ctx, "gold", 2, "canary", "canary", []string{outside, "gone"}, 0.1); err != nil {
			t.Fatal(err)
		}
		check("named hosts and a lower fraction", store.VersionCanary, []string{outside, "gone"}, 0.1)
		if err := s.SetProfileVersionState(ctx, "gold", 2, "canary", "canary", []string{outside}, 0); err != nil {
			t.Fatal(err)
		}
		check("named hosts only", store.VersionCanary, []string{outside}, 0)
		if err := s.SetProfileVersionState(ctx, "gold", 2, "canary", "canary", nil, 1); err != nil {
			t.Fatal(err)
		}
		check("fraction 1", store.VersionCanary, nil, 1)
		if err := s.SetProfileVersionState(ctx, "gold", 2, "canary", "candidate", nil, 0); err != nil {
			t.Fatal(err)
		}
		check("back to candidate", store.VersionCandidate, nil, 0)
		if err := s.SetProfileVersionState(ctx, "gold", 2, "candidate", "canary", []string{outside}, 0.5); err != nil {
			t.Fatal(err)
		}
		if err := s.SetProfileVersionState(ctx, "gold", 2, "canary", "approved", nil, 0); err != nil {
			t.Fatal(err)
		}
		check("approved", store.VersionApproved, nil, 0)
	})
}

// TestMigrationCanaryFraction: a database at version 6 keeps its versions
// (a canary keeps its named hosts, with no fraction), and a fraction can
// be set after the migration.
func TestMigrationCanaryFraction(t *testing.T) {
	backends(t, func(t *testing.T, url string) {
		t.Helper()
		ctx := t.Context()
		old, err := store.OpenAtVersion(ctx, url, 6)
		if err != nil {
			t.Fatal(err)
		}
		for _, stmt := range []string{
			"INSERT INTO profiles (name, body, updated_at) VALUES ('gold', 'v1', 1000)",
			`INSERT INTO profile_versions (profile, version, state, hosts, body, source, created_at, updated_at)
				VALUES ('gold', 1, 'approved', NULL, 'v1', 'test', 1000, 1000)`,
			`INSERT INTO profile_versions (profile, version, state, hosts, body, source, created_at, updated_at)
				VALUES ('gold', 2, 'canary', '["c1"]', 'v2', 'test', 1000, 1000)`,
		} {
			if err := old.Exec(ctx, stmt); err != nil {
				t.Fatal(err)
			}
		}
		old.Close()
		s := open(t, url)
		if v, err := s.SchemaVersion(ctx); err != nil || v != store.LatestSchema {
			t.Fatalf("schema version %d, %v; want %d", v, err, store.LatestSchema)
		}
		v2, err := s.GetProfileVersion(ctx, "gold", 2)
		if err != nil || v2.State != store.VersionCanary || !cmp.Equal(v2.Hosts, []string{"c1"}) || v2.Fraction != 0 {
			t.Fatalf("canary after migration = %+v, %v; want hosts [c1], no fraction", v2, err)
		}
		if err := s.SetProfileVersionState(ctx, "gold", 2, "canary", "canary", []string{"c1"}, 0.25); err != nil {
			t.Fatal(err)
		}
		if v2, err = s.GetProfileVersion(ctx, "gold", 2); err != nil || v2.Fraction != 0.25 {
			t.Errorf("fraction after migration = %+v, %v; want 0.25", v2, err)
		}
	})
}

// raceRounds is how often the concurrent state-change tests race two
// admins: enough that, without the profile lock, both pass the checks in
// some round on MariaDB and PostgreSQL.
const raceRounds = 30

// race runs a and b at once, each from its own store handle (two service
// instances), started together.
func race(a, b func()) {
	var wg sync.WaitGroup
	start := make(chan struct{})
	wg.Go(func() { <-start; a() })
	wg.Go(func() { <-start; b() })
	close(start)
	wg.Wait()
}

// refusal returns the reason of a *store.VersionStateError ("" for nil,
// the error text for any other error).
func refusal(err error) string {
	var ve *store.VersionStateError
	switch {
	case err == nil:
		return ""
	case errors.As(err, &ve):
		return ve.Reason
	}
	return err.Error()
}

// TestConcurrentRetireKeepsAnApprovedVersion: two admins retiring at once
// the only two approved versions of a profile never leave it without an
// approved version: one retire succeeds, the other is refused
// (last_approved_version, or state_changed), and the flat body is the
// remaining approved version's.
func TestConcurrentRetireKeepsAnApprovedVersion(t *testing.T) {
	backends(t, func(t *testing.T, url string) {
		t.Helper()
		ctx := t.Context()
		s1, s2 := open(t, url), open(t, url)
		for round := range raceRounds {
			name := fmt.Sprintf("gold-%d", round)
			if err := s1.PutProfile(ctx, store.Profile{Name: name, Body: "v1"}, store.Create); err != nil {
				t.Fatal(err)
			}
			if _, err := s1.AddProfileVersion(ctx, name, "v2", "test"); err != nil {
				t.Fatal(err)
			}
			if err := s1.SetProfileVersionState(ctx, name, 2, store.VersionCandidate, store.VersionApproved, nil, 0); err != nil {
				t.Fatal(err)
			}
			var err1, err2 error
			race(func() {
				err1 = s1.SetProfileVersionState(ctx, name, 1, store.VersionApproved, store.VersionRetired, nil, 0)
			},
				func() {
					err2 = s2.SetProfileVersionState(ctx, name, 2, store.VersionApproved, store.VersionRetired, nil, 0)
				})
			vs, err := s1.ProfileVersions(ctx, name)
			if err != nil {
				t.Fatal(err)
			}
			var approved []store.ProfileVersion
			for _, v := range vs {
				if v.State == store.VersionApproved {
					approved = append(approved, v)
				}
			}
			if len(approved) != 1 {
				t.Fatalf("round %d: retire v1: %v, retire v2: %v; %d approved versions left, want 1", round, err1, err2, len(approved))
			}
			loser := err1
			if err1 == nil {
				loser = err2
			}
			if (err1 == nil) == (err2 == nil) {
				t.Fatalf("round %d: retire v1: %v, retire v2: %v; want exactly one to succeed", round, err1, err2)
			}
			if r := refusal(loser); r != store.ReasonLastApproved && r != store.ReasonStateChanged {
				t.Errorf("round %d: losing retire refused with %q, want %s or %s", round, r, store.ReasonLastApproved, store.ReasonStateChanged)
			}
			if p, err := s1.GetProfile(ctx, name); err != nil || p.Body != approved[0].Body {
				t.Errorf("round %d: flat body %q (%v), want the approved version's %q", round, p.Body, err, approved[0].Body)
			}
		}
	})
}

// TestConcurrentCanaryDemoteAndWiden: one admin demotes canary version 2
// to candidate while another widens its canary (canary to canary). The
// outcome is that of one serial order: either one call succeeds, the
// other is refused with state_changed and the version is in the winner's
// state; or both succeed, which only widen-then-demote allows, and the
// version is a candidate with neither hosts nor fraction. Never a canary
// after a successful demotion.
func TestConcurrentCanaryDemoteAndWiden(t *testing.T) {
	backends(t, func(t *testing.T, url string) {
		t.Helper()
		ctx := t.Context()
		s1, s2 := open(t, url), open(t, url)
		var bothSucceeded, oneRefused int
		for round := range raceRounds {
			name := fmt.Sprintf("gold-%d", round)
			if err := s1.PutProfile(ctx, store.Profile{Name: name, Body: "v1"}, store.Create); err != nil {
				t.Fatal(err)
			}
			if _, err := s1.AddProfileVersion(ctx, name, "v2", "test"); err != nil {
				t.Fatal(err)
			}
			if err := s1.SetProfileVersionState(ctx, name, 2, store.VersionCandidate, store.VersionCanary, []string{"c1"}, 0); err != nil {
				t.Fatal(err)
			}
			var demote, widen error
			race(func() {
				demote = s1.SetProfileVersionState(ctx, name, 2, store.VersionCanary, store.VersionCandidate, nil, 0)
			},
				func() {
					widen = s2.SetProfileVersionState(ctx, name, 2, store.VersionCanary, store.VersionCanary, []string{"c1", "c2"}, 0.5)
				})
			got, err := s1.GetProfileVersion(ctx, name, 2)
			if err != nil {
				t.Fatal(err)
			}
			type state struct {
				State    string
				Hosts    []string
				Fraction float64
			}
			demoted := state{State: store.VersionCandidate}
			widened := state{State: store.VersionCanary, Hosts: []string{"c1", "c2"}, Fraction: 0.5}
			var want state
			switch {
			case demote == nil && widen == nil:
				bothSucceeded++
				want = demoted
			case demote == nil && refusal(widen) == store.ReasonStateChanged:
				oneRefused++
				want = demoted
			case widen == nil && refusal(demote) == store.ReasonStateChanged:
				oneRefused++
				want = widened
			default:
				t.Fatalf("round %d: demote: %v, widen: %v; want both to succeed or one refused with %s", round, demote, widen, store.ReasonStateChanged)
			}
			if diff := cmp.Diff(want, state{got.State, got.Hosts, got.Fraction}); diff != "" {
				t.Fatalf("round %d: demote: %v, widen: %v; version 2 (-want +got):\n%s", round, demote, widen, diff)
			}
		}
		t.Logf("%d rounds both succeeded (widen, then demote), %d rounds one was refused", bothSucceeded, oneRefused)
	})
}

// TestConcurrentApprovalsKeepFlatBody: two admins approving two
// candidates at once leave the flat body (the profile API's view) equal
// to the latest approved version's document, not to whichever approval
// computed it last.
func TestConcurrentApprovalsKeepFlatBody(t *testing.T) {
	backends(t, func(t *testing.T, url string) {
		t.Helper()
		ctx := t.Context()
		s1, s2 := open(t, url), open(t, url)
		for round := range raceRounds {
			name := fmt.Sprintf("gold-%d", round)
			if err := s1.PutProfile(ctx, store.Profile{Name: name, Body: "v1"}, store.Create); err != nil {
				t.Fatal(err)
			}
			for _, body := range []string{"v2", "v3"} {
				if _, err := s1.AddProfileVersion(ctx, name, body, "test"); err != nil {
					t.Fatal(err)
				}
			}
			var err2, err3 error
			race(func() {
				err2 = s1.SetProfileVersionState(ctx, name, 2, store.VersionCandidate, store.VersionApproved, nil, 0)
			}, func() {
				err3 = s2.SetProfileVersionState(ctx, name, 3, store.VersionCandidate, store.VersionApproved, nil, 0)
			})
			if err2 != nil || err3 != nil {
				t.Fatalf("round %d: approve v2: %v, approve v3: %v", round, err2, err3)
			}
			p, err := s1.GetProfile(ctx, name)
			if err != nil {
				t.Fatal(err)
			}
			if p.Body != "v3" || p.Version != 3 {
				t.Fatalf("round %d: flat profile holds %q (version %d), want the latest approved version 3's \"v3\"", round, p.Body, p.Version)
			}
		}
	})
}
