package store_test

import (
	"context"
	"errors"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/trustpool/trustpool/attestation-service/internal/store"
	"github.com/trustpool/trustpool/internal/servicetest"
)

func TestMain(m *testing.M) { servicetest.Main(m) }

// backends runs the conformance suite on every supported database.
func backends(t *testing.T, fn func(t *testing.T, url string)) {
	t.Helper()
	t.Run("sqlite", func(t *testing.T) {
		fn(t, "sqlite:///"+filepath.Join(t.TempDir(), "attestation.db"))
	})
	t.Run("mariadb", func(t *testing.T) {
		db := servicetest.MariaDB(t)
		fn(t, db.URL)
	})
}

func open(t *testing.T, url string) *store.Store {
	t.Helper()
	s, err := store.Open(t.Context(), url)
	if err != nil {
		t.Fatalf("Open(%s): %v", url, err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestConformance(t *testing.T) {
	backends(t, func(t *testing.T, url string) {
		t.Helper()
		ctx := t.Context()
		s := open(t, url)

		// Hosts.
		if _, err := s.GetHost(ctx, "c1"); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("GetHost(missing) = %v, want ErrNotFound", err)
		}
		h := store.Host{Name: "c1", PendingEKPublic: []byte{1, 2}, PendingAKPublic: []byte{3}, AgentVersion: "1.0"}
		if err := s.PutHost(ctx, &h); err != nil {
			t.Fatal(err)
		}
		h.EKPublic, h.AKPublic, h.Activated = h.PendingEKPublic, h.PendingAKPublic, true
		h.PendingEKPublic, h.PendingAKPublic = nil, nil
		h.Profiles = []string{"a", "b"}
		if err := s.PutHost(ctx, &h); err != nil {
			t.Fatal(err)
		}
		got, err := s.GetHost(ctx, "c1")
		if err != nil {
			t.Fatal(err)
		}
		opts := cmpopts.IgnoreFields(store.Host{}, "CreatedAt", "UpdatedAt")
		if diff := cmp.Diff(h, got.Host, opts, cmpopts.EquateEmpty()); diff != "" {
			t.Errorf("GetHost mismatch (-want +got):\n%s", diff)
		}
		if got.CreatedAt.IsZero() {
			t.Error("CreatedAt not set")
		}
		// A nil profile list (use the default) stays nil, distinct from empty.
		h.Profiles = nil
		if err := s.PutHost(ctx, &h); err != nil {
			t.Fatal(err)
		}
		if got, _ := s.GetHost(ctx, "c1"); got.Profiles != nil {
			t.Errorf("Profiles = %v, want nil", got.Profiles)
		}
		if err := s.PutHost(ctx, &store.Host{Name: "c0"}); err != nil {
			t.Fatal(err)
		}
		list, err := s.ListHosts(ctx)
		if err != nil || len(list) != 2 || list[0].Name != "c0" || list[1].Name != "c1" {
			t.Fatalf("ListHosts = %v, %v", list, err)
		}

		// State, sequence numbers and verdicts with history.
		if err := s.SaveState(ctx, "c1", []byte(`{"x":1}`)); err != nil {
			t.Fatal(err)
		}
		if err := s.SaveState(ctx, "nope", nil); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("SaveState(missing) = %v", err)
		}
		for want := uint64(1); want <= 3; want++ {
			seq, err := s.NextSeq(ctx, "c1")
			if err != nil || seq != want {
				t.Fatalf("NextSeq = %d, %v; want %d", seq, err, want)
			}
		}
		hist := &store.HistoryEntry{Status: "trusted", Profiles: []string{"p"}, Seq: 3}
		if err := s.SaveVerdict(ctx, "c1", []byte(`{"verdict":"v"}`), []byte(`{"y":2}`), hist); err != nil {
			t.Fatal(err)
		}
		if err := s.SaveVerdict(ctx, "c1", []byte(`{"verdict":"w"}`), []byte(`{"y":3}`),
			&store.HistoryEntry{Status: "untrusted", Reasons: []string{"r1"}, Seq: 4}); err != nil {
			t.Fatal(err)
		}
		got, _ = s.GetHost(ctx, "c1")
		if string(got.Verdict) != `{"verdict":"w"}` || string(got.State) != `{"y":3}` {
			t.Errorf("verdict/state = %s / %s", got.Verdict, got.State)
		}
		hs, err := s.History(ctx, "c1", 10)
		if err != nil || len(hs) != 2 || hs[0].Status != "untrusted" || hs[0].Reasons[0] != "r1" || hs[1].Profiles[0] != "p" {
			t.Errorf("History = %+v, %v", hs, err)
		}
		// Deleting a host keeps its sequence number: no reuse after re-enrollment.
		if err := s.DeleteHost(ctx, "c1"); err != nil {
			t.Fatal(err)
		}
		if err := s.DeleteHost(ctx, "c1"); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("second DeleteHost = %v", err)
		}
		if seq, err := s.NextSeq(ctx, "c1"); err != nil || seq != 4 {
			t.Errorf("NextSeq after delete = %d, %v; want 4", seq, err)
		}

		// Profiles.
		p := store.Profile{Name: "p1", Body: "[[profile]]\nname = \"p1\"\n"}
		if err := s.PutProfile(ctx, p, store.Replace); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("Replace(missing) = %v", err)
		}
		if err := s.PutProfile(ctx, p, store.Create); err != nil {
			t.Fatal(err)
		}
		if err := s.PutProfile(ctx, p, store.Create); !errors.Is(err, store.ErrExists) {
			t.Errorf("Create(existing) = %v", err)
		}
		p.Body += "# v2\n"
		if err := s.PutProfile(ctx, p, store.Replace); err != nil {
			t.Fatal(err)
		}
		if gp, err := s.GetProfile(ctx, "p1"); err != nil || gp.Body != p.Body {
			t.Errorf("GetProfile = %+v, %v", gp, err)
		}
		if ps, err := s.ListProfiles(ctx); err != nil || len(ps) != 1 {
			t.Errorf("ListProfiles = %v, %v", ps, err)
		}
		if err := s.DeleteProfile(ctx, "p1"); err != nil {
			t.Fatal(err)
		}
		if _, err := s.GetProfile(ctx, "p1"); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("GetProfile(deleted) = %v", err)
		}

		// Audit.
		for _, a := range []string{"profile.create", "host.delete"} {
			if err := s.AddAudit(ctx, store.AuditRecord{Action: a, UserID: "u", Outcome: "ok"}); err != nil {
				t.Fatal(err)
			}
		}
		if as, err := s.Audit(ctx, 10); err != nil || len(as) != 2 || as[0].Action != "host.delete" {
			t.Errorf("Audit = %+v, %v", as, err)
		}
	})
}

