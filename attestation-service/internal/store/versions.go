package store

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"time"
)

// Profile versions (migration 6). A profile holds numbered versions, each a
// complete profile document (Body, the TOML of one policy.Profile) in a
// rollout state. The profiles table keeps, in its body, the latest
// approved version's document: the flat profile API and everything built on
// it (export, Placement trait mirroring, the launcher) read it unchanged.
//
// State changes are compare-and-set in one transaction with the
// recomputation of the flat body and the profiles generation, so the engine
// never sees a half-made change. Every write to a profile's versions first
// locks the profile's row (lockProfile), so writers of one profile
// serialise and each checks the versions as the previous one left them.

// Version states.
const (
	// VersionCandidate: stored, accepted nowhere.
	VersionCandidate = "candidate"
	// VersionCanary: accepted only on the version's Hosts and on the
	// hosts its Fraction selects.
	VersionCanary = "canary"
	// VersionApproved: accepted on every host.
	VersionApproved = "approved"
	// VersionRetired: accepted nowhere, for good.
	VersionRetired = "retired"
)

// VersionStates lists the states in life-cycle order.
var VersionStates = []string{VersionCandidate, VersionCanary, VersionApproved, VersionRetired}

// transitions are the allowed state changes. Retired is final: a build
// taken out of service comes back, if ever, as a new version that is
// reviewed again. Canary to canary changes the named hosts and the
// fraction.
var transitions = map[string][]string{
	VersionCandidate: {VersionCanary, VersionApproved, VersionRetired},
	VersionCanary:    {VersionCanary, VersionCandidate, VersionApproved, VersionRetired},
	VersionApproved:  {VersionRetired},
}

// Reasons of a refused state change (VersionStateError.Reason).
const (
	ReasonInvalidTransition = "invalid_transition"
	ReasonLastApproved      = "last_approved_version"
	ReasonStateChanged      = "state_changed"
	ReasonCanaryHosts       = "canary_needs_hosts"
	ReasonHostsNotCanary    = "hosts_only_for_canary"
	ReasonFractionNotCanary = "fraction_only_for_canary"
	ReasonInvalidFraction   = "invalid_fraction"
	ReasonUnknownState      = "unknown_state"
)

// VersionStateError says why a state change of a version was refused.
// Reason is one of the Reason* constants; BadRequest says whether the
// request itself was malformed (rather than conflicting with the stored
// state). For ReasonStateChanged, From is the stored state ("" when not
// known) and To the state the request expected.
type VersionStateError struct {
	Profile    string
	Version    int
	From, To   string
	Reason     string
	BadRequest bool
}

func (e *VersionStateError) Error() string {
	switch e.Reason {
	case ReasonLastApproved:
		return fmt.Sprintf("profile %q version %d is its only approved version: retiring it would leave the profile accepting nothing; "+
			"approve another version first, or delete the profile", e.Profile, e.Version)
	case ReasonStateChanged:
		if e.From == "" {
			return fmt.Sprintf("profile %q version %d is no longer %s: it changed meanwhile", e.Profile, e.Version, e.To)
		}
		return fmt.Sprintf("profile %q version %d is %s, not %s: it changed meanwhile", e.Profile, e.Version, e.From, e.To)
	case ReasonCanaryHosts:
		return fmt.Sprintf("profile %q version %d: a canary version needs the hosts it is accepted on, a fraction of hosts, or both", e.Profile, e.Version)
	case ReasonHostsNotCanary:
		return fmt.Sprintf("profile %q version %d: hosts are only for the canary state, not %s", e.Profile, e.Version, e.To)
	case ReasonFractionNotCanary:
		return fmt.Sprintf("profile %q version %d: a fraction is only for the canary state, not %s", e.Profile, e.Version, e.To)
	case ReasonInvalidFraction:
		return fmt.Sprintf("profile %q version %d: fraction must be more than 0 and at most 1", e.Profile, e.Version)
	case ReasonUnknownState:
		return fmt.Sprintf("profile %q version %d: unknown state %q (states: candidate, canary, approved, retired)", e.Profile, e.Version, e.To)
	}
	return fmt.Sprintf("profile %q version %d: cannot go from %s to %s", e.Profile, e.Version, e.From, e.To)
}

