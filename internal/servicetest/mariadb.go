package servicetest

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"testing"
	"time"
)

// MariaDBDatabase is a database private to one test on the MariaDB server
// shared by the test process, on 127.0.0.1.
type MariaDBDatabase struct {
	// DSN is the go-sql-driver/mysql data source name,
	// USER:PASSWORD@tcp(127.0.0.1:PORT)/DATABASE.
	DSN string
	// URL is the same database in the SQLAlchemy form of [database]
	// connection, mysql+pymysql://USER:PASSWORD@127.0.0.1:PORT/DATABASE.
	URL string
	// Database, User and Password name the database and a user with all
	// privileges on it; Port is the TCP port on 127.0.0.1.
	Database, User, Password string
	Port                     int
	// PID is the shared server's process (for resource measurements).
	PID int
}

type mariaServer struct {
	dir, socket string
	osUser      string // logs in as the MariaDB user of the same name over the socket
	port        int
	password    string
	d           *daemon
}

var (
	sharedMaria lazy[*mariaServer]
	dbSeq       atomic.Int64
)

// MariaDB returns a fresh, empty database on the MariaDB server shared by
// the test process, starting the server on first use (about 1 s). [Main]
// stops it.
func MariaDB(t testing.TB) *MariaDBDatabase {
	t.Helper()
	integration(t, "MariaDB")
	m, err := sharedMaria.get(func() (*mariaServer, error) {
		dir, err := sharedDir("mariadb")
		if err != nil {
			return nil, err
		}
		start := time.Now()
		m, err := startMaria(dir)
		if err != nil {
			return nil, err
		}
		t.Logf("servicetest: shared MariaDB on 127.0.0.1:%d started in %s", m.port, time.Since(start).Round(time.Millisecond))
		atExit(func() error { return m.d.stop(60 * time.Second) })
		return m, nil
	})
	if err != nil {
		t.Fatalf("servicetest: MariaDB: %v", err)
	}
	db := &MariaDBDatabase{
		Database: fmt.Sprintf("t%d_%s", dbSeq.Add(1), randHex(4)),
		User:     "trustpool",
		Password: m.password,
		Port:     m.port,
		PID:      m.d.cmd.Process.Pid,
	}
	db.DSN = fmt.Sprintf("%s:%s@tcp(127.0.0.1:%d)/%s", db.User, db.Password, db.Port, db.Database)
	db.URL = fmt.Sprintf("mysql+pymysql://%s:%s@127.0.0.1:%d/%s", db.User, db.Password, db.Port, db.Database)
	if err := m.sql(t.Context(), fmt.Sprintf("CREATE DATABASE `%s`; GRANT ALL ON `%s`.* TO 'trustpool'@'127.0.0.1';", db.Database, db.Database)); err != nil {
		t.Fatalf("servicetest: create database: %v", err)
	}
	return db
}

func startMaria(dir string) (*mariaServer, error) {
	for _, c := range [][2]string{{"mariadbd", "mariadb-server"}, {"mariadb-install-db", "mariadb-server"}, {"mariadb", "mariadb-client"}} {
		if err := need(c[0], c[1]); err != nil {
			return nil, err
		}
	}
	u, err := user.Current()
	if err != nil {
		return nil, err
	}
	m := &mariaServer{dir: dir, socket: filepath.Join(dir, "mysqld.sock"), osUser: u.Username, password: randAlpha(20)}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	data := filepath.Join(dir, "data")
	if _, err := run(ctx, nil, "mariadb-install-db", "--no-defaults", "--datadir="+data, "--user="+u.Username,
		"--auth-root-authentication-method=socket", "--skip-test-db"); err != nil {
		return nil, fmt.Errorf("mariadb-install-db: %w", err)
	}
	var lastErr error
	for range 3 {
		if m.port, err = freePort(); err != nil {
			return nil, err
		}
		m.d, err = startDaemon("mariadbd", filepath.Join(dir, "console.log"), dir, nil,
			"mariadbd", "--no-defaults", "--datadir="+data, "--socket="+m.socket,
			"--pid-file="+filepath.Join(dir, "mysqld.pid"), "--port="+strconv.Itoa(m.port),
			"--bind-address=127.0.0.1", "--user="+u.Username, "--skip-name-resolve",
			"--log-error="+filepath.Join(dir, "error.log"), "--innodb-buffer-pool-size=64M")
		if err != nil {
			return nil, err
		}
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(m.port))
		lastErr = waitReady(m.d, time.Minute, func(ctx context.Context) error {
			if _, err := os.Stat(m.socket); err != nil {
				return err
			}
			var d net.Dialer
			c, err := d.DialContext(ctx, "tcp", addr)
			if err != nil {
				return err
			}
			return c.Close()
		})
		if lastErr == nil {
			break
		}
		_ = m.d.stop(30 * time.Second)
	}
	if lastErr != nil {
		return nil, fmt.Errorf("%w (error log %s)", lastErr, filepath.Join(dir, "error.log"))
	}
	if err := m.sql(ctx, fmt.Sprintf("CREATE USER 'trustpool'@'127.0.0.1' IDENTIFIED BY '%s';", m.password)); err != nil {
		_ = m.d.stop(30 * time.Second)
		return nil, err
	}
	return m, nil
}

// sql runs statements as the administrator over the unix socket
// (unix_socket authentication: root, and the --user of mariadb-install-db).
func (m *mariaServer) sql(ctx context.Context, statements string) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	_, err := run(ctx, nil, "mariadb", "--no-defaults", "--socket="+m.socket, "--user="+m.osUser, "-e", statements)
	return err
}
