// Package store persists the attestation service's state in SQL: hosts and
// their EK/AK bindings, per-host verification state (the evidence.Previous the
// verifier needs across restarts, stored opaquely), the latest signed verdict,
// per-host verdict sequence numbers, profiles and their versions, verdict
// history and the audit log of admin changes.
//
// Three databases are supported with the same code and schema: SQLite (the
// embedded default, github.com/mattn/go-sqlite3, WAL mode), MySQL/MariaDB
// (github.com/go-sql-driver/mysql) and PostgreSQL (github.com/jackc/pgx,
// through a connection that numbers the ? placeholders, see postgres.go).
// [database] connection uses the SQLAlchemy URL form (see ParseURL). The schema is created and upgraded by numbered
// migrations recorded in schema_migrations; a database newer than this code
// is refused.
//
// History and audit records are kept until [Store.Prune] removes those older
// than the retention the service is configured with.
//
// Sequence numbers live in their own table, keyed by host name, and survive
// host deletion: a re-enrolled host never reuses a sequence number, so relying
// parties that drop older-seq verdicts keep working.
//
// One TPM, one host: a bound EK (Host.EKPublic) is indexed by its fingerprint
// (EKFingerprint) under a unique index, so no two host names hold the same
// EK, whatever the callers race. PutHost and PutHosts refuse such a write
// with an *EKInUseError naming the holder. Pending EKs are not bindings and
// are not unique. Deleting a host frees its EK.
//
// Profile names are unique up to policy.NameKey: PutProfile refuses a new
// profile whose name has the key of an existing one (a *ProfileNameError,
// which is ErrExists), because both would be one Placement trait. The check
// and the insert are one transaction.
//
// Trusted launches (launch.go) are records of sealed tenant requests and
// their progress: the sealed request itself (cleared once the launch ends),
// the state with its history, and the latest signed receipt. A request's
// nonce digest is unique, so a sealed request is accepted once. Changes of
// state are compare-and-set on the current state, so two workers cannot
// both take a launch forward.
//
// The mass-revocation brake's window (brake.go) is a table of transitions
// to untrusted with a lock row: taking a slot (count the window, record,
// engage) is one transaction serialised across instances.
//
// The package does not log.
package store

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/mattn/go-sqlite3"

	"github.com/trustpool/trustpool/internal/policy"
)

// Errors.
var (
	// ErrNotFound: no such host or profile.
	ErrNotFound = errors.New("not found")
	// ErrExists: a profile with that name already exists.
	ErrExists = errors.New("already exists")
	// ErrSchemaTooNew: the database was migrated by newer code.
	ErrSchemaTooNew = errors.New("database schema is newer than this service")
)

// EKInUseError says the EK a write would bind is bound to another host.
type EKInUseError struct {
	// Fingerprint is the EK's fingerprint (EKFingerprint).
	Fingerprint string
	// Host holds the EK.
	Host string
}

func (e *EKInUseError) Error() string {
	return fmt.Sprintf("EK %s is bound to host %q", e.Fingerprint, e.Host)
}

// ProfileNameError says a new profile's name is, up to policy.NameKey, the
// name of an existing profile. It is ErrExists for errors.Is.
type ProfileNameError struct {
	// Name is the refused name, Existing the profile that has its key.
	Name, Existing string
}

func (e *ProfileNameError) Error() string {
	return fmt.Sprintf("profile %q: profile %q exists and has the same Placement trait name (%s): names that differ only in case, "+
		"\"-\" or \"_\" are one name", e.Name, e.Existing, policy.NameKey(e.Name))
}

// Unwrap makes it ErrExists.
func (e *ProfileNameError) Unwrap() error { return ErrExists }

// EKFingerprint is the hex SHA-256 of an EK's public area as the agent sent
// it (TPM2B_PUBLIC contents); "" for nil.
func EKFingerprint(ekPublic []byte) string {
	if ekPublic == nil {
		return ""
	}
	d := sha256.Sum256(ekPublic)
	return hex.EncodeToString(d[:])
}

// Host is a host's enrollment record.
type Host struct {
	Name string
	// EKPublic and EKCert are the approved endorsement key (nil until
	// approved or registered in auto mode).
	EKPublic, EKCert []byte
	// AKPublic is the attestation key bound by credential activation;
	// Activated says the activation succeeded for EKPublic.
	AKPublic  []byte
	Activated bool
	// PendingEKPublic, PendingEKCert and PendingAKPublic are a registration
	// waiting for an admin's approval (a new host in approve mode, or a known
	// host presenting a different EK). Nil when nothing is pending.
	PendingEKPublic, PendingEKCert, PendingAKPublic []byte
	PendingSince                                    time.Time
	// RejectedEKFingerprint is the last EK an administrator rejected for
	// this host ("" when none): registrations with it are refused.
	RejectedEKFingerprint string
	// Profiles are the host's required profiles; nil means the configured
	// default.
	Profiles     []string
	AgentVersion string
	CreatedAt    time.Time
	UpdatedAt    time.Time
}

// HostRecord is a host with its opaque verification state and latest
// signed verdict.
type HostRecord struct {
	Host
	// State is the verifier's opaque per-host state (JSON).
	State []byte
	// Verdict is the latest signed verdict (JSON of verdict.Signed), nil
	// when none.
	Verdict []byte
	// AttestedAt is when Verdict was recorded (zero: never).
	AttestedAt time.Time
}