// ProfileVersion is one version of a profile.
type ProfileVersion struct {
	Profile string
	Version int
	State   string
	// Hosts are the hosts a canary version is accepted on (nil otherwise).
	Hosts []string
	// Fraction, in (0, 1], is the share of hosts a canary version is also
	// accepted on, selected by CanarySelects (0: none; always 0 outside
	// canary).
	Fraction float64
	// Body is the version's document (TOML of one profile).
	Body string
	// Source says where the version came from (learn, import, migration).
	Source    string
	CreatedAt time.Time
	UpdatedAt time.Time
}

// Accepts reports whether the version is accepted on host: approved, or a
// canary naming host or selecting it by its fraction.
func (v *ProfileVersion) Accepts(host string) bool {
	return v.State == VersionApproved || v.State == VersionCanary &&
		(slices.Contains(v.Hosts, host) || CanarySelects(v.Profile, v.Version, host, v.Fraction))
}

// CanarySelects reports whether a canary fraction of version of profile
// selects host. No per-host list is stored: the first 8 bytes of
// SHA-256(profile NUL version NUL host), the version in decimal and host
// its enrolled name (the hosts table's key), read as a big-endian uint64,
// are compared with fraction·2^64. So the choice is the same on every
// service instance and every round, a host enrolled later is selected by
// the same rule, and raising the fraction only adds hosts (a staged
// rollout never drops a host it already moved). Each version selects
// its own hosts: the hash includes the version number.
func CanarySelects(profile string, version int, host string, fraction float64) bool {
	switch {
	case !(fraction > 0):
		return false
	case fraction >= 1:
		return true
	}
	sum := sha256.Sum256([]byte(profile + "\x00" + strconv.Itoa(version) + "\x00" + host))
	// fraction < 1, so fraction·2^64 (exact: a power-of-two scaling) is
	// below 2^64 and converts without overflow.
	return binary.BigEndian.Uint64(sum[:8]) < uint64(math.Ldexp(fraction, 64))
}

// validFraction reports whether f is a fraction a canary may take.
func validFraction(f float64) bool { return f > 0 && f <= 1 }

// Fractions are stored as text, the shortest decimal that reads back as
// the same float64: every engine keeps it exactly, where float columns
// differ in how they round-trip.
func encFraction(f float64) sql.NullString {
	if f == 0 {
		return sql.NullString{}
	}
	return sql.NullString{String: strconv.FormatFloat(f, 'g', -1, 64), Valid: true}
}

func decFraction(s sql.NullString) (float64, error) {
	if !s.Valid {
		return 0, nil
	}
	f, err := strconv.ParseFloat(s.String, 64)
	if err != nil || !validFraction(f) {
		return 0, fmt.Errorf("decode canary fraction %q: not in (0, 1]", s.String)
	}
	return f, nil
}

var versionMigration = []string{
	`CREATE TABLE profile_versions (profile {name} NOT NULL, version {int} NOT NULL, state {name} NOT NULL,
		hosts {text}, body {text} NOT NULL, source {text} NOT NULL, created_at {int} NOT NULL, updated_at {int} NOT NULL,
		PRIMARY KEY (profile, version)){engine}`,
}

// versionMigrationPost makes every existing profile its version 1,
// approved: verdicts do not change.
var versionMigrationPost = []string{
	`INSERT INTO profile_versions (profile, version, state, hosts, body, source, created_at, updated_at)
		SELECT name, 1, 'approved', NULL, body, 'profile before versions', updated_at, updated_at FROM profiles`,
}

// canaryFractionMigration (migration 7) adds a canary's fraction of hosts
// (NULL: none, as for every version before it).
var canaryFractionMigration = []string{
	`ALTER TABLE profile_versions ADD COLUMN fraction {name}`,
}

const versionCols = "profile, version, state, hosts, fraction, body, source, created_at, updated_at"

type querier interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

