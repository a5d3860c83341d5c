package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// State shared by the service instances of one deployment: their
// membership (heartbeats, from which each instance derives the live
// members and so which hosts it attests) and the enrollment challenges,
// which a register_host answered by one instance and the
// activate_credential handled by another must both see.

// ErrTooMany means the table holds as many live enrollment challenges as
// the caller allows.
var ErrTooMany = errors.New("too many pending entries")

// Member is one service instance's membership row.
type Member struct {
	// Name is the instance's [DEFAULT] host.
	Name string
	// Incarnation is random per process: a row with another incarnation
	// under one's own name means a second live instance uses that name.
	Incarnation string
	StartedAt   time.Time
	// HeartbeatAt is when the instance last renewed its lease (its own
	// clock).
	HeartbeatAt time.Time
	// KID and PublicKeyPEM are the instance's verdict signing key.
	KID          string
	PublicKeyPEM string
}

// Heartbeat creates or renews m's membership row.
func (s *Store) Heartbeat(ctx context.Context, m Member) error {
	err := s.tx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE members SET incarnation = ?, started_at = ?, heartbeat_at = ?, kid = ?, public_key = ?
			WHERE name = ?`, m.Incarnation, micros(m.StartedAt), micros(m.HeartbeatAt), m.KID, m.PublicKeyPEM, m.Name)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n > 0 {
			return nil
		}
		_, err = tx.ExecContext(ctx, `INSERT INTO members (name, incarnation, started_at, heartbeat_at, kid, public_key)
			VALUES (?, ?, ?, ?, ?, ?)`, m.Name, m.Incarnation, micros(m.StartedAt), micros(m.HeartbeatAt), m.KID, m.PublicKeyPEM)
		return err
	})
	if err != nil {
		return fmt.Errorf("membership heartbeat of %q: %w", m.Name, err)
	}
	return nil
}

// Members returns every membership row, live or not, sorted by name.
func (s *Store) Members(ctx context.Context) ([]Member, error) {
	rows, err := s.db.QueryContext(ctx, "SELECT name, incarnation, started_at, heartbeat_at, kid, public_key FROM members ORDER BY name")
	if err != nil {
		return nil, fmt.Errorf("list members: %w", err)
	}
	defer rows.Close()
	var out []Member
	for rows.Next() {
		var (
			m       Member
			st, hbt int64
		)
		if err := rows.Scan(&m.Name, &m.Incarnation, &st, &hbt, &m.KID, &m.PublicKeyPEM); err != nil {
			return nil, fmt.Errorf("list members: %w", err)
		}
		m.StartedAt, m.HeartbeatAt = fromMicros(st), fromMicros(hbt)
		out = append(out, m)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list members: %w", err)
	}
	return out, nil
}

// LeaveCluster deletes the membership row of name when it still carries
// incarnation (a graceful stop hands the instance's hosts over at once).
func (s *Store) LeaveCluster(ctx context.Context, name, incarnation string) error {
	if _, err := s.db.ExecContext(ctx, "DELETE FROM members WHERE name = ? AND incarnation = ?", name, incarnation); err != nil {
		return fmt.Errorf("leave cluster: %w", err)
	}
	return nil
}

// PruneMembers deletes the rows of members not heard from since before.
func (s *Store) PruneMembers(ctx context.Context, before time.Time) (int64, error) {
	res, err := s.db.ExecContext(ctx, "DELETE FROM members WHERE heartbeat_at < ?", micros(before))
	if err != nil {
		return 0, fmt.Errorf("prune members: %w", err)
	}
	n, _ := res.RowsAffected()
	return n, nil
}

// Challenge is a pending enrollment challenge: what register_host
// received, and a hash of the credential secret (never the secret: a
// database reader must not be able to answer a challenge without the TPM).
type Challenge struct {
	ID           string
	Host         string
	EKPublic     []byte
	EKCert       []byte
	AKPublic     []byte
	AgentVersion string
	// SecretHash is SHA-256 of the MakeCredential secret.
	SecretHash []byte
	Expires    time.Time
}

// PutChallenge stores c unless max or more unexpired challenges are
// pending (ErrTooMany).
func (s *Store) PutChallenge(ctx context.Context, c Challenge, now time.Time, maxPending int) error {
	err := s.tx(ctx, func(tx *sql.Tx) error {
		var n int
		if err := tx.QueryRowContext(ctx, "SELECT COUNT(*) FROM enroll_challenges WHERE expires_at > ?", micros(now)).Scan(&n); err != nil {
			return err
		}
		if n >= maxPending {
			return ErrTooMany
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO enroll_challenges (id, host, ek_public, ek_cert, ak_public, agent_version, secret_hash, expires_at)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?)`, c.ID, c.Host, c.EKPublic, c.EKCert, c.AKPublic, c.AgentVersion, c.SecretHash, micros(c.Expires))
		return err
	})
	if err != nil {
		return fmt.Errorf("put enrollment challenge: %w", err)
	}
	return nil
}

// TakeChallenge removes and returns challenge id: one caller at most gets
// it, whatever the instances race. A missing one wraps ErrNotFound.
func (s *Store) TakeChallenge(ctx context.Context, id string) (Challenge, error) {
	c := Challenge{ID: id}
	err := s.tx(ctx, func(tx *sql.Tx) error {
		var exp int64
		err := tx.QueryRowContext(ctx, `SELECT host, ek_public, ek_cert, ak_public, agent_version, secret_hash, expires_at
			FROM enroll_challenges WHERE id = ?`, id).Scan(&c.Host, &c.EKPublic, &c.EKCert, &c.AKPublic, &c.AgentVersion, &c.SecretHash, &exp)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("challenge: %w", ErrNotFound)
		}
		if err != nil {
			return err
		}
		c.Expires = fromMicros(exp)
		res, err := tx.ExecContext(ctx, "DELETE FROM enroll_challenges WHERE id = ?", id)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n != 1 {
			return fmt.Errorf("challenge: %w", ErrNotFound)
		}
		return nil
	})
	if err != nil {
		return Challenge{}, fmt.Errorf("take enrollment challenge: %w", err)
	}
	return c, nil
}

// DropChallenges deletes every challenge issued to host and returns how
// many.
func (s *Store) DropChallenges(ctx context.Context, host string) (int64, error) {
	res, err := s.db.ExecContext(ctx, "DELETE FROM enroll_challenges WHERE host = ?", host)
	if err != nil {
		return 0, fmt.Errorf("drop enrollment challenges: %w", err)
	}
	n, _ := res.RowsAffected()
	return n, nil
}

// PruneChallenges deletes the challenges that expired before now.
func (s *Store) PruneChallenges(ctx context.Context, now time.Time) (int64, error) {
	res, err := s.db.ExecContext(ctx, "DELETE FROM enroll_challenges WHERE expires_at < ?", micros(now))
	if err != nil {
		return 0, fmt.Errorf("prune enrollment challenges: %w", err)
	}
	n, _ := res.RowsAffected()
	return n, nil
}

// CountChallenges is the number of stored challenges, expired ones
// included.
func (s *Store) CountChallenges(ctx context.Context) (int, error) {
	var n int
	if err := s.db.QueryRowContext(ctx, "SELECT COUNT(*) FROM enroll_challenges").Scan(&n); err != nil {
		return 0, fmt.Errorf("count enrollment challenges: %w", err)
	}
	return n, nil
}