// Profile is a stored profile: its name and TOML text. Body is the latest
// approved version's document (versions.go).
type Profile struct {
	Name      string
	Body      string
	UpdatedAt time.Time
	// Version is the number of the latest approved version, whose document
	// Body is (read in the same statement); GetProfile and ListProfiles
	// set it, writes ignore it.
	Version int
}

// approvedVersion selects, beside a row of profiles, the number of its
// latest approved version (the one syncFlatBody copies the body from).
const approvedVersion = "(SELECT MAX(v.version) FROM profile_versions v WHERE v.profile = profiles.name AND v.state = '" + VersionApproved + "')"

// HistoryEntry is one verdict change of a host.
type HistoryEntry struct {
	Host           string    `json:"host"`
	At             time.Time `json:"at"`
	Status         string    `json:"status"`
	Reasons        []string  `json:"reasons"`
	Profiles       []string  `json:"profiles"`
	Seq            uint64    `json:"seq"`
	EvidenceDigest string    `json:"evidence_digest,omitempty"`
}

// AuditRecord is one admin change.
type AuditRecord struct {
	At        time.Time `json:"at"`
	RequestID string    `json:"request_id"`
	UserID    string    `json:"user_id"`
	ProjectID string    `json:"project_id"`
	Action    string    `json:"action"`
	Target    string    `json:"target"`
	Outcome   string    `json:"outcome"`
	Detail    string    `json:"detail,omitempty"`
}

// Store is the SQL store.
type Store struct {
	db      *sql.DB
	dialect dialect
}

// Open connects to the database named by a [database] connection URL and
// runs the migrations.
func Open(ctx context.Context, connection string) (*Store, error) {
	u, err := parse(connection)
	if err != nil {
		return nil, err
	}
	db, err := u.open()
	if err != nil {
		return nil, err
	}
	s := &Store{db: db, dialect: u.dialect}
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("connect to database %s: %w", u.redacted, err)
	}
	if err := s.migrate(ctx); err != nil {
		db.Close()
		return nil, err
	}
	return s, nil
}

// open opens the connection pool (it does not connect yet).
func (u *parsedURL) open() (*sql.DB, error) {
	var db *sql.DB
	if u.pg != nil {
		db = sql.OpenDB(newPGConnector(u.pg))
	} else {
		var err error
		if db, err = sql.Open(u.driver, u.dsn); err != nil {
			return nil, fmt.Errorf("open database: %w", err)
		}
	}
	if u.dialect == dialectSQLite {
		// One writer at a time; WAL lets readers run alongside.
		db.SetMaxOpenConns(1)
	} else {
		db.SetMaxOpenConns(16)
		db.SetConnMaxLifetime(5 * time.Minute)
	}
	return db, nil
}

// Close closes the database.
func (s *Store) Close() error { return s.db.Close() }

// Ping checks the database is reachable (for /healthz).
func (s *Store) Ping(ctx context.Context) error { return s.db.PingContext(ctx) }

func micros(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMicro()
}

func fromMicros(v int64) time.Time {
	if v == 0 {
		return time.Time{}
	}
	return time.UnixMicro(v).UTC()
}

func encList(l []string) (sql.NullString, error) {
	if l == nil {
		return sql.NullString{}, nil
	}
	b, err := json.Marshal(l)
	return sql.NullString{String: string(b), Valid: true}, err
}

func decList(s sql.NullString) ([]string, error) {
	if !s.Valid {
		return nil, nil
	}
	l := []string{}
	if err := json.Unmarshal([]byte(s.String), &l); err != nil {
		return nil, fmt.Errorf("decode list: %w", err)
	}
	return l, nil
}

const hostCols = "name, ek_public, ek_cert, ak_public, activated, pending_ek_public, pending_ek_cert, pending_ak_public, pending_since, profiles, agent_version, created_at, updated_at, state, verdict, rejected_ek_fingerprint"

// hostReadCols are the columns scanHost reads.
const hostReadCols = hostCols + ", attested_at"

func scanHost(row interface{ Scan(...any) error }) (*HostRecord, error) {
	var (
		h                          HostRecord
		activated                  bool
		pendingSince, created, upd int64
		attested                   int64
		profiles                   sql.NullString
	)
	err := row.Scan(&h.Name, &h.EKPublic, &h.EKCert, &h.AKPublic, &activated, &h.PendingEKPublic, &h.PendingEKCert,
		&h.PendingAKPublic, &pendingSince, &profiles, &h.AgentVersion, &created, &upd, &h.State, &h.Verdict, &h.RejectedEKFingerprint,
		&attested)
	if err != nil {
		return nil, err
	}
	h.Activated = activated
	h.PendingSince, h.CreatedAt, h.UpdatedAt = fromMicros(pendingSince), fromMicros(created), fromMicros(upd)
	h.AttestedAt = fromMicros(attested)
	if h.Profiles, err = decList(profiles); err != nil {
		return nil, err
	}
	return &h, nil
}

// GetHost returns a host, or an error wrapping ErrNotFound.
func (s *Store) GetHost(ctx context.Context, name string) (*HostRecord, error) {
	h, err := scanHost(s.db.QueryRowContext(ctx, "SELECT "+hostReadCols+" FROM hosts WHERE name = ?", name))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("host %q: %w", name, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("get host %q: %w", name, err)
	}
	return h, nil
}