func queryVersions(ctx context.Context, q querier, where string, args ...any) ([]ProfileVersion, error) {
	rows, err := q.QueryContext(ctx, "SELECT "+versionCols+" FROM profile_versions "+where+" ORDER BY profile, version", args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := []ProfileVersion{}
	for rows.Next() {
		var (
			v        ProfileVersion
			hosts    sql.NullString
			fraction sql.NullString
			cre, upd int64
		)
		if err := rows.Scan(&v.Profile, &v.Version, &v.State, &hosts, &fraction, &v.Body, &v.Source, &cre, &upd); err != nil {
			return nil, err
		}
		if v.Hosts, err = decList(hosts); err != nil {
			return nil, err
		}
		if v.Fraction, err = decFraction(fraction); err != nil {
			return nil, err
		}
		v.CreatedAt, v.UpdatedAt = fromMicros(cre), fromMicros(upd)
		out = append(out, v)
	}
	return out, rows.Err()
}

// AllProfileVersions returns every version of every profile, by profile
// and version.
func (s *Store) AllProfileVersions(ctx context.Context) ([]ProfileVersion, error) {
	out, err := queryVersions(ctx, s.db, "")
	if err != nil {
		return nil, fmt.Errorf("list profile versions: %w", err)
	}
	return out, nil
}

// ProfileVersions returns a profile's versions, oldest first, or an error
// wrapping ErrNotFound when the profile does not exist.
func (s *Store) ProfileVersions(ctx context.Context, profile string) ([]ProfileVersion, error) {
	if _, err := s.GetProfile(ctx, profile); err != nil {
		return nil, err
	}
	out, err := queryVersions(ctx, s.db, "WHERE profile = ?", profile)
	if err != nil {
		return nil, fmt.Errorf("list versions of profile %q: %w", profile, err)
	}
	return out, nil
}

// GetProfileVersion returns one version or an error wrapping ErrNotFound.
func (s *Store) GetProfileVersion(ctx context.Context, profile string, version int) (ProfileVersion, error) {
	out, err := queryVersions(ctx, s.db, "WHERE profile = ? AND version = ?", profile, version)
	if err != nil {
		return ProfileVersion{}, fmt.Errorf("get profile %q version %d: %w", profile, version, err)
	}
	if len(out) == 0 {
		return ProfileVersion{}, fmt.Errorf("profile %q version %d: %w", profile, version, ErrNotFound)
	}
	return out[0], nil
}

// AddProfileVersion stores a new version of an existing profile as a
// candidate (accepted nowhere until its state changes) and returns its
// number, one more than the highest so far.
func (s *Store) AddProfileVersion(ctx context.Context, profile, body, source string) (int, error) {
	var (
		n   int
		err error
	)
	// Writers of one profile serialise on its row (lockProfile); should
	// two still pick the same number, the primary key refuses the second,
	// which takes the next number.
	for range 5 {
		if n, err = s.addProfileVersion(ctx, profile, body, source); err == nil || !isUniqueViolation(err) {
			break
		}
	}
	return n, err
}

func (s *Store) addProfileVersion(ctx context.Context, profile, body, source string) (int, error) {
	var n int
	err := s.tx(ctx, func(tx *sql.Tx) error {
		exists, err := s.lockProfile(ctx, tx, profile)
		if err != nil {
			return fmt.Errorf("add version of profile %q: %w", profile, err)
		}
		if !exists {
			return fmt.Errorf("profile %q: %w", profile, ErrNotFound)
		}
		if n, err = insertVersion(ctx, tx, profile, VersionCandidate, body, source); err != nil {
			return fmt.Errorf("add version of profile %q: %w", profile, err)
		}
		return nil
	})
	return n, err
}

// forUpdate makes a one-row SELECT lock the rows it reads until the
// transaction ends, where the engine has row locks (MariaDB, PostgreSQL);
// SQLite's write transactions hold the whole database already.
func (s *Store) forUpdate(q string) string {
	if s.dialect == dialectSQLite {
		return q
	}
	return q + " FOR UPDATE"
}

// lockProfile locks profile's row in the profiles table for the rest of
// tx and reports whether the profile exists. Writers of a profile's
// versions take it before reading them: on MariaDB (repeatable read) and
// PostgreSQL (read committed) plain reads do not block, so two writers
// could otherwise both pass a check (the version's state, "not the last
// approved version") on what the other is changing. The lock is the
// transaction's first read, so the reads after it see every change
// committed before it was granted (InnoDB takes its snapshot at the
// first plain read; PostgreSQL at each statement). SQLite needs no lock:
// its write transactions are serial (_txlock=immediate).
func (s *Store) lockProfile(ctx context.Context, tx *sql.Tx, profile string) (bool, error) {
	var one int
	err := tx.QueryRowContext(ctx, s.forUpdate("SELECT 1 FROM profiles WHERE name = ?"), profile).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	return err == nil, err
}

// insertVersion adds the next version of profile. Two writers adding at
// once collide on the primary key; the loser's transaction fails (a unique
// violation) and may be retried.
func insertVersion(ctx context.Context, tx *sql.Tx, profile, state, body, source string) (int, error) {
	var last sql.NullInt64
	if err := tx.QueryRowContext(ctx, "SELECT MAX(version) FROM profile_versions WHERE profile = ?", profile).Scan(&last); err != nil {
		return 0, err
	}
	n := int(last.Int64) + 1
	now := micros(time.Now())
	_, err := tx.ExecContext(ctx, "INSERT INTO profile_versions ("+versionCols+") VALUES (?, ?, ?, NULL, NULL, ?, ?, ?, ?)",
		profile, n, state, body, source, now, now)
	return n, err
}

// SetProfileVersionState moves a version from state from to state to
// (hosts and fraction: the canary's named hosts and fraction of hosts,
// only with to == canary, at least one of them; fraction 0 is none).
// Leaving canary clears both. from guards against a concurrent change:
// when the stored state differs the change is refused with
// ReasonStateChanged. Refusals are *VersionStateError.
func (s *Store) SetProfileVersionState(ctx context.Context, profile string, version int, from, to string, hosts []string, fraction float64) error {
	refuse := func(reason string, bad bool) error {
		return &VersionStateError{Profile: profile, Version: version, From: from, To: to, Reason: reason, BadRequest: bad}
	}
	switch {
	case !slices.Contains(VersionStates, to):
		return refuse(ReasonUnknownState, true)
	case fraction != 0 && !validFraction(fraction):
		return refuse(ReasonInvalidFraction, true)
	case to == VersionCanary && len(hosts) == 0 && fraction == 0:
		return refuse(ReasonCanaryHosts, true)
	case to != VersionCanary && len(hosts) > 0:
		return refuse(ReasonHostsNotCanary, true)
	case to != VersionCanary && fraction != 0:
		return refuse(ReasonFractionNotCanary, true)
	}
	return s.tx(ctx, func(tx *sql.Tx) error {
		exists, err := s.lockProfile(ctx, tx, profile)
		if err != nil {
			return fmt.Errorf("set state of profile %q version %d: %w", profile, version, err)
		}
		if !exists {
			return fmt.Errorf("profile %q version %d: %w", profile, version, ErrNotFound)
		}
		var cur string
		err = tx.QueryRowContext(ctx, "SELECT state FROM profile_versions WHERE profile = ? AND version = ?", profile, version).Scan(&cur)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("profile %q version %d: %w", profile, version, ErrNotFound)
		}
		if err != nil {
			return fmt.Errorf("set state of profile %q version %d: %w", profile, version, err)
		}
		if cur != from {
			return &VersionStateError{Profile: profile, Version: version, From: cur, To: from, Reason: ReasonStateChanged}
		}
		if !slices.Contains(transitions[from], to) {
			return refuse(ReasonInvalidTransition, false)
		}
		if from == VersionApproved {
			var others int
			if err := tx.QueryRowContext(ctx, "SELECT COUNT(*) FROM profile_versions WHERE profile = ? AND state = ? AND version <> ?",
				profile, VersionApproved, version).Scan(&others); err != nil {
				return fmt.Errorf("set state of profile %q version %d: %w", profile, version, err)
			}
			if others == 0 {
				return refuse(ReasonLastApproved, false)
			}
		}
		var hl, fl sql.NullString
		if to == VersionCanary {
			if len(hosts) > 0 {
				if hl, err = encList(hosts); err != nil {
					return err
				}
			}
			fl = encFraction(fraction)
		}
		// Conditional on the state checked: under the profile lock it
		// cannot have changed, but a writer that skipped the lock is
		// refused rather than overwritten.
		res, err := tx.ExecContext(ctx, "UPDATE profile_versions SET state = ?, hosts = ?, fraction = ?, updated_at = ? WHERE profile = ? AND version = ? AND state = ?",
			to, hl, fl, micros(time.Now()), profile, version, from)
		if err != nil {
			return fmt.Errorf("set state of profile %q version %d: %w", profile, version, err)
		}
		if n, err := res.RowsAffected(); err != nil {
			return fmt.Errorf("set state of profile %q version %d: %w", profile, version, err)
		} else if n == 0 {
			return &VersionStateError{Profile: profile, Version: version, To: from, Reason: ReasonStateChanged}
		}
		if err := syncFlatBody(ctx, tx, profile); err != nil {
			return fmt.Errorf("set state of profile %q version %d: %w", profile, version, err)
		}
		return bumpProfiles(ctx, tx)
	})
}

