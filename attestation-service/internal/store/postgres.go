package store

import (
	"context"
	"database/sql/driver"
	"strconv"
	"strings"
	"sync"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
)

// The store's SQL is written once, with ? placeholders and portable types
// (see dialect.expand). PostgreSQL numbers its placeholders ($1, $2, ...)
// and has no integer-to-boolean conversion, so the PostgreSQL connection is
// wrapped: every statement is rewritten to numbered placeholders and
// boolean arguments are sent as 0/1 (booleans are SMALLINT columns there,
// as they are TINYINT(1) on MySQL and INTEGER on SQLite). Everything else
// is pgx's database/sql driver.

// pgConnector opens pgx connections wrapped in pgConn.
type pgConnector struct{ inner driver.Connector }

func newPGConnector(cfg *pgx.ConnConfig) driver.Connector {
	return pgConnector{inner: stdlib.GetConnector(*cfg)}
}

func (c pgConnector) Connect(ctx context.Context) (driver.Conn, error) {
	conn, err := c.inner.Connect(ctx)
	if err != nil {
		return nil, err
	}
	return &pgConn{c: conn.(*stdlib.Conn)}, nil
}

func (c pgConnector) Driver() driver.Driver { return c.inner.Driver() }

// pgConn forwards to pgx's connection with rewritten statements.
type pgConn struct{ c *stdlib.Conn }

var (
	_ driver.ConnBeginTx        = (*pgConn)(nil)
	_ driver.ConnPrepareContext = (*pgConn)(nil)
	_ driver.ExecerContext      = (*pgConn)(nil)
	_ driver.QueryerContext     = (*pgConn)(nil)
	_ driver.Pinger             = (*pgConn)(nil)
	_ driver.SessionResetter    = (*pgConn)(nil)
	_ driver.NamedValueChecker  = (*pgConn)(nil)
)

func (p *pgConn) Prepare(query string) (driver.Stmt, error) {
	return p.c.Prepare(numberPlaceholders(query))
}

func (p *pgConn) PrepareContext(ctx context.Context, query string) (driver.Stmt, error) {
	return p.c.PrepareContext(ctx, numberPlaceholders(query))
}

func (p *pgConn) Close() error { return p.c.Close() }

func (p *pgConn) Begin() (driver.Tx, error) {
	return p.c.BeginTx(context.Background(), driver.TxOptions{})
}

func (p *pgConn) BeginTx(ctx context.Context, opts driver.TxOptions) (driver.Tx, error) {
	return p.c.BeginTx(ctx, opts)
}

func (p *pgConn) ExecContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Result, error) {
	return p.c.ExecContext(ctx, numberPlaceholders(query), boolsAsInts(args))
}

func (p *pgConn) QueryContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Rows, error) {
	return p.c.QueryContext(ctx, numberPlaceholders(query), boolsAsInts(args))
}

func (p *pgConn) Ping(ctx context.Context) error { return p.c.Ping(ctx) }

func (p *pgConn) ResetSession(ctx context.Context) error { return p.c.ResetSession(ctx) }

func (p *pgConn) CheckNamedValue(v *driver.NamedValue) error { return p.c.CheckNamedValue(v) }

func boolsAsInts(args []driver.NamedValue) []driver.NamedValue {
	for i, a := range args {
		if b, ok := a.Value.(bool); ok {
			v := int64(0)
			if b {
				v = 1
			}
			args[i].Value = v
		}
	}
	return args
}

// placeholders caches rewritten statements; the store's statements are
// constants, so the cache stays small (bounded anyway).
var (
	placeholders     sync.Map
	cacheMu          sync.Mutex
	cachedStatements int
)

const maxCachedStatements = 4096

// numberPlaceholders turns each ? outside quotes into $1, $2, ...
func numberPlaceholders(q string) string {
	if v, ok := placeholders.Load(q); ok {
		return v.(string)
	}
	if !strings.Contains(q, "?") {
		return q
	}
	var b strings.Builder
	b.Grow(len(q) + 16)
	n := 0
	var quote byte
	for i := 0; i < len(q); i++ {
		c := q[i]
		switch {
		case quote != 0:
			if c == quote {
				quote = 0
			}
		case c == '\'' || c == '"':
			quote = c
		case c == '?':
			n++
			b.WriteByte('$')
			b.WriteString(strconv.Itoa(n))
			continue
		}
		b.WriteByte(c)
	}
	out := b.String()
	cacheMu.Lock()
	if cachedStatements < maxCachedStatements {
		cachedStatements++
		placeholders.Store(q, out)
	}
	cacheMu.Unlock()
	return out
}
