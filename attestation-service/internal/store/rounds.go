package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// Verdict recording and the reads of the attestation loop. Several service
// instances may record verdicts of one host at once (a hand-over, a trigger
// that reached another instance): RecordVerdict takes the next sequence
// number and stores the verdict signed with it in one transaction, holding
// the host's sequence row locked, so a stored verdict never has a lower
// seq than one recorded before it, whichever instance wrote it.

// RecordBuilder builds what RecordVerdict stores once the sequence number
// is known: the signed verdict, the verification state and, when the
// verdict changed, a history entry (its Seq is set by RecordVerdict).
type RecordBuilder func(seq uint64) (signed, state []byte, hist *HistoryEntry, err error)

// RecordVerdict takes host's next verdict sequence number, calls build
// with it and stores the result: the verdict, the state, at as the host's
// last attestation time and the history entry, all in one transaction. It
// returns the sequence number used. A host that does not exist wraps
// ErrNotFound.
func (s *Store) RecordVerdict(ctx context.Context, name string, at time.Time, build RecordBuilder) (uint64, error) {
	var seq uint64
	record := func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, "UPDATE verdict_seqs SET seq = seq + 1 WHERE host = ?", name)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			if _, err := tx.ExecContext(ctx, "INSERT INTO verdict_seqs (host, seq) VALUES (?, 1)", name); err != nil {
				return err
			}
		}
		if err := tx.QueryRowContext(ctx, "SELECT seq FROM verdict_seqs WHERE host = ?", name).Scan(&seq); err != nil {
			return err
		}
		signed, state, hist, err := build(seq)
		if err != nil {
			return err
		}
		// The seq row lock orders writers; the condition keeps the newest
		// verdict whatever happens.
		res, err = tx.ExecContext(ctx, `UPDATE hosts SET verdict = ?, state = ?, verdict_seq = ?, attested_at = ?
			WHERE name = ? AND verdict_seq < ?`, signed, state, seq, micros(at), name, seq)
		if err != nil {
			return fmt.Errorf("save verdict of %q: %w", name, err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			// Rolling back returns the sequence number too.
			var stored uint64
			err := tx.QueryRowContext(ctx, "SELECT verdict_seq FROM hosts WHERE name = ?", name).Scan(&stored)
			if errors.Is(err, sql.ErrNoRows) {
				return fmt.Errorf("host %q: %w", name, ErrNotFound)
			}
			return fmt.Errorf("save verdict of %q: stored seq %d is not below %d", name, stored, seq)
		}
		if hist == nil {
			return nil
		}
		hist.Seq = seq
		reasons, _ := json.Marshal(nonNil(hist.Reasons))
		profiles, _ := json.Marshal(nonNil(hist.Profiles))
		if _, err = tx.ExecContext(ctx, `INSERT INTO history (host, at, status, reasons, profiles, seq, evidence_digest)
			VALUES (?, ?, ?, ?, ?, ?, ?)`, name, micros(hist.At), hist.Status, string(reasons), string(profiles),
			seq, hist.EvidenceDigest); err != nil {
			return fmt.Errorf("append history of %q: %w", name, err)
		}
		return nil
	}
	err := s.tx(ctx, record)
	if isUniqueViolation(err) {
		// Two instances inserted the host's first sequence row at once;
		// the row exists now.
		err = s.tx(ctx, record)
	}
	if err != nil {
		return 0, fmt.Errorf("record verdict of %q: %w", name, err)
	}
	return seq, nil
}

// ScheduleEntry is what the scheduler needs to know of a host.
type ScheduleEntry struct {
	Name      string
	Activated bool
	// AttestedAt is when the host's latest verdict was recorded (zero:
	// never, or not since this schema).
	AttestedAt time.Time
}

// Schedule returns every host's schedule entry, sorted by name.
func (s *Store) Schedule(ctx context.Context) ([]ScheduleEntry, error) {
	rows, err := s.db.QueryContext(ctx, "SELECT name, activated, attested_at FROM hosts ORDER BY name")
	if err != nil {
		return nil, fmt.Errorf("list schedule: %w", err)
	}
	defer rows.Close()
	var out []ScheduleEntry
	for rows.Next() {
		var (
			e  ScheduleEntry
			at int64
		)
		if err := rows.Scan(&e.Name, &e.Activated, &at); err != nil {
			return nil, fmt.Errorf("list schedule: %w", err)
		}
		e.AttestedAt = fromMicros(at)
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list schedule: %w", err)
	}
	return out, nil
}

// StoredVerdict is a host's latest signed verdict (JSON of verdict.Signed).
type StoredVerdict struct {
	Host    string
	Verdict []byte
}

// ListVerdicts returns the latest verdict of every host that has one,
// sorted by host name: what get_verdicts and the heartbeat send, without
// the rest of the host records.
func (s *Store) ListVerdicts(ctx context.Context) ([]StoredVerdict, error) {
	rows, err := s.db.QueryContext(ctx, "SELECT name, verdict FROM hosts WHERE verdict IS NOT NULL ORDER BY name")
	if err != nil {
		return nil, fmt.Errorf("list verdicts: %w", err)
	}
	defer rows.Close()
	var out []StoredVerdict
	for rows.Next() {
		var v StoredVerdict
		if err := rows.Scan(&v.Host, &v.Verdict); err != nil {
			return nil, fmt.Errorf("list verdicts: %w", err)
		}
		out = append(out, v)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list verdicts: %w", err)
	}
	return out, nil
}

// ProfilesGeneration is a number that changes whenever a profile is
// created, replaced or deleted (by any instance): a cache of parsed
// profiles is current while it has not changed.
func (s *Store) ProfilesGeneration(ctx context.Context) (int64, error) {
	var v int64
	err := s.db.QueryRowContext(ctx, "SELECT value FROM counters WHERE name = 'profiles'").Scan(&v)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("profiles generation: %w", err)
	}
	return v, nil
}

// bumpProfiles moves the profiles generation in tx.
func bumpProfiles(ctx context.Context, tx *sql.Tx) error {
	res, err := tx.ExecContext(ctx, "UPDATE counters SET value = value + 1 WHERE name = 'profiles'")
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n == 0 {
		_, err = tx.ExecContext(ctx, "INSERT INTO counters (name, value) VALUES ('profiles', 1)")
	}
	return err
}