// syncFlatBody copies the latest approved version's document into the
// profiles table (the flat view). A profile always keeps one approved
// version (SetProfileVersionState refuses to retire the last).
func syncFlatBody(ctx context.Context, tx *sql.Tx, profile string) error {
	var body string
	err := tx.QueryRowContext(ctx, `SELECT body FROM profile_versions WHERE profile = ? AND state = ?
		ORDER BY version DESC LIMIT 1`, profile, VersionApproved).Scan(&body)
	if err != nil {
		return err
	}
	_, err = tx.ExecContext(ctx, "UPDATE profiles SET body = ?, updated_at = ? WHERE name = ?", body, micros(time.Now()), profile)
	return err
}

// FlatWrite says what a flat profile write (PutFlatProfile) did to the
// profile's versions.
type FlatWrite struct {
	// Created: the profile is new; Version is its version 1, approved.
	Created bool
	// Changed: a version was created (always with Created). False when
	// the document equals the latest approved version's: nothing was
	// stored.
	Changed bool
	// Version is the approved version holding the document: the one
	// created, or the latest approved one when nothing changed.
	Version int
	// Retired is the version the write replaced and retired (0: none).
	Retired int
	// Source is the new version's Source.
	Source string
}

// flatSource is the Source of versions the flat profile API creates.
const flatSource = "profile API"