// ListHosts returns every host, sorted by name.
func (s *Store) ListHosts(ctx context.Context) ([]*HostRecord, error) {
	rows, err := s.db.QueryContext(ctx, "SELECT "+hostReadCols+" FROM hosts ORDER BY name")
	if err != nil {
		return nil, fmt.Errorf("list hosts: %w", err)
	}
	defer rows.Close()
	var out []*HostRecord
	for rows.Next() {
		h, err := scanHost(rows)
		if err != nil {
			return nil, fmt.Errorf("list hosts: %w", err)
		}
		out = append(out, h)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list hosts: %w", err)
	}
	return out, nil
}

// PutHost creates or updates a host's enrollment record (not its state or
// verdict). CreatedAt is kept from the first write. Binding an EK that
// another host holds fails with an *EKInUseError.
func (s *Store) PutHost(ctx context.Context, h *Host) error {
	return s.PutHosts(ctx, h)
}

// PutHosts writes several enrollment records in one transaction, in order:
// either all are written or none. Moving an EK from one host to another is
// PutHosts(holder without it, new holder with it).
func (s *Store) PutHosts(ctx context.Context, hs ...*Host) error {
	err := s.tx(ctx, func(tx *sql.Tx) error {
		for _, h := range hs {
			if err := putHost(ctx, tx, h); err != nil {
				return err
			}
		}
		return nil
	})
	if err == nil || !isUniqueViolation(err) {
		return err
	}
	// A concurrent writer bound one of the EKs between our check and our
	// write; the unique index refused it. Name the holder.
	for _, h := range hs {
		fp := EKFingerprint(h.EKPublic)
		if fp == "" {
			continue
		}
		if holder, herr := s.HostByEK(ctx, fp); herr == nil && holder != h.Name {
			return fmt.Errorf("put host %q: %w", h.Name, &EKInUseError{Fingerprint: fp, Host: holder})
		}
	}
	return err
}

func putHost(ctx context.Context, tx *sql.Tx, h *Host) error {
	profiles, err := encList(h.Profiles)
	if err != nil {
		return fmt.Errorf("put host %q: %w", h.Name, err)
	}
	fp := sql.NullString{String: EKFingerprint(h.EKPublic), Valid: h.EKPublic != nil}
	if fp.Valid {
		var holder string
		err := tx.QueryRowContext(ctx, "SELECT name FROM hosts WHERE ek_fingerprint = ? AND name <> ?", fp.String, h.Name).Scan(&holder)
		switch {
		case err == nil:
			return fmt.Errorf("put host %q: %w", h.Name, &EKInUseError{Fingerprint: fp.String, Host: holder})
		case !errors.Is(err, sql.ErrNoRows):
			return fmt.Errorf("put host %q: %w", h.Name, err)
		}
	}
	now := micros(time.Now())
	res, err := tx.ExecContext(ctx, `UPDATE hosts SET ek_public = ?, ek_cert = ?, ak_public = ?, activated = ?,
		pending_ek_public = ?, pending_ek_cert = ?, pending_ak_public = ?, pending_since = ?, profiles = ?,
		agent_version = ?, updated_at = ?, ek_fingerprint = ?, rejected_ek_fingerprint = ? WHERE name = ?`,
		h.EKPublic, h.EKCert, h.AKPublic, h.Activated, h.PendingEKPublic, h.PendingEKCert, h.PendingAKPublic,
		micros(h.PendingSince), profiles, h.AgentVersion, now, fp, h.RejectedEKFingerprint, h.Name)
	if err != nil {
		return fmt.Errorf("put host %q: %w", h.Name, err)
	}
	if n, _ := res.RowsAffected(); n > 0 {
		return nil
	}
	_, err = tx.ExecContext(ctx, "INSERT INTO hosts ("+hostCols+", ek_fingerprint) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, NULL, ?, ?)",
		h.Name, h.EKPublic, h.EKCert, h.AKPublic, h.Activated, h.PendingEKPublic, h.PendingEKCert, h.PendingAKPublic,
		micros(h.PendingSince), profiles, h.AgentVersion, now, now, h.RejectedEKFingerprint, fp)
	if err != nil {
		return fmt.Errorf("put host %q: %w", h.Name, err)
	}
	return nil
}

// isUniqueViolation reports a unique index refusing a write.
func isUniqueViolation(err error) bool {
	var se sqlite3.Error
	if errors.As(err, &se) {
		return se.ExtendedCode == sqlite3.ErrConstraintUnique || se.ExtendedCode == sqlite3.ErrConstraintPrimaryKey
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code == pgUniqueViolation
	}
	var me *mysql.MySQLError
	return errors.As(err, &me) && me.Number == mysqlErrDupEntry
}

// PostgreSQL SQLSTATE codes.
const (
	pgUniqueViolation = "23505"
	pgDeadlock        = "40P01"
	pgSerialization   = "40001"
)

// MySQL error numbers.
const (
	mysqlErrDupEntry     = 1062 // ER_DUP_ENTRY
	mysqlErrLockDeadlock = 1213 // ER_LOCK_DEADLOCK
)

