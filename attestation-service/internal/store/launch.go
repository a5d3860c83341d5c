package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// ErrStateChanged means a launch was no longer in the state a transition
// started from (another worker or request moved it).
var ErrStateChanged = errors.New("launch state changed")

// launchMigration is migration 4.
var launchMigration = []string{
	`CREATE TABLE launches (
		id {name} PRIMARY KEY,
		project_id {name} NOT NULL,
		user_id {name} NOT NULL,
		state {name} NOT NULL,
		profile {name} NOT NULL,
		kid {name} NOT NULL,
		sealed {blob},
		nonce_digest {name} NOT NULL,
		instance_id {name} NOT NULL DEFAULT '',
		host {name} NOT NULL DEFAULT '',
		host_id {name} NOT NULL DEFAULT '',
		not_after {int} NOT NULL,
		reasons {text} NOT NULL,
		verdict_seq {int} NOT NULL DEFAULT 0,
		evidence_digest {name} NOT NULL DEFAULT '',
		pcr_policy_digest {name} NOT NULL DEFAULT '',
		pcrs {text} NOT NULL,
		verified_at {int} NOT NULL DEFAULT 0,
		sealed_at {int} NOT NULL DEFAULT 0,
		delivered_at {int} NOT NULL DEFAULT 0,
		receipt {blob},
		created_at {int} NOT NULL,
		updated_at {int} NOT NULL){engine}`,
	// Nonces outlive their launches (a deleted launch's request stays
	// used) until their request expires.
	`CREATE TABLE launch_nonces (nonce_digest {name} PRIMARY KEY, not_after {int} NOT NULL){engine}`,
	`CREATE INDEX launches_project ON launches (project_id, created_at)`,
	`CREATE INDEX launches_instance ON launches (instance_id)`,
	`CREATE INDEX launches_state ON launches (state, not_after)`,
	`CREATE TABLE launch_history (id {autoid}, launch_id {name} NOT NULL, at {int} NOT NULL, state {name} NOT NULL,
		reasons {text} NOT NULL){engine}`,
	`CREATE INDEX launch_history_launch ON launch_history (launch_id, id)`,
}

// Launch is a trusted launch record.
type Launch struct {
	ID        string
	ProjectID string
	// UserID created it.
	UserID  string
	State   string
	Profile string
	// KID names the launch key the request was sealed to.
	KID string
	// Sealed is the tenant's sealed request; nil once the launch ended.
	Sealed []byte
	// NonceDigest (hex SHA-256 of the request's nonce) is accepted once,
	// even after the launch is deleted (until PruneLaunchNonces drops it
	// after NotAfter).
	NonceDigest string
	InstanceID  string
	// Host is the host the launch went to (operator data); HostID is the
	// hostId the tenant gave or Nova's for Host.
	Host, HostID string
	NotAfter     time.Time
	Reasons      []string
	// The fresh attestation and the sealing (receipt fields).
	VerdictSeq                      uint64
	EvidenceDigest, PCRPolicyDigest string
	PCRs                            []int
	VerifiedAt, SealedAt            time.Time
	DeliveredAt                     time.Time
	// Receipt is the latest signed receipt (JSON), nil before the first.
	Receipt   []byte
	CreatedAt time.Time
	UpdatedAt time.Time
}

// LaunchEvent is one state change of a launch.
type LaunchEvent struct {
	At      time.Time `json:"at"`
	State   string    `json:"state"`
	Reasons []string  `json:"reasons"`
	// Initiator says who asked for a re-delivery (package launch's
	// Initiator values); "" for the other events.
	Initiator string `json:"initiator,omitempty"`
}

// launchInitiatorMigration is migration 8: re-delivery events say who
// asked (a user through the API, or the host's agent).
var launchInitiatorMigration = []string{
	`ALTER TABLE launch_history ADD COLUMN initiator {name} NOT NULL DEFAULT ''`,
}

const launchCols = `id, project_id, user_id, state, profile, kid, sealed, nonce_digest, instance_id, host, host_id, not_after,
	reasons, verdict_seq, evidence_digest, pcr_policy_digest, pcrs, verified_at, sealed_at, delivered_at, receipt, created_at, updated_at`

