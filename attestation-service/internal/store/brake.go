package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"time"
)

// The mass-revocation brake's window (package revocation), shared by the
// service instances of one deployment: every transition of a host to
// untrusted is a row of revocation_brake (when, host, and what was done:
// "disable" or "braked"), and the counters row "revocation_brake" holds
// the id of the row that engaged the brake (0: released). Every decision
// locks that row first (SELECT … FOR UPDATE; SQLite takes its write lock
// at BEGIN), so two instances never both take the last slot, and ids,
// assigned under the lock, follow the order slots were taken in. A row's
// at is when the transition was seen, which need not: an instance waiting
// for the lock, or re-queueing after a database error, records an earlier
// at after a later one. So the rows an engaged brake held are those from
// the engaging row's id on, not those from its at on.

// brakeLock names the counters row that serialises brake decisions.
const brakeLock = "revocation_brake"

// Brake row actions.
const (
	BrakeDisable = "disable"
	BrakeHeld    = "braked"
)

// BrakeState is the brake's window and state after a decision.
type BrakeState struct {
	// Held: the brake holds (the transition just recorded is not to be
	// acted on).
	Held bool
	// Engaged: this call engaged the brake (the caller alerts).
	Engaged bool
	// Released: this call released the brake (the caller says so);
	// Skipped then lists the hosts held while it was engaged.
	Released bool
	Skipped  []string
	// Hosts are the hosts with a transition in the window, sorted.
	Hosts []string
	// Next is when the window next loses a host (zero: it is empty).
	Next time.Time
}

// TakeBrakeSlot records host's transition to untrusted at at and decides,
// atomically across instances, whether it may be acted on: the window is
// the transitions after since, counted once per host. With this
// transition in it, a window of more than limit hosts engages a released
// brake, and one of at most limit hosts releases an engaged brake (the
// window slid while no instance looked). The transition is held while the
// brake is engaged.
func (s *Store) TakeBrakeSlot(ctx context.Context, host string, at, since time.Time, limit int, window time.Duration) (BrakeState, error) {
	var st BrakeState
	err := s.tx(ctx, func(tx *sql.Tx) error {
		st = BrakeState{}
		engagedID, latest, err := s.lockBrake(ctx, tx, since)
		if err != nil {
			return err
		}
		latest[host] = max(latest[host], micros(at))
		if engagedID != 0 && len(latest) <= limit {
			if st.Skipped, err = s.releaseBrake(ctx, tx, engagedID); err != nil {
				return err
			}
			st.Released, engagedID = true, 0
		}
		st.Engaged = engagedID == 0 && len(latest) > limit
		st.Held = engagedID != 0 || st.Engaged
		action := BrakeDisable
		if st.Held {
			action = BrakeHeld
		}
		if _, err := tx.ExecContext(ctx, "INSERT INTO revocation_brake (at, host, action) VALUES (?, ?, ?)", micros(at), host, action); err != nil {
			return err
		}
		if st.Engaged {
			// Every insert holds the lock, so the largest id is this
			// row's (LastInsertId is not portable: pgx lacks it).
			if err := tx.QueryRowContext(ctx, "SELECT MAX(id) FROM revocation_brake").Scan(&engagedID); err != nil {
				return err
			}
			if _, err := tx.ExecContext(ctx, "UPDATE counters SET value = ? WHERE name = ?", engagedID, brakeLock); err != nil {
				return err
			}
		}
		st.Hosts, st.Next = windowHosts(latest, window)
		return nil
	})
	if err != nil {
		return BrakeState{}, fmt.Errorf("take revocation brake slot: %w", err)
	}
	return st, nil
}

// CheckBrake releases an engaged brake when the window (the transitions
// after since) holds at most limit hosts. Held reports whether the brake
// is still engaged.
func (s *Store) CheckBrake(ctx context.Context, since time.Time, limit int, window time.Duration) (BrakeState, error) {
	var st BrakeState
	err := s.tx(ctx, func(tx *sql.Tx) error {
		st = BrakeState{}
		engagedID, latest, err := s.lockBrake(ctx, tx, since)
		if err != nil {
			return err
		}
		st.Hosts, st.Next = windowHosts(latest, window)
		switch {
		case engagedID == 0:
		case len(latest) > limit:
			st.Held = true
		default:
			st.Skipped, err = s.releaseBrake(ctx, tx, engagedID)
			st.Released = true
		}
		return err
	})
	if err != nil {
		return BrakeState{}, fmt.Errorf("check revocation brake: %w", err)
	}
	return st, nil
}