// HostByEK returns the name of the host an EK (by EKFingerprint) is bound
// to, or an error wrapping ErrNotFound.
func (s *Store) HostByEK(ctx context.Context, fingerprint string) (string, error) {
	var name string
	err := s.db.QueryRowContext(ctx, "SELECT name FROM hosts WHERE ek_fingerprint = ?", fingerprint).Scan(&name)
	if errors.Is(err, sql.ErrNoRows) {
		return "", fmt.Errorf("EK %s: %w", fingerprint, ErrNotFound)
	}
	if err != nil {
		return "", fmt.Errorf("host by EK %s: %w", fingerprint, err)
	}
	return name, nil
}

// DeleteHost removes a host and its state. History, audit and the host's
// sequence number are kept.
func (s *Store) DeleteHost(ctx context.Context, name string) error {
	res, err := s.db.ExecContext(ctx, "DELETE FROM hosts WHERE name = ?", name)
	if err != nil {
		return fmt.Errorf("delete host %q: %w", name, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("host %q: %w", name, ErrNotFound)
	}
	return nil
}

// SaveState stores the verifier's opaque state of a host.
func (s *Store) SaveState(ctx context.Context, name string, state []byte) error {
	res, err := s.db.ExecContext(ctx, "UPDATE hosts SET state = ? WHERE name = ?", state, name)
	if err != nil {
		return fmt.Errorf("save state of %q: %w", name, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("host %q: %w", name, ErrNotFound)
	}
	return nil
}

// NextSeq atomically increments and returns the verdict sequence number of
// a host name (starting at 1). Numbers are never reused, even after the host
// is deleted.
func (s *Store) NextSeq(ctx context.Context, name string) (uint64, error) {
	var seq uint64
	err := s.tx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, "UPDATE verdict_seqs SET seq = seq + 1 WHERE host = ?", name)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			if _, err := tx.ExecContext(ctx, "INSERT INTO verdict_seqs (host, seq) VALUES (?, 1)", name); err != nil {
				return err
			}
		}
		return tx.QueryRowContext(ctx, "SELECT seq FROM verdict_seqs WHERE host = ?", name).Scan(&seq)
	})
	if err != nil {
		return 0, fmt.Errorf("next verdict seq of %q: %w", name, err)
	}
	return seq, nil
}

// SaveVerdict stores a host's latest signed verdict and state together, and
// appends hist to its history when hist is not nil.
func (s *Store) SaveVerdict(ctx context.Context, name string, signed, state []byte, hist *HistoryEntry) error {
	return s.tx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, "UPDATE hosts SET verdict = ?, state = ? WHERE name = ?", signed, state, name)
		if err != nil {
			return fmt.Errorf("save verdict of %q: %w", name, err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return fmt.Errorf("host %q: %w", name, ErrNotFound)
		}
		if hist == nil {
			return nil
		}
		reasons, _ := json.Marshal(nonNil(hist.Reasons))
		profiles, _ := json.Marshal(nonNil(hist.Profiles))
		_, err = tx.ExecContext(ctx, `INSERT INTO history (host, at, status, reasons, profiles, seq, evidence_digest)
			VALUES (?, ?, ?, ?, ?, ?, ?)`, name, micros(hist.At), hist.Status, string(reasons), string(profiles),
			hist.Seq, hist.EvidenceDigest)
		if err != nil {
			return fmt.Errorf("append history of %q: %w", name, err)
		}
		return nil
	})
}

func nonNil(l []string) []string {
	if l == nil {
		return []string{}
	}
	return l
}