func scanLaunch(row interface{ Scan(...any) error }) (*Launch, error) {
	var (
		l                                                  Launch
		notAfter, verified, sealed, delivered, created, up int64
		reasons, pcrs                                      string
	)
	err := row.Scan(&l.ID, &l.ProjectID, &l.UserID, &l.State, &l.Profile, &l.KID, &l.Sealed, &l.NonceDigest, &l.InstanceID,
		&l.Host, &l.HostID, &notAfter, &reasons, &l.VerdictSeq, &l.EvidenceDigest, &l.PCRPolicyDigest, &pcrs, &verified,
		&sealed, &delivered, &l.Receipt, &created, &up)
	if err != nil {
		return nil, err
	}
	l.NotAfter, l.VerifiedAt, l.SealedAt = fromMicros(notAfter), fromMicros(verified), fromMicros(sealed)
	l.DeliveredAt, l.CreatedAt, l.UpdatedAt = fromMicros(delivered), fromMicros(created), fromMicros(up)
	if err := json.Unmarshal([]byte(reasons), &l.Reasons); err != nil {
		return nil, fmt.Errorf("decode reasons: %w", err)
	}
	if err := json.Unmarshal([]byte(pcrs), &l.PCRs); err != nil {
		return nil, fmt.Errorf("decode pcrs: %w", err)
	}
	return &l, nil
}

func encInts(v []int) string {
	if v == nil {
		v = []int{}
	}
	b, _ := json.Marshal(v)
	return string(b)
}

func encStrings(v []string) string {
	b, _ := json.Marshal(nonNil(v))
	return string(b)
}

