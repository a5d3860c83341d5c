package store

import (
	"context"
	"fmt"
)

// OpenAtVersion opens a database migrated only up to version (tests of
// later migrations); Migrate finishes the job.
func OpenAtVersion(ctx context.Context, connection string, version int) (*Store, error) {
	u, err := parse(connection)
	if err != nil {
		return nil, err
	}
	db, err := u.open()
	if err != nil {
		return nil, err
	}
	s := &Store{db: db, dialect: u.dialect}
	if _, err := db.ExecContext(ctx, s.dialect.expand(
		"CREATE TABLE IF NOT EXISTS schema_migrations (version {int} PRIMARY KEY, applied_at {int} NOT NULL){engine}")); err != nil {
		db.Close()
		return nil, err
	}
	if err := s.migrateTo(ctx, 0, version); err != nil {
		db.Close()
		return nil, err
	}
	return s, nil
}

// Exec runs a statement on the raw database (to write rows in an old
// schema).
func (s *Store) Exec(ctx context.Context, stmt string, args ...any) error {
	if _, err := s.db.ExecContext(ctx, stmt, args...); err != nil {
		return fmt.Errorf("exec: %w", err)
	}
	return nil
}

// SetPruneBatch sets the prune batch size until the returned func runs.
func SetPruneBatch(n int) (restore func()) {
	old := pruneBatch
	pruneBatch = n
	return func() { pruneBatch = old }
}

// LatestSchema is the version the migrations lead to.
var LatestSchema = len(migrations)