// History returns a host's verdict changes, newest first, at most limit.
func (s *Store) History(ctx context.Context, name string, limit int) ([]HistoryEntry, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT host, at, status, reasons, profiles, seq, evidence_digest FROM history
		WHERE host = ? ORDER BY id DESC LIMIT ?`, name, limit)
	if err != nil {
		return nil, fmt.Errorf("history of %q: %w", name, err)
	}
	defer rows.Close()
	out := []HistoryEntry{}
	for rows.Next() {
		var (
			e                 HistoryEntry
			at                int64
			reasons, profiles string
		)
		if err := rows.Scan(&e.Host, &at, &e.Status, &reasons, &profiles, &e.Seq, &e.EvidenceDigest); err != nil {
			return nil, fmt.Errorf("history of %q: %w", name, err)
		}
		e.At = fromMicros(at)
		if err := json.Unmarshal([]byte(reasons), &e.Reasons); err != nil {
			return nil, fmt.Errorf("history of %q: %w", name, err)
		}
		if err := json.Unmarshal([]byte(profiles), &e.Profiles); err != nil {
			return nil, fmt.Errorf("history of %q: %w", name, err)
		}
		out = append(out, e)
	}
	return out, rows.Err()
}

// ListProfiles returns every profile, sorted by name.
func (s *Store) ListProfiles(ctx context.Context) ([]Profile, error) {
	rows, err := s.db.QueryContext(ctx, "SELECT name, body, updated_at, "+approvedVersion+" FROM profiles ORDER BY name")
	if err != nil {
		return nil, fmt.Errorf("list profiles: %w", err)
	}
	defer rows.Close()
	out := []Profile{}
	for rows.Next() {
		var (
			p  Profile
			at int64
			v  sql.NullInt64
		)
		if err := rows.Scan(&p.Name, &p.Body, &at, &v); err != nil {
			return nil, fmt.Errorf("list profiles: %w", err)
		}
		p.UpdatedAt, p.Version = fromMicros(at), int(v.Int64)
		out = append(out, p)
	}
	return out, rows.Err()
}

// GetProfile returns a profile or an error wrapping ErrNotFound.
func (s *Store) GetProfile(ctx context.Context, name string) (Profile, error) {
	p := Profile{Name: name}
	var (
		at int64
		v  sql.NullInt64
	)
	err := s.db.QueryRowContext(ctx, "SELECT body, updated_at, "+approvedVersion+" FROM profiles WHERE name = ?", name).Scan(&p.Body, &at, &v)
	if errors.Is(err, sql.ErrNoRows) {
		return p, fmt.Errorf("profile %q: %w", name, ErrNotFound)
	}
	if err != nil {
		return p, fmt.Errorf("get profile %q: %w", name, err)
	}
	p.UpdatedAt, p.Version = fromMicros(at), int(v.Int64)
	return p, nil
}

// PutProfile is PutFlatProfile for callers that need not know which
// version the write made.
func (s *Store) PutProfile(ctx context.Context, p Profile, mode PutMode) error {
	_, err := s.PutFlatProfile(ctx, p, mode)
	return err
}

// PutFlatProfile creates (mode Create: ErrExists when it exists) or
// replaces (mode Replace: ErrNotFound when missing) a profile; Upsert does
// either. A replacement is a new approved version that retires the one
// it replaces (see putFlatVersion); a replacement by the same document
// changes nothing.
func (s *Store) PutFlatProfile(ctx context.Context, p Profile, mode PutMode) (FlatWrite, error) {
	var (
		w   FlatWrite
		err error
	)
	// Two writers creating or replacing at once may pick the same version
	// number (or both insert the profile); the primary key refuses the
	// second, which runs again and sees the first's write.
	for range 5 {
		if w, err = s.putFlatProfile(ctx, p, mode); err == nil || !isUniqueViolation(err) {
			break
		}
	}
	return w, err
}

func (s *Store) putFlatProfile(ctx context.Context, p Profile, mode PutMode) (FlatWrite, error) {
	var w FlatWrite
	err := s.tx(ctx, func(tx *sql.Tx) error {
		exists, err := s.lockProfile(ctx, tx, p.Name)
		if err != nil {
			return fmt.Errorf("put profile %q: %w", p.Name, err)
		}
		switch {
		case exists && mode == Create:
			return fmt.Errorf("profile %q: %w", p.Name, ErrExists)
		case !exists && mode == Replace:
			return fmt.Errorf("profile %q: %w", p.Name, ErrNotFound)
		case !exists:
			if err := checkNameKey(ctx, tx, p.Name); err != nil {
				return err
			}
			_, err = tx.ExecContext(ctx, "INSERT INTO profiles (name, body, updated_at) VALUES (?, ?, ?)", p.Name, p.Body, micros(time.Now()))
		}
		if err == nil {
			w, err = putFlatVersion(ctx, tx, p.Name, p.Body, !exists)
		}
		if err == nil && exists && w.Changed {
			err = syncFlatBody(ctx, tx, p.Name)
		}
		if err == nil && w.Changed {
			err = bumpProfiles(ctx, tx)
		}
		if err != nil {
			return fmt.Errorf("put profile %q: %w", p.Name, err)
		}
		return nil
	})
	return w, err
}

// checkNameKey refuses name when an existing profile has its NameKey.
func checkNameKey(ctx context.Context, tx *sql.Tx, name string) error {
	rows, err := tx.QueryContext(ctx, "SELECT name FROM profiles")
	if err != nil {
		return fmt.Errorf("put profile %q: %w", name, err)
	}
	defer rows.Close()
	key := policy.NameKey(name)
	for rows.Next() {
		var other string
		if err := rows.Scan(&other); err != nil {
			return fmt.Errorf("put profile %q: %w", name, err)
		}
		if policy.NameKey(other) == key {
			return &ProfileNameError{Name: name, Existing: other}
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("put profile %q: %w", name, err)
	}
	return nil
}

// PutMode selects PutProfile's behaviour.
type PutMode int

// PutProfile modes.
const (
	Upsert PutMode = iota
	Create
	Replace
)

// DeleteProfile removes a profile.
func (s *Store) DeleteProfile(ctx context.Context, name string) error {
	return s.tx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, "DELETE FROM profiles WHERE name = ?", name)
		if err != nil {
			return fmt.Errorf("delete profile %q: %w", name, err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return fmt.Errorf("profile %q: %w", name, ErrNotFound)
		}
		if _, err := tx.ExecContext(ctx, "DELETE FROM profile_versions WHERE profile = ?", name); err != nil {
			return fmt.Errorf("delete versions of profile %q: %w", name, err)
		}
		if err := bumpProfiles(ctx, tx); err != nil {
			return fmt.Errorf("delete profile %q: %w", name, err)
		}
		return nil
	})
}

// AddAudit appends an audit record.
func (s *Store) AddAudit(ctx context.Context, r AuditRecord) error {
	_, err := s.db.ExecContext(ctx, `INSERT INTO audit (at, request_id, user_id, project_id, action, target, outcome, detail)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?)`, micros(r.At), r.RequestID, r.UserID, r.ProjectID, r.Action, r.Target, r.Outcome, r.Detail)
	if err != nil {
		return fmt.Errorf("add audit record: %w", err)
	}
	return nil
}

// Audit returns audit records, newest first, at most limit.
func (s *Store) Audit(ctx context.Context, limit int) ([]AuditRecord, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT at, request_id, user_id, project_id, action, target, outcome, detail
		FROM audit ORDER BY id DESC LIMIT ?`, limit)
	if err != nil {
		return nil, fmt.Errorf("list audit: %w", err)
	}
	defer rows.Close()
	out := []AuditRecord{}
	for rows.Next() {
		var (
			r  AuditRecord
			at int64
		)
		if err := rows.Scan(&at, &r.RequestID, &r.UserID, &r.ProjectID, &r.Action, &r.Target, &r.Outcome, &r.Detail); err != nil {
			return nil, fmt.Errorf("list audit: %w", err)
		}
		r.At = fromMicros(at)
		out = append(out, r)
	}
	return out, rows.Err()
}

