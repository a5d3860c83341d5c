package store_test

import (
	"errors"
	"fmt"
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
			reason   string
			bad      bool
		}{
			{"canary without hosts", 2, "candidate", "canary", nil, store.ReasonCanaryHosts, true},
			{"hosts on approve", 2, "candidate", "approved", []string{"c1"}, store.ReasonHostsNotCanary, true},
			{"unknown state", 2, "candidate", "live", nil, store.ReasonUnknownState, true},
			{"stale from", 2, "approved", "retired", nil, store.ReasonStateChanged, false},
			{"approved back to candidate", 1, "approved", "candidate", nil, store.ReasonInvalidTransition, false},
			{"last approved retired", 1, "approved", "retired", nil, store.ReasonLastApproved, false},
		}
		for _, r := range refused {
			err := s.SetProfileVersionState(ctx, "gold", r.version, r.from, r.to, r.hosts)
			var ve *store.VersionStateError
			if !errors.As(err, &ve) || ve.Reason != r.reason || ve.BadRequest != r.bad {
				t.Errorf("%s: SetProfileVersionState = %v, want reason %s (bad request %v)", r.name, err, r.reason, r.bad)
			}
		}
		if err := s.SetProfileVersionState(ctx, "gold", 9, "candidate", "approved", nil); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("SetProfileVersionState(missing) = %v, want ErrNotFound", err)
		}
		// A candidate is accepted nowhere: adding one changes no verdict.
		if gen, _ := s.ProfilesGeneration(ctx); gen != gen0 {
			t.Errorf("generation moved by adding a candidate or by refused changes: %d → %d", gen0, gen)
		}

		if err := s.SetProfileVersionState(ctx, "gold", 2, "candidate", "canary", []string{"c1"}); err != nil {
			t.Fatal(err)
		}
		v2, _ = s.GetProfileVersion(ctx, "gold", 2)
		if !v2.Accepts("c1") || v2.Accepts("c2") || !cmp.Equal(v2.Hosts, []string{"c1"}) {
			t.Errorf("canary version 2 = %+v, want accepted on c1 only", v2)
		}
		if p, _ := s.GetProfile(ctx, "gold"); p.Body != "v1" {
			t.Errorf("flat body with a canary = %q, want the approved v1", p.Body)
		}
		if err := s.SetProfileVersionState(ctx, "gold", 2, "canary", "approved", nil); err != nil {
			t.Fatal(err)
		}
		if p, _ := s.GetProfile(ctx, "gold"); p.Body != "v2" {
			t.Errorf("flat body after approving v2 = %q, want v2", p.Body)
		}
		if err := s.SetProfileVersionState(ctx, "gold", 1, "approved", "retired", nil); err != nil {
			t.Fatal(err)
		}
		err = s.SetProfileVersionState(ctx, "gold", 1, "retired", "approved", nil)
		if ve := (*store.VersionStateError)(nil); !errors.As(err, &ve) || ve.Reason != store.ReasonInvalidTransition {
			t.Errorf("retired → approved = %v, want invalid_transition", err)
		}
		// The flat API edits the latest approved version in place.
		if err := s.PutProfile(ctx, store.Profile{Name: "gold", Body: "v2 edited"}, store.Replace); err != nil {
			t.Fatal(err)
		}
		if v, _ := s.GetProfileVersion(ctx, "gold", 2); v.Body != "v2 edited" {
			t.Errorf("version 2 after a flat update = %q", v.Body)
		}
		if v, _ := s.GetProfileVersion(ctx, "gold", 1); v.Body != "v1" {
			t.Errorf("retired version 1 changed by a flat update: %q", v.Body)
		}
		if got := goldVersions(t, s); !cmp.Equal(got, map[int]string{1: "retired", 2: "approved"}) {
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