// lockBrake locks the brake's counters row and returns the id of the row
// that engaged the brake (0: released) and the window after since
// (brakeWindow). The
// window is read after the lock is held, so it includes every decision
// committed before.
func (s *Store) lockBrake(ctx context.Context, tx *sql.Tx, since time.Time) (int64, map[string]int64, error) {
	var v int64
	err := tx.QueryRowContext(ctx, s.forUpdate("SELECT value FROM counters WHERE name = ?"), brakeLock).Scan(&v)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil, fmt.Errorf("counters row %q missing (schema not migrated?): %w", brakeLock, ErrNotFound)
	}
	if err != nil {
		return 0, nil, err
	}
	latest, err := brakeWindow(ctx, tx, since)
	return v, latest, err
}

// releaseBrake marks the brake released and returns the hosts held from
// the engaging row (id engagedID) on, sorted.
func (s *Store) releaseBrake(ctx context.Context, tx *sql.Tx, engagedID int64) ([]string, error) {
	if _, err := tx.ExecContext(ctx, "UPDATE counters SET value = 0 WHERE name = ?", brakeLock); err != nil {
		return nil, err
	}
	rows, err := tx.QueryContext(ctx, "SELECT DISTINCT host FROM revocation_brake WHERE action = ? AND id >= ? ORDER BY host",
		BrakeHeld, engagedID)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	skipped := []string{}
	for rows.Next() {
		var h string
		if err := rows.Scan(&h); err != nil {
			return nil, err
		}
		skipped = append(skipped, h)
	}
	return skipped, rows.Err()
}

// brakeWindow returns per host its latest transition after since (micros).
func brakeWindow(ctx context.Context, tx *sql.Tx, since time.Time) (map[string]int64, error) {
	rows, err := tx.QueryContext(ctx, "SELECT host, MAX(at) FROM revocation_brake WHERE at > ? GROUP BY host", micros(since))
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	latest := map[string]int64{}
	for rows.Next() {
		var (
			h  string
			at int64
		)
		if err := rows.Scan(&h, &at); err != nil {
			return nil, err
		}
		latest[h] = at
	}
	return latest, rows.Err()
}

// windowHosts returns the window's hosts, sorted, and when the first of
// them leaves it.
func windowHosts(latest map[string]int64, window time.Duration) ([]string, time.Time) {
	hosts := make([]string, 0, len(latest))
	var oldest int64
	for h, at := range latest {
		hosts = append(hosts, h)
		if oldest == 0 || at < oldest {
			oldest = at
		}
	}
	slices.Sort(hosts)
	if oldest == 0 {
		return hosts, time.Time{}
	}
	return hosts, fromMicros(oldest).Add(window)
}

// pruneBrake deletes brake rows from before before, keeping those an
// engaged brake still needs (the hosts it held: the rows from the engaging
// one's id on, whatever their at).
func (s *Store) pruneBrake(ctx context.Context, before time.Time) (int64, error) {
	var engagedID int64
	err := s.db.QueryRowContext(ctx, "SELECT value FROM counters WHERE name = ?", brakeLock).Scan(&engagedID)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return 0, fmt.Errorf("prune revocation_brake: %w", err)
	}
	if engagedID != 0 {
		var oldest sql.NullInt64
		if err := s.db.QueryRowContext(ctx, "SELECT MIN(at) FROM revocation_brake WHERE id >= ?", engagedID).Scan(&oldest); err != nil {
			return 0, fmt.Errorf("prune revocation_brake: %w", err)
		}
		if oldest.Valid && oldest.Int64 < micros(before) {
			before = fromMicros(oldest.Int64)
		}
	}
	return s.pruneTable(ctx, "revocation_brake", before)
}