// CreateLaunch stores a new launch (state and first history entry). A
// request whose nonce digest is already stored wraps ErrExists.
func (s *Store) CreateLaunch(ctx context.Context, l *Launch) error {
	now := time.Now()
	l.CreatedAt, l.UpdatedAt = now.UTC(), now.UTC()
	err := s.tx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, "INSERT INTO launch_nonces (nonce_digest, not_after) VALUES (?, ?)",
			l.NonceDigest, micros(l.NotAfter)); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, "INSERT INTO launches ("+launchCols+`) VALUES
			(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
			l.ID, l.ProjectID, l.UserID, l.State, l.Profile, l.KID, l.Sealed, l.NonceDigest, l.InstanceID, l.Host, l.HostID,
			micros(l.NotAfter), encStrings(l.Reasons), l.VerdictSeq, l.EvidenceDigest, l.PCRPolicyDigest, encInts(l.PCRs),
			micros(l.VerifiedAt), micros(l.SealedAt), micros(l.DeliveredAt), l.Receipt, micros(now), micros(now))
		if err != nil {
			return err
		}
		return addLaunchEvent(ctx, tx, l.ID, LaunchEvent{At: now, State: l.State, Reasons: l.Reasons})
	})
	if isUniqueViolation(err) {
		return fmt.Errorf("launch request: %w", ErrExists)
	}
	if err != nil {
		return fmt.Errorf("create launch: %w", err)
	}
	return nil
}

func addLaunchEvent(ctx context.Context, tx *sql.Tx, id string, e LaunchEvent) error {
	if e.Initiator == "" {
		// The column's default (and the statement written before
		// migration 8, which tests run at older schema versions).
		_, err := tx.ExecContext(ctx, "INSERT INTO launch_history (launch_id, at, state, reasons) VALUES (?, ?, ?, ?)",
			id, micros(e.At), e.State, encStrings(e.Reasons))
		return err
	}
	_, err := tx.ExecContext(ctx, "INSERT INTO launch_history (launch_id, at, state, reasons, initiator) VALUES (?, ?, ?, ?, ?)",
		id, micros(e.At), e.State, encStrings(e.Reasons), e.Initiator)
	return err
}

// GetLaunch returns a launch, or an error wrapping ErrNotFound.
func (s *Store) GetLaunch(ctx context.Context, id string) (*Launch, error) {
	l, err := scanLaunch(s.db.QueryRowContext(ctx, "SELECT "+launchCols+" FROM launches WHERE id = ?", id))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("launch %q: %w", id, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("get launch %q: %w", id, err)
	}
	return l, nil
}

// ListLaunches returns launches, newest first, at most limit: those of
// projectID, or all when projectID is "".
func (s *Store) ListLaunches(ctx context.Context, projectID string, limit int) ([]*Launch, error) {
	q, args := "SELECT "+launchCols+" FROM launches", []any{}
	if projectID != "" {
		q += " WHERE project_id = ?"
		args = append(args, projectID)
	}
	q += " ORDER BY created_at DESC, id LIMIT ?"
	return s.queryLaunches(ctx, q, append(args, limit)...)
}

// LaunchesToExpire returns launches in state pending whose not_after is
// not after now.
func (s *Store) LaunchesToExpire(ctx context.Context, pending string, now time.Time, limit int) ([]*Launch, error) {
	return s.queryLaunches(ctx, "SELECT "+launchCols+" FROM launches WHERE state = ? AND not_after <= ? ORDER BY not_after LIMIT ?",
		pending, micros(now), limit)
}

// PendingWithInstance returns pending launches created with an instance id
// before before (their binding job was lost, e.g. to a restart).
func (s *Store) PendingWithInstance(ctx context.Context, pending string, before time.Time, limit int) ([]*Launch, error) {
	return s.queryLaunches(ctx, "SELECT "+launchCols+" FROM launches WHERE state = ? AND instance_id <> '' AND created_at < ? ORDER BY created_at LIMIT ?",
		pending, micros(before), limit)
}

// StaleLaunches returns launches in state that have not changed since
// before (a service restart left them behind).
func (s *Store) StaleLaunches(ctx context.Context, state string, before time.Time, limit int) ([]*Launch, error) {
	return s.queryLaunches(ctx, "SELECT "+launchCols+" FROM launches WHERE state = ? AND updated_at < ? ORDER BY updated_at LIMIT ?",
		state, micros(before), limit)
}

func (s *Store) queryLaunches(ctx context.Context, q string, args ...any) ([]*Launch, error) {
	rows, err := s.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("list launches: %w", err)
	}
	defer rows.Close()
	out := []*Launch{}
	for rows.Next() {
		l, err := scanLaunch(rows)
		if err != nil {
			return nil, fmt.Errorf("list launches: %w", err)
		}
		out = append(out, l)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list launches: %w", err)
	}
	return out, nil
}

// TransitionLaunch writes l (every field but the id, project, user,
// nonce digest and creation time) if the launch is still in state from,
// and appends its new state (with l.Reasons) to the history; otherwise
// it wraps ErrStateChanged (or ErrNotFound).
func (s *Store) TransitionLaunch(ctx context.Context, l *Launch, from string) error {
	return s.updateLaunch(ctx, l, from, l.State, "")
}

// TransitionLaunchBy is TransitionLaunch with the history entry naming
// who asked for the change (a re-delivery's initiator).
func (s *Store) TransitionLaunchBy(ctx context.Context, l *Launch, from, initiator string) error {
	return s.updateLaunch(ctx, l, from, l.State, initiator)
}

// RecordLaunchEvent writes l like TransitionLaunch but records event as
// the history entry's state (with l.Reasons and initiator): an attempt
// that leaves the launch in its state, such as a refused re-delivery of a
// delivered launch.
func (s *Store) RecordLaunchEvent(ctx context.Context, l *Launch, from, event, initiator string) error {
	return s.updateLaunch(ctx, l, from, event, initiator)
}

func (s *Store) updateLaunch(ctx context.Context, l *Launch, from, event, initiator string) error {
	now := time.Now()
	err := s.tx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE launches SET state = ?, profile = ?, kid = ?, sealed = ?, instance_id = ?, host = ?,
			host_id = ?, not_after = ?, reasons = ?, verdict_seq = ?, evidence_digest = ?, pcr_policy_digest = ?, pcrs = ?,
			verified_at = ?, sealed_at = ?, delivered_at = ?, receipt = ?, updated_at = ? WHERE id = ? AND state = ?`,
			l.State, l.Profile, l.KID, l.Sealed, l.InstanceID, l.Host, l.HostID, micros(l.NotAfter), encStrings(l.Reasons),
			l.VerdictSeq, l.EvidenceDigest, l.PCRPolicyDigest, encInts(l.PCRs), micros(l.VerifiedAt), micros(l.SealedAt),
			micros(l.DeliveredAt), l.Receipt, micros(now), l.ID, from)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			var cur string
			switch err := tx.QueryRowContext(ctx, "SELECT state FROM launches WHERE id = ?", l.ID).Scan(&cur); {
			case errors.Is(err, sql.ErrNoRows):
				return fmt.Errorf("launch %q: %w", l.ID, ErrNotFound)
			case err != nil:
				return err
			}
			return fmt.Errorf("launch %q is %s, not %s: %w", l.ID, cur, from, ErrStateChanged)
		}
		return addLaunchEvent(ctx, tx, l.ID, LaunchEvent{At: now, State: event, Reasons: l.Reasons, Initiator: initiator})
	})
	if err != nil {
		return fmt.Errorf("update launch: %w", err)
	}
	l.UpdatedAt = now.UTC()
	return nil
}

