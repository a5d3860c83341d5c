package store

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/jackc/pgx/v5"
	_ "github.com/mattn/go-sqlite3" // the "sqlite3" database/sql driver
)

// ErrURL is wrapped by every [database] connection parse error.
var ErrURL = errors.New("invalid database connection URL")

type parsedURL struct {
	dialect  dialect
	driver   string
	dsn      string
	redacted string
	pg       *pgx.ConnConfig
}

// ParseURL parses a [database] connection URL in SQLAlchemy form:
//
//	sqlite:////var/lib/trustpool/attestation.db   (absolute path: four slashes)
//	sqlite:///relative/path.db
//	mysql://user:password@host[:port]/database[?charset=utf8mb4]
//	mysql+pymysql://...                            (driver suffix ignored)
//	postgresql://user:password@host[:port]/database[?sslmode=...]
//	postgresql+psycopg2://...                      (driver suffix ignored)
//
// PostgreSQL query options: sslmode, sslrootcert, sslcert, sslkey,
// connect_timeout, application_name and host (a unix socket directory);
// anything else is refused.
func ParseURL(raw string) (driver, dsn string, err error) {
	p, err := parse(raw)
	if err != nil {
		return "", "", err
	}
	return p.driver, p.dsn, nil
}

func parse(raw string) (*parsedURL, error) {
	scheme, rest, ok := strings.Cut(raw, "://")
	if !ok {
		return nil, fmt.Errorf("%w: missing scheme://", ErrURL)
	}
	base, _, _ := strings.Cut(scheme, "+")
	switch base {
	case "sqlite":
		path := strings.TrimPrefix(rest, "/")
		if path == "" {
			return nil, fmt.Errorf("%w: sqlite needs a file path (sqlite:////absolute/path.db)", ErrURL)
		}
		if strings.ContainsAny(path, "?#") {
			return nil, fmt.Errorf("%w: sqlite URL options are not supported", ErrURL)
		}
		// The statement cache spares re-parsing the SQL of every query.
		dsn := "file:" + path + "?_journal_mode=WAL&_busy_timeout=5000&_foreign_keys=1&_txlock=immediate&_synchronous=NORMAL&_stmt_cache_size=64"
		return &parsedURL{dialect: dialectSQLite, driver: "sqlite3", dsn: dsn, redacted: "sqlite:///" + path}, nil
	case "mysql", "mariadb":
		u, err := url.Parse("mysql://" + rest)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrURL, err)
		}
		cfg := mysql.NewConfig()
		cfg.User = u.User.Username()
		cfg.Passwd, _ = u.User.Password()
		cfg.DBName = strings.TrimPrefix(u.Path, "/")
		if cfg.DBName == "" || strings.Contains(cfg.DBName, "/") {
			return nil, fmt.Errorf("%w: mysql URL needs a database name", ErrURL)
		}
		cfg.Net = "tcp"
		host := u.Host
		if host == "" {
			host = "127.0.0.1"
		}
		if u.Port() == "" {
			host = net.JoinHostPort(strings.Trim(host, "[]"), "3306")
		}
		cfg.Addr = host
		for k, v := range u.Query() {
			switch k {
			case "charset":
				// Always utf8mb4 on the connection; accepted for
				// compatibility with oslo.db URLs.
			case "unix_socket":
				cfg.Net, cfg.Addr = "unix", v[0]
			default:
				return nil, fmt.Errorf("%w: unsupported mysql option %q", ErrURL, k)
			}
		}
		// Matched rows, not changed rows, so UPDATE-then-INSERT upserts work.
		cfg.ClientFoundRows = true
		// Arguments are escaped by the driver (utf8mb4 only): one round
		// trip per statement instead of prepare, execute and close.
		cfg.InterpolateParams = true
		cfg.Timeout = 10 * time.Second
		cfg.Params = map[string]string{"charset": "utf8mb4"}
		red := *u
		if _, has := red.User.Password(); has {
			red.User = url.UserPassword(red.User.Username(), "***")
		}
		return &parsedURL{dialect: dialectMySQL, driver: "mysql", dsn: cfg.FormatDSN(), redacted: red.String()}, nil
	case "postgresql", "postgres":
		return parsePostgres(rest)
	default:
		return nil, fmt.Errorf("%w: unknown scheme %q", ErrURL, scheme)
	}
}

// pgOptions are the query options a postgresql:// URL may carry (libpq's
// names, which pgx reads).
var pgOptions = map[string]bool{"sslmode": true, "sslrootcert": true, "sslcert": true, "sslkey": true,
	"connect_timeout": true, "application_name": true, "host": true}

func parsePostgres(rest string) (*parsedURL, error) {
	u, err := url.Parse("postgres://" + rest)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrURL, err)
	}
	if db := strings.TrimPrefix(u.Path, "/"); db == "" || strings.Contains(db, "/") {
		return nil, fmt.Errorf("%w: postgresql URL needs a database name", ErrURL)
	}
	q := u.Query()
	for k := range q {
		if !pgOptions[k] {
			return nil, fmt.Errorf("%w: unsupported postgresql option %q", ErrURL, k)
		}
	}
	if !q.Has("connect_timeout") {
		q.Set("connect_timeout", "10")
	}
	u.RawQuery = q.Encode()
	cfg, err := pgx.ParseConfig(u.String())
	if err != nil {
		// pgx's message may quote the URL; name only what was wrong.
		return nil, fmt.Errorf("%w: postgresql URL not understood", ErrURL)
	}
	red := *u
	if _, has := red.User.Password(); has {
		red.User = url.UserPassword(red.User.Username(), "***")
	}
	red.Scheme = "postgresql"
	return &parsedURL{dialect: dialectPostgres, driver: "pgx", dsn: "postgresql://" + strings.TrimPrefix(u.String(), "postgres://"),
		redacted: red.String(), pg: cfg}, nil
}