func TestReopenKeepsDataAndMigratesOnce(t *testing.T) {
	backends(t, func(t *testing.T, url string) {
		t.Helper()
		ctx := t.Context()
		s := open(t, url)
		if err := s.PutProfile(ctx, store.Profile{Name: "keep", Body: "x"}, store.Create); err != nil {
			t.Fatal(err)
		}
		if _, err := s.NextSeq(ctx, "h"); err != nil {
			t.Fatal(err)
		}
		s.Close()
		s2 := open(t, url)
		if v, err := s2.SchemaVersion(ctx); err != nil || v != store.LatestSchema {
			t.Errorf("SchemaVersion = %d, %v", v, err)
		}
		if _, err := s2.GetProfile(ctx, "keep"); err != nil {
			t.Errorf("profile lost on reopen: %v", err)
		}
		if seq, _ := s2.NextSeq(ctx, "h"); seq != 2 {
			t.Errorf("seq after reopen = %d, want 2", seq)
		}
	})
}

func TestSQLiteWAL(t *testing.T) {
	p := filepath.Join(t.TempDir(), "a.db")
	s := open(t, "sqlite:///"+p)
	_ = s
	// The WAL file exists once something was written.
	if err := s.PutProfile(context.Background(), store.Profile{Name: "x", Body: "y"}, store.Upsert); err != nil {
		t.Fatal(err)
	}
	if _, err := filepath.Glob(p + "-wal"); err != nil {
		t.Fatal(err)
	}
	m, _ := filepath.Glob(p + "-wal")
	if len(m) != 1 {
		t.Errorf("no %s-wal: journal mode is not WAL", p)
	}
}

func TestParseURL(t *testing.T) {
	tests := []struct {
		url, driver, dsnPrefix string
		wantErr                bool
	}{
		{"sqlite:////var/lib/trustpool/a.db", "sqlite3", "file:/var/lib/trustpool/a.db?_journal_mode=WAL", false},
		{"sqlite:///rel.db", "sqlite3", "file:rel.db?", false},
		{"mysql+pymysql://u:p%40w@db.example:3307/trustpool?charset=utf8", "mysql", "u:p@w@tcp(db.example:3307)/trustpool", false},
		{"mysql://u:p@db/trustpool", "mysql", "u:p@tcp(db:3306)/trustpool", false},
		{"mysql://u:p@db/", "", "", true},
		{"mysql://u:p@db/x?sslmode=on", "", "", true},
		{"postgresql://u@h/db", "", "", true},
		{"sqlite://", "", "", true},
		{"/var/lib/a.db", "", "", true},
		{"oracle://x/y", "", "", true},
	}
	for _, tc := range tests {
		driver, dsn, err := store.ParseURL(tc.url)
		if (err != nil) != tc.wantErr {
			t.Errorf("ParseURL(%q) error = %v, want error %v", tc.url, err, tc.wantErr)
			continue
		}
		if err != nil {
			if !errors.Is(err, store.ErrURL) {
				t.Errorf("ParseURL(%q) error %v does not wrap ErrURL", tc.url, err)
			}
			continue
		}
		if driver != tc.driver || len(dsn) < len(tc.dsnPrefix) || dsn[:len(tc.dsnPrefix)] != tc.dsnPrefix {
			t.Errorf("ParseURL(%q) = %q, %q; want %q, %q...", tc.url, driver, dsn, tc.driver, tc.dsnPrefix)
		}
	}
}