// Pruned says how many records Prune removed.
type Pruned struct {
	History, Audit int64
	// Brake counts rows of the revocation brake's window (brake.go).
	Brake int64
}

// pruneBatch bounds the rows one DELETE removes, so a large backlog never
// holds a long lock (MariaDB) or a long write transaction (SQLite).
var pruneBatch = 5000

// pruneQueries are the statements of pruneTable, per table.
var pruneQueries = map[string]struct{ sel, del string }{
	"history": {"SELECT id FROM history WHERE at < ? ORDER BY id LIMIT ?", "DELETE FROM history WHERE id <= ? AND at < ?"},
	"audit":   {"SELECT id FROM audit WHERE at < ? ORDER BY id LIMIT ?", "DELETE FROM audit WHERE id <= ? AND at < ?"},
	"revocation_brake": {"SELECT id FROM revocation_brake WHERE at < ? ORDER BY id LIMIT ?",
		"DELETE FROM revocation_brake WHERE id <= ? AND at < ?"},
}

// Prune removes history entries recorded before historyBefore and audit
// records before auditBefore; a zero time keeps that table whole. The
// revocation brake's records of transitions are verdict history: they go
// with historyBefore, except those an engaged brake still needs.
func (s *Store) Prune(ctx context.Context, historyBefore, auditBefore time.Time) (Pruned, error) {
	var p Pruned
	var err error
	if !historyBefore.IsZero() {
		if p.History, err = s.pruneTable(ctx, "history", historyBefore); err != nil {
			return p, err
		}
		if p.Brake, err = s.pruneBrake(ctx, historyBefore); err != nil {
			return p, err
		}
	}
	if !auditBefore.IsZero() {
		if p.Audit, err = s.pruneTable(ctx, "audit", auditBefore); err != nil {
			return p, err
		}
	}
	return p, nil
}

// pruneTable deletes rows of table (history or audit) older than before,
// in batches.
func (s *Store) pruneTable(ctx context.Context, table string, before time.Time) (int64, error) {
	// MariaDB refuses LIMIT in an IN subquery: find the batch's last id
	// first, then delete up to it.
	q, ok := pruneQueries[table]
	if !ok {
		return 0, fmt.Errorf("prune %s: not a prunable table", table)
	}
	var total int64
	for {
		rows, err := s.db.QueryContext(ctx, q.sel, micros(before), pruneBatch)
		if err != nil {
			return total, fmt.Errorf("prune %s: %w", table, err)
		}
		var maxID int64
		n := 0
		for rows.Next() {
			if err := rows.Scan(&maxID); err != nil {
				rows.Close()
				return total, fmt.Errorf("prune %s: %w", table, err)
			}
			n++
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return total, fmt.Errorf("prune %s: %w", table, err)
		}
		if n == 0 {
			return total, nil
		}
		res, err := s.db.ExecContext(ctx, q.del, maxID, micros(before))
		if err != nil {
			return total, fmt.Errorf("prune %s: %w", table, err)
		}
		d, _ := res.RowsAffected()
		total += d
		if n < pruneBatch {
			return total, nil
		}
	}
}

// tx runs fn in a transaction. InnoDB may abort one of two concurrent
// transactions as a deadlock (gap locks of concurrent first inserts);
// such a transaction is run again, up to deadlockRetries times, after a
// short random pause (writers retrying in lockstep deadlock again): fn must
// be re-runnable.
func (s *Store) tx(ctx context.Context, fn func(*sql.Tx) error) error {
	var err error
	pause := time.Millisecond
	for range deadlockRetries {
		if err = s.tx1(ctx, fn); !isDeadlock(err) {
			return err
		}
		t := time.NewTimer(pause/2 + rand.N(pause)) //nolint:gosec // G404: jitter of a retry pause, not a secret
		select {
		case <-ctx.Done():
			t.Stop()
			return errors.Join(err, ctx.Err())
		case <-t.C:
		}
		pause = min(2*pause, 64*time.Millisecond)
	}
	return err
}

// deadlockRetries bounds the attempts of a transaction InnoDB keeps
// choosing as the deadlock victim.
const deadlockRetries = 10