// putFlatVersion writes a flat profile write into its versions. A new
// profile gets version 1, approved. A replaced one whose document
// differs from its latest approved version's gets a new version, approved,
// and that version is retired in the same transaction: an approved
// reference is never edited in place, and the profile is never without
// an approved version. Other approved versions (a rollout in progress)
// stay as they are. The caller holds the profile's lock (lockProfile), so
// no other writer changes its versions meanwhile; the retirement is still
// guarded like a state change: when the version is no longer approved the
// write is refused with ReasonStateChanged.
func putFlatVersion(ctx context.Context, tx *sql.Tx, profile, body string, created bool) (FlatWrite, error) {
	w := FlatWrite{Created: created, Changed: true, Source: flatSource}
	if created {
		n, err := insertVersion(ctx, tx, profile, VersionApproved, body, flatSource)
		w.Version = n
		return w, err
	}
	var (
		latest  int
		current string
	)
	err := tx.QueryRowContext(ctx, `SELECT version, body FROM profile_versions WHERE profile = ? AND state = ?
		ORDER BY version DESC LIMIT 1`, profile, VersionApproved).Scan(&latest, &current)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		// Not left by this package (the last approved version cannot be
		// retired), but a profile the flat API writes is accepted.
		w.Version, err = insertVersion(ctx, tx, profile, VersionApproved, body, flatSource)
		return w, err
	case err != nil:
		return w, err
	case current == body:
		return FlatWrite{Version: latest}, nil
	}
	res, err := tx.ExecContext(ctx, "UPDATE profile_versions SET state = ?, hosts = NULL, fraction = NULL, updated_at = ? WHERE profile = ? AND version = ? AND state = ?",
		VersionRetired, micros(time.Now()), profile, latest, VersionApproved)
	if err != nil {
		return w, err
	}
	if n, err := res.RowsAffected(); err != nil {
		return w, err
	} else if n == 0 {
		return w, &VersionStateError{Profile: profile, Version: latest, From: VersionRetired, To: VersionApproved, Reason: ReasonStateChanged}
	}
	w.Retired = latest
	w.Version, err = insertVersion(ctx, tx, profile, VersionApproved, body, flatSource)
	return w, err
}

// CanaryHosts returns the hosts, sorted by name, that version v is
// accepted on as a canary now: the named hosts and the enrolled hosts its
// fraction selects (named hosts that no longer exist are left out). It is
// empty for a version that is not a canary.
func (s *Store) CanaryHosts(ctx context.Context, v ProfileVersion) ([]string, error) {
	out := []string{}
	if v.State != VersionCanary {
		return out, nil
	}
	rows, err := s.db.QueryContext(ctx, "SELECT name FROM hosts")
	if err != nil {
		return nil, fmt.Errorf("canary hosts of profile %q version %d: %w", v.Profile, v.Version, err)
	}
	defer rows.Close()
	for rows.Next() {
		var name string
		if err := rows.Scan(&name); err != nil {
			return nil, fmt.Errorf("canary hosts of profile %q version %d: %w", v.Profile, v.Version, err)
		}
		if v.Accepts(name) {
			out = append(out, name)
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("canary hosts of profile %q version %d: %w", v.Profile, v.Version, err)
	}
	slices.Sort(out)
	return out, nil
}