// LaunchHistory returns a launch's state changes, oldest first.
func (s *Store) LaunchHistory(ctx context.Context, id string) ([]LaunchEvent, error) {
	rows, err := s.db.QueryContext(ctx, "SELECT at, state, reasons, initiator FROM launch_history WHERE launch_id = ? ORDER BY id", id)
	if err != nil {
		return nil, fmt.Errorf("launch history of %q: %w", id, err)
	}
	defer rows.Close()
	out := []LaunchEvent{}
	for rows.Next() {
		var (
			e       LaunchEvent
			at      int64
			reasons string
		)
		if err := rows.Scan(&at, &e.State, &reasons, &e.Initiator); err != nil {
			return nil, fmt.Errorf("launch history of %q: %w", id, err)
		}
		e.At = fromMicros(at)
		if err := json.Unmarshal([]byte(reasons), &e.Reasons); err != nil {
			return nil, fmt.Errorf("launch history of %q: %w", id, err)
		}
		out = append(out, e)
	}
	return out, rows.Err()
}

// DeleteLaunch removes a launch and its history if it is in one of states
// (ErrStateChanged otherwise, ErrNotFound when missing). Its nonce digest
// stays: the sealed request remains used.
func (s *Store) DeleteLaunch(ctx context.Context, id string, states ...string) error {
	return s.tx(ctx, func(tx *sql.Tx) error {
		var cur string
		switch err := tx.QueryRowContext(ctx, "SELECT state FROM launches WHERE id = ?", id).Scan(&cur); {
		case errors.Is(err, sql.ErrNoRows):
			return fmt.Errorf("launch %q: %w", id, ErrNotFound)
		case err != nil:
			return fmt.Errorf("delete launch %q: %w", id, err)
		}
		ok := false
		for _, st := range states {
			ok = ok || st == cur
		}
		if !ok {
			return fmt.Errorf("launch %q is %s: %w", id, cur, ErrStateChanged)
		}
		if _, err := tx.ExecContext(ctx, "DELETE FROM launch_history WHERE launch_id = ?", id); err != nil {
			return fmt.Errorf("delete launch %q: %w", id, err)
		}
		res, err := tx.ExecContext(ctx, "DELETE FROM launches WHERE id = ? AND state = ?", id, cur)
		if err != nil {
			return fmt.Errorf("delete launch %q: %w", id, err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return fmt.Errorf("launch %q: %w", id, ErrStateChanged)
		}
		return nil
	})
}

// PruneLaunchNonces forgets the nonces of requests that expired before
// before (such a request is refused as expired anyway) and returns how many
// it dropped.
func (s *Store) PruneLaunchNonces(ctx context.Context, before time.Time) (int64, error) {
	res, err := s.db.ExecContext(ctx, "DELETE FROM launch_nonces WHERE not_after < ?", micros(before))
	if err != nil {
		return 0, fmt.Errorf("prune launch nonces: %w", err)
	}
	n, _ := res.RowsAffected()
	return n, nil
}