func (s *Store) tx1(ctx context.Context, fn func(*sql.Tx) error) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin transaction: %w", err)
	}
	if err := fn(tx); err != nil {
		if rbErr := tx.Rollback(); rbErr != nil {
			return errors.Join(err, fmt.Errorf("roll back: %w", rbErr))
		}
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

// isDeadlock reports MySQL's ER_LOCK_DEADLOCK or PostgreSQL's
// deadlock_detected / serialization_failure (the transaction was rolled
// back).
func isDeadlock(err error) bool {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code == pgDeadlock || pe.Code == pgSerialization
	}
	var me *mysql.MySQLError
	return errors.As(err, &me) && me.Number == mysqlErrLockDeadlock
}

// SchemaVersion returns the highest applied migration.
func (s *Store) SchemaVersion(ctx context.Context) (int, error) {
	var v sql.NullInt64
	if err := s.db.QueryRowContext(ctx, "SELECT MAX(version) FROM schema_migrations").Scan(&v); err != nil {
		return 0, fmt.Errorf("schema version: %w", err)
	}
	return int(v.Int64), nil
}

func (s *Store) migrate(ctx context.Context) error {
	if _, err := s.db.ExecContext(ctx, s.dialect.expand(
		"CREATE TABLE IF NOT EXISTS schema_migrations (version {int} PRIMARY KEY, applied_at {int} NOT NULL){engine}")); err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	cur, err := s.SchemaVersion(ctx)
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	return s.migrateTo(ctx, cur, len(migrations))
}

// migrateTo applies migrations from version cur up to version to. Each runs
// in a transaction: atomic on SQLite; MySQL commits each DDL statement on
// its own.
func (s *Store) migrateTo(ctx context.Context, cur, to int) error {
	if cur > len(migrations) {
		return fmt.Errorf("migrate: schema version %d, code knows %d: %w", cur, len(migrations), ErrSchemaTooNew)
	}
	for i := cur; i < to; i++ {
		m := migrations[i]
		err := s.tx(ctx, func(tx *sql.Tx) error {
			for _, stmt := range m.sql {
				if _, err := tx.ExecContext(ctx, s.dialect.expand(stmt)); err != nil {
					return err
				}
			}
			if m.fill != nil {
				if err := m.fill(ctx, tx); err != nil {
					return err
				}
			}
			for _, stmt := range m.post {
				if _, err := tx.ExecContext(ctx, s.dialect.expand(stmt)); err != nil {
					return err
				}
			}
			_, err := tx.ExecContext(ctx, "INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)", i+1, micros(time.Now()))
			return err
		})
		if err != nil {
			return fmt.Errorf("migrate to version %d: %w", i+1, err)
		}
	}
	return nil
}

// migration upgrades the schema by one version: its sql statements, then
// fill (for data SQL cannot compute portably), then its post statements.
type migration struct {
	sql  []string
	fill func(ctx context.Context, tx *sql.Tx) error
	post []string
}

// migrations[i] upgrades the schema from version i to i+1. Never edit a
// released migration; append a new one.
var migrations = []migration{
	{sql: []string{
		`CREATE TABLE hosts (
			name {name} PRIMARY KEY,
			ek_public {blob}, ek_cert {blob}, ak_public {blob},
			activated {bool} NOT NULL DEFAULT 0,
			pending_ek_public {blob}, pending_ek_cert {blob}, pending_ak_public {blob},
			pending_since {int} NOT NULL DEFAULT 0,
			profiles {text},
			agent_version {name} NOT NULL DEFAULT '',
			created_at {int} NOT NULL, updated_at {int} NOT NULL,
			state {blob}, verdict {blob}){engine}`,
		`CREATE TABLE verdict_seqs (host {name} PRIMARY KEY, seq {int} NOT NULL){engine}`,
		`CREATE TABLE profiles (name {name} PRIMARY KEY, body {text} NOT NULL, updated_at {int} NOT NULL){engine}`,
		`CREATE TABLE history (id {autoid}, host {name} NOT NULL, at {int} NOT NULL, status {name} NOT NULL,
			reasons {text} NOT NULL, profiles {text} NOT NULL, seq {int} NOT NULL, evidence_digest {name} NOT NULL){engine}`,
		`CREATE INDEX history_host ON history (host, id)`,
		`CREATE TABLE audit (id {autoid}, at {int} NOT NULL, request_id {name} NOT NULL, user_id {name} NOT NULL,
			project_id {name} NOT NULL, action {name} NOT NULL, target {name} NOT NULL, outcome {name} NOT NULL,
			detail {text} NOT NULL){engine}`,
	}},
	// 2: one TPM, one host: bound EKs are unique by fingerprint; rejected
	// EK requests are remembered per host.
	{
		sql: []string{
			`ALTER TABLE hosts ADD COLUMN ek_fingerprint {name}`,
			`ALTER TABLE hosts ADD COLUMN rejected_ek_fingerprint {name} NOT NULL DEFAULT ''`,
		},
		fill: fillEKFingerprints,
		post: []string{`CREATE UNIQUE INDEX hosts_ek_fingerprint ON hosts (ek_fingerprint)`},
	},
	// 3: retention: Prune finds old history and audit records by time.
	{sql: []string{
		`CREATE INDEX history_at ON history (at)`,
		`CREATE INDEX audit_at ON audit (at)`,
	}},
	// 4: trusted launches and their state history (launch.go).
	{sql: launchMigration},
	// 5: several service instances on one database: membership rows,
	// enrollment challenges any instance can answer, the profiles
	// generation, and per host the seq of the stored verdict (writes
	// never go back) and when it was recorded (hand-overs keep the
	// host's rhythm).
	{sql: []string{
		`CREATE TABLE members (name {name} PRIMARY KEY, incarnation {name} NOT NULL, started_at {int} NOT NULL,
			heartbeat_at {int} NOT NULL, kid {name} NOT NULL, public_key {text} NOT NULL){engine}`,
		`CREATE TABLE enroll_challenges (id {name} PRIMARY KEY, host {name} NOT NULL, ek_public {blob} NOT NULL,
			ek_cert {blob}, ak_public {blob} NOT NULL, agent_version {name} NOT NULL, secret_hash {blob} NOT NULL,
			expires_at {int} NOT NULL){engine}`,
		`CREATE INDEX enroll_challenges_expires ON enroll_challenges (expires_at)`,
		`CREATE INDEX enroll_challenges_host ON enroll_challenges (host)`,
		`CREATE TABLE counters (name {name} PRIMARY KEY, value {int} NOT NULL){engine}`,
		`ALTER TABLE hosts ADD COLUMN verdict_seq {int} NOT NULL DEFAULT 0`,
		`ALTER TABLE hosts ADD COLUMN attested_at {int} NOT NULL DEFAULT 0`,
	}},
	// 6: profile versions (versions.go); every profile becomes its
	// version 1, approved.
	{sql: versionMigration, post: versionMigrationPost},
	// 7: a canary version's fraction of hosts (versions.go).
	{sql: canaryFractionMigration},
	// 8: who asked for a re-delivery (launch.go).
	{sql: launchInitiatorMigration},
	// 9: the mass-revocation brake's window, shared by the instances
	// (brake.go).
	{sql: revocationBrakeMigration},
}

