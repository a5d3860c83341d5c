package servicetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// PostgresDatabase is a database private to one test on the PostgreSQL
// server shared by the test process, on 127.0.0.1.
type PostgresDatabase struct {
	// URL is the database in the SQLAlchemy form of [database]
	// connection, postgresql://USER:PASSWORD@127.0.0.1:PORT/DATABASE.
	URL string
	// Database, User and Password name the database and its owner; Port
	// is the TCP port on 127.0.0.1.
	Database, User, Password string
	Port                     int
}

type pgServer struct {
	dir, socketDir string
	port           int
	password       string
	bin            string
	cred           *syscall.Credential
	d              *daemon
}

var sharedPG lazy[*pgServer]

// PostgreSQL returns a fresh, empty database, owned by a password user, on
// the PostgreSQL server (Debian's postgresql) shared by the test process,
// starting the server on first use (initdb and start, about 2 s). [Main]
// stops it. PostgreSQL refuses to run as root: when the test runs as root
// the server runs as the postgres system user, in a directory of its own.
func PostgreSQL(t testing.TB) *PostgresDatabase {
	t.Helper()
	integration(t, "PostgreSQL")
	pg, err := sharedPG.get(func() (*pgServer, error) {
		// Reserve the shared root (and check Main is in use).
		if _, err := sharedDir("postgresql"); err != nil {
			return nil, err
		}
		start := time.Now()
		pg, err := startPG()
		if err != nil {
			return nil, err
		}
		t.Logf("servicetest: shared PostgreSQL on 127.0.0.1:%d started in %s", pg.port, time.Since(start).Round(time.Millisecond))
		atExit(func() error {
			err := pg.d.stop(60 * time.Second)
			_ = os.RemoveAll(pg.dir)
			return err
		})
		return pg, nil
	})
	if err != nil {
		t.Fatalf("servicetest: PostgreSQL: %v", err)
	}
	db := &PostgresDatabase{Database: fmt.Sprintf("t%d_%s", dbSeq.Add(1), randHex(4)), User: "trustpool", Password: pg.password, Port: pg.port}
	db.URL = fmt.Sprintf("postgresql://%s:%s@127.0.0.1:%d/%s?sslmode=disable", db.User, db.Password, db.Port, db.Database)
	if err := pg.sql(t.Context(), fmt.Sprintf(`CREATE DATABASE "%s" OWNER trustpool`, db.Database)); err != nil {
		t.Fatalf("servicetest: create database: %v", err)
	}
	return db
}

// pgBin finds Debian's PostgreSQL binaries (/usr/lib/postgresql/N/bin).
func pgBin() (string, error) {
	m, _ := filepath.Glob("/usr/lib/postgresql/*/bin/postgres")
	if len(m) == 0 {
		return "", errors.New("postgres not found in /usr/lib/postgresql/*/bin (Debian package postgresql; run make deps)")
	}
	return filepath.Dir(m[len(m)-1]), nil
}

func startPG() (*pgServer, error) {
	bin, err := pgBin()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "trustpool-postgresql-")
	if err != nil {
		return nil, err
	}
	pg := &pgServer{dir: dir, socketDir: dir, bin: bin, password: randAlpha(20)}
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			return nil, fmt.Errorf("running as root needs the postgres system user (Debian package postgresql): %w", err)
		}
		uid, _ := strconv.ParseUint(u.Uid, 10, 32)
		gid, _ := strconv.ParseUint(u.Gid, 10, 32)
		pg.cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
		if err := os.Chown(dir, int(uid), int(gid)); err != nil {
			return nil, err
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	data := filepath.Join(dir, "data")
	pwFile := filepath.Join(dir, "pw")
	if err := os.WriteFile(pwFile, []byte(pg.password+"\n"), 0o600); err != nil {
		return nil, err
	}
	if pg.cred != nil {
		if err := os.Chown(pwFile, int(pg.cred.Uid), int(pg.cred.Gid)); err != nil {
			return nil, err
		}
	}
	// Superuser postgres over the socket (trust); password login over TCP.
	if out, err := pg.runAs(ctx, filepath.Join(bin, "initdb"), "-D", data, "-U", "postgres", "-E", "UTF8", "--locale=C",
		"--auth-local=trust", "--auth-host=scram-sha-256", "--pwfile="+pwFile, "--no-sync"); err != nil {
		return nil, fmt.Errorf("initdb: %w: %s", err, out)
	}
	_ = os.Remove(pwFile)
	var lastErr error
	for range 3 {
		if pg.port, err = freePort(); err != nil {
			return nil, err
		}
		pg.d, err = startDaemonAs(pg.cred, "postgres", filepath.Join(dir, "postgres.log"), dir, nil,
			filepath.Join(bin, "postgres"), "-D", data, "-p", strconv.Itoa(pg.port), "-k", pg.socketDir,
			"-c", "listen_addresses=127.0.0.1", "-c", "max_connections=300", "-c", "shared_buffers=64MB")
		if err != nil {
			return nil, err
		}
		// Fast shutdown: SIGTERM would wait for every client to leave.
		pg.d.stopSig = syscall.SIGINT
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(pg.port))
		lastErr = waitReady(pg.d, time.Minute, func(ctx context.Context) error {
			var d net.Dialer
			c, err := d.DialContext(ctx, "tcp", addr)
			if err != nil {
				return err
			}
			_ = c.Close()
			return pg.sql(ctx, "SELECT 1")
		})
		if lastErr == nil {
			break
		}
		_ = pg.d.stop(30 * time.Second)
	}
	if lastErr != nil {
		return nil, lastErr
	}
	if err := pg.sql(ctx, fmt.Sprintf("CREATE ROLE trustpool LOGIN PASSWORD '%s'", pg.password)); err != nil {
		_ = pg.d.stop(30 * time.Second)
		return nil, err
	}
	return pg, nil
}

// runAs runs a short command as the server's user.
func (pg *pgServer) runAs(ctx context.Context, argv ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Dir = pg.dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: pg.cred}
	cmd.WaitDelay = 5 * time.Second
	return cmd.CombinedOutput()
}

// sql runs statements as the superuser over the unix socket.
func (pg *pgServer) sql(ctx context.Context, statements string) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(pg.bin, "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1",
		"-h", pg.socketDir, "-p", strconv.Itoa(pg.port), "-U", "postgres", "-d", "postgres", "-c", statements)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("psql: %w: %s", err, bytes.TrimSpace(out.Bytes()))
	}
	return nil
}
