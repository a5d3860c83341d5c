package store_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
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
	t.Run("postgresql", func(t *testing.T) {
		db := servicetest.PostgreSQL(t)
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
		// One Placement trait per profile: "p-1" exists, so "p_1" and "P-1"
		// are refused in every mode that creates; replacing "p-1" is fine.
		if err := s.PutProfile(ctx, store.Profile{Name: "p-1", Body: "x"}, store.Create); err != nil {
			t.Fatal(err)
		}
		for _, mode := range []store.PutMode{store.Create, store.Upsert} {
			for _, name := range []string{"p_1", "P-1"} {
				err := s.PutProfile(ctx, store.Profile{Name: name, Body: "x"}, mode)
				var ne *store.ProfileNameError
				if !errors.As(err, &ne) || ne.Existing != "p-1" || !errors.Is(err, store.ErrExists) ||
					!strings.Contains(err.Error(), "(P_1)") {
					t.Errorf("PutProfile(%q, mode %d) = %v, want a name collision with p-1", name, mode, err)
				}
			}
		}
		if err := s.PutProfile(ctx, store.Profile{Name: "p-1", Body: "y"}, store.Upsert); err != nil {
			t.Errorf("Upsert of the same name = %v", err)
		}
		if err := s.DeleteProfile(ctx, "p-1"); err != nil {
			t.Fatal(err)
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
		{"postgresql://u@h/db", "pgx", "postgresql://u@h/db?connect_timeout=10", false},
		{"postgresql+psycopg2://u:p%40w@db.example:5433/trustpool?sslmode=require", "pgx", "postgresql://u:p%40w@db.example:5433/trustpool?", false},
		{"postgresql://u@h/", "", "", true},
		{"postgresql://u@h/db?foo=1", "", "", true},
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

// TestOneEKOneHost: a bound EK belongs to one host name; pending EKs are
// not bindings; deleting the holder frees the EK; PutHosts moves an EK
// atomically; concurrent binds of one EK leave exactly one holder.
func TestOneEKOneHost(t *testing.T) {
	backends(t, func(t *testing.T, url string) {
		t.Helper()
		ctx := t.Context()
		s := open(t, url)
		ek := []byte("ek-1")
		fp := store.EKFingerprint(ek)
		a := store.Host{Name: "a", EKPublic: ek, AKPublic: []byte("ak-a"), Activated: true}
		if err := s.PutHost(ctx, &a); err != nil {
			t.Fatal(err)
		}
		if holder, err := s.HostByEK(ctx, fp); err != nil || holder != "a" {
			t.Fatalf("HostByEK = %q, %v; want a", holder, err)
		}
		if _, err := s.HostByEK(ctx, store.EKFingerprint([]byte("other"))); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("HostByEK(unbound) = %v, want ErrNotFound", err)
		}
		// Rewriting the holder is fine; a second name is refused and nothing
		// of it is written.
		a.AgentVersion = "2"
		if err := s.PutHost(ctx, &a); err != nil {
			t.Errorf("rewriting the holder: %v", err)
		}
		b := store.Host{Name: "b", EKPublic: ek, Activated: true}
		err := s.PutHost(ctx, &b)
		var inUse *store.EKInUseError
		if !errors.As(err, &inUse) || inUse.Host != "a" || inUse.Fingerprint != fp {
			t.Fatalf("PutHost(b with a's EK) = %v, want EKInUseError naming a", err)
		}
		if _, err := s.GetHost(ctx, "b"); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("refused host written: %v", err)
		}
		// A pending EK is not a binding, for any number of hosts.
		for _, n := range []string{"b", "c"} {
			h := store.Host{Name: n, PendingEKPublic: ek, PendingAKPublic: []byte("ak-" + n), RejectedEKFingerprint: "r-" + n}
			if err := s.PutHost(ctx, &h); err != nil {
				t.Fatalf("pending %s: %v", n, err)
			}
		}
		if got, _ := s.GetHost(ctx, "c"); got.RejectedEKFingerprint != "r-c" {
			t.Errorf("RejectedEKFingerprint = %q, want r-c", got.RejectedEKFingerprint)
		}
		// A move in the wrong order fails as a whole.
		b = store.Host{Name: "b", EKPublic: ek, Activated: true}
		a0 := a
		a0.EKPublic, a0.AKPublic, a0.Activated = nil, nil, false
		if err := s.PutHosts(ctx, &b, &a0); !errors.As(err, &inUse) {
			t.Fatalf("PutHosts(bind b, then free a) = %v, want EKInUseError", err)
		}
		if got, _ := s.GetHost(ctx, "a"); !got.Activated || got.EKPublic == nil {
			t.Errorf("failed move changed a: %+v", got.Host)
		}
		if err := s.PutHosts(ctx, &a0, &b); err != nil {
			t.Fatalf("PutHosts(free a, bind b) = %v", err)
		}
		if holder, _ := s.HostByEK(ctx, fp); holder != "b" {
			t.Errorf("holder after the move = %q, want b", holder)
		}
		// Deleting the holder frees the EK.
		if err := s.DeleteHost(ctx, "b"); err != nil {
			t.Fatal(err)
		}
		c := store.Host{Name: "c", EKPublic: ek, Activated: true}
		if err := s.PutHost(ctx, &c); err != nil {
			t.Errorf("binding a freed EK: %v", err)
		}

		// Concurrent binds of a fresh EK under different names.
		race := []byte("ek-race")
		var (
			wg            sync.WaitGroup
			mu            sync.Mutex
			bound, inUses int
		)
		for i := range 8 {
			wg.Go(func() {
				err := s.PutHost(ctx, &store.Host{Name: fmt.Sprintf("r%d", i), EKPublic: race, Activated: true})
				mu.Lock()
				defer mu.Unlock()
				var iu *store.EKInUseError
				switch {
				case err == nil:
					bound++
				case errors.As(err, &iu):
					inUses++
				default:
					t.Errorf("concurrent PutHost: %v", err)
				}
			})
		}
		wg.Wait()
		if bound != 1 || inUses != 7 {
			t.Errorf("concurrent binds: %d bound, %d refused; want 1 and 7", bound, inUses)
		}
	})
}

// TestMigrationSplitsSharedEKs: a database written by code that allowed one
// EK under several names keeps the oldest binding; the other names lose it
// and keep the EK as a pending request.
func TestMigrationSplitsSharedEKs(t *testing.T) {
	backends(t, func(t *testing.T, url string) {
		t.Helper()
		ctx := t.Context()
		old, err := store.OpenAtVersion(ctx, url, 1)
		if err != nil {
			t.Fatal(err)
		}
		ins := `INSERT INTO hosts (name, ek_public, ek_cert, ak_public, activated, agent_version, created_at, updated_at)
			VALUES (?, ?, ?, ?, 1, '', ?, ?)`
		for _, r := range []struct {
			name    string
			ek      string
			created int64
		}{{"b-later", "shared", 200}, {"a-first", "shared", 100}, {"c-later", "shared", 300}, {"d-own", "own", 50}} {
			if err := old.Exec(ctx, ins, r.name, []byte(r.ek), []byte("cert-"+r.name), []byte("ak-"+r.name), r.created, r.created); err != nil {
				t.Fatal(err)
			}
		}
		old.Close()
		s := open(t, url)
		if v, err := s.SchemaVersion(ctx); err != nil || v != store.LatestSchema {
			t.Fatalf("SchemaVersion = %d, %v", v, err)
		}
		for name, ek := range map[string]string{"a-first": "shared", "d-own": "own"} {
			if holder, err := s.HostByEK(ctx, store.EKFingerprint([]byte(ek))); err != nil || holder != name {
				t.Errorf("holder of %s = %q, %v; want %s", ek, holder, err, name)
			}
			if h, _ := s.GetHost(ctx, name); !h.Activated || string(h.AKPublic) != "ak-"+name || h.PendingEKPublic != nil {
				t.Errorf("%s after migration: %+v", name, h.Host)
			}
		}
		// The database itself refuses a second binding, whatever code writes.
		if err := s.Exec(ctx, "UPDATE hosts SET ek_fingerprint = ? WHERE name = ?", store.EKFingerprint([]byte("shared")), "d-own"); err == nil {
			t.Error("the schema accepted one EK fingerprint for two hosts")
		}
		for _, name := range []string{"b-later", "c-later"} {
			h, err := s.GetHost(ctx, name)
			if err != nil {
				t.Fatal(err)
			}
			if h.Activated || h.EKPublic != nil || h.AKPublic != nil || string(h.PendingEKPublic) != "shared" ||
				string(h.PendingEKCert) != "cert-"+name || string(h.PendingAKPublic) != "ak-"+name || h.PendingSince.IsZero() {
				t.Errorf("%s after migration: %+v, want unbound with the shared EK pending", name, h.Host)
			}
		}
	})
}