// revocationBrakeMigration creates the brake's window and its lock row.
var revocationBrakeMigration = []string{
	`CREATE TABLE revocation_brake (id {autoid}, at {int} NOT NULL, host {name} NOT NULL, action {name} NOT NULL){engine}`,
	`CREATE INDEX revocation_brake_at ON revocation_brake (at)`,
	`INSERT INTO counters (name, value) VALUES ('revocation_brake', 0)`,
}

// fillEKFingerprints indexes every bound EK. Where earlier code bound one EK
// to several host names, the host that has existed longest keeps it; the
// others lose the binding (they are no longer attested) and keep the EK as
// a pending request for an administrator, replacing any request they had.
func fillEKFingerprints(ctx context.Context, tx *sql.Tx) error {
	rows, err := tx.QueryContext(ctx, "SELECT name, ek_public FROM hosts WHERE ek_public IS NOT NULL ORDER BY created_at, name")
	if err != nil {
		return err
	}
	type bound struct {
		name string
		fp   string
	}
	var all []bound
	for rows.Next() {
		var (
			name string
			ek   []byte
		)
		if err := rows.Scan(&name, &ek); err != nil {
			rows.Close()
			return err
		}
		all = append(all, bound{name, EKFingerprint(ek)})
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	seen := map[string]bool{}
	now := micros(time.Now())
	for _, b := range all {
		if seen[b.fp] {
			// MySQL assigns left to right: copy before clearing.
			_, err = tx.ExecContext(ctx, `UPDATE hosts SET pending_ek_public = ek_public, pending_ek_cert = ek_cert,
				pending_ak_public = ak_public, pending_since = ?, ek_public = NULL, ek_cert = NULL, ak_public = NULL,
				activated = 0 WHERE name = ?`, now, b.name)
		} else {
			seen[b.fp] = true
			_, err = tx.ExecContext(ctx, "UPDATE hosts SET ek_fingerprint = ? WHERE name = ?", b.fp, b.name)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

type dialect int

const (
	dialectSQLite dialect = iota + 1
	dialectMySQL
	dialectPostgres
)

func (d dialect) expand(stmt string) string {
	var r *strings.Replacer
	switch d {
	case dialectSQLite:
		r = strings.NewReplacer("{name}", "TEXT", "{blob}", "BLOB", "{text}", "TEXT", "{int}", "INTEGER",
			"{bool}", "INTEGER", "{autoid}", "INTEGER PRIMARY KEY AUTOINCREMENT", "{engine}", "")
	case dialectPostgres:
		// Booleans are SMALLINT, as on the other databases an integer
		// (the connection sends Go bools as 0/1, see postgres.go).
		r = strings.NewReplacer("{name}", "VARCHAR(255)", "{blob}", "BYTEA", "{text}", "TEXT", "{int}", "BIGINT",
			"{bool}", "SMALLINT", "{autoid}", "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY", "{engine}", "")
	default:
		r = strings.NewReplacer("{name}", "VARCHAR(255)", "{blob}", "LONGBLOB", "{text}", "MEDIUMTEXT", "{int}", "BIGINT",
			"{bool}", "TINYINT(1)", "{autoid}", "BIGINT AUTO_INCREMENT PRIMARY KEY",
			"{engine}", " ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin")
	}
	return r.Replace(stmt)
}
